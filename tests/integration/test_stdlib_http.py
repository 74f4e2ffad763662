"""The `http` library of handler scripts, against local upstream servers (upstream.py):
GET/POST/PUT/PATCH/DELETE, json bodies, headers, query strings, response headers, res:json(),
non-2xx answers, timeouts, refused connections, unknown hosts, HTTPS verification (default
on, ca_file, insecure, wrong host), large responses and max_size, redirects, connection
reuse, misuse, http.* at load time, non-blocking waits, and 500 concurrent slow calls."""

import json
import sys
import threading
import time
import unittest

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
import harness as h  # noqa: E402
import upstream as u  # noqa: E402

# The handler scripts: tests/fixtures/integration/test_stdlib_http/ (prelude.lua holds the
# helpers that http.lua uses; TempDir.fixture joins them).


def output(res):
    return res.stdout.decode("utf-8", "replace") + res.stderr.decode("utf-8", "replace")


class HttpLib(unittest.TestCase):
    """One server (--ack handled) with every handler; one event per test."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = h.TempDir()
        cls.cert = u.SelfSignedCert(cls.tmp.path, "good")
        cls.other = u.SelfSignedCert(cls.tmp.path, "other", cn="other.example",
                                     san="DNS:other.example")
        cls.up = u.Upstream().start()
        cls.ups = u.Upstream(tls=cls.cert).start()
        cls.upx = u.Upstream(tls=cls.other).start()
        cls.refused = u.refused_port()
        env = {"UP": cls.up.base, "UPS": cls.ups.base, "UPS_PORT": cls.ups.port,
               "UPX": cls.upx.base, "CA": cls.cert.cert, "CAX": cls.other.cert,
               "REFUSED": cls.refused}
        script = cls.tmp.fixture(__file__, "prelude.lua", "http.lua")
        try:
            cls.srv = h.Server(script, "--ack", "handled", env=env).start()
        except BaseException:
            cls.stop_upstreams()
            raise

    @classmethod
    def stop_upstreams(cls):
        for up in (cls.up, cls.ups, cls.upx):
            up.stop()

    @classmethod
    def tearDownClass(cls):
        try:
            cls.srv.stop(check=True)
        finally:
            cls.stop_upstreams()
            cls.tmp.cleanup()

    def run_event(self, action, timeout=30.0 * h.SLOW, handlers=1, **fields):
        """Posts `action` and returns the answer body; the answer must be a 200 saying that
        `handlers` handlers ran (each action here has one; a 200 with "handlers": 0 would
        mean that nothing was checked)."""
        r = h.post_event(self.srv.port, {"action": action, **fields}, timeout=timeout)
        if r.status != 200:
            self.fail("%s answered %d: %s\n---- luahook stderr (tail) ----\n%s"
                      % (action, r.status, r.body.decode("utf-8", "replace"),
                         self.srv.stderr_text()[-3000:]))
        body = r.json()
        self.assertIs(body.get("ok"), True, body)
        self.assertEqual(body.get("handlers"), handlers, "%s: %r" % (action, body))
        return body

    def failure(self, action):
        """Posts an event whose only handler must fail; returns its error message."""
        r = h.post_event(self.srv.port, {"action": action}, timeout=30.0 * h.SLOW)
        self.assertEqual(r.status, 500, r)
        self.assertEqual(r.json().get("handlers"), 1, r)
        failed = r.json().get("failed")
        self.assertIsInstance(failed, list, r)
        self.assertEqual(len(failed), 1, failed)
        self.assertIsInstance(failed[0].get("error"), str, failed)
        return failed[0]["error"]

    # -- requests ------------------------------------------------------------------------

    def test_get_with_query_and_headers(self):
        body = self.run_event("GET_QUERY")
        recs = self.up.find(body["id"])
        self.assertEqual(len(recs), 1, recs)
        self.assertEqual(recs[0]["path"], "/echo?a=1&b=x%20y&tag=" + body["id"])
        # headers arrive exactly as given (name case included)
        names = [k for k, _ in recs[0]["header_list"]]
        self.assertIn("X-Test", names, recs[0]["header_list"])

    def test_query_escaping(self):
        self.run_event("QUERY_ESCAPES")

    def test_post_json(self):
        body = self.run_event("POST_JSON")
        recs = self.up.find(body["id"])
        self.assertEqual(len(recs), 1, recs)
        sent = json.loads(recs[0]["body"])
        self.assertEqual(sent, {"a": 1, "big": 9007199254740993, "s": "caf\u00e9",
                                "list": [1, 2, 3], "t": True, "f": 0.5})
        self.assertIsInstance(sent["big"], int)

    def test_json_with_own_content_type(self):
        self.run_event("POST_JSON_OWN_CTYPE")

    def test_post_raw_body(self):
        self.run_event("POST_BODY")

    def test_methods(self):
        self.run_event("METHODS")

    def test_response_headers(self):
        self.run_event("RESPONSE_HEADERS")

    def test_non_2xx_is_a_response(self):
        self.run_event("NON_2XX")

    def test_res_json(self):
        self.run_event("RES_JSON")

    # -- failures ------------------------------------------------------------------------

    def test_timeout(self):
        t0 = time.monotonic()
        body = self.run_event("TIMEOUT")
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 0.45, "gave up before timeout = 0.5")
        # generous for a loaded machine, and still far below the upstream's 30 s
        self.assertLess(elapsed, 0.5 + 3.0 * h.SLOW, "timeout = 0.5 took %.2f s" % elapsed)
        self.assertEqual(len(self.up.find(body["id"])), 1)

    def test_connection_refused(self):
        self.run_event("REFUSED")

    def test_error_names_the_url_without_its_query(self):
        self.run_event("ERR_URL_WITH_QUERY")

    def test_unknown_host(self):
        self.run_event("UNKNOWN_HOST")

    # -- sizes -----------------------------------------------------------------------------

    def test_large_response(self):
        self.run_event("BIG")

    def test_max_size(self):
        self.run_event("MAX_SIZE")

    def test_default_max_size_16_mib(self):
        self.run_event("DEFAULT_MAX_SIZE")

    # -- redirects, reuse ------------------------------------------------------------------

    def test_redirects(self):
        self.run_event("REDIRECT")

    def test_connection_reuse(self):
        before = self.up.connections
        body = self.run_event("REUSE")
        recs = self.up.find(body["id"])
        self.assertEqual(len(recs), 6, recs)
        self.assertEqual(len({r["client_port"] for r in recs}), 1,
                         "sequential requests used %d connections"
                         % len({r["client_port"] for r in recs}))
        self.assertLessEqual(self.up.connections - before, 1,
                             "the upstream accepted %d connections for one handler"
                             % (self.up.connections - before))

    def test_connection_reuse_tls(self):
        body = self.run_event("REUSE_TLS")
        recs = self.ups.find(body["id"])
        self.assertEqual(len(recs), 4, recs)
        self.assertEqual(len({r["client_port"] for r in recs}), 1, recs)

    # -- misuse ----------------------------------------------------------------------------

    def test_misuse_raises(self):
        err = self.failure("MISUSE_NO_URL")
        self.assertTrue("url" in err or "#1" in err, "http.get() error names no argument: %r" % err)
        err = self.failure("MISUSE_URL_TYPE")
        self.assertIn("url", err, "http.request{url=1} error does not name url")
        err = self.failure("MISUSE_NO_TABLE")
        self.assertTrue("#1" in err or "table" in err, "http.request() error: %r" % err)
        # the server is fine afterwards
        self.run_event("QUICK_CALL")

    # -- non-blocking ------------------------------------------------------------------------

    def test_waiting_handler_does_not_block_the_loop(self):
        """While a handler waits on an upstream that answers only when the test says so,
        /healthz and another event are answered: an order, not a speed."""
        result = {}

        def slow():
            try:
                result["r"] = h.post_event(self.srv.port, {"action": "SLOW_CALL"},
                                           timeout=30.0 * h.SLOW)
            except Exception as e:       # reported below
                result["e"] = e

        t = threading.Thread(target=slow, daemon=True)
        t.start()
        try:
            # wait until the handler is parked on the upstream
            self.assertTrue(u.wait_for(lambda: any(r["path"] == "/gate/slow"
                                                   for r in self.up.requests), 5.0 * h.SLOW),
                            "the SLOW_CALL request never reached the upstream")
            for _ in range(3):
                r = h.request(self.srv.port, "GET", "/healthz")
                self.assertEqual(r.status, 200, r)
            self.run_event("QUICK_CALL")
            self.assertTrue(t.is_alive(), "SLOW_CALL was answered before its upstream was: %r"
                            % result)
        finally:
            self.up.open_gate("slow")
            t.join(30 * h.SLOW)
        self.assertNotIn("e", result, result)
        self.assertEqual(result["r"].status, 200, result["r"])
        self.assertEqual(result["r"].json().get("handlers"), 1, result["r"])


class LoadTime(unittest.TestCase):
    def test_http_at_load_time_is_refused(self):
        with h.TempDir() as tmp:
            for name, src in (
                ("get.lua", '-- top level\nlocal r = http.get("http://127.0.0.1:1/")\non("A", function() end)\n'),
                ("req.lua", '-- top level\nhttp.request{ url = "http://127.0.0.1:1/" }\non("A", function() end)\n'),
            ):
                path = tmp.script(name, src)
                with self.subTest(script=name):
                    res = h.run_luahook("check", path)
                    self.assertEqual(res.returncode, 1, output(res))
                    self.assertIn("inside a handler", output(res))
                    self.assertIn(path, output(res))
                    res = h.run_luahook("serve", "--listen", "127.0.0.1:0", path,
                                        timeout=15 * h.SLOW)
                    self.assertEqual(res.returncode, 1, output(res))
                    self.assertIn("inside a handler", output(res))

    def test_pcall_at_load_time_sees_the_error(self):
        with h.TempDir() as tmp:
            path = tmp.script("p.lua", r'''
local ok, err = pcall(http.get, "http://127.0.0.1:1/")
assert(not ok, "http.get at load time did not raise")
assert(tostring(err):find("inside a handler", 1, true), "message: " .. tostring(err))
on("A", function() end)
''')
            res = h.run_luahook("check", path)
            self.assertEqual(res.returncode, 0, output(res))


class Concurrency(unittest.TestCase):
    N = 500

    def test_500_slow_calls_in_parallel(self):
        """500 handlers each wait on an upstream that answers only once all 500 requests are
        in flight together (which serialised handlers could never reach); /healthz is answered
        meanwhile; then every handler finishes ok. Counts and order, no speed."""
        with h.TempDir() as tmp, u.Upstream() as up:
            script = tmp.fixture(__file__, "conc.lua")
            # the first handler waits until the last one is in: no short deadline for that
            with h.Server(script, "--handler-timeout", "300", env={"UP": up.base}) as srv:
                h.request(srv.port, "GET", "/healthz")
                t0 = time.monotonic()
                try:
                    with h.Conn(srv.port) as c:
                        for i in range(self.N):
                            r = c.request("POST", "/", b'{"action":"CONC"}')
                            self.assertEqual(r.status, 200, r)
                    sent = time.monotonic() - t0
                    self.assertTrue(u.wait_for(lambda: up.inflight >= self.N, 60.0 * h.SLOW),
                                    "only %d of %d calls were waiting on the upstream at once"
                                    % (up.inflight, self.N))
                    # /healthz while they all wait on the upstream
                    for _ in range(5):
                        r = h.request(srv.port, "GET", "/healthz")
                        self.assertEqual(r.status, 200, r)
                    self.assertEqual(up.inflight, self.N, "a call ended before the gate opened")
                finally:
                    up.open_gate("conc")

                def done():
                    m = h.get_metrics(srv.port)
                    ok = m.get("luahook_handler_runs_total", action="CONC", outcome="ok")
                    bad = sum(m.get("luahook_handler_runs_total", action="CONC", outcome=o)
                              for o in ("error", "timeout", "memory"))
                    return (ok + bad >= self.N), ok, bad

                h.wait_until(lambda: done()[0], timeout=60.0 * h.SLOW, interval=0.05,
                             what="%d handlers to finish" % self.N)
                _, ok, bad = done()
                elapsed = time.monotonic() - t0
                print("\n[concurrency] %d events: sent in %.2f s, all handled in %.2f s; "
                      "upstream peak in flight %d" % (self.N, sent, elapsed, up.inflight_peak),
                      file=sys.stderr)
                self.assertEqual(bad, 0, "handlers failed:\n%s" % srv.stderr_text()[-3000:])
                self.assertEqual(ok, self.N)
                self.assertEqual(len(up.find("conc")), self.N)


if __name__ == "__main__":
    h.main()
