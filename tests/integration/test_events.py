"""Label Studio events end to end: every fixture body, as handlers see it.

Each fixture is POSTed to a server run with --ack handled and three kinds of handlers:
  * a generated "*" handler that compares the whole decoded event, value by value and Lua
    type by Lua type, with Python's json.load of the same file (integers exact, floats
    floats, null json.null, sequences of the right length, no key more or less);
  * scripts/labelstudio_fields.lua: hand-written checks of the fields an operator uses,
    registered for a list of actions;
  * a generated per-action handler that checks ev.action / ctx.action routing.
A 200 proves every assertion held; a 500 names the one that broke.
"""

import json
import os
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

UNKNOWN_ACTION = "SOMETHING_NEW_IN_LS_2027"
KNOWN_ACTIONS = [
    "TASKS_CREATED", "TASKS_DELETED", "ANNOTATION_CREATED", "ANNOTATION_UPDATED",
    "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED", "PROJECT_CREATED", "PROJECT_UPDATED",
    "PROJECT_DELETED", "LABEL_LINK_CREATED", "LABEL_LINK_UPDATED", "LABEL_LINK_DELETED",
    "START_TRAINING", "REVIEW_CREATED",
]


def wire_form(body_bytes):
    """The body as Label Studio sends it: json.dumps defaults (one line, ensure_ascii)."""
    return json.dumps(json.loads(body_bytes)).encode()


def unknown_action_body():
    return json.dumps({
        "action": UNKNOWN_ACTION,
        "thing": {"id": 99, "name": "\u00fcber", "tags": ["a", "b"], "score": 0.25,
                  "parent": None},
    }).encode()


class FixtureEvents(unittest.TestCase):
    """One server for the class; each test posts fixtures and checks answers and logs."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        expectations = {}
        for name in h.fixture_names():
            expectations[name] = h.fixture_json(name)
        expectations["unknown.json"] = json.loads(unknown_action_body())
        table = ",\n".join("[%s] = %s" % (h.lua_string(n), h.lua_expect(v))
                           for n, v in sorted(expectations.items()))
        deep = h.LUA_EXPECT + """
local EXPECT = {
%s
}
on("*", function(ev, ctx)
  local name = ctx.headers["x-fixture"]
  local e = EXPECT[name]
  assert(e, "no expectation for X-Fixture " .. tostring(name))
  expect(ev, e, "ev")
end)
""" % table
        routing = ["local seen = 0"]
        for action in KNOWN_ACTIONS:
            routing.append("""
on(%(a)s, function(ev, ctx)
  assert(ev.action == %(a)s, "routed " .. tostring(ev.action) .. " to the %(n)s handler")
  assert(ctx.action == %(a)s, "ctx.action is " .. tostring(ctx.action))
end)""" % {"a": h.lua_string(action), "n": action})
        # The "*" handler is written first on purpose: "*" handlers run after the specific ones
        # whatever the registration order; handlers count the same either way.
        cls.deep = cls.tmp.script("00_deep.lua", deep)
        cls.routing = cls.tmp.script("01_routing.lua", "\n".join(routing))
        cls.fields = os.path.join(h.SCRIPTS, "labelstudio_fields.lua")
        cls.srv = h.Server([cls.deep, cls.routing, cls.fields], "--ack", "handled").start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop(check=True)
        finally:
            cls.tmp.cleanup()

    def expected_handlers(self, action):
        # deep "*" + routing + fields for a known action; only "*" for an unknown one
        return 3 if action in KNOWN_ACTIONS else 1

    def post_fixture(self, name, body, path="/"):
        r = h.post_event(self.srv.port, body, path=path,
                         headers={"Content-Type": "application/json", "X-Fixture": name,
                                  "User-Agent": "python-requests/2.31.0"})
        return r

    def assert_handled(self, name, r, action):
        detail = "%s: %r" % (name, r)
        self.assertEqual(r.status, 200, detail)
        self.assertTrue(r.header("content-type", "").startswith("application/json"), detail)
        body = r.json()
        self.assertIs(body.get("ok"), True, detail)
        self.assertIsInstance(body.get("id"), str, detail)
        self.assertNotEqual(body["id"], "", detail)
        self.assertEqual(body.get("handlers"), self.expected_handlers(action), detail)
        return body

    def test_every_fixture_as_stored(self):
        """Each fixture file's exact bytes (pretty-printed JSON)."""
        ids = set()
        for name in h.fixture_names():
            with self.subTest(fixture=name):
                raw = h.fixture_bytes(name)
                action = json.loads(raw)["action"]
                body = self.assert_handled(name, self.post_fixture(name, raw), action)
                self.assertNotIn(body["id"], ids, "delivery id reused")
                ids.add(body["id"])
                ev = self.srv.wait_event(body["id"])
                self.assertEqual(ev.get("level"), "info", ev)
                self.assertEqual(ev.get("action"), action, ev)
                self.assertEqual(ev.get("handlers"), self.expected_handlers(action), ev)
                self.assertEqual(ev.get("outcome"), "ok", ev)
                self.assertIsInstance(ev.get("duration_ms"), (int, float), ev)
                self.assertGreaterEqual(ev["duration_ms"], 0, ev)

    def test_every_fixture_in_wire_form(self):
        """The same events as Label Studio puts them on the wire: one line, ASCII-escaped,
        sent to a path with a query string."""
        for name in h.fixture_names():
            with self.subTest(fixture=name):
                raw = wire_form(h.fixture_bytes(name))
                action = json.loads(raw)["action"]
                self.assert_handled(name, self.post_fixture(name, raw, path="/hooks/ls?src=test"),
                                    action)

    def test_unknown_action_goes_to_star_only(self):
        r = self.post_fixture("unknown.json", unknown_action_body())
        body = self.assert_handled("unknown", r, UNKNOWN_ACTION)
        self.assertEqual(body["handlers"], 1)
        ev = self.srv.wait_event(body["id"])
        self.assertEqual(ev.get("action"), UNKNOWN_ACTION)
        self.assertEqual(ev.get("outcome"), "ok")

    def test_deep_check_can_fail(self):
        """Guard against a vacuous deep check: a body that differs from its fixture by one
        integer (label_config_hash off by one, beyond 2^53) must make the handler fail."""
        data = h.fixture_json("PROJECT_UPDATED.json")
        data["project"]["label_config_hash"] += 1
        r = self.post_fixture("PROJECT_UPDATED.json", json.dumps(data).encode())
        self.assertEqual(r.status, 500, r)
        body = r.json()
        self.assertIs(body.get("ok"), False, body)
        self.assertEqual(body.get("handlers"), 3, body)
        failed = body.get("failed")
        self.assertIsInstance(failed, list, body)
        # the deep check and the hand-written check both see the wrong hash; routing is fine
        self.assertEqual(len(failed), 2, body)
        errors = " | ".join(f.get("error", "") for f in failed)
        self.assertIn("ev.project.label_config_hash", errors)
        self.assertIn("-3917359123487098234", errors)
        self.assertIn("label_config_hash not exact", errors)
        # which script failed, whatever folders the repo and the temp dir are in
        handlers = [f.get("handler", "") for f in failed]
        self.assertEqual(sum(x.startswith(self.deep + ":") for x in handlers), 1, failed)
        self.assertEqual(sum(x.startswith(self.fields + ":") for x in handlers), 1, failed)

    def test_float_one_point_zero_stays_float(self):
        """1.0 in the body is a JSON number with a fraction: it must stay a Lua float, like
        Python's json.load keeps it a float (the deep check would say "expected float 1")."""
        data = h.fixture_json("ANNOTATIONS_DELETED.json")
        self.assertIsInstance(
            data["project"]["control_weights"]["sentiment"]["labels"]["Positive"], float)
        r = self.post_fixture("ANNOTATIONS_DELETED.json", h.fixture_bytes("ANNOTATIONS_DELETED.json"))
        self.assert_handled("ANNOTATIONS_DELETED.json", r, "ANNOTATIONS_DELETED")


class SecretsNeverLogged(unittest.TestCase):
    """A project's token travels in every full project body; no log line may carry it, at
    any level, in either format, whether the event succeeds, fails in a handler or is
    rejected."""

    SCRIPT = """
on("*", function(ev, ctx)
  log.debug("saw event", { action = ev.action })
  if ev.action == "PROJECT_UPDATED" then error("handler broke on purpose") end
end)
"""

    def run_all(self, log_format):
        with h.TempDir() as tmp:
            script = tmp.script("h.lua", self.SCRIPT)
            # --ack handled: every handler (and its log lines) is done when its answer arrives
            args = ["--log-level", "debug", "--token", "tok-123", "--ack", "handled"]
            with h.Server(script, *args, log_format=log_format,
                          listen="127.0.0.1:%d" % h.free_port()) as srv:
                port = srv.port
                auth = {"Authorization": "Token tok-123"}
                for name in h.fixture_names():
                    body = h.fixture_bytes(name)
                    r = h.post_event(port, body, headers=auth)
                    want = 500 if name.startswith("PROJECT_UPDATED") else 200
                    self.assertEqual(r.status, want, "%s: %r" % (name, r))
                    # unauthorized, the same body
                    r = h.post_event(port, body)
                    self.assertEqual(r.status, 401, r)
                    # invalid JSON that still contains the secret
                    r = h.post_event(port, body[:-3] + b",,,", headers=auth)
                    self.assertEqual(r.status, 400, r)
                # the secret inside a body sent with the wrong method
                r = h.request(port, "PUT", "/", h.fixture_bytes("PROJECT_CREATED.json"), auth)
                self.assertEqual(r.status, 405, r)
            # the server has exited: all its stderr is captured
            text = srv.stderr_text()
            self.assertIn("saw event", text, "no log.debug line: is --log-level debug on?")
            self.assertIn("handler broke on purpose", text)
            self.assertNotIn(h.FIXTURE_SECRET, text)
            self.assertNotIn("Sentiment batch", text, "a body field (project title) was logged")
            self.assertNotIn("tok-123", text, "the server's own token was logged")

    def test_json_format(self):
        self.run_all("json")

    def test_text_format(self):
        self.run_all("text")


if __name__ == "__main__":
    h.main()
