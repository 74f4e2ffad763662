"""luahook store list|get|set|delete: with the server stopped, and with it running (a
change reaches it within a second, through store_changes and PRAGMA data_version; the
server's own later writes still win); value parsing (JSON, else a string); usage errors;
as root on a folder owned by another user, it runs as that user and leaves no root-owned
file."""

import os
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

FIX = os.path.join(h.REPO, "tests", "fixtures", "integration", "test_store_cli")
COUNTER = os.path.join(FIX, "counter.lua")


def cli(d, *args, ok=True):
    r = h.run_luahook("store", "--state-dir", d, *args)
    if ok:
        assert r.returncode == 0, (args, r.returncode, r.stderr)
    return r


def read(srv):
    start = srv.log_count()
    rid = h.post_event(srv.port, {"action": "READ"}).json()["id"]
    return srv.wait_log(lambda e: e.get("msg") == "read" and e.get("id") == rid, start=start,
                        what="the read line")


class StoreCli(unittest.TestCase):
    def test_stopped_server(self):
        with h.TempDir() as td:
            d = td.join("state")
            r = cli(d, "list", ok=False)
            self.assertEqual(r.returncode, 2)
            self.assertIn("luahook.db does not exist", r.stderr.decode())
            with h.Server(COUNTER, "--ack", "handled", "--state-dir", d) as srv:
                for _ in range(3):
                    h.post_event(srv.port, {"action": "INCR"})
            self.assertEqual(cli(d, "get", "counter.lua:count").stdout, b"3\n")
            cli(d, "set", "counter.lua:count", "-1")
            cli(d, "set", "counter.lua:note", "a note")
            cli(d, "set", "other.lua:t", '{"a": [1, 2.5]}')
            cli(d, "set", "other.lua:f", "5.0")
            cli(d, "set", "other.lua:s", '"5"')
            cli(d, "set", "other.lua:b", "true")
            self.assertEqual(cli(d, "list").stdout.decode().splitlines(), [
                'counter.lua:count\t-1', 'counter.lua:note\t"a note"', 'other.lua:b\ttrue',
                'other.lua:f\t5.0', 'other.lua:s\t"5"', 'other.lua:t\t{"a": [1, 2.5]}'])
            self.assertEqual(cli(d, "list", "counter.lua:n").stdout, b'counter.lua:note\t"a note"\n')
            with h.Server(COUNTER, "--ack", "handled", "--state-dir", d) as srv:
                line = read(srv)
                self.assertEqual((line["count"], line["note"]), (-1, "a note"))
            cli(d, "delete", "counter.lua:note")
            r = cli(d, "delete", "counter.lua:note", ok=False)
            self.assertEqual(r.returncode, 1)
            r = cli(d, "get", "counter.lua:note", ok=False)
            self.assertEqual((r.returncode, r.stdout), (1, b""))
            self.assertIn("not found", r.stderr.decode())

    def test_running_server(self):
        with h.TempDir() as td:
            d = td.join("state")
            with h.Server(COUNTER, "--ack", "handled", "--state-dir", d) as srv:
                for _ in range(2):
                    h.post_event(srv.port, {"action": "INCR"})
                h.wait_until(lambda: cli(d, "get", "counter.lua:count").stdout == b"2\n",
                             what="the server's writes in the database")
                t0 = time.monotonic()
                cli(d, "set", "counter.lua:count", "100")
                h.wait_until(lambda: read(srv).get("count") == 100, timeout=3.0 * h.SLOW,
                             interval=0.05, what="the server to see the change")
                self.assertLess(time.monotonic() - t0, 1.5 * h.SLOW)
                h.post_event(srv.port, {"action": "INCR"})
                self.assertEqual(read(srv)["count"], 101)
                cli(d, "delete", "counter.lua:count")
                h.wait_until(lambda: "count" not in read(srv), timeout=3.0 * h.SLOW,
                             interval=0.05, what="the server to see the delete")
                h.post_event(srv.port, {"action": "INCR"})
                self.assertEqual(read(srv)["count"], 1)
            self.assertEqual(cli(d, "get", "counter.lua:count").stdout, b"1\n")

    def test_usage(self):
        r = h.run_luahook("store", "list")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--state-dir DIR", r.stderr.decode())
        with h.TempDir() as td:
            for args in (["get"], ["get", "nocolon"], ["frob"], ["set", "a.lua:k"]):
                r = cli(td.path, *args, ok=False)
                self.assertEqual(r.returncode, 2, args)
        r = h.run_luahook("store", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("SCRIPT:KEY", r.stdout.decode())

    @unittest.skipUnless(os.geteuid() == 0, "needs root")
    def test_root_runs_as_the_owner(self):
        with h.TempDir() as td:
            os.chmod(td.path, 0o755)
            d = td.join("state")
            os.mkdir(d)
            with h.Server(COUNTER, "--ack", "handled", "--state-dir", d) as srv:
                h.post_event(srv.port, {"action": "INCR"})
            for root, dirs, files in os.walk(d):
                for n in dirs + files:
                    os.chown(os.path.join(root, n), 65534, 65534)
            os.chown(d, 65534, 65534)
            cli(d, "set", "counter.lua:count", "7")
            self.assertEqual(cli(d, "get", "counter.lua:count").stdout, b"7\n")
            owners = {n: os.stat(os.path.join(d, n)).st_uid for n in os.listdir(d)}
            self.assertTrue(owners)
            self.assertEqual(set(owners.values()), {65534}, owners)


if __name__ == "__main__":
    h.main()
