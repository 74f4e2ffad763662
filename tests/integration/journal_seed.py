"""Writes deliveries, runs and attempts into a state folder's journal with Python's sqlite3,
in the shape of the journal's schema (src/state.c, step 3): for the tests of
`luahook events`, `luahook replay` and /-/api/ that need a journal in a known state, and for
timing them on 100 000 deliveries. The schema itself comes from the binary: `create` starts
a server on the folder once, so the tables are the ones luahook makes."""

import json
import os
import sqlite3
import time

import harness as h

# A Label Studio project object with both secrets (values a test looks for in output).
SECRET_TOKEN = "tok-9f8e7d6c5b4a"
SECRET_PASSWORD = "pw-0a1b2c3d4e5f"


def create(state_dir, script):
    """The state folder with luahook's current schema: a server started on it and stopped."""
    with h.Server(script, "--state-dir", state_dir):
        pass
    return os.path.join(state_dir, "luahook.db")


def body_for(action, project=7, extra=None):
    b = {"action": action,
         "project": {"id": project, "title": "P", "token": SECRET_TOKEN,
                     "task_data_password": SECRET_PASSWORD, "label_config_hash": 2 ** 62 + 1}}
    b.update(extra or {})
    return json.dumps(b).encode()


class Journal:
    """One connection; add() writes one delivery with its runs (and their attempts)."""

    def __init__(self, db_path):
        self.db = sqlite3.connect(db_path, timeout=10)
        self.db.execute("PRAGMA busy_timeout = 10000")
        self.n = self.db.execute("SELECT coalesce(max(id), 0) FROM deliveries").fetchone()[0]

    def close(self):
        self.db.commit()
        self.db.close()

    def add(self, action="ANNOTATION_CREATED", status="ok", runs=(("notify.lua#1", "ok", 1),),
            body=None, received=None, path="/", project=7, headers=None, error=None,
            traceback=None, duplicate_of=None, commit=True):
        """runs: (handler, state, attempts); a failed attempt gets `error` and `traceback`.
        Returns (numeric id, delivery id)."""
        self.n += 1
        now = time.time()
        received = now if received is None else received
        delivery = "%08x%012x" % (0x5eed, self.n)
        final = status in ("ok", "dead", "duplicate", "none")
        self.db.execute(
            "INSERT INTO deliveries(id, delivery, received, path, remote, action, project, "
            "headers, digest, duplicate_of, status, finished) "
            "VALUES (?, ?, ?, ?, '127.0.0.1:5555', ?, ?, ?, NULL, ?, ?, ?)",
            (self.n, delivery, received, path, action, project,
             json.dumps(headers or {"content-type": "application/json"}), duplicate_of, status,
             received + 0.01 if final else None))
        self.db.execute("INSERT INTO bodies(id, body) VALUES (?, ?)",
                        (self.n, body_for(action, project) if body is None else body))
        for handler, state, attempts in runs:
            err = (error or "boom") if state in ("retrying", "dead") else None
            tb = (traceback or "stack traceback:\n\t[C]: in ?") if err else None
            self.db.execute(
                "INSERT INTO runs(delivery, handler, state, attempts, next_at, error, traceback,"
                " updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (self.n, handler, state, attempts, now + 3600 if state == "retrying" else None,
                 err, tb, now))
            for k in range(1, attempts + 1):
                ok = state == "ok" and k == attempts
                self.db.execute(
                    "INSERT INTO attempts(delivery, handler, n, started, ended, outcome, error,"
                    " traceback) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (self.n, handler, k, received + k, received + k + 0.05,
                     "ok" if ok else "error", None if ok else (error or "boom"),
                     None if ok else (traceback or "stack traceback:\n\t[C]: in ?")))
        if commit:
            self.db.commit()
        return self.n, delivery


def seed_many(db_path, count, dead_every=1000, start=None):
    """`count` deliveries of ~5 KB (the typical body), one run each, a dead one every
    `dead_every`, received one second apart up to now; one transaction per 5000."""
    j = Journal(db_path)
    start = time.time() - count if start is None else start
    pad = "x" * 4800
    for i in range(count):
        dead = dead_every and i % dead_every == 0
        j.add(action="ANNOTATION_CREATED" if i % 10 else "TASKS_CREATED",
              status="dead" if dead else "ok",
              runs=(("notify.lua#1", "dead" if dead else "ok", 3 if dead else 1),),
              body=body_for("ANNOTATION_CREATED", i % 50, {"pad": pad}), received=start + i,
              commit=False)
        if i % 5000 == 4999:
            j.db.commit()
    j.close()
