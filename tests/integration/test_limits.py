"""Handler limits: --handler-timeout (a busy loop, a busy loop under pcall, a long sleep, an
http call to an upstream that never answers) and --memory-limit (a handler that allocates
without bound); each stopped, logged, counted, answered with 500 under --ack handled, and the
server goes on. The same limits from LUAHOOK_HANDLER_TIMEOUT / LUAHOOK_MEMORY_LIMIT, and bad
values (exit 2). --max-pending: an event refused with 503 never starts a handler, not even
the first of several."""

import os
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import upstream as u  # noqa: E402

# tests/fixtures/integration/test_limits/limits.lua; the tests look for "<path>:<line>" of
# the on(...) calls, found by their "-- @ACTION" markers.
SCRIPT = h.lua_path(__file__, "limits.lua")

TIMEOUT = 0.5
# How late past TIMEOUT a stopped handler may answer: generous, for a loaded machine; still far
# below what only a missed deadline explains (SLEEP sleeps 60 s, HANG hangs, SPIN never ends).
LATE = 3.0 * h.SLOW


def output(res):
    return res.stdout.decode("utf-8", "replace") + res.stderr.decode("utf-8", "replace")


class Base(unittest.TestCase):
    ARGS = ()
    ENV = {}

    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.up = u.Upstream().start()
        cls.script = SCRIPT
        env = {"OUT": cls.tmp.path, "UP": cls.up.base}
        env.update(cls.ENV)
        try:
            cls.srv = h.Server(cls.script, "--ack", "handled", *cls.ARGS, env=env).start()
        except BaseException:
            cls.up.stop()
            cls.tmp.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop(check=True)
        finally:
            cls.up.stop()
            cls.tmp.cleanup()

    def metric(self, action, outcome):
        return h.get_metrics(self.srv.port).get("luahook_handler_runs_total",
                                                action=action, outcome=outcome)

    def post(self, action, **fields):
        t0 = time.monotonic()
        r = h.post_event(self.srv.port, {"action": action, **fields}, timeout=30.0 * h.SLOW)
        return r, time.monotonic() - t0

    def assert_alive(self, action="OK"):
        """The server still answers and still runs handlers: `action`'s one handler ran to
        its end (it leaves a file named after the event id)."""
        self.assertTrue(self.srv.alive(), self.srv.stderr_text()[-3000:])
        self.assertEqual(h.request(self.srv.port, "GET", "/healthz").status, 200)
        r, _ = self.post(action)
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertEqual(body.get("handlers"), 1, body)
        self.assertIsNotNone(self.tmp.read("%s-%s" % (action.lower(), body["id"])),
                             "the %s handler did not run to its end" % action)

    def assert_stopped(self, action, outcome, word, handlers=1):
        """Posts `action`; its first handler must be stopped with `outcome`, error with `word`."""
        before = self.metric(action, outcome)
        r, elapsed = self.post(action)
        self.assertEqual(r.status, 500, r)
        body = r.json()
        self.assertEqual(body.get("handlers"), handlers, body)
        failed = body.get("failed")
        self.assertIsInstance(failed, list, body)
        self.assertEqual(len(failed), 1, body)
        self.assertEqual(failed[0].get("handler"),
                         "%s:%d" % (self.script, h.line_of(self.script, "-- @" + action)), body)
        self.assertIn(word, failed[0].get("error", ""), body)
        event_id = body["id"]
        line = self.srv.wait_log(lambda e: e.get("msg") == "handler failed" and
                                 e.get("id") == event_id, what="'handler failed' of " + action)
        self.assertEqual(line.get("outcome"), outcome, line)
        self.assertEqual(line.get("level"), "error", line)
        self.assertIn(word, str(line.get("error")), line)
        self.assertEqual(self.metric(action, outcome), before + 1,
                         "luahook_handler_runs_total{action=%s,outcome=%s}" % (action, outcome))
        return event_id, elapsed


class HandlerTimeout(Base):
    ARGS = ("--handler-timeout", str(TIMEOUT))

    def check_timing(self, elapsed):
        self.assertGreaterEqual(elapsed, TIMEOUT * 0.9, "stopped before the timeout")
        self.assertLess(elapsed, TIMEOUT + LATE, "stopped %.2f s after the start" % elapsed)

    def test_busy_loop(self):
        event_id, elapsed = self.assert_stopped("SPIN", "timeout", "timed out", handlers=2)
        self.check_timing(elapsed)
        self.assertIsNotNone(self.tmp.read("after-spin-" + event_id),
                             "the next handler of the same event did not run")
        self.assertEqual(self.metric("SPIN", "ok"), 1)
        self.assert_alive()

    def test_busy_loop_under_pcall(self):
        event_id, elapsed = self.assert_stopped("PCALL_SPIN", "timeout", "timed out", handlers=2)
        self.check_timing(elapsed)
        self.assertIsNotNone(self.tmp.read("after-pcall-" + event_id),
                             "the next handler of the same event did not run")
        self.assert_alive()

    def test_sleep_past_the_timeout(self):
        event_id, elapsed = self.assert_stopped("SLEEP", "timeout", "timed out")
        self.check_timing(elapsed)
        self.assert_alive()

    def test_http_to_an_upstream_that_never_answers(self):
        event_id, elapsed = self.assert_stopped("HANG", "timeout", "timed out")
        self.check_timing(elapsed)
        self.assertEqual(len(self.up.find(event_id)), 1, "the request never reached the upstream")
        self.assert_alive()
        time.sleep(0.3)
        self.assertIsNone(self.tmp.read("hang-returned-" + event_id),
                          "the stopped handler went on after its http call")

    def test_several_at_once(self):
        """Three stuck handlers in flight together, then a normal event."""
        conns = [h.Conn(self.srv.port) for _ in range(3)]
        try:
            for c, action in zip(conns, ("SLEEP", "HANG", "SLEEP")):
                c.send(h.build_request("POST", "/", ('{"action":"%s"}' % action).encode()))
            for c in conns:
                r = c.read_response(timeout=TIMEOUT + 5.0 * h.SLOW)
                self.assertEqual(r.status, 500, r)
                self.assertIn("timed out", r.json()["failed"][0]["error"])
        finally:
            for c in conns:
                c.close()
        self.assert_alive()

    def test_within_the_limit_is_fine(self):
        r, elapsed = self.post("SLEEP_SHORT", s=0.1)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json().get("handlers"), 1, r)


class HandlerTimeoutFromEnv(Base):
    ENV = {"LUAHOOK_HANDLER_TIMEOUT": str(TIMEOUT)}

    def test_busy_loop(self):
        event_id, elapsed = self.assert_stopped("SPIN", "timeout", "timed out", handlers=2)
        self.assertLess(elapsed, TIMEOUT + LATE)
        self.assert_alive()


class CommandLineWinsOverEnv(Base):
    ENV = {"LUAHOOK_HANDLER_TIMEOUT": "120"}    # far past TIMEOUT + LATE
    ARGS = ("--handler-timeout", str(TIMEOUT))

    def test_busy_loop(self):
        event_id, elapsed = self.assert_stopped("SPIN", "timeout", "timed out", handlers=2)
        self.assertLess(elapsed, TIMEOUT + LATE)


class DefaultTimeout(Base):
    def test_default_is_not_short(self):
        r, elapsed = self.post("SLEEP_SHORT", s=1.2)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json().get("handlers"), 1, r)
        self.assertGreaterEqual(elapsed, 1.2)




class MemoryLimit(Base):
    ARGS = ("--memory-limit", "64m")

    def test_unbounded_allocation(self):
        rss = []
        for i in range(4):
            with self.subTest(round=i):
                self.assert_stopped("MEM", "memory", "memory")
                self.assert_alive()
                self.assert_alive("BIG")    # 12 MB fit again: the failed run's memory is back
                rss.append(h.rss_kib(self.srv.proc.pid))
        self.assertEqual(self.metric("MEM", "memory"), 4)
        self.assertEqual(self.metric("MEM", "error"), 0)
        print("\n[memory] RSS after each failed MEM event (KiB): %s" % rss, file=sys.stderr)
        if not h.SANITIZED:     # ASan's quarantine keeps freed memory
            self.assertLess(rss[-1] - rss[0], 64 * 1024,
                            "RSS grew from %d to %d KiB over 3 more memory failures" % (rss[0], rss[-1]))


class MemoryLimitFromEnv(Base):
    ENV = {"LUAHOOK_MEMORY_LIMIT": "64m"}

    def test_unbounded_allocation(self):
        self.assert_stopped("MEM", "memory", "memory")
        self.assert_alive()
        self.assert_alive("BIG")


class BadValues(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.good = cls.tmp.script("good.lua", 'on("A", function() end)\n')

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def assert_exit_2(self, *args, env=None):
        res = h.run_luahook("serve", "--listen", "127.0.0.1:0", *args, self.good, env=env,
                            timeout=15 * h.SLOW)
        self.assertEqual(res.returncode, 2, "luahook %s (env %r): %s" % (args, env, output(res)))
        self.assertTrue(res.stderr.strip(), "no message on stderr for %s %r" % (args, env))

    def test_bad_handler_timeout(self):
        for v in ("abc", "-1", "1x", "", "nan"):
            with self.subTest(value=v):
                self.assert_exit_2("--handler-timeout", v)
        with self.subTest(env="abc"):
            self.assert_exit_2(env={"LUAHOOK_HANDLER_TIMEOUT": "abc"})
        with self.subTest(env="-5"):
            self.assert_exit_2(env={"LUAHOOK_HANDLER_TIMEOUT": "-5"})

    def test_bad_memory_limit(self):
        for v in ("abc", "12q", "-5m", "", "1.5.5m"):
            with self.subTest(value=v):
                self.assert_exit_2("--memory-limit", v)
        with self.subTest(env="lots"):
            self.assert_exit_2(env={"LUAHOOK_MEMORY_LIMIT": "lots"})

    def test_missing_values(self):
        for opt in ("--handler-timeout", "--memory-limit"):
            with self.subTest(option=opt):
                res = h.run_luahook("serve", "--listen", "127.0.0.1:0", self.good, opt,
                                    timeout=15 * h.SLOW)
                self.assertEqual(res.returncode, 2, output(res))

    def test_help_lists_the_options(self):
        res = h.run_luahook("--help")
        self.assertEqual(res.returncode, 0, output(res))
        for opt in ("--handler-timeout", "--memory-limit"):
            self.assertIn(opt, output(res))


PENDING_SCRIPT = h.lua_path(__file__, "pending.lua")


class MaxPending(unittest.TestCase):
    """--max-pending 2 with one run held: an event of two handlers does not fit and is
    refused whole, before any of its handlers starts; one of one handler still fits."""

    def run_with(self, *args):
        with h.TempDir() as tmp:
            with h.Server(PENDING_SCRIPT, "--max-pending", "2", *args,
                          env={"OUT": tmp.path}) as srv:
                if "handled" in args:
                    held = h.Conn(srv.port)
                    held.send(h.build_request("POST", "/", b'{"action":"HOLD"}',
                                              [("Content-Type", "application/json")]))
                else:
                    held = None
                    r = h.post_event(srv.port, {"action": "HOLD"})
                    self.assertEqual(r.status, 200, r)
                deadline = time.time() + 5 * h.SLOW
                while tmp.read("hold-started") is None and time.time() < deadline:
                    time.sleep(0.01)
                self.assertIsNotNone(tmp.read("hold-started"), "HOLD never started")

                for _ in range(3):
                    r = h.post_event(srv.port, {"action": "TWO"})
                    self.assertEqual(r.status, 503, r)
                    self.assertEqual(r.header("retry-after"), "1", r)
                    self.assertIn("--max-pending 2", r.json()["error"])
                    self.assertNotIn("id", r.json())
                # an action nobody handles needs no run: still accepted
                r = h.post_event(srv.port, {"action": "NOBODY"})
                self.assertEqual((r.status, r.json()["handlers"]), (200, 0), r)
                # one more run fits exactly
                r = h.post_event(srv.port, {"action": "ONE"})
                self.assertEqual((r.status, r.json()["handlers"]), (200, 1), r)
                srv.wait_event(r.json()["id"])

                started = [n for n in os.listdir(tmp.path) if n.startswith("two-")]
                self.assertEqual(started, [], "a refused event started handlers")
                m = h.get_metrics(srv.port)
                self.assertEqual(m.get("luahook_events_rejected_total", reason="overload"), 3)
                self.assertEqual(m.get("luahook_events_received_total", action="TWO"), 0)
                self.assertEqual(m.get("luahook_handler_runs_total", action="TWO",
                                       outcome="ok"), 0)
                rejected = srv.find_logs(msg="rejected", reason="overload")
                self.assertEqual(len(rejected), 3, rejected)

                # once the held run ended, the same event fits and both handlers run
                with open(tmp.join("release"), "w"):
                    pass
                if held is not None:
                    self.assertEqual(held.read_response().status, 200)
                    held.close()
                deadline = time.time() + 5 * h.SLOW
                while tmp.read("hold-ended") is None and time.time() < deadline:
                    time.sleep(0.01)
                srv.wait_log(lambda l: l.get("msg") == "event" and l.get("action") == "HOLD")
                r = h.post_event(srv.port, {"action": "TWO"})
                self.assertEqual((r.status, r.json()["handlers"]), (200, 2), r)
                eid = r.json()["id"]
                srv.wait_event(eid)
                self.assertEqual(sorted(n for n in os.listdir(tmp.path) if n.startswith("two-")),
                                 ["two-a-" + eid, "two-b-" + eid])

    def test_refused_event_runs_no_handler(self):
        self.run_with()

    def test_refused_event_runs_no_handler_ack_handled(self):
        self.run_with("--ack", "handled")

    def test_pipelined_event_fits_once_the_last_run_ended(self):
        """--ack handled --max-pending 1: the answer to HOLD (given as its one run ends)
        lets the pipelined ONE in at once; the ended run must not still count."""
        with h.TempDir() as tmp:
            with h.Server(PENDING_SCRIPT, "--max-pending", "1", "--ack", "handled",
                          env={"OUT": tmp.path}) as srv:
                c = h.Conn(srv.port)
                hdrs = [("Content-Type", "application/json")]
                c.send(h.build_request("POST", "/", b'{"action":"HOLD"}', hdrs)
                       + h.build_request("POST", "/", b'{"action":"ONE"}', hdrs))
                deadline = time.time() + 5 * h.SLOW
                while tmp.read("hold-started") is None and time.time() < deadline:
                    time.sleep(0.01)
                self.assertIsNotNone(tmp.read("hold-started"), "HOLD never started")
                with open(tmp.join("release"), "w"):
                    pass
                first, second = c.read_response(), c.read_response()
                c.close()
                self.assertEqual((first.status, first.json()["handlers"]), (200, 1), first)
                self.assertEqual((second.status, second.json()["handlers"]), (200, 1), second)
                m = h.get_metrics(srv.port)
                self.assertEqual(m.get("luahook_events_rejected_total", reason="overload"), 0)


if __name__ == "__main__":
    h.main()
