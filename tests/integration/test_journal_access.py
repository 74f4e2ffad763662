"""Seeing and replaying deliveries: `luahook events` (list, filters, --json, show with the
project's secrets masked, a body that is not JSON), `luahook replay` (failed runs, --all,
--dead with --since and --handler, unknown ids queue nothing), with the server stopped and
running; the HTTP API under /-/api/ (list with paging, show, stats, replay; the token;
a server without --token or without --state-dir); and /-/ never an event. Journals are
seeded with journal_seed.py in the contract's shape."""

import json
import os
import sqlite3
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import journal_seed as js  # noqa: E402

LOG = h.lua_path(__file__, "log.lua")
TOKEN = "s3cret-api"
AUTH = {"Authorization": "Token " + TOKEN}


def cli(*args, ok=True):
    r = h.run_luahook(*args)
    if ok:
        assert r.returncode == 0, (args, r.returncode, r.stderr.decode())
    return r


def events(d, *args, ok=True):
    return cli("events", "--state-dir", d, *args, ok=ok)


def ids_of(out):
    """The ID column of `luahook events`' table."""
    lines = out.decode().splitlines()
    assert lines[0].split()[0] == "ID", lines
    return [int(line.split()[0]) for line in lines[1:]]


def runs(db, delivery_id):
    con = sqlite3.connect(db)
    try:
        return {r[0]: r[1:] for r in con.execute(
            "SELECT handler, state, next_at, attempts FROM runs WHERE delivery = ?",
            (delivery_id,))}
    finally:
        con.close()


def taken_up(db, delivery_id, handler, attempts_before):
    """Waits until a running server took a replayed run up and ended that attempt."""
    def ended():
        state, _, attempts = runs(db, delivery_id)[handler]
        return attempts > attempts_before and state not in ("pending", "running")
    h.wait_until(ended, what="the server to take up the replayed run of %s" % handler)
    return runs(db, delivery_id)[handler]


def status(db, delivery_id):
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT status, finished FROM deliveries WHERE id = ?",
                           (delivery_id,)).fetchone()
    finally:
        con.close()


def count_deliveries(db):
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT count(*) FROM deliveries").fetchone()[0]
    finally:
        con.close()


class Seeded:
    """A state folder with a journal of known content (ids 1..6)."""

    def __init__(self, td):
        self.dir = td.join("state")
        self.db = js.create(self.dir, LOG)
        j = js.Journal(self.db)
        old = time.time() - 3 * 3600
        self.old = j.add(action="PROJECT_UPDATED", received=old)                        # 1
        self.dead = j.add(status="dead", runs=(("notify.lua#1", "dead", 3),
                                               ("audit.lua#1", "ok", 1)),
                          error="slack: 503", traceback="stack traceback:\n\tnotify.lua:4")  # 2
        self.retrying = j.add(action="TASKS_CREATED", status="retrying",
                              runs=(("notify.lua#1", "retrying", 2),))                   # 3
        self.text = j.add(body=b"plain \x01text\xff, no JSON")                            # 4
        self.dup = j.add(status="duplicate", runs=(), duplicate_of=4)                    # 5
        self.dead2 = j.add(action="TASKS_CREATED", status="dead",
                           runs=(("other.lua#1", "dead", 1),))                           # 6
        j.close()


class Cli(unittest.TestCase):
    def test_list_and_filters(self):
        with h.TempDir() as td:
            s = Seeded(td)
            d = s.dir
            self.assertEqual(ids_of(events(d).stdout), [6, 5, 4, 3, 2, 1])  # newest first
            self.assertEqual(ids_of(events(d, "--status", "dead").stdout), [6, 2])
            self.assertEqual(ids_of(events(d, "--status", "duplicate").stdout), [5])
            self.assertEqual(ids_of(events(d, "--action", "TASKS_CREATED").stdout), [6, 3])
            self.assertEqual(ids_of(events(d, "--handler", "other.lua#1").stdout), [6])
            self.assertEqual(ids_of(events(d, "--handler", "audit.lua#1").stdout), [2])
            self.assertEqual(ids_of(events(d, "--since", "1h").stdout), [6, 5, 4, 3, 2])
            self.assertEqual(ids_of(events(d, "--since", "4h").stdout), [6, 5, 4, 3, 2, 1])
            # paging: --limit, then --before the last id shown
            r = events(d, "--limit", "4")
            self.assertEqual(ids_of(r.stdout), [6, 5, 4, 3])
            self.assertIn("--before", r.stderr.decode())
            r = events(d, "--limit", "4", "--before", "3")
            self.assertEqual(ids_of(r.stdout), [2, 1])
            self.assertEqual(r.stderr, b"")
            # the environment's folder, and the table's columns
            env_r = h.run_luahook("events", "--status=retrying", env={"LUAHOOK_STATE_DIR": d})
            self.assertEqual(env_r.returncode, 0, env_r.stderr)
            row = env_r.stdout.decode().splitlines()[1].split()
            self.assertEqual(row[:2], ["3", s.retrying[1]])
            self.assertIn("retrying", row)
            self.assertIn("TASKS_CREATED", row)

    def test_json_lines(self):
        with h.TempDir() as td:
            s = Seeded(td)
            lines = events(s.dir, "--json").stdout.decode().splitlines()
            objs = [json.loads(x) for x in lines]
            self.assertEqual([o["id"] for o in objs], [6, 5, 4, 3, 2, 1])
            dead = objs[4]
            self.assertEqual((dead["delivery"], dead["status"], dead["handlers"], dead["failed"],
                              dead["attempts"], dead["project"], dead["action"]),
                             (s.dead[1], "dead", 2, 1, 4, 7, "ANNOTATION_CREATED"))
            self.assertIsInstance(dead["finished"], float)
            self.assertEqual(objs[1]["duplicate_of"], 4)
            self.assertIsNone(objs[3]["finished"])  # retrying: not final
            body = js.body_for("ANNOTATION_CREATED")
            self.assertEqual(dead["body_bytes"], len(body))

    def test_show_masks_secrets(self):
        with h.TempDir() as td:
            s = Seeded(td)
            for key in (s.dead[1], str(s.dead[0])):  # the delivery id, or the number
                r = events(s.dir, "show", key)
                out = r.stdout.decode()
                self.assertNotIn(js.SECRET_TOKEN, out)
                self.assertNotIn(js.SECRET_PASSWORD, out)
                self.assertIn('"token": "***"', out)
                self.assertIn('"task_data_password": "***"', out)
                self.assertIn("4611686018427387905", out)  # big integers exact
                self.assertIn("delivery  %s (id 2)" % s.dead[1], out)
                self.assertIn("notify.lua#1: dead, 3 attempts", out)
                self.assertIn("audit.lua#1: ok, 1 attempt", out)
                self.assertEqual(out.count("attempt "), 4)
                self.assertIn("slack: 503", out)
                self.assertIn("notify.lua:4", out)  # the traceback
            r = events(s.dir, "show", s.dead[1], "--json")
            obj = json.loads(r.stdout)
            self.assertNotIn(js.SECRET_TOKEN.encode(), r.stdout)
            self.assertEqual(obj["body"]["project"]["token"], "***")
            self.assertEqual(obj["body"]["project"]["task_data_password"], "***")
            self.assertEqual(obj["body"]["project"]["label_config_hash"], 2 ** 62 + 1)
            self.assertEqual(obj["headers"], {"content-type": "application/json"})
            notify = [x for x in obj["runs"] if x["handler"] == "notify.lua#1"][0]
            self.assertEqual([a["n"] for a in notify["history"]], [1, 2, 3])
            self.assertEqual(notify["history"][0]["error"], "slack: 503")
            self.assertEqual(notify["traceback"], "stack traceback:\n\tnotify.lua:4")

    def test_served_event(self):
        """An event the server took: listed with its action and project, its stored headers
        (never the secret's), its secrets masked in show."""
        with h.TempDir() as td:
            d = td.join("state")
            with h.Server(LOG, "--state-dir", d, "--token", TOKEN) as srv:
                body = js.body_for("PROJECT_UPDATED", project=42)
                r = h.post_event(srv.port, body, path="/ls",
                                 headers=dict(AUTH, **{"X-Trace": "t-1"}))
                rid = r.json()["id"]
                srv.wait_log(lambda e: e.get("msg") == "handled", what="the handler")
            objs = [json.loads(x) for x in events(d, "--json").stdout.decode().splitlines()]
            self.assertEqual([(o["delivery"], o["action"], o["project"], o["path"], o["status"])
                              for o in objs], [(rid, "PROJECT_UPDATED", 42, "/ls", "ok")])
            out = events(d, "show", rid).stdout
            self.assertNotIn(js.SECRET_TOKEN.encode(), out)
            self.assertNotIn(js.SECRET_PASSWORD.encode(), out)
            self.assertNotIn(TOKEN.encode(), out)  # the Authorization header is not stored
            self.assertIn(b'"x-trace": "t-1"', out)
            self.assertIn(b"log.lua#1: ok, 1 attempt", out)

    def test_show_body_not_json(self):
        with h.TempDir() as td:
            s = Seeded(td)
            r = events(s.dir, "show", str(s.text[0]))
            out = r.stdout.decode()  # valid UTF-8: no raw byte reaches the terminal
            self.assertIn("not JSON", out)
            self.assertIn('"plain \\u0001text\\ufffd, no JSON"', out)
            obj = json.loads(events(s.dir, "show", str(s.text[0]), "--json").stdout)
            self.assertIsNone(obj["body"])
            self.assertEqual(obj["body_text"], "plain \x01text\ufffd, no JSON")
            # cut short: the secrets are masked by their look
            j = js.Journal(s.db)
            cut = j.add(body=js.body_for("X")[:-10])
            j.close()
            for args in ((), ("--json",)):
                out = events(s.dir, "show", cut[1], *args).stdout
                self.assertNotIn(js.SECRET_TOKEN.encode(), out)
                self.assertNotIn(js.SECRET_PASSWORD.encode(), out)
                self.assertIn(b'\\"token\\": \\"***\\"', out)

    def test_errors(self):
        with h.TempDir() as td:
            s = Seeded(td)
            r = events(s.dir, "show", "nope", ok=False)
            self.assertEqual(r.returncode, 1)
            self.assertIn("no such delivery: nope", r.stderr.decode())
            for args, words in [
                (("--status", "fine"), "--status fine: expected"),
                (("--since", "yesterday"), "--since yesterday: expected"),
                (("--limit", "0"), "--limit 0"),
                (("--limit", "5000"), "--limit 5000"),
                (("--bogus",), "unknown option '--bogus'"),
                (("show",), "show takes one delivery id"),
                (("stray",), "unexpected 'stray'"),
            ]:
                r = events(s.dir, *args, ok=False)
                self.assertEqual(r.returncode, 2, args)
                self.assertIn(words, r.stderr.decode())
            r = cli("events", ok=False)
            self.assertEqual(r.returncode, 2)
            self.assertIn("--state-dir", r.stderr.decode())
            r = cli("events", "--state-dir", td.join("none"), ok=False)
            self.assertEqual(r.returncode, 2)
            self.assertIn("luahook.db does not exist", r.stderr.decode())
            self.assertFalse(os.path.exists(td.join("none")))  # nothing created
            self.assertIn(b"luahook events", cli("events", "--help").stdout)


class Replay(unittest.TestCase):
    def test_failed_runs_by_default(self):
        with h.TempDir() as td:
            s = Seeded(td)
            before = time.time()
            r = cli("replay", "--state-dir", s.dir, s.dead[1], str(s.retrying[0]))
            out = r.stdout.decode()
            self.assertIn("queued 2 runs", out)
            self.assertIn("%s  notify.lua#1" % s.dead[1], out)
            self.assertIn("%s  notify.lua#1" % s.retrying[1], out)
            after = time.time()
            got = runs(s.db, 2)
            self.assertEqual(got["notify.lua#1"][0], "pending")
            self.assertTrue(before - 1 <= got["notify.lua#1"][1] <= after + 1)
            self.assertEqual(got["notify.lua#1"][2], 3)  # attempts kept: ctx.attempt goes on
            self.assertEqual(got["audit.lua#1"][0], "ok")  # the run that succeeded is left
            self.assertEqual(status(s.db, 2), ("pending", None))
            self.assertEqual(runs(s.db, 3)["notify.lua#1"][0], "pending")
            # nothing failed any more: nothing queued, said so
            r = cli("replay", "--state-dir", s.dir, s.dead[1])
            self.assertIn("nothing queued", r.stdout.decode())
            # --all: every run
            r = cli("replay", "--state-dir", s.dir, "--all", "--json", str(s.old[0]))
            self.assertEqual(json.loads(r.stdout)["queued"], 1)
            self.assertEqual(runs(s.db, 1)["notify.lua#1"][0], "pending")

    def test_unknown_ids_queue_nothing(self):
        with h.TempDir() as td:
            s = Seeded(td)
            r = cli("replay", "--state-dir", s.dir, s.dead[1], "ffff0000", "999", ok=False)
            self.assertEqual(r.returncode, 1)
            err = r.stderr.decode()
            self.assertIn("ffff0000", err)
            self.assertIn("999", err)
            self.assertIn("nothing was queued", err)
            self.assertEqual(runs(s.db, 2)["notify.lua#1"][0], "dead")
            self.assertEqual(status(s.db, 2)[0], "dead")

    def test_dead_since_handler(self):
        with h.TempDir() as td:
            s = Seeded(td)
            r = cli("replay", "--state-dir", s.dir, "--dead", "--handler", "other.lua#1",
                    "--json")
            res = json.loads(r.stdout)
            self.assertEqual(res["queued"], 1)
            self.assertEqual(res["deliveries"], [{"id": 6, "delivery": s.dead2[1],
                                                  "handlers": ["other.lua#1"]}])
            self.assertEqual(runs(s.db, 2)["notify.lua#1"][0], "dead")
            r = cli("replay", "--state-dir", s.dir, "--dead", "--since", "2026-01-01")
            self.assertIn("queued 1 run", r.stdout.decode())
            self.assertEqual(runs(s.db, 2)["notify.lua#1"][0], "pending")
            self.assertEqual(runs(s.db, 3)["notify.lua#1"][0], "retrying")  # not dead: left
            for args, words in [((), "give delivery ids, or --dead"),
                                (("--dead", "1"), "not both"),
                                (("--since", "1h", "1"), "--since goes with --dead"),
                                (("--dead", "--all"), "--all goes with")]:
                r = cli("replay", "--state-dir", s.dir, *args, ok=False)
                self.assertEqual(r.returncode, 2, args)
                self.assertIn(words, r.stderr.decode())

    def test_server_running(self):
        """The CLI beside a running server (WAL): reads and a replay's write both work."""
        with h.TempDir() as td:
            s = Seeded(td)
            with h.Server(LOG, "--state-dir", s.dir, "--token", TOKEN) as srv:
                self.assertEqual(ids_of(events(s.dir).stdout), [6, 5, 4, 3, 2, 1])
                cli("replay", "--state-dir", s.dir, str(s.dead2[0]))
                # the server took it up (its handler is gone: dead again, and says why)
                self.assertEqual(taken_up(s.db, 6, "other.lua#1", 1)[0], "dead")
                res = h.request(srv.port, "GET", "/-/api/events/6", headers=AUTH).json()
                run = res["event"]["runs"][0]
                self.assertEqual((run["handler"], len(run["history"])), ("other.lua#1", 2))
                self.assertIn("no longer exists", run["history"][1]["error"])


class ReplayRuns(unittest.TestCase):
    """A run dead while its downstream is away, replayed once it is back, succeeds: with the
    server running (CLI and API) and stopped (at its next start)."""

    def setUp(self):
        self.td = h.TempDir().__enter__()
        self.flag = self.td.join("outage")
        open(self.flag, "w").close()
        self.script = h.lua_path(__file__, "flaky.lua")
        self.dir = self.td.join("state")
        self.db = os.path.join(self.dir, "luahook.db")

    def tearDown(self):
        self.td.__exit__(None, None, None)

    def server(self):
        return h.Server(self.script, "--state-dir", self.dir, "--token", TOKEN, "--retries", "0",
                        env={"FLAG_FILE": self.flag})

    def dead_event(self, srv):
        rid = h.post_event(srv.port, {"action": "FLAKY"}, headers=AUTH).json()["id"]
        h.wait_until(lambda: (status(self.db, 1) or ("",))[0] == "dead" and
                     json.loads(events(self.dir, "--json", "--status", "dead").stdout)[
                         "delivery"] == rid,
                     what="the event's run to be dead")
        return rid

    def check_ok(self, rid):
        self.assertEqual(status(self.db, 1)[0], "ok")
        obj = json.loads(events(self.dir, "show", rid, "--json").stdout)
        run = obj["runs"][0]
        self.assertEqual((run["handler"], run["state"], run["attempts"]),
                         ("flaky.lua#1", "ok", 2))
        self.assertEqual([a["outcome"] for a in run["history"]][1], "ok")
        self.assertIn("downstream away", run["history"][0]["error"])

    def test_running_cli(self):
        with self.server() as srv:
            rid = self.dead_event(srv)
            os.unlink(self.flag)  # the downstream is back
            start = srv.log_count()
            out = cli("replay", "--state-dir", self.dir, rid).stdout.decode()
            self.assertIn("queued 1 run", out)
            line = srv.wait_log(lambda e: e.get("msg") == "flaky ok", start=start,
                                what="the replayed run")
            self.assertEqual(line["attempt"], 2)
            h.wait_until(lambda: status(self.db, 1)[0] == "ok", what="the delivery ok")
        self.check_ok(rid)

    def test_running_api(self):
        with self.server() as srv:
            rid = self.dead_event(srv)
            os.unlink(self.flag)
            r = h.request(srv.port, "POST", "/-/api/replay?dead=1", headers=AUTH)
            self.assertEqual(r.json()["queued"], 1)
            h.wait_until(lambda: status(self.db, 1)[0] == "ok", what="the delivery ok")
            self.assertEqual(len(srv.find_logs(msg="flaky ok")), 1)
        self.check_ok(rid)

    def test_stopped(self):
        with self.server() as srv:
            rid = self.dead_event(srv)
        os.unlink(self.flag)
        cli("replay", "--state-dir", self.dir, "--dead")
        self.assertEqual(runs(self.db, 1)["flaky.lua#1"][0], "pending")
        with self.server() as srv:
            srv.wait_log(lambda e: e.get("msg") == "flaky ok", what="the replayed run at start")
            h.wait_until(lambda: status(self.db, 1)[0] == "ok", what="the delivery ok")
        self.check_ok(rid)


class Api(unittest.TestCase):
    def get(self, srv, path, headers=AUTH):
        return h.request(srv.port, "GET", path, headers=headers)

    def test_list_show_stats_replay(self):
        with h.TempDir() as td:
            s = Seeded(td)
            with h.Server(LOG, "--state-dir", s.dir, "--token", TOKEN) as srv:
                r = self.get(srv, "/-/api/events?limit=4")
                self.assertEqual(r.status, 200)
                self.assertEqual(r.header("content-type"), "application/json")
                page = r.json()
                self.assertEqual([e["id"] for e in page["events"]], [6, 5, 4, 3])
                self.assertEqual(page["next"], 3)
                page = self.get(srv, "/-/api/events?limit=4&before=3").json()
                self.assertEqual([e["id"] for e in page["events"]], [2, 1])
                self.assertIsNone(page["next"])
                page = self.get(srv, "/-/api/events?status=dead&action=TASKS_CREATED").json()
                self.assertEqual([e["id"] for e in page["events"]], [6])
                page = self.get(srv, "/-/api/events?handler=notify.lua%231&since=1h").json()
                self.assertEqual([e["id"] for e in page["events"]], [4, 3, 2])

                r = self.get(srv, "/-/api/events/" + s.dead[1])
                self.assertEqual(r.status, 200)
                self.assertNotIn(js.SECRET_TOKEN.encode(), r.body)
                self.assertNotIn(js.SECRET_PASSWORD.encode(), r.body)
                ev = r.json()["event"]
                self.assertEqual(ev["body"]["project"]["token"], "***")
                self.assertEqual(len(ev["runs"]), 2)
                r = self.get(srv, "/-/api/events/0123")
                self.assertEqual((r.status, r.json()["error"]), (404, "no such delivery: 0123"))

                st = self.get(srv, "/-/api/stats").json()["stats"]
                self.assertEqual(st["deliveries"], {"total": 6, "pending": 0, "ok": 2,
                                                    "retrying": 1, "dead": 2, "duplicate": 1,
                                                    "none": 0})
                self.assertEqual(st["runs"], {"pending": 0, "running": 0, "ok": 3,
                                              "retrying": 1, "dead": 2})
                by = {x["handler"]: x for x in st["handlers"]}
                self.assertEqual(by, {  # the handlers with runs not ok, and how many
                    "notify.lua#1": {"handler": "notify.lua#1", "pending": 0, "running": 0,
                                     "retrying": 1, "dead": 1},
                    "other.lua#1": {"handler": "other.lua#1", "pending": 0, "running": 0,
                                    "retrying": 0, "dead": 1}})
                self.assertIsInstance(st["oldest_due"], float)  # the retrying run's

                r = h.request(srv.port, "POST", "/-/api/replay?id=%s&id=nope" % s.dead[1],
                              headers=AUTH)
                self.assertEqual(r.status, 404)
                self.assertEqual(r.json()["unknown"], ["nope"])
                self.assertEqual(runs(s.db, 2)["notify.lua#1"][0], "dead")
                r = h.request(srv.port, "POST", "/-/api/replay?id=" + s.dead[1], headers=AUTH)
                self.assertEqual(r.status, 200)
                self.assertEqual(r.json(), {"ok": True, "queued": 1, "deliveries": [
                    {"id": 2, "delivery": s.dead[1], "handlers": ["notify.lua#1"]}]})
                taken_up(s.db, 2, "notify.lua#1", 3)
                r = h.request(srv.port, "POST", "/-/api/replay?dead=1&handler=other.lua%231",
                              headers=AUTH)
                self.assertEqual(r.json()["queued"], 1)
                taken_up(s.db, 6, "other.lua#1", 1)

                for method, path, code in [
                    ("GET", "/-/api/events?status=fine", 400),
                    ("GET", "/-/api/events?limit=0", 400),
                    ("GET", "/-/api/events?color=red", 400),
                    ("GET", "/-/api/events?action=%zz", 400),
                    ("POST", "/-/api/replay", 400),
                    ("POST", "/-/api/replay?id=1&dead=1", 400),
                    ("POST", "/-/api/events", 405),
                    ("GET", "/-/api/replay", 405),
                    ("GET", "/-/api/nothing", 404),
                ]:
                    r = h.request(srv.port, method, path, headers=AUTH)
                    self.assertEqual(r.status, code, (method, path, r.body))
                    self.assertFalse(r.json()["ok"])

    def test_concurrent_requests(self):
        """Queries wait their turn (one at a time on the pool): 40 at once all get their own
        answer, on fresh and on keep-alive connections, and events are served meanwhile."""
        import threading
        with h.TempDir() as td:
            s = Seeded(td)
            with h.Server(LOG, "--state-dir", s.dir, "--token", TOKEN) as srv:
                results, errors = {}, []

                def client(k):
                    try:
                        with h.Conn(srv.port) as c:
                            for path in ("/-/api/events/%d" % (k % 6 + 1), "/-/api/stats"):
                                r = c.request("GET", path, headers=AUTH)
                                results[(k, path)] = (r.status, r.json())
                    except Exception as e:  # reported below
                        errors.append(e)
                threads = [threading.Thread(target=client, args=(k,)) for k in range(40)]
                for t in threads:
                    t.start()
                r = h.post_event(srv.port, {"action": "X"}, headers=AUTH)
                self.assertEqual(r.status, 200)
                for t in threads:
                    t.join()
                self.assertEqual(errors, [])
                for k in range(40):
                    status_, body = results[(k, "/-/api/events/%d" % (k % 6 + 1))]
                    self.assertEqual((status_, body["event"]["id"]), (200, k % 6 + 1))
                    self.assertEqual(results[(k, "/-/api/stats")][0], 200)

    def test_stop_with_queries_waiting(self):
        """SIGTERM while queries run and wait: the server ends cleanly (exit 0, and under
        the sanitizers nothing leaked or used after its free)."""
        with h.TempDir() as td:
            s = Seeded(td)
            srv = h.Server(LOG, "--state-dir", s.dir, "--token", TOKEN).start()
            conns = []
            try:
                for k in range(20):
                    c = h.Conn(srv.port)
                    c.send(h.build_request("GET", "/-/api/stats", headers=AUTH))
                    conns.append(c)
                first = conns[0].read_response()
                self.assertEqual(first.status, 200)
            finally:
                srv.stop()  # asserts exit 0
                for c in conns:
                    c.close()

    def test_token_required(self):
        with h.TempDir() as td:
            s = Seeded(td)
            with h.Server(LOG, "--state-dir", s.dir, "--token", TOKEN) as srv:
                self.assertEqual(srv.find_logs(msg="listening")[0]["api"], "/-/api/")
                for headers in ({}, {"Authorization": "Token wrong"}):
                    for path in ("/-/api/events", "/-/api/stats", "/-/api/nothing"):
                        r = self.get(srv, path, headers=headers)
                        self.assertEqual(r.status, 401, (path, headers))
                        self.assertNotIn(b"events", r.body)
                r = h.request(srv.port, "POST", "/-/api/replay?dead=1", headers={})
                self.assertEqual(r.status, 401)
                self.assertEqual(runs(s.db, 2)["notify.lua#1"][0], "dead")
                self.assertEqual(self.get(srv, "/-/api/events",
                                          headers={"Authorization": "Bearer " + TOKEN}).status,
                                 200)

    def test_no_token_no_api(self):
        with h.TempDir() as td:
            s = Seeded(td)
            with h.Server(LOG, "--state-dir", s.dir) as srv:
                self.assertEqual(srv.find_logs(msg="listening")[0]["api"], "off (no --token)")
                for path in ("/-/api/events", "/-/api/stats", "/-/api/events/2"):
                    r = self.get(srv, path, headers={})
                    self.assertEqual(r.status, 404)
                    self.assertIn("--token", r.json()["error"])
                r = h.request(srv.port, "POST", "/-/api/replay?dead=1")
                self.assertEqual(r.status, 404)
                self.assertEqual(runs(s.db, 2)["notify.lua#1"][0], "dead")

    def test_no_state_dir(self):
        with h.Server(LOG, "--token", TOKEN) as srv:
            r = self.get(srv, "/-/api/events")
            self.assertEqual(r.status, 404)
            self.assertIn("--state-dir", r.json()["error"])

    def test_never_an_event(self):
        with h.TempDir() as td:
            d = td.join("state")
            db = js.create(d, LOG)
            for token in (TOKEN, None):
                args = ["--state-dir", d] + (["--token", TOKEN] if token else [])
                with h.Server(LOG, *args) as srv:
                    start = srv.log_count()
                    headers = AUTH if token else {}
                    for path in ("/-/", "/-/api/events", "/-/hook", "/-/api/replay"):
                        r = h.request(srv.port, "POST", path, body={"action": "X"},
                                      headers=headers)
                        self.assertIn(r.status, (400, 404, 405), (path, r.body))
                        self.assertNotIn(b'"id"', r.body)  # /-/ is the console's page: text
                    # an event after them: its handler's line is the first "handled" one
                    rid = h.post_event(srv.port, {"action": "X"}, path="/hook",
                                       headers=headers).json()["id"]
                    srv.wait_log(lambda e: e.get("msg") == "handled", start=start,
                                 what="the event's handler")
                    handled = [e for e in srv.logs() if e.get("msg") == "handled"]
                    self.assertEqual([e["path"] for e in handled], ["/hook"])
                    srv.wait_event(rid)
                    m = h.get_metrics(srv.port)
                    self.assertEqual(m.get("luahook_events_received_total", action="X"), 1)
                con = sqlite3.connect(db)
                paths = [p for (p,) in con.execute("SELECT path FROM deliveries")]
                con.close()
                self.assertFalse([p for p in paths if p.startswith("/-/")], paths)


if __name__ == "__main__":
    h.main()
