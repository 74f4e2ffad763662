"""The journal's guarantee under kill -9 (issue 12, bounded for CI): a stream of events
from three clients, the server killed with SIGKILL at random moments (seeded: the seed is
printed, LUAHOOK_TEST_SEED repeats a run) and restarted on the same --state-dir each time.
Then every event answered 200 is in the journal with its exact bytes and was handled,
every delivery in the journal ended ok, and no run whose completion had been committed
ran again (effects.lua records each execution with its delivery id and ctx.attempt; they
are compared with the runs and attempts tables; a tenth of the events fail their first
attempt, so retries cross the kills too). The same with --sync normal, with SIGTERM
stops instead of kills, and with reloads (SIGHUP: nothing cut short, nothing repeated).
The check itself is shown to find each breach it looks for.
scripts/crash-test is the long version."""

import os
import shutil
import sqlite3
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import journal  # noqa: E402

# Small enough for CI under ASan; each kill lands within its own run of events.
KILLS = 4
EVENTS = 40 if h.SANITIZED else 150
# the first retry after a second, not five: the schedule itself is not under test here
FAST = ("--retry-first", "1s")


class CrashTest(unittest.TestCase):
    def test_kill9_during_a_stream(self):
        figures, problems = journal.crash_campaign(KILLS, EVENTS, what="test_journal_crash",
                                                   args=FAST)
        sys.stderr.write("figures: %s\n" % figures)
        self.assertEqual(problems, [], "the at-least-once guarantee fails:\n"
                         + journal.format_problems(problems))
        # the test proves something only if the kills cut events and runs short
        self.assertEqual(figures["kills"], KILLS)
        self.assertGreater(figures["answered 200"], 0)
        self.assertGreaterEqual(figures["deliveries"], figures["answered 200"])

    def test_kill9_with_sync_normal(self):
        # --sync normal survives a process crash (only a power cut may lose commits)
        figures, problems = journal.crash_campaign(2, EVENTS, what="test_journal_crash.normal",
                                                   args=FAST + ("--sync", "normal"))
        sys.stderr.write("figures: %s\n" % figures)
        self.assertEqual(problems, [], "the at-least-once guarantee fails with --sync normal:\n"
                         + journal.format_problems(problems))

    def test_sigterm_during_a_stream(self):
        # a stop (SIGTERM, exit 0) in the middle of a stream loses nothing either
        figures, problems = journal.crash_campaign(2, EVENTS, what="test_journal_crash.term",
                                                   args=FAST, how="term")
        sys.stderr.write("figures: %s\n" % figures)
        self.assertEqual(problems, [], "a stop lost or repeated runs:\n"
                         + journal.format_problems(problems))

    def test_sighup_during_a_stream(self):
        # reloads lose and repeat nothing: each run executes once per recorded attempt
        figures, problems = journal.crash_campaign(3, EVENTS, what="test_journal_crash.hup",
                                                   args=FAST, how="hup")
        sys.stderr.write("figures: %s\n" % figures)
        self.assertEqual(problems, [], "a reload lost or repeated runs:\n"
                         + journal.format_problems(problems))
        self.assertEqual(figures["unanswered"], 0)
        self.assertGreaterEqual(figures["reloads"], 1)  # close signals may make one reload
        outcomes = figures["attempts by outcome"]
        self.assertEqual(set(outcomes) - {"ok", "error"}, set(), outcomes)
        self.assertEqual(figures["executions"], sum(outcomes.values()))


class TheCheck(unittest.TestCase):
    """The check itself fails on each breach it looks for: a journal and side effects from
    a real server, then doctored copies."""

    def test_breaches_are_found(self):
        rng = journal.seeded("test_journal_crash.check")
        with h.TempDir() as td:
            state, effects = td.join("state"), td.join("effects.log")
            script = td.fixture("journal", journal.EFFECTS_SCRIPT)
            bodies, accepted = {}, {}
            with h.Server(script, "--state-dir", state, env=journal.effects_env(effects)) as srv:
                for seq in range(2):
                    bodies[seq] = journal.event_body(seq, rng)
                    r = h.post_event(srv.port, bodies[seq])
                    self.assertEqual(r.status, 200, r)
                    accepted[r.json()["id"]] = seq
                journal.wait_handled(state, accepted, timeout=30.0 * h.SLOW)
            _, problems = journal.check_at_least_once(state, effects, bodies, accepted)
            self.assertEqual(problems, [])
            did = min(accepted)

            def breach(what, edit=lambda text: text, sql=None, sent=bodies):
                d = td.join("copy")
                shutil.rmtree(d, ignore_errors=True)
                shutil.copytree(state, os.path.join(d, "state"))
                with open(effects) as f:
                    text = f.read()
                with open(os.path.join(d, "effects.log"), "w") as f:
                    f.write(edit(text))
                if sql:
                    db = sqlite3.connect(os.path.join(d, "state", journal.DB))
                    db.execute(sql, (did,))
                    db.commit()
                    db.close()
                _, found = journal.check_at_least_once(os.path.join(d, "state"),
                                                       os.path.join(d, "effects.log"), sent,
                                                       accepted)
                self.assertTrue(any(what in p for p in found), "%r not in %r" % (what, found))

            breach("after attempt 1's completion was committed",
                   lambda t: t + "start %s first 2\ndone %s first 2\n" % (did, did))
            breach("both told attempt 1", lambda t: t + "start %s first 1\n" % did)
            breach("2 attempts ended ok",
                   sql="INSERT INTO attempts(delivery, handler, n, started, ended, outcome) "
                   "SELECT id, 'effects.lua#first', 2, 0, 0, 'ok' FROM deliveries "
                   "WHERE delivery = ?")
            breach("recorded ok but its execution never ended",
                   lambda t: t.replace("done %s first 1\n" % did, ""))
            breach("which is not in the journal", lambda t: t + "start 0123 first 1\n")
            breach("is not in the journal", sql="DELETE FROM deliveries WHERE delivery = ?")
            breach("differs from event", sent={**bodies, accepted[did]: b"{}"})
            breach("ended 'dead', not 'ok'",
                   sql="UPDATE deliveries SET status = 'dead' WHERE delivery = ?")
            breach("its finished time is None",
                   sql="UPDATE deliveries SET finished = NULL WHERE delivery = ?")


if __name__ == "__main__":
    h.main()
