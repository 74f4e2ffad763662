-- HTTP mocks: matching, answers, errors, delays and timeouts, recorded calls, int64 bodies.
handlers("handlers/http/client.lua")

-- The fields of the "http" log line of the n-th fire.
local function got(n)
  local seen = 0
  for _, r in ipairs(logs()) do
    if r.msg == "http" then
      seen = seen + 1
      if seen == (n or 1) then return r.fields end
    end
  end
end

local function get(url, opts)
  fire({ action = "HTTP", fn = "get", url = url, opts = opts or {} })
end

test("a mock answers: status, lower-case headers, body, res:json()", function()
  mock.http("GET", "^https://api%.test/tasks/21$", {
    status = 201, headers = { ["X-Request-Id"] = "abc", ETag = 7 }, json = { id = 21, ok = true },
  })
  get("https://api.test/tasks/21")
  local f = got()
  eq(f.err, nil)
  eq(f.res.status, 201)
  eq(f.res.headers, { ["x-request-id"] = "abc", etag = "7", ["content-type"] = "application/json" })
  eq(f.json, { id = 21, ok = true })
  eq(json.decode(f.res.body), { id = 21, ok = true })
end)

test("defaults: status 200, empty body; res:json() of a non-JSON body is nil, err", function()
  mock.http("*", "api%.test", {})
  get("http://api.test/x")
  eq(got().res.status, 200)
  eq(got().res.body, "")
  eq(got().json, nil)
  ok(got().json_err)
end)

test("the latest matching mock wins; the method must match", function()
  mock.http("*", "api%.test", { status = 500 })
  mock.http("GET", "api%.test/ok", { status = 200 })
  get("http://api.test/ok")
  fire({ action = "HTTP", fn = "post", url = "http://api.test/ok", opts = { body = "x" } })
  get("http://api.test/other")
  eq(got(1).res.status, 200)
  eq(got(2).res.status, 500)
  eq(got(3).res.status, 500)
  mock.http("GET", "api.test", { status = 204 }) -- plain text works too
  get("http://api.test/ok")
  eq(got(4).res.status, 204)
end)

test("an error answer reads as the real one: nil, 'METHOD url: cause (detail)', kind", function()
  mock.http("GET", "down%.test", { error = "Failed to connect to down.test port 80" })
  get("http://down.test/path", { query = { token = "secret" } })
  eq(got().res, nil)
  -- the cause of a real "connect" failure, then the mock's words as curl's detail
  eq(got().err, "GET http://down.test/path: connection failed (refused or unreachable) " ..
                "(Failed to connect to down.test port 80)")
  eq(got().kind, "connect")
end)

test("each kind of failure reads as the real one", function()
  local want = {
    resolve = "could not resolve the host (d)",
    connect = "connection failed (refused or unreachable) (d)",
    timeout = "timed out after 7 s (d)",
    tls = "TLS certificate verification failed (d)",
    other = "the request failed (d)",
  }
  for kind, text in pairs(want) do
    mock.http("GET", "k%.test/" .. kind, { error = "d", kind = kind })
    get("http://k.test/" .. kind, { timeout = 7 })
  end
  local n = 0
  for _, r in ipairs(logs()) do
    local kind = r.fields.err:match("k%.test/(%w+):")
    eq(r.fields.err, "GET http://k.test/" .. kind .. ": " .. want[kind])
    eq(r.fields.kind, kind)
    n = n + 1
  end
  eq(n, 5)
  fails(function() mock.http("GET", "x", { error = "d", kind = "dns" }) end, "kind must be")
end)

test("a body larger than max_size fails as the real one", function()
  mock.http("GET", "big%.test", { body = string.rep("x", 100) })
  get("http://big.test/", { max_size = 10 })
  eq(got().err, "GET http://big.test/: response larger than max_size (10 bytes)")
  eq(got().kind, "too_large")
end)

test("no mock matches: nil, err, and the request is recorded", function()
  get("http://nobody.test/x?key=secret")
  eq(got().err, "GET http://nobody.test/x: no mock matches this request (luahook test)")
  eq(got().kind, "other")
  eq(#mock.calls(), 1)
  eq(mock.calls()[1].url, "http://nobody.test/x?key=secret")
end)

test("a function answers from the request", function()
  local m = mock.http("POST", "echo%.test", function(req)
    return { status = 202, json = { method = req.method, got = req.json,
                                    ct = req.headers["content-type"] } }
  end)
  fire({ action = "HTTP", fn = "post", url = "http://echo.test/e", opts = { json = { a = 1 } } })
  eq(got().json, { method = "POST", got = { a = 1 }, ct = "application/json" })
  eq(got().res.status, 202)
  eq(#m:calls(), 1)
end)

test("calls are recorded in order: method, url with query, headers, body, json", function()
  local a = mock.http("GET", "a%.test", { status = 200 })
  local b = mock.http("*", "b%.test", { status = 200 })
  get("http://a.test/1", { query = { q = "a b&c", page = 2, z = true }, headers = { ["X-Key"] = "k" } })
  fire({ action = "HTTP", fn = "put", url = "http://b.test/2", opts = { body = "plain text" } })
  fire({ action = "HTTP", fn = "request",
         opts = { url = "http://b.test/3", method = "PATCH", json = { n = 1 } } })
  get("http://c.test/4")
  local calls = mock.calls()
  eq(#calls, 4)
  eq(calls[1], { method = "GET", url = "http://a.test/1?page=2&q=a%20b%26c&z=true",
                 headers = { ["x-key"] = "k" } })
  eq(calls[2], { method = "PUT", url = "http://b.test/2", headers = {}, body = "plain text" })
  eq(calls[3], { method = "PATCH", url = "http://b.test/3",
                 headers = { ["content-type"] = "application/json" },
                 body = '{"n":1}', json = { n = 1 } })
  eq(calls[4].url, "http://c.test/4")
  eq(#mock.calls("b%.test"), 2)
  eq(#a:calls(), 1)
  eq(#b:calls(), 2)
  eq(b:calls()[2], calls[3])
end)

test("mocks and calls are reset between tests", function()
  eq(#mock.calls(), 0)
  get("http://a.test/1")
  match(got().err, "no mock matches")
end)

test("json bodies keep int64 integers exact, both ways", function()
  mock.http("POST", "model%.test", { json = { id = math.maxinteger, neg = math.mininteger,
                                              f = 0.5 } })
  fire('{"action":"HTTP","fn":"post","url":"http://model.test/p",' ..
       '"opts":{"json":{"big":9223372036854775807,"small":-9223372036854775808,"n":9007199254740993}}}')
  local c = mock.calls()[1]
  eq(c.json, { big = math.maxinteger, small = math.mininteger, n = 9007199254740993 })
  eq(math.type(c.json.n), "integer")
  ok(c.body:find("9223372036854775807", 1, true))
  ok(c.body:find("9007199254740993", 1, true))
  eq(got().json, { id = math.maxinteger, neg = math.mininteger, f = 0.5 })
end)

test("a delay waits in virtual time", function()
  local t0 = clock.now()
  mock.http("GET", "slow%.test", { delay = 3, body = "late" })
  get("http://slow.test/x")
  eq(got().res.body, "late")
  eq(clock.now(), t0 + 3)
end)

test("a timeout shorter than the delay: nil, 'timed out after N s'", function()
  local t0 = clock.now()
  mock.http("GET", "slow%.test", { delay = 10, body = "late" })
  get("http://slow.test/x?q=1", { timeout = 2.5 })
  eq(got().res, nil)
  -- curl's own words follow, as for a server that never answers
  eq(got().err, "GET http://slow.test/x: timed out after 2.5 s (Operation timed out after " ..
                "2500 milliseconds with 0 bytes received)")
  eq(got().kind, "timeout")
  eq(clock.now(), t0 + 2.5)
end)

test("the default timeout is 30 s, the handler timeout too", function()
  local t0 = clock.now()
  mock.http("GET", "slow%.test", { delay = 60 })
  local r = fire({ action = "HTTP", fn = "get", url = "http://slow.test/x" }, { allow_failure = true })
  -- http times out at +30 s, as does the handler: the handler's timeout was armed first
  eq(clock.now(), t0 + 30)
  eq(r[1].error, "handler timed out after 30 s (--handler-timeout)")
end)

test("a handler's calls run one after the other", function()
  local t0 = clock.now()
  mock.http("GET", "api%.test/first", { status = 201, delay = 1 })
  mock.http("POST", "api%.test/second", function(req)
    return { status = 200 + req.json.after - 201, delay = 2 }
  end)
  local r = fire({ action = "TWO_CALLS" })
  ok(r.ok)
  eq(logs()[1].fields, { s1 = 201, s2 = 200 })
  eq(clock.now(), t0 + 3)
  eq(mock.calls()[2].json, { after = 201 })
end)

test("argument checks are the real ones", function()
  fire({ action = "MISUSE" })
  local m = logs()[1].fields.msgs
  eq(m[1], "bad argument #1 to 'http.get' (string expected, got no value)")
  eq(m[2], "http: option 'url' must be a string, not number")
  eq(m[3], "http: url must start with http:// or https:// (got 'ftp://files.test/x')")
  eq(m[4], "http: give 'body' or 'json', not both")
  eq(m[5], "http: option 'timeout' must be a number, not string")
  eq(m[6], "http: option 'timeout' must be a positive number of seconds")
  eq(m[7], "http: method 'get' must be upper-case letters")
  eq(m[8], "http: header 'Bad Name' holds a forbidden character")
  eq(m[9], "http: query keys must be strings")
  eq(m[10], "http: query value 'k' must be a string, number or boolean")
  eq(m[11], "http: method must not be empty")
  eq(#mock.calls(), 0, "nothing was sent")
end)

test("http works only in the handler's own coroutine", function()
  local r = fire({ action = "NESTED_HTTP" }, { allow_failure = true })
  match(r[1].error, "http: only inside a handler or a timer callback")
end)

test("mock.http checks its arguments", function()
  fails(function() mock.http("get", "x", {}) end, "mock.http: the method")
  fails(function() mock.http("GET", nil, {}) end, "url pattern must be a string")
  fails(function() mock.http("GET", "x", { status = "200" }) end, "status must be an integer")
  fails(function() mock.http("GET", "x", { body = "a", json = {} }) end, "not both")
  fails(function() mock.http("GET", "x", 42) end, "must be a table")
end)

test("query values are percent-encoded byte for byte, NULs and UTF-8 included", function()
  mock.http("GET", "q%.test", { status = 200 })
  get("http://q.test/?a=1", { query = { k = "\195\169\0x~-._", ["s p"] = 1.5 } })
  eq(mock.calls()[1].url, "http://q.test/?a=1&k=%C3%A9%00x~-._&s%20p=1.5")
end)
