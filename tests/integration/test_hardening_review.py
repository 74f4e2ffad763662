"""Issue 15's merged work, what a review found: each case failed before its fix.

Every case goes over a raw socket to the real binary.
"""

import sys
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


if __name__ == "__main__":
    unittest.main()
