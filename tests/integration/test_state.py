"""The state folder (--state-dir): one SQLite database (WAL, incremental auto-vacuum,
schema version), created on first start; an older schema upgraded (a fixture made by
schema step 1); a newer schema, a file that is not a database or fails the quick check
stop start-up with a message naming the file, and leave it byte for byte as it was;
serving as root on a folder owned by another user is refused."""

import os
import shutil
import sqlite3
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

FIX = os.path.join(h.REPO, "tests", "fixtures", "integration", "test_state")
NOOP = os.path.join(FIX, "noop.lua")
DB = "luahook.db"
# the schema version this luahook writes (state.c: one per step)
SCHEMA = 6


def pragma(path, name):
    db = sqlite3.connect(path)
    try:
        return db.execute("PRAGMA " + name).fetchone()[0]
    finally:
        db.close()


def read(path):
    with open(path, "rb") as f:
        return f.read()


class StateFolder(unittest.TestCase):
    def test_memory_is_said(self):
        with h.Server(NOOP) as srv:
            srv.wait_log(lambda e: e.get("msg", "").startswith("state in memory"),
                         what="the in-memory state line")

    def test_created(self):
        with h.TempDir() as td:
            d = td.join("state")  # created when missing
            with h.Server(NOOP, "--state-dir", d) as srv:
                line = srv.wait_log(lambda e: e.get("msg") == "state", what="the state line")
                self.assertEqual(line["dir"], d)
                self.assertEqual(line["database"], os.path.join(d, DB))
            p = os.path.join(d, DB)
            self.assertEqual(pragma(p, "user_version"), SCHEMA)
            self.assertEqual(pragma(p, "auto_vacuum"), 2)  # incremental
            self.assertEqual(pragma(p, "journal_mode"), "wal")
            # the environment variable works too
            with h.Server(NOOP, env={"LUAHOOK_STATE_DIR": d}) as srv:
                srv.wait_log(lambda e: e.get("msg") == "state", what="the state line")

    def test_empty_file_is_version_0(self):
        # a 0-byte luahook.db (touch, or a copy that failed) is an empty database: upgraded
        with h.TempDir() as td:
            open(td.join(DB), "wb").close()
            with h.Server(NOOP, "--state-dir", td.path):
                pass
            self.assertEqual(pragma(td.join(DB), "user_version"), SCHEMA)

    def test_one_server_per_folder(self):
        with h.TempDir() as td:
            d = td.join("state")
            with h.Server(NOOP, "--state-dir", d):
                r = h.run_luahook("serve", "--listen", "127.0.0.1:0", "--state-dir", d, NOOP)
                self.assertEqual(r.returncode, 2)
                self.assertIn("another luahook server uses the state folder", r.stderr.decode())
            with h.Server(NOOP, "--state-dir", d):  # free again once the first stopped
                pass

    def test_v1_upgrades(self):
        with h.TempDir() as td:
            d = td.join("state")
            os.mkdir(d)
            shutil.copy(os.path.join(FIX, "v1.db"), os.path.join(d, DB))
            with h.Server(NOOP, "--state-dir", d):
                pass
            p = os.path.join(d, DB)
            self.assertEqual(pragma(p, "user_version"), SCHEMA)
            db = sqlite3.connect(p)
            rows = db.execute("SELECT ns, key, type, value FROM store ORDER BY key").fetchall()
            names = [r[0] for r in db.execute("SELECT name FROM sqlite_master")]
            db.close()
            self.assertEqual(rows, [("counter.lua", "count", 2, 41),
                                    ("counter.lua", "name", 4, b"from v1")])
            self.assertIn("store_changes", names)

    def refused(self, d, *needles):
        p = os.path.join(d, DB)
        before = read(p)
        files = sorted(os.listdir(d))
        r = h.run_luahook("serve", "--listen", "127.0.0.1:0", "--state-dir", d, NOOP)
        err = r.stderr.decode()
        self.assertEqual(r.returncode, 2, err)
        self.assertIn("luahook: not starting: ", err)
        self.assertIn(p, err)
        self.assertIn("nothing was changed", err)
        for n in needles:
            self.assertIn(n, err)
        self.assertEqual(read(p), before, "the database file changed")
        self.assertEqual(sorted(os.listdir(d)), files, "files appeared or went")

    def test_not_a_database(self):
        with h.TempDir() as td:
            with open(td.join(DB), "wb") as f:
                f.write(b"this is not SQLite " * 300)
            self.refused(td.path, "file is not a database")

    def test_corrupt_pages(self):
        with h.TempDir() as td:
            d = td.join("state")
            with h.Server(NOOP, "--state-dir", d):
                pass
            p = os.path.join(d, DB)
            db = sqlite3.connect(p)
            db.execute("PRAGMA journal_mode = DELETE")  # one file to damage
            db.execute("CREATE TABLE filler(x)")
            db.executemany("INSERT INTO filler VALUES (?)", [("x" * 500,)] * 200)
            db.commit()
            page = db.execute("PRAGMA page_size").fetchone()[0]
            db.close()
            data = bytearray(read(p))
            for i in range(2 * page, 2 * page + 600):  # a b-tree page's header and cells
                data[i] = 0xA5
            with open(p, "wb") as f:
                f.write(data)
            self.refused(d)

    def test_newer_version(self):
        with h.TempDir() as td:
            d = td.join("state")
            with h.Server(NOOP, "--state-dir", d):
                pass
            p = os.path.join(d, DB)
            db = sqlite3.connect(p)
            db.execute("PRAGMA user_version = 7")
            db.commit()
            db.close()
            self.refused(d, "schema version 7, newer than this luahook knows (%d)" % SCHEMA)

    @unittest.skipUnless(os.geteuid() == 0, "needs root")
    def test_root_serve_refused(self):
        with h.TempDir() as td:
            os.chmod(td.path, 0o755)
            d = td.join("state")
            os.mkdir(d)
            os.chown(d, 65534, 65534)
            r = h.run_luahook("serve", "--listen", "127.0.0.1:0", "--state-dir", d, NOOP)
            err = r.stderr.decode()
            self.assertEqual(r.returncode, 2, err)
            self.assertIn("belongs to user", err)
            self.assertIn("run luahook as that user", err)
            self.assertEqual(os.listdir(d), [])


if __name__ == "__main__":
    h.main()
