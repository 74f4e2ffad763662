"""Recipes: use() of folder and bundled recipes, config validation (every problem at once,
exact text), instances and `as`, per-recipe require, store per instance, --recipes and
LUAHOOK_RECIPES, reload and --watch, the recipes and new-recipe commands, recipe tests run
by luahook test, secrets never shown. The recipes are tests/fixtures/integration/
test_recipes/recipes/ (alpha: every schema type; beta: another util.lua; notify: a folder
copy with a bundled recipe's name)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

T = __file__
RECIPES = os.path.join(h.IT_FIXTURES, "test_recipes", "recipes")
SECRET = "https://chat.test/s3cr3t-t0ken"


def alpha_line(marker="@ALPHA_HANDLER"):
    return h.line_of(os.path.join(RECIPES, "alpha", "recipe.lua"), marker)


def handlers(tmp, source, name="qa.lua"):
    """tmp/handlers/<name> with `source`; returns the folder."""
    d = tmp.join("handlers")
    os.makedirs(d, exist_ok=True)
    h.write_script(d, name, source)
    return d


def copy_recipes(tmp, *names, into="recipes"):
    dest = tmp.join(into)
    os.makedirs(dest, exist_ok=True)
    for n in names:
        shutil.copytree(os.path.join(RECIPES, n), os.path.join(dest, n))
    return dest


def json_logs(stderr):
    out = []
    for line in stderr.decode().splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


class Use(unittest.TestCase):
    def test_check_names_instances_and_use_sites(self):
        with h.TempDir() as tmp:
            handlers(tmp, """\
                use("alpha", { channel_url = "https://chat.test/a" })
                use("alpha", { channel_url = "https://chat.test/b" }, { as = "alpha-b" })
                use("beta")
                """)
            r = h.run_luahook("check", "--recipes", RECIPES, "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 0, r)
            out = r.stdout.decode()
            recipe = os.path.join(RECIPES, "alpha", "recipe.lua")
            for id_, site in (("alpha#1", "handlers/qa.lua:1"), ("alpha#failing", "handlers/qa.lua:1"),
                              ("alpha-b#1", "handlers/qa.lua:2"), ("beta#1", "handlers/qa.lua:3")):
                self.assertRegex(out, r"(?m)^%s +%s \(" % (id_, site), out)
            self.assertIn("handlers/qa.lua:1 (%s:%d)" % (recipe, alpha_line()), out)
            self.assertIn("ok: 5 handlers", out)

    def test_every_problem_at_once_at_the_use_line(self):
        with h.TempDir() as tmp:
            handlers(tmp, """\
                -- a comment
                local cfg = { chanel_url = "x", every = "three", ratio = 2, mode = "medium",
                              projects = { 1, "two" }, headers = { a = 1 }, retry = { times = 9 } }
                use("alpha", cfg)
                """)
            r = h.run_luahook("check", "--recipes", RECIPES, "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 1, r)
            self.assertEqual(
                r.stderr.decode().strip(),
                'handlers/qa.lua:4: alpha: chanel_url: unknown key, did you mean channel_url?; '
                'channel_url is required; every: expected an integer >= 1, got "three"; '
                'headers.a: expected a string, got 1; '
                'mode: expected one of "short", "long", got "medium"; '
                'projects[2]: expected an integer >= 1, got "two"; '
                'ratio: expected a number from 0 to 1, got 2; '
                'retry.times: expected an integer from 0 to 5, got 9')

    def test_nested_keys_and_every_use_of_a_script(self):
        with h.TempDir() as tmp:
            handlers(tmp, """\
                use("gamma", { channels = { { url = "https://a" }, { name = "general" }, "x" },
                               flags = { [1] = true, b = "yes" }, on = "true" })
                use("gamma", { channels = {}, token = 5 }, { as = "g2" })
                use("alpha", { channel_url = "http://x", projects = { 1, 2.0, 2.5 }, every = 3.0 })
                use("gamma", { channels = { { url = "https://b", name = "#ok" } } }, { as = "g3" })
                """)
            r = h.run_luahook("check", "--recipes", RECIPES, "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 1, r)
            self.assertEqual(r.stderr.decode().splitlines(), [
                'handlers/qa.lua:1: gamma: channels[2].name: expected a string matching "^#%w+$", '
                'got "general"; channels[2].url is required; channels[3]: expected a table with '
                'keys name, url, got "x"; flags: the keys must be strings, got 1; flags.b: '
                'expected true or false, got "yes"; on: expected true or false, got "true"',
                'handlers/qa.lua:3: gamma: channels: expected a list of tables with keys name, url '
                'with >= 1 items, got an empty table; token: expected a string, got ***',
                'handlers/qa.lua:4: alpha: projects[3]: expected an integer >= 1, got 2.5'])

    def test_unknown_key_far_from_any_lists_the_keys(self):
        with h.TempDir() as tmp:
            handlers(tmp, 'use("beta", { zzz = 1 })\n')
            r = h.run_luahook("check", "--recipes", RECIPES, "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 1, r)
            self.assertEqual(r.stderr.decode().strip(),
                             "handlers/qa.lua:1: beta: zzz: unknown key (this takes no keys)")

    def test_the_same_recipe_twice_needs_as(self):
        with h.TempDir() as tmp:
            handlers(tmp, """\
                use("beta")
                use("beta")
                """)
            r = h.run_luahook("check", "--recipes", RECIPES, "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 1, r)
            err = r.stderr.decode()
            self.assertIn("handlers/qa.lua:2: use: beta is used twice (here and at "
                          "handlers/qa.lua:1): give each use its own name", err)
            self.assertIn('{ as = "beta-2" }', err)

    def test_an_instance_name_taken(self):
        with h.TempDir() as tmp:
            handlers(tmp, """\
                use("beta", nil, { as = "one" })
                use("alpha", { channel_url = "http://x" }, { as = "one" })
                use("beta", nil, { as = "9bad" })
                """)
            r = h.run_luahook("check", "--recipes", RECIPES, "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 1, r)
            self.assertIn('handlers/qa.lua:2: use: the instance name "one" is already taken '
                          '(at handlers/qa.lua:1)', r.stderr.decode())

    def test_unknown_recipe_suggests(self):
        with h.TempDir() as tmp:
            handlers(tmp, 'use("alpah", {})\n')
            r = h.run_luahook("check", "--recipes", RECIPES, "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 1, r)
            self.assertIn('handlers/qa.lua:1: use: no recipe "alpah", did you mean "alpha"?',
                          r.stderr.decode())

    def test_use_in_a_handler_is_refused(self):
        with h.TempDir() as tmp:
            d = handlers(tmp, 'on("X", function() use("beta") end)\n')
            r = h.run_luahook("fire", "--recipes", RECIPES, d, "-", input=b'{"action": "X"}')
            self.assertEqual(r.returncode, 1, r)
            self.assertIn(b"use: recipes are used while scripts load", r.stdout + r.stderr)

    def test_a_bad_schema_is_a_precise_error(self):
        with h.TempDir() as tmp:
            rdir = tmp.join("r", "bad")
            os.makedirs(rdir)
            h.write_script(rdir, "recipe.lua", """\
                return { name = "bad", version = "1.0", description = "x",
                         config = { a = { type = "strng" }, b = { type = "list" },
                                    c = { type = "integer", default = "1", requird = true },
                                    d = { type = "list", of = { type = "string" }, default = "x" },
                                    e = { type = "integer", min = 1, max = 9, example = 10 } },
                         setup = function() end }
                """)
            handlers(tmp, 'use("bad")\n')
            r = h.run_luahook("check", "--recipes", tmp.join("r"), "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 1, r)
            path = os.path.join(tmp.join("r"), "bad", "recipe.lua")
            self.assertEqual(
                r.stderr.decode().strip(),
                'handlers/qa.lua:1: %s: '
                'version must be a semantic version string (e.g. "1.2.0"), got "1.0"; '
                'config.a: unknown type "strng", did you mean string?; '
                'config.b: a list needs `of`, the spec of its items; '
                'config.c: unknown field requird, did you mean required?; '
                'config.d: the default does not fit: expected a list of strings, got "x"; '
                'config.e: the example does not fit: expected an integer from 1 to 9, got 10' % path)

    def test_on_at_the_top_of_recipe_lua_is_refused(self):
        with h.TempDir() as tmp:
            rdir = tmp.join("r", "top")
            os.makedirs(rdir)
            h.write_script(rdir, "recipe.lua", """\
                on("ANNOTATION_CREATED", function() end)
                return { name = "top", version = "1.0.0", description = "d", setup = function() end }
                """)
            handlers(tmp, 'use("top")\n')
            h.write_script(tmp.path, "top_test.lua", 'use("top")\ntest("t", function() end)\n')
            expected = ("%s:1: on: handlers are registered by a script, or by a recipe's "
                        "setup(cfg) (not at the top of recipe.lua)" % os.path.join("r", "top", "recipe.lua"))
            r = h.run_luahook("check", "--recipes", "r", "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 1, r)
            self.assertEqual(r.stderr.decode().strip(), "handlers/qa.lua:1: " + expected)
            # a test file's use() too (it once crashed: no script was loading)
            r = h.run_luahook("test", "--recipes", "r", "top_test.lua", cwd=tmp.path)
            self.assertEqual(r.returncode, 1, r)
            self.assertIn(("top_test.lua:1: " + expected).encode(), r.stdout)

    def test_modules_are_per_recipe_and_handlers_run(self):
        with h.TempDir() as tmp:
            handlers(tmp, """\
                use("alpha", { channel_url = "https://chat.test/a" })
                use("beta")
                """)
            r = h.run_luahook("fire", "--log-format", "json", "--recipes", RECIPES, "handlers",
                              "--sample", "ANNOTATION_CREATED", cwd=tmp.path)
            self.assertEqual(r.returncode, 0, r)
            who = {l["msg"]: l.get("who") for l in json_logs(r.stderr) if l["msg"] in ("alpha", "beta")}
            self.assertEqual(who, {"alpha": "alpha util, store true", "beta": "beta util"})
            # a recipe's log line names the instance that wrote it
            by = {l["msg"]: l.get("handler") for l in json_logs(r.stderr) if l["msg"] in ("alpha", "beta")}
            self.assertEqual(by, {"alpha": "alpha#1", "beta": "beta#1"})
            self.assertIn(b"alpha#1", r.stdout)
            self.assertIn(b"beta#1", r.stdout)

    def test_store_is_namespaced_by_instance(self):
        with h.TempDir() as tmp:
            state = tmp.join("state")
            os.makedirs(state)
            handlers(tmp, """\
                use("alpha", { channel_url = "https://chat.test/a", every = 3 })
                use("alpha", { channel_url = "https://chat.test/b" }, { as = "alpha-b" })
                """)
            with h.Server("handlers", "--recipes", RECIPES, "--ack", "handled",
                          "--state-dir", state, cwd=tmp.path) as srv:
                r = h.post_event(srv.port, h.fixture_json("ANNOTATION_CREATED.json"))
                self.assertEqual(r.status, 200, r)
            r = h.run_luahook("store", "--state-dir", state, "list")
            self.assertEqual(r.returncode, 0, r)
            self.assertEqual(sorted(r.stdout.decode().splitlines()),
                             ["alpha-b:count\t1", "alpha:count\t3"])

    def test_a_failure_is_logged_with_the_instance_and_the_use_site(self):
        with h.TempDir() as tmp:
            handlers(tmp, """\
                -- line 1
                use("alpha", { channel_url = "https://chat.test/a" }, { as = "qa" })
                """)
            with h.Server("handlers", "--recipes", RECIPES, "--ack", "handled", cwd=tmp.path) as srv:
                r = h.post_event(srv.port, h.fixture_json("TASKS_CREATED.json"))
                self.assertEqual(r.status, 500, r)
                self.assertEqual(r.json()["failed"][0]["id"], "qa#failing")
                self.assertEqual(r.json()["failed"][0]["handler"].split(" ")[0], "handlers/qa.lua:2")
                line = srv.wait_log(lambda l: l.get("msg") == "handler failed", what="the failure")
                self.assertEqual(line.get("handler"), "qa#failing")
                self.assertEqual(line.get("script"), "handlers/qa.lua")
                self.assertEqual(line.get("line"), 2)
                self.assertIn("alpha fails on purpose", line.get("error"))

    def test_instance_names_ending_in_lua_are_refused(self):
        with h.TempDir() as tmp:
            handlers(tmp, 'use("beta", nil, { as = "qa.lua" })\n')
            r = h.run_luahook("check", "--recipes", RECIPES, "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 1, r)
            self.assertIn(b'handlers/qa.lua:1: use: bad instance name "qa.lua": it must not end in .lua',
                          r.stderr)

    def test_a_missing_recipe_folder_is_a_warning(self):
        with h.TempDir() as tmp:
            handlers(tmp, 'use("beta")\n')
            r = h.run_luahook("check", "--recipes", "nosuch", "--recipes", RECIPES, "handlers",
                              cwd=tmp.path)
            self.assertEqual(r.returncode, 0, r)
            self.assertIn(b"recipe folder nosuch: No such file or directory "
                          b"(--recipes / LUAHOOK_RECIPES)", r.stderr)
            self.assertNotIn(RECIPES.encode() + b":", r.stderr)  # the real one: no warning

    def test_metrics_name_the_instance(self):
        with h.TempDir() as tmp:
            handlers(tmp, 'use("beta", nil, { as = "beta-qa" })\n')
            with h.Server("handlers", "--recipes", RECIPES, "--ack", "handled", cwd=tmp.path) as srv:
                self.assertEqual(srv.find_logs(msg="listening")[0].get("instances"), "beta-qa")
                h.post_event(srv.port, h.fixture_json("ANNOTATION_CREATED.json"))
                m = h.Metrics(h.request(srv.port, "GET", "/metrics").body.decode())
                self.assertEqual(m.get("luahook_handler_runs_by_id_total", handler="beta-qa#1",
                                       outcome="ok"), 1)
                # and the use() site, with the recipe's file
                info = [(dict(lbl), v) for (n, lbl), v in m.samples.items()
                        if n == "luahook_handler_info"]
                self.assertEqual(len(info), 1, info)
                labels, value = info[0]
                self.assertEqual(value, 1)
                self.assertEqual(labels["handler"], "beta-qa#1")
                self.assertEqual(labels["site"], "handlers/qa.lua:1")
                self.assertTrue(labels["recipe"].endswith("beta/recipe.lua"), labels)


class Secrets(unittest.TestCase):
    def test_a_bad_secret_is_never_echoed(self):
        with h.TempDir() as tmp:
            handlers(tmp, 'use("alpha", { channel_url = "ftp://s3cr3t-t0ken" })\n')
            r = h.run_luahook("check", "--recipes", RECIPES, "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 1, r)
            self.assertEqual(r.stderr.decode().strip(),
                             'handlers/qa.lua:1: alpha: channel_url: expected a string matching '
                             '"^https?://", got ***')
            self.assertNotIn(b"s3cr3t", r.stdout + r.stderr)

    def test_debug_logs_and_check_never_show_it(self):
        with h.TempDir() as tmp:
            handlers(tmp, 'use("alpha", { channel_url = "%s" })\n' % SECRET)
            r = h.run_luahook("check", "--recipes", RECIPES, "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 0, r)
            self.assertNotIn(b"s3cr3t", r.stdout + r.stderr)
            with h.Server("handlers", "--recipes", RECIPES, "--log-level", "debug",
                          "--ack", "handled", cwd=tmp.path) as srv:
                h.post_event(srv.port, h.fixture_json("ANNOTATION_CREATED.json"))
                ready = srv.wait_log(lambda l: l.get("msg") == "recipe instance ready",
                                     what="the instance's debug line")
                self.assertEqual(ready.get("instance"), "alpha")
                self.assertEqual(ready.get("site"), "handlers/qa.lua:1")
                self.assertEqual(json.loads(ready["config"])["channel_url"], "***")
            self.assertNotIn("s3cr3t", srv.stderr_text())

    def test_a_handler_error_that_quotes_a_secret_is_masked(self):
        with h.TempDir() as tmp:
            handlers(tmp, 'use("gamma", { channels = { { url = "%s" } } })\n' % SECRET)
            with h.Server("handlers", "--recipes", RECIPES, "--ack", "handled",
                          cwd=tmp.path) as srv:
                r = h.post_event(srv.port, b'{"action":"LEAK"}')
                self.assertEqual(r.status, 500, r)
                self.assertIn(b"POST *** failed (token ***)", r.body)
                failed = srv.wait_log(lambda l: l.get("msg") == "handler failed",
                                      what="the failure line")
                self.assertIn("POST *** failed (token ***)", failed.get("error"))
            r = h.run_luahook("fire", "--recipes", RECIPES, "handlers", "-",
                              input=b'{"action":"LEAK"}', cwd=tmp.path)
            self.assertIn(b"POST *** failed (token ***)", r.stdout + r.stderr)
            for text in (srv.stderr_text().encode(), r.stdout + r.stderr):
                self.assertNotIn(b"s3cr3t", text)
                self.assertNotIn(b"default-s3cr3t", text)

    def test_a_secret_list_map_or_record_masks_what_it_holds(self):
        with h.TempDir() as tmp:
            handlers(tmp, 'use("gamma", { hooks = { "http://s3cr3t-1" }, auth = { key = "s3cr3t-2" },'
                          ' headers = { X = "s3cr3t-3-long" } })\n')
            r = h.run_luahook("check", "--recipes", RECIPES, "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 1, r)
            self.assertEqual(r.stderr.decode().strip(),
                             'handlers/qa.lua:1: gamma: auth.key: expected a string of >= 20 '
                             'characters, got ***; headers.X: expected a string of <= 8 '
                             'characters, got ***; hooks[1]: expected a string matching '
                             '"^https://", got ***')
            self.assertNotIn(b"s3cr3t", r.stdout + r.stderr)
        # and `recipes NAME` marks the keys inside as secret
        r = h.run_luahook("recipes", "--recipes", RECIPES, "gamma")
        self.assertEqual(r.returncode, 0, r)
        self.assertIn(b"  auth.key  (string, required, secret)\n", r.stdout)

    def test_a_setup_error_that_quotes_a_secret_masks_it(self):
        with h.TempDir() as tmp:
            os.makedirs(tmp.join("recipes", "quoter"))
            h.write_script(tmp.join("recipes", "quoter"), "recipe.lua", """
return { name = "quoter", version = "0.1.0", description = "quotes its secrets (tests)",
  config = { url = { type = "string", secret = true },
             keys = { type = "list", secret = true, of = { type = "string" } } },
  setup = function(cfg)
    error("cannot use " .. cfg.url .. " with " .. table.concat(cfg.keys, ","))
  end }
""")
            handlers(tmp, 'use("quoter", { url = "%s", keys = { "k3y-s3cr3t" } })\n' % SECRET)
            r = h.run_luahook("check", "--recipes", "recipes", "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 1, r)
            self.assertNotIn(b"s3cr3t", r.stdout + r.stderr)
            self.assertIn(b"handlers/qa.lua:1: quoter: setup failed: recipes/quoter/recipe.lua:6: "
                          b"cannot use *** with ***", r.stderr)

    def test_a_secret_default_is_never_listed(self):
        for args in ((), ("--markdown",)):
            r = h.run_luahook("recipes", "--recipes", RECIPES, "gamma", *args)
            self.assertEqual(r.returncode, 0, r)
            self.assertNotIn(b"s3cr3t", r.stdout)
            self.assertIn(b'"***"', r.stdout)
        with h.TempDir() as tmp:
            handlers(tmp, 'use("gamma", { channels = { { url = "%s" } } })\n' % SECRET)
            r = h.run_luahook("fire", "--log-level", "debug", "--log-format", "json",
                              "--recipes", RECIPES, "handlers", "--sample", "ANNOTATION_CREATED",
                              cwd=tmp.path)
            self.assertEqual(r.returncode, 0, r)
            ready = [l for l in json_logs(r.stderr) if l["msg"] == "recipe instance ready"][0]
            self.assertEqual(json.loads(ready["config"]),
                             {"channels": [{"url": "***"}], "token": "***"})
            self.assertNotIn(b"s3cr3t", r.stdout + r.stderr)


class Finding(unittest.TestCase):
    def test_bundled_notify(self):
        # only what every notify has: bundled, `url` required and secret, `projects`
        with h.TempDir() as tmp:
            handlers(tmp, 'use("notify", { projects = { 1 } })\nuse("notify", { url = 5 }, { as = "n2" })\n')
            r = h.run_luahook("check", "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 1, r)
            err = r.stderr.decode()
            self.assertRegex(err, r"(?m)^handlers/qa\.lua:1: notify: (.*; )?url is required(;|$)")
            self.assertRegex(err, r"(?m)^handlers/qa\.lua:2: notify: (.*; )?url: expected [^;]*, got \*\*\*(;|$)")
            self.assertNotIn("projects", err)
            handlers(tmp, 'use("notify", { url = "%s", projects = { 1 } })\n' % SECRET)
            r = h.run_luahook("check", "handlers", cwd=tmp.path)
            if r.returncode == 0:  # notify may need more keys than these
                self.assertRegex(r.stdout.decode(), r"notify#\S+ +handlers/qa\.lua:1 \(bundled:notify/")
            self.assertNotIn(b"s3cr3t", r.stdout + r.stderr)

    def test_a_folder_recipe_wins_over_the_bundled_one(self):
        with h.TempDir() as tmp:
            handlers(tmp, 'use("notify", { url = "x" })\nuse("notify", { url = "y" }, { as = "n2" })\n')
            with h.Server("handlers", "--recipes", RECIPES, cwd=tmp.path) as srv:
                line = srv.wait_log(lambda l: l.get("msg") == "recipe folder wins over the bundled one",
                                    what="the info line")
                self.assertEqual(line.get("recipe"), "notify")
                self.assertEqual(line.get("folder"), os.path.join(RECIPES, "notify"))
                self.assertEqual(line.get("level"), "info")
            self.assertEqual(len(srv.find_logs(msg="recipe folder wins over the bundled one")), 1)

    def test_command_line_wins_over_environment_then_bundled(self):
        with h.TempDir() as tmp:
            cli = copy_recipes(tmp, "notify", into="cli")
            env = copy_recipes(tmp, "notify", "beta", into="env")
            # the environment's copy of notify says another version: it must lose
            with open(os.path.join(env, "notify", "recipe.lua")) as f:
                src = f.read().replace("9.9.9", "8.8.8")
            with open(os.path.join(env, "notify", "recipe.lua"), "w") as f:
                f.write(src)
            # the command line's folders replace the environment's, as for every option
            r = h.run_luahook("recipes", "--recipes", cli, env={"LUAHOOK_RECIPES": env})
            self.assertEqual(r.returncode, 0, r)
            rows = {l.split()[0]: l.split()[1:3] for l in r.stdout.decode().splitlines()[1:]}
            self.assertEqual(rows["notify"], ["9.9.9", os.path.join(cli, "notify")])
            self.assertNotIn("beta", rows)
            # LUAHOOK_RECIPES is a list searched in order; a folder missing is no error
            r = h.run_luahook("recipes", env={"LUAHOOK_RECIPES": "/nonexistent:" + env + ":" + cli})
            self.assertEqual(r.returncode, 0, r)
            rows = {l.split()[0]: l.split()[1:3] for l in r.stdout.decode().splitlines()[1:]}
            self.assertEqual(rows["beta"], ["0.0.1-dev", os.path.join(env, "beta")])
            self.assertEqual(rows["notify"], ["8.8.8", os.path.join(env, "notify")])
            r = h.run_luahook("recipes", "--recipes", cli, "--recipes", env)
            rows = {l.split()[0]: l.split()[1:3] for l in r.stdout.decode().splitlines()[1:]}
            self.assertEqual(rows["notify"], ["9.9.9", os.path.join(cli, "notify")])
            self.assertEqual(rows["beta"], ["0.0.1-dev", os.path.join(env, "beta")])
            r = h.run_luahook("recipes")
            rows = {l.split()[0]: l.split()[1:3] for l in r.stdout.decode().splitlines()[1:]}
            self.assertEqual(rows["notify"][1], "bundled")
            self.assertNotIn("beta", rows)


class Commands(unittest.TestCase):
    def test_recipes_lists(self):
        r = h.run_luahook("recipes", "--recipes", RECIPES)
        self.assertEqual(r.returncode, 0, r)
        lines = r.stdout.decode().splitlines()
        self.assertEqual(lines[0].split(), ["NAME", "VERSION", "SOURCE", "DESCRIPTION"])
        self.assertEqual(lines[1].split(None, 3),
                         ["alpha", "1.2.3", os.path.join(RECIPES, "alpha"),
                          "Logs who it is and counts events (tests)"])

    def test_recipes_name_shows_every_key(self):
        r = h.run_luahook("recipes", "--recipes", RECIPES, "alpha")
        self.assertEqual(r.returncode, 0, r)
        out = r.stdout.decode()
        self.assertTrue(out.startswith("alpha 1.2.3 (%s)\n" % os.path.join(RECIPES, "alpha")), out)
        for needle in ("  channel_url  (string, required, secret)\n"
                       "      expects a string matching \"^https?://\"\n"
                       "      where messages go\n"
                       "      example: \"https://chat.test/hook\"\n",
                       "  every  (integer, default 1)\n",
                       "  projects  (list of integer)\n",
                       "  retry.times  (integer, default 2)\n",
                       "  mode  (string, default \"short\")\n      expects one of \"short\", \"long\"\n"):
            self.assertIn(needle, out)

    def test_recipes_markdown(self):
        r = h.run_luahook("recipes", "--recipes", RECIPES, "alpha", "--markdown")
        self.assertEqual(r.returncode, 0, r)
        out = r.stdout.decode()
        self.assertTrue(out.startswith("#### `alpha` 1.2.3\n"), out)
        self.assertIn("| key | type | default | required | secret | description | example |", out)
        self.assertIn("| `channel_url` | string |  | yes | yes | where messages go | "
                      "`\"https://chat.test/hook\"` |", out)

    def test_bundled_notify_shown(self):
        r = h.run_luahook("recipes", "notify")
        self.assertEqual(r.returncode, 0, r)
        self.assertTrue(r.stdout.startswith(b"notify "), r)
        self.assertIn(b"(bundled)", r.stdout.splitlines()[0])
        self.assertIn(b"  url  (string, required, secret)", r.stdout)
        self.assertIn(b"  projects  (list of", r.stdout)

    def test_no_such_recipe(self):
        r = h.run_luahook("recipes", "--recipes", RECIPES, "alpah")
        self.assertEqual(r.returncode, 2, r)
        self.assertEqual(r.stderr.decode(), 'luahook recipes: no recipe "alpah", did you mean "alpha"?\n')

    def test_new_recipe_passes_test_and_check(self):
        with h.TempDir() as tmp:
            r = h.run_luahook("new-recipe", "greeter", tmp.path)
            self.assertEqual(r.returncode, 0, r)
            folder = tmp.join("greeter")
            self.assertEqual(sorted(os.listdir(folder)), ["README.md", "greeter-0.1.0-1.rockspec",
                                                          "greeter_test.lua", "recipe.lua"])
            r = h.run_luahook("test", folder)
            self.assertEqual(r.returncode, 0, r)
            self.assertIn(b"2 passed, 0 failed", r.stdout)
            r = h.run_luahook("check", folder)
            self.assertEqual(r.returncode, 0, r)
            handlers(tmp, 'use("greeter", { projects = { 1, 2 } })\n')
            r = h.run_luahook("check", "--recipes", tmp.path, "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 0, r)
            self.assertIn(b"greeter#1", r.stdout)
            r = h.run_luahook("recipes", "--recipes", tmp.path, "greeter")
            self.assertEqual(r.returncode, 0, r)
            self.assertIn(b"README.md:\n# greeter", r.stdout)
            # bodies without a project object (send_payload=false, a hand-made one) count
            # under no project instead of failing, and the log line repeats no context
            handlers(tmp, 'use("greeter", { actions = { "ANNOTATION_CREATED" } })\n')
            for body in ({"action": "ANNOTATION_CREATED"},
                         {"action": "ANNOTATION_CREATED", "project": None},
                         {"action": "ANNOTATION_CREATED", "project": 1}):
                r = h.run_luahook("fire", "--recipes", tmp.path, "handlers", "-",
                                  input=json.dumps(body).encode(), cwd=tmp.path)
                self.assertEqual(r.returncode, 0, (body, r))
                self.assertIn(b"1 passed, 0 failed", r.stdout)
                self.assertNotIn(b"_action=", r.stderr)
            # never over an existing folder
            r = h.run_luahook("new-recipe", "greeter", tmp.path)
            self.assertEqual(r.returncode, 2, r)
            self.assertIn(b"(nothing written)", r.stderr)
            r = h.run_luahook("new-recipe", "9x", tmp.path)
            self.assertEqual(r.returncode, 2, r)

    def test_recipe_folder_tests(self):
        with h.TempDir() as tmp:
            rdir = copy_recipes(tmp, "alpha", "notify")
            r = h.run_luahook("test", rdir)
            self.assertIn(b"ok   %s: each instance counts in its own store" %
                          os.path.join(rdir, "alpha", "alpha_test.lua").encode(), r.stdout)
            self.assertEqual(r.returncode, 0, r)

    def test_a_test_of_handler_scripts_that_use_recipes(self):
        with h.TempDir() as tmp:
            handlers(tmp, 'use("beta", nil, { as = "b1" })\nuse("beta", nil, { as = "b2" })\n')
            h.write_script(tmp.path, "qa_test.lua", """\
                handlers("handlers")
                test("both instances run", function()
                  local r = fire(sample("ANNOTATION_CREATED"))
                  eq(r[1].id, "b1#1")
                  eq(r[2].id, "b2#1")
                  eq(r[1].handler, "handlers/qa.lua:1 (%s:%d)")
                end)
                """ % (os.path.join(RECIPES, "beta", "recipe.lua"),
                       h.line_of(os.path.join(RECIPES, "beta", "recipe.lua"), "@BETA_HANDLER")))
            r = h.run_luahook("test", "--recipes", RECIPES, "qa_test.lua", cwd=tmp.path)
            self.assertEqual(r.returncode, 0, r)
            self.assertIn(b"1 passed, 0 failed", r.stdout)
            r = h.run_luahook("test", "qa_test.lua", cwd=tmp.path)  # no --recipes: no beta
            self.assertEqual(r.returncode, 1, r)
            self.assertIn(b'handlers/qa.lua:1: use: no recipe "beta"', r.stdout)

    def test_bundled_tests_run_from_the_binary(self):
        with h.TempDir() as tmp:  # nowhere near the source tree
            r = h.run_luahook("test", "bundled:notify", cwd=tmp.path)
            self.assertEqual(r.returncode, 0, r)
            self.assertRegex(r.stdout.decode(), r"(?m)^ok   bundled:notify/\S+_test\.lua: ")
            r = h.run_luahook("test", "bundled:nosuch", cwd=tmp.path)
            self.assertEqual(r.returncode, 2, r)
            self.assertEqual(r.stderr.decode(),
                             "luahook test: bundled:nosuch: no bundled recipe with tests named nosuch\n")

    def test_a_recipe_that_does_not_load_is_listed_in_its_place(self):
        with h.TempDir() as tmp:
            rdir = tmp.join("r", "broken")
            os.makedirs(rdir)
            h.write_script(rdir, "recipe.lua", "return 42\n")
            r = h.run_luahook("recipes", "--recipes", tmp.join("r"))
            self.assertEqual(r.returncode, 1, r)
            self.assertRegex(r.stdout.decode(), r"(?m)^broken +\? +%s +does not load: %s: "
                             r"recipe\.lua must return a table" % (rdir, os.path.join(rdir, "recipe.lua")))
            self.assertRegex(r.stdout.decode(), r"(?m)^notify +\S+ +bundled ")
            r = h.run_luahook("recipes", "--recipes", tmp.join("r"), "broken")
            self.assertEqual(r.returncode, 1, r)

    def test_check_of_a_broken_recipe_folder(self):
        with h.TempDir() as tmp:
            rdir = tmp.join("broken")
            os.makedirs(rdir)
            h.write_script(rdir, "recipe.lua", 'return { name = "other", version = "1.0.0", '
                                               'description = "d", setup = function() end }\n')
            r = h.run_luahook("check", rdir)
            self.assertEqual(r.returncode, 1, r)
            self.assertIn(b'name is "other" but the folder is broken/: they must be the same', r.stderr)


class LuaRocks(unittest.TestCase):
    def test_luarocks_make_installs_a_recipe_for_recipes(self):
        luarocks = shutil.which("luarocks")
        if luarocks is None:
            self.skipTest("no luarocks (scripts/setup test installs luarocks and lua5.4)")
        with h.TempDir() as tmp:
            r = h.run_luahook("new-recipe", "greeter", tmp.path)
            self.assertEqual(r.returncode, 0, r)
            tree = tmp.join("tree")
            # offline: `make` builds from the folder; HOME keeps luarocks' cache out of ours
            r = subprocess.run([luarocks, "--lua-version", "5.4", "--tree", tree, "make"],
                               cwd=tmp.join("greeter"), capture_output=True, timeout=120 * h.SLOW,
                               env=h.child_env({"HOME": tmp.path}))
            self.assertEqual(r.returncode, 0, r)
            installed = os.path.join(tree, "share", "lua", "5.4", "luahook_recipes")
            self.assertEqual(sorted(os.listdir(os.path.join(installed, "greeter"))),
                             ["README.md", "greeter_test.lua", "recipe.lua"])
            r = h.run_luahook("test", os.path.join(installed, "greeter"))
            self.assertEqual(r.returncode, 0, r)
            self.assertIn(b"2 passed, 0 failed", r.stdout)
            handlers(tmp, 'use("greeter", { projects = { 7 } })\n')
            r = h.run_luahook("check", "--recipes", installed, "handlers", cwd=tmp.path)
            self.assertEqual(r.returncode, 0, r)
            self.assertIn(b"greeter#1", r.stdout)
            r = h.run_luahook("recipes", "--recipes", installed, "greeter")
            self.assertIn(b"README.md:\n# greeter", r.stdout)


class RecipeDocs(unittest.TestCase):
    SCRIPT = os.path.join(h.REPO, "scripts", "recipe-docs")

    def test_check_fails_out_of_step_and_the_script_fixes_it(self):
        with h.TempDir() as tmp:
            readme = tmp.join("README.md")
            with open(os.path.join(h.REPO, "README.md")) as f:
                text = f.read()
            begin = text.index("<!-- recipes:begin -->\n") + len("<!-- recipes:begin -->\n")
            end = text.index("<!-- recipes:end -->")
            with open(readme, "w") as f:
                f.write(text[:begin] + "stale\n" + text[end:])
            r = subprocess.run([self.SCRIPT, "--check", h.BIN, readme], capture_output=True,
                               env=h.child_env())
            self.assertEqual(r.returncode, 1, r)
            self.assertIn(b"-stale", r.stderr)
            r = subprocess.run([self.SCRIPT, h.BIN, readme], capture_output=True, env=h.child_env())
            self.assertEqual(r.returncode, 0, r)
            r = subprocess.run([self.SCRIPT, "--check", h.BIN, readme], capture_output=True,
                               env=h.child_env())
            self.assertEqual(r.returncode, 0, r)
            with open(readme) as f:
                fixed = f.read()
            self.assertIn("#### `notify` ", fixed)
            self.assertIn("| `url` | string |  | yes | yes |", fixed)
            self.assertEqual(fixed, text, "the repository's README is out of step too")


class Reload(unittest.TestCase):
    def test_a_config_that_no_longer_validates_keeps_the_running_set(self):
        with h.TempDir() as tmp:
            d = handlers(tmp, 'use("alpha", { channel_url = "https://chat.test/a" })\n')
            with h.Server("handlers", "--recipes", RECIPES, "--ack", "handled", cwd=tmp.path) as srv:
                h.write_script(d, "qa.lua", 'use("alpha", { channel_url = "https://chat.test/a", every = 0 })\n')
                srv.proc.send_signal(signal.SIGHUP)
                line = srv.wait_log(lambda l: l.get("msg") == "reload failed, the running scripts stay",
                                    what="the failed reload")
                self.assertEqual(line.get("problems"), 1)
                srv.wait_log(lambda l: "every: expected an integer >= 1, got 0" in json.dumps(l),
                             what="the problem")
                r = h.post_event(srv.port, h.fixture_json("ANNOTATION_CREATED.json"))
                self.assertEqual(r.status, 200, r)
                srv.wait_log(lambda l: l.get("msg") == "alpha", what="alpha still running")

    def test_watch_covers_recipe_files(self):
        with h.TempDir() as tmp:
            rdir = copy_recipes(tmp, "beta")
            handlers(tmp, 'use("beta")\n')
            with h.Server("handlers", "--recipes", rdir, "--watch", "--ack", "handled", cwd=tmp.path) as srv:
                time.sleep(0.2 * h.SLOW)  # watches are set before 'listening'; be generous
                h.write_script(os.path.join(rdir, "beta"), "util.lua", 'return { who = "changed" }\n')
                srv.wait_log(lambda l: l.get("msg") == "reloaded", what="a reload")
                h.post_event(srv.port, h.fixture_json("ANNOTATION_CREATED.json"))
                srv.wait_log(lambda l: l.get("msg") == "beta" and l.get("who") == "changed",
                             what="the new util")


if __name__ == "__main__":
    unittest.main()
