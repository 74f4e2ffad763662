"""The first hour: mistakes a new operator makes that luahook used to let pass silently.

Actions Label Studio never sends (check, serve and reload warn, with the closest real name;
`custom = true` silences one), an unhandled action said at info once; the bare secret
accepted, --token swallowing a script path, unknown LUAHOOK_* variables and options.
Fixtures: tests/fixtures/integration/test_firsthour/."""

import json
import os
import signal
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

MISSPELT = h.lua_path(__file__, "misspelt.lua")
REAL = h.lua_path(__file__, "real.lua")


def output(res):
    return res.stdout.decode("utf-8", "replace") + res.stderr.decode("utf-8", "replace")


def at(marker):
    return "misspelt.lua:%d: warning: " % h.line_of(MISSPELT, marker)


class Actions(unittest.TestCase):
    def setUp(self):
        self.tmp = h.TempDir()

    def tearDown(self):
        self.tmp.cleanup()

    def warnings_of(self, lines):
        return [l for l in lines if ": warning: " in l]

    def check_warnings(self, lines):
        lines = self.warnings_of(lines)
        by_marker = {m: [l for l in lines if l.startswith(at(m)) or (at(m) in l)]
                     for m in ("@TYPO", "@DOCS_ONLY", "@CASE", "@LIST", "@CUSTOM")}
        typo = by_marker["@TYPO"]
        self.assertEqual(len(typo), 1, lines)
        self.assertIn("'ANNOTATION_CREATE'", typo[0])
        self.assertIn("did you mean ANNOTATION_CREATED?", typo[0])
        self.assertIn('on("ANNOTATION_CREATE", fn, { custom = true })', typo[0])
        docs = by_marker["@DOCS_ONLY"]
        self.assertEqual(len(docs), 1, lines)
        self.assertIn("docs mention 'TASK_CREATED'", docs[0])
        self.assertIn("TASKS_CREATED", docs[0])
        case = by_marker["@CASE"]
        self.assertEqual(len(case), 1, lines)
        self.assertIn("did you mean ANNOTATION_CREATED?", case[0])
        self.assertIn("case-sensitive", case[0])
        listed = by_marker["@LIST"]
        self.assertEqual(len(listed), 1, lines)  # ANNOTATION_UPDATED is real: no warning
        self.assertIn("docs mention 'ANNOTATION_DELETED'", listed[0])
        self.assertIn("ANNOTATIONS_DELETED", listed[0])
        self.assertEqual(by_marker["@CUSTOM"], [], lines)
        self.assertEqual(len(lines), 4, lines)

    def test_check_warns_and_passes(self):
        res = h.run_luahook("check", MISSPELT)
        self.assertEqual(res.returncode, 0, output(res))
        self.check_warnings(res.stderr.decode().splitlines())
        self.assertIn("ok: 6 handlers, 4 warnings", res.stdout.decode())

    def test_check_real_actions_no_warning(self):
        res = h.run_luahook("check", REAL)
        self.assertEqual(res.returncode, 0, output(res))
        self.assertEqual(self.warnings_of(output(res).splitlines()), [])
        self.assertIn("ok: 2 handlers\n", res.stdout.decode())

    def test_serve_and_reload_warn(self):
        with h.Server(MISSPELT) as srv:
            self.check_warnings([e["msg"] for e in srv.logs() if e.get("level") == "warn"])
            n = srv.log_count()
            srv.proc.send_signal(signal.SIGHUP)
            srv.wait_log(lambda e: e.get("msg") == "reloaded", start=n, what="reloaded")
            srv.wait_log(lambda e: at("@LIST") in e.get("msg", ""), start=n,
                         what="the last warning after the reload")
            after = [json.loads(l) for l in srv.raw_lines()[n:] if l.startswith("{")]
            self.check_warnings([e["msg"] for e in after if e.get("level") == "warn"])

    def test_unhandled_action_info_once(self):
        with h.Server(REAL) as srv:
            ids = [h.post_event(srv.port, {"action": "ANNOTATIONS_CREATED"}).json()["id"]
                   for _ in range(2)]
            first = srv.wait_event(ids[0])
            self.assertEqual(first["level"], "info")
            self.assertEqual(first["handlers"], 0)
            self.assertIn("no handler", first["note"])
            # the second one only at debug: a handled event after it proves it was logged
            # (or not) before
            done = h.post_event(srv.port, {"action": "ANNOTATION_CREATED"}).json()["id"]
            srv.wait_event(done)
            self.assertEqual(srv.find_logs(msg="event", id=ids[1]), [])
        with h.Server(REAL, "--log-level", "debug") as srv:
            ids = [h.post_event(srv.port, {"action": "ANNOTATIONS_CREATED"}).json()["id"]
                   for _ in range(2)]
            second = srv.wait_event(ids[1])
            self.assertEqual(second["level"], "debug")
            self.assertNotIn("note", second)


class SecretAndOptions(unittest.TestCase):
    def setUp(self):
        self.tmp = h.TempDir()
        self.script = self.tmp.script("a.lua", 'on("ANNOTATION_CREATED", function() end)\n')
        os.mkdir(self.tmp.join("handlers"))
        h.write_script(self.tmp.join("handlers"), "b.lua",
                       'on("ANNOTATION_CREATED", function() end)\n')

    def tearDown(self):
        self.tmp.cleanup()

    def test_token_swallowing_the_script(self):
        """--token "$SECRET" with SECRET unset: the next argument became the secret."""
        for args in (["--token", self.script], ["--token", "handlers", "x.lua"],
                     ["--token", "handlers/"], ["--token", "missing.lua", self.script],
                     ["--token", "--listen", "127.0.0.1:0", self.script]):
            with self.subTest(args=args):
                res = h.run_luahook("serve", *args, cwd=self.tmp.path)
                err = res.stderr.decode()
                self.assertEqual(res.returncode, 2, output(res))
                self.assertIn("--token", err)
                self.assertIn("not a secret", err)
                self.assertNotIn("no script given", err)
        res = h.run_luahook("check", self.script, env={"LUAHOOK_TOKEN": self.script})
        self.assertEqual(res.returncode, 2, output(res))
        self.assertIn("LUAHOOK_TOKEN", res.stderr.decode())
        self.assertIn("not a secret", res.stderr.decode())

    def test_token_that_is_a_secret_is_kept(self):
        res = h.run_luahook("check", "--token", "s3cr3t.lua.x", self.script, cwd=self.tmp.path)
        self.assertEqual(res.returncode, 0, output(res))

    def test_unknown_environment_variable(self):
        res = h.run_luahook("check", self.script, env={"LUAHOOK_TOKN": "abc",
                                                       "LUAHOOK_ZZZZZZZZZZZZ": "1"})
        self.assertEqual(res.returncode, 0, output(res))
        err = res.stderr.decode()
        self.assertIn("LUAHOOK_TOKN is not a luahook option", err)
        self.assertIn("did you mean LUAHOOK_TOKEN?", err)
        self.assertIn("LUAHOOK_ZZZZZZZZZZZZ is not a luahook option", err)
        self.assertNotIn("abc", err)  # never the value: it may be the secret
        with h.Server(self.script, env={"LUAHOOK_TOKN": "abc"}) as srv:
            warn = [e for e in srv.logs() if e.get("level") == "warn"]
            self.assertEqual(len(warn), 1, warn)
            self.assertIn("did you mean LUAHOOK_TOKEN?", warn[0]["msg"])
        # real options, and the variables of luahook's own scripts and tests: no warning
        res = h.run_luahook("check", self.script, env={"LUAHOOK_TOKEN": "abc",
                                                       "LUAHOOK_TEST_BUDGET": "60",
                                                       "LUAHOOK_SANITIZED": "0"})
        self.assertNotIn("warn", output(res))

    def test_unknown_option_suggests(self):
        res = h.run_luahook("serve", "--tokn", "x", self.script)
        self.assertEqual(res.returncode, 2, output(res))
        self.assertIn("did you mean --token?", res.stderr.decode())


FIELDS = h.lua_path(__file__, "fields.lua")


class Output(unittest.TestCase):
    def test_fields_sorted_null_and_tables_as_json(self):
        for fmt in ("json", "text"):
            with self.subTest(fmt=fmt):
                res = h.run_luahook("fire", "--log-format", fmt, FIELDS, "--sample",
                                    "ANNOTATION_CREATED")
                self.assertEqual(res.returncode, 0, output(res))
                line = [l for l in res.stderr.decode().splitlines() if " fields " in l
                        or '"msg":"fields"' in l]
                self.assertEqual(len(line), 1, output(res))
                line = line[0]
                self.assertNotIn("userdata", line)
                self.assertNotIn("table: 0x", line)
                if fmt == "text":
                    keys = [m.split("=")[0] for m in line.split(" ")[3:] if "=" in m]
                    own = ["script", "action", "id"]
                    self.assertEqual(keys[:3], own, line)
                    self.assertIn("alpha=null", line)
                    continue
                obj = json.loads(line)
                keys = list(obj)
                # luahook's own first, then the handler's in key order ('id' became '_id')
                self.assertEqual(keys[:6], ["ts", "level", "msg", "script", "action", "id"])
                self.assertEqual(keys[6:], sorted(keys[6:]))
                self.assertEqual(keys[6:], ["_id", "alpha", "bravo", "charlie", "delta",
                                            "echo", "kilo", "mike", "yankee", "zulu"])
                self.assertIsNone(obj["alpha"])
                self.assertEqual(obj["mike"], {"a": 1, "list": [2, 3]})
                self.assertIn(obj["echo"], ({}, []))
                self.assertIn("cannot encode a function", obj["charlie"])
                self.assertIsInstance(obj["delta"], str)  # too big: cut, as a string
                self.assertTrue(obj["delta"].startswith("[1,2,3,"))
                self.assertTrue(obj["delta"].endswith("..."))
                self.assertLess(len(obj["delta"]), 1100)

    def test_startup_line(self):
        with h.Server(REAL, "--token", "s3cr3t-x") as srv:
            line = srv.find_logs(msg="listening")[0]
            self.assertRegex(line["version"], r"^\d+\.\d+")
            self.assertEqual(line["pid"], srv.proc.pid)
            self.assertEqual(line["address"], "127.0.0.1:%d" % srv.port)
            self.assertEqual(line["scripts"], REAL)
            self.assertEqual(line["handlers"], 2)
            self.assertEqual(line["secret"], "required")
            self.assertEqual(line["auth_header"], "authorization")
            self.assertEqual(line["state"], "memory (lost at exit)")
            self.assertNotIn("s3cr3t-x", srv.stderr_text())
        with h.Server(REAL) as srv:
            line = srv.find_logs(msg="listening")[0]
            self.assertEqual(line["secret"], "none")
            self.assertNotIn("auth_header", line)

    def test_watch_names_the_file(self):
        with h.TempDir() as tmp:
            os.mkdir(tmp.join("hooks"))
            path = h.write_script(tmp.join("hooks"), "x.lua", h.lua_source(__file__, "real.lua"))
            with h.Server(tmp.join("hooks") + "/", "--watch") as srv:
                ready = srv.log_count()
                with open(path, "a") as f:
                    f.write("-- edited\n")
                line = srv.wait_log(lambda e: e.get("msg") == "reloaded", start=ready,
                                    what="the reload --watch asked for", timeout=10 * h.SLOW)
                self.assertEqual(line["file"], tmp.join("hooks", "x.lua"))
                self.assertEqual(line["reason"], "a watched file changed")

    def test_sample_command(self):
        res = h.run_luahook("sample", "ANNOTATION_CREATED")
        self.assertEqual(res.returncode, 0, output(res))
        with open(os.path.join(h.REPO, "lua", "samples", "ANNOTATION_CREATED.json"), "rb") as f:
            self.assertEqual(res.stdout, f.read())  # the body fire --sample and sample() use
        body = json.loads(res.stdout)
        self.assertEqual(body["action"], "ANNOTATION_CREATED")
        self.assertIsInstance(body["annotation"]["id"], int)
        # what the tutorial does: post it to a running server
        with h.Server(REAL, "--token", "tk", "--ack", "handled") as srv:
            r = h.post_event(srv.port, res.stdout, headers={"Authorization": "Token tk"})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["handlers"], 1)
        listed = h.run_luahook("sample")
        self.assertEqual(listed.returncode, 0, output(listed))
        self.assertIn("TASKS_CREATED", listed.stdout.decode().split())
        bad = h.run_luahook("sample", "ANOTATION_CREATED")
        self.assertEqual(bad.returncode, 2, output(bad))
        self.assertIn("did you mean ANNOTATION_CREATED?", bad.stderr.decode())
        self.assertEqual(bad.stdout, b"")


class Testing(unittest.TestCase):
    def setUp(self):
        self.tmp = h.TempDir()
        for folder, name in (("mine", "mine_test.lua"), ("mine", "real.lua"),
                             ("other", "theirs_test.lua"), ("build", "theirs_test.lua"),
                             ("node_modules", "theirs_test.lua"),
                             (os.path.join("mine", "vendor"), "theirs_test.lua")):
            os.makedirs(self.tmp.join(folder), exist_ok=True)
            h.write_script(self.tmp.join(folder), name, h.lua_source(__file__, name))

    def tearDown(self):
        self.tmp.cleanup()

    def test_exclude_and_skipped_folders(self):
        res = h.run_luahook("test", cwd=self.tmp.path)
        out = res.stdout.decode()
        self.assertEqual(res.returncode, 1, output(res))
        self.assertIn("FAIL other/theirs_test.lua: theirs", out)
        self.assertIn("FAIL mine/vendor/theirs_test.lua: theirs", out)
        self.assertNotIn("build/", out)           # never walked into
        self.assertNotIn("node_modules/", out)
        self.assertIn("1 passed, 2 failed", out)
        res = h.run_luahook("test", "--exclude", "other", "--exclude", "mine/vend*",
                            cwd=self.tmp.path)
        self.assertEqual(res.returncode, 0, output(res))
        self.assertIn("ok   mine/mine_test.lua: mine", res.stdout.decode())
        self.assertIn("1 passed, 0 failed", res.stdout.decode())
        res = h.run_luahook("test", "--exclude", "*_test.lua", cwd=self.tmp.path)
        self.assertEqual(res.returncode, 2, output(res))  # nothing left to run
        res = h.run_luahook("check", "--exclude", "x", self.tmp.join("mine", "real.lua"))
        self.assertEqual(res.returncode, 2, output(res))
        self.assertIn("belongs to 'luahook test'", res.stderr.decode())

    def test_check_on_a_test_file(self):
        path = self.tmp.join("mine", "mine_test.lua")
        for cmd in (["check"], ["serve", "--listen", "127.0.0.1:0"],
                    ["fire", "--sample", "ANNOTATION_CREATED"]):
            with self.subTest(cmd=cmd):
                res = h.run_luahook(*cmd, path)
                self.assertEqual(res.returncode, 1, output(res))
                err = res.stderr.decode()
                self.assertIn("a test file, not a handler script", err)
                self.assertIn("luahook test %s" % path, err)
                self.assertNotIn("attempt to call a nil value", err)
        # named like a handler script: its load error gets the hint
        renamed = h.write_script(self.tmp.path, "mine_spec.lua",
                                 h.lua_source(__file__, "mine_test.lua"))
        res = h.run_luahook("check", renamed)
        self.assertEqual(res.returncode, 1, output(res))
        self.assertIn("(global 'handlers')", res.stderr.decode())
        self.assertIn("looks like a test file: run it with 'luahook test FILE'",
                      res.stderr.decode())


if __name__ == "__main__":
    h.main()
