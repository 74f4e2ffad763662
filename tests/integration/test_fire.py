"""`luahook fire`: handlers on one event without a server — files, stdin, samples, --action,
outcomes and exit codes, the real stdlib (http to a local upstream)."""

import http.server
import json
import os
import sys
import threading
import types
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

ACTIONS = [
    "ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED",
    "LABEL_LINK_CREATED", "LABEL_LINK_UPDATED", "LABEL_LINK_DELETED", "PROJECT_CREATED",
    "PROJECT_UPDATED", "PROJECT_DELETED", "START_TRAINING", "TASKS_CREATED", "TASKS_DELETED",
    "REVIEW_CREATED", "REVIEW_UPDATED", "REVIEWS_DELETED",
]


def at(path, marker):
    """ "PATH:LINE" of the line of script `path` marked "-- @marker"."""
    return "%s:%d" % (path, h.line_of(path, "-- @" + marker))


def text(r):
    return types.SimpleNamespace(returncode=r.returncode, stdout=r.stdout.decode(),
                                 stderr=r.stderr.decode())


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        out = json.dumps({"got": json.loads(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *a):
        pass


class Fire(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.out = cls.tmp.join("out.json")
        cls.record = cls.tmp.fixture(__file__, "record.lua")
        cls.failing = cls.tmp.fixture(__file__, "failing.lua")
        cls.http = cls.tmp.fixture(__file__, "http.lua")
        cls.timers = cls.tmp.fixture(__file__, "timers.lua")

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def fire(self, *args, input=None, env=None):
        e = {"OUT": self.out}
        e.update(env or {})
        return text(h.run_luahook("fire", *args, input=input, env=e))

    def recorded(self):
        with open(self.out) as f:
            return json.load(f)

    def test_every_sample(self):
        for action in ACTIONS:
            with self.subTest(action=action):
                r = self.fire("--sample", action, self.record)
                self.assertEqual(r.returncode, 0, r.stderr)
                seen = self.recorded()
                self.assertEqual(seen["action"], action)
                self.assertEqual(seen["ctx_action"], action)
                lines = r.stdout.splitlines()
                self.assertTrue(lines[0].startswith("ok   record.lua#1  " + at(self.record, "RECORD")
                                                    + "  ("), r.stdout)
                self.assertEqual(lines[-1], "1 passed, 0 failed")

    def test_event_file_keeps_integers_exact(self):
        path = h.fixture_path("PROJECT_UPDATED.json")
        want = h.fixture_json("PROJECT_UPDATED.json")["project"]["label_config_hash"]
        r = self.fire(self.record, path)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.recorded()["hash"], want)
        self.assertEqual(self.recorded()["mt"], "integer")

    def test_stdin_and_action_override(self):
        body = h.fixture_bytes("PROJECT_UPDATED.json")
        want = h.fixture_json("PROJECT_UPDATED.json")["project"]["label_config_hash"]
        r = self.fire("--action", "SOMETHING_ELSE", self.record, "-", input=body)
        self.assertEqual(r.returncode, 0, r.stderr)
        seen = self.recorded()
        self.assertEqual(seen["action"], "SOMETHING_ELSE")
        self.assertEqual(seen["hash"], want)  # through the exact decoder and encoder

    def test_failure_is_reported_and_exits_1(self):
        r = self.fire(self.failing, "-", input=b'{"action":"A","n":7}')
        self.assertEqual(r.returncode, 1, r.stderr)
        lines = r.stdout.splitlines()
        # the handler's stable id, its file:line, then the duration or the error
        self.assertTrue(lines[0].startswith("ok   failing.lua#1  " + at(self.failing, "FIRST")
                                            + "  ("), r.stdout)
        second = at(self.failing, "SECOND")
        self.assertEqual(lines[1], "FAIL failing.lua#2  %s  %s: second broke on 7" % (second, second))
        self.assertEqual(lines[-1], "1 passed, 1 failed")
        # the log lines go to stderr, as when serving
        self.assertIn("first ran", r.stderr)
        self.assertIn("handler failed", r.stderr)

    def test_waits_for_handlers_that_sleep(self):
        r = self.fire(self.failing, "-", input=b'{"action":"B"}')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith("ok   failing.lua#3  " + at(self.failing, "SLEEPS")
                                            + "  ("), r.stdout)

    def test_waits_for_one_shot_timers(self):
        r = self.fire(self.timers, "-", input=b'{"action":"T"}')
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)  # the failing timer counts
        self.assertIn("startup timer ran", r.stderr)
        self.assertIn("later timer ran", r.stderr)
        broke = at(self.timers, "TIMER_BROKE")
        self.assertIn("FAIL timer %s  %s: timer broke" % (broke, broke), r.stdout)
        self.assertEqual(r.stdout.splitlines()[-1], "3 passed, 1 failed")

    def test_action_override_keeps_the_body_bytes(self):
        body = b'{"action": "X", "l": [], "s": "\\u00e9", "f": 1.0}'
        r = self.fire("--action", "BODY", self.timers, "-", input=body)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        with open(self.out, "rb") as f:
            self.assertEqual(f.read(), body)

    def test_no_handler(self):
        r = self.fire(self.failing, "-", input=b'{"action":"NOBODY"}')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("no handler ran", r.stdout)

    def test_refused_event(self):
        r = self.fire(self.record, "-", input=b'{"action": 1}')
        self.assertEqual(r.returncode, 1)
        self.assertIn("refused", r.stderr)
        self.assertIn("action", r.stderr)
        r = self.fire(self.record, "-", input=b'{"action": "A"')
        self.assertEqual(r.returncode, 1)
        self.assertIn("invalid JSON", r.stderr)

    def test_usage_errors(self):
        r = self.fire(self.record)  # no event
        self.assertEqual(r.returncode, 2)
        self.assertIn("--sample", r.stderr)
        r = self.fire("--sample", "NOT_AN_ACTION", self.record)
        self.assertEqual(r.returncode, 2)
        self.assertIn("TASKS_CREATED", r.stderr)  # the list of samples
        r = self.fire(self.record, self.tmp.join("missing.json"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("missing.json", r.stderr)
        r = text(h.run_luahook("serve", "--sample", "X", self.record))
        self.assertEqual(r.returncode, 2)
        self.assertIn("fire", r.stderr)

    def test_broken_script(self):
        source = "on('A', function(\n"   # unfinished: the error is at the end of the file
        bad = self.tmp.script("bad.lua", source)
        r = self.fire("--sample", "TASKS_CREATED", bad)
        self.assertEqual(r.returncode, 1)
        self.assertIn("%s:%d:" % (bad, source.count("\n") + 1), r.stderr)

    def test_real_http(self):
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        try:
            up = "http://127.0.0.1:%d" % srv.server_address[1]
            r = self.fire(self.http, "-", input=b'{"action":"CALL","id":9007199254740993}',
                          env={"UPSTREAM": up})
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertTrue(r.stdout.startswith("ok   http.lua#1  " + at(self.http, "CALL") + "  ("),
                            r.stdout)
        finally:
            srv.shutdown()
            srv.server_close()


if __name__ == "__main__":
    unittest.main(verbosity=2)
