"""Issue 15, the output lane: what luahook writes stays well-formed whatever a sender sends.

- log lines (defect 4): in both formats every line is one line; json lines parse and are
  valid UTF-8; text lines hold no control byte, so a sender cannot forge lines, CR or
  terminal escapes through a handler that logs its data;
- /metrics label values (defect 5) follow the exposition format and are valid UTF-8;
- "rejected" lines (defect 6) are rate-limited, and what was left out is counted;
- /metrics' text (defect 1, in part) is built again only when a number changed;
- the --ack handled 500 answer (defect 11, in part) is valid UTF-8 JSON.

Each test fails against the code before its fix: raw bytes >= 0x80 or control bytes in a
line, label or answer, a missing luahook_metrics_renders_total, 2000 "rejected" lines.
"""

import json
import re
import sys
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

SCRIPT = h.lua_path(__file__, "echo_log.lua")
TOKEN = "s3cret-output"

# What a sender can put in a string: a forged line, CR, terminal escapes (7-bit and the C1
# CSI), bytes that are not UTF-8, a lone surrogate's bytes, valid UTF-8, quotes, '='.
HOSTILE = [
    b"x\n2026-01-01T00:00:00.000Z error FORGED line",
    b"cr\rFORGED\x1b[2J\x1b]0;title\x07",
    b"c1 \xc2\x9b31m \xc2\x85 end",
    b"bad \xff\xfe \xc3 \xe2\x82 \xed\xa0\x80 \xf4\x90\x80\x80",
    b"ok caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80",
    b'quote" back\\ eq= tab\t nul\x00 del\x7f',
]
HUGE = b"\xe2\x82\xac\x1b\xff\n" * 20000  # 120 KB of the worst, cut at the line cap


def json_string(raw):
    """A JSON string literal whose decoded bytes are exactly `raw` (controls escaped, bytes
    >= 0x80 raw: luahook's decoder takes them as they are)."""
    out = bytearray(b'"')
    for c in raw:
        if c in (0x22, 0x5C):
            out += b"\\" + bytes([c])
        elif c < 0x20:
            out += b"\\u%04x" % c
        else:
            out.append(c)
    return bytes(out + b'"')


def event_body(action, text):
    return b'{"action":' + json_string(action) + b',"text":' + json_string(text) + b"}"


class RawServer(h.Server):
    """A Server that keeps stderr's lines as bytes too: the harness decodes them with
    'replace', which would hide the very bytes under test."""

    def _read_stderr(self):
        self.raw_bytes = []
        for raw in iter(self.proc.stderr.readline, b""):
            with self._cond:
                self.raw_bytes.append(raw)
                self._raw.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def byte_lines(self):
        with self._cond:
            return list(self.raw_bytes)


TS_LEVEL = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|warn|error) ")


def check_line(test, raw, fmt):
    """One stderr line: ends in its one newline, valid UTF-8, no control character (C0, DEL,
    C1) inside; json: one object; text: starts with time and level."""
    test.assertTrue(raw.endswith(b"\n"), raw[-80:])
    text = raw[:-1].decode("utf-8")  # strict: raises on a byte that is not UTF-8
    for ch in text:
        test.assertFalse(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0,
                         "control character %r in %r" % (ch, text[:200]))
    test.assertLessEqual(len(raw), 8192)
    if fmt == "json":
        obj = json.loads(text)
        test.assertIsInstance(obj, dict)
        return obj
    test.assertRegex(text, TS_LEVEL)
    return text


class LogLines(unittest.TestCase):
    def run_format(self, fmt):
        port = h.free_port()
        srv = RawServer(SCRIPT, "--ack", "handled", log_format=fmt,
                        listen="127.0.0.1:%d" % port).start()
        try:
            for i, text in enumerate(HOSTILE + [HUGE]):
                r = h.post_event(srv.port, event_body(b"LOG_%d" % i, text))
                self.assertEqual(r.status, 200, r)
            srv.stop(check=True)
        finally:
            if srv.alive():
                srv.kill()
        lines = srv.byte_lines()
        parsed = [check_line(self, raw, fmt) for raw in lines]
        # each event's handler wrote two lines carrying its text; none was split or forged
        forged = [l for l in lines if b"FORGED" in l]
        self.assertEqual(len(forged), 4, forged)
        if fmt == "json":
            mine = [o for o in parsed if str(o.get("action", "")).startswith("LOG_")
                    and o.get("msg") != "event"]
            self.assertEqual(len(mine), 2 * (len(HOSTILE) + 1))
            got = {o["msg"] for o in mine}
            # valid UTF-8 goes through as it is; what is not UTF-8 becomes U+FFFD
            self.assertIn("from ok caf\u00e9 \u20ac \U0001F600", got)
            self.assertIn("bad \ufffd\ufffd \ufffd \ufffd\ufffd \ufffd\ufffd\ufffd "
                          "\ufffd\ufffd\ufffd\ufffd", got)
            self.assertIn("c1 \u009b31m \u0085 end", got)  # escaped on the wire, kept
            cut = [o for o in mine if o.get("truncated") is True]
            self.assertEqual(len(cut), 2, "the huge text's two lines are cut and marked")
        else:
            joined = b"".join(lines)
            self.assertIn(b"from x\\n2026-01-01T00:00:00.000Z error FORGED line", joined)
            self.assertIn(b"cr\\rFORGED\\x1b[2J\\x1b]0;title\\x07", joined)
            self.assertIn(b"bad \\xff\\xfe \\xc3 \\xe2\\x82", joined)
            self.assertIn(b"from ok caf\xc3\xa9", joined)
            self.assertEqual(sum(1 for l in lines if l.endswith(b" truncated=true\n")), 2)

    def test_json_lines_always_parse(self):
        self.run_format("json")

    def test_text_lines_cannot_be_forged(self):
        self.run_format("text")


def strict_metrics(test, body):
    """Parses the exposition text strictly: UTF-8, '\\n' line ends, no other control
    character, label values with only the \\\\, \\" and \\n escapes. Returns
    {(name, ((label, value), ...)): value}."""
    text = body.decode("utf-8")
    test.assertTrue(text.endswith("\n"))
    out = {}
    for line in text[:-1].split("\n"):
        for ch in line:
            test.assertFalse(ord(ch) < 0x20 or 0x7F <= ord(ch) < 0xA0,
                             "control character %r in %r" % (ch, line))
        if line.startswith("#"):
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)", line)
        test.assertIsNotNone(m, line)
        labels, rest = [], m.group(2) or ""
        while rest:
            lm = re.match(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\[\\"n])*)"(,|$)', rest)
            test.assertIsNotNone(lm, "bad labels in %r" % line)
            value = re.sub(r'\\([\\"n])', lambda e: "\n" if e.group(1) == "n" else e.group(1),
                           lm.group(2))
            labels.append((lm.group(1), value))
            rest = rest[lm.end():]
        out[(m.group(1), tuple(labels))] = float(m.group(3))
    return out


class Metrics(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = h.Server(SCRIPT).start()

    @classmethod
    def tearDownClass(cls):
        cls.srv.stop(check=True)

    def scrape(self, conn):
        r = conn.request("GET", "/metrics")
        self.assertEqual(r.status, 200)
        return r.body

    def test_label_values_escaped_and_utf8(self):
        action = b'A"b\\c\nd\re\x1bf\xff\xc2\x9bg\xc3\xa9'
        r = h.post_event(self.srv.port, event_body(action, b"t"))
        self.assertEqual(r.status, 200, r)
        with h.Conn(self.srv.port) as c:
            samples = strict_metrics(self, self.scrape(c))
        want = 'A"b\\c\nd\ufffde\ufffdf\ufffd\ufffdg\u00e9'
        self.assertEqual(samples.get(("luahook_events_received_total", (("action", want),))),
                         1.0, sorted(k for k in samples if k[0] == "luahook_events_received_total"))

    def test_text_cached_until_a_number_changes(self):
        with h.Conn(self.srv.port) as c:
            # nothing changed in between: the same text, not built again (a connection an
            # earlier test closed may still be counted down first: then scrape again)
            first = self.scrape(c)
            for _ in range(50):
                again = self.scrape(c)
                if again == first:
                    break
                first = again
            self.assertEqual(first, again)
            renders = strict_metrics(self, first)[("luahook_metrics_renders_total", ())]
            # a scraper that pipelines: one send, every answer, still the same text
            c.send(h.build_request("GET", "/metrics") * 50)
            for _ in range(50):
                r = c.read_response()
                self.assertEqual(r.body, first)
            # an event changes numbers: the next scrape sees them at once (no staleness)
            self.assertEqual(h.post_event(self.srv.port, event_body(b"CACHE", b"t")).status, 200)
            after = strict_metrics(self, self.scrape(c))
        self.assertEqual(after[("luahook_events_received_total", (("action", "CACHE"),))], 1.0)
        self.assertGreater(after[("luahook_metrics_renders_total", ())], renders)


class Rejected(unittest.TestCase):
    N = 2000

    def test_rejected_lines_are_rate_limited_and_counted(self):
        srv = h.Server(SCRIPT, "--token", TOKEN).start()
        try:
            start = time.monotonic()
            sent = 0
            with h.Conn(srv.port) as c:
                while sent < self.N:
                    batch = min(100, self.N - sent)
                    c.send(h.build_request("POST", "/", b"{}") * batch)  # no token: 401
                    for _ in range(batch):
                        self.assertEqual(c.read_response().status, 401)
                    sent += batch
            elapsed = time.monotonic() - start

            def counts():
                logs = srv.logs()
                shown = sum(1 for o in logs if o.get("msg") == "rejected")
                hidden = sum(o["suppressed"] for o in logs
                             if o.get("msg") == "suppressed rejected lines")
                return shown, hidden

            # the summary comes a second after the first line left out
            h.wait_until(lambda: sum(counts()) == self.N, timeout=10 * h.SLOW,
                         what="every refusal in a line or a suppressed count: %r" % (counts(),))
            shown, hidden = counts()
            # a burst of 100, then 20 a second, for as long as the hammering lasted
            self.assertLessEqual(shown, 100 + 20 * (elapsed + 1), (shown, hidden, elapsed))
            self.assertGreater(hidden, 0)
            m = h.get_metrics(srv.port)
            self.assertEqual(m.get("luahook_events_rejected_total", reason="unauthorized"), self.N)
        finally:
            srv.stop(check=True)


    def test_refused_connections_share_the_limit(self):
        # --max-connections 1 held by one client: each further connection is refused with
        # a line of its own before, 400 of them 400 lines; now the same bucket
        srv = h.Server(SCRIPT, "--max-connections", "1").start()
        try:
            with h.Conn(srv.port) as held:
                held.send(h.build_request("GET", "/healthz"))
                self.assertEqual(held.read_response().status, 200)
                for _ in range(400):
                    with h.Conn(srv.port) as c:
                        try:
                            c.read_response()  # a 503, or closed without one
                        except Exception:
                            pass

                def counts():
                    logs = srv.logs()
                    shown = sum(1 for o in logs if o.get("msg") == "rejected"
                                and o.get("reason") == "overload")
                    hidden = sum(o["suppressed"] for o in logs
                                 if o.get("msg") == "suppressed rejected lines")
                    return shown, hidden

                h.wait_until(lambda: sum(counts()) == 400, timeout=10 * h.SLOW,
                             what="every refused connection in a line or a count: %r"
                             % (counts(),))
                self.assertGreater(counts()[1], 0)
            m = h.get_metrics(srv.port)
            self.assertEqual(m.get("luahook_events_rejected_total", reason="overload"), 400)
        finally:
            srv.stop(check=True)


class AckHandledAnswer(unittest.TestCase):
    def test_500_body_is_valid_utf8_json(self):
        with h.Server(SCRIPT, "--ack", "handled") as srv:
            text = b"boom \xff\xfe\x1b[31m \xc3 caf\xc3\xa9 \xc2\x9b"
            r = h.post_event(srv.port, event_body(b"FAIL", text))
            self.assertEqual(r.status, 500, r)
            body = json.loads(r.body.decode("utf-8"))  # strict UTF-8
            self.assertEqual(body["failed"][0]["error"],
                             "boom \ufffd\ufffd\x1b[31m \ufffd caf\u00e9 \u009b")
            self.assertNotIn(b"\x1b", r.body)  # escaped as \u001b


if __name__ == "__main__":
    h.main()
