-- Run: luahook test examples/counts_test.lua
handlers("counts.lua")

-- The "annotation counts" lines logged so far for one project.
local function summaries(project)
  local found = {}
  for _, rec in ipairs(logs("info")) do
    if rec.msg == "annotation counts" and rec.fields.project == project then
      found[#found + 1] = rec.fields
    end
  end
  return found
end

test("creations, skips and deletions add up, summed up by the timer", function()
  ok(fire(sample("ANNOTATION_CREATED")).ok)
  ok(fire("../tests/fixtures/labelstudio/ANNOTATION_CREATED.skipped.json").ok)
  -- ANNOTATIONS_CREATED: two annotations under the singular key `annotation`.
  ok(fire("../tests/fixtures/labelstudio/ANNOTATIONS_CREATED.json").ok)
  ok(fire("../tests/fixtures/labelstudio/ANNOTATIONS_DELETED.json").ok)
  eq(#summaries(7), 0, "nothing logged before the timer")

  clock.advance(300)
  local s = summaries(7)
  eq(#s, 1)
  eq(s[1], { project = 7, created = 3, skipped = 1, deleted = 1 })
end)

test("a quiet period logs nothing", function()
  clock.advance(300) -- whatever an earlier test left is summed up now
  local before = #summaries(7)
  clock.advance(900)
  eq(#summaries(7), before)
end)

test("every 100th event logs a summary at once", function()
  clock.advance(300)
  for i = 1, 100 do
    -- No project object: the annotation's own `project` field is used.
    fire({ action = "ANNOTATION_CREATED",
           annotation = { id = i, project = 70, was_cancelled = false, result = {} } })
  end
  local s = summaries(70)
  eq(#s, 1)
  eq(s[1].created, 100)
end)

test("bodies without payload are ignored", function()
  for _, action in ipairs({ "ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED" }) do
    local r = fire({ action = action })
    eq(r.handlers, 1, action)
    ok(r.ok, action)
  end
end)
