"""scripts/bench (issue 16): its smoke run gives figures, and it leaves nothing running.

Too slow for every run (valgrind, a rebuild of build/release): it runs only when
LH_TEST_BENCH=1 is set, and otherwise exits 77, which ctest reports as skipped:

    LH_TEST_BENCH=1 python3 tests/integration/test_bench.py
"""

import os
import re
import signal
import subprocess
import sys
import time
import unittest

import harness as h

BENCH = os.path.join(h.REPO, "scripts", "bench")
RUN_TIMEOUT = 900.0  # a rebuild and a callgrind run on a busy machine


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def run_bench(*args, env=None):
    p = subprocess.run([BENCH, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       env=env, timeout=RUN_TIMEOUT)
    return p.returncode, p.stdout.decode("utf-8", "replace")


def servers_of(out):
    return [(int(pid), int(port)) for pid, port in
            re.findall(r"server pid (\d+) on port (\d+)", out)]


def server_of(out):
    found = servers_of(out)
    return found[0] if found else None


class Quick(unittest.TestCase):
    def check_stopped(self, out, servers=1):
        found = servers_of(out)
        self.assertEqual(len(found), servers, out)
        for pid, port in found:
            h.wait_until(lambda: not alive(pid), timeout=30, what="server %d to be gone" % pid)
            with self.assertRaises(ConnectionRefusedError):
                h.Conn(port, timeout=5).close()

    def test_quick_run_without_peers(self):
        rc, out = run_bench("--quick", "--no-peers")
        self.assertEqual(rc, 0, out)
        events = int(re.search(r"events handled in the window: (\d+) \(wrk counted (\d+)", out)
                     .group(1))
        answers = int(re.search(r"wrk counted (\d+) answers", out).group(1))
        self.assertGreater(answers, 0, out)
        # the events counted include what was in flight when wrk stopped, never fewer
        self.assertGreaterEqual(events, answers, out)
        threads = [int(x) for x in re.findall(r"thread \d+[^:]*:\s+(\d+) Ir/event", out)]
        total = int(re.search(r"all threads:\s+(\d+) Ir/event", out).group(1))
        self.assertTrue(threads and all(t > 0 for t in threads[:1]), out)
        # each thread's share is rounded down: the sum is within one per thread of the total
        self.assertLessEqual(sum(threads), total, out)
        self.assertGreaterEqual(sum(threads) + len(threads), total, out)
        for name in ("typical", "big"):
            m = re.search(r"^\s+%s\s+(\d+) B\s+decode: lh\s+([\d.]+) us\s+cjson\s+([\d.]+) us\s+"
                          r"([\d.]+)x" % name, out, re.M)
            self.assertIsNotNone(m, out)
            size, lh, cj, ratio = int(m.group(1)), float(m.group(2)), float(m.group(3)), \
                float(m.group(4))
            self.assertGreater(size, 0)
            self.assertGreater(lh, 0)
            self.assertAlmostEqual(ratio, cj / lh, delta=0.01 + ratio * 0.01, msg=out)
        if os.path.exists(os.path.join(h.REPO, "tests", "bench", "idle_conns.py")):
            self.assertIn("== 1000 idle keep-alive connections", out)
        else:
            self.assertIn("idle connections: tests/bench/idle_conns.py is absent; skipped", out)
        self.assertIn("peers: skipped (--no-peers)", out)
        # system calls: the total is the sum of the calls listed (those under 0.005 left out)
        m = re.search(r"events: (\d+); system calls per event, all threads: ([\d.]+)", out)
        self.assertIsNotNone(m, out)
        self.assertGreater(int(m.group(1)), 0)
        calls = [float(x) for x in re.findall(r"^   [a-z_0-9]+:\s+([\d.]+)$", out, re.M)]
        self.assertIn("read", re.findall(r"^   ([a-z_0-9]+):\s+[\d.]+$", out, re.M), out)
        self.assertLessEqual(abs(sum(calls) - float(m.group(2))), 0.01 * len(calls) + 0.2, out)
        self.check_stopped(out, servers=2)

    def test_absent_harness_is_said_and_skipped(self):
        with h.TempDir() as tmp:
            env = dict(os.environ, BENCH_HARNESS=tmp.join("no-harness"))
            rc, out = run_bench("--quick", env=env)
        self.assertEqual(rc, 0, out)
        self.assertIn("no peer harness at %s" % tmp.join("no-harness"), out)
        self.assertIn("skipped", out.splitlines()[-1])
        self.check_stopped(out, servers=2)

    def test_interrupted_run_leaves_nothing(self):
        p = subprocess.Popen([BENCH, "--quick", "--no-peers"], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT)
        out = b""
        try:
            # read until the server under callgrind is up (it answered /healthz)
            while server_of(out.decode()) is None:
                line = p.stdout.readline()
                self.assertTrue(line, out.decode())
                out += line
            pid, port = server_of(out.decode())
            self.assertTrue(alive(pid))
            p.send_signal(signal.SIGINT)
            rest, _ = p.communicate(timeout=120)
            out += rest
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        self.assertEqual(p.returncode, 130, out.decode())
        self.check_stopped(out.decode())


class Usage(unittest.TestCase):
    def test_help_and_bad_options(self):
        rc, out = run_bench("--help")
        self.assertEqual(rc, 0)
        for opt in ("--quick", "--no-peers", "--peers", "--duration", "--rounds"):
            self.assertIn(opt, out)
        rc, out = run_bench("--fast")
        self.assertEqual(rc, 2)
        self.assertIn("unknown argument '--fast'", out)
        rc, out = run_bench("--duration", "0")
        self.assertEqual(rc, 2)
        self.assertIn("--duration", out)


if __name__ == "__main__":
    if os.environ.get("LH_TEST_BENCH") != "1":
        print("skipped: set LH_TEST_BENCH=1 to run scripts/bench's smoke test (slow)")
        sys.exit(77)
    unittest.main(verbosity=2)
