"""The Lua side: registration and run order, script isolation, ctx, errors in handlers,
the ack modes, json/log globals, in-flight work at shutdown."""

import os
import signal
import time
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

class Order(unittest.TestCase):
    def test_registration_order_then_star(self):
        with h.TempDir() as tmp:
            a = tmp.fixture(__file__, "append.lua", "order_a.lua", name="a.lua")
            b = tmp.fixture(__file__, "append.lua", "order_b.lua", name="b.lua")
            with h.Server([a, b], "--ack", "handled", env={"OUT_DIR": tmp.path}) as srv:
                for action, want in (("ORD", ["h1", "h2", "h3", "h4", "star1", "star2"]),
                                     ("OTHER", ["h3", "star1", "star2"]),
                                     ("NOBODY", ["star1", "star2"])):
                    with self.subTest(action=action):
                        r = h.post_event(srv.port, {"action": action})
                        self.assertEqual(r.status, 200, r)
                        body = r.json()
                        self.assertEqual(body["handlers"], len(want), body)
                        got = [l.split(" ", 1)[1] for l in tmp.read_lines("order.txt")
                               if l.split(" ", 1)[0] == body["id"]]
                        self.assertEqual(got, want)

    def test_folder_loads_in_name_order(self):
        with h.TempDir() as tmp:
            os.mkdir(tmp.join("hooks"))
            folder = h.lua_source(__file__, "append.lua", "folder.lua")
            for name in ("20_b.lua", "10_a.lua", "03_c.lua", "100_d.lua"):
                h.write_script(tmp.join("hooks"), name, folder)
            # not Lua files: must not be loaded (each would be a syntax error)
            h.write_script(tmp.join("hooks"), "README.md", "# not lua (\n")
            h.write_script(tmp.join("hooks"), "old.lua.bak", "this is ( not lua\n")
            with h.Server(tmp.join("hooks"), "--ack", "handled",
                          env={"OUT_DIR": tmp.path}) as srv:
                r = h.post_event(srv.port, {"action": "F"})
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["handlers"], 4)
            self.assertEqual(tmp.read_lines("folder.txt"),
                             sorted(["20_b.lua", "10_a.lua", "03_c.lua", "100_d.lua"]))


class Isolation(unittest.TestCase):
    def test_each_script_has_its_own_globals(self):
        a = h.lua_path(__file__, "isolation_a.lua")
        b = h.lua_path(__file__, "isolation_b.lua")
        with h.Server([a, b], "--ack", "handled") as srv:
            for _ in range(2):   # twice: run-time globals of the first round persist
                r = h.post_event(srv.port, {"action": "G"})
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["handlers"], 2)

    def test_globals_persist_within_a_script(self):
        with h.Server(h.lua_path(__file__, "count.lua"), "--ack", "handled") as srv:
            for n in range(1, 6):
                r = h.post_event(srv.port, {"action": "N", "n": n})
                self.assertEqual(r.status, 200, r)

    def test_standard_library_available(self):
        with h.TempDir() as tmp:
            with h.Server(h.lua_path(__file__, "std.lua"), "--ack", "handled",
                          env={"STD_PROBE": "probe-value", "OUT_DIR": tmp.path}) as srv:
                r = h.post_event(srv.port, {"action": "STD"})
                self.assertEqual(r.status, 200, r)
            self.assertEqual(tmp.read("std.txt"), b"ok")


class Context(unittest.TestCase):
    SCRIPT = h.lua_path(__file__, "ctx.lua")

    def read_ctx(self, tmp, event_id):
        out = {}
        headers = {}
        for line in tmp.read_lines(event_id + ".ctx"):
            k, v = line.split("\t", 1)
            if k.startswith("header:"):
                headers[k[len("header:"):]] = v
            else:
                out[k] = v
        out["headers"] = headers
        return out

    def test_ctx_fields(self):
        with h.TempDir() as tmp:
            with h.Server(self.SCRIPT, "--ack", "handled", env={"OUT_DIR": tmp.path}) as srv:
                body = h.fixture_bytes("TASKS_CREATED.json")   # pretty, with \u escapes
                with h.Conn(srv.port) as c:
                    t0 = time.time()
                    c.send(h.build_request("POST", "/hooks/labelstudio", body, [
                        ("Host", "127.0.0.1:%d" % srv.port),
                        ("Content-Type", "application/json"),
                        ("User-Agent", "python-requests/2.31.0"),
                        ("X-Custom-Header", "Hello World"),
                        ("X-MiXeD-CaSe", "v"),
                    ]))
                    r = c.read_response()
                    t1 = time.time()
                    local_port = c.local_port()
                self.assertEqual(r.status, 200, r)
                event_id = r.json()["id"]
                ctx = self.read_ctx(tmp, event_id)
                self.assertEqual(ctx["id"], event_id)
                self.assertEqual(ctx["action"], "TASKS_CREATED")
                self.assertEqual(ctx["path"], "/hooks/labelstudio")
                self.assertEqual(ctx["remote"], "127.0.0.1:%d" % local_port)
                self.assertEqual(ctx["attempt"], "1")  # a first delivery
                received = float(ctx["received_at"])
                self.assertGreaterEqual(received, t0 - 0.05)
                self.assertLessEqual(received, t1 + 0.05)
                hd = ctx["headers"]
                self.assertEqual(hd.get("x-custom-header"), "Hello World", hd)
                self.assertEqual(hd.get("x-mixed-case"), "v", hd)
                self.assertEqual(hd.get("content-type"), "application/json", hd)
                self.assertEqual(hd.get("user-agent"), "python-requests/2.31.0", hd)
                self.assertEqual(hd.get("content-length"), str(len(body)), hd)
                self.assertEqual(tmp.read(event_id + ".body"), body, "ctx.body is not the raw body")

    def test_ctx_default_ack_and_binary_safe_body(self):
        """Default ack: ctx.id is still the id of the answer; a body with a NUL escape and
        raw UTF-8 reaches ctx.body byte for byte."""
        with h.TempDir() as tmp:
            with h.Server(self.SCRIPT, env={"OUT_DIR": tmp.path}) as srv:
                body = '{"action":"BIN","s":"nul:\\u0000 raw:\u00e9\u4e2d\U0001F600"}'.encode()
                r = h.post_event(srv.port, body, path="/x/y")
                self.assertEqual(r.status, 200, r)
                event_id = r.json()["id"]
                srv.wait_event(event_id)
                ctx = self.read_ctx(tmp, event_id)
                self.assertEqual(ctx["id"], event_id)
                self.assertEqual(ctx["path"], "/x/y")
                self.assertEqual(tmp.read(event_id + ".body"), body)

    def test_decoded_strings_with_nul_and_escapes(self):
        with h.Server(h.lua_path(__file__, "strings.lua"), "--ack", "handled") as srv:
            body = (b'{"action":"S","nul":"a\\u0000b","esc":"\\"\\\\\\/\\b\\f\\n\\r\\t",'
                    b'"bmp":"\\u00e9\\u4E2D\\uffff","astral":"\\ud83d\\ude00\\uDBFF\\uDFFF",'
                    b'"raw":"\xc3\xa9\xf0\x9f\x98\x80","k\\u00e9y":1}')
            r = h.post_event(srv.port, body)
            self.assertEqual(r.status, 200, "%r\n%s" % (r, r.body.decode("utf-8", "replace")))


class Errors(unittest.TestCase):
    """fail.lua is passed as a relative path (cwd = its folder): logs and answers must name
    it as given, with the lines of its "-- @NAME" markers."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.script = cls.tmp.fixture(__file__, "fail.lua")
        env = {"OUT_DIR": cls.tmp.path}
        cls.srv = h.Server("fail.lua", env=env, cwd=cls.tmp.path).start()
        cls.handled = h.Server("fail.lua", "--ack", "handled", env=env, cwd=cls.tmp.path).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop(check=True)
            cls.handled.stop(check=True)
        finally:
            cls.tmp.cleanup()

    def at(self, marker):
        """ "fail.lua:LINE" of the line marked "-- @marker" (as the server names it)."""
        return "fail.lua:%d" % h.line_of(self.script, "-- @" + marker)

    def failure_line(self, srv, event_id):
        return srv.wait_log(lambda e: e.get("msg") == "handler failed" and e.get("id") == event_id,
                            what="'handler failed' for %s" % event_id)

    def test_raise_is_logged_counted_and_survived(self):
        r = h.post_event(self.srv.port, {"action": "BOOM"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["handlers"], 2)
        event_id = r.json()["id"]
        line = self.failure_line(self.srv, event_id)
        self.assertEqual(line.get("level"), "error", line)
        self.assertEqual(line.get("action"), "BOOM", line)
        self.assertEqual(line.get("script"), "fail.lua", line)
        self.assertEqual(line.get("handler"), "fail.lua#1", line)  # its stable id
        self.assertEqual(line.get("error"), self.at("BOOM") + ": boom", line)
        tb = line.get("traceback")
        self.assertIsInstance(tb, str, line)
        self.assertIn(self.at("BOOM"), tb, line)
        ev = self.srv.wait_event(event_id)
        self.assertEqual(ev.get("level"), "info", ev)
        self.assertEqual(ev.get("outcome"), "error", ev)
        self.assertEqual(ev.get("handlers"), 2, ev)
        # the "*" handler of the same event still ran
        self.assertIsNotNone(self.tmp.read("star-" + event_id))
        # alive, and a good event after it is fine
        self.assertEqual(h.request(self.srv.port, "GET", "/healthz").status, 200)
        r = h.post_event(self.srv.port, {"action": "OK"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.srv.wait_event(r.json()["id"]).get("outcome"), "ok")
        m = h.get_metrics(self.srv.port)
        self.assertGreaterEqual(m.get("luahook_handler_runs_total", action="BOOM", outcome="error"),
                                1, m.text)

    def test_many_raises_do_not_hurt(self):
        ids = []
        with h.Conn(self.srv.port) as c:
            for _ in range(50):
                r = c.request("POST", "/", b'{"action":"BOOM"}')
                self.assertEqual(r.status, 200, r)
                ids.append(r.json()["id"])
        for i in ids:
            self.failure_line(self.srv, i)
        self.assertEqual(h.post_event(self.srv.port, {"action": "OK"}).status, 200)

    def test_first_of_two_raises_second_runs(self):
        r = h.post_event(self.srv.port, {"action": "TWO"})
        self.assertEqual(r.status, 200, r)
        event_id = r.json()["id"]
        self.assertEqual(r.json()["handlers"], 3)
        ev = self.srv.wait_event(event_id)
        self.assertEqual(ev.get("outcome"), "error", ev)
        self.assertIsNotNone(self.tmp.read("second-" + event_id), "the second handler did not run")
        self.assertIsNotNone(self.tmp.read("star-" + event_id), "the * handler did not run")
        line = self.failure_line(self.srv, event_id)
        self.assertEqual(line.get("error"), self.at("FIRST_FAILED") + ": first failed", line)
        self.assertEqual(len(self.srv.find_logs(msg="handler failed", id=event_id)), 1)

    def test_ack_handled_failure_answer(self):
        r = h.post_event(self.handled.port, {"action": "TWO"})
        self.assertEqual(r.status, 500, r)
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r)
        body = r.json()
        self.assertIs(body.get("ok"), False, body)
        self.assertIsInstance(body.get("id"), str, body)
        self.assertEqual(body.get("handlers"), 3, body)
        self.assertEqual(body.get("failed"),
                         [{"handler": self.at("TWO"), "id": "fail.lua#2",
                           "error": self.at("FIRST_FAILED") + ": first failed"}], body)
        self.assertIsNotNone(self.tmp.read("second-" + body["id"]), "the second handler did not run")
        self.assertIsNotNone(self.tmp.read("star-" + body["id"]), "the * handler did not run")

    def test_ack_handled_success_answer(self):
        r = h.post_event(self.handled.port, {"action": "OK"})
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertIs(body.get("ok"), True, body)
        self.assertEqual(body.get("handlers"), 2, body)
        self.assertNotIn("failed", body)

    def test_runtime_error(self):
        r = h.post_event(self.handled.port, {"action": "NIL_INDEX"})
        self.assertEqual(r.status, 500, r)
        failed = r.json()["failed"]
        self.assertEqual(len(failed), 1, failed)
        self.assertEqual(failed[0]["handler"], self.at("NIL_INDEX"))
        self.assertTrue(failed[0]["error"].startswith(self.at("NIL_FIELD") +
                                                      ": attempt to index a nil value"), failed)

    def test_non_string_errors(self):
        for action in ("TABLE_ERR", "NIL_ERR"):
            with self.subTest(action=action):
                r = h.post_event(self.handled.port, {"action": action})
                self.assertEqual(r.status, 500, r)
                failed = r.json()["failed"]
                self.assertEqual(len(failed), 1, failed)
                self.assertIsInstance(failed[0]["error"], str, failed)
                self.assertEqual(failed[0]["handler"], self.at(action))
                line = self.failure_line(self.handled, r.json()["id"])
                self.assertIsInstance(line.get("error"), str, line)
        self.assertEqual(h.request(self.handled.port, "GET", "/healthz").status, 200)


BUSY = h.lua_path(__file__, "busy.lua")


class AckModes(unittest.TestCase):
    """BUSY computes 0.3 s (CPU), then, held, waits until the test releases it, and writes
    busy-<id> when it ends: 'the answer did not wait for the handler' is an answer that
    arrives while the handler is held (an order, not a speed)."""

    def server(self, tmp, *args):
        return h.Server(BUSY, *args, env={"OUT": tmp.path})

    def assert_answered_first(self, tmp, srv, r):
        """r answered a held BUSY: the handler has not ended; release it, it ends ok."""
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["handlers"], 1, r)
        event_id = r.json()["id"]
        self.assertIsNone(tmp.read("busy-" + event_id), "the answer waited for the handler")
        tmp.script("release-" + event_id, "")
        ev = srv.wait_event(event_id, timeout=30 * h.SLOW)
        self.assertEqual(ev.get("outcome"), "ok", ev)
        self.assertGreaterEqual(ev.get("duration_ms", 0), 290, ev)
        self.assertIsNotNone(tmp.read("busy-" + event_id))

    def test_default_ack_answers_before_slow_handler(self):
        with h.TempDir() as tmp:
            with self.server(tmp) as srv:
                with h.Conn(srv.port) as c:
                    c.request("POST", "/", b'{"action":"QUICK"}')   # warm the connection
                    r = c.request("POST", "/", b'{"action":"BUSY","s":0.3,"hold":true}')
                self.assert_answered_first(tmp, srv, r)

    def test_default_ack_on_fresh_connection(self):
        with h.TempDir() as tmp:
            with self.server(tmp) as srv:
                r = h.post_event(srv.port, {"action": "BUSY", "s": 0.3, "hold": True})
                self.assert_answered_first(tmp, srv, r)

    def test_ack_handled_waits(self):
        with h.TempDir() as tmp:
            with self.server(tmp, "--ack", "handled") as srv:
                t0 = time.monotonic()
                r = h.post_event(srv.port, {"action": "BUSY", "s": 0.3})
                elapsed = time.monotonic() - t0
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["handlers"], 1, r)
                self.assertIsNotNone(tmp.read("busy-" + r.json()["id"]),
                                     "answered before the handler finished")
                self.assertGreaterEqual(elapsed, 0.29, "answered before the handler finished")

    def test_ack_accept_explicit(self):
        with h.TempDir() as tmp:
            with self.server(tmp, "--ack", "accept") as srv:
                r = h.post_event(srv.port, {"action": "BUSY", "s": 0.3, "hold": True})
                self.assert_answered_first(tmp, srv, r)


class Logging(unittest.TestCase):
    SCRIPT = h.lua_path(__file__, "log.lua")

    def test_log_functions_and_levels(self):
        with h.Server(self.SCRIPT, "--ack", "handled") as srv:
            r = h.post_event(srv.port, {"action": "LOG"})
            self.assertEqual(r.status, 200, r)
            info = srv.wait_log(lambda e: e.get("msg") == "lua info line")
            self.assertEqual(info.get("level"), "info", info)
            self.assertEqual(info.get("n"), 42, info)
            self.assertEqual(info.get("s"), "text", info)
            self.assertEqual(info.get("f"), 1.5, info)
            self.assertIs(info.get("b"), True, info)
            warn = srv.wait_log(lambda e: e.get("msg") == "lua warn line")
            self.assertEqual(warn.get("level"), "warn", warn)
            err = srv.wait_log(lambda e: e.get("msg") == "lua error line")
            self.assertEqual(err.get("level"), "error", err)
            self.assertEqual(err.get("why"), "testing", err)
            srv.wait_event(r.json()["id"])
            self.assertEqual(srv.find_logs(msg="lua debug line"), [],
                             "a debug line was logged at --log-level info")

    def test_zero_handler_event_logged_at_debug_after_the_first(self):
        """The first unhandled event of an action is said at info (a misspelt on() shows);
        the next ones at debug (test_firsthour.py checks the first)."""
        with h.Server(self.SCRIPT, "--log-level", "debug") as srv:
            h.post_event(srv.port, {"action": "NOBODY_LISTENS"})
            r = h.post_event(srv.port, {"action": "NOBODY_LISTENS"})
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["handlers"], 0)
            ev = srv.wait_event(r.json()["id"])
            self.assertEqual(ev.get("level"), "debug", ev)
            self.assertEqual(ev.get("handlers"), 0, ev)
            self.assertEqual(ev.get("outcome"), "none", ev)
            self.assertEqual(ev.get("action"), "NOBODY_LISTENS", ev)
            r = h.post_event(srv.port, {"action": "LOG"})
            srv.wait_log(lambda e: e.get("msg") == "lua debug line" and e.get("level") == "debug")
        with h.Server(self.SCRIPT) as srv:
            h.post_event(srv.port, {"action": "NOBODY_LISTENS"})
            r0 = h.post_event(srv.port, {"action": "NOBODY_LISTENS"})
            self.assertEqual(r0.json()["handlers"], 0)
            r1 = h.post_event(srv.port, {"action": "KNOWN"})
            srv.wait_event(r1.json()["id"])
            self.assertEqual(srv.find_logs(msg="event", id=r0.json()["id"]), [],
                             "a zero-handler event was logged at info level")


class JsonGlobal(unittest.TestCase):
    def test_json_api(self):
        with h.Server(h.lua_path(__file__, "json.lua"), "--ack", "handled") as srv:
            r = h.post_event(srv.port, {"action": "J", "gone": None, "obj": {"k": "v"}})
            self.assertEqual(r.status, 200, "%r" % r)


class Shutdown(unittest.TestCase):
    SCRIPT = h.lua_path(__file__, "slow.lua")

    def test_in_flight_handler_finishes_on_sigterm(self):
        with h.TempDir() as tmp:
            srv = h.Server(self.SCRIPT, env={"OUT_DIR": tmp.path}).start()
            try:
                r = h.post_event(srv.port, {"action": "SLOW"})
                self.assertEqual(r.status, 200, r)
            finally:
                srv.stop(check=True)      # SIGTERM right away; must exit 0
            self.assertEqual(tmp.read("done"), r.json()["id"].encode(),
                             "the in-flight handler did not finish before exit")

    def test_waiting_client_gets_its_answer_on_sigterm(self):
        """--ack handled: a SIGTERM while the handler runs still delivers the 200."""
        with h.TempDir() as tmp:
            srv = h.Server(self.SCRIPT, "--ack", "handled", env={"OUT_DIR": tmp.path}).start()
            try:
                with h.Conn(srv.port) as c:
                    c.send(h.build_request("POST", "/", b'{"action":"SLOW"}'))
                    time.sleep(0.15)
                    srv.proc.send_signal(signal.SIGTERM)
                    r = c.read_response()
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json().get("handlers"), 1)
                # one signal only: wait for the exit here rather than signal again in stop()
                self.assertEqual(srv.proc.wait(h.EXIT_TIMEOUT), 0, srv.stderr_text())
            finally:
                srv.stop(check=True)

    def test_sigint(self):
        with h.TempDir() as tmp:
            srv = h.Server(tmp.script("x.lua", "on('*', function() end)")).start()
            self.assertEqual(h.post_event(srv.port, {"action": "A"}).status, 200)
            srv.stop(check=True, sig=signal.SIGINT)


if __name__ == "__main__":
    h.main()
