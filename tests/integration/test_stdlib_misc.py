"""The rest of the handler-script library: json (int64 edge cases, errors), log (json and text
formats, fields, script/action/id, level filter), env, sleep (non-blocking, load time) and
timers (after, every, :stop(), no overlap, errors in callbacks, http and sleep inside)."""

import json
import re
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import upstream as u  # noqa: E402

# The handler scripts: tests/fixtures/integration/test_stdlib_misc/ (prelude.lua holds the
# helpers that json.lua, env.lua and timers.lua use; TempDir.fixture joins them).


def output(res):
    return res.stdout.decode("utf-8", "replace") + res.stderr.decode("utf-8", "replace")


def post_ok(test, srv, action, timeout=30.0 * h.SLOW, handlers=1, **fields):
    """Posts `action` and returns the answer body; the answer must be a 200 saying that
    `handlers` handlers ran (a 200 with "handlers": 0 would mean that nothing was checked)."""
    r = h.post_event(srv.port, {"action": action, **fields}, timeout=timeout)
    if r.status != 200:
        test.fail("%s answered %d: %s" % (action, r.status, r.body.decode("utf-8", "replace")))
    body = r.json()
    test.assertIs(body.get("ok"), True, body)
    test.assertEqual(body.get("handlers"), handlers, "%s: %r" % (action, body))
    return body


# ---------------------------------------------------------------------------------------------
# json
# ---------------------------------------------------------------------------------------------

INTS = [0, -1, 2 ** 53 - 1, 2 ** 53 + 1, 2 ** 63 - 1, -(2 ** 63)]

class Json(unittest.TestCase):
    def test_int64_edges_and_errors(self):
        with h.TempDir() as tmp:
            s = tmp.fixture(__file__, "prelude.lua", "json.lua")
            with h.Server(s, "--ack", "handled", env={"OUT": tmp.path}) as srv:
                post_ok(self, srv, "INT64", ints=INTS)
                post_ok(self, srv, "BAD_JSON")
            back = json.loads(tmp.read("ints.json"))
            self.assertEqual(back, {"ints": INTS})
            self.assertTrue(all(isinstance(x, int) for x in back["ints"]), back)

    def test_empty_input_error_has_line_and_column(self):
        with h.TempDir() as tmp:
            s = tmp.fixture(__file__, "prelude.lua", "json.lua")
            with h.Server(s, "--ack", "handled", env={"OUT": tmp.path}) as srv:
                post_ok(self, srv, "BAD_JSON", empty=True)


# ---------------------------------------------------------------------------------------------
# log
# ---------------------------------------------------------------------------------------------

class Log(unittest.TestCase):
    def setUp(self):
        # a copy in a short temporary path: Lua shortens long chunk names ("...t/h1/...") in
        # the script field of log lines, and the repository may sit anywhere
        self.tmp = h.TempDir()
        self.script = self.tmp.fixture(__file__, "log.lua")

    def tearDown(self):
        self.tmp.cleanup()

    def where(self, marker):
        """"<path>:<line>" of the log call marked "-- @<marker>" in log.lua."""
        return "%s:%d" % (self.script, h.line_of(self.script, "-- @" + marker))

    def test_json_format(self):
        with h.Server(self.script, "--ack", "handled") as srv:
            event_id = post_ok(self, srv, "LOG")["id"]
            info = srv.wait_log(lambda e: e.get("msg") == "info line", what="'info line'")
            self.assertEqual(info.get("level"), "info", info)
            self.assertEqual(info.get("script"), self.where("INFO"), info)
            self.assertEqual(info.get("action"), "LOG", info)
            self.assertEqual(info.get("id"), event_id, info)
            self.assertIsInstance(info.get("ts"), str, info)
            for k, v in (("n", 42), ("f", 1.5), ("b", True), ("no", False), ("s", "two words"),
                         ("neg", -7), ("big", 2 ** 63 - 1)):
                self.assertIn(k, info, info)
                self.assertEqual(info[k], v, "%s in %r" % (k, info))
                self.assertIs(type(info[k]), type(v), "%s in %r" % (k, info))
            warn = srv.wait_log(lambda e: e.get("msg") == "warn line")
            self.assertEqual((warn.get("level"), warn.get("script"), warn.get("id")),
                             ("warn", self.where("WARN"), event_id), warn)
            err = srv.wait_log(lambda e: e.get("msg") == "error line")
            self.assertEqual((err.get("level"), err.get("script"), err.get("why")),
                             ("error", self.where("ERROR"), "testing"), err)
            loaded = srv.find_logs(msg="loaded")
            self.assertEqual(len(loaded), 1, srv.stderr_text())
            self.assertEqual(loaded[0].get("script"), self.where("LOADED"), loaded)
            self.assertEqual(loaded[0].get("phase"), "load", loaded)
            self.assertNotIn("action", loaded[0], "load-time line has an action")
            self.assertNotIn("id", loaded[0], "load-time line has an id")
            srv.wait_log(lambda e: e.get("msg") == "event" and e.get("id") == event_id)
            self.assertEqual(srv.find_logs(msg="dbg line"), [], "debug line at --log-level info")

    def test_json_debug_level(self):
        with h.Server(self.script, "--ack", "handled", "--log-level", "debug") as srv:
            event_id = post_ok(self, srv, "LOG")["id"]
            dbg = srv.wait_log(lambda e: e.get("msg") == "dbg line", what="'dbg line'")
            self.assertEqual((dbg.get("level"), dbg.get("script"), dbg.get("id"), dbg.get("n")),
                             ("debug", self.where("DEBUG"), event_id, 1), dbg)

    def test_json_warn_level_filters_info(self):
        port = h.free_port()
        with h.Server(self.script, "--ack", "handled", "--log-level", "warn",
                      listen="127.0.0.1:%d" % port, poll=True) as srv:
            post_ok(self, srv, "LOG")
            srv.wait_log(lambda e: e.get("msg") == "error line")
            msgs = [e.get("msg") for e in srv.logs()]
            self.assertIn("warn line", msgs)
            for gone in ("loaded", "info line", "dbg line"):
                self.assertNotIn(gone, msgs, "%r logged at --log-level warn" % gone)

    def text_line(self, srv, msg):
        pat = re.compile(r"^\S+ (debug|info|warn|error) " + re.escape(msg) + r"( |$)")
        lines = [l for l in srv.raw_lines() if pat.match(l)]
        return lines

    def wait_text(self, srv, msg):
        return h.wait_until(lambda: self.text_line(srv, msg), what="text line %r" % msg)[0]

    def assert_field(self, line, key, value):
        self.assertRegex(line, r"(^| )" + re.escape(key + "=" + value) + r"( |$)")

    def test_text_format(self):
        port = h.free_port()
        with h.Server(self.script, "--ack", "handled", "--log-level", "debug",
                      log_format="text", listen="127.0.0.1:%d" % port) as srv:
            event_id = post_ok(self, srv, "LOG")["id"]
            info = self.wait_text(srv, "info line")
            for line in srv.raw_lines():
                if "info line" in line:
                    with self.assertRaises(ValueError, msg="text line is JSON: %s" % line):
                        json.loads(line)
            self.assertRegex(info, r"^\S+ info info line ")
            self.assert_field(info, "script", self.where("INFO"))
            self.assert_field(info, "action", "LOG")
            self.assert_field(info, "id", event_id)
            for k, v in (("n", "42"), ("f", "1.5"), ("b", "true"), ("no", "false"),
                         ("s", '"two words"'), ("neg", "-7"), ("big", str(2 ** 63 - 1))):
                self.assert_field(info, k, v)
            dbg = self.wait_text(srv, "dbg line")
            self.assertRegex(dbg, r"^\S+ debug dbg line ")
            self.assert_field(dbg, "n", "1")
            warn = self.wait_text(srv, "warn line")
            self.assertRegex(warn, r"^\S+ warn warn line ")
            self.assert_field(warn, "script", self.where("WARN"))
            err = self.wait_text(srv, "error line")
            self.assertRegex(err, r"^\S+ error error line ")
            self.assert_field(err, "why", "testing")
            loaded = self.wait_text(srv, "loaded")
            self.assert_field(loaded, "script", self.where("LOADED"))
            self.assertNotIn(" action=", loaded)
            self.assertNotIn(" id=", loaded)

    def test_text_format_info_level(self):
        port = h.free_port()
        with h.Server(self.script, "--ack", "handled", log_format="text",
                      listen="127.0.0.1:%d" % port) as srv:
            post_ok(self, srv, "LOG")
            self.wait_text(srv, "error line")
            self.assertEqual(self.text_line(srv, "dbg line"), [],
                             "debug line at --log-level info (text)")
            self.assertTrue(self.text_line(srv, "info line"))


# ---------------------------------------------------------------------------------------------
# env
# ---------------------------------------------------------------------------------------------

class Env(unittest.TestCase):
    def test_env(self):
        with h.TempDir() as tmp:
            s = tmp.fixture(__file__, "prelude.lua", "env.lua")
            with h.Server(s, "--ack", "handled",
                          env={"LH_SET": "value one", "LH_EMPTY": "", "OUT": tmp.path}) as srv:
                post_ok(self, srv, "ENV")
                r = h.post_event(srv.port, {"action": "ENV_RAISE"})
                self.assertEqual(r.status, 500, r)
                err = r.json()["failed"][0]["error"]
                self.assertIn("LH_MISSING_VAR", err)
                self.assertIn("not set", err)

    def test_env_missing_at_load_time(self):
        with h.TempDir() as tmp:
            s = tmp.script("e.lua", 'local X = env("LH_NOT_THERE")\non("A", function() end)\n')
            res = h.run_luahook("check", s)
            self.assertEqual(res.returncode, 1, output(res))
            self.assertIn("LH_NOT_THERE", output(res))
            self.assertIn("not set", output(res))
            res = h.run_luahook("check", s, env={"LH_NOT_THERE": "x"})
            self.assertEqual(res.returncode, 0, output(res))


# ---------------------------------------------------------------------------------------------
# sleep
# ---------------------------------------------------------------------------------------------

SLEEP = h.lua_path(__file__, "sleep.lua")


class Sleep(unittest.TestCase):
    # How long the overlap tests' handlers sleep: long enough that every sleeper has started
    # (and other requests were answered) before the first one wakes, even on a loaded machine.
    LONG = 2.0 * h.SLOW

    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.srv = h.Server(SLEEP, "--ack", "handled", env={"OUT": cls.tmp.path}).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop(check=True)
        finally:
            cls.tmp.cleanup()

    def marks(self, tmp=None):
        """[("start"|"end", id)] in the order the SLEEP handlers wrote them."""
        return [tuple(l.split(" ")) for l in (tmp or self.tmp).read_lines("sleep.txt")]

    def test_sleep_waits(self):
        for s in (0.3, 0.05, 0):
            with self.subTest(s=s):
                t0 = time.monotonic()
                post_ok(self, self.srv, "SLEEP", s=s)
                dt = time.monotonic() - t0
                self.assertGreaterEqual(dt, s * 0.95, "sleep(%s) took %.3f s" % (s, dt))
                # generous: only a sleep that ignores its argument gets this far
                self.assertLess(dt, s + 2.0 * h.SLOW, "sleep(%s) took %.3f s" % (s, dt))

    def test_sleep_does_not_block_the_loop(self):
        """Three sleeping handlers at once; /healthz and another event are answered while
        they all sleep, and all three are asleep together: order, not speed."""
        results = []
        before = len(self.marks())

        def one():
            r = h.post_event(self.srv.port, {"action": "SLEEP", "s": self.LONG},
                             timeout=30 * h.SLOW)
            results.append(r)

        threads = [threading.Thread(target=one, daemon=True) for _ in range(3)]
        for t in threads:
            t.start()
        h.wait_until(lambda: len(self.marks()[before:]) >= 3, what="three sleepers to start")
        for _ in range(3):
            self.assertEqual(h.request(self.srv.port, "GET", "/healthz").status, 200)
        post_ok(self, self.srv, "NOP")
        self.assertEqual([w for w, _ in self.marks()[before:]], ["start"] * 3,
                         "/healthz or NOP were answered only after a sleeper woke")
        for t in threads:
            t.join(30 * h.SLOW)
        self.assertEqual([(r.status, r.json().get("handlers")) for r in results],
                         [(200, 1)] * 3, results)
        marks = self.marks()[before:]
        self.assertEqual([w for w, _ in marks], ["start"] * 3 + ["end"] * 3,
                         "the three sleeps did not overlap: %r" % marks)

    def test_many_sleepers_default_ack(self):
        """100 events answered at once (default --ack) whose handlers all sleep together."""
        n = 100
        with h.TempDir() as tmp:
            with h.Server(SLEEP, env={"OUT": tmp.path}) as srv:
                with h.Conn(srv.port) as c:
                    for _ in range(n):
                        r = c.request("POST", "/", ('{"action":"SLEEP","s":%r}' % self.LONG).encode())
                        self.assertEqual(r.status, 200, r)

                def ok():
                    return h.get_metrics(srv.port).get("luahook_handler_runs_total",
                                                       action="SLEEP", outcome="ok") >= n

                h.wait_until(ok, timeout=30.0 * h.SLOW, interval=0.05,
                             what="%d sleeps to finish" % n)
                marks = self.marks(tmp)
                self.assertEqual([w for w, _ in marks], ["start"] * n + ["end"] * n,
                                 "the %d sleeps did not all overlap" % n)
                self.assertEqual(len({i for _, i in marks}), n)

    def test_sleep_at_load_time_is_refused(self):
        with h.TempDir() as tmp:
            s = tmp.script("s.lua", '-- top level\nsleep(0.01)\non("A", function() end)\n')
            res = h.run_luahook("check", s)
            self.assertEqual(res.returncode, 1, output(res))
            self.assertIn("inside a handler", output(res))
            res = h.run_luahook("serve", "--listen", "127.0.0.1:0", s, timeout=15 * h.SLOW)
            self.assertEqual(res.returncode, 1, output(res))
            self.assertIn("inside a handler", output(res))


# ---------------------------------------------------------------------------------------------
# timers
# ---------------------------------------------------------------------------------------------

class Timers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.up = u.Upstream().start()
        cls.script = cls.tmp.fixture(__file__, "prelude.lua", "timers.lua")
        try:
            cls.srv = h.Server(cls.script, "--ack", "handled",
                               env={"OUT": cls.tmp.path, "UP": cls.up.base}).start()
        except BaseException:
            cls.up.stop()
            cls.tmp.cleanup()
            raise
        cls.started = time.monotonic()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop(check=True)      # exit 0 despite a timer that never stops
        finally:
            cls.up.stop()
            cls.tmp.cleanup()

    def lines(self, name):
        return self.tmp.read_lines(name)

    def settle(self, seconds):
        """Waits until `seconds` have passed since the server started."""
        left = self.started + seconds - time.monotonic()
        if left > 0:
            time.sleep(left)

    def test_after_fires_once(self):
        h.wait_until(lambda: self.lines("after.txt"), what="timer.after to fire")
        self.settle(1.0)
        self.assertEqual(self.lines("after.txt"), ["fired"])

    def test_every_repeats_and_stops(self):
        h.wait_until(lambda: len(self.lines("every.txt")) >= 5, timeout=3.0 * h.SLOW,
                     what="five ticks of timer.every")
        time.sleep(0.4)
        self.assertEqual(self.lines("every.txt"), ["1", "2", "3", "4", "5"],
                         "ticks after :stop()")

    def test_error_in_callback_is_logged_and_ticks_go_on(self):
        h.wait_until(lambda: len(self.lines("err.txt")) >= 4, timeout=3.0 * h.SLOW,
                     what="4 ticks of the failing timer")
        lines = [self.srv.wait_log(lambda e, k=k: e.get("msg") == "timer failed" and
                                   "tick boom %d" % k in str(e.get("error")),
                                   what="'timer failed' for tick %d" % k) for k in (1, 2, 3, 4)]
        for line in lines:
            self.assertEqual(line.get("level"), "error", line)
            self.assertTrue(str(line.get("script", "")).startswith(self.script), line)
            self.assertIsInstance(line.get("traceback"), str, line)
        after = self.srv.wait_log(lambda e: e.get("msg") == "timer failed" and
                                  "after boom" in str(e.get("error")),
                                  what="'timer failed' for timer.after")
        self.assertEqual(after.get("level"), "error", after)
        time.sleep(0.3)
        self.assertEqual(self.lines("err.txt"), ["1", "2", "3", "4"])
        self.assertTrue(self.srv.alive())
        self.assertEqual(h.request(self.srv.port, "GET", "/healthz").status, 200)
        post_ok(self, self.srv, "PING")

    def test_every_does_not_overlap(self):
        h.wait_until(lambda: "end 3" in self.lines("overlap.txt"), timeout=5.0 * h.SLOW,
                     what="three runs of the slow timer")
        time.sleep(0.4)
        lines = self.lines("overlap.txt")
        want = []
        for k in (1, 2, 3):
            want += ["start %d" % k, "end %d" % k]
        self.assertEqual(lines, want, "runs of a slow timer.every overlapped or went on")

    def test_http_and_sleep_in_callback(self):
        h.wait_until(lambda: len(self.lines("http.txt")) >= 2, timeout=5.0 * h.SLOW,
                     what="the timer's http call")
        self.assertEqual(self.lines("http.txt"), ["200", "after sleep"])
        self.assertEqual(len(self.up.find("timer")), 1)

    def test_timers_made_in_handlers(self):
        event_id = post_ok(self, self.srv, "START_EVERY")["id"]
        h.wait_until(lambda: len(self.lines("hevery.txt")) >= 3, timeout=3.0 * h.SLOW,
                     what="ticks of a timer made in a handler")
        post_ok(self, self.srv, "STOP_EVERY")
        n = len(self.lines("hevery.txt"))
        time.sleep(0.4)
        got = self.lines("hevery.txt")
        self.assertLessEqual(len(got), n + 1, "ticks went on after :stop()")
        self.assertEqual(set(got), {event_id})

        event_id = post_ok(self, self.srv, "AFTER_IN_HANDLER")["id"]
        h.wait_until(lambda: self.lines("hafter.txt"), timeout=3.0 * h.SLOW,
                     what="timer.after made in a handler")
        time.sleep(0.3)
        self.assertEqual(self.lines("hafter.txt"), [event_id])


if __name__ == "__main__":
    h.main()
