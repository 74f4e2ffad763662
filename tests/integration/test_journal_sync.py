"""The journal when the disk cannot sync (issue 12, --sync full): luahook answers 200 only
after the fsync of the log write that holds the event succeeded. A preloaded shim
(tests/fixtures/integration/failsync/failsync.c, built here with cc) makes every sync of the
journal's log segments and of the database's WAL fail with EIO while a flag file exists:
- before the flag, events are answered 200 and handled;
- while it exists, every event is answered 503 with an error that names the I/O error,
  and a log line; the server keeps serving;
- once the disk syncs again, events are answered 200 again, and every event answered 200 at
  any point is in the journal and handled (journal.py's check, as in the crash test).
With the WAL alone unable to sync, events are answered 200 and indexed all the same: the
database is the log's index, and its commits are not synced.
Skipped with a message when no C compiler is there to build the shim."""

import os
import shutil
import subprocess
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import journal  # noqa: E402

SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "integration",
                    "failsync", "failsync.c")


def build_shim(td):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    out = td.join("failsync.so")
    r = subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", out, SHIM, "-ldl"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise AssertionError("cannot build the shim: %s" % r.stderr)
    return out


class FailedSync(unittest.TestCase):
    def setup(self, td, **extra_env):
        """The state folder, flag file, effects log, script, random source and environment
        of a server with the shim preloaded."""
        shim = build_shim(td)
        if shim is None:
            self.skipTest("no C compiler (cc) to build the fdatasync shim")
        state, flag, effects = td.join("state"), td.join("fail"), td.join("effects.log")
        env = {"LD_PRELOAD": shim, "FAILSYNC_FLAG": flag, **journal.effects_env(effects),
               # the shim comes before the sanitizer's runtime in the preload order
               "ASAN_OPTIONS": "halt_on_error=1:detect_leaks=1:verify_asan_link_order=0",
               **extra_env}
        return (state, flag, effects, td.fixture("journal", journal.EFFECTS_SCRIPT),
                journal.seeded(self.id()), env)

    def test_no_200_without_a_sync(self):
        with h.TempDir() as td:
            state, flag, effects, script, rng, env = self.setup(td)
            sent, accepted = [], {}

            def post(srv, seq):
                body = journal.event_body(seq, rng, max_sleep_ms=0)
                sent.append(body)
                r = h.post_event(srv.port, body)
                if r.status == 200:
                    accepted[r.json()["id"]] = seq
                return r

            with h.Server(script, "--state-dir", state, env=env) as srv:
                for i in range(10):
                    self.assertEqual(post(srv, len(sent)).status, 200)
                open(flag, "w").close()
                start = srv.log_count()
                for i in range(5):
                    r = post(srv, len(sent))
                    self.assertEqual(r.status, 503, r)
                    self.assertIn("I/O error", r.json()["error"])
                srv.wait_log(lambda e: e.get("level") == "warn" and e.get("status") == 503,
                             start=start, what="the refusal's log line")
                self.assertEqual(h.request(srv.port, "GET", "/healthz").status, 200)
                os.unlink(flag)  # the disk syncs again
                for i in range(10):
                    self.assertEqual(post(srv, len(sent)).status, 200)
                with journal.Journal(state) as j:
                    # the index may lag the answers: it holds all 20 first
                    j.wait_final(timeout=30 * h.SLOW, at_least=len(accepted))
            # every event answered 200 is in the journal and handled once its run is ok
            _, problems = journal.check_at_least_once(state, effects, sent, accepted)
            self.assertEqual(problems, [])
            self.assertEqual(len(accepted), 20)

    def test_index_needs_no_sync(self):
        # the database is the log's index: its commits are not synced (the log makes them
        # again after a power cut), so a WAL that cannot sync stops neither the answers nor
        # the index
        with h.TempDir() as td:
            state, flag, effects, script, rng, env = self.setup(td, FAILSYNC_ONLY="-wal")
            sent, accepted = [], {}
            with h.Server(script, "--state-dir", state, env=env) as srv:
                open(flag, "w").close()  # from here the WAL cannot sync
                for seq in range(10):
                    body = journal.event_body(seq, rng, max_sleep_ms=0)
                    sent.append(body)
                    r = h.post_event(srv.port, body)
                    self.assertEqual(r.status, 200, r)
                    accepted[r.json()["id"]] = seq
                with journal.Journal(state) as j:
                    h.wait_until(lambda: j.count() == 10, timeout=30 * h.SLOW,
                                 what="the index to hold every event")
                    j.wait_final(timeout=30 * h.SLOW)
                os.unlink(flag)
            _, problems = journal.check_at_least_once(state, effects, sent, accepted)
            self.assertEqual(problems, [])


if __name__ == "__main__":
    h.main()
