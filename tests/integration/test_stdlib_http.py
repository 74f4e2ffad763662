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

# Lua helpers shared by the handler scripts.
PRELUDE = r'''
local UP = env("UP")            -- http://127.0.0.1:PORT
local UPS = env("UPS")          -- https://127.0.0.1:PORT, cert for localhost + 127.0.0.1
local UPS_PORT = env("UPS_PORT")
local UPX = env("UPX")          -- https://127.0.0.1:PORT, cert for other.example only
local CA = env("CA")            -- the certificate of UPS
local CAX = env("CAX")          -- the certificate of UPX
local REFUSED = env("REFUSED")  -- a port nobody listens on

local function show(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

local function eq(got, want, what)
  if got ~= want then
    error((what or "value") .. ": expected " .. show(want) .. ", got " .. show(got), 2)
  end
end

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

-- a successful /echo answer, decoded
local function echo(res, err)
  if not res then error("request failed: " .. tostring(err), 2) end
  eq(res.status, 200, "status")
  local e, jerr = res:json()
  if not e then error("echo answer is not JSON: " .. tostring(jerr), 2) end
  return e
end

-- a failed request: nil, err starting with "METHOD URL: " and naming the cause (one of words);
-- called as failed(prefix, words, http.xxx(...)) so that both results arrive
local function failed(prefix, words, res, err)
  if type(words) == "string" then words = { words } end
  if res ~= nil then
    error("expected nil, err; got a response with status " .. show(res.status), 2)
  end
  if type(err) ~= "string" then error("err is not a string: " .. show(err), 2) end
  if err:sub(1, #prefix) ~= prefix then
    error("err does not start with " .. show(prefix) .. ": " .. show(err), 2)
  end
  for _, w in ipairs(words) do
    if err:find(w, 1, true) then return err end
  end
  error("err names none of " .. table.concat(words, "|") .. ": " .. show(err), 2)
end
'''

SCRIPT = PRELUDE + r'''
on("GET_QUERY", function(ev, ctx)
  local res, err = http.get(UP .. "/echo", {
    query = { b = "x y", a = "1", tag = ctx.id },
    headers = { ["X-Test"] = "v1", ["X-Other"] = "two words" },
  })
  local e = echo(res, err)
  eq(e.method, "GET", "method")
  eq(e.path, "/echo?a=1&b=x%20y&tag=" .. ctx.id, "path with the query")
  eq(e.headers["x-test"], "v1", "header X-Test")
  eq(e.headers["x-other"], "two words", "header X-Other")
  eq(e.body_len, 0, "GET body length")
  eq(res.headers["content-type"], "application/json", "response content-type")
  eq(res.headers["content-length"], tostring(#res.body), "response content-length")
end)

on("QUERY_ESCAPES", function(ev, ctx)
  local tricky = "a&b=c d+e%f/\u{E9}#?"
  local res, err = http.get(UP .. "/echo", { query = { q = tricky, ["k y"] = "v", tag = ctx.id } })
  local e = echo(res, err)
  eq(type(e.args.q), "table", "q arrived")
  eq(#e.args.q, 1, "one q")
  eq(e.args.q[1], tricky, "q decoded by the upstream")
  eq(e.args["k y"] and e.args["k y"][1], "v", "key with a space")
  eq(e.query:find("#", 1, true), nil, "raw # in the query")
  eq(e.query:find(" ", 1, true), nil, "raw space in the query")
end)

on("POST_JSON", function(ev, ctx)
  local res, err = http.post(UP .. "/echo?tag=" .. ctx.id, {
    json = { a = 1, big = 9007199254740993, s = "caf\u{E9}", list = { 1, 2, 3 }, t = true,
             f = 0.5 },
  })
  local e = echo(res, err)
  eq(e.method, "POST", "method")
  eq(e.headers["content-type"], "application/json", "content-type of a json body")
  eq(tonumber(e.headers["content-length"]), e.body_len, "content-length")
  local b, derr = json.decode(e.body)
  if not b then error("the upstream got no JSON: " .. tostring(derr) .. " " .. show(e.body)) end
  eq(b.a, 1, "a")
  eq(math.type(b.big), "integer", "big is an integer")
  eq(b.big, 9007199254740993, "big")
  eq(b.s, "caf\u{E9}", "s")
  eq(#b.list, 3, "#list")
  eq(b.list[3], 3, "list[3]")
  eq(b.t, true, "t")
  eq(b.f, 0.5, "f")
end)

on("POST_JSON_OWN_CTYPE", function(ev, ctx)
  for _, name in ipairs({ "Content-Type", "content-type" }) do
    local res, err = http.post(UP .. "/echo", {
      json = { x = 1 }, headers = { [name] = "application/vnd.api+json" } })
    local e = echo(res, err)
    eq(e.headers["content-type"], "application/vnd.api+json", "content-type given as " .. name)
    eq(json.decode(e.body).x, 1, "body")
  end
end)

on("POST_BODY", function(ev, ctx)
  local body = "raw\0\1\255 bytes\r\n{not json"
  local res, err = http.post(UP .. "/echo", { body = body, headers = { ["Content-Type"] = "text/plain" } })
  local e = echo(res, err)
  eq(e.body_hex, hex(body), "body bytes")
  eq(e.body_len, #body, "body length")
  eq(e.headers["content-type"], "text/plain", "content-type")
end)

on("METHODS", function(ev, ctx)
  local e = echo(http.put(UP .. "/echo", { body = "put-body" }))
  eq(e.method, "PUT", "http.put method")
  eq(e.body, "put-body", "http.put body")
  e = echo(http.patch(UP .. "/echo", { json = { p = 1 } }))
  eq(e.method, "PATCH", "http.patch method")
  eq(json.decode(e.body).p, 1, "http.patch body")
  e = echo(http.delete(UP .. "/echo"))
  eq(e.method, "DELETE", "http.delete method")
  e = echo(http.get(UP .. "/echo"))
  eq(e.method, "GET", "http.get method")
  e = echo(http.post(UP .. "/echo", { body = "" }))
  eq(e.method, "POST", "http.post method")
  e = echo(http.request{ url = UP .. "/echo" })
  eq(e.method, "GET", "http.request default method")
  e = echo(http.request{ method = "PUT", url = UP .. "/echo", body = "req-body",
                         headers = { ["X-Via"] = "request" } })
  eq(e.method, "PUT", "http.request method")
  eq(e.body, "req-body", "http.request body")
  eq(e.headers["x-via"], "request", "http.request headers")
  e = echo(http.request{ method = "POST", url = UP .. "/echo", json = { r = true },
                         query = { z = "1" }, timeout = 5, connect_timeout = 2 })
  eq(e.path, "/echo?z=1", "http.request query")
  eq(json.decode(e.body).r, true, "http.request json")
end)

on("RESPONSE_HEADERS", function(ev, ctx)
  local res, err = http.get(UP .. "/multi")
  if not res then error(err) end
  eq(res.status, 200, "status")
  eq(res.body, "multi", "body")
  eq(res.headers["x-multi"], "a, b", "repeated header joined")
  eq(res.headers["x-mixed-case"], "V", "header under its lower-case name")
  eq(res.headers["X-Mixed-Case"], nil, "header under its original case")
  eq(res.headers["content-type"], "text/plain", "content-type")
  for k, v in pairs(res.headers) do
    eq(type(k), "string", "header name type")
    eq(k, k:lower(), "header name is lower-case")
    eq(type(v), "string", "value type of " .. k)
  end
end)

on("NON_2XX", function(ev, ctx)
  for _, code in ipairs({ 201, 400, 404, 418, 500, 503 }) do
    local res, err = http.get(UP .. "/status/" .. code)
    if not res then error("status " .. code .. " gave nil, " .. tostring(err)) end
    eq(res.status, code, "status")
    eq(math.type(res.status), "integer", "status type")
    eq(res.body, "status " .. code, "body of " .. code)
  end
  local res, err = http.post(UP .. "/status/422", { json = { bad = true } })
  if not res then error("POST 422 gave nil, " .. tostring(err)) end
  eq(res.status, 422, "POST status")
end)

on("RES_JSON", function(ev, ctx)
  local res, err = http.get(UP .. "/json")
  if not res then error(err) end
  local v, jerr = res:json()
  if not v then error("res:json() failed: " .. tostring(jerr)) end
  eq(math.type(v.n), "integer", "n type")
  eq(v.n, 9007199254740993, "n")
  eq(v.neg, math.mininteger, "neg")
  eq(math.type(v.f), "float", "f type")
  eq(v.f, 1.5, "f")
  eq(v.s, "caf\u{E9}", "s")
  eq(#v.list, 3, "#list")
  eq(v.list[2], 2, "list[2]")
  eq(v.nested.ok, true, "nested.ok")
  eq(v.nested.none, json.null, "nested.none")
  local res2 = assert(http.get(UP .. "/notjson"))
  local v2, err2 = res2:json()
  eq(v2, nil, "res:json() of a non-JSON body")
  eq(type(err2), "string", "res:json() err type")
  assert(#err2 > 0, "empty res:json() error")
end)

on("TIMEOUT", function(ev, ctx)
  local url = UP .. "/sleep/3000"
  local res, err = http.get(url, { timeout = 0.5, headers = { ["X-Tag"] = ctx.id } })
  failed("GET " .. url .. ": ", { "timed out" }, res, err)
end)

on("REFUSED", function(ev, ctx)
  local url = "http://127.0.0.1:" .. REFUSED .. "/x"
  failed("GET " .. url .. ": ", { "refused" }, http.get(url))
  failed("POST " .. url .. ": ", { "refused" }, http.post(url, { json = { a = 1 } }))
  failed("DELETE " .. url .. ": ", { "refused" }, http.request{ method = "DELETE", url = url })
end)

-- the URL in the message is the URL as given, query string included
on("ERR_URL_WITH_QUERY", function(ev, ctx)
  -- a query often carries an API key: the message names the URL without it
  local base = "http://127.0.0.1:" .. REFUSED .. "/x"
  local res, err = http.get(base .. "?api_key=s3cr3t&b=two")
  failed("GET " .. base .. ": ", { "refused" }, res, err)
  assert(not err:find("s3cr3t", 1, true), "the query leaked into the error: " .. err)
end)

on("UNKNOWN_HOST", function(ev, ctx)
  local url = "http://nonexistent.invalid/x"
  failed("GET " .. url .. ": ", { "resolve" }, http.get(url))
  local surl = "https://nonexistent.invalid:8443/y"
  failed("PUT " .. surl .. ": ", { "resolve" }, http.put(surl, { body = "b" }))
end)

on("BIG", function(ev, ctx)
  local want = string.rep("0123456789", 500000)
  for _, q in ipairs({ "", "/chunked" }) do
    local res, err = http.get(UP .. "/big/5000000" .. q)
    if not res then error("5 MB" .. q .. ": " .. tostring(err)) end
    eq(res.status, 200, "status")
    eq(#res.body, 5000000, "length of 5 MB" .. q)
    assert(res.body == want, "5 MB body" .. q .. " differs from the pattern")
  end
end)

on("MAX_SIZE", function(ev, ctx)
  for _, q in ipairs({ "", "/chunked" }) do
    local url = UP .. "/big/2000000" .. q
    failed("GET " .. url .. ": ", { "larger than" }, http.get(url, { max_size = 1000000 }))
    -- exactly max_size is fine, one byte more is not
    local res, err = http.get(UP .. "/big/1000" .. q, { max_size = 1000 })
    if not res then error("1000 bytes with max_size 1000" .. q .. ": " .. tostring(err)) end
    eq(#res.body, 1000, "1000 bytes" .. q)
    url = UP .. "/big/1001" .. q
    failed("GET " .. url .. ": ", { "larger than" }, http.get(url, { max_size = 1000 }))
  end
end)

on("DEFAULT_MAX_SIZE", function(ev, ctx)
  local n = 16 * 1024 * 1024
  local res, err = http.get(UP .. "/big/" .. n)
  if not res then error("16 MiB (the default cap) failed: " .. tostring(err)) end
  eq(#res.body, n, "16 MiB length")
  local url = UP .. "/big/" .. (n + 1)
  failed("GET " .. url .. ": ", { "larger than" }, http.get(url))
end)

on("REDIRECT", function(ev, ctx)
  local url = UP .. "/redirect?to=/echo%3Ftag%3D" .. ctx.id
  local res, err = http.get(url)
  if not res then error(err) end
  eq(res.status, 302, "status without follow")
  eq(res.headers.location, "/echo?tag=" .. ctx.id, "location")
  eq(res.body, "moved", "body of the 302")
  res, err = http.get(url, { follow = false })
  if not res then error(err) end
  eq(res.status, 302, "status with follow = false")
  local e = echo(http.get(url, { follow = true }))
  eq(e.path, "/echo?tag=" .. ctx.id, "path after following")
  -- absolute location, 301 and 307
  local abs = UP .. "/echo"
  local enc = abs:gsub(":", "%%3A"):gsub("/", "%%2F")
  for _, code in ipairs({ 301, 307 }) do
    local r2, err2 = http.get(UP .. "/redirect?code=" .. code .. "&to=" .. enc)
    if not r2 then error(err2) end
    eq(r2.status, code, "status " .. code .. " without follow")
    eq(r2.headers.location, abs, "absolute location")
    e = echo(http.get(UP .. "/redirect?code=" .. code .. "&to=" .. enc, { follow = true }))
    eq(e.path, "/echo", "followed " .. code)
  end
end)

on("REUSE", function(ev, ctx)
  local ports = {}
  for i = 1, 5 do
    local e = echo(http.get(UP .. "/echo?tag=" .. ctx.id .. "&i=" .. i))
    ports[#ports + 1] = e.client_port
  end
  -- a POST in between must not cost a new connection either
  local e = echo(http.post(UP .. "/echo?tag=" .. ctx.id .. "&i=6", { json = { i = 6 } }))
  ports[#ports + 1] = e.client_port
  for i = 2, #ports do
    eq(ports[i], ports[1], "client port of request " .. i .. " (ports: " .. table.concat(ports, ",") .. ")")
  end
end)

on("REUSE_TLS", function(ev, ctx)
  local ports = {}
  for i = 1, 4 do
    local e = echo(http.get(UPS .. "/echo?tag=" .. ctx.id .. "&i=" .. i, { ca_file = CA }))
    ports[#ports + 1] = e.client_port
  end
  for i = 2, #ports do
    eq(ports[i], ports[1], "client port of request " .. i .. " (ports: " .. table.concat(ports, ",") .. ")")
  end
end)

on("MISUSE_NO_URL", function(ev, ctx) http.get() end)
on("MISUSE_URL_TYPE", function(ev, ctx) http.request{ url = 1 } end)
on("MISUSE_NO_TABLE", function(ev, ctx) http.request() end)

on("SLOW_CALL", function(ev, ctx)
  local e = echo(http.get(UP .. "/sleep/1500", { headers = { ["X-Tag"] = ctx.id } }))
  eq(e.method, "GET", "method")
end)

on("QUICK_CALL", function(ev, ctx)
  echo(http.get(UP .. "/echo"))
end)

-- HTTPS
on("TLS_VERIFY_DEFAULT", function(ev, ctx)
  local url = UPS .. "/echo"
  failed("GET " .. url .. ": ", { "certificate", "SSL", "TLS" }, http.get(url))
  failed("GET " .. url .. ": ", { "certificate", "SSL", "TLS" }, http.get(url, { insecure = false }))
  failed("POST " .. url .. ": ", { "certificate", "SSL", "TLS" }, http.post(url, { json = { a = 1 } }))
end)

on("TLS_CA_FILE", function(ev, ctx)
  local e = echo(http.get(UPS .. "/echo?x=1", { ca_file = CA }))
  eq(e.path, "/echo?x=1", "path over TLS")
  e = echo(http.post(UPS .. "/echo", { ca_file = CA, json = { tls = true } }))
  eq(e.method, "POST", "POST over TLS")
  eq(json.decode(e.body).tls, true, "json over TLS")
  -- the certificate also names localhost
  e = echo(http.get("https://localhost:" .. UPS_PORT .. "/echo", { ca_file = CA }))
  eq(e.path, "/echo", "https://localhost")
end)

on("TLS_INSECURE", function(ev, ctx)
  local e = echo(http.get(UPS .. "/echo", { insecure = true }))
  eq(e.method, "GET", "insecure GET")
  e = echo(http.get(UPX .. "/echo", { insecure = true }))
  eq(e.method, "GET", "insecure GET, certificate for another host")
end)

on("TLS_WRONG_CA_OR_HOST", function(ev, ctx)
  -- trusted CA but the certificate names other.example, not 127.0.0.1
  local url = UPX .. "/echo"
  failed("GET " .. url .. ": ", { "certificate", "SSL", "TLS" }, http.get(url, { ca_file = CAX }))
  -- a CA that did not sign the server's certificate
  url = UPS .. "/echo"
  failed("GET " .. url .. ": ", { "certificate", "SSL", "TLS" }, http.get(url, { ca_file = CAX }))
end)
'''

CONC_SCRIPT = r'''
local UP = env("UP")
on("CONC", function(ev, ctx)
  local res, err = http.get(UP .. "/sleep/200", { headers = { ["X-Tag"] = "conc" } })
  assert(res, err)
  assert(res.status == 200, "status " .. tostring(res.status))
end)
'''


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
        script = cls.tmp.script("http.lua", SCRIPT)
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
        self.assertLess(elapsed, 0.5 + 1.0 * h.SLOW, "timeout = 0.5 took %.2f s" % elapsed)
        self.assertEqual(len(self.up.find(body["id"])), 1)

    def test_connection_refused(self):
        self.run_event("REFUSED")

    def test_error_names_the_url_without_its_query(self):
        self.run_event("ERR_URL_WITH_QUERY")

    def test_unknown_host(self):
        t0 = time.monotonic()
        self.run_event("UNKNOWN_HOST")
        self.assertLess(time.monotonic() - t0, 10.0 * h.SLOW)

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
        result = {}

        def slow():
            t0 = time.monotonic()
            try:
                result["r"] = h.post_event(self.srv.port, {"action": "SLOW_CALL"},
                                           timeout=30.0 * h.SLOW)
            except Exception as e:       # reported below
                result["e"] = e
            result["elapsed"] = time.monotonic() - t0

        t = threading.Thread(target=slow, daemon=True)
        t.start()
        # wait until the handler is parked on the upstream
        self.assertTrue(u.wait_for(lambda: any(r["path"] == "/sleep/1500"
                                               for r in self.up.requests), 5.0 * h.SLOW),
                        "the SLOW_CALL request never reached the upstream")
        for _ in range(3):
            t0 = time.monotonic()
            r = h.request(self.srv.port, "GET", "/healthz")
            dt = time.monotonic() - t0
            self.assertEqual(r.status, 200, r)
            self.assertLess(dt, 0.5, "/healthz took %.3f s while a handler waited" % dt)
        t0 = time.monotonic()
        self.run_event("QUICK_CALL")
        dt = time.monotonic() - t0
        self.assertLess(dt, 0.5 * h.SLOW, "another event's handler waited %.3f s" % dt)
        self.assertTrue(t.is_alive(), "SLOW_CALL finished before the upstream answered")
        t.join(30 * h.SLOW)
        self.assertNotIn("e", result, result)
        self.assertEqual(result["r"].status, 200, result["r"])
        self.assertGreaterEqual(result["elapsed"], 1.4)


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
        limit = 10.0 if not h.SANITIZED else 25.0
        with h.TempDir() as tmp, u.Upstream() as up:
            script = tmp.script("conc.lua", CONC_SCRIPT)
            with h.Server(script, env={"UP": up.base}) as srv:
                h.request(srv.port, "GET", "/healthz")
                t0 = time.monotonic()
                with h.Conn(srv.port) as c:
                    for i in range(self.N):
                        r = c.request("POST", "/", b'{"action":"CONC"}')
                        self.assertEqual(r.status, 200, r)
                sent = time.monotonic() - t0
                # /healthz while they wait on the upstream
                self.assertTrue(u.wait_for(lambda: up.inflight > 0, 5.0 * h.SLOW),
                                "no request reached the upstream")
                worst = 0.0
                for _ in range(5):
                    a = time.monotonic()
                    r = h.request(srv.port, "GET", "/healthz")
                    worst = max(worst, time.monotonic() - a)
                    self.assertEqual(r.status, 200, r)
                    time.sleep(0.02)
                inflight_at_health = up.inflight

                def done():
                    m = h.get_metrics(srv.port)
                    ok = m.get("luahook_handler_runs_total", action="CONC", outcome="ok")
                    bad = sum(m.get("luahook_handler_runs_total", action="CONC", outcome=o)
                              for o in ("error", "timeout", "memory"))
                    return (ok + bad >= self.N), ok, bad

                deadline = t0 + limit + 5.0
                while True:
                    fin, ok, bad = done()
                    if fin or time.monotonic() > deadline:
                        break
                    time.sleep(0.05)
                elapsed = time.monotonic() - t0
                print("\n[concurrency] %d events x 200 ms upstream: sent in %.2f s, all handled "
                      "in %.2f s; upstream peak in flight %d; /healthz worst %.3f s "
                      "(%d in flight then)" % (self.N, sent, elapsed, up.inflight_peak, worst,
                                               inflight_at_health), file=sys.stderr)
                self.assertEqual(bad, 0, "handlers failed:\n%s" % srv.stderr_text()[-3000:])
                self.assertEqual(ok, self.N, "only %d of %d handlers finished in %.1f s"
                                 % (ok, self.N, elapsed))
                self.assertLess(elapsed, limit, "%d handlers took %.2f s" % (self.N, elapsed))
                self.assertLess(worst, 0.5, "/healthz took %.3f s under load" % worst)
                self.assertEqual(len(up.find("conc")), self.N)


if __name__ == "__main__":
    h.main()
