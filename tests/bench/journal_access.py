"""Times `luahook events`, `luahook replay` and /-/api/ on a journal of N deliveries (default
100 000 of ~5 KB, a dead one in 1000), and what a running server's loop feels meanwhile
(/healthz answered while API queries run). Run by hand:
    LUAHOOK_BIN=build/release/luahook python3 tests/bench/journal_access.py [N]
Prints one line per measure (median and max of several runs)."""

import os
import statistics
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness as h  # noqa: E402
import journal_seed as js  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100000
TOKEN = "bench"
AUTH = {"Authorization": "Token " + TOKEN}
LOG = h.lua_path(os.path.join(h.REPO, "tests", "integration", "test_journal_access.py"), "log.lua")


def timed(fn, runs=5):
    ts = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts) * 1000, max(ts) * 1000


def report(what, ms):
    print("%-58s median %8.1f ms   max %8.1f ms" % (what, ms[0], ms[1]), flush=True)


def main():
    with h.TempDir() as td:
        d = td.join("state")
        db = js.create(d, LOG)
        t0 = time.perf_counter()
        js.seed_many(db, N)
        print("seeded %d deliveries in %.1f s, database %.0f MB" %
              (N, time.perf_counter() - t0, os.path.getsize(db) / 1e6), flush=True)

        def cli(*a):
            r = h.run_luahook(*a)
            assert r.returncode == 0, r.stderr
        report("cli: events (50 newest)", timed(lambda: cli("events", "--state-dir", d)))
        report("cli: events --status dead", timed(lambda: cli("events", "--state-dir", d,
                                                               "--status", "dead")))
        report("cli: events --action TASKS_CREATED", timed(
            lambda: cli("events", "--state-dir", d, "--action", "TASKS_CREATED")))
        report("cli: events --since 1s (none match)", timed(
            lambda: cli("events", "--state-dir", d, "--since", "1s")))
        report("cli: events --action NOPE (none match: reads every row)", timed(
            lambda: cli("events", "--state-dir", d, "--action", "NOPE")))
        report("cli: --version (the process alone)", timed(lambda: cli("--version")))
        report("cli: events --before %d (deep page)" % (N // 2), timed(
            lambda: cli("events", "--state-dir", d, "--before", str(N // 2))))
        report("cli: events show", timed(lambda: cli("events", "--state-dir", d, "show",
                                                     str(N // 3))))
        with h.Server(LOG, "--state-dir", d, "--token", TOKEN) as srv:
            def api(path, method="GET"):
                r = h.request(srv.port, method, path, headers=AUTH)
                assert r.status == 200, r.body
            for what, path in [
                ("api: events (50 newest)", "/-/api/events"),
                ("api: events?status=dead", "/-/api/events?status=dead"),
                ("api: events?status=ok&limit=1000", "/-/api/events?status=ok&limit=1000"),
                ("api: events?action=TASKS_CREATED", "/-/api/events?action=TASKS_CREATED"),
                ("api: events?before=%d" % (N // 2), "/-/api/events?before=%d" % (N // 2)),
                ("api: events?since=1h", "/-/api/events?since=1h"),
                ("api: events?action=NOPE (reads every row)", "/-/api/events?action=NOPE"),
                ("api: events?handler=nope", "/-/api/events?handler=nope"),
                ("api: events/ID", "/-/api/events/%d" % (N // 3)),
                ("api: stats", "/-/api/stats"),
            ]:
                report(what, timed(lambda: api(path)))
            report("api: replay?dead=1 (%d runs), once" % (N // 1000),
                   timed(lambda: api("/-/api/replay?dead=1", "POST"), runs=1))
            # the loop while the slowest queries run back to back: /healthz latency
            stop = threading.Event()

            def load():
                while not stop.is_set():
                    api("/-/api/events?action=NOPE")
                    api("/-/api/stats")
            th = threading.Thread(target=load)
            th.start()
            lat = []
            for _ in range(200):
                t0 = time.perf_counter()
                r = h.request(srv.port, "GET", "/healthz")
                lat.append(time.perf_counter() - t0)
                assert r.status == 200
            stop.set()
            th.join()
            lat.sort()
            print("healthz during API scans: median %.2f ms, p99 %.2f ms, max %.2f ms" %
                  (lat[len(lat) // 2] * 1000, lat[int(len(lat) * 0.99)] * 1000, lat[-1] * 1000))


if __name__ == "__main__":
    h.require_binary()
    main()
