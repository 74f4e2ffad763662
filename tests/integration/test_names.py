"""Stable names: a script's name (its path inside the folder given, or a file's base name)
and a handler's id (<script name>#<ordinal of its on() call>, or #<name> with on()'s name
option). Ids survive an edit above a handler; bad or duplicate names and two scripts with
one name are load errors; the ids show in check, fire, the `handler failed` line, the
--ack handled answer and /metrics; a reload says which ids and scripts it removed.

The handler scripts are the fixtures of tests/fixtures/integration/test_names/, copied
into a temporary folder (a folder argument loads every *.lua in it)."""

import os
import re
import shutil
import signal
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402


def fixture(name):
    return h.lua_path(__file__, name)


line_of = h.line_of


def copy(src, dst_dir, name=None):
    os.makedirs(dst_dir, exist_ok=True)
    dst = os.path.join(dst_dir, name or src)
    shutil.copyfile(fixture(src), dst)
    return dst


def output(res):
    return res.stdout.decode() + res.stderr.decode()


def check_ids(*paths, cwd=None):
    """`luahook check PATHS`: {id: (file:line, actions)} from its listing, in order."""
    res = h.run_luahook("check", *paths, cwd=cwd)
    if res.returncode != 0:
        raise AssertionError(output(res))
    out = {}
    lines = res.stdout.decode().splitlines()
    for line in lines[:-1]:
        hid, label, actions = re.split(r"\s{2,}", line.strip(), maxsplit=2)
        out[hid] = (label, actions)
    # the fixtures' actions (A, B, FAIL) are not Label Studio's: check warns about them
    if not re.fullmatch(r"ok: %d handlers?(, \d+ warnings?)?" % len(out), lines[-1]):
        raise AssertionError(res.stdout.decode())
    return out


class Ids(unittest.TestCase):
    def setUp(self):
        self.tmp = h.TempDir()

    def tearDown(self):
        self.tmp.cleanup()

    def test_check_lists_ids_places_and_actions(self):
        path = copy("notify.lua", self.tmp.path)
        ids = check_ids(path)
        self.assertEqual(list(ids), ["notify.lua#1", "notify.lua#slack", "notify.lua#3"])
        self.assertEqual(ids["notify.lua#1"], ("%s:%d" % (path, line_of(path, "@FIRST")), "A"))
        self.assertEqual(ids["notify.lua#slack"][1], "A FAIL")
        self.assertEqual(ids["notify.lua#3"][1], "A B")  # a list of actions: one handler

    def test_ids_survive_lines_added_above(self):
        """The same script before and after an edit: file:line moves, the ids stay."""
        path = copy("notify.lua", self.tmp.path)
        before = check_ids(path)
        shutil.copyfile(fixture("notify_edited.lua"), path)
        after = check_ids(path)
        for hid, marker in (("notify.lua#1", "@FIRST"), ("notify.lua#slack", "@SLACK"),
                            ("notify.lua#3", "@THIRD")):
            with self.subTest(id=hid):
                self.assertIn(hid, after)
                self.assertEqual(after[hid][1], before[hid][1], "the same handler")
                self.assertEqual(after[hid][0], "%s:%d" % (path, line_of(path, marker)))
                self.assertNotEqual(after[hid][0], before[hid][0], "its file:line moved")
        self.assertEqual(after["notify.lua#4"][1], "C")

    def test_script_name_is_the_path_given_not_the_cwd(self):
        """A folder argument names by the path inside it, a file argument by its base
        name: where the command runs from changes neither."""
        d = self.tmp.join("handlers")
        copy("notify.lua", d)
        for args, cwd in (([d], None), (["handlers"], self.tmp.path),
                          ([os.path.join(d, "notify.lua")], None),
                          (["notify.lua"], d)):
            with self.subTest(args=args, cwd=cwd):
                self.assertIn("notify.lua#slack", check_ids(*args, cwd=cwd))

    def test_two_scripts_with_one_name_do_not_load(self):
        a = copy("notify.lua", self.tmp.join("a"))
        b = copy("other.lua", self.tmp.join("b"), "notify.lua")
        for args in ([a, b], [self.tmp.join("a"), b]):
            with self.subTest(args=args):
                res = h.run_luahook("check", *args)
                self.assertEqual(res.returncode, 1, output(res))
                self.assertIn("%s: the script name 'notify.lua' is already taken by %s"
                              % (b, a), res.stderr.decode())
        # the same file twice is said as such
        for args in ([a, a], [self.tmp.join("a"), a]):
            with self.subTest(args=args):
                res = h.run_luahook("check", *args)
                self.assertEqual(res.returncode, 1, output(res))
                self.assertIn("%s: the script is loaded twice (given twice, or given and "
                              "inside a folder given): it loads once" % a, res.stderr.decode())
        res = h.run_luahook("serve", "--listen", "127.0.0.1:0", a, b, timeout=15 * h.SLOW)
        self.assertEqual(res.returncode, 1, output(res))
        self.assertIn("already taken", res.stderr.decode())

    def test_bad_names_are_load_errors_at_their_line(self):
        for name, marker, message in (
            ("dup_name.lua", "@DUP", "on: the handler name 'chat' is already used in this "
                                     "script (by %s:2)"),
            ("bad_name.lua", "@BAD", "on: bad handler name 'has space': a letter, then "
                                     "letters, digits, '_', '.' or '-', at most 64 characters"),
            ("bad_option.lua", "@OPT", "on: unknown option 'nmae' (the options are: name, custom, retries)"),
        ):
            with self.subTest(script=name):
                path = copy(name, self.tmp.path)
                res = h.run_luahook("check", path)
                self.assertEqual(res.returncode, 1, output(res))
                want = "%s:%d: %s" % (path, line_of(path, marker),
                                      message % path if "%s" in message else message)
                self.assertIn(want, res.stderr.decode().splitlines())


class Outputs(unittest.TestCase):
    """The ids in fire's lines, the handler failed line, the --ack handled answer and
    /metrics."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.path = copy("notify.lua", cls.tmp.path)
        cls.slack = "%s:%d" % (cls.path, line_of(cls.path, "@SLACK"))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_fire_lines(self):
        res = h.run_luahook("fire", self.path, "-", input=b'{"action":"A"}')
        self.assertEqual(res.returncode, 0, output(res))
        lines = res.stdout.decode().splitlines()
        self.assertEqual([l.split()[:2] for l in lines[:3]],
                         [["ok", "notify.lua#1"], ["ok", "notify.lua#slack"],
                          ["ok", "notify.lua#3"]])
        self.assertTrue(lines[1].startswith("ok   notify.lua#slack  %s  (" % self.slack), lines)
        res = h.run_luahook("fire", self.path, "-", input=b'{"action":"FAIL"}')
        self.assertEqual(res.returncode, 1, output(res))
        self.assertEqual(res.stdout.decode().splitlines()[0],
                         "FAIL notify.lua#slack  %s  slack is down" % self.slack)

    def test_serve_logs_answers_and_metrics(self):
        with h.Server(self.path, "--ack", "handled") as srv:
            r = h.post_event(srv.port, {"action": "FAIL"})
            self.assertEqual(r.status, 500, r)
            self.assertEqual(r.json()["failed"], [
                {"handler": self.slack, "id": "notify.lua#slack", "error": "slack is down"}])
            line = srv.wait_log(lambda e: e.get("msg") == "handler failed")
            self.assertEqual((line.get("handler"), line.get("script"), line.get("line")),
                             ("notify.lua#slack", self.path, line_of(self.path, "@SLACK")), line)
            self.assertEqual(h.post_event(srv.port, {"action": "A"}).status, 200)
            m = h.get_metrics(srv.port)
            name = "luahook_handler_runs_by_id_total"
            self.assertEqual(m.get(name, handler="notify.lua#slack", outcome="error"), 1)
            self.assertEqual(m.get(name, handler="notify.lua#slack", outcome="ok"), 1)
            self.assertEqual(m.get(name, handler="notify.lua#1", outcome="ok"), 1)
            # every handler shows from the start, at zero: one series per outcome
            self.assertTrue(m.has(name, handler="notify.lua#3", outcome="timeout"))
            self.assertEqual(len(m.series(name)), 3 * 4)


class Reload(unittest.TestCase):
    def test_reload_says_what_it_removed_and_added(self):
        with h.TempDir() as tmp:
            d = tmp.join("handlers")
            notify = copy("notify.lua", d)
            other = copy("other.lua", d)
            with h.Server(d, "--log-level", "debug") as srv:
                shutil.copyfile(fixture("notify_reduced.lua"), notify)
                os.remove(other)
                start = srv.log_count()
                os.kill(srv.proc.pid, signal.SIGHUP)
                srv.wait_log(lambda e: e.get("msg") == "reloaded", start=start)
                srv.wait_log(lambda e: e.get("msg") == "handler added", start=start)
                logs = srv.logs()
                got = {(e["msg"], e.get("handler") or e.get("script"), e["level"])
                       for e in logs if e.get("msg", "").endswith((" removed", " added"))}
                self.assertEqual(got, {
                    ("script removed", "other.lua", "info"),
                    ("handler removed", "other.lua#1", "info"),
                    ("handler removed", "notify.lua#slack", "info"),
                    ("handler removed", "notify.lua#3", "info"),
                    ("handler added", "notify.lua#mail", "debug"),
                })
                gone = [e for e in logs if e.get("handler") == "notify.lua#slack"
                        and e.get("msg") == "handler removed"][0]
                self.assertEqual((gone.get("script"), gone.get("line")),
                                 (notify, line_of(fixture("notify.lua"), "@SLACK")), gone)
                m = h.get_metrics(srv.port)
                # a removed id keeps its series; the new one shows at zero
                self.assertTrue(m.has("luahook_handler_runs_by_id_total",
                                      handler="notify.lua#slack", outcome="ok"))
                self.assertTrue(m.has("luahook_handler_runs_by_id_total",
                                      handler="notify.lua#mail", outcome="ok"))


if __name__ == "__main__":
    h.main()
