"""Times what the console asks of a server whose journal holds N deliveries (default
100 000 of ~5 KB, a dead one in 1000): the list (limit 50), a search, a show, a body
download, the live picture and a whole page load; then the event rate under load (wrk,
keep-alive, the typical body) with and without a client polling /-/api/live and
/-/api/events every second, alternated. Run by hand:
    LUAHOOK_BIN=build/release/luahook python3 tests/bench/console_access.py [N] [SECONDS]
Prints one line per measure (median and max of several runs)."""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness as h  # noqa: E402
import journal_seed as js  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
SECONDS = int(sys.argv[2]) if len(sys.argv) > 2 else 10
TOKEN = "bench"
AUTH = {"Authorization": "Token " + TOKEN}
NOOP = "on('*', function(event, ctx) end)\n"


def timed(fn, runs=20):
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1000, max(ts) * 1000


def report(what, ms):
    print("%-52s median %8.2f ms   max %8.2f ms" % (what, ms[0], ms[1]), flush=True)


def ok(r):
    assert r.status == 200, r
    return r


def wrk_rate(port, seconds):
    body = js.body_for("ANNOTATION_CREATED", 7, {"pad": "x" * 4800}).decode()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write('wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = '
                '"application/json"\nwrk.headers["Authorization"] = "Token %s"\n'
                % (json.dumps(body), TOKEN))
        script = f.name
    try:
        out = subprocess.run(["wrk", "-t1", "-c8", "-d%ds" % seconds, "--latency", "-s", script,
                              "http://127.0.0.1:%d/hook" % port],
                             capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(script)
    rate = float([l for l in out.splitlines() if l.startswith("Requests/sec")][0].split()[1])
    p99 = [l for l in out.splitlines() if l.strip().startswith("99%")][0].split()[1]
    return rate, p99


def main():
    with h.TempDir() as td:
        d = td.join("state")
        noop = td.script("noop.lua", NOOP)
        db = js.create(d, noop)
        t0 = time.perf_counter()
        js.seed_many(db, N)
        print("seeded %d deliveries in %.1f s" % (N, time.perf_counter() - t0), flush=True)
        with h.Server(noop, "--state-dir", d, "--token", TOKEN) as srv:
            r = h.request(srv.port, "POST", "/-/signin", "token=" + TOKEN,
                          {"Content-Type": "application/x-www-form-urlencoded"})
            assert r.status == 303, r
            cookie = {"Cookie": r.header("Set-Cookie").split(";")[0]}
            with h.Conn(srv.port) as c:
                first = ok(c.request("GET", "/-/api/events?limit=50", headers=cookie)).json()
                newest = first["events"][0]["delivery"]
                dead = ok(c.request("GET", "/-/api/events?status=dead&limit=1",
                                    headers=cookie)).json()["events"][0]["delivery"]
                report("GET /-/api/events?limit=50",
                       timed(lambda: ok(c.request("GET", "/-/api/events?limit=50",
                                                  headers=cookie))))
                nxt = first["next"]
                report("GET /-/api/events?limit=50&before=(page 2)",
                       timed(lambda: ok(c.request("GET", "/-/api/events?limit=50&before=%d" % nxt,
                                                  headers=cookie))))
                report("GET /-/api/events?status=dead&limit=50",
                       timed(lambda: ok(c.request("GET", "/-/api/events?status=dead&limit=50",
                                                  headers=cookie))))
                report("GET /-/api/events?q=(a full id)",
                       timed(lambda: ok(c.request("GET", "/-/api/events?q=" + dead,
                                                  headers=cookie))))
                report("GET /-/api/events?q=(a prefix, 16 of 20 chars)",
                       timed(lambda: ok(c.request("GET", "/-/api/events?q=" + newest[:16],
                                                  headers=cookie))))
                report("GET /-/api/events/ID (a dead one)",
                       timed(lambda: ok(c.request("GET", "/-/api/events/" + dead,
                                                  headers=cookie))))
                report("GET /-/api/events/ID/body",
                       timed(lambda: ok(c.request("GET", "/-/api/events/%s/body" % newest,
                                                  headers=cookie))))
                report("GET /-/api/live",
                       timed(lambda: ok(c.request("GET", "/-/api/live", headers=cookie))))

                def page():  # what a browser asks for to show the deliveries view
                    for path in ("/-/", "/-/static/console.css", "/-/static/console.js",
                                 "/-/api/session", "/-/api/live", "/-/api/events?limit=50"):
                        ok(c.request("GET", path, headers=cookie))
                report("a page load (6 requests, one connection)", timed(page, runs=10))

            # what a poll costs the server, in CPU (its own clock: not the machine's noise)
            def cpu():
                with open("/proc/%d/stat" % srv.proc.pid) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

            with h.Conn(srv.port) as c:
                c0, n = cpu(), 500
                for _ in range(n):
                    ok(c.request("GET", "/-/api/live", headers=cookie))
                    ok(c.request("GET", "/-/api/events?limit=50", headers=cookie))
                per_poll = (cpu() - c0) / n
            print("server CPU per poll (live + a page of 50): %.3f ms (%d polls)"
                  % (per_poll * 1000, n), flush=True)

            stop = threading.Event()
            polls = []

            def poller():
                with h.Conn(srv.port) as pc:
                    while not stop.is_set():
                        t = time.perf_counter()
                        ok(pc.request("GET", "/-/api/live", headers=cookie))
                        ok(pc.request("GET", "/-/api/events?limit=50", headers=cookie))
                        polls.append(time.perf_counter() - t)
                        stop.wait(1.0)

            rates = {False: [], True: []}
            for rnd in range(2):
                for polling in (False, True):
                    if polling:
                        stop.clear()
                        th = threading.Thread(target=poller)
                        th.start()
                    c0 = cpu()
                    rate, p99 = wrk_rate(srv.port, SECONDS)
                    used = cpu() - c0
                    if polling:
                        stop.set()
                        th.join()
                    rates[polling].append(rate)
                    print("events under wrk (%d s, 8 conns), %-24s %6.0f/s  p99 %-8s "
                          "server CPU %.1f us/event"
                          % (SECONDS, "with the console polling" if polling else "alone",
                             rate, p99, used / max(1, rate * SECONDS) * 1e6), flush=True)
            print("median: alone %.0f/s, with polling %.0f/s; %d polls, each %.1f ms median"
                  % (statistics.median(rates[False]), statistics.median(rates[True]),
                     len(polls), statistics.median(polls) * 1000 if polls else 0))


if __name__ == "__main__":
    main()
