"""The connection's states and their deadlines (src/conn.c): each state arms one timer.

reading a head  --read-timeout, counted from accept (a client that sends nothing is closed
                silently) or from the first byte of a request on a kept-alive connection;
                then 408 and close
handling        none: the handler timeout bounds it
idle            --idle-timeout
answered on the head, body dropped: one answer only, whatever the body does next
"""

import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

SCRIPT = r"""
on("NAP", function(ev, ctx) sleep(ev.seconds) end)
on("*", function(ev, ctx) end)
"""

READ_TIMEOUT = 1.0
IDLE_TIMEOUT = 3.0


def event(action, **fields):
    import json
    return json.dumps(dict(action=action, **fields)).encode()


class States(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.srv = h.Server(cls.tmp.script("conn.lua", SCRIPT), "--ack", "handled",
                           "--read-timeout", str(READ_TIMEOUT),
                           "--idle-timeout", str(IDLE_TIMEOUT)).start()
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop(check=True)
        finally:
            cls.tmp.cleanup()

    def timeouts_counted(self):
        return h.get_metrics(self.port).get("luahook_events_rejected_total", reason="timeout")

    def expect_408_then_close(self, c, t0, low, high, what):
        r = c.read_response(timeout=high + 1.0)
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 408, r)
        self.assertTrue(c.closed_by_peer(), "%s: open after its 408" % what)
        self.assertGreaterEqual(elapsed, low, "%s: 408 too early (%.2f s)" % (what, elapsed))
        self.assertLess(elapsed, high, "%s: 408 late (%.2f s)" % (what, elapsed))

    def test_connection_that_sends_nothing_is_closed_after_the_read_timeout(self):
        """Not after --idle-timeout: a client that connects and says nothing holds a slot
        for --read-timeout at most. No request, so no 408 and no rejection counted
        (nginx and h2o also close such a connection without a word)."""
        before = self.timeouts_counted()
        with h.Conn(self.port) as c:
            t0 = time.monotonic()
            self.assertTrue(c.closed_by_peer(READ_TIMEOUT + 2.0 * h.SLOW),
                            "a silent connection stayed open")  # bytes would fail here
            elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 0.9 * READ_TIMEOUT, "closed too early: %.2f s" % elapsed)
        self.assertLess(elapsed, IDLE_TIMEOUT, "closed by the idle timeout: %.2f s" % elapsed)
        self.assertEqual(self.timeouts_counted(), before)

    def test_line_ends_alone_are_not_a_request(self):
        with h.Conn(self.port) as c:
            c.send(b"\r\n\r\n")
            self.assertTrue(c.closed_by_peer(READ_TIMEOUT + 2.0 * h.SLOW),
                            "a connection that sent only line ends stayed open")

    def test_head_deadline_counts_from_connect(self):
        """A new connection's first head must be complete --read-timeout after accept, not
        after its first byte: a client cannot double its time by waiting before it starts."""
        with h.Conn(self.port) as c:
            t0 = time.monotonic()
            time.sleep(0.8 * READ_TIMEOUT)
            c.send(b"POST / HTTP/1.1\r\nHost: x\r\n")
            self.expect_408_then_close(c, t0, 0.9 * READ_TIMEOUT, READ_TIMEOUT + 0.5 * h.SLOW,
                                       "head begun late")

    def test_kept_alive_connection_waits_the_idle_timeout(self):
        """Between requests the deadline is --idle-timeout, not --read-timeout."""
        with h.Conn(self.port) as c:
            self.assertEqual(c.request("POST", "/", event("A")).status, 200)
            t0 = time.monotonic()
            self.assertFalse(c.closed_by_peer(1.5 * READ_TIMEOUT),
                             "an idle kept-alive connection closed at the read timeout")
            self.assertEqual(c.request("POST", "/", event("A")).status, 200)
            t0 = time.monotonic()
            self.assertTrue(c.closed_by_peer(IDLE_TIMEOUT + 2.0 * h.SLOW),
                            "an idle connection stayed open")
            elapsed = time.monotonic() - t0
            self.assertGreaterEqual(elapsed, 0.9 * IDLE_TIMEOUT, "closed early: %.2f s" % elapsed)

    def test_next_head_deadline_counts_from_its_first_byte(self):
        with h.Conn(self.port) as c:
            self.assertEqual(c.request("POST", "/", event("A")).status, 200)
            time.sleep(0.5 * READ_TIMEOUT)
            t0 = time.monotonic()
            c.send(b"POST /next HTTP/1.1\r\nHost: x\r\n")
            self.expect_408_then_close(c, t0, 0.9 * READ_TIMEOUT, READ_TIMEOUT + 2.0 * h.SLOW,
                                       "second head stalled")

    def test_a_handler_longer_than_the_read_timeout_is_answered(self):
        """While the handlers run (--ack handled) no read deadline runs."""
        with h.Conn(self.port) as c:
            t0 = time.monotonic()
            r = c.request("POST", "/", event("NAP", seconds=1.5 * READ_TIMEOUT),
                          timeout=10.0 * h.SLOW)
            self.assertEqual(r.status, 200, r)
            self.assertGreaterEqual(time.monotonic() - t0, 1.4 * READ_TIMEOUT)
            self.assertEqual(c.request("POST", "/", event("A")).status, 200)

    def test_half_closed_client_gets_its_answers(self):
        """A client that sends its requests, then shuts its side, gets every answer, then
        the close."""
        with h.Conn(self.port) as c:
            c.send(h.build_request("POST", "/", event("NAP", seconds=0.2))
                   + h.build_request("POST", "/", event("A")))
            c.sock.shutdown(socket.SHUT_WR)
            self.assertEqual(c.read_response().status, 200)
            self.assertEqual(c.read_response().status, 200)
            self.assertTrue(c.closed_by_peer(), "open after the client's FIN and its answers")

    def test_malformed_body_after_an_answer_on_the_head_gets_no_second_answer(self):
        """A 405 is given on the head; the chunked body that follows turns out malformed:
        the request has its answer already, so the connection just closes."""
        with h.Conn(self.port) as c:
            c.send(b"PUT /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 405, r)
            c.send(b"zz\r\nnot a chunk\r\n")
            self.assertTrue(c.closed_by_peer(3.0 * h.SLOW), "open after a malformed body")

    def test_a_body_answered_on_its_head_is_drained_only_so_far(self):
        """A 405 is given on the head of a huge body: the server drops the body to keep the
        connection, but only up to a bound (1 MiB), then closes; a client that goes on
        sending cannot keep it draining without end."""
        declared = 60 * 1024 * 1024  # under --max-body (64 MiB): no 413 on the head
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10.0 * h.SLOW)
        try:
            s.sendall(b"PUT /x HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % declared)
            chunk = b"x" * 65536
            sent, got, eof = 0, b"", False
            while sent < declared and not eof:
                try:
                    s.sendall(chunk)
                except OSError:  # reset after the linger: closed all the same
                    eof = True
                    break
                sent += len(chunk)
                s.setblocking(False)
                try:
                    while True:
                        data = s.recv(65536)
                        if not data:
                            eof = True
                            break
                        got += data
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    eof = True
                finally:
                    s.setblocking(True)
            self.assertTrue(got.startswith(b"HTTP/1.1 405 "), got[:200])
            self.assertTrue(eof, "still draining after %d bytes of body" % sent)
        finally:
            s.close()

    def test_expect_100_continue_answered_on_the_head_closes(self):
        """The client waits for 100 Continue and will not send its body: after the 405 no
        request can be told from the next, so the answer says Connection: close and the
        connection closes. No 100 is sent."""
        with h.Conn(self.port) as c:
            c.send(b"PUT /x HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
                   b"Content-Length: 10\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 405, r)
            self.assertEqual(r.header("connection", "").lower(), "close", r)
            self.assertTrue(c.closed_by_peer(3.0 * h.SLOW), "open after the answer")

    def test_head_answer_has_the_length_of_the_full_answer(self):
        """HEAD gets the headers another method would get, Content-Length included, and no
        body: the next answer follows at once."""
        with h.Conn(self.port) as c:
            full = c.request("GET", "/healthz")
            c.send(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            r = c.read_response(head_request=True)
            self.assertEqual((r.status, full.status), (200, 200))
            self.assertGreater(len(full.body), 0)
            self.assertEqual(r.header("content-length"), str(len(full.body)), r)
            r2 = c.request("GET", "/healthz")
            self.assertEqual((r2.status, r2.json()), (200, {"ok": True}))

    def test_server_goes_on(self):
        self.assertEqual(h.request(self.port, "GET", "/healthz").status, 200)


if __name__ == "__main__":
    h.main()
