"""Issue 16, the event path's share (src/conn.c, src/request.c, src/task.c): what an idle
keep-alive connection holds, coroutines reused from run to run, and reads that go on while
a request is handled; libcurl started at the first outbound request, not before.

10 000 idle keep-alive connections must cost at most 4 KiB each (measured by
tests/bench/idle_conns.py on the release build). The structural fact behind it is tested
here: once a connection's answer is written and no request has begun, it holds no request
buffer (head, headers, body), as luahook_connections_buffered shows.
"""

import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import upstream as u  # noqa: E402

SCRIPT = r"""
on("*", function(ev, ctx) log.info("ran", { action = ev.action }) end)
"""

GAUGE = "luahook_connections_buffered"


def held(port):
    """The gauge, read by a GET /metrics whose own head is the same each time."""
    return h.get_metrics(port).get(GAUGE, default=None)


def wait_held(test, port, pred, what):
    deadline = time.monotonic() + 10.0 * h.SLOW
    while True:
        v = held(port)
        if pred(v):
            return v
        if time.monotonic() > deadline:
            test.fail("%s: %s stayed at %r" % (what, GAUGE, v))
        time.sleep(0.02)


class IdleConnections(h.SharedServer):
    SCRIPT = SCRIPT

    def test_idle_keep_alive_connections_hold_no_request_buffer(self):
        base = held(self.port)
        self.assertIsNotNone(base, "no %s series" % GAUGE)
        body = h.fixture_bytes("ANNOTATION_CREATED.json")
        conns = []
        try:
            for i in range(20):
                c = h.Conn(self.port)
                conns.append(c)
                r = c.request("POST", "/", body, {"Content-Type": "application/json"})
                self.assertEqual(r.status, 200, r)
                self.assertNotEqual(r.header("connection"), "close", r)
            # 20 connections open, each answered, none closed: they hold what none would
            self.assertEqual(held(self.port), base)
            for c in conns:  # and they are still usable
                r = c.request("POST", "/", body, {"Content-Type": "application/json"})
                self.assertEqual(r.status, 200, r)
            self.assertEqual(held(self.port), base)
        finally:
            for c in conns:
                c.close()

    def test_a_request_being_read_is_counted_until_answered(self):
        """The gauge sees the buffers of a request under way (so the test above can fail),
        and they go once it is answered, the connection kept."""
        base = held(self.port)
        body = h.fixture_bytes("ANNOTATION_CREATED.json")
        with h.Conn(self.port) as c:
            c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 2])
            wait_held(self, self.port, lambda v: v == base + 1, "a half-sent body")
            c.send(body[len(body) // 2:])
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            wait_held(self, self.port, lambda v: v == base, "the request answered")
            r = c.request("GET", "/healthz")
            self.assertEqual(r.status, 200, r)
        self.srv.wait_log(lambda e: e.get("msg") == "ran", what="the handler ran")


# a run that leaves its coroutine dirty (a hook that raises, a value on its stack, a
# coroutine it made suspended) and returns; the runs after it must start clean
POOL_SCRIPT = r"""
local current -- the seq of the run under way
collected = 0
local custom = { custom = true }
on("DIRTY", function(ev, ctx)
  current = ev.seq
  local mine = ev.seq
  debug.sethook(function() if current ~= mine then error("a stale hook ran") end end, "", 1)
  local co = coroutine.create(function() coroutine.yield() end)
  coroutine.resume(co)
  -- what a run returns is dropped with its coroutine: a reused one must not keep it
  return setmetatable({}, { __gc = function() collected = collected + 1 end }), co
end, custom)
on("CLEAN", function(ev, ctx)
  current = ev.seq
  local co, main = coroutine.running()
  assert(not main, "a handler runs in a coroutine of its own")
  assert(coroutine.status(co) == "running")
  local n = 0
  for i = 1, 20000 do n = n + i end
  collectgarbage()
  collectgarbage()
  log.info("clean", { n = n, seq = ev.seq, collected = collected })
end, custom)
on("FAIL", function(ev, ctx) current = ev.seq; error("failed on purpose") end, custom)
"""


class CoroutineReuse(unittest.TestCase):
    def test_runs_after_a_dirty_or_failed_one_start_clean(self):
        with h.TempDir() as tmp, h.Server(tmp.script("pool.lua", POOL_SCRIPT)) as srv:
            seq = dirty = 0
            for action in ["DIRTY", "CLEAN", "FAIL", "CLEAN", "DIRTY", "DIRTY", "CLEAN"] * 5:
                seq += 1
                dirty += action == "DIRTY"
                r = h.post_event(srv.port, {"action": action, "seq": seq})
                self.assertEqual(r.status, 200, r)
                if action == "CLEAN":
                    line = srv.wait_log(lambda e, s=seq: e.get("msg") == "clean"
                                        and e.get("seq") == s, what="CLEAN run %d" % seq)
                    self.assertEqual(line["n"], 20000 * 20001 // 2)
                    self.assertEqual(line["collected"], dirty)  # nothing kept alive
            m = h.get_metrics(srv.port)
            self.assertEqual(m.get("luahook_handler_runs_total", action="CLEAN", outcome="ok"), 15)
            self.assertEqual(m.get("luahook_handler_runs_total", action="DIRTY", outcome="ok"), 15)
            self.assertEqual(m.get("luahook_handler_runs_total", action="FAIL", outcome="error"), 5)
            self.assertEqual(m.get("luahook_handler_runs_total", action="CLEAN", outcome="error"), 0)


NAP_SCRIPT = r"""
on("NAP", function(ev, ctx) sleep(ev.seconds); log.info("napped", { seq = ev.seq }) end,
   { custom = true })
"""


class ReadsWhileHandling(h.SharedServer):
    """Reads are not stopped and started again around each request handled later (--ack
    handled, a handler that waits): what arrives meanwhile is kept, in order, and a
    client's end of sending does not lose the answer it waits for."""

    SCRIPT = NAP_SCRIPT
    ARGS = ("--ack", "handled")

    def test_half_close_while_the_handler_waits(self):
        with h.Conn(self.port) as c:
            c.send(h.build_request("POST", "/", {"action": "NAP", "seconds": 0.3, "seq": 1}))
            c.sock.shutdown(socket.SHUT_WR)  # arrives while the handler sleeps
            r = c.read_response(timeout=10.0 * h.SLOW)
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["handlers"], 1)
            self.assertTrue(c.closed_by_peer(), "open after the client's FIN and its answer")

    def test_requests_sent_while_one_is_handled_are_answered_in_order(self):
        with h.Conn(self.port) as c:
            c.send(h.build_request("POST", "/", {"action": "NAP", "seconds": 0.3, "seq": 10}))
            time.sleep(0.05)  # not a wait for a result: the next bytes come during the nap
            c.send(h.build_request("POST", "/", {"action": "NAP", "seconds": 0, "seq": 11})
                   + h.build_request("GET", "/healthz"))
            first = c.read_response(timeout=10.0 * h.SLOW)
            second = c.read_response(timeout=10.0 * h.SLOW)
            third = c.read_response(timeout=10.0 * h.SLOW)
            self.assertEqual([first.status, second.status, third.status], [200, 200, 200])
            self.assertLess(first.json()["id"], second.json()["id"])
            self.assertEqual(c.request("GET", "/healthz").status, 200)


CALLS = r"""
on("*", function(ev, ctx)
  if ev.call then
    local r = http.get(ev.call)
    log.info("called", { status = r.status })
  end
end)
"""


class LazyLibcurl(unittest.TestCase):
    # libcurl and what it starts (OpenSSL, GnuTLS and the rest: about 2 MB of library pages
    # made resident) wait for the first outbound request: a server whose handlers never
    # call out does not carry them
    def test_libcurl_starts_at_the_first_request(self):
        with h.TempDir() as td, u.Upstream() as up:
            script = td.script("calls.lua", CALLS)
            with h.Server(script, "--ack", "handled") as srv:
                for i in range(20):
                    self.assertEqual(h.post_event(srv.port, {"action": "A", "i": i}).status, 200)
                before = h.rss_kib(srv.proc.pid, "RssFile")
                r = h.post_event(srv.port, {"action": "A", "call": up.url("/ok")})
                self.assertEqual(r.status, 200, r)
                srv.wait_log(lambda e: e.get("msg") == "called" and isinstance(e.get("status"), int),
                             what="the handler's call answered")
                after = h.rss_kib(srv.proc.pid, "RssFile")
                self.assertGreater(after - before, 1024,
                                   "RssFile %d -> %d KiB: libcurl was started before its "
                                   "first request" % (before, after))
                # and it goes on working
                r = h.post_event(srv.port, {"action": "A", "call": up.url("/again")})
                self.assertEqual(r.status, 200, r)
                self.assertEqual(len(up.requests), 2)


if __name__ == "__main__":
    h.main()
