"""The journal's writing side and scheduler (issue 12): an event is in the log before its
200, and in the database (the log's index) soon after (without the secret's header); failed runs retried on a shortened schedule against
an endpoint that fails N times; permanent failures, the handler's own retries, timeouts
(computing: dead at once; waiting: retried); --dedup-window; a pending run survives a
graceful restart, a run cut short by kill -9 runs again; a run another process sets
pending is taken up; a handler gone after a reload is reported, not re-attached; retention
by age and by size; 503 when the journal is full; /metrics; no journal without
--state-dir."""

import json
import os
import signal
import sqlite3
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import journal  # noqa: E402
from upstream import Upstream  # noqa: E402

FIX = os.path.join(h.REPO, "tests", "fixtures", "integration", "test_journal")
SCRIPT = os.path.join(FIX, "journal.lua")
DB = "luahook.db"
# a shortened schedule: 50 ms doubling up to 200 ms (the defaults are 5 s up to 3 h)
FAST = ("--retry-first", "0.05", "--retry-cap", "0.2")
WAIT = 20.0 * h.SLOW


def query(d, sql, *args):
    db = sqlite3.connect(os.path.join(d, DB), timeout=10)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def wait_rows(d, sql, *args):
    """The rows of `sql` once there are some: the index follows the log by a few ms."""
    return h.wait_until(lambda: query(d, sql, *args), timeout=WAIT, interval=0.02,
                        what="rows of %s" % sql)


def run_row(d, delivery, handler):
    rows = query(d, "SELECT r.state, r.attempts, r.error FROM runs r JOIN deliveries d"
                    " ON d.id = r.delivery WHERE d.delivery = ? AND r.handler = ?",
                 delivery, handler)
    return rows[0] if rows else None


def attempts(d, delivery):
    return query(d, "SELECT n, outcome, error, started, ended FROM (%s) WHERE delivery_id = ?"
                    " ORDER BY n" % journal.ATTEMPTS_SQL, delivery)


def status(d, delivery):
    rows = query(d, "SELECT status FROM deliveries WHERE delivery = ?", delivery)
    return rows[0][0] if rows else None


def post(srv, body, **kw):
    r = h.post_event(srv.port, body, **kw)
    assert r.status == 200, r
    return r.json()["id"]


def post_honouring_retry_after(srv, body):
    """Posts as a sender that honours Retry-After would: a burst into a small
    --journal-max-size is answered 503 (by design) until pruning catches up with it."""
    deadline = time.monotonic() + WAIT
    while True:
        r = h.post_event(srv.port, body)
        if r.status == 503 and b"journal is full" in r.body and time.monotonic() < deadline:
            time.sleep(0.05)
            continue
        assert r.status == 200, r
        return r.json()["id"]


def wait_state(d, delivery, handler, state, attempts_n=None):
    def ok():
        r = run_row(d, delivery, handler)
        return r if r and r[0] == state and (attempts_n is None or r[1] == attempts_n) else None
    return h.wait_until(ok, timeout=WAIT, interval=0.05,
                        what="run %s of %s %s" % (handler, delivery, state))


class Journal(unittest.TestCase):
    def test_stored_before_the_answer_without_the_secret(self):
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st"), "--token", "s3",
                                         "--dedup-window", "0") as srv:
            body = json.dumps({"action": "OK", "n": 1, "project": {"id": 42}}).encode()
            r = h.post_event(srv.port, body, path="/hooks/ls?x=1",
                             headers=[("Authorization", "Token s3"), ("X-Seen", "yes"),
                                      ("X-Multi", "a"), ("x-multi", "b")])
            self.assertEqual(r.status, 200, r)
            did = r.json()["id"]
            # read at once after the 200: the log's write came first
            self.assertEqual(journal.logged_event_ids(td.join("st")), [did])
            # the index (the database) follows it
            rows = wait_rows(td.join("st"), "SELECT delivery, path, remote, action, project,"
                                            " headers, body_at, body_len FROM deliveries")
            self.assertEqual(len(rows), 1)
            delivery, path, remote, action, project, headers, body_at, body_len = rows[0]
            stored = journal.read_body(td.join("st"), body_at, body_len)
            self.assertEqual((delivery, action, project), (did, "OK", 42))
            self.assertTrue(path.startswith("/hooks/ls"), path)
            self.assertTrue(remote.startswith("127.0.0.1:"), remote)
            self.assertEqual(bytes(stored), body)
            hd = json.loads(headers)
            self.assertEqual(hd.get("x-seen"), "yes")
            self.assertEqual(hd.get("x-multi"), "a, b")  # joined as ctx.headers joins them
            self.assertNotIn("authorization", hd)
            self.assertNotIn("s3", headers)
            wait_state(td.join("st"), did, "journal.lua#ok", "ok", 1)
            self.assertEqual(status(td.join("st"), did), "ok")
            # the start-up line says so
            self.assertTrue(srv.find_logs(msg="listening", events="journaled (--sync full)"))

    def test_a_run_that_ended_is_indexed_with_its_event(self):
        # an event waits a moment in front of the index for its run's end, so that a run
        # that ended ok is written so at once: never written running, then rewritten. One
        # client posting one event after another, as Label Studio does: each event's end
        # comes in the log before the next event, and every commit of the index can close
        # on whole pairs
        with h.TempDir() as td:
            st, n = td.join("st"), 100
            with h.Server(SCRIPT, "--state-dir", st):
                pass  # the database
            db = sqlite3.connect(os.path.join(st, DB))
            db.executescript("CREATE TABLE test_run_updates(n INTEGER);"
                             "CREATE TRIGGER test_run_updated AFTER UPDATE ON runs"
                             " BEGIN INSERT INTO test_run_updates VALUES (1); END;")
            db.close()
            with h.Server(SCRIPT, "--state-dir", st) as srv:
                for i in range(n):
                    post(srv, json.dumps({"action": "OK", "n": i}).encode())
                with journal.Journal(st) as j:
                    j.wait_final(timeout=WAIT, at_least=n)
            self.assertEqual(query(st, "SELECT count(*) FROM runs WHERE state = 'ok'"), [(n,)])
            (updates,), = query(st, "SELECT count(*) FROM test_run_updates")
            self.assertLessEqual(updates, 2)  # 4 to 8 when the index took events alone

    def test_neither_the_secret_header_nor_authorization_stored(self):
        # with --auth-header, Authorization carries no secret of ours, but may carry a proxy's
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st"), "--token", "s4",
                                         "--auth-header", "X-Hook-Secret") as srv:
            body = json.dumps({"action": "OK", "n": 2}).encode()
            r = h.post_event(srv.port, body, headers={"X-Hook-Secret": "s4",
                                                      "Authorization": "Basic cHJveHk6cHc=",
                                                      "X-Seen": "yes"})
            self.assertEqual(r.status, 200, r)
            (headers,), = wait_rows(td.join("st"), "SELECT headers FROM deliveries")
            hd = json.loads(headers)
            self.assertEqual(hd.get("x-seen"), "yes")
            self.assertNotIn("x-hook-secret", hd)
            self.assertNotIn("authorization", hd)
            self.assertNotIn("s4", headers)
            self.assertNotIn("cHJveHk6cHc", headers)

    def test_retries_with_backoff_until_the_endpoint_answers(self):
        with h.TempDir() as td, Upstream() as up, \
                h.Server(SCRIPT, "--state-dir", td.join("st"), *FAST,
                         env={"UPSTREAM": up.base}) as srv:
            did = post(srv, {"action": "FLAKY", "name": "a", "fail": 3})
            srv.wait_log(lambda e: e.get("msg") == "flaky done" and e.get("attempt") == 4,
                         timeout=WAIT, what="the fourth attempt")
            wait_state(td.join("st"), did, "journal.lua#flaky", "ok", 4)
            self.assertEqual(up.hits["a"], 4)
            rows = attempts(td.join("st"), did)
            self.assertEqual([(n, o) for n, o, _, _, _ in rows],
                             [(1, "error"), (2, "error"), (3, "error"), (4, "ok")])
            self.assertIn("upstream answered 503", rows[0][2])
            # each wait at least the backoff's lower bound: 0.05 s * 2^(n-1) * 0.8, cap 0.2
            for i in range(1, 4):
                least = min(0.05 * 2 ** (i - 1), 0.2) * 0.8
                self.assertGreaterEqual(rows[i][3] - rows[i - 1][4], least - 0.005, rows)
            self.assertEqual(status(td.join("st"), did), "ok")
            m = h.get_metrics(srv.port)
            self.assertGreaterEqual(m.get("luahook_journal_retries_total"), 3)

    def test_permanent_own_retries_and_retries_option(self):
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st"), *FAST,
                                         "--retries", "2") as srv:
            d = td.join("st")
            bad = post(srv, {"action": "BAD", "why": "no task"})
            lim = post(srv, {"action": "LIMITED"})
            st, n, err = wait_state(d, bad, "journal.lua#bad", "dead")
            self.assertEqual((n, err), (1, "bad data: no task"))
            self.assertEqual([r[1] for r in attempts(d, bad)], ["permanent"])
            # on()'s retries = 1 wins over --retries 2: two attempts
            wait_state(d, lim, "journal.lua#limited", "dead", 2)
            self.assertEqual([r[1] for r in attempts(d, lim)], ["error", "error"])
            self.assertEqual(status(d, lim), "dead")
            h.wait_until(lambda: h.get_metrics(srv.port).get(
                "luahook_journal_runs", state="dead") == 2, timeout=WAIT, what="2 dead runs")
            self.assertEqual(h.get_metrics(srv.port).get("luahook_journal_dead_total"), 2)

    def test_timeouts(self):
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st"), *FAST,
                                         "--handler-timeout", "0.5") as srv:
            d = td.join("st")
            spin = post(srv, {"action": "SPIN"})
            wait = post(srv, {"action": "WAIT"})
            # computing past the timeout: dead at once
            wait_state(d, spin, "journal.lua#spin", "dead", 1)
            self.assertEqual([r[1] for r in attempts(d, spin)], ["timeout"])
            # waiting past it: retried, and the second attempt does not wait
            wait_state(d, wait, "journal.lua#wait", "ok", 2)
            self.assertEqual([r[1] for r in attempts(d, wait)], ["timeout", "ok"])

    def test_dedup_window(self):
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st"),
                                         "--dedup-window", "10m") as srv:
            d = td.join("st")
            body = json.dumps({"action": "OK", "n": 7}).encode()
            first = post(srv, body)
            r = h.post_event(srv.port, body)
            self.assertEqual(r.status, 200, r)
            self.assertTrue(r.json()["duplicate"])
            second = r.json()["id"]
            other = post(srv, body, path="/other")  # another path: not a duplicate
            wait_state(d, other, "journal.lua#ok", "ok")
            wait_state(d, first, "journal.lua#ok", "ok")
            rows = query(d, "SELECT delivery, status, duplicate_of FROM deliveries ORDER BY id")
            ids = {r[0]: i + 1 for i, r in enumerate(rows)}
            self.assertEqual(rows[1], (second, "duplicate", ids[first]))
            self.assertIsNone(run_row(d, second, "journal.lua#ok"))
            h.wait_until(lambda: len(srv.find_logs(msg="ok run")) >= 2, what="2 runs logged")
            self.assertEqual(len([e for e in srv.find_logs(msg="ok run") if e.get("n") == 7]), 2)

    def test_pending_run_survives_a_restart(self):
        with h.TempDir() as td:
            d, flag = td.join("st"), td.join("flag")
            with h.Server(SCRIPT, "--state-dir", d, *FAST) as srv:
                did = post(srv, {"action": "UNTIL", "file": flag})
                h.wait_until(lambda: (run_row(d, did, "journal.lua#until") or [0, 0])[1] >= 2,
                             timeout=WAIT, what="two attempts")
            # stopped with the run retrying; it runs at the next start
            self.assertIn(run_row(d, did, "journal.lua#until")[0], ("retrying", "pending"))
            open(flag, "w").close()
            with h.Server(SCRIPT, "--state-dir", d, *FAST) as srv:
                srv.wait_log(lambda e: e.get("msg") == "until done", timeout=WAIT,
                             what="the run after the restart")
                wait_state(d, did, "journal.lua#until", "ok")

    def test_kill9_mid_run_runs_again(self):
        with h.TempDir() as td:
            d = td.join("st")
            srv = h.Server(SCRIPT, "--state-dir", d, *FAST)
            srv.start()
            try:
                did = post(srv, {"action": "WAIT"})  # attempt 1 waits 30 s
                wait_state(d, did, "journal.lua#wait", "running", 1)
            finally:
                srv.kill()
            with h.Server(SCRIPT, "--state-dir", d, *FAST) as srv:
                srv.wait_log(lambda e: e.get("msg") == "waited" and e.get("attempt") == 2,
                             timeout=WAIT, what="the second attempt")
                wait_state(d, did, "journal.lua#wait", "ok", 2)
                self.assertEqual([r[1] for r in attempts(d, did)], ["interrupted", "ok"])

    def test_a_crash_loop_backs_off_after_the_first_restart(self):
        with h.TempDir() as td:
            d = td.join("st")
            slow = ("--retry-first", "30")  # the second interruption waits 48-72 s
            srv = h.Server(SCRIPT, "--state-dir", d, *slow)
            srv.start()
            try:
                did = post(srv, {"action": "HANG"})
                wait_state(d, did, "journal.lua#hang", "running", 1)
            finally:
                srv.kill()
            srv = h.Server(SCRIPT, "--state-dir", d, *slow)
            srv.start()
            try:  # the first interruption: due at once
                srv.wait_log(lambda e: e.get("msg") == "hanging" and e.get("attempt") == 2,
                             timeout=WAIT, what="the second attempt at once")
            finally:
                srv.kill()
            with h.Server(SCRIPT, "--state-dir", d, *slow) as srv:
                now = time.time()
                (state, n, next_at), = query(
                    d, "SELECT r.state, r.attempts, r.next_at FROM runs r JOIN deliveries d"
                       " ON d.id = r.delivery WHERE d.delivery = ?", did)
                self.assertEqual(n, 2)
                self.assertIn(state, ("pending", "retrying"))
                self.assertGreater(next_at, now + 40, "the second interruption backs off")
                self.assertEqual([r[1] for r in attempts(d, did)],
                                 ["interrupted", "interrupted"])
                self.assertFalse(srv.find_logs(msg="hanging"))

    def test_run_set_pending_by_another_process_is_taken_up(self):
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st"), *FAST) as srv:
            d = td.join("st")
            did = post(srv, {"action": "BAD", "why": "x"})
            wait_state(d, did, "journal.lua#bad", "dead", 1)
            # what luahook replay does
            db = sqlite3.connect(os.path.join(d, DB), timeout=10)
            db.execute("UPDATE runs SET state = 'pending', next_at = ? WHERE handler = ?",
                       (time.time(), "journal.lua#bad"))
            db.commit()
            db.close()
            wait_state(d, did, "journal.lua#bad", "dead", 2)
            self.assertEqual(status(d, did), "dead")

    def test_handler_gone_after_reload_is_reported(self):
        with h.TempDir() as td:
            d, flag = td.join("st"), td.join("flag")
            scripts = td.join("scripts")
            os.mkdir(scripts)
            with open(SCRIPT) as f:
                src = f.read()
            h.write_script(scripts, "journal.lua", src)
            with h.Server(scripts, "--state-dir", d, *FAST) as srv:
                did = post(srv, {"action": "UNTIL", "file": flag})
                h.wait_until(lambda: (run_row(d, did, "journal.lua#until") or [0, 0])[1] >= 1
                             and run_row(d, did, "journal.lua#until")[0] == "retrying",
                             timeout=WAIT, what="a retrying run")
                h.write_script(scripts, "journal.lua",
                               src.replace('name = "until"', 'name = "until2"'))
                start = srv.log_count()
                srv.proc.send_signal(signal.SIGHUP)
                srv.wait_log(lambda e: e.get("msg") == "reloaded", start=start, timeout=WAIT)
                st, n, err = wait_state(d, did, "journal.lua#until", "dead")
                self.assertIn("no longer exists", err)
                self.assertIsNone(run_row(d, did, "journal.lua#until2"))
                self.assertTrue(srv.find_logs(msg="journal: run not delivered",
                                              handler="journal.lua#until"))

    def test_reload_loses_and_repeats_nothing(self):
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st"), *FAST) as srv:
            d = td.join("st")
            ids = [post(srv, {"action": "SLOW", "n": i}) for i in range(5)]
            start = srv.log_count()
            srv.proc.send_signal(signal.SIGHUP)  # while they run
            ids += [post(srv, {"action": "SLOW", "n": i}) for i in range(5, 10)]
            srv.wait_log(lambda e: e.get("msg") == "reloaded", start=start, timeout=WAIT)
            for i in ids:
                wait_state(d, i, "journal.lua#slow", "ok", 1)
            self.assertEqual(query(d, "SELECT count(*), max(n) FROM (%s)" % journal.ATTEMPTS_SQL),
                             [(10, 1)])
            h.wait_until(lambda: len(srv.find_logs(msg="slow done")) >= 10, what="10 log lines")
            done = sorted(e["n"] for e in srv.find_logs(msg="slow done"))
            self.assertEqual(done, list(range(10)))

    def test_retries_never_starve_new_events(self):
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st"), *FAST,
                                         "--max-pending", "4") as srv:
            d = td.join("st")
            held = [post(srv, {"action": "HOLD", "n": i}) for i in range(8)]
            # while the retries run, new events are taken (200, never 503): a count, not a
            # rate, so a slow machine cannot fail it
            for n in range(12):
                post(srv, {"action": "OK", "n": 1000 + n})
                time.sleep(0.02)
            for i in held:
                wait_state(d, i, "journal.lua#hold", "ok", 2)
            # retries held at most half of --max-pending at any moment
            spans = query(d, "SELECT started, ended FROM (%s) WHERE handler = ? AND n = 2"
                          % journal.ATTEMPTS_SQL, "journal.lua#hold")
            self.assertEqual(len(spans), 8)
            most = max(sum(1 for s2, e2 in spans if s2 <= s1 < e2) for s1, _ in spans)
            self.assertLessEqual(most, 2, spans)

    def test_retention_by_age(self):
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st"), "--keep", "1s",
                                         "--keep-dead", "1h", *FAST) as srv:
            d = td.join("st")
            ok_ids = [post(srv, {"action": "OK", "n": i}) for i in range(3)]
            dead = post(srv, {"action": "BAD", "why": "kept"})
            wait_state(d, dead, "journal.lua#bad", "dead")
            h.wait_until(lambda: not query(d, "SELECT 1 FROM deliveries WHERE delivery IN"
                                              " (?, ?, ?)", *ok_ids),
                         timeout=WAIT, interval=0.1, what="the finished deliveries pruned")
            self.assertEqual(query(d, "SELECT count(*) FROM runs WHERE handler = ?",
                                   "journal.lua#ok"), [(0,)])
            self.assertEqual(status(d, dead), "dead")  # dead ones are kept longer
            h.wait_until(lambda: h.get_metrics(srv.port).get("luahook_journal_pruned_total") >= 3,
                         timeout=WAIT, what="the pruned count")

    def test_ids_never_reused_after_pruning(self):
        # the id `luahook events` shows is what `events show` and `replay` take: pruning
        # every delivery must not hand the next event an id an old one had
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st"), "--keep", "1s",
                                         *FAST) as srv:
            d = td.join("st")
            sent = [post(srv, {"action": "OK", "n": i}) for i in range(3)]
            for i in sent:
                wait_state(d, i, "journal.lua#ok", "ok")
            top = query(d, "SELECT max(id) FROM deliveries")[0][0]
            h.wait_until(lambda: h.get_metrics(srv.port).get("luahook_journal_pruned_total") >= 2,
                         timeout=WAIT, what="the older deliveries pruned")
            later = post(srv, {"action": "OK", "n": 3})
            (new_id,), = wait_rows(d, "SELECT id FROM deliveries WHERE delivery = ?", later)
            self.assertGreater(new_id, top)

    def test_retention_by_size(self):
        limit = 1024 * 1024
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st"),
                                         "--journal-max-size", str(limit)) as srv:
            d = td.join("st")
            pad = "x" * 8000
            sent = [post_honouring_retry_after(srv, {"action": "OK", "n": i, "pad": pad})
                    for i in range(300)]  # about 2.4 MB of bodies
            first, last = sent[0], sent[-1]
            wait_state(d, last, "journal.lua#ok", "ok")
            h.wait_until(lambda: h.get_metrics(srv.port).get("luahook_journal_pruned_total") > 0,
                         timeout=WAIT, what="pruning")
            # bounded: pruned down, the newest kept, the space given back to the file system
            h.wait_until(lambda: os.path.getsize(os.path.join(d, DB)) <= 2 * limit,
                         timeout=WAIT, interval=0.1, what="the database file under 2x the bound")
            # the oldest went first
            self.assertEqual(status(d, last), "ok")
            self.assertIsNone(status(d, first))
            kept = [r[0] for r in query(d, "SELECT delivery FROM deliveries")]
            self.assertGreater(len(kept), 10)
            self.assertEqual(set(kept), set(sent[-len(kept):]))

    def test_wal_stays_bounded_under_a_stream(self):
        """Checkpoints keep up with a stream of events: the write-ahead log is copied into
        the database and started over, so its file stays near the checkpoint mark (1000
        pages) instead of growing with every event."""
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st")) as srv:
            wal = os.path.join(td.join("st"), DB + "-wal")
            body = json.dumps({"action": "OK", "pad": "x" * 5000}).encode()
            largest = [0]

            def stream(n):
                with h.Conn(srv.port) as c:
                    for _ in range(n):
                        r = c.request("POST", "/", body, {"Content-Type": "application/json"})
                        assert r.status == 200, r
                        largest[0] = max(largest[0], os.path.getsize(wal))
            threads = [threading.Thread(target=stream, args=(1500,)) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            # 6000 events of 5 KB: without checkpoints, over 40 MB of log
            self.assertLess(largest[0], 24 << 20, "the WAL grew to %d bytes" % largest[0])

    def test_full_journal_answers_503(self):
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st"),
                                         "--journal-max-size", "1m") as srv:
            d, pad = td.join("st"), "y" * 12000
            answered, refused = [], None
            # runs that never finish: nothing to prune
            for i in range(300):
                r = h.post_event(srv.port, {"action": "UNTIL", "file": td.join("never"),
                                            "n": i, "pad": pad})
                if r.status == 503:
                    refused = r
                    break
                self.assertEqual(r.status, 200, r)
                answered.append(r.json()["id"])
                time.sleep(0.01)  # pacing only: the size is counted between events
            self.assertIsNotNone(refused, "never refused")
            self.assertIn("the journal is full", refused.json()["error"])
            srv.wait_log(lambda e: e.get("msg") == "rejected" and e.get("reason") == "journal",
                         what="the rejected line")
            # every event answered 200 is stored (the index follows the log within ms)
            h.wait_until(lambda: set(answered) <= {r[0] for r in query(
                d, "SELECT delivery FROM deliveries")}, timeout=WAIT,
                what="every event answered 200 in the journal")
            self.assertGreaterEqual(h.get_metrics(srv.port).get("luahook_journal_refused_total"),
                                    1)

    def test_failed_commit_answers_503(self):
        # the commit itself fails (not the --journal-max-size check before it), without root:
        # a file size limit on the server makes its writes fail (EFBIG) past 1 MiB; the
        # server ignores SIGXFSZ, so it answers 503 instead of being killed
        import resource
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st")) as srv:
            d, pad = td.join("st"), "z" * 20000
            unlimited = resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (1 << 20, unlimited[1]))
            answered, refused = [], None
            for i in range(200):
                r = h.post_event(srv.port, {"action": "OK", "n": i, "pad": pad})
                if r.status == 503:
                    refused = r
                    break
                self.assertEqual(r.status, 200, r)
                answered.append(r.json()["id"])
            self.assertIsNotNone(refused, "never refused")
            self.assertIn("the journal could not store the event", refused.json()["error"])
            srv.wait_log(lambda e: e.get("msg") == "rejected" and e.get("reason") == "journal",
                         what="the rejected line")
            # every event answered 200 is in the log; the refused one is not
            self.assertEqual(journal.logged_event_ids(d), answered)
            # room again: the next event is taken, and the ends that could not be stored are
            resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, unlimited)
            h.wait_until(lambda: h.post_event(srv.port, {"action": "OK", "n": -1}).status
                         == 200, timeout=WAIT, interval=0.2, what="an event taken again")
            for i in answered:
                wait_state(d, i, "journal.lua#ok", "ok")
            # and the index holds them, the one taken again, and no refused one
            self.assertEqual(query(d, "SELECT count(*) FROM deliveries")[0][0],
                             len(answered) + 1)

    def test_run_whose_end_is_lost_runs_again(self):
        # a handler writes to the store and ends while writes fail: its end waits for its
        # store write, so the run is never 'ok' without it. Either the store write was lost
        # (the attempt counts as interrupted and runs again) or it was kept and the end,
        # which the log could not take, is written once the disk takes writes again
        import resource
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st"), *FAST) as srv:
            d, gate = td.join("st"), td.join("gate")
            key = post(srv, {"action": "STORE", "n": 1, "file": gate})
            wait_state(d, key, "journal.lua#store", "running")
            # no file may grow now (a WAL started over may still be written within its size)
            unlimited = resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, (0, unlimited[1]))
            with open(gate, "w"):
                pass
            srv.wait_log(lambda e: e.get("msg", "").startswith("journal: a run's"),
                         what="the end or the store write that could not be stored")
            resource.prlimit(srv.proc.pid, resource.RLIMIT_FSIZE, unlimited)
            state, n, _ = wait_state(d, key, "journal.lua#store", "ok")
            # the handler stores its attempt: the value is the ok attempt's own
            (value,), = wait_rows(d, "SELECT value FROM store WHERE key = 'stored:1'")
            self.assertEqual(int(value), n)
            outcomes = [a[1] for a in attempts(d, key)]
            self.assertIn(outcomes, (["ok"], ["interrupted", "ok"]))
            self.assertEqual(len(outcomes), n)

    def test_database_not_readable_by_others(self):
        # raw bodies carry the project's token: a folder others may enter (made 0755 by an
        # installer) must not make the database, its write-ahead log or the journal's log
        # world-readable
        with h.TempDir() as td:
            d = td.join("st")
            os.mkdir(d)
            os.chmod(d, 0o755)
            old = os.umask(0o022)
            try:
                srv = h.Server(SCRIPT, "--state-dir", d).start()
            finally:
                os.umask(old)
            try:
                post(srv, {"action": "OK", "n": 1})
                segs = [os.path.join(journal.LOG_DIR, "%016x.log" % n)
                        for n in journal.segments(d)]
                self.assertTrue(segs, "no log segment")
                for name in (DB, DB + "-wal", journal.LOG_DIR, *segs):
                    mode = os.stat(os.path.join(d, name)).st_mode & 0o777
                    self.assertEqual(mode & 0o007, 0, "%s is mode %o" % (name, mode))
            finally:
                srv.stop()

    def test_metrics(self):
        with h.TempDir() as td, h.Server(SCRIPT, "--state-dir", td.join("st"),
                                         "--sync", "normal") as srv:
            self.assertTrue(srv.find_logs(msg="listening", events="journaled (--sync normal: a "
                                                                   "power cut may lose the last)"))
            ids = [post(srv, {"action": "OK", "n": i}) for i in range(5)]
            for i in ids:
                wait_state(td.join("st"), i, "journal.lua#ok", "ok")
            bad = post(srv, {"action": "BAD", "why": "counted"})
            wait_state(td.join("st"), bad, "journal.lua#bad", "dead")
            h.wait_until(lambda: h.get_metrics(srv.port).get("luahook_journal_runs",
                                                             state="dead") == 1,
                         timeout=WAIT, what="the dead run counted")
            m = h.get_metrics(srv.port)
            self.assertFalse(m.has("luahook_journal_runs", state="ok"))
            self.assertEqual(m.get("luahook_journal_runs", state="pending"), 0)
            self.assertEqual(m.get("luahook_journal_commit_seconds_count"), 6)
            self.assertEqual(m.get("luahook_journal_commit_seconds_bucket", le="+Inf"), 6)
            self.assertGreater(m.get("luahook_journal_database_bytes"), 0)
            # events posted one after another: a write to the log each, and the runs' ends
            writes = m.get("luahook_journal_log_writes_total")
            self.assertGreaterEqual(writes, 6)
            self.assertLessEqual(writes, 12)
            self.assertEqual(m.get("luahook_journal_runs", state="retrying"), 0)
            self.assertTrue(m.has("luahook_journal_oldest_pending_seconds"))

    def test_no_state_dir_no_journal(self):
        with h.Server(SCRIPT) as srv:
            post(srv, {"action": "OK", "n": 1})
            self.assertTrue(srv.find_logs(msg="listening", events="not durable (no --state-dir)"))
            self.assertFalse(h.get_metrics(srv.port).has("luahook_journal_database_bytes"))


if __name__ == "__main__":
    h.main()
