#!/usr/bin/env python3
"""The soak: EVENTS webhooks over keep-alive into luahook (--ack handled), each handler
logging a line and posting to a local endpoint (a second luahook), while the server's RSS
and open file descriptors are sampled from /proc. Passes when every event got 200, the
server's descriptors at rest after the run are no more than after the warm-up (the first
50 000 events, or half of a shorter run), and its RSS at the end is within RSS_TOLERANCE of
the RSS after the warm-up.

    tests/soak/soak.py --bin build/release/luahook --client build/release/tests/soak_client \\
        --events 1000000

scripts/soak runs it on the release build; tests/integration/test_hardening_oom.py runs a
short one in CI. Python 3 standard library only.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

SERVER_SCRIPT = """\
-- the soak's handler: a log line and a call to a local endpoint, per event
local URL = %r
on('SOAK', function(ev)
  log.info('soak event', { n = ev.n })
  local r, err = http.post(URL, { json = { action = 'PING', n = ev.n } })
  if not r then error(err) end
  if r.status ~= 200 then error('the endpoint answered ' .. r.status) end
end)
"""

ENDPOINT_SCRIPT = "on('PING', function() end)\n"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def healthy(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise RuntimeError("soak: timed out waiting for %s" % what)
        time.sleep(0.05)


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("soak: no VmRSS for %d" % pid)


def fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def open_connections(port):
    """Client connections of the listening port that still hold a socket (every TCP state
    but LISTEN and TIME_WAIT)."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    cols = line.split()
                    local, state = cols[1], cols[3]
                    if int(local.rsplit(":", 1)[1], 16) == port and state not in ("0A", "06"):
                        n += 1
        except FileNotFoundError:
            pass
    return n


class Server:
    """luahook serving `script` on a free port; its stderr (the log) is counted, not kept,
    but for the first lines of failed runs."""

    def __init__(self, binary, script, *args):
        self.port = free_port()
        self.lines = 0
        self.failures = []
        self.nfailed = 0
        self.proc = subprocess.Popen(
            [binary, "--listen", "127.0.0.1:%d" % self.port, *args, script],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        wait_for(lambda: healthy(self.port) or self.proc.poll() is not None, 30, "the server")
        if self.proc.poll() is not None:
            raise RuntimeError("soak: %s exited at start (%s)" % (binary, self.proc.returncode))

    def _read(self):
        rest = b""
        for chunk in iter(lambda: self.proc.stderr.read1(1 << 16), b""):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            self.lines += len(lines)
            for line in lines:
                if b"failed" in line:
                    self.nfailed += 1
                    if len(self.failures) < 5:
                        self.failures.append(line.decode("utf-8", "replace")[:300])

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(10)


def load(client, port, events, connections):
    out = subprocess.run([client, str(port), str(events), str(connections)],
                         stdout=subprocess.PIPE, check=False, timeout=24 * 3600)
    return json.loads(out.stdout)


def soak(binary, client, events, connections=4, warmup=50000, every=2.0, log=None):
    """Runs the soak; returns its figures (see the keys below)."""
    log = log or (lambda msg: None)
    warmup = min(warmup, events // 2)
    with tempfile.TemporaryDirectory(prefix="lh_soak_") as tmp:
        ep_script = os.path.join(tmp, "endpoint.lua")
        with open(ep_script, "w") as f:
            f.write(ENDPOINT_SCRIPT)
        endpoint = Server(binary, ep_script, "--log-level", "warn")
        server = None
        try:
            script = os.path.join(tmp, "soak.lua")
            with open(script, "w") as f:
                f.write(SERVER_SCRIPT % ("http://127.0.0.1:%d/" % endpoint.port))
            server = Server(binary, script, "--ack", "handled")
            pid, port = server.proc.pid, server.port
            start = {"rss_kib": rss_kib(pid), "fds": fds(pid)}
            log("start: rss %d KiB, %d fds" % (start["rss_kib"], start["fds"]))

            first = load(client, port, warmup, connections)
            wait_for(lambda: open_connections(port) == 0, 30, "the warm-up's connections to close")
            base = {"rss_kib": rss_kib(pid), "fds": fds(pid)}
            log("after %d events: rss %d KiB, %d fds" % (warmup, base["rss_kib"], base["fds"]))

            samples, done = [], threading.Event()
            t0 = time.monotonic()

            def sample():
                while not done.wait(every):
                    s = {"t": round(time.monotonic() - t0, 1), "rss_kib": rss_kib(pid),
                         "fds": fds(pid)}
                    samples.append(s)
                    log("  t=%5.1f s: rss %d KiB, %d fds" % (s["t"], s["rss_kib"], s["fds"]))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            rest = load(client, port, events - warmup, connections)
            done.set()
            sampler.join()
            wait_for(lambda: open_connections(port) == 0, 30, "the run's connections to close")
            end = {"rss_kib": rss_kib(pid), "fds": fds(pid)}
            log("after %d events: rss %d KiB, %d fds" % (events, end["rss_kib"], end["fds"]))
            alive = server.proc.poll() is None
        finally:
            if server is not None:
                server.stop()
            endpoint.stop()
    return {
        "events": events,
        "warmup": warmup,
        "ok": first["ok"] + rest["ok"],
        "other": first["other"] + rest["other"],
        "broken": first["broken"] + rest["broken"],
        "reconnects": first["reconnects"] + rest["reconnects"],
        "seconds": round(first["seconds"] + rest["seconds"], 1),
        "events_per_s": round(events / (first["seconds"] + rest["seconds"]), 0),
        "start": start,
        "base": base,
        "end": end,
        "max_fds": max([s["fds"] for s in samples] + [base["fds"], end["fds"]]),
        "max_rss_kib": max([s["rss_kib"] for s in samples] + [base["rss_kib"], end["rss_kib"]]),
        "samples": samples,
        "log_lines": server.lines,
        "failed_runs": server.nfailed,
        "failures": server.failures,
        "alive": alive,
    }


def verdict(r, rss_tolerance):
    """The problems of a soak's figures; empty when it passed."""
    problems = []
    if not r["alive"]:
        problems.append("the server exited during the run")
    if r["ok"] != r["events"]:
        problems.append("%d of %d events got 200 (%d other answers, %d broken)"
                        % (r["ok"], r["events"], r["other"], r["broken"]))
    if r["failed_runs"]:
        problems.append("%d runs failed: %s" % (r["failed_runs"], r["failures"]))
    if r["end"]["fds"] > r["base"]["fds"]:
        problems.append("open fds grew: %d after the warm-up, %d at the end"
                        % (r["base"]["fds"], r["end"]["fds"]))
    if rss_tolerance is not None and r["end"]["rss_kib"] > r["base"]["rss_kib"] * (1 + rss_tolerance):
        problems.append("RSS grew by more than %d %%: %d KiB after the warm-up, %d KiB at the end"
                        % (rss_tolerance * 100, r["base"]["rss_kib"], r["end"]["rss_kib"]))
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin", required=True)
    ap.add_argument("--client", required=True)
    ap.add_argument("--events", type=int, default=1000000)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--rss-tolerance", type=float, default=0.10)
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples")
    args = ap.parse_args()
    r = soak(args.bin, args.client, args.events, args.connections, every=args.every,
             log=lambda m: print(m, flush=True))
    print(json.dumps({k: v for k, v in r.items() if k != "samples"}))
    problems = verdict(r, args.rss_tolerance)
    for p in problems:
        print("soak: FAIL: " + p, file=sys.stderr)
    if not problems:
        print("soak: passed: %d events at %d events/s; RSS %d -> %d KiB; fds %d -> %d"
              % (r["events"], r["events_per_s"], r["base"]["rss_kib"], r["end"]["rss_kib"],
                 r["base"]["fds"], r["end"]["fds"]))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
