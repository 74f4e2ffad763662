"""Hot reload: SIGHUP and --watch build a complete new VM beside the serving one and swap on
success only. Covers: reload under continuous load (keep-alive and fresh connections, a
SIGHUP every 50 ms, every accepted event handled exactly once, by one version or the other);
broken reloads (syntax error, error at load time, deleted script, one broken script of a
folder) leaving the old VM serving with its state; handlers waiting in sleep/http.get
finishing on the old VM; old timers stopping at the swap (and a failed VM's timers never
running); SIGHUPs during a reload (one more reload, no more); 1000 reloads and RSS; --watch
(plain write, burst of writes, atomic rename-over, new *.lua in a folder); the reload time of a
folder of 50 scripts; generation numbers, reload counters and duration in /metrics and log."""

import collections
import datetime
import http.server
import json
import os
import signal
import string
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

OK = "reloaded"
FAILED = "reload failed, the running scripts stay"
PROBLEM = "reload problem"
WATCH_REASON = "a watched file changed"


def lua_version(names, v, **more):
    """One version of a script that a test rewrites between reloads: the fixtures `names`
    joined (record.lua first where the script records), its $VERSION placeholder filled with
    `v` and any other $NAME with `more` (string.Template: every placeholder must be given)."""
    return string.Template(h.lua_source(__file__, *names)).substitute(VERSION=v, **more)


def say(text):
    """A figure the lead reports: printed, never asserted."""
    sys.stderr.write("\n[test_reload] %s\n" % text)
    sys.stderr.flush()


def write_atomic(path, source):
    """Writes `source` to a temp file beside `path` (a name no watch matches), then renames
    it over `path`: a reload can never read a half-written script."""
    tmp = path + ".tmp~"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(source)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def hup(srv):
    os.kill(srv.proc.pid, signal.SIGHUP)


def reload_and_wait(srv, what=None):
    """Sends SIGHUP and returns the next 'reloaded' or 'reload failed' line, plus the log
    index from which to look for the problems of this reload."""
    start = srv.log_count()
    hup(srv)
    line = srv.wait_log(lambda e: e.get("msg") in (OK, FAILED), start=start,
                        what=what or "the outcome of a reload")
    return line, start


def logs_since(srv, start, msg):
    return [e for e in logs_from(srv, start) if e.get("msg") == msg]


def count_msg(srv, msg, **fields):
    return len(srv.find_logs(msg=msg, **fields))


def reload_counts(srv):
    m = h.get_metrics(srv.port)
    return (m.get("luahook_reloads_total", None, result="ok"),
            m.get("luahook_reloads_total", None, result="failed"),
            m.get("luahook_vm_generation", None))




def log_time(line):
    """The wall-clock time of a JSON log line ("2026-11-26T17:52:28.593Z")."""
    return datetime.datetime.strptime(line["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc).timestamp()


def logs_from(srv, start):
    """The JSON log lines from index `start` on."""
    out = []
    for line in srv.raw_lines()[start:]:
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict):
            out.append(obj)
    return out


class Basics(unittest.TestCase):
    def test_generation_metrics_and_log_fields(self):
        with h.TempDir() as tmp:
            s = tmp.script("a.lua", 'on("X", function() end)\non("Y", function() end)\n')
            with h.Server(s, "--log-level", "debug") as srv:
                self.assertEqual(reload_counts(srv), (0.0, 0.0, 1.0),
                                 "metrics before any reload (ok, failed, generation)")
                for gen in (2, 3):
                    line, _ = reload_and_wait(srv)
                    self.assertEqual(line.get("msg"), OK, line)
                    self.assertEqual(line.get("level"), "info", line)
                    self.assertEqual(line.get("reason"), "SIGHUP", line)
                    self.assertEqual(line.get("generation"), gen, line)
                    self.assertEqual(line.get("handlers"), 2, line)
                    self.assertIsInstance(line.get("duration_ms"), (int, float), line)
                    self.assertGreaterEqual(line["duration_ms"], 0, line)
                    m = h.get_metrics(srv.port)
                    self.assertEqual(m.get("luahook_vm_generation", None), float(gen))
                    self.assertEqual(m.get("luahook_reloads_total", None, result="ok"),
                                     float(gen - 1))
                    self.assertEqual(m.get("luahook_reloads_total", None, result="failed"), 0.0)
                    self.assertAlmostEqual(m.get("luahook_reload_duration_seconds", None),
                                           line["duration_ms"] / 1000.0, delta=1e-5,
                                           msg="reload_duration_seconds vs the log's duration_ms")
                r = h.post_event(srv.port, {"action": "X"})
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["handlers"], 1, r)

    def test_old_vm_closed_when_idle(self):
        # No handler runs at the swap: the old VM's last handler has long ended, so it must
        # be closed right away — without waiting for some unrelated traffic to wake the loop.
        with h.TempDir() as tmp:
            s = tmp.script("a.lua", 'on("X", function() end)\n')
            with h.Server(s, "--log-level", "debug") as srv:
                line, start = reload_and_wait(srv)
                self.assertEqual(line.get("msg"), OK, line)
                srv.wait_log(lambda e: e.get("msg") == "vm closed" and e.get("generation") == 1,
                             start=start, timeout=1.0 * h.SLOW,
                             what="'vm closed' generation 1 on an idle server (no request "
                                  "sent after the SIGHUP)")
                self.assertEqual(count_msg(srv, "vm closed", generation=2), 0,
                                 "the serving VM was closed")


# --------------------------------------------------------------------------------------------
# Under load
# --------------------------------------------------------------------------------------------

LOAD_SCRIPT = ("record.lua", "load.lua")


class UnderLoad(unittest.TestCase):
    def test_sighup_every_50ms_under_load(self):
        duration = 4.0 if h.SANITIZED else 10.0
        with h.TempDir() as tmp:
            out = tmp.join("out.txt")
            path = tmp.join("load.lua")
            write_atomic(path, lua_version(LOAD_SCRIPT, "A"))
            with h.Server(path, env={"OUT": out}) as srv:
                ok0, failed0, gen0 = reload_counts(srv)
                stop = threading.Event()
                lock = threading.Lock()
                accepted = []          # every id returned in a 200 answer
                errors = []            # (thread, what)
                counts = collections.Counter()

                def check(name, r):
                    if r.status != 200:
                        raise AssertionError("status %d: %r" % (r.status, r))
                    body = r.json()
                    if body.get("ok") is not True or body.get("handlers") != 1 \
                            or not isinstance(body.get("id"), str):
                        raise AssertionError("unexpected answer %r" % body)
                    return body["id"]

                def keepalive(name):
                    ids = []
                    try:
                        with h.Conn(srv.port) as c:
                            while not stop.is_set():
                                wait = 0.01 if len(ids) % 2 else 0
                                ids.append(check(name, c.request(
                                    "POST", "/", {"action": "LOAD", "client": name,
                                                  "wait": wait})))
                    except Exception as e:  # noqa: BLE001 - every failure is reported
                        with lock:
                            errors.append((name, "after %d requests: %r" % (len(ids), e)))
                    with lock:
                        accepted.extend(ids)
                        counts[name] = len(ids)

                def fresh(name):
                    ids = []
                    try:
                        while not stop.is_set():
                            wait = 0.02 if len(ids) % 2 else 0
                            ids.append(check(name, h.post_event(
                                srv.port, {"action": "LOAD", "client": name, "wait": wait})))
                    except Exception as e:  # noqa: BLE001
                        with lock:
                            errors.append((name, "after %d requests: %r" % (len(ids), e)))
                    with lock:
                        accepted.extend(ids)
                        counts[name] = len(ids)

                threads = [threading.Thread(target=keepalive, args=("ka%d" % i,), daemon=True)
                           for i in range(3)]
                threads += [threading.Thread(target=fresh, args=("fresh%d" % i,), daemon=True)
                            for i in range(3)]
                for t in threads:
                    t.start()
                version = "A"
                sent = 0
                t_end = time.monotonic() + duration
                while time.monotonic() < t_end and not errors:
                    version = "B" if version == "A" else "A"
                    write_atomic(path, lua_version(LOAD_SCRIPT, version))
                    hup(srv)
                    sent += 1
                    time.sleep(0.05)
                stop.set()
                for t in threads:
                    t.join(30 * h.SLOW)
                    self.assertFalse(t.is_alive(), "a client thread is stuck")
                self.assertEqual(errors, [], "client errors under reload")
                self.assertGreater(len(accepted), 100, "the load did not run: %r" % counts)

                # every accepted event must be handled: wait for the file to catch up
                def lines():
                    return tmp.read_lines("out.txt")
                try:
                    h.wait_until(lambda: len(lines()) >= len(accepted), timeout=5 * h.SLOW,
                                 interval=0.05)
                except AssertionError:
                    pass    # the comparison below says which ones are missing
                # let the last reload run, and any duplicate arrive
                time.sleep(0.3 * h.SLOW)
                ok1, failed1, gen1 = reload_counts(srv)
                got = lines()

            versions = collections.Counter()
            ids = collections.Counter()
            for line in got:
                v, _, i = line.partition(" ")
                self.assertIn(v, ("A", "B"), "malformed line %r" % line)
                versions[v] += 1
                ids[i] += 1
            twice = [i for i, n in ids.items() if n > 1]
            acc = set(accepted)
            self.assertEqual(len(acc), len(accepted), "the server gave one id twice")
            missing = acc - set(ids)
            extra = set(ids) - acc
            say("under load: %d s, %d SIGHUPs, %d ok reloads, %d failed, %d events (%s), "
                "versions %r" % (duration, sent, ok1 - ok0, failed1 - failed0, len(accepted),
                                 dict(counts), dict(versions)))
            self.assertEqual(twice, [], "events handled more than once (%d)" % len(twice))
            self.assertEqual(missing, set(), "accepted events never handled (%d of %d, e.g. %r)"
                             % (len(missing), len(acc), sorted(missing)[:5]))
            self.assertEqual(extra, set(), "handled events that were never answered 200")
            self.assertGreater(versions["A"], 0, versions)
            self.assertGreater(versions["B"], 0, versions)
            self.assertGreater(ok1 - ok0, 10, "reloads ok after %d SIGHUPs" % sent)
            self.assertLessEqual(ok1 - ok0, sent, "more reloads than SIGHUPs")
            self.assertEqual(failed1 - failed0, 0, "failed reloads (scripts written atomically)")
            self.assertEqual(gen1 - gen0, ok1 - ok0, "generation vs ok reloads")
            self.assertEqual(count_msg(srv, OK), ok1 - ok0, "'reloaded' lines vs the counter")


# --------------------------------------------------------------------------------------------
# Broken reloads
# --------------------------------------------------------------------------------------------

VERSIONED = ("record.lua", "versioned.lua")
FOLDER_B = ("record.lua", "folder_b.lua")


class Broken(unittest.TestCase):
    def event(self, srv, tmp):
        r = h.post_event(srv.port, {"action": "V"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json().get("handlers"), 1, r)
        rid = r.json()["id"]
        mine = [l for l in tmp.read_lines("out.txt") if l.split(" ")[1:2] == [rid]]
        self.assertEqual(len(mine), 1, "event %s recorded %r" % (rid, mine))
        v, _, n = mine[0].split(" ")
        return v, int(n)

    def check_broken(self, break_it, problem_check):
        with h.TempDir() as tmp:
            path = tmp.join("hook.lua")
            write_atomic(path, lua_version(VERSIONED, "A"))
            with h.Server(path, "--ack", "handled", env={"OUT": tmp.join("out.txt")}) as srv:
                self.assertEqual(self.event(srv, tmp), ("A", 1))
                break_it(path)
                line, start = reload_and_wait(srv)
                self.assertEqual(line.get("msg"), FAILED, line)
                self.assertEqual(line.get("level"), "error", line)
                self.assertEqual(line.get("generation"), 1, line)
                self.assertEqual(line.get("problems"), 1, line)
                self.assertIsInstance(line.get("duration_ms"), (int, float), line)
                problems = logs_since(srv, start, PROBLEM)
                self.assertEqual(len(problems), 1, problems)
                self.assertEqual(problems[0].get("level"), "error", problems[0])
                problem_check(path, problems[0].get("problem"))
                self.assertEqual(reload_counts(srv), (0.0, 1.0, 1.0), "(ok, failed, generation)")
                # the old VM still serves, with its state
                self.assertEqual(self.event(srv, tmp), ("A", 2))
                self.assertEqual(self.event(srv, tmp), ("A", 3))
                # fixed: the new version takes over, with its own fresh state
                write_atomic(path, lua_version(VERSIONED, "B"))
                line, _ = reload_and_wait(srv)
                self.assertEqual(line.get("msg"), OK, line)
                self.assertEqual(line.get("generation"), 2, line)
                self.assertEqual(line.get("handlers"), 1, line)
                self.assertEqual(self.event(srv, tmp), ("B", 1))
                self.assertEqual(reload_counts(srv), (1.0, 1.0, 2.0), "(ok, failed, generation)")

    def test_syntax_error(self):
        def break_it(path):
            write_atomic(path, h.lua_source(__file__, "syntax_error.lua"))

        def check(path, problem):
            self.assertIsInstance(problem, str)
            line = h.line_of(path, "-- @SYNTAX")
            self.assertTrue(problem.startswith("%s:%d: " % (path, line)), problem)
            self.assertIn("near", problem)
        self.check_broken(break_it, check)

    def test_error_at_load_time(self):
        def break_it(path):
            write_atomic(path, lua_version(VERSIONED, "B") + 'error("boom") -- @BOOM\n')

        def check(path, problem):
            self.assertEqual(problem, "%s:%d: boom" % (path, h.line_of(path, "-- @BOOM")))
        self.check_broken(break_it, check)

    def test_deleted_script(self):
        def check(path, problem):
            self.assertIsInstance(problem, str)
            self.assertTrue(problem.startswith(path), problem)
            self.assertIn("no such file", problem.lower())
        self.check_broken(os.remove, check)

    def test_one_broken_script_of_a_folder_changes_nothing(self):
        with h.TempDir() as tmp:
            os.mkdir(tmp.join("hooks"))
            a, b = tmp.join("hooks", "a.lua"), tmp.join("hooks", "b.lua")
            write_atomic(a, lua_version(VERSIONED, "A"))
            write_atomic(b, lua_version(FOLDER_B, "b1"))
            with h.Server(tmp.join("hooks"), "--ack", "handled",
                          env={"OUT": tmp.join("out.txt")}) as srv:
                self.assertEqual(self.event(srv, tmp), ("A", 1))
                # a.lua changes and is fine, b.lua changes and is broken: nothing of it counts
                write_atomic(a, lua_version(VERSIONED, "B"))
                write_atomic(b, lua_version(FOLDER_B, "b2") + 'error("late")\n')
                line, start = reload_and_wait(srv)
                self.assertEqual(line.get("msg"), FAILED, line)
                problems = [p.get("problem") for p in logs_since(srv, start, PROBLEM)]
                self.assertEqual(len(problems), 1, problems)
                self.assertTrue(problems[0].startswith(b + ":"), problems)
                self.assertEqual(self.event(srv, tmp), ("A", 2))
                r = h.post_event(srv.port, {"action": "W"})
                self.assertEqual(r.status, 200, r)
                self.assertIn("b1 " + r.json()["id"], tmp.read_lines("out.txt"))


# --------------------------------------------------------------------------------------------
# Running handlers finish on the old VM
# --------------------------------------------------------------------------------------------

SLEEPER = ("record.lua", "sleeper.lua")


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        time.sleep(self.server.delay)
        body = b"slow-ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


class SlowUpstream:
    """An HTTP server on 127.0.0.1 that answers every GET after `delay` seconds."""

    def __init__(self, delay):
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
        self.httpd.daemon_threads = True
        self.httpd.delay = delay
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()


class Draining(unittest.TestCase):
    def test_waiting_handlers_finish_on_the_old_vm(self):
        with h.TempDir() as tmp, SlowUpstream(1.0) as up:
            path = tmp.join("hook.lua")
            write_atomic(path, lua_version(SLEEPER, "A", COUNTER=1000))
            with h.Server(path, "--ack", "handled", "--log-level", "debug",
                          env={"OUT": tmp.join("out.txt"), "UP": up.url}) as srv:
                answers = {}

                def post(action):
                    r = h.post_event(srv.port, {"action": action}, timeout=30 * h.SLOW)
                    answers[action] = (r, time.monotonic())

                threads = [threading.Thread(target=post, args=(a,), daemon=True)
                           for a in ("SLOW", "HTTP")]
                for t in threads:
                    t.start()
                h.wait_until(lambda: len([l for l in tmp.read_lines("out.txt")
                                          if l.startswith("start A ")]) == 2,
                             what="both waiting handlers to start")
                write_atomic(path, lua_version(SLEEPER, "B", COUNTER=2000))
                line, start = reload_and_wait(srv)
                self.assertEqual(line.get("msg"), OK, line)
                t_reloaded = time.monotonic()
                self.assertEqual(answers, {}, "the waiting handlers ended before the reload "
                                 "(the test proves nothing)")
                r = h.post_event(srv.port, {"action": "FAST"})
                self.assertEqual(r.status, 200, r)
                fast_id = r.json()["id"]
                self.assertIn("B fast %s 2001" % fast_id, tmp.read_lines("out.txt"),
                              "an event after the reload did not run the new version")
                self.assertEqual(logs_since(srv, start, "vm closed"), [],
                                 "the old VM was closed while two handlers still ran on it")
                for t in threads:
                    t.join(30 * h.SLOW)
                for action in ("SLOW", "HTTP"):
                    r, when = answers[action]
                    self.assertEqual(r.status, 200, (action, r))
                    self.assertGreater(when, t_reloaded)
                lines = tmp.read_lines("out.txt")
                slow = [l for l in lines if l.startswith("A slow ") or l.startswith("B slow ")]
                hget = [l for l in lines if l.startswith("A http ") or l.startswith("B http ")]
                self.assertEqual(len(slow), 1, lines)
                self.assertEqual(len(hget), 1, lines)
                # finished on the old VM: version A, A's counter (1001 or 1002), not B's
                v, _, _, n = slow[0].split(" ")
                self.assertEqual(v, "A", slow)
                self.assertIn(int(n), (1001, 1002), slow)
                parts = hget[0].split(" ")
                self.assertEqual(parts[0], "A", hget)
                self.assertIn(int(parts[3]), (1001, 1002), hget)
                self.assertEqual(parts[4], "200:slow-ok", hget)
                # the old VM is closed once its last handler ended
                srv.wait_log(lambda e: e.get("msg") == "vm closed" and e.get("generation") == 1,
                             start=start, timeout=2.0 * h.SLOW,
                             what="'vm closed' generation 1 after its last handler ended")
                self.assertEqual(count_msg(srv, "vm closed", generation=2), 0)
                # and the new VM goes on with its own state
                r = h.post_event(srv.port, {"action": "FAST"})
                self.assertIn("B fast %s 2002" % r.json()["id"], tmp.read_lines("out.txt"))

    def test_old_vm_closed_after_its_last_default_ack_handler(self):
        # default ack: the answer goes out at once; the handler ends later, in its sleep's
        # timer, with no request around. The old VM must be closed then, not at the next
        # unrelated wake-up of the server.
        with h.TempDir() as tmp:
            path = tmp.join("hook.lua")
            write_atomic(path, lua_version(SLEEPER, "A", COUNTER=1000))
            with h.Server(path, "--log-level", "debug",
                          env={"OUT": tmp.join("out.txt"), "UP": "http://127.0.0.1:9"}) as srv:
                r = h.post_event(srv.port, {"action": "SLOW"})
                self.assertEqual(r.status, 200, r)
                rid = r.json()["id"]
                h.wait_until(lambda: "start A slow " + rid in tmp.read_lines("out.txt"),
                             what="the sleeping handler to start")
                write_atomic(path, lua_version(SLEEPER, "B", COUNTER=2000))
                line, start = reload_and_wait(srv)
                self.assertEqual(line.get("msg"), OK, line)
                h.wait_until(lambda: "A slow %s 1001" % rid in tmp.read_lines("out.txt"),
                             timeout=5 * h.SLOW, what="the sleeping handler to finish on A")
                srv.wait_log(lambda e: e.get("msg") == "vm closed" and e.get("generation") == 1,
                             start=start, timeout=2.0 * h.SLOW,
                             what="'vm closed' generation 1 after its last handler ended "
                                  "(no request sent since)")


# --------------------------------------------------------------------------------------------
# Timers
# --------------------------------------------------------------------------------------------

TICKER = ("record.lua", "ticker.lua")


class Timers(unittest.TestCase):
    def test_old_timers_stop_at_the_swap(self):
        with h.TempDir() as tmp:
            path = tmp.join("tick.lua")
            write_atomic(path, lua_version(TICKER, "A"))
            with h.Server(path, env={"OUT": tmp.join("ticks.txt")}) as srv:
                def ticks():
                    return tmp.read_lines("ticks.txt")
                h.wait_until(lambda: ticks().count("A") >= 3, what="3 A ticks")
                # a handler sleeping on A keeps the old VM open after the swap: its timers
                # must stop anyway (not only when the VM is closed)
                hold = 1.0 + 0.5 * h.SLOW
                r = h.post_event(srv.port, {"action": "HOLD", "s": hold})
                self.assertEqual(r.status, 200, r)
                t_hold = time.monotonic()
                write_atomic(path, lua_version(TICKER, "B"))
                line, _ = reload_and_wait(srv)
                self.assertEqual(line.get("msg"), OK, line)
                a_at_swap = ticks().count("A")
                h.wait_until(lambda: ticks().count("B") >= 3, what="3 B ticks")
                time.sleep(0.5)   # ten periods of the old timer
                t = ticks()
                self.assertLessEqual(t.count("A"), a_at_swap + 1,
                                     "the old VM's timer kept ticking after the reload")
                first_b = t.index("B")
                self.assertLessEqual(t[first_b:].count("A"), 1,
                                     "A ticks after the new timer started: %r" % t[first_b:])
                self.assertNotIn("HOLD-END", t, "the HOLD handler ended before the checks (the "
                                 "old VM may have been closed, which proves less)")

                # a failed reload: the serving timer goes on, the rejected VM's never runs
                write_atomic(path, lua_version(TICKER, "C") + 'error("boom")\n')
                line, _ = reload_and_wait(srv)
                self.assertEqual(line.get("msg"), FAILED, line)
                b_before = ticks().count("B")
                time.sleep(0.5)
                t = ticks()
                self.assertEqual(t.count("C"), 0, "the timer of a rejected VM ran")
                self.assertGreaterEqual(t.count("B") - b_before, 3,
                                        "the serving VM's timer stopped after a failed reload")


# --------------------------------------------------------------------------------------------
# SIGHUP during a reload
# --------------------------------------------------------------------------------------------

BUSY = 0.3 * h.SLOW
SLOW_LOAD = h.lua_path(__file__, "slow_load.lua")  # computes env("BUSY") seconds at each load


class Coalescing(unittest.TestCase):
    def test_sighups_during_a_reload_give_one_more(self):
        with h.Server(SLOW_LOAD, env={"BUSY": BUSY}) as srv:
            start = srv.log_count()
            hup(srv)
            srv.wait_log(lambda e: str(e.get("msg", "")).startswith("reload requested"),
                         start=start, what="the first reload to start")
            time.sleep(BUSY / 3)        # the reload is now computing
            for _ in range(10):
                hup(srv)
                time.sleep(0.001)
            h.wait_until(lambda: count_msg(srv, OK) >= 2, timeout=10 * BUSY + 5 * h.SLOW,
                         what="a second reload after the SIGHUPs sent during the first")
            time.sleep(3 * BUSY + 0.3)  # room for any further (wrong) reload
            self.assertEqual(count_msg(srv, OK), 2,
                             "1 SIGHUP + a burst of 10 during its reload")
            self.assertEqual(reload_counts(srv), (2.0, 0.0, 3.0), "(ok, failed, generation)")

    def test_burst_of_sighups(self):
        # 20 SIGHUPs back to back, while no reload runs. Each reload computes for 50 ms so
        # that the burst (well under 1 ms) cannot straddle two whole reloads: the first
        # SIGHUP's reload, plus at most one more for those that arrived while it ran.
        with h.Server(SLOW_LOAD, env={"BUSY": 0.05 * h.SLOW}) as srv:
            for _ in range(20):
                hup(srv)
            h.wait_until(lambda: count_msg(srv, OK) >= 1, what="a reload")
            time.sleep(0.5 * h.SLOW)
            n = count_msg(srv, OK)
            self.assertIn(n, (1, 2), "a burst of 20 SIGHUPs gave %d reloads" % n)
            self.assertEqual(reload_counts(srv)[0], float(n))


# --------------------------------------------------------------------------------------------
# Many reloads: memory
# --------------------------------------------------------------------------------------------


class ManyReloads(unittest.TestCase):
    def test_rss_after_many_reloads(self):
        total = 200 if h.SANITIZED else 1000
        with h.TempDir() as tmp:
            s = tmp.fixture(__file__, "record.lua", "rss.lua")
            env = {"OUT": tmp.join("out.txt")}
            if h.SANITIZED:
                # ASan keeps freed memory in a quarantine (256 MB by default): RSS would
                # measure the quarantine filling, not luahook. Leaks still fail the exit code.
                env["ASAN_OPTIONS"] = ":".join(
                    x for x in (os.environ.get("ASAN_OPTIONS", ""), "quarantine_size_mb=0") if x)
            with h.Server(s, env=env) as srv:
                pid = srv.proc.pid
                rss = {}
                t0 = time.monotonic()
                for i in range(1, total + 1):
                    line, _ = reload_and_wait(srv)
                    self.assertEqual(line.get("msg"), OK, line)
                    self.assertEqual(line.get("generation"), i + 1, line)
                    if i % 50 == 0:
                        # an event now and then, so some VMs retire with work done
                        r = h.post_event(srv.port, {"action": "R1"})
                        self.assertEqual(r.status, 200, r)
                    if i in (10, total):
                        h.request(srv.port, "GET", "/healthz")   # wake the loop (reaper)
                        time.sleep(0.2)
                        rss[i] = h.rss_kib(pid)
                elapsed = time.monotonic() - t0
                self.assertEqual(reload_counts(srv), (float(total), 0.0, float(total + 1)))
                say("RSS: %d kB after 10 reloads, %d kB after %d reloads (%+.1f%%); "
                    "%d reloads in %.1f s" % (rss[10], rss[total], total,
                                             100.0 * (rss[total] - rss[10]) / rss[10],
                                             total, elapsed))
                self.assertLessEqual(rss[total], rss[10] * 1.10,
                                     "RSS grew by more than 10%% over %d reloads" % total)
                self.assertGreaterEqual(rss[total], rss[10] * 0.90)


# --------------------------------------------------------------------------------------------
# --watch
# --------------------------------------------------------------------------------------------

WATCHED = ("watched.lua",)

QUIET = 0.4 + 0.2 * h.SLOW  # seconds without a further reload (the debounce is 0.1 s)


class Watch(unittest.TestCase):
    def version(self, srv):
        """The version serving: each version's handler fails with 'version X' (ack handled
        lists the failure in its 500 answer)."""
        r = h.post_event(srv.port, {"action": "V"})
        self.assertEqual(r.status, 500, r)
        body = r.body.decode()
        for v in ("A", "B", "C", "D"):
            if "version " + v in body:
                return v
        self.fail("no version in %r" % body)

    def wait_reloads(self, srv, n, what):
        h.wait_until(lambda: count_msg(srv, OK) + count_msg(srv, FAILED) >= n,
                     timeout=3.0 * h.SLOW, what=what)
        time.sleep(QUIET)
        self.assertEqual(count_msg(srv, OK) + count_msg(srv, FAILED), n,
                         "reloads after " + what)

    def test_write_and_rename_over(self):
        with h.TempDir() as tmp:
            path = tmp.script("hook.lua", lua_version(WATCHED, "A"))
            with h.Server(path, "--watch", "--ack", "handled") as srv:
                time.sleep(0.2 * h.SLOW)    # watches are set before 'listening'; be generous
                self.assertEqual(self.version(srv), "A")

                # a plain rewrite in place (truncate + write)
                t_write = time.time()
                with open(path, "w") as f:
                    f.write(lua_version(WATCHED, "B"))
                self.wait_reloads(srv, 1, "a plain write")
                line = srv.find_logs(msg=OK)[-1]
                self.assertEqual(line.get("reason"), WATCH_REASON, line)
                self.assertEqual(line.get("generation"), 2, line)
                # the debounce: no reload sooner than 100 ms after the change (log ts in ms)
                self.assertGreaterEqual(log_time(line), t_write + 0.100 - 0.002,
                                        "reloaded %.3f s after the write"
                                        % (log_time(line) - t_write))
                self.assertEqual(self.version(srv), "B")

                # an editor's save: write a temp file, chmod, rename over the script
                tmpf = tmp.join(".hook.lua.swp")
                with open(tmpf, "w") as f:
                    f.write(lua_version(WATCHED, "C"))
                os.chmod(tmpf, 0o644)
                os.replace(tmpf, path)
                self.wait_reloads(srv, 2, "an atomic rename-over")
                line = srv.find_logs(msg=OK)[-1]
                self.assertEqual(line.get("generation"), 3, line)
                self.assertEqual(self.version(srv), "C")

                # a burst of writes within the debounce: one reload
                for v in ("A", "B", "D"):
                    with open(path, "w") as f:
                        f.write(lua_version(WATCHED, v))
                    time.sleep(0.01)
                self.wait_reloads(srv, 3, "a burst of three writes")
                self.assertEqual(self.version(srv), "D")
                self.assertEqual(reload_counts(srv), (3.0, 0.0, 4.0), "(ok, failed, generation)")

                # a broken save goes through the same path: logged, the old version stays
                with open(path, "w") as f:
                    f.write("local = \n")
                self.wait_reloads(srv, 4, "a broken save")
                self.assertEqual(srv.find_logs(msg=FAILED)[-1].get("generation"), 4)
                self.assertEqual(self.version(srv), "D")

    def test_new_script_in_a_watched_folder(self):
        with h.TempDir() as tmp:
            os.mkdir(tmp.join("hooks"))
            h.write_script(tmp.join("hooks"), "a.lua", 'on("X", function() end)\n')
            with h.Server(tmp.join("hooks"), "--watch") as srv:
                time.sleep(0.2 * h.SLOW)
                h.write_script(tmp.join("hooks"), "b.lua",
                               'on("X", function() end)\non("Y", function() end)\n')
                self.wait_reloads(srv, 1, "a new b.lua")
                line = srv.find_logs(msg=OK)[-1]
                self.assertEqual((line.get("generation"), line.get("handlers")), (2, 3), line)
                r = h.post_event(srv.port, {"action": "X"})
                self.assertEqual(r.json()["handlers"], 2, r)
                # a change to a loaded script of the folder
                h.write_script(tmp.join("hooks"), "a.lua", '-- changed\n')
                self.wait_reloads(srv, 2, "a change to a.lua")
                r = h.post_event(srv.port, {"action": "X"})
                self.assertEqual(r.json()["handlers"], 1, r)

    def test_no_watch_no_reload(self):
        with h.TempDir() as tmp:
            path = tmp.script("hook.lua", lua_version(WATCHED, "A"))
            with h.Server(path, "--ack", "handled") as srv:
                with open(path, "w") as f:
                    f.write(lua_version(WATCHED, "B"))
                time.sleep(QUIET)
                self.assertEqual(count_msg(srv, OK), 0, "reloaded without --watch")
                self.assertEqual(self.version(srv), "A")


# --------------------------------------------------------------------------------------------
# A folder of 50 scripts
# --------------------------------------------------------------------------------------------


class BigFolder(unittest.TestCase):
    def test_reload_time_of_50_scripts(self):
        with h.TempDir() as tmp:
            os.mkdir(tmp.join("hooks"))
            folder = h.lua_source(__file__, "folder.lua")  # its actions named after its file
            for i in range(50):
                h.write_script(tmp.join("hooks"), "s%02d.lua" % i, folder)
            with h.Server(tmp.join("hooks")) as srv:
                line, _ = reload_and_wait(srv)
                self.assertEqual(line.get("msg"), OK, line)
                self.assertEqual(line.get("generation"), 2, line)
                self.assertEqual(line.get("handlers"), 250, line)
                say("reload of 50 scripts (250 handlers): duration_ms=%s" % line["duration_ms"])
                self.assertEqual(reload_counts(srv), (1.0, 0.0, 2.0))
                r = h.post_event(srv.port, {"action": "ALL"})
                self.assertEqual(r.json()["handlers"], 100, r)   # 50 "ALL" + 50 "*"


if __name__ == "__main__":
    h.main()
