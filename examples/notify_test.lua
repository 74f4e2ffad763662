-- Run: luahook test examples/notify_test.lua
handlers("notify.lua")

local HOOK = "https://hooks.slack.test/services/T000/B000/XXXX"

-- Every test starts from here: the chat URL set, the chat answering 200.
local function chat_ok()
  mock.env("SLACK_WEBHOOK_URL", HOOK)
  mock.http("POST", "^https://hooks%.slack%.test/", { status = 200, body = "ok" })
end

test("a submitted annotation posts one message", function()
  chat_ok()
  local r = fire(sample("ANNOTATION_CREATED"))
  ok(r.ok, "the handler succeeded")
  eq(r.handlers, 1)
  local calls = mock.calls("hooks%.slack%.test")
  eq(#calls, 1)
  eq(calls[1].method, "POST")
  eq(calls[1].url, HOOK)
  eq(calls[1].json, {
    text = "Sentiment batch 2024-05: user 2 submitted annotation 501 on task 101 (1 region)",
  })
end)

test("a skip says so", function()
  chat_ok()
  -- A body Label Studio really sent when an annotator pressed Skip.
  local r = fire("../tests/fixtures/labelstudio/ANNOTATION_CREATED.skipped.json")
  ok(r.ok)
  eq(mock.calls()[1].json.text, "Sentiment batch 2024-05: user 2 skipped task 103")
end)

test("an update links to the task when LABEL_STUDIO_URL is set", function()
  chat_ok()
  mock.env("LABEL_STUDIO_URL", "https://ls.example.test/")
  local r = fire(sample("ANNOTATION_UPDATED"))
  ok(r.ok)
  eq(mock.calls()[1].json.text, "Sentiment batch 2024-05: user 2 updated annotation 501 on "
                                .. "<https://ls.example.test/projects/7/data?task=101|task 101> (1 region)")
end)

test("a chat error fails the handler", function()
  mock.env("SLACK_WEBHOOK_URL", HOOK)
  mock.http("POST", "^https://hooks%.slack%.test/", { status = 404, body = "no_service" })
  local r = fire(sample("ANNOTATION_CREATED"), { allow_failure = true })
  nok(r.ok)
  eq(r[1].ok, false)
  eq(r[1].error, "chat post failed: HTTP 404 no_service")
end)

test("a network error fails the handler without leaking the URL", function()
  mock.env("SLACK_WEBHOOK_URL", HOOK)
  mock.http("POST", "^https://hooks%.slack%.test/", { error = "connection refused" })
  local r = fire(sample("ANNOTATION_CREATED"), { allow_failure = true })
  nok(r.ok)
  match(r[1].error, "^chat post failed: .*connection refused")
  nok(r[1].error:find("XXXX", 1, true), "the secret part of the URL is not in the error")
end)

test("without SLACK_WEBHOOK_URL the handler fails and names the variable", function()
  mock.env("SLACK_WEBHOOK_URL", nil)
  local r = fire(sample("ANNOTATION_CREATED"), { allow_failure = true })
  nok(r.ok)
  match(r[1].error, "SLACK_WEBHOOK_URL is not set")
  eq(#mock.calls(), 0)
end)

test("a body without payload posts nothing and warns", function()
  chat_ok()
  local r = fire('{"action": "ANNOTATION_CREATED"}')
  ok(r.ok)
  eq(#mock.calls(), 0)
  local warned = logs("warn")
  eq(#warned, 1)
  match(warned[1].msg, "Send payload")
end)

test("other actions run no handler", function()
  local r = fire(sample("TASKS_CREATED"))
  eq(r.handlers, 0)
  ok(r.ok)
end)
