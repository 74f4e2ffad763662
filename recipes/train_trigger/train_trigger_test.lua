-- Run: luahook test recipes/train_trigger
use("train_trigger", { url = "http://model.test/train", every = 3, min_interval = 600 })

local function annotation(project, id, skipped)
  return { action = "ANNOTATION_CREATED", project = { id = project, title = "P" },
           annotation = { id = id, task = id, project = project, was_cancelled = skipped or false,
                          result = {} },
           task = { id = id, project = project } }
end

local function trainings(project)
  local n = 0
  for _, c in ipairs(mock.calls("model%.test")) do
    if c.json.project == project then n = n + 1 end
  end
  return n
end

test("a training after every 3 annotations of a project, counted per project", function()
  mock.http("POST", "^http://model%.test/", { status = 201 })
  fire(annotation(1, 1))
  fire(annotation(1, 2))
  fire(annotation(2, 3))
  fire(annotation(1, 4, true)) -- a skip does not count
  eq(trainings(1), 0)
  fire(annotation(1, 5))
  eq(trainings(1), 1)
  eq(mock.calls("model%.test")[1].json, { project = 1, annotations = 3 })
  eq(trainings(2), 0)
end)

test("ANNOTATIONS_CREATED counts each of its annotations", function()
  mock.http("POST", "^http://model%.test/", { status = 201 })
  fire(sample("ANNOTATIONS_CREATED", { project = { id = 3 } })) -- two annotations
  eq(trainings(3), 0)
  fire(annotation(3, 9))
  eq(trainings(3), 1)
end)

test("min_interval: what comes meanwhile counts, the first event after it trains", function()
  mock.http("POST", "^http://model%.test/", { status = 201 })
  for id = 10, 12 do fire(annotation(4, id)) end
  eq(trainings(4), 1)
  for id = 13, 18 do fire(annotation(4, id)) end
  eq(trainings(4), 1, "600 s have not passed")
  clock.advance(600)
  fire(annotation(4, 19))
  eq(trainings(4), 2)
  eq(mock.calls("model%.test")[2].json.annotations, 7)
end)

test("many events at once start one training for one threshold", function()
  mock.http("POST", "^http://model%.test/", { status = 201, delay = 2 })
  local events = {}
  for id = 20, 24 do events[#events + 1] = annotation(5, id) end
  for _, rs in ipairs(fire_all(events)) do ok(rs.ok) end
  eq(trainings(5), 1)
end)

test("a failed training call fails the run and takes its count back", function()
  mock.http("POST", "^http://model%.test/", { status = 503 })
  fire(annotation(6, 30))
  fire(annotation(6, 31))
  local r = fire(annotation(6, 32), { allow_failure = true })
  nok(r.ok)
  eq(r[1].error, "training call failed: HTTP 503")
  mock.http("POST", "^http://model%.test/", { status = 201 })
  -- the same run again (the journal's repeat): counted once, training now
  ok(fire(annotation(6, 32)).ok)
  eq(trainings(6), 2)
  eq(mock.calls("model%.test")[2].json.annotations, 3)
end)
