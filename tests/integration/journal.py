"""Shared pieces of the journal's tests (issue 12): a seeded random source, the journal
read with sqlite3, waiting until deliveries are handled, the handler side effects of
tests/fixtures/integration/journal/effects.lua, a stream of events posted by several
clients across server restarts, and the check of the at-least-once guarantee.

    rng = journal.seeded("crash")                  # prints the seed
    with journal.Journal(state_dir) as j:
        j.wait_final(timeout)                      # every delivery ok|dead|duplicate|none
        rows = j.deliveries()

Environment:
    LUAHOOK_TEST_SEED  the seed of every seeded() source (default: a fixed one); each test
                       prints the seed it used, so a failure can be run again exactly.
"""

import json
import os
import random
import signal
import sqlite3
import sys
import threading
import time

import harness as h

DB = "luahook.db"
FINAL = ("ok", "dead", "duplicate", "none")
DEFAULT_SEED = 12
# the script of effects.lua as served: its handler ids are SCRIPT#first and SCRIPT#flaky
EFFECTS_SCRIPT = "effects.lua"
EFFECTS_HANDLERS = ("first", "flaky")


# Every attempt as the journal records it: the attempts rows and, for a run whose first
# attempt ended ok (no row of its own since schema 5), the run's row. Columns as in
# attempts, plus delivery_id (the delivery's id string).
ATTEMPTS_SQL = (
    "SELECT a.delivery, a.handler, a.n, a.started, a.ended, a.outcome, a.error, a.traceback,"
    " d.delivery AS delivery_id FROM attempts a JOIN deliveries d ON d.id = a.delivery"
    " UNION ALL"
    " SELECT r.delivery, r.handler, r.attempts, coalesce(r.started, r.updated), r.updated,"
    " 'ok', NULL, NULL, d.delivery FROM runs r JOIN deliveries d ON d.id = r.delivery"
    " WHERE r.state = 'ok' AND NOT EXISTS (SELECT 1 FROM attempts x WHERE"
    " x.delivery = r.delivery AND x.handler = r.handler AND x.n = r.attempts)")


def seeded(what):
    """A random.Random for `what`, seeded from LUAHOOK_TEST_SEED or a fixed seed; the seed is
    printed so that a failure can be repeated."""
    seed = int(os.environ.get("LUAHOOK_TEST_SEED", DEFAULT_SEED))
    sys.stderr.write("%s: seed %d (LUAHOOK_TEST_SEED=%d repeats it)\n" % (what, seed, seed))
    sys.stderr.flush()
    return random.Random("%s:%d" % (what, seed))


# --------------------------------------------------------------------------------------------
# The log (src/jlog.h): the point of durability; the database is its index
# --------------------------------------------------------------------------------------------

LOG_DIR = "journal"
LOG_MAGIC = b"LHJLOG\0\1"
EVENT, END = 1, 2


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC = _crc32c_table()


def crc32c(data, crc=0):
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = (c >> 8) ^ _CRC[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF


def segments(state_dir):
    """The log's segment numbers, ascending."""
    d = os.path.join(state_dir, LOG_DIR)
    if not os.path.isdir(d):
        return []
    return sorted(int(n[:16], 16) for n in os.listdir(d)
                  if len(n) == 20 and n.endswith(".log"))


def segment_path(state_dir, seg):
    return os.path.join(state_dir, LOG_DIR, "%016x.log" % seg)


def read_body(state_dir, body_at, body_len):
    """`body_len` bytes of the log at position `body_at` (seg << 32 | offset)."""
    with open(segment_path(state_dir, body_at >> 32), "rb") as f:
        f.seek(body_at & 0xFFFFFFFF)
        data = f.read(body_len)
    if len(data) != body_len:
        raise AssertionError("the log ends before the body at %#x (%d of %d bytes)"
                             % (body_at, len(data), body_len))
    return data


def log_records(state_dir):
    """Every valid record of the log, in order: dicts of type, meta, body, at. Each segment
    is read up to its first invalid record, as luahook reads it."""
    out = []
    for seg in segments(state_dir):
        with open(segment_path(state_dir, seg), "rb") as f:
            data = f.read()
        if data[:8] != LOG_MAGIC or int.from_bytes(data[8:16], "little") != seg:
            continue
        off = 16
        while off + 16 <= len(data):
            payload, crc, typ, meta = (int.from_bytes(data[off + 4 * i:off + 4 * i + 4], "little")
                                       for i in range(4))
            if typ not in (EVENT, END) or meta > payload or off + 16 + payload > len(data):
                break
            rest = data[off + 16:off + 16 + payload]
            head = (seg.to_bytes(8, "little") + off.to_bytes(4, "little")
                    + typ.to_bytes(4, "little") + meta.to_bytes(4, "little"))
            if crc32c(rest, crc32c(head)) != crc:
                break
            out.append({"type": typ, "meta": rest[:meta], "body": rest[meta:],
                        "at": seg << 32 | off})
            off += (16 + payload + 7) // 8 * 8
    return out


def logged_event_ids(state_dir):
    """The delivery ids of the log's event records (their meta: u64 id, f64 received,
    u8 flags, i64 project, i64 dup_of, [32 digest], then str delivery)."""
    ids = []
    for r in log_records(state_dir):
        if r["type"] != EVENT:
            continue
        m = r["meta"]
        at = 8 + 8 + 1 + 8 + 8 + (32 if m[16] & 2 else 0)
        n = int.from_bytes(m[at:at + 4], "little")
        ids.append(m[at + 4:at + 4 + n].decode())
    return ids


def body_of(state_dir, row):
    """A delivery row's body: in `bodies` once its segment went (column moved_body), else in
    the log at body_at."""
    if row.get("moved_body") is not None:
        return bytes(row["moved_body"])
    return read_body(state_dir, row["body_at"], row["body_len"])


# --------------------------------------------------------------------------------------------
# The journal, read with sqlite3
# --------------------------------------------------------------------------------------------


class Journal:
    """Read-only access to DIR/luahook.db, while the server runs or after it stopped (WAL:
    a reader never blocks the writer). Rows come back as dicts."""

    def __init__(self, state_dir):
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, DB)
        self.db = None

    def __enter__(self):
        return self.open()

    def __exit__(self, *a):
        self.close()

    def open(self):
        if not os.path.exists(self.path):
            raise AssertionError("no journal at %s" % self.path)
        self.db = sqlite3.connect(self.path, timeout=30.0)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA query_only = 1")
        return self

    def close(self):
        if self.db is not None:
            self.db.close()
            self.db = None

    def query(self, sql, *args):
        if self.db is None:
            self.open()
        return [dict(r) for r in self.db.execute(sql, args).fetchall()]

    def scalar(self, sql, *args):
        if self.db is None:
            self.open()
        return self.db.execute(sql, args).fetchone()[0]

    def with_bodies(self, rows):
        for r in rows:
            r["body"] = body_of(self.state_dir, r)
        return rows

    def deliveries(self):
        return self.with_bodies(self.query(
            "SELECT d.*, b.body AS moved_body FROM deliveries d LEFT JOIN bodies b"
            " ON b.id = d.id ORDER BY d.id"))

    def delivery(self, delivery_id):
        """The row of delivery id `delivery_id` (the id luahook answers and logs), or None."""
        rows = self.with_bodies(self.query(
            "SELECT d.*, b.body AS moved_body FROM deliveries d LEFT JOIN bodies b"
            " ON b.id = d.id WHERE d.delivery = ?", delivery_id))
        return rows[0] if rows else None

    def runs(self):
        return self.query("SELECT r.*, d.delivery AS delivery_id FROM runs r "
                          "JOIN deliveries d ON d.id = r.delivery ORDER BY r.delivery, r.handler")

    def attempts(self):
        return self.query("SELECT * FROM (%s) ORDER BY delivery, handler, n" % ATTEMPTS_SQL)

    def unfinished(self):
        """How many deliveries are not final yet (pending, retrying...)."""
        return self.scalar("SELECT count(*) FROM deliveries WHERE status NOT IN (%s)"
                           % ",".join("'%s'" % s for s in FINAL))

    def count(self):
        return self.scalar("SELECT count(*) FROM deliveries")

    def wait_final(self, timeout, at_least=0, what="every delivery final"):
        """Waits until the journal holds at least `at_least` deliveries and none of them is
        unfinished; a server must be running to get there."""
        def done():
            try:
                return self.count() >= at_least and self.unfinished() == 0
            except sqlite3.OperationalError:  # busy during a checkpoint: ask again
                return False
        try:
            h.wait_until(done, timeout=timeout, interval=0.1, what=what)
        except AssertionError as e:
            raise AssertionError("%s\n%d deliveries, unfinished ones and their runs:\n%s"
                                 % (e, self.count(), self.describe_unfinished())) from None

    def describe_unfinished(self, limit=10):
        rows = self.query("SELECT d.delivery, d.status, r.handler, r.state, r.attempts, r.next_at,"
                          " r.error FROM deliveries d LEFT JOIN runs r ON r.delivery = d.id"
                          " WHERE d.status NOT IN (%s) ORDER BY d.id LIMIT ?"
                          % ",".join("'%s'" % s for s in FINAL), limit)
        return "\n".join("  %(delivery)s %(status)s: run %(handler)s %(state)s attempts "
                         "%(attempts)s next_at %(next_at)s error %(error)r" % r for r in rows)


def wait_handled(state_dir, delivery_ids, timeout):
    """Waits until every delivery of `delivery_ids` is in the journal with a final status."""
    ids = list(delivery_ids)

    def done():
        with Journal(state_dir) as j:
            try:
                for i in ids:
                    row = j.delivery(i)
                    if row is None or row["status"] not in FINAL:
                        return False
            except sqlite3.OperationalError:
                return False
        return True
    h.wait_until(done, timeout=timeout, interval=0.1,
                 what="%d deliveries handled" % len(ids))


# --------------------------------------------------------------------------------------------
# Side effects of effects.lua
# --------------------------------------------------------------------------------------------


def effects_env(path):
    """The server environment that makes effects.lua write to `path`."""
    return {"JOURNAL_EFFECTS": path}


def read_effects(path):
    """Every execution effects.lua recorded: {(delivery id, name): {attempt: set of phases}}
    and a list of problems (a line that does not parse, a phase seen twice: two executions
    that were told the same attempt number)."""
    runs, problems = {}, []
    if not os.path.exists(path):
        return runs, problems
    with open(path, "rb") as f:
        data = f.read().decode("utf-8", "replace")
    for line in data.split("\n"):
        if not line:
            continue
        parts = line.split(" ")
        if len(parts) != 4 or parts[0] not in ("start", "done") or not parts[3].isdigit():
            problems.append("unparsable side-effect line %r" % line)
            continue
        phase, did, name, attempt = parts[0], parts[1], parts[2], int(parts[3])
        phases = runs.setdefault((did, name), {}).setdefault(attempt, [])
        if phase in phases:
            problems.append("%s %s: two executions were both told attempt %d (%s twice)"
                            % (did, name, attempt, phase))
        phases.append(phase)
    return runs, problems


_FIXTURE = []


def _annotation_created():
    """The fixture in one line, without its closing brace (members are appended to it)."""
    if not _FIXTURE:
        one_line = json.dumps(h.fixture_json("ANNOTATION_CREATED.json"), separators=(",", ":"))
        _FIXTURE.append(one_line[:-1].encode())
    return _FIXTURE[0]


def event_body(seq, rng, fail_share=0.0, max_sleep_ms=20, pad=0, gate=None):
    """A realistic ANNOTATION_CREATED body (the fixture's) with a member "luahook_test"
    that makes it unique (seq), tells effects.lua how to behave and adds `pad` bytes;
    with `gate` (a path), its handlers end only once that file exists."""
    test = {
        "seq": seq,
        "sleep_ms": rng.randrange(0, max_sleep_ms + 1),
        "fail_first": rng.random() < fail_share,
    }
    if gate:
        test["gate"] = gate
    if pad:
        test["pad"] = rng.randbytes((pad + 1) // 2).hex()[:pad]
    return _annotation_created() + b',"luahook_test":' + json.dumps(test).encode() + b"}"


# --------------------------------------------------------------------------------------------
# A stream of events across restarts
# --------------------------------------------------------------------------------------------


class Stream:
    """Posts events from `clients` threads over keep-alive connections to whatever port
    `port()` names at the time (a server that is restarted gets a new port). Each event is
    posted once, never retried: it ends as answered (status, delivery id) or unanswered
    (the connection failed, e.g. the server was killed). `on_sent(n)` is called (outside
    the stream's lock) after the n-th event was answered or failed."""

    def __init__(self, port, total, rng, clients=3, fail_share=0.0, max_sleep_ms=20,
                 on_sent=None, pad=0):
        self.port = port
        self.total = total
        self.clients = clients
        self.fail_share = fail_share
        self.max_sleep_ms = max_sleep_ms
        self.on_sent = on_sent
        self.lock = threading.Lock()
        # bodies are drawn up front from the seeded source: the stream's content does not
        # depend on thread scheduling
        self.bodies = [event_body(i, rng, fail_share, max_sleep_ms, pad) for i in range(total)]
        self.next = 0
        self.done = 0
        self.answers = {}  # seq -> (status, body dict or None)
        self.unanswered = set()
        self.errors = []
        self.threads = []

    def start(self):
        for _ in range(self.clients):
            t = threading.Thread(target=self._client, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def join(self, timeout):
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise AssertionError("the event stream did not end within %.0f s" % timeout)
        if self.errors:
            raise AssertionError("event stream: %s" % self.errors[0])

    def _take(self):
        with self.lock:
            if self.next >= self.total:
                return None
            self.next += 1
            return self.next - 1

    def _finish(self, seq, answer):
        with self.lock:
            if answer is None:
                self.unanswered.add(seq)
            else:
                self.answers[seq] = answer
            self.done += 1
            done = self.done
        if self.on_sent is not None:  # outside the lock: it may wait on the caller's
            self.on_sent(done)

    def _connect(self):
        # the server may be restarting: wait for the port to answer
        deadline = time.monotonic() + 60.0 * h.SLOW
        while True:
            port = self.port()
            try:
                if port:
                    return h.Conn(port, timeout=30.0 * h.SLOW)
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("no server to post to for 60 s")
            time.sleep(0.01)

    def _client(self):
        conn = None
        try:
            while True:
                seq = self._take()
                if seq is None:
                    break
                if conn is None:
                    conn = self._connect()
                try:
                    r = conn.request("POST", "/", self.bodies[seq])
                except (OSError, h.ConnectionClosed, AssertionError):
                    # killed before or while answering: this event's fate is unknown to
                    # the sender (the journal may hold it, or not)
                    conn.close()
                    conn = None
                    self._finish(seq, None)
                    continue
                try:
                    answer = json.loads(r.body)
                except ValueError:
                    answer = None
                self._finish(seq, (r.status, answer))
        except Exception as e:  # noqa: BLE001 - reported by join()
            self.errors.append(repr(e))
        finally:
            if conn is not None:
                conn.close()

    def accepted(self):
        """{delivery id: seq} of every event answered 200."""
        with self.lock:
            return {a["id"]: seq for seq, (st, a) in self.answers.items()
                    if st == 200 and isinstance(a, dict)}

    def statuses(self):
        """{HTTP status: how many events got it}, so far."""
        out = {}
        with self.lock:
            for st, _ in self.answers.values():
                out[st] = out.get(st, 0) + 1
        return out


# --------------------------------------------------------------------------------------------
# The guarantee
# --------------------------------------------------------------------------------------------


def check_at_least_once(state_dir, effects_path, sent_bodies, accepted, handlers=None):
    """Compares the journal (server stopped) with what was sent and what the handlers did.

    sent_bodies: [body bytes] by seq; accepted: {delivery id: seq} of the events answered
    200. Returns (figures, problems): problems is empty when
      - every event answered 200 is a delivery whose body is the exact bytes sent;
      - every delivery (answered or not) is 'ok' with its finished time, each handler's
        run 'ok';
      - each run's attempts: exactly one 'ok', the last, and runs.attempts is its number;
      - each execution seen (effects.lua) belongs to a recorded attempt, no two executions
        got the same attempt number, none came after the committed 'ok' one, and the 'ok'
        attempt's execution ran to its end.
    """
    handlers = handlers or ["%s#%s" % (EFFECTS_SCRIPT, n) for n in EFFECTS_HANDLERS]
    problems = []
    seen_runs, effect_problems = read_effects(effects_path)
    problems += effect_problems
    with Journal(state_dir) as j:
        deliveries = j.deliveries()
        runs = j.runs()
        attempts = j.attempts()
    by_id = {d["delivery"]: d for d in deliveries}
    seq_of = {}
    for d in deliveries:
        try:
            seq_of[d["delivery"]] = json.loads(d["body"])["luahook_test"]["seq"]
        except (ValueError, KeyError, TypeError):
            problems.append("delivery %s: a body this test did not send" % d["delivery"])

    for did, seq in sorted(accepted.items(), key=lambda kv: kv[1]):
        d = by_id.get(did)
        if d is None:
            problems.append("event %d answered 200 as %s is not in the journal" % (seq, did))
        elif bytes(d["body"]) != sent_bodies[seq]:
            problems.append("delivery %s: the stored body differs from event %d's bytes"
                            % (did, seq))
    for d in deliveries:
        if d["status"] != "ok":
            problems.append("delivery %s (event %s) ended %r, not 'ok'"
                            % (d["delivery"], seq_of.get(d["delivery"]), d["status"]))
        elif d["finished"] is None or d["finished"] < d["received"]:
            problems.append("delivery %s is ok but its finished time is %r (received %r)"
                            % (d["delivery"], d["finished"], d["received"]))

    run_rows = {(r["delivery_id"], r["handler"]): r for r in runs}
    tries = {}
    for a in attempts:
        tries.setdefault((a["delivery_id"], a["handler"]), []).append(a)
    executions = repeats = max_attempt = completed_again = 0
    outcomes = {}
    for a in attempts:
        outcomes[a["outcome"]] = outcomes.get(a["outcome"], 0) + 1
    for d in deliveries:
        did = d["delivery"]
        for hid in handlers:
            name = hid.split("#", 1)[1]
            run = run_rows.get((did, hid))
            if run is None:
                problems.append("delivery %s has no run of %s" % (did, hid))
                continue
            rows = tries.get((did, hid), [])
            oks = [a["n"] for a in rows if a["outcome"] == "ok"]
            last = max((a["n"] for a in rows), default=0)
            if run["state"] != "ok":
                problems.append("run %s %s ended %r" % (did, hid, run["state"]))
            seen = seen_runs.pop((did, name), {})
            if len(oks) > 1:
                problems.append("run %s %s: %d attempts ended ok (attempts %s): a run whose "
                                "completion was committed ran again"
                                % (did, hid, len(oks), [(a["n"], a["outcome"]) for a in rows]))
            elif not oks:
                problems.append("run %s %s: no attempt ended ok (attempts %s, executions seen %s)"
                                % (did, hid, [(a["n"], a["outcome"]) for a in rows],
                                   {n: "+".join(ph) for n, ph in sorted(seen.items())}))
            ok_n = oks[0] if oks else None
            if ok_n is not None and last > ok_n:
                problems.append("run %s %s: attempt %d recorded after attempt %d ended ok"
                                % (did, hid, last, ok_n))
            if ok_n is not None and run["attempts"] != ok_n:
                problems.append("run %s %s: runs.attempts %d but attempt %d ended ok"
                                % (did, hid, run["attempts"], ok_n))
            executions += len(seen)
            max_attempt = max([max_attempt] + list(seen))
            if len(seen) > 1:
                repeats += 1
            recorded = {a["n"] for a in rows}
            for n in sorted(seen):
                if n not in recorded:
                    problems.append("run %s %s: an execution told attempt %d has no attempt "
                                    "row (recorded: %s)" % (did, hid, n, sorted(recorded)))
                if ok_n is not None and n > ok_n:
                    problems.append("run %s %s: executed as attempt %d after attempt %d's "
                                    "completion was committed" % (did, hid, n, ok_n))
            # an execution that ran to its end but whose end was not committed (a kill
            # between the two): the one repeat the guarantee allows
            outcome_of = {a["n"]: a["outcome"] for a in rows}
            completed_again += sum(1 for n, ph in seen.items()
                                   if "done" in ph and outcome_of.get(n) not in ("ok", "error"))
            if ok_n is not None and "done" not in seen.get(ok_n, []):
                problems.append("run %s %s: attempt %d is recorded ok but its execution "
                                "never ended (phases %s)" % (did, hid, ok_n, seen.get(ok_n)))
    for (did, name), seen in sorted(seen_runs.items()):
        problems.append("handler %s ran for %s (attempts %s), which is not in the journal"
                        % (name, did, sorted(seen)))
    figures = {
        "deliveries": len(deliveries),
        "accepted": len(accepted),
        "executions": executions,
        "runs executed more than once": repeats,
        "attempts by outcome": dict(sorted(outcomes.items(), key=lambda kv: str(kv[0]))),
        "repeats observed": completed_again,
        "highest attempt": max_attempt,
    }
    return figures, problems


def format_problems(problems, limit=40):
    text = "\n".join("  " + p for p in problems[:limit])
    if len(problems) > limit:
        text += "\n  ... and %d more" % (len(problems) - limit)
    return text


# --------------------------------------------------------------------------------------------
# kill -9 during a stream of events
# --------------------------------------------------------------------------------------------


def crash_campaign(kills, events, what="crash", args=(), clients=3, fail_share=0.1,
                   max_sleep_ms=20, how="kill", out=sys.stderr):
    """Streams kills * events events at a server serving effects.lua on one --state-dir and
    kills it with SIGKILL once in each run of `events` events, at a random point of it (a
    random event count, then a random few milliseconds), restarting it at once each time.
    how="term": stopped with SIGTERM instead (and must exit 0); how="hup": sent SIGHUP (a
    reload) and not restarted.
    When the stream has ended, the last server handles what is left and stops (SIGTERM,
    exit 0), then check_at_least_once compares the journal with the stream and the side
    effects. Returns (figures, problems)."""
    rng = seeded(what)
    t0 = time.monotonic()
    total = kills * events
    targets = [k * events + rng.randrange(1, events + 1) for k in range(kills)]
    delays = [rng.uniform(0.0, 0.02) for _ in range(kills)]
    with h.TempDir() as td:
        state = td.join("state")
        effects = td.join("effects.log")
        script = td.fixture("journal", EFFECTS_SCRIPT)
        servers = []
        current = {"port": None}
        reached = threading.Condition()

        def start():
            srv = h.Server(script, "--state-dir", state, *args, env=effects_env(effects))
            servers.append(srv)
            srv.start()
            current["port"] = srv.port
            return srv

        def sent(n):
            with reached:
                reached.notify_all()

        stream = Stream(lambda: current["port"], total, rng, clients, fail_share, max_sleep_ms,
                        on_sent=sent)
        srv = start()
        try:
            stream.start()
            for k, target in enumerate(targets):
                with reached:
                    ok = reached.wait_for(lambda: stream.done >= target or stream.errors,
                                          timeout=300.0 * h.SLOW)
                if not ok or stream.errors:
                    raise AssertionError("the stream stalled before event %d: %s"
                                         % (target, stream.errors))
                time.sleep(delays[k])
                if how == "hup":
                    srv.proc.send_signal(signal.SIGHUP)
                    continue
                current["port"] = None
                if how == "term":
                    srv.stop(check=True)
                else:
                    srv.kill()  # SIGKILL: no shutdown, no final commit
                srv = start()
            stream.join(timeout=300.0 * h.SLOW + total * 0.05)
            accepted = stream.accepted()
            with Journal(state) as j:
                j.wait_final(timeout=120.0 * h.SLOW + total * 0.01, at_least=len(accepted),
                             what="every delivery handled after the last restart")
            srv.stop(check=True)
        except BaseException:
            for s in servers:
                s.kill()
            out.write("---- last server's stderr ----\n%s\n" % srv.stderr_text()[-8000:])
            raise
        figures, problems = check_at_least_once(state, effects, stream.bodies, accepted)
        statuses = stream.statuses()
        if how == "hup":
            figures["reloads"] = len(srv.find_logs(msg="reloaded"))
        figures.update({
            "events": total,
            {"kill": "kills", "term": "stops", "hup": "reloads asked"}[how]: kills,
            "answered 200": statuses.get(200, 0),
            "answered otherwise": sum(v for k, v in statuses.items() if k != 200),
            "unanswered": len(stream.unanswered),
            "problems": len(problems),
            "seconds": round(time.monotonic() - t0, 1),
        })
        if problems:
            out.write("---- last server's stderr ----\n%s\n" % srv.stderr_text()[-8000:])
        return figures, problems
