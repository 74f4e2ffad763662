-- Run: luahook test recipes/notify
-- Four instances, one per format; each posts to its own mocked URL.
use("notify", { url = "https://hooks.slack.test/services/T0/B0/XX", projects = { 7 } })
use("notify", {
  url = "https://discord.test/api/webhooks/1/abc", format = "discord",
  actions = { "ANNOTATION_CREATED", "TASKS_CREATED" },
  templates = { TASKS_CREATED = "{count} new tasks in {project_title}",
                skipped = "skip: task {task} by {user} {link}" },
  label_studio_url = "https://ls.test/",
}, { as = "discord" })
use("notify", { url = "https://teams.test/workflows/1", format = "teams", projects = { 99 } },
    { as = "teams" })
use("notify", { url = "https://json.test/in", format = "json", retries = 1 }, { as = "json" })

local function answer_all(status)
  mock.http("POST", "^https://", { status = status or 200, body = "ok" })
end

local SKIP = { annotation = { was_cancelled = true, result = {} } }

test("a submitted annotation is one message per instance that takes its project", function()
  answer_all()
  local r = fire(sample("ANNOTATION_CREATED"))
  ok(r.ok)
  eq(mock.calls("slack")[1].json,
     { text = "Sentiment batch 2024-05: task 101 annotated by user 2 (Positive)" })
  eq(mock.calls("discord")[1].json,
     { content = "Sentiment batch 2024-05: task 101 annotated by user 2 (Positive)" })
  eq(#mock.calls("teams"), 0, "teams only takes project 99")
  local j = mock.calls("json")[1].json
  eq(j.kind, "submitted")
  eq(j.project, 7)
  eq(j.task, 101)
  eq(j.annotation, 501)
  eq(j.labels, { "Positive" })
  eq(j.delivery, r.id)
end)

test("submitted, updated and skipped are told apart", function()
  answer_all()
  fire(sample("ANNOTATION_UPDATED"))
  fire(sample("ANNOTATION_CREATED", SKIP))
  fire(sample("ANNOTATION_UPDATED", SKIP))
  local kinds = {}
  for _, c in ipairs(mock.calls("json")) do kinds[#kinds + 1] = c.json.kind end
  eq(kinds, { "updated", "skipped", "skipped" })
  eq(mock.calls("slack")[1].json.text,
     "Sentiment batch 2024-05: annotation 501 of task 101 updated by user 2 (Negative)")
  eq(mock.calls("slack")[2].json.text, "Sentiment batch 2024-05: task 101 skipped by user 2")
end)

test("a template of its own, with the link to the task", function()
  answer_all()
  fire(sample("ANNOTATION_CREATED", SKIP))
  eq(mock.calls("discord")[1].json.content,
     "skip: task 101 by 2 https://ls.test/projects/7/data?task=101")
  fire(sample("TASKS_CREATED"))
  eq(mock.calls("discord")[2].json.content, "3 new tasks in Sentiment batch 2024-05")
  eq(#mock.calls("slack"), 1, "slack does not take TASKS_CREATED")
end)

test("teams gets an Adaptive Card", function()
  answer_all()
  fire(sample("ANNOTATION_CREATED", { project = { id = 99, title = "Faces" },
                                     annotation = { project = 99 } }))
  local card = mock.calls("teams")[1].json
  eq(card.type, "message")
  eq(card.attachments[1].contentType, "application/vnd.microsoft.card.adaptive")
  eq(card.attachments[1].content.body[1].text, "Faces: task 101 annotated by user 2 (Positive)")
  eq(#mock.calls("slack"), 0, "slack only takes project 7")
end)

test("a body without payload sends nothing", function()
  answer_all()
  ok(fire({ action = "ANNOTATION_CREATED" }).ok)
  eq(#mock.calls(), 0)
end)

test("a refused post is tried again; an error answer fails the run without the URL", function()
  mock.http("POST", "^https://", { status = 200 })
  local n = 0
  mock.http("POST", "^https://json%.test/", function()
    n = n + 1
    if n == 1 then return { error = "connection refused" } end
    return { status = 200 }
  end)
  ok(fire(sample("ANNOTATION_CREATED")).ok)
  eq(n, 2)

  mock.http("POST", "^https://hooks%.slack%.test/", { status = 404, body = "no_service" })
  local r = fire(sample("ANNOTATION_CREATED"), { allow_failure = true })
  nok(r.ok)
  for _, run in ipairs(r) do
    if run.id == "notify#1" then
      eq(run.error, "submitted: HTTP 404 no_service")
    else
      ok(run.ok, run.id)
    end
  end
  eq(#mock.calls("slack"), 2, "one post per event: a 404 is not tried again")
end)

test("a timeout is not tried again: the message may have been posted", function()
  mock.http("POST", "^https://", { status = 200 })
  mock.http("POST", "^https://json%.test/", { status = 200, delay = 60 })
  local r = fire(sample("ANNOTATION_CREATED"), { allow_failure = true })
  nok(r.ok)
  eq(#mock.calls("json"), 1)
  for _, log_line in ipairs(logs()) do
    nok(json.encode(log_line):find("json.test", 1, true), "the URL is never logged")
  end
end)
