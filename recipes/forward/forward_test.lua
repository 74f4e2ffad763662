-- Run: luahook test recipes/forward
use("forward", {
  urls = { "http://a.test/in", "http://b.test/in?key=s3cr3t" },
  headers = { Authorization = "Bearer abc" },
  actions = { "TASKS_CREATED", "ANNOTATION_CREATED" },
  retries = 3, backoff = 1, timeout = 5, budget = 25,
})
use("forward", {
  urls = { "http://signed.test/in" }, projects = { 99 },
  signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", retries = 0,
}, { as = "signed" })

-- A body as Label Studio writes it: ", " and ": " separators, \u escapes, a 64-bit hash.
local RAW = '{"action": "TASKS_CREATED", "tasks": [{"id": 102, "data": '
         .. '{"text": "Caf\\u00e9 \\ud83d\\ude1e", "tags": []}, "score": 1.50}], '
         .. '"project": {"id": 7, "label_config_hash": -3917359123487098234}}'

-- The store keeps, between tests, what a failed run reached for a body: each test
-- sends bodies of its own.
local function raw(n)
  return (RAW:gsub('"id": 102', '"id": ' .. n))
end

local function ok_everywhere()
  mock.http("POST", "^http://", { status = 202 })
end

test("the exact bytes go to every URL, with the extra headers and the delivery id", function()
  ok_everywhere()
  local r = fire(RAW, { headers = { ["content-type"] = "application/json; charset=utf-8" } })
  ok(r.ok)
  for _, host in ipairs({ "a%.test", "b%.test" }) do
    local c = mock.calls(host)
    eq(#c, 1, host)
    eq(c[1].body, RAW)
    eq(c[1].headers["content-type"], "application/json; charset=utf-8")
    eq(c[1].headers["authorization"], "Bearer abc")
    eq(c[1].headers["x-luahook-delivery"], r.id)
  end
  eq(#mock.calls("signed"), 0, "project 7 is not the signed instance's")
end)

test("only the chosen actions go", function()
  ok_everywhere()
  fire(sample("PROJECT_UPDATED"))
  eq(#mock.calls(), 0)
end)

test("a 503 is retried with a doubling backoff; a 400 is not", function()
  local n = 0
  ok_everywhere()
  mock.http("POST", "^http://a%.test/", function()
    n = n + 1
    if n < 3 then return { status = 503 } end
    return { status = 200 }
  end)
  local t0 = clock.now()
  ok(fire(raw(1)).ok)
  eq(n, 3)
  near(clock.now() - t0, 1 + 2, 0.01)

  mock.http("POST", "^http://a%.test/", { status = 400 })
  local r = fire(raw(2), { allow_failure = true })
  nok(r.ok)
  eq(r[1].error, "forward failed: urls[1]: HTTP 400 (1 try)")
end)

test("retries stop at the budget; the error names the URL by its place only", function()
  ok_everywhere()
  mock.http("POST", "^http://b%.test/", { error = "connection refused" })
  local r = fire(raw(3), { allow_failure = true })
  nok(r.ok)
  match(r[1].error, "^forward failed: urls%[2%]: connection failed")
  match(r[1].error, "%(4 tries%)$")
  nok(r[1].error:find("s3cr3t", 1, true), "the URL's key is not in the error")
  for _, rec in ipairs(logs()) do
    nok(json.encode(rec):find("s3cr3t", 1, true), "nor in the log: " .. json.encode(rec))
  end
end)

test("a repeated run skips the URLs an earlier run reached", function()
  ok_everywhere()
  mock.http("POST", "^http://b%.test/", { status = 500 })
  local r = fire(raw(4), { allow_failure = true })
  nok(r.ok)
  eq(#mock.calls("a%.test"), 1)

  ok_everywhere()
  -- the same delivery again, as the journal would run it
  local again = fire(raw(4), { allow_failure = true, attempt = 2 })
  ok(again.ok)
  eq(#mock.calls("a%.test"), 1, "a was reached the first time")
  eq(#mock.calls("b%.test"), 4 + 1)
  -- done: the key is gone, the same bytes later go everywhere again
  ok(fire(raw(4)).ok)
  eq(#mock.calls("a%.test"), 2)
end)

test("signed posts carry Standard Webhooks headers", function()
  ok_everywhere()
  local body = '{"action": "TASKS_CREATED", "project": {"id": 99}, "tasks": []}'
  local r = fire(body)
  ok(r.ok)
  local c = mock.calls("signed")[1]
  eq(c.headers["webhook-id"], r.id)
  eq(crypto.webhook_verify("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", c.headers, c.body), true)
end)
