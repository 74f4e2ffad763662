"""The journal's log written over files made ahead (issue 12, --sync full): a server with a
state folder soon writes its events into a segment that was a spare file of zeros
(DIR/journal/next.spare, 1 MiB first, each next one twice the last), so the segment file
has the spare's size from the start and its records are followed by zeros. Events that
fill a segment go on in the next, bigger one; a spare left by a stopped server is taken by
the next one; every event answered 200 is in the log, and its body reads back whole. With
--sync normal nothing is made ahead: segments are appended to."""

import os
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import journal  # noqa: E402

MIB = 1 << 20
SPARE = os.path.join(journal.LOG_DIR, "next.spare")
HANDLER = 'on("ANNOTATION_CREATED", function(ctx) end)\n'


def body(seq, pad):
    return ('{"action":"ANNOTATION_CREATED","seq":%d,"pad":"%s"}' % (seq, "x" * pad)).encode()


def sizes(state):
    """Segment number -> file size."""
    return {seg: os.path.getsize(journal.segment_path(state, seg))
            for seg in journal.segments(state)}


def spares_refused(folder):
    """Why the server would make no spare in `folder`, or None: O_DIRECT refused there, or
    too little room (jlog_spare.c's has_room, for the 4 MiB spare this test reaches)."""
    probe = os.path.join(folder, "probe")
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_DIRECT, 0o600))
    except OSError as e:
        return "O_DIRECT refused in %s: %s" % (folder, e)
    finally:
        if os.path.exists(probe):
            os.unlink(probe)
    v = os.statvfs(folder)
    if v.f_bavail * v.f_frsize < 4 * 4 * MIB + min(v.f_blocks * v.f_frsize // 20, 256 * MIB):
        return "too little room in %s for spares" % folder
    return None


class Spare(unittest.TestCase):
    def post_all(self, srv, first, n, pad):
        ids = {}
        for seq in range(first, first + n):
            b = body(seq, pad)
            r = h.post_event(srv.port, b)
            self.assertEqual(r.status, 200, r)
            ids[r.json()["id"]] = b
        return ids

    def check_logged(self, state, ids):
        """Every event answered 200 is in the log once, its body whole."""
        records = [r for r in journal.log_records(state) if r["type"] == journal.EVENT]
        logged = journal.logged_event_ids(state)
        self.assertEqual(sorted(logged), sorted(ids), "the log's events")
        by_id = dict(zip(logged, (r["body"] for r in records)))
        for i, b in ids.items():
            self.assertEqual(by_id[i], b, "the body of %s" % i)

    def test_segments_over_spares(self):
        with h.TempDir() as td:
            why = spares_refused(td.path)
            if why is not None:
                self.skipTest(why)
            state, script = td.join("state"), td.script("hooks.lua", HANDLER)
            spare = os.path.join(state, SPARE)
            with h.Server(script, "--state-dir", state) as srv:
                ids = self.post_all(srv, 0, 1, 100)
                # the first spare (1 MiB) is taken by the first batch once it is ready
                seq = [1]

                def in_spare():
                    ids.update(self.post_all(srv, seq[0], 1, 100))
                    seq[0] += 1
                    return MIB in sizes(state).values()
                h.wait_until(in_spare, timeout=10 * h.SLOW, interval=0.02,
                             what="an event written into a 1 MiB segment")
                # 3 MB more: through the 1 MiB segment, into the 2 MiB one
                ids.update(self.post_all(srv, seq[0], 100, 30000))
                h.wait_until(lambda: os.path.exists(spare), timeout=10 * h.SLOW,
                             what="the next spare")
                left = os.path.getsize(spare)
            got = sizes(state)
            direct = sorted(s for s in got.values() if s % MIB == 0)
            self.assertEqual(direct[:2], [MIB, 2 * MIB], got)
            self.assertEqual(left % MIB, 0)
            self.check_logged(state, ids)
            # a direct segment's records are followed by zeros to its end
            seg = max(s for s, size in got.items() if size == MIB)
            with open(journal.segment_path(state, seg), "rb") as f:
                data = f.read()
            end = max((r["at"] & 0xFFFFFFFF) + 16 + len(r["meta"]) + len(r["body"])
                      for r in journal.log_records(state) if r["at"] >> 32 == seg)
            end = (end + 7) // 8 * 8
            self.assertEqual(data[end:].count(0), MIB - end)

            # the spare left behind is the next server's first direct segment
            before = set(got)
            with h.Server(script, "--state-dir", state) as srv:
                ids.update(self.post_all(srv, seq[0] + 100, 3, 100))
                new = {s: size for s, size in sizes(state).items() if s not in before}
                self.assertIn(left, new.values(), new)
            self.check_logged(state, ids)
            with journal.Journal(state) as j:
                j.wait_final(timeout=30 * h.SLOW)
                rows = j.deliveries()
                self.assertEqual(len(rows), len(ids))
                for row in rows:
                    self.assertEqual(row["body"], ids[row["delivery"]])

    def test_a_small_bound_gets_no_spares(self):
        """A spare counts against --journal-max-size: under 4 MiB, where the segments'
        256 KiB floor makes one more than a sixteenth of the bound, none is made (retention
        would otherwise prune what the bound has room for)."""
        with h.TempDir() as td:
            why = spares_refused(td.path)
            if why is not None:
                self.skipTest(why)
            state, script = td.join("state"), td.script("hooks.lua", HANDLER)
            with h.Server(script, "--state-dir", state, "--journal-max-size", "2m") as srv:
                ids = self.post_all(srv, 0, 40, 30000)  # segments of 256 KiB fill and switch
                time.sleep(0.5 * h.SLOW)  # a spare asked for at start would be made by now
                self.assertFalse(os.path.exists(os.path.join(state, SPARE)))
            self.check_logged(state, ids)

    def test_sync_normal_appends(self):
        with h.TempDir() as td:
            state, script = td.join("state"), td.script("hooks.lua", HANDLER)
            with h.Server(script, "--state-dir", state, "--sync", "normal") as srv:
                ids = self.post_all(srv, 0, 40, 30000)
            self.assertFalse(os.path.exists(os.path.join(state, SPARE)))
            self.assertEqual([s for s in sizes(state).values() if s % MIB == 0], [])
            self.check_logged(state, ids)


if __name__ == "__main__":
    h.main()
