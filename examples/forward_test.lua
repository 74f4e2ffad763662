-- Run: luahook test examples/forward_test.lua
handlers("forward.lua")

-- A body as Label Studio writes it: ", " and ": " separators, \u escapes, a 64-bit hash.
local RAW = '{"action": "TASKS_CREATED", "tasks": [{"id": 102, "data": '
         .. '{"text": "Caf\\u00e9 au lait was cold \\ud83d\\ude1e"}, "score": 1.50}], '
         .. '"project": {"id": 7, "label_config_hash": -3917359123487098234}}'

local function header(call, name)
  for k, v in pairs(call.headers) do
    if k:lower() == name then return v end
  end
end

local function setup(answer)
  mock.env("FORWARD_URL", "http://collector.test/in")
  mock.env("FORWARD_SIGNING_SECRET", nil)
  mock.http("POST", "^http://collector%.test/", answer or { status = 202 })
end

test("the body goes on byte for byte, with its type and the delivery id", function()
  setup()
  local r = fire(RAW, { headers = { ["content-type"] = "application/json; charset=utf-8" } })
  ok(r.ok)
  local calls = mock.calls()
  eq(#calls, 1)
  eq(calls[1].url, "http://collector.test/in")
  eq(calls[1].body, RAW)
  eq(header(calls[1], "content-type"), "application/json; charset=utf-8")
  eq(header(calls[1], "x-luahook-delivery"), r.id)
end)

test("a network error is retried once, a second later", function()
  local n = 0
  setup(function(req)
    n = n + 1
    if n == 1 then return { error = "connection refused" } end
    return { status = 200 }
  end)
  local t0 = clock.now()
  local r = fire(RAW)
  ok(r.ok)
  eq(#mock.calls(), 2)
  eq(mock.calls()[2].body, RAW)
  near(clock.now() - t0, 1, 0.01)
  eq(#logs("warn"), 1)
end)

test("two network errors fail the handler", function()
  setup({ error = "connection refused" })
  local r = fire(RAW, { allow_failure = true })
  nok(r.ok)
  match(r[1].error, "^forward failed twice: .*connection refused")
  eq(#mock.calls(), 2)
end)

test("an HTTP error is not retried", function()
  setup({ status = 503, body = "busy" })
  local r = fire(RAW, { allow_failure = true })
  nok(r.ok)
  eq(r[1].error, "forward answered HTTP 503")
  eq(#mock.calls(), 1)
end)

test("without FORWARD_URL nothing is sent", function()
  mock.env("FORWARD_URL", nil)
  local r = fire(sample("ANNOTATION_CREATED"), { allow_failure = true })
  nok(r.ok)
  match(r[1].error, "FORWARD_URL is not set")
end)

-- The Standard Webhooks specification's example secret
local SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

test("without FORWARD_SIGNING_SECRET nothing is signed", function()
  setup()
  fire(RAW)
  eq(header(mock.calls()[1], "webhook-signature"), nil)
  mock.env("FORWARD_SIGNING_SECRET", "")
  fire(RAW)
  eq(header(mock.calls()[2], "webhook-signature"), nil, "an empty secret is no secret")
end)

test("with FORWARD_SIGNING_SECRET each post carries Standard Webhooks headers", function()
  setup()
  mock.env("FORWARD_SIGNING_SECRET", SECRET)
  local r = fire(RAW)
  ok(r.ok)
  local call = mock.calls()[1]
  eq(header(call, "webhook-id"), r.id, "the delivery id")
  eq(header(call, "webhook-timestamp"), tostring(math.floor(clock.now())))
  eq(header(call, "webhook-signature"),
     crypto.webhook_sign(SECRET, r.id, math.floor(clock.now()), RAW))
  eq(crypto.webhook_verify(SECRET, call.headers, call.body), true, "what a receiver checks")
  eq(header(call, "x-luahook-delivery"), r.id)
end)

test("a retry keeps the webhook-id and signs its own timestamp", function()
  local n = 0
  setup(function()
    n = n + 1
    if n == 1 then return { error = "connection refused" } end
    return { status = 200 }
  end)
  mock.env("FORWARD_SIGNING_SECRET", SECRET)
  local t0 = math.floor(clock.now())
  local r = fire(RAW)
  ok(r.ok)
  local first, second = mock.calls()[1], mock.calls()[2]
  eq(header(second, "webhook-id"), header(first, "webhook-id"))
  eq(header(first, "webhook-timestamp"), tostring(t0))
  eq(header(second, "webhook-timestamp"), tostring(t0 + 1))
  eq(crypto.webhook_verify(SECRET, second.headers, second.body), true)
  neq(header(second, "webhook-signature"), header(first, "webhook-signature"))
end)
