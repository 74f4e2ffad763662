"""Numbers from JSON to Lua: integers exact over int64, floats stay floats; a 10 MB import."""

import json
import time
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

NUMBERS_SCRIPT = h.lua_path(__file__, "numbers.lua")

NUMBERS_BODY = (
    b'{"action":"NUMBERS","small":21,"neg":-6248493474747979863,"big53":9007199254740993,'
    b'"max":9223372036854775807,"min":-9223372036854775808,"half":1.5,"zero":0,'
    b'"minus_one":-1,"one_float":1.0,"small_float":0.1,"neg_float":-2.75,"exp":1e3,'
    b'"neg_exp":2.5e-4,"nested":{"list":[1,2.0,9007199254740993]},'
    b'"hash_pos":5740354900026072187,"hash_neg":-3917359123487098234}'
)


def import_body(n_tasks):
    """A TASKS_CREATED body as Label Studio sends it for one big import (all tasks in one
    POST): ~500 bytes per task."""
    base = h.fixture_json("TASKS_CREATED.json")
    template = base["tasks"][0]
    tasks = []
    for i in range(n_tasks):
        t = dict(template)
        t["id"] = 1000000 + i
        t["inner_id"] = i + 1
        t["data"] = {"text": "Imported review number %d: the delivery was fast, the packaging "
                             "was great, caf\u00e9 \ud83d\ude00 %d" % (i, i * 7919),
                     "source": "import-%d.csv" % (i // 1000)}
        tasks.append(t)
    body = {"action": "TASKS_IMPORT", "tasks": tasks, "project": base["project"]}
    return json.dumps(body).encode()


class Numbers(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.script = NUMBERS_SCRIPT
        cls.srv = h.Server(cls.script, "--ack", "handled",
                           env={"OUT_DIR": cls.tmp.path}).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop(check=True)
        finally:
            cls.tmp.cleanup()

    def post(self, body):
        return h.post_event(self.srv.port, body, timeout=30 * h.SLOW)

    def test_integers_exact_floats_float(self):
        r = self.post(NUMBERS_BODY)
        seen = (self.tmp.read("seen.txt") or b"").decode()
        self.assertEqual(r.status, 200, "%r\nhandler saw:\n%s" % (r, seen))
        self.assertEqual(r.json().get("handlers"), 1)
        lines = dict(l.split("=", 1) for l in seen.splitlines())
        self.assertEqual(lines["small"], "integer:21")
        self.assertEqual(lines["neg"], "integer:-6248493474747979863")
        self.assertEqual(lines["big53"], "integer:9007199254740993")
        self.assertEqual(lines["max"], "integer:9223372036854775807")
        self.assertEqual(lines["min"], "integer:-9223372036854775808")
        self.assertEqual(lines["half"], "float:1.5")
        self.assertEqual(lines["one_float"], "float:1.0")

    def test_label_config_hash_exact(self):
        for name, action in (("PROJECT_CREATED.json", "PROJECT_CREATED"),
                             ("TASKS_CREATED.json", "TASKS_CREATED")):
            with self.subTest(fixture=name):
                want = h.fixture_json(name)["project"]["label_config_hash"]
                self.assertGreater(abs(want), 2 ** 53)
                r = self.post(h.fixture_bytes(name))
                self.assertEqual(r.status, 200, r)
                kind, text = self.tmp.read(action + ".hash").decode().split(" ")
                self.assertEqual(kind, "integer")
                self.assertEqual(int(text), want)
                self.assertEqual(text, str(want))
                self.assertEqual(self.tmp.read(action + ".pid"), b"/api/projects/7")

    def test_json_library_exact(self):
        r = self.post(b'{"action":"JSON_LIB","x":-6248493474747979863}')
        self.assertEqual(r.status, 200, r)
        encoded = json.loads(self.tmp.read("encoded.json"))
        self.assertEqual(encoded, {"n": 9007199254740993, "m": -6248493474747979863, "k": 21,
                                   "h": 1.5})
        self.assertIsInstance(encoded["k"], int)
        self.assertIsInstance(encoded["h"], float)

    def test_ten_megabyte_import(self):
        body = import_body(20000)
        self.assertGreater(len(body), 10 * 1000 * 1000)
        # a server with the default ack: the answer must not wait for the handler
        tmp = h.TempDir()
        try:
            script = NUMBERS_SCRIPT
            with h.Server(script, env={"OUT_DIR": tmp.path}) as srv:
                with h.Conn(srv.port, timeout=30 * h.SLOW) as c:
                    req = h.build_request("POST", "/", body, {"Content-Type": "application/json"})
                    t0 = time.monotonic()
                    c.send(req)
                    r = c.read_response()
                    elapsed = time.monotonic() - t0
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json().get("handlers"), 1)
                print("\n[numbers] a 10 MB import answered in %.3f s" % elapsed, file=sys.stderr)
                ev = srv.wait_event(r.json()["id"], timeout=30 * h.SLOW)
                self.assertEqual(ev.get("outcome"), "ok", ev)
                self.assertEqual(ev.get("action"), "TASKS_IMPORT", ev)
            count, kind, last_id, text = tmp.read("import.txt").decode("utf-8").split(" ", 3)
            self.assertEqual(int(count), 20000)
            self.assertEqual(kind, "integer")
            self.assertEqual(int(last_id), 1000000 + 19999)
            self.assertEqual(text, json.loads(body)["tasks"][-1]["data"]["text"])
        finally:
            tmp.cleanup()

    def test_ten_megabyte_import_acked_when_handled(self):
        """--ack handled: the answer comes after the handler saw all 20000 tasks."""
        body = import_body(20000)
        t0 = time.monotonic()
        r = self.post(body)
        elapsed = time.monotonic() - t0
        self.assertEqual(r.status, 200, r)
        count = self.tmp.read("import.txt").decode("utf-8").split(" ")[0]
        self.assertEqual(int(count), 20000)
        print("\n[numbers] a 10 MB import handled and answered in %.3f s" % elapsed,
              file=sys.stderr)


if __name__ == "__main__":
    h.main()
