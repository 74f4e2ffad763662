"""Issue 15's merged work, what a review found: each case failed before its fix.

Every case goes over a raw socket to the real binary.
"""

import os
import select
import signal
import socket
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

SCRIPT = r"""
on("*", function(ev, ctx) end)
"""


class ClosingConnections(unittest.TestCase):
    """Connections refused or closing do not count against --max-connections (defect 9),
    but they still hold a descriptor and their answers' memory: a client that makes each
    of its connections close (one bad request each, the socket kept open) must not hold
    more of them than the limit allows live ones."""

    MAX = 2
    CLIENTS = 40

    def test_closing_connections_are_bounded_too(self):
        with h.TempDir() as tmp, h.Server(tmp.script("s.lua", SCRIPT),
                                          "--max-connections", str(self.MAX)) as srv:
            conns = []
            try:
                for _ in range(self.CLIENTS):
                    c = h.Conn(srv.port)
                    conns.append(c)
                    c.send(b"NOT HTTP\r\n\r\n")
                    # answered: the server has this one closing (FIN sent, lingering)
                    self.assertEqual(c.read_response().status, 400)
                # a new client still gets in, and sees how many the server holds
                r = h.request(srv.port, "GET", "/metrics")
                self.assertEqual(r.status, 200, r)
                held = h.Metrics(r.body.decode()).get("luahook_connections_open")
                # the live ones (this scrape), and at most as many closing ones
                self.assertLessEqual(held, 2 * self.MAX + 1,
                                     "%d connections held under --max-connections %d"
                                     % (held, self.MAX))
            finally:
                for c in conns:
                    c.close()


class StopWhileThrottled(unittest.TestCase):
    """A stop (SIGTERM) finds a client that pipelined more than the server would hold and
    reads nothing (its reads paused: bytes it sent lie unread in the kernel): the answers
    owed are written, then FIN. A plain close with bytes unread sends a reset instead, which
    can destroy answers not yet read."""

    def test_answers_owed_end_in_fin_not_reset(self):
        one = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"p" * 200 + b"\r\n\r\n"
        data = one * 100000  # 24 MB: more than the kernel buffers and the server hold
        with h.TempDir() as tmp, h.Server(tmp.script("s.lua", SCRIPT)) as srv:
            s = socket.create_connection(("127.0.0.1", srv.port))
            try:
                s.setblocking(False)
                sent, last = 0, time.monotonic()
                # until the server stops reading: kernel buffers full both ways
                while sent < len(data) and time.monotonic() - last < 1.0 * h.SLOW:
                    _, w, _ = select.select([], [s], [], 0.2)
                    if w:
                        try:
                            n = s.send(data[sent:sent + 65536])
                        except BlockingIOError:
                            continue
                        sent += n
                        if n:
                            last = time.monotonic()
                self.assertLess(sent, len(data), "the server read every request")
                srv.proc.send_signal(signal.SIGTERM)
                srv.wait_log(lambda e: e.get("msg") == "stopping")
                s.setblocking(True)
                s.settimeout(30 * h.SLOW)
                got, reset = b"", None
                while True:
                    try:
                        d = s.recv(1 << 20)
                    except ConnectionResetError as e:
                        reset = e
                        break
                    if not d:
                        break
                    got += d
                answers = got.count(b"HTTP/1.1 200 OK\r\n")
                self.assertIsNone(reset, "reset after %d answers" % answers)
                self.assertGreater(answers, 0)
                self.assertTrue(got.endswith(b"}") or got.endswith(b"\n"), got[-80:])
            finally:
                s.close()


if __name__ == "__main__":
    unittest.main()


class LateSignals(unittest.TestCase):
    """Signals that come while the server finishes (after the second one, while the VM's
    memory is freed) are ignored: closing libuv's signal watchers restores the default
    action, and a third SIGTERM then killed the server (-15) instead of letting it exit 0."""

    # half a million tables, freed when the VM closes at exit: a window for late signals
    HEAVY = r"""
local keep = {}
for i = 1, 500000 do keep[i] = {i} end
on("*", function(ev, ctx) return #keep end)
"""

    def test_signals_while_finishing_are_ignored(self):
        with h.TempDir() as tmp, h.Server(tmp.script("s.lua", self.HEAVY)) as srv:
            pid = srv.proc.pid
            sent = 0
            deadline = time.monotonic() + 60 * h.SLOW
            # a steady stream of SIGTERMs from the first until the process is gone: the
            # second ends the stop's wait, the later ones land while it finishes
            while srv.proc.poll() is None and time.monotonic() < deadline:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    break
                sent += 1
                time.sleep(0.001)
            rc = srv.proc.wait(timeout=10 * h.SLOW)
            self.assertGreater(sent, 2)
            self.assertEqual(rc, 0, "exited with %r after %d SIGTERMs" % (rc, sent))
            self.assertTrue(srv.find_logs(msg="stopped"))
