"""The six bundled recipes under `serve`, through the short files of examples/ that use()
them: with nothing set every example stays off (one info line each) and every sample event
runs without a failing handler; with their settings, each recipe against local fake
endpoints (chat, collector, model, Label Studio's API, training URL) and, where it keeps
state, across a restart with --state-dir."""

import http.server
import json
import os
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
from upstream import Upstream  # noqa: E402

EXAMPLES = os.path.join(h.REPO, "examples")
SAMPLES = os.path.join(h.REPO, "lua", "samples")

# Every setting the examples read: "" is "not set" for them, whatever the caller's
# environment holds.
SETTINGS = ["NOTIFY_URL", "NOTIFY_FORMAT", "FORWARD_URL", "FORWARD_SIGNING_SECRET",
            "MODEL_URL", "LABEL_STUDIO_URL", "LABEL_STUDIO_TOKEN", "TRAIN_URL",
            "TRAIN_EVERY", "ARCHIVE_DIR", "PROGRESS_URL"]

OFF_LINES = {
    "notify is off: set NOTIFY_URL to a chat incoming webhook to turn it on",
    "forward is off: set FORWARD_URL to the URL(s) that should get every event",
    "prelabel is off: set MODEL_URL, LABEL_STUDIO_URL and LABEL_STUDIO_TOKEN to turn it on",
    "train_trigger is off: set TRAIN_URL to the model's training URL to turn it on",
    "archive is off: set ARCHIVE_DIR to a writable folder to turn it on",
}


def settings(**given):
    env = {k: "" for k in SETTINGS}
    env.update(given)
    return env


def examples_server(*args, **given):
    return h.Server(EXAMPLES, "--ack", "handled", *args, env=settings(**given))


def post_ok(srv, body):
    r = h.post_event(srv.port, body, timeout=30.0 * h.SLOW)
    if r.status != 200 or r.json().get("ok") is not True:
        raise AssertionError("event not handled: %d %s" % (r.status, r.body[:2000]))
    return r.json()


def post_all(port, bodies):
    """Posts every body from its own thread at once; returns the responses in order."""
    out = [None] * len(bodies)

    def one(i):
        out[i] = h.post_event(port, bodies[i], timeout=60.0 * h.SLOW)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


class Fake:
    """A local HTTP service whose routes are the test's functions: route(path) ->
    handler(method, path, body bytes) -> (status, dict). Every request is recorded."""

    def __init__(self, routes):
        fake = self
        self.routes = routes
        self.requests = []
        self.lock = threading.Lock()

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                path = self.path.split("?")[0]
                with fake.lock:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    fake.requests.append({"path": path, "body": body, "headers": headers})
                fn = fake.routes.get(path)
                status, answer = fn(body) if fn else (404, {"detail": "no route"})
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = "http://127.0.0.1:%d" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *a):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def on(self, path):
        with self.lock:
            return [r for r in self.requests if r["path"] == path]


def annotation(project, i, skipped=False):
    return {"action": "ANNOTATION_CREATED", "project": {"id": project, "title": "P%d" % project},
            "annotation": {"id": i, "task": i, "project": project, "was_cancelled": skipped,
                           "result": [], "completed_by": 1},
            "task": {"id": i, "project": project, "is_labeled": False}}


class NothingSet(unittest.TestCase):
    def test_every_sample_runs_with_nothing_set(self):
        """./scripts/run serves examples/ with nothing set: no handler may fail."""
        actions = sorted(n[:-len(".json")] for n in os.listdir(SAMPLES) if n.endswith(".json"))
        self.assertGreaterEqual(len(actions), 16)
        with examples_server() as srv:
            said = {e["msg"] for e in srv.logs() if e.get("level") == "info"}
            self.assertEqual(OFF_LINES - said, set(), "each example says how to turn it on")
            for action in actions:
                with open(os.path.join(SAMPLES, action + ".json"), "rb") as f:
                    answer = post_ok(srv, f.read())
                self.assertGreaterEqual(answer["handlers"], 1, action)  # progress is always on
            for name in h.fixture_names():
                post_ok(srv, h.fixture_bytes(name))
            self.assertEqual(srv.find_logs(msg="handler failed"), [])
            self.assertNotIn(h.FIXTURE_SECRET, srv.stderr_text())

    def test_check_lists_the_instances(self):
        r = h.run_luahook("check", EXAMPLES, env=settings(NOTIFY_URL="https://chat.test/x",
                                                        TRAIN_URL="http://model.test/train"))
        out = r.stdout.decode()
        self.assertEqual(r.returncode, 0, r.stderr.decode() + out)
        self.assertIn("notify#1", out)
        self.assertIn("train_trigger#count", out)
        self.assertIn("progress#watch", out)
        self.assertNotIn("chat.test", out + r.stderr.decode(), "a secret URL is never shown")

    def test_a_bad_setting_is_an_error_at_the_use(self):
        r = h.run_luahook("check", EXAMPLES, env=settings(TRAIN_URL="http://model.test/train",
                                                        TRAIN_EVERY="three"))
        self.assertEqual(r.returncode, 1)
        err = r.stdout.decode() + r.stderr.decode()
        self.assertIn("train.lua:", err)
        self.assertIn("every", err)
        self.assertIn('"three"', err)

    def test_an_empty_projects_list_is_refused_by_every_recipe(self):
        """`projects = {}` would silently turn a recipe off (no project matches): an error,
        as is an id below 1."""
        r = h.run_luahook("recipes")
        names = [l.split()[0] for l in r.stdout.decode().splitlines()[1:]]
        self.assertEqual(len(names), 6, r)
        with h.TempDir() as tmp:
            for name in names:
                h.write_script(tmp.path, "p.lua", 'use("%s", { projects = {} })\n'
                               'use("%s", { projects = { 0 } }, { as = "two" })\n' % (name, name))
                r = h.run_luahook("check", "p.lua", cwd=tmp.path)
                self.assertEqual(r.returncode, 1, r)
                err = r.stderr.decode()
                self.assertIn("p.lua:1: %s: " % name, err)
                self.assertIn("projects: expected a list of integers >= 1 with >= 1 items, "
                              "got an empty table", err)
                self.assertIn("p.lua:2: %s: " % name, err)
                self.assertIn("projects[1]: expected an integer >= 1, got 0", err)

    def test_a_template_field_that_does_not_exist(self):
        path = h.lua_path(__file__, "bad_template.lua")
        r = h.run_luahook("check", path)
        self.assertEqual(r.returncode, 1)
        err = r.stdout.decode() + r.stderr.decode()
        self.assertIn("bad_template.lua:%d:" % h.line_of(path, 'use("notify"'), err)
        self.assertIn("templates.submitted: unknown field {tsk}", err)
        self.assertNotIn("s3cr3t", err)

    def test_the_binary_runs_each_bundled_recipe_s_own_tests(self):
        """The copies compiled in (modules such as notify's chat.lua included) pass their
        tests from any folder."""
        r = h.run_luahook("recipes")
        names = [l.split()[0] for l in r.stdout.decode().splitlines()[1:] if l.strip()]
        self.assertEqual(sorted(names), ["archive", "forward", "notify", "prelabel", "progress",
                                         "train_trigger"])
        with h.TempDir() as tmp:
            for name in names:
                r = h.run_luahook("test", "bundled:" + name, cwd=tmp.path)
                self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())
                self.assertRegex(r.stdout.decode(), r"(?m)^[1-9]\d* passed, 0 failed$")


class Notify(unittest.TestCase):
    def test_submitted_and_skipped_reach_the_chat(self):
        with Upstream() as up, examples_server(NOTIFY_URL=up.url("/echo?tag=chat")) as srv:
            post_ok(srv, h.fixture_bytes("ANNOTATION_CREATED.json"))
            post_ok(srv, h.fixture_bytes("ANNOTATION_CREATED.skipped.json"))
            texts = [json.loads(r["body"])["text"] for r in up.find("chat")]
        self.assertEqual(len(texts), 2, texts)
        self.assertIn("annotated by user", texts[0])
        self.assertIn("skipped by user", texts[1])

    def test_a_failed_post_fails_the_run_without_the_url(self):
        with Upstream() as up, examples_server(NOTIFY_URL=up.url("/status/404")) as srv:
            r = h.post_event(srv.port, h.fixture_bytes("ANNOTATION_CREATED.json"))
            self.assertEqual(r.status, 500)
            failed = [f for f in r.json()["failed"] if f["id"] == "notify#1"]
            self.assertEqual(len(failed), 1, r.body)
            self.assertIn("submitted: HTTP 404", failed[0]["error"])
            self.assertNotIn("/status/404", srv.stderr_text() + r.body.decode())


class Forward(unittest.TestCase):
    BODY = b'{"action": "TASKS_CREATED", "tasks": [{"id": 1, "data": {"t": "caf\\u00e9"}, ' \
           b'"tags": []}], "project": {"id": 7, "label_config_hash": -3917359123487098234}}'

    def test_exact_bytes_to_every_url(self):
        with Upstream() as up, examples_server(
                FORWARD_URL=up.url("/echo?tag=a") + " " + up.url("/echo?tag=b")) as srv:
            answer = post_ok(srv, self.BODY)
            for tag in ("a", "b"):
                got = up.find(tag)
                self.assertEqual(len(got), 1, tag)
                self.assertEqual(bytes.fromhex(got[0]["body_hex"]), self.BODY)
                self.assertEqual(got[0]["headers"]["x-luahook-delivery"], answer["id"])

    def test_a_repeat_skips_the_url_already_reached(self):
        with h.TempDir() as tmp:
            with Upstream() as up:
                urls = up.url("/echo?tag=a") + " " + up.url("/status/400")
                with examples_server("--state-dir", tmp.path, FORWARD_URL=urls) as srv:
                    r = h.post_event(srv.port, self.BODY)
                    self.assertEqual(r.status, 500, r.body)
                    self.assertIn("urls[2]: HTTP 400 (1 try)", r.body.decode())
                self.assertEqual(len(up.find("a")), 1)
                # a restart, the same bytes again: only the URL that failed is tried
                with examples_server("--state-dir", tmp.path, FORWARD_URL=urls) as srv:
                    r = h.post_event(srv.port, self.BODY)
                    self.assertEqual(r.status, 500, r.body)
                self.assertEqual(len(up.find("a")), 1, "the reached URL is not sent again")
                self.assertEqual(up.count("/status/400"), 2)


class Prelabel(unittest.TestCase):
    def test_batches_and_a_repeat_after_a_failed_batch(self):
        fail = {"left": 1}

        def predict(body):
            tasks = json.loads(body)["tasks"]
            region = {"from_name": "s", "to_name": "t", "type": "choices",
                      "value": {"choices": ["Positive"]}}
            return 200, {"results": [{"result": [region], "score": 0.5} for _ in tasks]}

        def create(body):
            preds = json.loads(body)
            if preds[0]["task"] == 103 and fail["left"] > 0:
                fail["left"] -= 1
                return 400, {"detail": "bad"}
            return 201, {"created": len(preds)}

        tasks = [{"id": i, "project": 7, "data": {"text": "t%d" % i}} for i in range(101, 106)]
        body = json.dumps({"action": "TASKS_CREATED", "tasks": tasks, "project": {"id": 7}})
        create_path = "/api/projects/7/import/predictions"
        with h.TempDir() as tmp, Fake({"/predict": predict, create_path: create}) as fake:
            env = dict(MODEL_URL=fake.url + "/predict", LABEL_STUDIO_URL=fake.url,
                       LABEL_STUDIO_TOKEN="0123456789abcdef0123456789abcdef01234567")
            script = h.lua_path(__file__, "prelabel_small.lua")
            state = tmp.join("state")
            os.mkdir(state)
            with h.Server(script, "--ack", "handled", "--state-dir", state, env=env) as srv:
                r = h.post_event(srv.port, body, timeout=30.0 * h.SLOW)
                self.assertEqual(r.status, 500, r.body)
                self.assertIn("1 of 3 batches failed; tasks 103..104: label studio:",
                              r.body.decode())
            creates = fake.on(create_path)
            self.assertEqual([json.loads(c["body"])[0]["task"] for c in creates], [101, 103, 105])
            self.assertEqual(creates[0]["headers"]["authorization"],
                             "Token 0123456789abcdef0123456789abcdef01234567")
            with h.Server(script, "--ack", "handled", "--state-dir", state, env=env) as srv:
                post_ok(srv, body)
                self.assertNotIn("0123456789abcdef0123", srv.stderr_text())
            creates = fake.on(create_path)
            self.assertEqual([json.loads(c["body"])[0]["task"] for c in creates],
                             [101, 103, 105, 103], "only the failed batch again")
            self.assertEqual(len(fake.on("/predict")), 4)


class TrainTrigger(unittest.TestCase):
    def test_counts_survive_a_restart(self):
        with h.TempDir() as tmp, Fake({"/train": lambda b: (201, {})}) as fake:
            env = dict(TRAIN_URL=fake.url + "/train", TRAIN_EVERY="3")
            with examples_server("--state-dir", tmp.path, **env) as srv:
                post_ok(srv, annotation(7, 1))
                post_ok(srv, annotation(7, 2))
            with examples_server("--state-dir", tmp.path, **env) as srv:
                self.assertEqual(fake.on("/train"), [])
                post_ok(srv, annotation(7, 3))
            trainings = fake.on("/train")
            self.assertEqual([json.loads(t["body"]) for t in trainings],
                             [{"project": 7, "annotations": 3}])

    def test_one_training_for_one_threshold_under_load(self):
        gate = threading.Event()

        def train(body):
            gate.wait(30)
            return 201, {}

        with Fake({"/train": train}) as fake, \
                examples_server(TRAIN_URL=fake.url + "/train", TRAIN_EVERY="5") as srv:
            bodies = [json.dumps(annotation(8, i)) for i in range(1, 9)]
            answers = []
            t = threading.Thread(target=lambda: answers.extend(post_all(srv.port, bodies)))
            t.start()
            h.wait_until(lambda: len(fake.on("/train")) >= 1, timeout=30 * h.SLOW,
                         what="the training call")
            gate.set()
            t.join()
            self.assertEqual([a.status for a in answers], [200] * 8)
            self.assertEqual(len(fake.on("/train")), 1)


class Archive(unittest.TestCase):
    def test_lines_per_project_and_day_with_secrets_masked(self):
        with h.TempDir() as tmp:
            with examples_server(ARCHIVE_DIR=tmp.path) as srv:
                a = post_ok(srv, h.fixture_bytes("PROJECT_UPDATED.json"))
                b = post_ok(srv, h.fixture_bytes("TASKS_DELETED.all-tasks.json"))
            files = sorted(os.listdir(tmp.path))
            self.assertEqual(len(files), 2, files)
            self.assertRegex(files[0], r"^project-7-\d{4}-\d\d-\d\d\.jsonl$")
            self.assertRegex(files[1], r"^project-none-\d{4}-\d\d-\d\d\.jsonl$")
            data = tmp.read(files[0])
            none = json.loads(tmp.read(files[1]))
        self.assertNotIn(h.FIXTURE_SECRET.encode(), data)
        rec = json.loads(data)
        self.assertEqual(rec["id"], a["id"])
        self.assertEqual(rec["action"], "PROJECT_UPDATED")
        self.assertEqual(rec["event"]["project"]["token"], "***")
        self.assertEqual(rec["event"]["project"]["id"], 7)
        self.assertEqual(none["id"], b["id"])
        self.assertEqual(none["event"], json.loads(h.fixture_bytes("TASKS_DELETED.all-tasks.json")))


class Progress(unittest.TestCase):
    def test_milestones_once_across_a_restart(self):
        def stats(finished):
            ev = annotation(7, 100 + finished)
            ev["project"].update({"task_number": 4, "finished_task_number": finished})
            return ev

        with h.TempDir() as tmp, Upstream() as up:
            env = dict(PROGRESS_URL=up.url("/echo?tag=progress"))
            with examples_server("--state-dir", tmp.path, **env) as srv:
                post_ok(srv, stats(1))
                post_ok(srv, stats(2))
            with examples_server("--state-dir", tmp.path, **env) as srv:
                post_ok(srv, stats(2))
                post_ok(srv, stats(1))
                post_ok(srv, stats(4))
            texts = [json.loads(r["body"])["text"] for r in up.find("progress")]
        self.assertEqual(texts, ["P7: 25% of the tasks are finished (1 of 4)",
                                 "P7: 50% of the tasks are finished (2 of 4)",
                                 "P7: 100% of the tasks are finished (4 of 4)"])


    def test_a_task_completed_by_two_deliveries_at_once_is_announced_once(self):
        """The first post is held until a second post arrives (or 5 s pass, well within
        the recipe's 10 s post timeout): a second announcement of the same task, made
        while the first is still being posted, would release it at once."""
        second = threading.Event()
        held = []

        def chat(body):
            if held:
                second.set()
            else:
                held.append(body)
                second.wait(5.0)
            return 200, {"ok": True}

        def done(i, action):
            ev = annotation(7, i)
            ev["action"] = action
            ev["task"]["is_labeled"] = True
            return ev

        with Fake({"/chat": chat}) as fake, examples_server(PROGRESS_URL=fake.url + "/chat") as srv:
            rs = post_all(srv.port, [done(5, "ANNOTATION_CREATED"), done(5, "ANNOTATION_UPDATED")])
            self.assertEqual([r.status for r in rs], [200, 200], [r.body for r in rs])
            texts = [json.loads(r["body"])["text"] for r in fake.on("/chat")]
        self.assertEqual(texts, ["P7: task 5 is complete"])

if __name__ == "__main__":
    h.main()
