"""Numbers from JSON to Lua: integers exact over int64, floats stay floats; a 10 MB import."""

import json
import time
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

NUMBERS_SCRIPT = r'''
local out = os.getenv("OUT_DIR")

local function save(name, v)
  local f = assert(io.open(out .. "/" .. name, "w"))
  f:write(v)
  f:close()
end

on("NUMBERS", function(ev, ctx)
  -- write what the handler saw first, so a failing assertion still leaves evidence
  local seen = {}
  for _, k in ipairs({"small", "neg", "big53", "max", "min", "half", "zero", "minus_one",
                      "one_float", "hash_pos", "hash_neg"}) do
    seen[#seen + 1] = k .. "=" .. tostring(math.type(ev[k])) .. ":" .. tostring(ev[k])
  end
  save("seen.txt", table.concat(seen, "\n") .. "\n")

  assert(math.type(ev.small) == "integer" and ev.small == 21, "small")
  assert("/api/tasks/" .. ev.small == "/api/tasks/21", "concat gives /api/tasks/" .. ev.small)
  assert(string.format("%d", ev.small) == "21", "format %d")
  assert(math.type(ev.neg) == "integer" and ev.neg == -6248493474747979863, "neg")
  assert(math.type(ev.big53) == "integer" and ev.big53 == 9007199254740993, "big53")
  assert(ev.big53 ~= 9007199254740992, "2^53+1 rounded to 2^53")
  assert(math.type(ev.max) == "integer" and ev.max == math.maxinteger, "max int64")
  assert(math.type(ev.min) == "integer" and ev.min == math.mininteger, "min int64")
  assert(math.type(ev.half) == "float" and ev.half == 1.5, "half")
  assert(math.type(ev.zero) == "integer" and ev.zero == 0, "zero")
  assert(math.type(ev.minus_one) == "integer" and ev.minus_one == -1, "minus_one")
  assert(math.type(ev.one_float) == "float" and ev.one_float == 1.0, "1.0 must stay a float")
  assert(math.type(ev.small_float) == "float" and ev.small_float == 0.1, "0.1")
  assert(math.type(ev.neg_float) == "float" and ev.neg_float == -2.75, "-2.75")
  assert(ev.exp == 1000, "1e3 has value 1000, got " .. tostring(ev.exp))
  assert(ev.neg_exp == 0.00025, "2.5e-4")
  assert(math.type(ev.nested.list[3]) == "integer" and ev.nested.list[3] == 9007199254740993,
         "nested list element")
  assert(#ev.nested.list == 3, "#nested.list")
  assert(ev.nested.list[1] == 1 and math.type(ev.nested.list[2]) == "float", "list types")
  assert(math.type(ev.hash_pos) == "integer" and ev.hash_pos == 5740354900026072187, "hash_pos")
  assert(math.type(ev.hash_neg) == "integer" and ev.hash_neg == -3917359123487098234, "hash_neg")
  -- arithmetic stays integer arithmetic
  assert(math.type(ev.small + 1) == "integer" and ev.small // 2 == 10, "integer arithmetic")
  assert(ev.max - 1 == 9223372036854775806, "max - 1")
end)

-- label_config_hash as a fixture carries it: the test compares the text with Python's int
on({"PROJECT_CREATED", "TASKS_CREATED"}, function(ev, ctx)
  save(ev.action .. ".hash", string.format("%s %s", math.type(ev.project.label_config_hash),
                                           tostring(ev.project.label_config_hash)))
  save(ev.action .. ".pid", "/api/projects/" .. ev.project.id)
end)

-- json.decode / json.encode from a handler: same exactness
on("JSON_LIB", function(ev, ctx)
  local t = assert(json.decode('{"a":9007199254740993,"b":-6248493474747979863,"c":21,"d":1.5,' ..
                               '"e":null,"f":[1,2,3]}'))
  assert(math.type(t.a) == "integer" and t.a == 9007199254740993, "decode a")
  assert(math.type(t.b) == "integer" and t.b == -6248493474747979863, "decode b")
  assert(math.type(t.c) == "integer" and t.c == 21, "decode c")
  assert(math.type(t.d) == "float" and t.d == 1.5, "decode d")
  assert(t.e == json.null, "decode null")
  assert(#t.f == 3, "decode list")
  local s = json.encode({ n = 9007199254740993, m = -6248493474747979863, k = 21, h = 1.5 })
  save("encoded.json", s)
  local back = assert(json.decode(s))
  assert(back.n == 9007199254740993 and back.m == -6248493474747979863 and back.k == 21
         and back.h == 1.5, "encode/decode round trip")
  -- decoding the raw body again gives the same exact value
  local again = assert(json.decode(ctx.body))
  assert(again.x == ev.x and math.type(again.x) == "integer", "json.decode(ctx.body)")
end)

on("TASKS_IMPORT", function(ev, ctx)
  save("import.txt", string.format("%d %s %d %s", #ev.tasks, math.type(ev.tasks[#ev.tasks].id),
                                   ev.tasks[#ev.tasks].id, ev.tasks[#ev.tasks].data.text))
end)
'''

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
        cls.script = cls.tmp.script("numbers.lua", NUMBERS_SCRIPT)
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
            script = tmp.script("numbers.lua", NUMBERS_SCRIPT)
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
