"""The journal when the disk refuses (issue 12): a state folder on a small tmpfs that
fills up, and a state folder on a read-only bind mount. These need root (mount; root
ignores file modes, so a read-only folder needs a read-only mount): they are skipped with
a message otherwise, or when mounting is not permitted here.

Disk full: events answered 503 with an error that says so and a log line, the server
still serving, no 200 for an event the journal does not hold; once space returns (the
filler removed) events are accepted again, and every event answered 200, before or
after, is handled (the journal and effects.lua's records compared as in the crash test).
A run that ends while the disk is full is handled once space returns, without a restart.
The same with eight clients at once, the disk filled and freed twice during the stream.
Read-only: a server is not started on a folder it cannot write (a clear message naming
it, the database left as it was), and serves once the folder is writable again."""

import errno
import json
import os
import subprocess
import sys
import threading
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import journal  # noqa: E402

TMPFS_SIZE = "3m"
PAD = 32 * 1024  # bytes added to each body while the disk is full: the WAL must grow


def mount(*args):
    """Runs mount(8); returns its error text, or None on success."""
    r = subprocess.run(["mount", *args], capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip() or "exit %d" % r.returncode)


def umount(path):
    subprocess.run(["umount", path], capture_output=True)
    if os.path.ismount(path):  # still busy: detach it now, freed when the last user goes
        subprocess.run(["umount", "-l", path], capture_output=True)


def fill(path):
    """Writes `path` (appending) until the file system is full; returns the bytes written."""
    n = 0
    chunk = b"\0" * 65536
    with open(path, "ab", buffering=0) as f:
        while True:
            try:
                n += f.write(chunk)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
                break
        # the last partial block too
        for size in (4096, 512, 1):
            while True:
                try:
                    n += f.write(chunk[:size])
                except OSError as e:
                    if e.errno != errno.ENOSPC:
                        raise
                    break
    return n


class Mounts(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root: mounts a tmpfs and a read-only bind mount as the "
                          "state folder (root ignores file modes)")
        self.td = h.TempDir()
        self.addCleanup(self.td.cleanup)
        self.effects = self.td.join("effects.log")
        self.script = self.td.fixture("journal", journal.EFFECTS_SCRIPT)
        self.bodies = {}     # seq -> the bytes posted
        self.accepted = {}   # delivery id -> seq, answered 200
        self.refused = []    # (seq, response), answered 503
        self.seq = 0
        self.rng = journal.seeded(self.id())

    def mount(self, *args):
        target = args[-1]
        err = mount(*args)
        if err is not None:
            self.skipTest("mount is not permitted here (mount %s: %s)" % (" ".join(args), err))
        self.addCleanup(umount, target)

    def serve(self, state, *args):
        return h.Server(self.script, "--state-dir", state, "--handler-timeout", "300", *args,
                        env=journal.effects_env(self.effects))

    def post(self, port, pad=0, gate=None):
        """Posts the next event; returns its answer (200: accepted, 503: refused)."""
        seq = self.seq
        self.seq += 1
        self.bodies[seq] = journal.event_body(seq, self.rng, pad=pad, gate=gate)
        r = h.post_event(port, self.bodies[seq])
        if r.status == 200:
            self.accepted[r.json()["id"]] = seq
        else:
            self.assertEqual(r.status, 503, r)
            self.refused.append((seq, r))
        return r

    def check(self, state):
        """The journal against what was posted and what the handlers did (server stopped)."""
        figures, problems = journal.check_at_least_once(state, self.effects, self.bodies,
                                                        self.accepted)
        self.assertEqual(problems, [], journal.format_problems(problems))
        # an event answered 503 is not in the journal: no handler runs for an event its
        # sender was told failed
        with journal.Journal(state) as j:
            stored = {json.loads(d["body"])["luahook_test"]["seq"] for d in j.deliveries()}
        self.assertEqual(sorted(s for s, _ in self.refused if s in stored), [],
                         "events answered 503 are in the journal")
        self.assertEqual(figures["deliveries"], len(self.accepted))


class DiskFull(Mounts):
    def fill_all(self):
        """Fills the disk, the room of the log's next segment (its spare) included."""
        spare = os.path.join(self.state, journal.LOG_DIR, "next.spare")
        fill(self.filler)
        h.wait_until(lambda: not os.path.exists(spare + ".tmp"), timeout=10.0 * h.SLOW,
                     what="the spare being made to fail")
        if os.path.exists(spare):
            os.unlink(spare)
        fill(self.filler)

    def fill_state(self, srv):
        """A tmpfs state folder with a server on it that has handled a few events."""
        for _ in range(3):
            self.assertEqual(self.post(srv.port).status, 200)
        journal.wait_handled(self.state, self.accepted, timeout=30.0 * h.SLOW)

    def refuse_in_a_row(self, port, n=5, limit=300, gate=None):
        """Posts 32 KB events until the journal refuses `n` in a row (the WAL may still have
        room it already owns; 3 MB cannot absorb hundreds of them)."""
        in_a_row = 0
        for _ in range(limit):
            in_a_row = in_a_row + 1 if self.post(port, pad=PAD, gate=gate).status == 503 else 0
            if in_a_row >= n:
                return
        self.fail("a full disk never refused %d events in a row (%d accepted)"
                  % (n, len(self.accepted)))

    def space_returns(self, port, filler):
        os.unlink(filler)
        h.wait_until(lambda: self.post(port).status == 200, timeout=30.0 * h.SLOW,
                     interval=0.2, what="an event accepted once space returned")
        for _ in range(3):
            self.assertEqual(self.post(port).status, 200)

    def setUp(self):
        super().setUp()
        self.state = self.td.join("state")
        os.mkdir(self.state)
        self.mount("-t", "tmpfs", "-o", "size=" + TMPFS_SIZE, "tmpfs", self.state)
        self.filler = os.path.join(self.state, "filler")

    def test_full_then_space_returns(self):
        gate = self.td.join("gate")
        with self.serve(self.state) as srv:
            self.fill_state(srv)
            self.fill_all()
            # events the WAL still takes hold their runs open until space has returned
            self.refuse_in_a_row(srv.port, gate=gate)
            for _, r in self.refused:
                self.assertFalse(r.json()["ok"], r)
                self.assertRegex(r.json()["error"], r"(?i)disk full",
                                 "the 503 does not say the disk is full")
                self.assertEqual(r.header("retry-after"), "1", r)
            srv.wait_log(lambda e: e.get("status") == 503 and "disk full" in e.get("error", ""),
                         what="the log line of a 503 saying the disk is full")
            self.assertEqual(h.request(srv.port, "GET", "/healthz").status, 200)

            self.space_returns(srv.port, self.filler)
            with open(gate, "w"):
                pass
            with journal.Journal(self.state) as j:
                j.wait_final(timeout=60.0 * h.SLOW, at_least=len(self.accepted),
                             what="every delivery handled once space returned")
        self.check(self.state)

    def test_run_ending_while_full(self):
        # a run that ends while the disk is full is handled once space returns, without a
        # restart (its end written again, or the run repeated)
        gate = self.td.join("gate")
        with self.serve(self.state) as srv:
            self.fill_state(srv)
            r = self.post(srv.port, gate=gate)
            self.assertEqual(r.status, 200, r)
            gated = r.json()["id"]
            self.fill_all()
            self.refuse_in_a_row(srv.port, gate=gate)
            with open(gate, "w"):
                pass
            h.wait_until(lambda: all("done" in journal.read_effects(self.effects)[0]
                                     .get((gated, name), {}).get(1, [])
                                     for name in journal.EFFECTS_HANDLERS),
                         timeout=30.0 * h.SLOW, what="the gated runs' ends")
            # commits are in order: once these are refused, the gated runs' ends were
            # written while the disk was full
            self.refuse_in_a_row(srv.port, n=3)
            self.space_returns(srv.port, self.filler)
            # the scheduler looks at the database every half second
            with journal.Journal(self.state) as j:
                j.wait_final(timeout=10.0 * h.SLOW, at_least=len(self.accepted),
                             what="every delivery handled once space returned")
        self.check(self.state)


    def test_stream_through_full_disk(self):
        # eight clients at once (group commits that fail together), the disk filled and
        # freed twice in the middle: every 503 unstored, every 200 handled
        self.assertIsNone(mount("-o", "remount,size=64m", self.state))  # room for the stream
        reached = threading.Condition()

        def sent(n):
            with reached:
                reached.notify_all()
        # the log's segment is written over a file made ahead (jlog_spare.h): it takes
        # events while the disk is full, until it is full itself. Segments of 2 MiB
        # (--journal-max-size / 16) and events of about 10 KB: some 200 events at most
        stream = journal.Stream(None, 1200, self.rng, clients=8, fail_share=0.1,
                                on_sent=sent, pad=8192)
        with self.serve(self.state, "--journal-max-size", "32m") as srv:
            stream.port = lambda: srv.port
            stream.start()
            for start in (200, 700):
                with reached:
                    self.assertTrue(reached.wait_for(lambda: stream.done >= start,
                                                     timeout=120.0 * h.SLOW))
                self.fill_all()
                refused = stream.statuses().get(503, 0)
                with reached:
                    self.assertTrue(reached.wait_for(
                        lambda: stream.statuses().get(503, 0) >= refused + 20,
                        timeout=120.0 * h.SLOW), "a full disk refused nothing")
                os.unlink(self.filler)
            stream.join(timeout=300.0 * h.SLOW)
            self.bodies = dict(enumerate(stream.bodies))
            self.accepted = stream.accepted()
            self.refused = [(seq, r) for seq, r in stream.answers.items() if r[0] == 503]
            self.assertEqual(set(stream.statuses()), {200, 503}, stream.statuses())
            with journal.Journal(self.state) as j:
                j.wait_final(timeout=60.0 * h.SLOW, at_least=len(self.accepted))
        self.check(self.state)


class ReadOnly(Mounts):
    def setUp(self):
        super().setUp()
        self.real = self.td.join("real")
        self.state = self.td.join("state")
        os.mkdir(self.real)
        os.mkdir(self.state)
        # a journal with one delivery in it
        with self.serve(self.real) as srv:
            self.assertEqual(self.post(srv.port).status, 200)
            journal.wait_handled(self.real, self.accepted, timeout=30.0 * h.SLOW)
        self.before = folder(self.real)
        self.mount("--bind", self.real, self.state)
        err = mount("-o", "remount,bind,ro", self.state)
        if err is not None:
            self.skipTest("a read-only remount is not permitted here: %s" % err)

    def start_read_only(self, state=None):
        r = h.run_luahook("serve", "--listen", "127.0.0.1:0", "--state-dir", state or self.state,
                          self.script, env=journal.effects_env(self.effects),
                          timeout=60.0 * h.SLOW)
        return r.returncode, r.stderr.decode("utf-8", "replace")

    def empty_read_only(self):
        """A second state folder: empty, on a read-only bind mount."""
        real, state = self.td.join("empty-real"), self.td.join("empty")
        os.mkdir(real)
        os.mkdir(state)
        self.mount("--bind", real, state)
        self.assertIsNone(mount("-o", "remount,bind,ro", state))
        return real, state

    def test_refused_then_served_when_writable(self):
        # A running server's folder cannot turn read-only under it (the kernel refuses to
        # remount a mount with files open for writing): the case is a start on one.
        rc, text = self.start_read_only()
        self.assertEqual(rc, 2, text)
        self.assertIn(self.state, text)
        self.assertNotIn("listening", text)
        self.assertEqual(folder(self.real), self.before, "a refused start changed the folder")

        self.assertIsNone(mount("-o", "remount,bind,rw", self.state))
        with self.serve(self.state) as srv:
            self.assertEqual(self.post(srv.port).status, 200)
            journal.wait_handled(self.state, self.accepted, timeout=30.0 * h.SLOW)
        self.check(self.state)
        self.assertEqual(len(self.accepted), 2)

    def test_empty_folder_refused(self):
        real, state = self.empty_read_only()
        rc, text = self.start_read_only(state)
        self.assertEqual(rc, 2, text)
        self.assertIn(state, text)
        self.assertEqual(os.listdir(real), [])

    # SQLite alone says "unable to open database file", with a database there or not
    def test_refusal_says_read_only(self):
        for state in (self.state, self.empty_read_only()[1]):
            rc, text = self.start_read_only(state)
            self.assertEqual(rc, 2, text)
            self.assertRegex(text, r"(?i)read-only", "the refusal does not say the folder is "
                             "read-only: %r" % text)


def folder(path):
    """{relative name: bytes} of the files under `path` (the log's segments too)."""
    out = {}
    for root, _, files in os.walk(path):
        for n in files:
            p = os.path.join(root, n)
            out[os.path.relpath(p, path)] = read(p)
    return out


def read(path):
    with open(path, "rb") as f:
        return f.read()


if __name__ == "__main__":
    h.main()
