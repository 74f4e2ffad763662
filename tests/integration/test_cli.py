"""The command line: help, version, check, broken scripts, usage errors (exit 2),
environment variables vs options, SIZE values, log formats and levels, signals."""

import calendar
import json
import os
import re
import signal
import socket
import subprocess
import time
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

GOOD = 'on("A", function(ev, ctx) end)\n'
# Broken scripts (copied under various names) and the "file:LINE:" their messages start with.
BAD_SYNTAX = h.lua_source(__file__, "bad_syntax.lua")
BAD_RUNTIME = h.lua_source(__file__, "boom.lua")
SYNTAX_LINE = h.line_of(h.lua_path(__file__, "bad_syntax.lua"), "-- @SYNTAX")
RUNTIME_LINE = h.line_of(h.lua_path(__file__, "boom.lua"), "-- @RAISES")


def syntax_at(path):
    return "%s:%d:" % (path, SYNTAX_LINE)


def runtime_at(path):
    return "%s:%d:" % (path, RUNTIME_LINE)


def output(res):
    return res.stdout.decode("utf-8", "replace") + res.stderr.decode("utf-8", "replace")


class HelpVersion(unittest.TestCase):
    def test_help(self):
        res = h.run_luahook("--help")
        self.assertEqual(res.returncode, 0, output(res))
        text = output(res)
        for word in ("--listen", "--token", "--max-body", "--ack", "--log-format", "check"):
            self.assertIn(word, text)

    def test_version(self):
        res = h.run_luahook("--version")
        self.assertEqual(res.returncode, 0, output(res))
        self.assertRegex(output(res), r"\d+\.\d+")


class Check(unittest.TestCase):
    def setUp(self):
        self.tmp = h.TempDir()

    def tearDown(self):
        self.tmp.cleanup()

    def test_good_scripts(self):
        a = self.tmp.script("a.lua", GOOD)
        os.mkdir(self.tmp.join("dir"))
        h.write_script(self.tmp.join("dir"), "1.lua", GOOD)
        h.write_script(self.tmp.join("dir"), "2.lua", 'on({"B", "C"}, function() end)\n')
        for args in ([a], [self.tmp.join("dir")], [a, self.tmp.join("dir")],
                     [os.path.join(h.SCRIPTS, "labelstudio_fields.lua")]):
            with self.subTest(args=args):
                res = h.run_luahook("check", *args)
                self.assertEqual(res.returncode, 0, output(res))

    def test_syntax_error(self):
        bad = self.tmp.script("bad.lua", BAD_SYNTAX)
        res = h.run_luahook("check", bad)
        self.assertEqual(res.returncode, 1, output(res))
        lines = res.stderr.decode().splitlines()
        self.assertTrue(any(l.startswith(syntax_at(bad)) for l in lines),
                        "no line starting with %s in\n%s" % (syntax_at(bad), res.stderr.decode()))

    def test_syntax_error_relative_path(self):
        self.tmp.script("bad.lua", BAD_SYNTAX)
        res = h.run_luahook("check", "bad.lua", cwd=self.tmp.path)
        self.assertEqual(res.returncode, 1, output(res))
        self.assertTrue(any(l.startswith(syntax_at("bad.lua"))
                            for l in res.stderr.decode().splitlines()), res.stderr.decode())

    def test_error_at_load_time(self):
        bad = self.tmp.script("boom.lua", BAD_RUNTIME)
        res = h.run_luahook("check", bad)
        self.assertEqual(res.returncode, 1, output(res))
        self.assertTrue(any(l.startswith(runtime_at(bad))
                            for l in res.stderr.decode().splitlines()), res.stderr.decode())
        self.assertIn("refusing to load", res.stderr.decode())

    def test_every_problem_reported(self):
        good = self.tmp.script("good.lua", GOOD)
        os.mkdir(self.tmp.join("d"))
        bad1 = h.write_script(self.tmp.join("d"), "x_bad.lua", BAD_SYNTAX)
        bad2 = self.tmp.script("boom.lua", BAD_RUNTIME)
        res = h.run_luahook("check", good, self.tmp.join("d"), bad2)
        self.assertEqual(res.returncode, 1, output(res))
        err = res.stderr.decode().splitlines()
        self.assertTrue(any(l.startswith(syntax_at(bad1)) for l in err), "\n".join(err))
        self.assertTrue(any(l.startswith(runtime_at(bad2)) for l in err), "\n".join(err))
        self.assertFalse(any(l.startswith(good) for l in err), "\n".join(err))

    def test_missing_path(self):
        missing = self.tmp.join("nope.lua")
        res = h.run_luahook("check", missing)
        self.assertIn(res.returncode, (1, 2), output(res))
        self.assertIn(missing, res.stderr.decode())

    def test_serve_refuses_broken_script(self):
        bad = self.tmp.script("bad.lua", BAD_SYNTAX)
        good = self.tmp.script("good.lua", GOOD)
        check = h.run_luahook("check", bad)
        message = [l for l in check.stderr.decode().splitlines() if l.startswith(syntax_at(bad))]
        self.assertTrue(message, check.stderr.decode())
        for args in (["serve", "--listen", "127.0.0.1:0", good, bad],
                     ["--listen", "127.0.0.1:0", bad]):
            with self.subTest(args=args):
                res = h.run_luahook(*args, timeout=15 * h.SLOW)
                self.assertEqual(res.returncode, 1, output(res))
                self.assertIn(message[0], res.stderr.decode())

    def test_serve_refuses_script_failing_at_load(self):
        bad = self.tmp.script("boom.lua", BAD_RUNTIME)
        res = h.run_luahook("serve", "--listen", "127.0.0.1:0", bad, timeout=15 * h.SLOW)
        self.assertEqual(res.returncode, 1, output(res))
        self.assertIn(runtime_at(bad), res.stderr.decode())


class UsageErrors(unittest.TestCase):
    """Exit 2 with a message on stderr, and no server started (run() would time out)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.good = cls.tmp.script("good.lua", GOOD)

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def assert_usage_error(self, *args, env=None):
        res = h.run_luahook(*args, env=env, timeout=15 * h.SLOW)
        self.assertEqual(res.returncode, 2, "luahook %s (env %r): %s" % (args, env, output(res)))
        self.assertTrue(res.stderr.strip(), "no message on stderr for %s" % (args,))
        return res

    def test_bad_options(self):
        L = ["--listen", "127.0.0.1:0"]
        cases = [
            ["--bogus"],
            ["serve", "--bogus", "x"],
            ["serve", "--listen", "nohostport"],
            ["serve", "--listen", "127.0.0.1:99999"],
            ["serve", "--listen", "127.0.0.1:-1"],
            ["serve", "--listen", "127.0.0.1:abc"],
            ["serve", *L, "--max-body", "abc"],
            ["serve", *L, "--max-body", "10x"],
            ["serve", *L, "--max-body", "-5"],
            ["serve", *L, "--max-body", ""],
            ["serve", *L, "--max-header", "lots"],
            ["serve", *L, "--max-connections", "many"],
            ["serve", *L, "--idle-timeout", "soon"],
            ["serve", *L, "--read-timeout", "-1"],
            ["serve", *L, "--shutdown-timeout", "later"],
            ["serve", *L, "--ack", "maybe"],
            ["serve", *L, "--log-level", "verbose"],
            ["serve", *L, "--log-format", "xml"],
        ]
        for args in cases:
            with self.subTest(args=args):
                self.assert_usage_error(*args, self.good)

    def test_missing_option_value(self):
        for opt in ("--token", "--listen", "--max-body", "--ack"):
            with self.subTest(opt=opt):
                self.assert_usage_error("serve", opt)

    def test_no_paths(self):
        self.assert_usage_error("serve", "--listen", "127.0.0.1:0")
        self.assert_usage_error("check")

    def test_bad_env_values(self):
        for name, value in (("LUAHOOK_MAX_BODY", "abc"), ("LUAHOOK_LOG_FORMAT", "xml"),
                            ("LUAHOOK_LOG_LEVEL", "loud"), ("LUAHOOK_ACK", "never"),
                            ("LUAHOOK_LISTEN", "not-an-address"),
                            ("LUAHOOK_MAX_CONNECTIONS", "x")):
            with self.subTest(name=name):
                listen = [] if name == "LUAHOOK_LISTEN" else ["--listen", "127.0.0.1:0"]
                self.assert_usage_error("serve", *listen, self.good, env={name: value})


class EnvAndOptions(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.good = cls.tmp.script("any.lua", 'on("*", function() end)\n')

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def test_token_from_env(self):
        with h.Server(self.good, env={"LUAHOOK_TOKEN": "from-env"}) as srv:
            self.assertEqual(h.post_event(srv.port, {"action": "A"}).status, 401)
            r = h.post_event(srv.port, {"action": "A"}, headers={"Authorization": "Token from-env"})
            self.assertEqual(r.status, 200, r)

    def test_empty_token_from_env_is_refused(self):
        """An env file's `LUAHOOK_TOKEN=` would mean no authentication: refused, exit 2."""
        res = h.run_luahook("serve", "--listen", "127.0.0.1:0", self.good,
                            env={"LUAHOOK_TOKEN": ""}, timeout=15 * h.SLOW)
        self.assertEqual(res.returncode, 2, res)
        self.assertIn(b"environment LUAHOOK_TOKEN: the token must not be empty", res.stderr)

    def test_command_line_wins_over_env(self):
        with h.Server(self.good, "--token", "from-cli", env={"LUAHOOK_TOKEN": "from-env"}) as srv:
            r = h.post_event(srv.port, {"action": "A"}, headers={"Authorization": "Token from-env"})
            self.assertEqual(r.status, 401, r)
            r = h.post_event(srv.port, {"action": "A"}, headers={"Authorization": "Token from-cli"})
            self.assertEqual(r.status, 200, r)

    def test_auth_header_from_env(self):
        with h.Server(self.good, env={"LUAHOOK_TOKEN": "t", "LUAHOOK_AUTH_HEADER": "X-Key"}) as srv:
            r = h.post_event(srv.port, {"action": "A"}, headers={"X-Key": "t"})
            self.assertEqual(r.status, 200, r)

    def test_max_body_from_env_and_override(self):
        body = json.dumps({"action": "A", "pad": "x" * 2000}).encode()
        with h.Server(self.good, env={"LUAHOOK_MAX_BODY": "1k"}) as srv:
            self.assertEqual(h.post_event(srv.port, body).status, 413)
        with h.Server(self.good, "--max-body", "4k", env={"LUAHOOK_MAX_BODY": "1k"}) as srv:
            self.assertEqual(h.post_event(srv.port, body).status, 200)

    def test_size_suffixes(self):
        def sized(n):
            b = b'{"action":"A","p":"'
            return b + b"x" * (n - len(b) - 2) + b'"}'
        for value, limit in (("2k", 2048), ("3000", 3000), ("1m", 1024 * 1024)):
            with self.subTest(value=value):
                with h.Server(self.good, "--max-body", value) as srv:
                    self.assertEqual(h.post_event(srv.port, sized(limit)).status, 200)
                    self.assertEqual(h.post_event(srv.port, sized(limit + 1)).status, 413)
        with h.Server(self.good, "--max-body", "1g") as srv:
            self.assertEqual(h.post_event(srv.port, sized(5000)).status, 200)

    def test_default_max_body_is_64m(self):
        """A Content-Length just over 64 MiB is refused without sending the body; exactly
        64 MiB announced is not refused up front (the server waits for the body)."""
        with h.Server(self.good) as srv:
            with h.Conn(srv.port) as c:
                c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                       % (64 * 1024 * 1024 + 1))
                self.assertEqual(c.read_response(timeout=3 * h.SLOW).status, 413)
            with h.Conn(srv.port) as c:
                c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{"
                       % (64 * 1024 * 1024))
                try:
                    r = c.read_response(timeout=0.5)
                    self.fail("64 MiB exactly was refused up front: %r" % r)
                except socket.timeout:
                    pass

    def test_log_level_from_env(self):
        empty = self.tmp.script("empty.lua", "-- no handlers\n")
        with h.Server(empty, env={"LUAHOOK_LOG_LEVEL": "debug"}) as srv:
            # the first unhandled event of an action is said at info, the next at debug
            h.post_event(srv.port, {"action": "A"})
            r = h.post_event(srv.port, {"action": "A"})
            ev = srv.wait_event(r.json()["id"])
            self.assertEqual(ev.get("level"), "debug")

    def test_listen_from_env(self):
        port = h.free_port()
        with h.Server(self.good, listen=None, env={"LUAHOOK_LISTEN": "127.0.0.1:%d" % port}) as srv:
            self.assertEqual(srv.port, port)
            self.assertEqual(h.request(port, "GET", "/healthz").status, 200)

    def test_log_format_from_env(self):
        port = h.free_port()
        with h.Server(self.good, log_format=None, listen="127.0.0.1:%d" % port,
                      env={"LUAHOOK_LOG_FORMAT": "json"}) as srv:
            pass
        lines = [l for l in srv.raw_lines() if l.strip()]
        self.assertTrue(lines)
        for l in lines:
            self.assertIsInstance(json.loads(l), dict, l)

    def test_default_listen_address(self):
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", 9090))
        except OSError:
            self.skipTest("127.0.0.1:9090 is in use here")
        finally:
            probe.close()
        with h.Server(self.good, listen=None) as srv:
            self.assertEqual(srv.address, "127.0.0.1:9090")
            self.assertEqual(h.request(9090, "GET", "/healthz").status, 200)

    def test_serve_is_the_default_command(self):
        with h.Server(self.good, subcommand=None) as srv:
            self.assertEqual(h.post_event(srv.port, {"action": "A"}).status, 200)


class LogFormat(unittest.TestCase):
    TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

    def test_json_lines(self):
        with h.TempDir() as tmp:
            s = tmp.script("x.lua", 'on("BOOM", function() error("x") end)\n'
                                    'on("A", function(ev, ctx) log.info("hi", {k = "v"}) end)\n')
            with h.Server(s, "--log-level", "debug") as srv:
                self.assertEqual(h.post_event(srv.port, {"action": "A"}).status, 200)
                self.assertEqual(h.post_event(srv.port, {"action": "BOOM"}).status, 200)
                self.assertEqual(h.post_event(srv.port, b"[").status, 400)
                srv.wait_log(lambda e: e.get("msg") == "handler failed")
            lines = [l for l in srv.raw_lines() if l.strip()]
            self.assertGreaterEqual(len(lines), 5)
            for line in lines:
                obj = json.loads(line)
                self.assertIsInstance(obj, dict, line)
                self.assertRegex(obj.get("ts", ""), self.TS, line)
                self.assertIn(obj.get("level"), ("debug", "info", "warn", "error"), line)
                self.assertIsInstance(obj.get("msg"), str, line)
                # the timestamp is now (UTC), to the second
                t = time.strptime(obj["ts"][:19], "%Y-%m-%dT%H:%M:%S")
                self.assertLess(abs(calendar.timegm(t) - time.time()), 120, line)

    def test_listening_line(self):
        with h.TempDir() as tmp:
            with h.Server(tmp.script("x.lua", GOOD)) as srv:
                line = srv.find_logs(msg="listening")[0]
                self.assertEqual(line.get("level"), "info")
                self.assertEqual(line.get("address"), "127.0.0.1:%d" % srv.port)

    def test_text_format_is_not_json(self):
        port = h.free_port()
        with h.TempDir() as tmp:
            with h.Server(tmp.script("x.lua", GOOD), log_format="text",
                          listen="127.0.0.1:%d" % port) as srv:
                pass
        text = srv.stderr_text()
        self.assertIn("listening", text)
        self.assertIn(str(port), text)
        for line in text.splitlines():
            if line.strip():
                with self.assertRaises(ValueError, msg="text format line is JSON: %s" % line):
                    json.loads(line)

    def test_log_level_warn_hides_info(self):
        port = h.free_port()
        with h.TempDir() as tmp:
            s = tmp.script("x.lua", 'on("BOOM", function() error("kaboom") end)\n'
                                    'on("A", function() end)\n')
            with h.Server(s, "--log-level", "warn", listen="127.0.0.1:%d" % port,
                          poll=True) as srv:
                self.assertEqual(h.post_event(port, {"action": "A"}).status, 200)
                self.assertEqual(h.post_event(port, {"action": "BOOM"}).status, 200)
                self.assertEqual(h.post_event(port, b"nope").status, 400)
                srv.wait_log(lambda e: e.get("msg") == "handler failed")
                srv.wait_log(lambda e: e.get("msg") == "rejected")
            levels = {e.get("level") for e in srv.logs()}
            self.assertEqual(levels - {"warn", "error"}, set(), srv.stderr_text())
            self.assertEqual(srv.find_logs(msg="listening"), [])


class Signals(unittest.TestCase):
    def test_sigterm_right_after_listening(self):
        """The 'listening' line means ready, signals included: a SIGTERM sent the moment it
        appears must still give a clean exit 0 (not death by the signal)."""
        with h.TempDir() as tmp:
            script = tmp.script("x.lua", GOOD)
            codes = []
            for _ in range(100):
                srv = h.Server(script).start()
                srv.stop(check=False)
                codes.append(srv.returncode)
            bad = [c for c in codes if c != 0]
            self.assertEqual(bad, [], "%d of 100 starts died of the SIGTERM" % len(bad))

    def test_sigterm_and_sigint_exit_zero(self):
        # A behaviour bound, not a speed one: a server that waited for its idle keep-alive
        # client would exit only when --idle-timeout closes that connection. The test waits
        # a third of that timeout (20 s, however slow the build): far more than an exit
        # takes, far less than the wait it proves absent.
        idle_timeout = 60
        with h.TempDir() as tmp:
            for sig in (signal.SIGTERM, signal.SIGINT):
                with self.subTest(sig=sig.name):
                    with h.Server(tmp.script("x.lua", GOOD),
                                  "--idle-timeout", idle_timeout) as srv:
                        with h.Conn(srv.port) as idle:      # an idle keep-alive client
                            self.assertEqual(idle.request("GET", "/healthz").status, 200)
                            srv.proc.send_signal(sig)
                            try:
                                srv.proc.wait(idle_timeout / 3)
                            except subprocess.TimeoutExpired:
                                self.fail("no exit within %d s of %s: the idle keep-alive "
                                          "connection held it" % (idle_timeout / 3, sig.name))
                    # leaving the with block asserted exit code 0


if __name__ == "__main__":
    h.main()
