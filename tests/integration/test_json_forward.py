"""JSON that handlers can forward: an event decoded by the server and re-encoded with
json.encode keeps its empty arrays arrays (`[]` stays `[]`, never `{}`), object keys come out
in byte order, and the same value gives the same bytes from one process to the next. The
handler (tests/fixtures/integration/test_json_forward/forward.lua) posts what it encodes to a
local upstream, which records the bytes it receives."""

import json
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import upstream as u  # noqa: E402

# Empty arrays at every depth, beside empty objects, inside a real Label Studio body.
NESTED = {"result": [], "meta": {}, "grid": [[], [[]], {}, [{"a": []}]],
          "deep": {"x": {"y": {"z": []}}}}


def keys_sorted(text):
    """The first object of `text` (parsed) whose keys are not in byte order, or None."""
    bad = []

    def hook(pairs):
        keys = [k.encode("utf-8") for k, _ in pairs]
        if keys != sorted(keys) and not bad:
            bad.append([k for k, _ in pairs])
        return dict(pairs)

    json.loads(text, object_pairs_hook=hook)
    return bad[0] if bad else None


def shape(v):
    """v with every list and dict kept apart (json.loads already does: [] is a list, {} a
    dict), and numbers compared by value and kind."""
    if isinstance(v, dict):
        return {"{}": {k: shape(x) for k, x in v.items()}}
    if isinstance(v, list):
        return {"[]": [shape(x) for x in v]}
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    return (type(v).__name__, v)


class JsonForward(unittest.TestCase):
    def setUp(self):
        self.tmp = h.TempDir()
        self.up = u.Upstream().start()
        self.script = self.tmp.fixture(__file__, "forward.lua")

    def tearDown(self):
        self.up.stop()
        self.tmp.cleanup()

    def received(self, tag):
        bodies = [r["body"] for r in self.up.requests if r.get("tag") == tag]
        self.assertEqual(len(bodies), 1, self.up.requests)
        self.up.requests.clear()
        return bodies[0]

    def post(self, srv, event):
        r = h.post_event(srv.port, event)
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.json().get("handlers"), 1, r.json())

    def test_empty_arrays_stay_arrays(self):
        event = h.fixture_json("ANNOTATION_CREATED.json")
        self.assertIn(b"[]", h.fixture_bytes("ANNOTATION_CREATED.json"),
                      "the fixture must hold an empty array for this test to mean anything")
        event.update(NESTED)
        with h.Server(self.script, "--ack", "handled", env={"UP": self.up.base}) as srv:
            self.post(srv, event)
            got = self.received("event")
            for body in ({"action": "X", "result": []}, {"action": "X", "tasks": [[]]}):
                self.post(srv, body)
                self.assertEqual(json.loads(self.received("event")), body)
        self.assertEqual(shape(json.loads(got)), shape(event))
        self.assertIn('"result":[]', got)
        self.assertIn('"grid":[[],[[]],{},[{"a":[]}]]', got)
        self.assertIsNone(keys_sorted(got))

    def test_marked_tables(self):
        with h.Server(self.script, "--ack", "handled", env={"UP": self.up.base}) as srv:
            self.post(srv, {"action": "MARKS"})
            self.assertEqual(self.received("marks"),
                             '{"ids":{"1":3,"2":1,"3":2},"list":[],"map":{},"plain":{}}')

    def test_same_bytes_from_two_processes(self):
        bodies = []
        for _ in range(2):
            with h.Server(self.script, "--ack", "handled", env={"UP": self.up.base}) as srv:
                self.post(srv, {"action": "BUILT"})
                bodies.append(self.received("built"))
        self.assertEqual(bodies[0], bodies[1])
        self.assertIsNone(keys_sorted(bodies[0]))
        value = json.loads(bodies[0])
        self.assertEqual(len(value), 301)
        self.assertEqual(value["nested"], {"a": 2, "b": 1, "c": {"y": 2, "z": 1}})

    def test_fire_writes_the_same_bytes_as_the_server(self):
        """`luahook fire` twice, two more processes: the same bytes again."""
        event = self.tmp.join("built.json")
        with open(event, "w", encoding="utf-8") as f:
            json.dump({"action": "BUILT"}, f)
        bodies = []
        for _ in range(2):
            r = h.run_luahook("fire", self.script, event, env={"UP": self.up.base})
            self.assertEqual(r.returncode, 0, r)
            bodies.append(self.received("built"))
        self.assertEqual(bodies[0], bodies[1])
        self.assertIsNone(keys_sorted(bodies[0]))


if __name__ == "__main__":
    unittest.main()
