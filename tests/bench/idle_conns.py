#!/usr/bin/env python3
"""What an idle keep-alive connection costs the server, in resident memory.

Starts the binary (release build: ASan keeps freed memory in quarantine), warms it up with
a few events on one connection, reads its RSS, then opens N connections that each post one
event, read the answer and stay open, idle. Reads the RSS again and prints the difference
per connection, with luahook_connections_buffered (connections still holding request
buffers: none once they are idle, but the scrape's own).

    tests/bench/idle_conns.py [--bin build/release/luahook] [--conns 10000] [--body FILE]

Raises its own open-file limit to the hard limit (the server inherits it); run as root, or
raise the hard limit, for 10 000 connections. Python 3 standard library only.
"""

import argparse
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BODY = os.path.join(ROOT, "tests", "fixtures", "labelstudio", "ANNOTATION_CREATED.json")
HANDLER = 'on("*", function(ev) return ev.action end)\n'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for %d" % pid)


def read_answer(s):
    """Reads one answer (head and Content-Length body); returns its status."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed before the answer")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise RuntimeError("connection closed inside the answer")
        rest += chunk
    return int(head.split(b" ", 2)[1])


def post(s, body):
    s.sendall(b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
              b"Content-Length: %d\r\n\r\n" % len(body) + body)
    status = read_answer(s)
    if status != 200:
        raise RuntimeError("answer %d" % status)


def metric(port, name):
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    for line in data.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "release", "luahook"))
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--body", default=BODY)
    a = ap.parse_args()
    body = open(a.body, "rb").read()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = a.conns + 256
    if hard != resource.RLIM_INFINITY and hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
        except (ValueError, OSError):
            sys.exit("the open-file limit is %d: raise it past %d (ulimit -Hn)" % (hard, want))
    else:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))

    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "idle.lua")
        with open(script, "w") as f:
            f.write(HANDLER)
        proc = subprocess.Popen(
            [a.bin, "serve", "--listen", "127.0.0.1:%d" % port, "--log-level", "warn",
             "--max-connections", str(a.conns + 16), "--idle-timeout", "600", script],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        conns = []
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    warm = socket.create_connection(("127.0.0.1", port))
                    break
                except OSError:
                    if time.monotonic() > deadline or proc.poll() is not None:
                        sys.exit("the server did not start")
                    time.sleep(0.05)
            with warm:
                for _ in range(200):
                    post(warm, body)
            base = rss_kib(proc.pid)
            t0 = time.monotonic()
            for _ in range(a.conns):
                s = socket.create_connection(("127.0.0.1", port))
                post(s, body)
                conns.append(s)
            took = time.monotonic() - t0
            after = rss_kib(proc.pid)
            held = metric(port, "luahook_connections_buffered")
            open_now = metric(port, "luahook_connections_open")
            per = (after - base) / a.conns
            print("idle keep-alive connections: %d (open: %d), each posted one %d-byte event"
                  % (a.conns, open_now, len(body)))
            print("RSS: %d KiB before, %d KiB after: %.2f KiB per idle connection"
                  % (base, after, per))
            print("luahook_connections_buffered with all of them idle: %s (1: the /metrics "
                  "request's own)" % ("n/a" if held is None else "%d" % held))
            print("opening them took %.1f s" % took)
        finally:
            for s in conns:
                s.close()
            proc.terminate()
            proc.wait(timeout=30)


if __name__ == "__main__":
    main()
