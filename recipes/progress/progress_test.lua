-- Run: luahook test recipes/progress
use("progress", { url = "https://chat.test/hook", projects = { 7, 8 } })
use("progress", { milestones = { 50 }, tasks = false }, { as = "quiet" })

local function stats(project, finished, total)
  return sample("ANNOTATION_CREATED", {
    project = { id = project, task_number = total, finished_task_number = finished },
    annotation = { project = project },
    task = { is_labeled = false },
  })
end

local function texts()
  local out = {}
  for _, c in ipairs(mock.calls("chat")) do out[#out + 1] = c.json.text end
  return out
end

test("each milestone once per project, in the log and in the chat", function()
  mock.http("POST", "^https://chat%.test/", { status = 200 })
  fire(stats(7, 1, 10))
  eq(#texts(), 0)
  fire(stats(7, 3, 10))
  fire(stats(7, 3, 10))
  fire(stats(7, 4, 10))
  eq(texts(), { "Sentiment batch 2024-05: 25% of the tasks are finished (3 of 10)" })
  fire(stats(7, 5, 10))
  fire(stats(7, 4, 10)) -- an older count delivered late
  fire(stats(7, 5, 10))
  eq(#texts(), 2)
  eq(texts()[2], "Sentiment batch 2024-05: 50% of the tasks are finished (5 of 10)")
  local quiet = {}
  for _, rec in ipairs(logs("info")) do
    if rec.msg == "milestone reached" then quiet[#quiet + 1] = rec.fields.percent end
  end
  table.sort(quiet)
  eq(quiet, { 25, 50, 50 }, "two of the chat instance, one of quiet's 50 %")
end)

test("several milestones at once give one message, the highest", function()
  mock.http("POST", "^https://chat%.test/", { status = 200 })
  fire(stats(8, 10, 10))
  eq(texts(), { "Sentiment batch 2024-05: 100% of the tasks are finished (10 of 10)" })
  fire(stats(8, 10, 10))
  eq(#texts(), 1)
end)

test("other projects are not watched; bodies without counts are ignored", function()
  mock.http("POST", "^https://chat%.test/", { status = 200 })
  fire(stats(9, 10, 10))
  fire({ action = "ANNOTATION_CREATED" })
  fire(sample("PROJECT_DELETED"))
  eq(#texts(), 0)
end)

test("a complete task is announced once", function()
  mock.http("POST", "^https://chat%.test/", { status = 200 })
  fire(sample("ANNOTATION_CREATED", { project = { finished_task_number = 0 } }))
  fire(sample("ANNOTATION_UPDATED", { project = { finished_task_number = 0 } }))
  eq(texts(), { "Sentiment batch 2024-05: task 101 is complete" })
end)

test("a failed post fails the run; the milestone is announced on a later event", function()
  mock.http("POST", "^https://chat%.test/", { status = 500 })
  local r = fire(stats(7, 8, 10), { allow_failure = true })
  nok(r.ok)
  eq(r[1].error, "milestone post failed: HTTP 500")
  mock.http("POST", "^https://chat%.test/", { status = 200 })
  fire(stats(7, 8, 10))
  eq(texts()[#texts()], "Sentiment batch 2024-05: 75% of the tasks are finished (8 of 10)")
end)
