"""`require "labelstudio"` against a local fake Label Studio API (fake_labelstudio.py):
both token kinds (a legacy token; a personal access token exchanged for access tokens,
again when one expires or is refused), paging, bulk predictions (also from a real
TASKS_CREATED body), 429 and 5xx retried then success, a 500 on a bulk create not repeated,
and permanent 4xx errors as values. No token ever reaches the log."""

import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import fake_labelstudio as fls  # noqa: E402


class LabelStudioClient(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.ls = fls.FakeLabelStudio().start()
        cls.ls.add_tasks(7, 250)
        env = {"LS_URL": cls.ls.url, "LS_LEGACY": fls.LEGACY, "LS_PAT": fls.PAT}
        script = cls.tmp.fixture(__file__, "ls.lua")
        try:
            cls.srv = h.Server(script, "--ack", "handled", "--log-level", "debug",
                               env=env).start()
        except BaseException:
            cls.ls.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop(check=True)
        finally:
            cls.ls.stop()
            cls.tmp.cleanup()

    def setUp(self):
        self.ls.reset()

    def tearDown(self):
        # the tokens never reach the log, whatever happened
        text = self.srv.stderr_text()
        for secret in [fls.LEGACY, fls.PAT] + list(self.ls.issued):
            self.assertNotIn(secret, text)

    def call(self, client, method, *args):
        """Runs c:method(args) in a handler; returns the fields of its 'ls result' line."""
        r = h.post_event(self.srv.port, {"action": "LS_CALL", "client": client,
                                         "call": method, "args": list(args)},
                         timeout=60.0 * h.SLOW)
        self.assertEqual(r.status, 200, r.body)
        body = r.json()
        self.assertEqual(body.get("handlers"), 1, body)
        return self.srv.wait_log(lambda e: e.get("msg") == "ls result"
                                 and e.get("id") == body["id"], what="the ls result")

    # -- tokens ------------------------------------------------------------------------

    def test_legacy_token(self):
        got = self.call("legacy", "task", 21)
        self.assertEqual(got.get("value"), {"id": 21, "meta": {}}, got)
        reqs = self.ls.seen("GET", "/api/tasks/21/")
        self.assertEqual([r["auth"] for r in reqs], ["Token " + fls.LEGACY])

    def test_personal_access_token_exchanged_then_reused(self):
        # "first_pat": a client no other test uses, so it holds no access token yet
        before = self.ls.refreshes
        self.assertEqual(self.call("first_pat", "project", 7).get("value"),
                         {"id": 7, "title": "Project 7"})
        self.assertEqual(self.call("first_pat", "task", 5).get("value", {}).get("id"), 5)
        self.assertEqual(self.since(0), [("POST", "/api/token/refresh/"),
                                         ("GET", "/api/projects/7/"), ("GET", "/api/tasks/5/")])
        self.assertEqual(self.ls.refreshes, before + 1, "one access token for both calls")
        refresh, *calls = self.ls.seen()
        self.assertEqual(refresh["json"], {"refresh": fls.PAT})
        self.assertIsNone(refresh["auth"])
        for r in calls:
            self.assertEqual(r["auth"], "Bearer " + self.ls.issued[-1])

    def since(self, mark):
        return [(r["method"], r["path"]) for r in self.ls.seen()[mark:]]

    def test_access_token_expiry_and_refresh(self):
        # access tokens that live 31 s: the client exchanges again 30 s before exp
        self.ls.access_life = 31
        self.ls.revoked.update(self.ls.issued)  # whatever token the client holds is refused
        self.call("pat", "task", 1)  # exchanged for a token living 31 s
        exp = fls.jwt_payload(self.ls.issued[-1])["exp"]
        before, mark = self.ls.refreshes, len(self.ls.seen())
        h.wait_until(lambda: time.time() >= exp - 30 + 0.05, timeout=5.0 * h.SLOW,
                     what="the access token to enter its last 30 s")
        got = self.call("pat", "task", 2)
        self.assertEqual(got.get("value", {}).get("id"), 2, got)
        # exchanged before use: the old token, still valid for the server, is not sent
        self.assertEqual(self.since(mark), [("POST", "/api/token/refresh/"),
                                            ("GET", "/api/tasks/2/")])
        self.assertEqual(self.ls.refreshes, before + 1)
        self.assertEqual(self.ls.seen()[-1]["auth"], "Bearer " + self.ls.issued[-1])

    def test_refused_access_token_exchanged_again(self):
        # the client may still hold an earlier test's token, near its end (access_life 31):
        # refused, it takes one of this test's (300 s), which no lapse of time renews
        self.ls.revoked.update(self.ls.issued)
        self.call("pat", "task", 1)
        self.ls.revoked.update(self.ls.issued)  # Label Studio forgets every access token
        before, mark = self.ls.refreshes, len(self.ls.seen())
        got = self.call("pat", "task", 3)
        self.assertEqual(got.get("value", {}).get("id"), 3, got)
        self.assertEqual(self.ls.refreshes, before + 1)
        self.assertEqual(self.since(mark), [("GET", "/api/tasks/3/"),
                                            ("POST", "/api/token/refresh/"),
                                            ("GET", "/api/tasks/3/")])

    def test_wrong_personal_token_is_an_auth_error(self):
        got = self.call("wrong", "task", 1)
        self.assertEqual(got.get("kind"), "auth", got)
        self.assertEqual(got.get("status"), 401, got)
        self.assertIn("POST /api/token/refresh/: HTTP 401", got.get("err", ""))
        self.assertEqual(self.ls.seen("GET"), [], "no API call without a token")

    # -- operations --------------------------------------------------------------------

    def test_paging(self):
        got = self.call("legacy", "tasks_page", 7, 2, 100)
        self.assertEqual(got.get("value"), {"n": 100, "first": 101, "last": 200}, got)
        got = self.call("legacy", "all_tasks", 7, {"page_size": 100})
        self.assertEqual(got.get("value"), {"n": 250, "first": 1, "last": 250}, got)
        pages = [r["path"] for r in self.ls.seen("GET", "/api/tasks/?")]
        self.assertEqual(len(pages), 1 + 3, pages)
        self.assertIn("page=3", pages[-1])
        self.assertIn("project=7", pages[-1])

    def test_bulk_predictions(self):
        preds = [{"task": i, "result": [{"from_name": "s", "to_name": "t", "type": "choices",
                                         "value": {"choices": ["A"]}}], "score": 0.25}
                 for i in (1, 2, 3)]
        got = self.call("pat", "create_predictions", 7, preds)
        self.assertEqual(got.get("value"), 3, got)
        self.assertEqual(self.ls.predictions, preds)
        self.assertEqual(len(self.ls.seen("POST", "/api/projects/7/import/predictions")), 1)

    def test_predictions_from_a_real_tasks_created_body(self):
        body = h.fixture_json("TASKS_CREATED.json")  # tasks 101..103 of project 7
        r = h.post_event(self.srv.port, body, timeout=60.0 * h.SLOW)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(sorted(p["task"] for p in self.ls.predictions),
                         [t["id"] for t in body["tasks"]])
        self.assertEqual(self.ls.predictions[0]["result"][0]["value"],
                         {"choices": ["Positive"]})
        self.assertEqual(len(self.ls.seen("POST", "/api/projects/7/import/predictions")), 1)

    def test_update_task(self):
        got = self.call("legacy", "update_task", 9, {"meta": {"checked": True}})
        self.assertEqual(got.get("value"), {"id": 9, "meta": {"checked": True}}, got)
        self.assertEqual(self.ls.tasks[9]["meta"], {"checked": True})
        self.ls.tasks[9]["meta"] = {}

    # -- retries and errors ------------------------------------------------------------

    def test_429_with_retry_after_then_success(self):
        self.ls.fail("GET", "/api/tasks/4/", [(429, [("Retry-After", "1")])])
        t0 = time.monotonic()
        got = self.call("legacy", "task", 4)
        self.assertEqual(got.get("value", {}).get("id"), 4, got)
        self.assertGreaterEqual(time.monotonic() - t0, 0.95, "Retry-After: 1 was honoured")
        self.assertEqual(len(self.ls.seen("GET", "/api/tasks/4/")), 2)

    def test_5xx_retried_then_success(self):
        self.ls.fail("GET", "/api/projects/7/", [(502, []), (503, [])])
        got = self.call("pat", "project", 7)
        self.assertEqual(got.get("value", {}).get("id"), 7, got)
        self.assertEqual(len(self.ls.seen("GET", "/api/projects/7/")), 3)

    def test_500_on_a_bulk_create_is_not_repeated(self):
        self.ls.fail("POST", "/api/projects/7/import", [(500, [])])
        got = self.call("legacy", "create_predictions", 7, [{"task": 1, "result": []}])
        self.assertEqual(got.get("kind"), "server", got)
        self.assertEqual(got.get("status"), 500, got)
        self.assertEqual(len(self.ls.seen("POST", "/api/projects/7/import")), 1)

    def test_permanent_4xx_is_a_value(self):
        got = self.call("legacy", "create_predictions", 7, [{"task": 99999, "result": []}])
        self.assertEqual(got.get("kind"), "client", got)
        self.assertEqual(got.get("status"), 400, got)
        self.assertIn("HTTP 400: ", got.get("err", ""))
        self.assertIn("Invalid prediction 0", got.get("err", ""))
        self.assertEqual(len(self.ls.seen("POST")), 1, "a 4xx is not retried")
        got = self.call("legacy", "task", 424242)
        self.assertEqual((got.get("kind"), got.get("status")), ("not_found", 404), got)
        self.assertEqual(got.get("err"), 'labelstudio: GET /api/tasks/424242/: HTTP 404: '
                                         '{"detail": "Not found."}')

    def test_unreachable_is_a_value(self):
        port = h.free_port()
        script = self.tmp.script("down.lua", (
            'local c = require("labelstudio").client{ url = "http://127.0.0.1:%d", '
            'token = "t", retries = 1 }\n'
            'on("DOWN", function() local v, err, kind = c:task(1)\n'
            '  log.info("down", { err = err, kind = kind }) end, { custom = true })\n') % port)
        with h.Server(script, "--ack", "handled") as srv:
            r = h.post_event(srv.port, {"action": "DOWN"}, timeout=60.0 * h.SLOW)
            self.assertEqual(r.status, 200, r.body)
            got = srv.wait_log(lambda e: e.get("msg") == "down", what="the down line")
            self.assertEqual(got.get("kind"), "connect", got)
            self.assertIn("GET http://127.0.0.1:%d/api/tasks/1/" % port, got.get("err", ""))


if __name__ == "__main__":
    h.main()
