"""HTTP behaviour over raw sockets: answers, rejections, limits, auth, keep-alive,
pipelining, chunked bodies, 100-continue, stalls and timeouts, concurrency, metrics."""

import json
import re
import select
import socket
import threading
import time
import sys
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402

# The handlers of RecordingServer and Auth (see the fixture's header): "*" records every event
# in OUT_DIR/ran.txt, so a test can prove that a rejected request ran nothing; P<k> has k
# handlers; SLOW computes for 0.2 s; CHUNKED checks a chunked upload.
RECORD_SCRIPT = h.lua_path(__file__, "record.lua")

SENTINEL = b'{"action":"SENTINEL"}'


def json_error(testcase, r, status):
    """Asserts an error answer: status, JSON content type, {"ok":false,"error":"..."}."""
    testcase.assertEqual(r.status, status, r)
    testcase.assertTrue(r.header("content-type", "").startswith("application/json"), r)
    body = r.json()
    testcase.assertIs(body.get("ok"), False, body)
    testcase.assertIsInstance(body.get("error"), str, body)
    testcase.assertNotEqual(body["error"], "", body)
    return body


def read_timeout_outcome(conn, timeout):
    """After a stall: returns ("408", t) if the server answered 408 then closed, or
    ("closed", t) if it closed without an answer; t = seconds waited. Anything else fails."""
    t0 = time.monotonic()
    try:
        r = conn.read_response(timeout=timeout)
    except h.ConnectionClosed:
        return "closed", time.monotonic() - t0
    except socket.timeout:
        return "open", time.monotonic() - t0
    t = time.monotonic() - t0
    if r.status != 408:
        raise AssertionError("a stalled request got %r instead of 408 or a close" % r)
    if not conn.closed_by_peer(2.0 * h.SLOW):
        raise AssertionError("the server answered 408 but kept the connection open")
    return "408", t


class RecordingServer(unittest.TestCase):
    """Base: one --ack handled server with RECORD_SCRIPT per class (extra args per class)."""

    ARGS = ()

    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.script = RECORD_SCRIPT
        cls.srv = h.Server(cls.script, "--ack", "handled", *cls.ARGS,
                           env={"OUT_DIR": cls.tmp.path}).start()
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop(check=True)
        finally:
            cls.tmp.cleanup()

    def ran(self):
        return [l.split(" ")[0] for l in self.tmp.read_lines("ran.txt")]

    def assert_nothing_ran(self, before):
        """Sends a valid SENTINEL event (answered after its handlers, --ack handled) and
        asserts that the only handler runs since `before` = len(ran()) are the sentinel's."""
        r = h.post_event(self.port, SENTINEL)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.ran()[before:], ["SENTINEL"],
                         "a rejected request ran a handler")

    def assert_rejected_logged(self, status, path, local_port, reason=None):
        """The 'rejected' warn line of the request sent from `local_port` (the client's port
        makes it unique): status, reason, remote and path."""
        remote = "127.0.0.1:%d" % local_port
        line = self.srv.wait_log(
            lambda e: e.get("msg") == "rejected" and e.get("remote") == remote,
            what="a 'rejected' log line with remote %s" % remote)
        self.assertEqual(line.get("level"), "warn", line)
        self.assertEqual(line.get("status"), status, line)
        self.assertIsInstance(line.get("reason"), str, line)
        if reason is not None:
            self.assertEqual(line.get("reason"), reason, line)
        self.assertEqual(line.get("path"), path, line)
        return line


class Answers(RecordingServer):
    def test_event_answer_shape(self):
        r = h.post_event(self.port, b'{"action":"P3"}')
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r)
        body = r.json()
        self.assertIs(body.get("ok"), True, body)
        self.assertIsInstance(body.get("id"), str, body)
        self.assertTrue(body["id"], body)
        self.assertEqual(body.get("handlers"), 4, body)  # 3 for P3 + the "*" handler
        self.assertIsInstance(body["handlers"], int)

    def test_any_post_path_is_an_event_path(self):
        for path in ("/", "/hook", "/hooks/labelstudio", "/a/b/c", "/webhook?project=7&x=y"):
            with self.subTest(path=path):
                r = h.post_event(self.port, b'{"action":"P1"}', path=path)
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json().get("handlers"), 2)

    def test_ids_unique(self):
        ids = set()
        with h.Conn(self.port) as c:
            for _ in range(50):
                r = c.request("POST", "/", b'{"action":"P1"}')
                self.assertEqual(r.status, 200, r)
                ids.add(r.json()["id"])
        self.assertEqual(len(ids), 50)

    def test_healthz(self):
        r = h.request(self.port, "GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r)
        self.assertEqual(r.json(), {"ok": True})

    def test_metrics_content_type(self):
        r = h.request(self.port, "GET", "/metrics")
        self.assertEqual(r.status, 200, r)
        ct = r.header("content-type", "")
        self.assertTrue(ct.startswith("text/plain"), ct)
        self.assertIn("version=0.0.4", ct)
        m = h.Metrics(r.body.decode())
        for name in ("luahook_connections_open", "luahook_vm_generation"):
            self.assertIn(name, m.names())
        self.assertEqual(m.get("luahook_vm_generation"), 1)

    def test_wrong_methods(self):
        before = len(self.ran())
        for method, path in (("GET", "/"), ("PUT", "/hook"), ("DELETE", "/x"), ("PATCH", "/"),
                             ("OPTIONS", "/hooks/ls"), ("GET", "/hooks/labelstudio")):
            with self.subTest(method=method, path=path):
                body = b'{"action":"MUST_NOT_RUN"}' if method in ("PUT", "PATCH") else None
                with h.Conn(self.port) as c:
                    r = c.request(method, path, body)
                    local_port = c.local_port()
                json_error(self, r, 405)
                allow = r.header("allow")
                self.assertIsNotNone(allow, r)
                self.assertEqual([m.strip() for m in allow.split(",")], ["POST"], r)
                self.assert_rejected_logged(405, path, local_port, "method")
        self.assert_nothing_ran(before)

    def test_head_is_405(self):
        with h.Conn(self.port) as c:
            c.send(h.build_request("HEAD", "/hook"))
            r = c.read_response(head_request=True)
        self.assertEqual(r.status, 405, r)
        self.assertEqual(r.header("allow"), "POST", r)


class BadBodies(RecordingServer):
    def post_bad(self, body, path="/bad"):
        before = len(self.ran())
        with h.Conn(self.port) as c:
            c.send(h.build_request("POST", path, body, {"Content-Type": "application/json"}))
            r = c.read_response()
            local_port = c.local_port()
        err = json_error(self, r, 400)["error"]
        self.assert_nothing_ran(before)
        return err, local_port

    def test_invalid_json(self):
        cases = [
            b'{"action": "MUST_NOT_RUN",}',
            b'{action: "MUST_NOT_RUN"}',
            b'{"action": "MUST_NOT_RUN"',
            b'{"action": "MUST_NOT_RUN" "x": 1}',
            b"{'action': 'MUST_NOT_RUN'}",
            b'not json at all',
            b'{"action": "MUST_NOT_RUN", "n": 01}',
            b'{"action": "MUST_NOT_RUN", "n": NaN}',
            b'{"action": "MUST_NOT_RUN", "s": "unterminated}',
            b'{"action": "MUST_NOT_RUN", "s": "bad \\x escape"}',
            b'{"action": "MUST_NOT_RUN", "s": "raw \x01 control"}',
            b'\xef\xbb\xbf\xff\xfe',
        ]
        for body in cases:
            with self.subTest(body=body):
                err, port = self.post_bad(body)
                self.assertIn("invalid JSON", err)
                self.assert_rejected_logged(400, "/bad", port, "invalid_json")

    def test_invalid_json_message_has_line_and_column(self):
        body = b'{\n  "action": "MUST_NOT_RUN",\n  oops: 1\n}'
        err, port = self.post_bad(body, path="/line-col")
        self.assertIn("invalid JSON", err)
        self.assertTrue(re.search(r"line\W*3\b", err, re.I) or re.search(r"\b3:\d+\b", err),
                        "no line 3 in %r" % err)
        self.assertTrue(re.search(r"col", err, re.I) or re.search(r"\b3:\d+\b", err),
                        "no column in %r" % err)
        self.assert_rejected_logged(400, "/line-col", port, "invalid_json")

    def test_trailing_garbage(self):
        for body in (b'{"action":"MUST_NOT_RUN"} x', b'{"action":"MUST_NOT_RUN"}{}',
                     b'{"action":"MUST_NOT_RUN"}]', b'{"action":"MUST_NOT_RUN"}\x00'):
            with self.subTest(body=body):
                err, _ = self.post_bad(body)
                self.assertIn("invalid JSON", err)

    def test_trailing_whitespace_is_fine(self):
        r = h.post_event(self.port, b' \r\n\t{"action":"P2"} \n\r\n\t ')
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["handlers"], 3)

    def test_empty_body(self):
        before = len(self.ran())
        for req in (h.build_request("POST", "/empty", b""),
                    b"POST /empty HTTP/1.1\r\nHost: x\r\n\r\n"):
            with self.subTest(req=req):
                with h.Conn(self.port) as c:
                    c.send(req)
                    json_error(self, c.read_response(), 400)
        self.assert_nothing_ran(before)

    def test_not_an_object(self):
        for body in (b'[{"action":"MUST_NOT_RUN"}]', b'"MUST_NOT_RUN"', b'42', b'null',
                     b'true', b'[]', b'-1.5'):
            with self.subTest(body=body):
                err, port = self.post_bad(body, path="/not-object")
                self.assertIn("not a JSON object", err)
                self.assert_rejected_logged(400, "/not-object", port, "not_object")

    def test_missing_or_non_string_action(self):
        for body in (b'{}', b'{"x":1}', b'{"Action":"MUST_NOT_RUN"}', b'{"action":1}',
                     b'{"action":null}', b'{"action":["MUST_NOT_RUN"]}',
                     b'{"action":{"name":"MUST_NOT_RUN"}}', b'{"action":true}'):
            with self.subTest(body=body):
                err, port = self.post_bad(body, path="/no-action")
                self.assertIn("action", err)
                self.assert_rejected_logged(400, "/no-action", port, "no_action")


class Limits(RecordingServer):
    ARGS = ("--max-body", "1k", "--max-header", "2k")

    def padded_event(self, size, action="P1"):
        body = b'{"action":"%s","pad":"' % action.encode()
        body += b"x" * (size - len(body) - 2) + b'"}'
        self.assertEqual(len(body), size)
        return body

    def test_body_at_the_limit_is_accepted(self):
        r = h.post_event(self.port, self.padded_event(1024))
        self.assertEqual(r.status, 200, r)

    def test_content_length_over_limit(self):
        before = len(self.ran())
        with h.Conn(self.port) as c:
            c.send(h.build_request("POST", "/big", self.padded_event(1025, "MUST_NOT_RUN")))
            json_error(self, c.read_response(), 413)
            self.assertTrue(c.closed_by_peer(), "connection left open after 413")
            port = c.local_port()
        self.assert_rejected_logged(413, "/big", port, "too_large")
        self.assert_nothing_ran(before)

    def test_content_length_over_limit_answered_before_the_body(self):
        """The 413 comes from Content-Length alone: no need to send 50 MB first."""
        with h.Conn(self.port) as c:
            c.send(b"POST /huge HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 50000000\r\n\r\n{\"action\":\"MUST")
            json_error(self, c.read_response(timeout=3.0 * h.SLOW), 413)
            self.assertTrue(c.closed_by_peer(), "connection left open after 413")

    def test_chunked_body_growing_over_limit(self):
        before = len(self.ran())
        with h.Conn(self.port) as c:
            c.send(b"POST /chunky HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Transfer-Encoding: chunked\r\n\r\n")
            first = b'{"action":"MUST_NOT_RUN","pad":"'
            c.send(b"200\r\n" + first + b"x" * (0x200 - len(first)) + b"\r\n")
            try:
                for _ in range(4):   # 4 x 512 more bytes: well over 1k
                    c.send(b"200\r\n" + b"x" * 0x200 + b"\r\n")
                    time.sleep(0.02)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the server may have answered and closed already
            json_error(self, c.read_response(), 413)
            self.assertTrue(c.closed_by_peer(), "connection left open after 413")
        self.assert_nothing_ran(before)

    def test_headers_over_limit(self):
        before = len(self.ran())
        with h.Conn(self.port) as c:
            c.send(h.build_request("POST", "/hdr", b'{"action":"MUST_NOT_RUN"}',
                                   {"X-Filler": "y" * 3000}))
            json_error(self, c.read_response(), 431)
            self.assertTrue(c.closed_by_peer(), "connection left open after 431")
            port = c.local_port()
        self.assert_rejected_logged(431, "/hdr", port, "headers_too_large")
        self.assert_nothing_ran(before)

    def test_many_headers_over_limit(self):
        headers = [("X-H%d" % i, "v" * 40) for i in range(60)]   # ~3 KB in many lines
        with h.Conn(self.port) as c:
            c.send(h.build_request("POST", "/", b'{"action":"MUST_NOT_RUN"}', headers))
            json_error(self, c.read_response(), 431)
            self.assertTrue(c.closed_by_peer(), "connection left open after 431")

    def test_long_request_line_over_limit(self):
        with h.Conn(self.port) as c:
            c.send(h.build_request("POST", "/" + "p" * 3000, b'{"action":"MUST_NOT_RUN"}'))
            json_error(self, c.read_response(), 431)

    def test_headers_under_limit_accepted(self):
        req = h.build_request("POST", "/", b'{"action":"P1"}', {"X-Filler": "y" * 1700})
        self.assertLess(req.index(b"\r\n\r\n") + 4, 2048)
        with h.Conn(self.port) as c:
            c.send(req)
            self.assertEqual(c.read_response().status, 200)

    def test_default_header_limit_is_32k(self):
        tmp = h.TempDir()
        try:
            with h.Server(tmp.script("x.lua", "on('*', function() end)")) as srv:
                with h.Conn(srv.port) as c:
                    c.send(h.build_request("POST", "/", b'{"action":"A"}',
                                           {"X-Filler": "y" * 30000}))
                    self.assertEqual(c.read_response().status, 200)
                with h.Conn(srv.port) as c:
                    c.send(h.build_request("POST", "/", b'{"action":"A"}',
                                           {"X-Filler": "y" * 34000}))
                    json_error(self, c.read_response(), 431)
        finally:
            tmp.cleanup()


class Auth(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.script = RECORD_SCRIPT
        cls.srv = h.Server(cls.script, "--token", "s3cr3t-T0ken", "--ack", "handled",
                           env={"OUT_DIR": cls.tmp.path}).start()
        cls.hdr = h.Server(cls.script, "--token", "hdr-secret", "--auth-header",
                           "X-Webhook-Secret", "--ack", "handled",
                           env={"OUT_DIR": cls.tmp.path}).start()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop(check=True)
            cls.hdr.stop(check=True)
        finally:
            cls.tmp.cleanup()

    def ran(self):
        return [l.split(" ")[0] for l in self.tmp.read_lines("ran.txt")]

    def test_token_and_bearer_accepted(self):
        # the bare secret too: Label Studio's header value is free text
        for value in ("Token s3cr3t-T0ken", "Bearer s3cr3t-T0ken", "s3cr3t-T0ken"):
            with self.subTest(value=value):
                r = h.post_event(self.srv.port, b'{"action":"P1"}', headers={"Authorization": value})
                self.assertEqual(r.status, 200, r)
                self.assertEqual(r.json()["handlers"], 2)

    def test_header_name_is_case_insensitive(self):
        r = h.post_event(self.srv.port, b'{"action":"P1"}',
                         headers={"authorization": "Token s3cr3t-T0ken"})
        self.assertEqual(r.status, 200, r)

    def test_missing_or_wrong_token(self):
        before = len(self.ran())
        for headers in ({}, {"Authorization": "Token wrong"}, {"Authorization": "Bearer wrong"},
                        {"Authorization": "Token s3cr3t-T0ke"},
                        {"Authorization": "Token s3cr3t-T0kenX"},
                        {"Authorization": "Token S3CR3T-T0KEN"},
                        {"Authorization": "Basic czNjcjN0LVQwa2Vu"},
                        {"Authorization": "Token "}, {"Authorization": ""},
                        {"Authorization": "s3cr3t-T0ke"}, {"Authorization": "s3cr3t-T0kenX"},
                        {"X-Token": "s3cr3t-T0ken"}):
            with self.subTest(headers=headers):
                r = h.post_event(self.srv.port, b'{"action":"MUST_NOT_RUN"}', path="/auth",
                                 headers=headers)
                json_error(self, r, 401)
        line = self.srv.wait_log(lambda e: e.get("msg") == "rejected" and e.get("status") == 401
                                 and e.get("path") == "/auth",
                                 what="a 'rejected' 401 line with path /auth")
        self.assertEqual(line.get("reason"), "unauthorized", line)
        self.assertEqual(line.get("level"), "warn", line)
        r = h.post_event(self.srv.port, SENTINEL, headers={"Authorization": "Token s3cr3t-T0ken"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.ran()[before:], ["SENTINEL"], "an unauthorized request ran")

    def test_invalid_body_without_token_is_401(self):
        """Auth comes before the body is looked at."""
        r = h.post_event(self.srv.port, b'not json')
        json_error(self, r, 401)

    def test_healthz_needs_no_token(self):
        r = h.request(self.srv.port, "GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json(), {"ok": True})

    def test_auth_header_option(self):
        for value in ("hdr-secret", "Token hdr-secret", "Bearer hdr-secret"):
            with self.subTest(value=value):
                r = h.post_event(self.hdr.port, b'{"action":"P1"}',
                                 headers={"X-Webhook-Secret": value})
                self.assertEqual(r.status, 200, r)
        r = h.post_event(self.hdr.port, b'{"action":"P1"}', headers={"x-webhook-secret": "hdr-secret"})
        self.assertEqual(r.status, 200, r)

    def test_auth_header_option_rejects(self):
        before = len(self.ran())
        for headers in ({}, {"Authorization": "Token hdr-secret"},
                        {"Authorization": "Bearer hdr-secret"},
                        {"X-Webhook-Secret": "wrong"}, {"X-Webhook-Secret": "hdr-secre"},
                        {"X-Other": "hdr-secret"}):
            with self.subTest(headers=headers):
                r = h.post_event(self.hdr.port, b'{"action":"MUST_NOT_RUN"}', headers=headers)
                json_error(self, r, 401)
        r = h.post_event(self.hdr.port, SENTINEL, headers={"X-Webhook-Secret": "hdr-secret"})
        self.assertEqual(r.status, 200, r)
        self.assertEqual(self.ran()[before:], ["SENTINEL"], "an unauthorized request ran")


class KeepAliveAndPipelining(RecordingServer):
    def test_thousand_requests_on_one_connection(self):
        ids = set()
        before = len(self.ran())
        with h.Conn(self.port) as c:
            for i in range(1000):
                r = c.request("POST", "/", b'{"action":"P%d","i":%d}' % (i % 20 + 1, i))
                self.assertEqual(r.status, 200, "request %d: %r" % (i, r))
                self.assertEqual(r.json()["handlers"], i % 20 + 2, "request %d" % i)
                ids.add(r.json()["id"])
        self.assertEqual(len(ids), 1000)
        self.assertEqual(len(self.ran()) - before, 1000)

    def test_pipelined_twenty(self):
        reqs = b"".join(h.build_request("POST", "/", b'{"action":"P%d"}' % k)
                        for k in range(1, 21))
        with h.Conn(self.port) as c:
            c.send(reqs)   # one write
            got = []
            for _ in range(20):
                r = c.read_response()
                self.assertEqual(r.status, 200, r)
                got.append(r.json()["handlers"])
        self.assertEqual(got, [k + 1 for k in range(1, 21)], "answers out of order")

    def test_pipelined_mixed(self):
        reqs = (h.build_request("POST", "/", b'{"action":"P4"}')
                + h.build_request("GET", "/healthz")
                + h.build_request("POST", "/", b'{"action":')        # invalid JSON
                + h.build_request("POST", "/", b'{"action":"P7"}')
                + h.build_request("GET", "/hook")                      # 405
                + h.build_request("POST", "/", b'{"action":"P9"}'))
        with h.Conn(self.port) as c:
            c.send(reqs)
            rs = [c.read_response() for _ in range(6)]
        self.assertEqual([r.status for r in rs], [200, 200, 400, 200, 405, 200], rs)
        self.assertEqual(rs[0].json()["handlers"], 5)
        self.assertEqual(rs[1].json(), {"ok": True})
        self.assertEqual(rs[3].json()["handlers"], 8)
        self.assertEqual(rs[5].json()["handlers"], 10)

    def test_pipelined_order_with_slow_handler(self):
        """--ack handled: the first event's handler takes 0.2 s; later answers wait for it."""
        reqs = (h.build_request("POST", "/", b'{"action":"SLOW"}')
                + h.build_request("POST", "/", b'{"action":"P3"}')
                + h.build_request("POST", "/", b'{"action":"P5"}'))
        with h.Conn(self.port) as c:
            c.send(reqs)
            got = [c.read_response().json()["handlers"] for _ in range(3)]
        self.assertEqual(got, [2, 4, 6])

    def test_pipelined_byte_by_byte(self):
        reqs = h.build_request("POST", "/", b'{"action":"P2"}') * 2
        with h.Conn(self.port) as c:
            for i in range(len(reqs)):
                c.send(reqs[i:i + 1])
            for _ in range(2):
                r = c.read_response()
                self.assertEqual((r.status, r.json()["handlers"]), (200, 3))

    def test_connection_close(self):
        with h.Conn(self.port) as c:
            r = c.request("POST", "/", b'{"action":"P1"}', {"Connection": "close"})
            self.assertEqual(r.status, 200, r)
            self.assertTrue(c.closed_by_peer(), "server kept the connection after Connection: close")

    def test_keepalive_survives_errors(self):
        """A 400 or 405 is an answer, not a broken connection: the next request works."""
        with h.Conn(self.port) as c:
            self.assertEqual(c.request("POST", "/", b'[1]').status, 400)
            self.assertEqual(c.request("GET", "/").status, 405)
            r = c.request("POST", "/", b'{"action":"P1"}')
            self.assertEqual(r.status, 200, r)

    def test_chunked_body(self):
        body = json.dumps({"action": "CHUNKED", "list": list(range(1, 501)), "tail": "end"}).encode()
        head = (b"POST /chunked HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"X-Body-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n" % len(body))
        with h.Conn(self.port) as c:
            # all at once, odd chunk sizes
            c.send(head + h.chunked(body, [1, 7, 100, 3]))
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["handlers"], 2)
            # in separate writes with pauses, on the same connection
            enc = h.chunked(body, [50])
            c.send(head)
            for i in range(0, len(enc), 97):
                c.send(enc[i:i + 97])
                time.sleep(0.002)
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["handlers"], 2)

    def test_expect_100_continue(self):
        body = b'{"action":"P6"}'
        with h.Conn(self.port) as c:
            c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
            r = c.read_response(timeout=2.0 * h.SLOW)     # before we send the body
            self.assertEqual(r.status, 100, r)
            self.assertEqual(r.version, "HTTP/1.1")
            c.send(body)
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertEqual(r.json()["handlers"], 7)


class ReadTimeout(unittest.TestCase):
    """--read-timeout 1: stalled clients are cut off after ~1 s without delaying others."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.srv = h.Server(cls.tmp.script("x.lua", "on('*', function() end)"),
                           "--read-timeout", "1", "--ack", "handled").start()
        cls.port = cls.srv.port

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop(check=True)
        finally:
            cls.tmp.cleanup()

    def assert_cut_off(self, conn, t_first_byte, what):
        outcome, _ = read_timeout_outcome(conn, timeout=1.0 + 5.0 * h.SLOW)
        elapsed = time.monotonic() - t_first_byte
        self.assertNotEqual(outcome, "open", "%s: still open after %.2f s" % (what, elapsed))
        self.assertGreaterEqual(elapsed, 0.9, "%s: cut off too early (%.2f s)" % (what, elapsed))
        # generous for a loaded machine; far below --idle-timeout's default
        self.assertLess(elapsed, 1.0 + 3.0 * h.SLOW, "%s: cut off late (%.2f s)" % (what, elapsed))
        return outcome

    def test_half_request_stalls_others_served(self):
        stalled = h.Conn(self.port)
        try:
            t0 = time.monotonic()
            stalled.send(b"POST /stall HTTP/1.1\r\nHost: x\r\nContent-Le")
            # others are served meanwhile (served at all: a loop blocked by the stalled client
            # would answer nothing until the cut-off; how fast is not the point)
            for i in range(20):
                r = h.post_event(self.port, b'{"action":"OTHER"}')
                self.assertEqual(r.status, 200, r)
                r = h.request(self.port, "GET", "/healthz")
                self.assertEqual(r.status, 200, r)
            self.assert_cut_off(stalled, t0, "stalled headers")
        finally:
            stalled.close()
        # and the server goes on
        self.assertEqual(h.post_event(self.port, b'{"action":"AFTER"}').status, 200)

    def test_trickled_headers_cut_after_timeout(self):
        """The header deadline counts from the first byte, however busy the client is."""
        c = h.Conn(self.port)
        try:
            head = b"POST /trickle HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
            t0 = time.monotonic()
            for i in range(len(head)):
                if time.monotonic() - t0 > 1.0 + 2.0 * h.SLOW:
                    break
                try:
                    c.send(head[i:i + 1])
                except (BrokenPipeError, ConnectionResetError):
                    break
                # did the server already give up on us?
                r, _, _ = select_readable(c.sock, 0.1)
                if r:
                    break
            self.assert_cut_off(c, t0, "trickled headers")
        finally:
            c.close()

    def test_stalled_body(self):
        c = h.Conn(self.port)
        try:
            c.send(b"POST /body HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: 100\r\n\r\n{\"action\":")
            t0 = time.monotonic()
            self.assert_cut_off(c, t0, "stalled body")
        finally:
            c.close()

    def test_slow_but_steady_body_is_fine(self):
        """During the body the limit is per read: pieces 0.4 s apart over ~1.6 s pass."""
        body = b'{"action":"STEADY","pad":"' + b"z" * 40 + b'"}'
        with h.Conn(self.port) as c:
            c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body))
            step = len(body) // 5 + 1
            for i in range(0, len(body), step):
                time.sleep(0.4)
                c.send(body[i:i + step])
            r = c.read_response()
            self.assertEqual(r.status, 200, r)

    def test_408_counted(self):
        c = h.Conn(self.port)
        try:
            c.send(b"POST /x HTTP/1.1\r\n")
            t0 = time.monotonic()
            self.assert_cut_off(c, t0, "stalled request line")
        finally:
            c.close()
        m = h.get_metrics(self.port)
        self.assertGreaterEqual(m.get("luahook_events_rejected_total", reason="timeout"), 1,
                                m.text)


def select_readable(sock, timeout):
    return select.select([sock], [], [], timeout)


class IdleTimeout(unittest.TestCase):
    def test_idle_keepalive_connection_closed(self):
        with h.TempDir() as tmp:
            with h.Server(tmp.script("x.lua", "on('*', function() end)"),
                          "--idle-timeout", "1") as srv:
                with h.Conn(srv.port) as c:
                    # active: a request every 0.4 s for 2 s keeps it open
                    for _ in range(5):
                        self.assertEqual(c.request("POST", "/", b'{"action":"A"}').status, 200)
                        time.sleep(0.4)
                    t0 = time.monotonic()
                    self.assertTrue(c.closed_by_peer(1.0 + 5.0 * h.SLOW),
                                    "idle connection not closed")
                    elapsed = time.monotonic() - t0
                    self.assertGreaterEqual(elapsed, 0.5, "closed too early: %.2f s" % elapsed)
                    self.assertLess(elapsed, 1.0 + 3.0 * h.SLOW, "closed late: %.2f s" % elapsed)


class Concurrency(unittest.TestCase):
    def test_two_hundred_concurrent_connections(self):
        with h.TempDir() as tmp:
            with h.Server(tmp.script("x.lua", "on('*', function() end)")) as srv:
                conns = []
                try:
                    for _ in range(200):
                        conns.append(h.Conn(srv.port))
                    # all 200 accepted and open at once (the metrics request makes 201)
                    def counted():
                        m = h.get_metrics(srv.port)
                        return m.get("luahook_connections_open") >= 201 and m
                    h.wait_until(counted, what="luahook_connections_open >= 201")
                    reqs = [h.build_request("POST", "/c%d" % i, b'{"action":"C","i":%d}' % i)
                            for i in range(200)]
                    # send on all first, then read all: the server has 200 requests in flight
                    for c, req in zip(conns, reqs):
                        c.send(req)
                    ids = set()
                    for i, c in enumerate(conns):
                        r = c.read_response()
                        self.assertEqual(r.status, 200, "connection %d: %r" % (i, r))
                        ids.add(r.json()["id"])
                    self.assertEqual(len(ids), 200)
                finally:
                    for c in conns:
                        c.close()
                m = h.wait_until(lambda: (lambda m: m.get("luahook_connections_open") == 1 and m)(
                    h.get_metrics(srv.port)), what="luahook_connections_open back to 1")
                self.assertEqual(m.get("luahook_events_received_total", action="C"), 200)

    def test_two_hundred_concurrent_threads(self):
        with h.TempDir() as tmp:
            with h.Server(tmp.script("x.lua", "on('*', function() end)")) as srv:
                results = [None] * 200
                barrier = threading.Barrier(200, timeout=30)

                def worker(i):
                    try:
                        with h.Conn(srv.port) as c:
                            barrier.wait()
                            results[i] = c.request("POST", "/", b'{"action":"T"}').status
                    except Exception as e:  # recorded, asserted below
                        results[i] = repr(e)

                threads = [threading.Thread(target=worker, args=(i,)) for i in range(200)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
                self.assertEqual(results, [200] * 200)

    def test_max_connections(self):
        with h.TempDir() as tmp:
            with h.Server(tmp.script("x.lua", "on('*', function() end)"),
                          "--max-connections", "5") as srv:
                held = []
                try:
                    for _ in range(5):   # all five accepted and working
                        held.append(open_served(srv.port))
                    extra = h.Conn(srv.port)
                    try:
                        r = read_overload(extra)
                        self.assertEqual(r.status, 503, r)
                        self.assertIsNotNone(r.header("retry-after"), r)
                        self.assertRegex(r.header("retry-after"), r"^\d+$")
                        self.assertTrue(extra.closed_by_peer(), "503 connection left open")
                    finally:
                        extra.close()
                    # the five still work
                    for c in held:
                        self.assertEqual(c.request("POST", "/", b'{"action":"A"}').status, 200)
                    held.pop().close()
                    # a slot is free again: a new connection is served (give the close a moment)
                    def served():
                        try:
                            with h.Conn(srv.port) as c:
                                r = c.request("GET", "/healthz")
                                return r.status == 200
                        except (OSError, h.ConnectionClosed):
                            return False
                    h.wait_until(served, what="a connection served after one closed")
                finally:
                    for c in held:
                        c.close()
                # the closes reach the server a moment later: until then, 503 is right
                m = h.wait_until(lambda: try_metrics(srv.port), what="GET /metrics answered")
                self.assertGreaterEqual(m.get("luahook_events_rejected_total", reason="overload"),
                                        1, m.text)


# Every 503 this module's helpers have seen: an overload rejection the server must have counted.
SEEN_503 = [0]


def open_served(port, timeout=3.0 * h.SLOW):
    """A keep-alive connection on which GET /healthz got its 200. Retries while the server
    answers 503: connections the client closed a moment ago may still count as open."""
    deadline = time.monotonic() + timeout
    while True:
        c = h.Conn(port)
        try:
            r = c.request("GET", "/healthz")
            if r.status == 200:
                return c
            SEEN_503[0] += r.status == 503
            last = r
        except (OSError, h.ConnectionClosed) as e:
            last = e
        c.close()
        if time.monotonic() > deadline:
            raise AssertionError("no connection served within %.1f s: %r" % (timeout, last))
        time.sleep(0.02)


def read_overload(conn):
    """Reads the 503 an over-limit connection gets: first without sending (a server may answer
    right after accept), else after sending a request."""
    try:
        return conn.read_response(timeout=0.5 * h.SLOW)
    except socket.timeout:
        pass
    try:
        conn.send(h.build_request("GET", "/healthz"))
    except (BrokenPipeError, ConnectionResetError):
        pass
    return conn.read_response()


class MetricsCounters(unittest.TestCase):
    SCRIPT = h.lua_path(__file__, "metrics.lua")

    def test_counters_move(self):
        with h.TempDir() as tmp:
            args = ("--token", "tk", "--max-body", "1k", "--max-header", "2k",
                    "--read-timeout", "1", "--max-connections", "6", "--ack", "handled")
            with h.Server(self.SCRIPT, *args) as srv:
                port = srv.port
                auth = {"Authorization": "Bearer tk"}
                base = metrics(port, auth)
                SEEN_503[0] = 0

                def post(body, status, headers=auth, path="/"):
                    r = h.post_event(port, body, headers=headers, path=path)
                    self.assertEqual(r.status, status, r)

                for _ in range(3):
                    post(b'{"action":"M_OK"}', 200)
                for _ in range(2):
                    post(b'{"action":"M_ERR"}', 500)
                post(b'{"action":"M_MIX"}', 500)
                post(b'{"action":"M_NONE"}', 200)
                post(b'{"action":', 400)
                post(b'{"action":"x",}', 400)
                post(b'[1]', 400)
                post(b'{}', 400)
                post(b'{"action":7}', 400)
                post(b'{"action":"M_OK"}', 401, headers={})
                post(b'{"action":"M_OK","p":"' + b"x" * 2000 + b'"}', 413)
                post(b'{"action":"M_OK"}', 431, headers=dict(auth, **{"X-Fill": "f" * 3000}))
                r = h.request(port, "DELETE", "/x", headers=auth)
                self.assertEqual(r.status, 405, r)
                with h.Conn(port) as c:          # timeout
                    c.send(b"POST / HTTP/1.1\r\nHost: x\r\n")
                    outcome, _ = read_timeout_outcome(c, 4.0 * h.SLOW)
                    self.assertIn(outcome, ("408", "closed"))
                # earlier connections are closed; let the server see it before filling up
                h.wait_until(lambda: (lambda m: m and m.get("luahook_connections_open") == 1)(
                    try_metrics_auth(port, auth)), what="connections_open back to 1")
                held = []
                try:
                    for _ in range(6):                   # overload: fill every slot
                        held.append(open_served(port))
                    with h.Conn(port) as extra:
                        self.assertEqual(read_overload(extra).status, 503)
                        SEEN_503[0] += 1
                    m = metrics(port_of(held[0]), auth, conn=held[0])
                    self.assertGreaterEqual(m.get("luahook_connections_open"), 6, m.text)
                finally:
                    for c in held:
                        c.close()

                def settled():
                    m = try_metrics(port, auth)   # None: a 503 while the closes are on their way
                    return m is not None and m.get("luahook_connections_open") == 1 and m
                m = h.wait_until(settled, what="connections_open back to 1")

                def delta(name, **labels):
                    return m.get(name, **labels) - base.get(name, **labels)

                self.assertEqual(delta("luahook_events_received_total", action="M_OK"), 3, m.text)
                self.assertEqual(delta("luahook_events_received_total", action="M_ERR"), 2, m.text)
                self.assertEqual(delta("luahook_events_received_total", action="M_MIX"), 1, m.text)
                self.assertEqual(delta("luahook_events_received_total", action="M_NONE"), 1, m.text)
                rej = "luahook_events_rejected_total"
                self.assertEqual(delta(rej, reason="invalid_json"), 2, m.text)
                self.assertEqual(delta(rej, reason="not_object"), 1, m.text)
                self.assertEqual(delta(rej, reason="no_action"), 2, m.text)
                self.assertEqual(delta(rej, reason="unauthorized"), 1, m.text)
                self.assertEqual(delta(rej, reason="too_large"), 1, m.text)
                self.assertEqual(delta(rej, reason="headers_too_large"), 1, m.text)
                self.assertEqual(delta(rej, reason="method"), 1, m.text)
                self.assertEqual(delta(rej, reason="timeout"), 1, m.text)
                # one deliberate overload, plus any 503 a retry above ran into
                self.assertGreaterEqual(SEEN_503[0], 1)
                self.assertEqual(delta(rej, reason="overload"), SEEN_503[0], m.text)
                runs = "luahook_handler_runs_total"
                self.assertEqual(delta(runs, action="M_OK", outcome="ok"), 6, m.text)
                self.assertEqual(delta(runs, action="M_OK", outcome="error"), 0, m.text)
                self.assertEqual(delta(runs, action="M_ERR", outcome="error"), 2, m.text)
                self.assertEqual(delta(runs, action="M_ERR", outcome="ok"), 0, m.text)
                self.assertEqual(delta(runs, action="M_MIX", outcome="error"), 1, m.text)
                self.assertEqual(delta(runs, action="M_MIX", outcome="ok"), 1, m.text)
                self.assertEqual(delta(runs, action="M_NONE", outcome="ok"), 0, m.text)
                # histogram: one observation per handler run
                hist = "luahook_handler_duration_seconds"
                self.assertEqual(m.get(hist + "_count", action="M_OK"), 6, m.text)
                self.assertEqual(m.get(hist + "_count", action="M_ERR"), 2, m.text)
                self.assertGreaterEqual(m.get(hist + "_sum", action="M_OK"), 0, m.text)
                buckets = sorted(
                    (float("inf") if dict(l)["le"] == "+Inf" else float(dict(l)["le"]), v)
                    for (n, l), v in m.samples.items()
                    if n == hist + "_bucket" and dict(l).get("action") == "M_OK")
                self.assertGreaterEqual(len(buckets), 2, m.text)
                self.assertEqual(buckets[-1], (float("inf"), 6), m.text)
                counts = [v for _, v in buckets]
                self.assertEqual(counts, sorted(counts), "buckets are not cumulative")
                self.assertEqual(m.get("luahook_vm_generation"), 1, m.text)


def metrics(port, headers, conn=None):
    if conn is not None:
        r = conn.request("GET", "/metrics", headers=headers)
    else:
        r = h.request(port, "GET", "/metrics", headers=headers)
    if r.status != 200:
        raise AssertionError("GET /metrics: %r" % r)
    return h.Metrics(r.body.decode())


def try_metrics(port, headers=None):
    """Metrics, or None when the server answers anything else (e.g. 503 while full)."""
    try:
        r = h.request(port, "GET", "/metrics", headers=headers)
    except (OSError, h.ConnectionClosed):
        return None
    SEEN_503[0] += r.status == 503
    return h.Metrics(r.body.decode()) if r.status == 200 else None


def try_metrics_auth(port, headers):
    return try_metrics(port, headers)


def port_of(conn):
    return conn.sock.getpeername()[1]


if __name__ == "__main__":
    h.main()
