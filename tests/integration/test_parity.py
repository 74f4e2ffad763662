"""One implementation of the Lua API: the same handlers (tests/fixtures/parity/) fired
through `luahook fire` (real time, real network) and through `luahook test` (virtual
clock, mocked HTTP) end the same way with the same messages: a success and its log line,
a handler error, a timeout, an http failure (its text and its kind), an argument error.

For each action, `fire` runs first; its outcome lines and JSON log lines become the
expectations of a generated test file, which `luahook test` must pass."""

import json
import os
import re
import shutil
import socket
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

FIX = os.path.join(h.REPO, "tests", "fixtures", "parity", "handlers.lua")
OWN = {"ts", "level", "msg", "script", "action", "id"}  # luahook's own log fields



def at(marker):
    """ "handlers.lua:LINE" of the fixture's line marked "-- @marker" (as fire names it)."""
    return "handlers.lua:%d" % h.line_of(FIX, "-- @" + marker)


# ok|FAIL, the handler's stable id, its file:line, then the duration or the error
OUTCOME = re.compile(r"^(ok|FAIL) +(\S+)  (\S+)  (?:\[(\w+)\] )?(.*)$")


def closed_port():
    """A local port nobody listens on: connecting to it is refused."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def lua_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return h.lua_int(v)
    if isinstance(v, str):
        return h.lua_string(v)
    if isinstance(v, float):
        return repr(v)
    raise ValueError(v)


class Parity(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        shutil.copy(FIX, os.path.join(cls.tmp.path, "handlers.lua"))
        cls.url = "http://127.0.0.1:%d" % closed_port()

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def fire(self, event):
        """Runs `luahook fire` on one event: [(id, label, ok, error)], [log records]."""
        path = os.path.join(self.tmp.path, "event.json")
        with open(path, "w") as f:
            json.dump(event, f)
        res = h.run_luahook("fire", "--handler-timeout", "0.5", "--log-format", "json",
                            "handlers.lua", "event.json", cwd=self.tmp.path,
                            env={"PARITY_URL": self.url})
        runs = []
        for line in res.stdout.decode().splitlines():
            m = OUTCOME.match(line)
            if m:
                ok = m.group(1) == "ok"
                runs.append((m.group(2), m.group(3), ok, None if ok else m.group(5)))
        logs = []
        for line in res.stderr.decode().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            # a handler's log.* line (script=file:line), not luahook's own lines
            if re.match(r"^handlers\.lua:\d+$", str(rec.get("script", ""))):
                logs.append(rec)
        self.assertTrue(runs, res.stdout.decode() + res.stderr.decode())
        return runs, logs

    def check(self, event, setup="", fired=None):
        """fire (unless `fired` holds what it said), then a generated test that expects
        exactly what fire said."""
        runs, logs = fired or self.fire(event)
        lines = ['handlers("handlers.lua")', 'test("parity", function()', setup,
                 "  local r = fire(%s, { allow_failure = true })" % h.lua_string(json.dumps(event)),
                 "  eq(r.handlers, %d)" % len(runs)]
        for i, (hid, label, ok, err) in enumerate(runs, 1):
            lines.append("  eq(r[%d].id, %s)" % (i, h.lua_string(hid)))
            lines.append("  eq(r[%d].handler, %s)" % (i, h.lua_string(label)))
            lines.append("  eq(r[%d].ok, %s)" % (i, "true" if ok else "false"))
            lines.append("  eq(r[%d].error, %s)" % (i, "nil" if ok else h.lua_string(err)))
        lines.append("  eq(#logs(), %d)" % len(logs))
        for i, rec in enumerate(logs, 1):
            fields = {k: v for k, v in rec.items() if k not in OWN}
            lines.append("  eq(logs()[%d].level, %s)" % (i, h.lua_string(rec["level"])))
            lines.append("  eq(logs()[%d].msg, %s)" % (i, h.lua_string(rec["msg"])))
            for k, v in sorted(fields.items()):
                lines.append("  eq(logs()[%d].fields[%s], %s)" % (i, h.lua_string(k), lua_value(v)))
        lines.append("end)")
        self.tmp.script("parity_test.lua", "\n".join(lines) + "\n")
        res = h.run_luahook("test", "--handler-timeout", "0.5", "parity_test.lua",
                            cwd=self.tmp.path)
        out = res.stdout.decode() + res.stderr.decode()
        self.assertEqual(res.returncode, 0, out)
        self.assertEqual(res.stdout.decode(), "ok   parity_test.lua: parity\n1 passed, 0 failed\n")
        return runs, logs

    def test_success_and_its_log_line(self):
        runs, logs = self.check({"action": "PARITY_OK", "task": 21})
        self.assertEqual(runs, [("handlers.lua#1", at("OK"), True, None)])
        self.assertEqual(logs[0]["msg"], "parity ok")

    def test_handler_error(self):
        runs, _ = self.check({"action": "PARITY_ERROR", "why": "no"})
        self.assertEqual(runs[0][3], at("ERROR") + ": refused on purpose: no")

    def test_timeout(self):
        runs, logs = self.check({"action": "PARITY_TIMEOUT"})
        self.assertEqual(runs[0][3], "handler timed out after 0.5 s (--handler-timeout)")
        self.assertEqual(len(logs), 1)

    def test_http_failure_text_and_kind(self):
        runs, logs = self.fire({"action": "PARITY_HTTP"})
        err = runs[0][3]
        m = re.match(r"^GET (\S+): connection failed \(refused or unreachable\) \((.*)\)$", err)
        self.assertTrue(m, err)
        self.assertEqual(m.group(1), self.url + "/x", "no query string in the message")
        self.assertEqual(logs[0]["kind"], "connect")
        # the mock gives curl's words; luahook composes the rest, as for the real failure
        self.check({"action": "PARITY_HTTP"},
                   '  mock.env("PARITY_URL", %s)\n  mock.http("GET", ".", { error = %s, kind = "connect" })'
                   % (h.lua_string(self.url), h.lua_string(m.group(2))), fired=(runs, logs))

    def test_argument_error(self):
        runs, _ = self.check({"action": "PARITY_MISUSE"})
        self.assertEqual(runs[0][3], at("MISUSE") + ": http: url must start with http:// or "
                                     "https:// (got 'ftp://nowhere.test/')")


if __name__ == "__main__":
    h.main()
