"""store from handlers: every kind of value and refusals at the call (types.lua), one
namespace per script, values kept across a reload (memory) and a restart (--state-dir,
also from another working directory), 200 concurrent incr exact, kill -9 losing nothing
committed a second before, an upgraded v1 database read by a handler, --store-max-keys,
expiry (from memory and from the database)."""

import os
import shutil
import signal
import sqlite3
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

FIX = os.path.join(h.REPO, "tests", "fixtures", "integration", "test_store")
COUNTER = os.path.join(FIX, "counter.lua")


def ok(srv, body):
    r = h.post_event(srv.port, body)
    assert r.status == 200, r
    return r


def read(srv):
    start = srv.log_count()
    rid = ok(srv, {"action": "READ"}).json()["id"]
    return srv.wait_log(lambda e: e.get("msg") == "read" and e.get("id") == rid, start=start,
                        what="the read line")


class Store(unittest.TestCase):
    def test_types_and_refusals(self):
        with h.Server(os.path.join(FIX, "types.lua"), "--ack", "handled") as srv:
            r = h.post_event(srv.port, {"action": "TYPES"})
            self.assertEqual(r.status, 200, r.body)

    def test_namespaces(self):
        with h.Server(os.path.join(FIX, "ns"), "--ack", "handled") as srv:
            ok(srv, {"action": "SETX"})
            start = srv.log_count()
            ok(srv, {"action": "READX"})
            a = srv.wait_log(lambda e: e.get("msg") == "x" and e.get("who") == "a", start=start)
            b = srv.wait_log(lambda e: e.get("msg") == "x" and e.get("who") == "b", start=start)
            self.assertEqual((a["x"], b["x"]), ("a's", "b's"))

    def test_reload_keeps_memory(self):
        with h.Server(COUNTER, "--ack", "handled") as srv:
            for _ in range(3):
                ok(srv, {"action": "INCR"})
            start = srv.log_count()
            srv.proc.send_signal(signal.SIGHUP)
            srv.wait_log(lambda e: e.get("msg") == "reloaded", start=start)
            ok(srv, {"action": "INCR"})
            self.assertEqual(read(srv)["count"], 4)

    def test_restart_keeps_and_namespace_ignores_cwd(self):
        with h.TempDir() as td:
            d = td.join("state")
            with h.Server(COUNTER, "--ack", "handled", "--state-dir", d) as srv:
                for _ in range(3):
                    ok(srv, {"action": "INCR"})
            # another working directory, the script named relative to it: same namespace
            with h.Server("counter.lua", "--ack", "handled", "--state-dir", d, cwd=FIX) as srv:
                self.assertEqual(read(srv)["count"], 3)
            without = h.Server(COUNTER, "--ack", "handled")
            with without as srv:
                self.assertNotIn("count", read(srv))  # memory only: nothing kept

    def test_200_concurrent_incr(self):
        with h.TempDir() as td:
            d = td.join("state")
            with h.Server(COUNTER, "--ack", "handled", "--state-dir", d) as srv:
                errors = []

                def one(i):
                    try:
                        r = h.post_event(srv.port, {"action": "INCR", "pause": (i % 10) / 100})
                        if r.status != 200:
                            errors.append(r)
                    except Exception as e:  # noqa: BLE001
                        errors.append(e)

                threads = [threading.Thread(target=one, args=(i,)) for i in range(200)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                self.assertEqual(errors, [])
                self.assertEqual(read(srv)["count"], 200)
            db = sqlite3.connect(os.path.join(d, "luahook.db"))
            v = db.execute("SELECT value FROM store WHERE ns = 'counter.lua' AND key = 'count'")
            self.assertEqual(v.fetchone()[0], 200)
            db.close()

    def test_kill9_keeps_what_is_a_second_old(self):
        with h.TempDir() as td:
            d = td.join("state")
            srv = h.Server(COUNTER, "--ack", "handled", "--state-dir", d).start()
            try:
                for i in range(100):
                    ok(srv, {"action": "SET", "from": i, "to": i})
                time.sleep(1.0)  # the README: nothing a second old is lost
            finally:
                srv.kill()  # SIGKILL: no shutdown, no final commit
            with h.Server(COUNTER, "--ack", "handled", "--state-dir", d) as srv:
                self.assertEqual(read(srv)["keys"], 100)

    def test_v1_database_read_by_a_handler(self):
        with h.TempDir() as td:
            d = td.join("state")
            os.mkdir(d)
            shutil.copy(os.path.join(h.REPO, "tests", "fixtures", "integration", "test_state",
                                     "v1.db"), os.path.join(d, "luahook.db"))
            with h.Server(COUNTER, "--ack", "handled", "--state-dir", d) as srv:
                ok(srv, {"action": "INCR"})
                line = read(srv)
                self.assertEqual((line["count"], line["name"]), (42, "from v1"))

    def test_max_keys(self):
        with h.TempDir() as td:
            d = td.join("state")
            with h.Server(COUNTER, "--ack", "handled", "--state-dir", d,
                          "--store-max-keys", "10") as srv:
                r = h.post_event(srv.port, {"action": "SET", "from": 1, "to": 11})
                self.assertEqual(r.status, 500)
                self.assertIn("store.set: the store is full (10 keys, --store-max-keys)",
                              r.json()["failed"][0]["error"])
                self.assertEqual(read(srv)["keys"], 10)
                m = h.get_metrics(srv.port)
                self.assertEqual(m.get("luahook_store_keys"), 10)
                self.assertEqual(m.get("luahook_store_refused_total"), 1)
                h.wait_until(lambda: h.get_metrics(srv.port).get(
                    "luahook_state_writes_total") == 10, what="10 writes committed")
                m = h.get_metrics(srv.port)
                self.assertGreaterEqual(m.get("luahook_state_commits_total", result="ok"), 1)
                self.assertEqual(m.get("luahook_state_commits_total", result="failed"), 0)
            # a restart under a lower limit refuses to drop keys
            r = h.run_luahook("serve", "--listen", "127.0.0.1:0", "--state-dir", d,
                              "--store-max-keys", "5", COUNTER)
            self.assertEqual(r.returncode, 2)
            self.assertIn("more keys than --store-max-keys", r.stderr.decode())

    def test_expiry(self):
        with h.TempDir() as td:
            d = td.join("state")
            with h.Server(COUNTER, "--ack", "handled", "--state-dir", d) as srv:
                ttl = 1.0 * h.SLOW  # long enough to read it back on a busy machine
                t0 = time.monotonic()
                ok(srv, {"action": "EXPIRE", "ttl": ttl})
                line = read(srv)
                if time.monotonic() - t0 < ttl:
                    self.assertEqual(line["e"], "soon gone")
                time.sleep(max(0.0, ttl + 0.1 - (time.monotonic() - t0)))
                self.assertNotIn("e", read(srv))
                ok(srv, {"action": "EXPIRE", "ttl": 0.3})
                p = os.path.join(d, "luahook.db")

                def gone():  # the sweep removes it from the database without a read
                    db = sqlite3.connect(p)
                    try:
                        return db.execute("SELECT count(*) FROM store WHERE key = 'e'"
                                          ).fetchone()[0] == 0
                    finally:
                        db.close()
                time.sleep(0.5)
                h.wait_until(gone, timeout=5.0 * h.SLOW, what="the expired row to go")


if __name__ == "__main__":
    h.main()
