-- Run: luahook test recipes/prelabel
use("prelabel", {
  model_url = "http://model.test/predict",
  model_headers = { Authorization = "Bearer model-key" },
  label_studio_url = "http://ls.test",
  token = "0123456789abcdef0123456789abcdef01234567",
  batch_size = 2,
  model_version = "m1",
})

local CREATE = "^http://ls%.test/api/projects/7/import/predictions"

-- A model that labels every task "Positive" with the task's id as its score.
local function model(req)
  local results = {}
  for i, t in ipairs(req.json.tasks) do
    results[i] = { result = { { from_name = "sentiment", to_name = "text", type = "choices",
                                value = { choices = { "Positive" } } } }, score = t.id / 1000 }
  end
  return { status = 200, json = { results = results } }
end

local function tasks(first, last)
  local list = {}
  for id = first, last do
    list[#list + 1] = { id = id, project = 7, data = { text = "t" .. id } }
  end
  return sample("TASKS_CREATED", { tasks = list })
end

test("tasks go to the model in batches; predictions are created in bulk per batch", function()
  mock.http("POST", "^http://model%.test/", model)
  mock.http("POST", CREATE, { status = 201, json = { created = 2 } })
  ok(fire(tasks(1, 5)).ok)
  local m = mock.calls("model")
  eq(#m, 3)
  eq(m[1].json.tasks, { { id = 1, data = { text = "t1" } }, { id = 2, data = { text = "t2" } } })
  eq(m[1].json.project, 7)
  eq(m[1].headers["authorization"], "Bearer model-key")
  local c = mock.calls("ls%.test")
  eq(#c, 3)
  eq(c[1].headers["authorization"], "Token 0123456789abcdef0123456789abcdef01234567")
  eq(c[3].json, { { task = 5, score = 0.005, model_version = "m1",
                    result = { { from_name = "sentiment", to_name = "text", type = "choices",
                                 value = { choices = { "Positive" } } } } } })
  eq(logs("info")[1].fields.predictions, 5)
end)

test("a failed batch fails the run; a repeated run does only what had failed", function()
  mock.http("POST", "^http://model%.test/", model)
  local n = 0
  mock.http("POST", CREATE, function()
    n = n + 1
    if n == 2 then return { status = 400, json = { detail = "bad" } } end
    return { status = 201, json = { created = 2 } }
  end)
  local r = fire(tasks(11, 16), { allow_failure = true })
  nok(r.ok)
  match(r[1].error, "^1 of 3 batches failed; tasks 13%.%.14: label studio: ")
  eq(#logs("warn"), 1)

  -- the same import again (the journal repeating the run, or Label Studio sending twice)
  ok(fire(tasks(11, 16)).ok)
  local m = mock.calls("model")
  eq(#m, 3 + 1, "only the failed batch goes to the model again")
  eq(m[4].json.tasks[1].id, 13)
  eq(#mock.calls("ls%.test"), 3 + 1)
  eq(logs("info")[2].fields.skipped, 2)
end)

test("a model error is logged per batch, the other batches still go", function()
  local n = 0
  mock.http("POST", "^http://model%.test/", function(req)
    n = n + 1
    if n == 1 then return { status = 500, body = "boom" } end
    return model(req)
  end)
  mock.http("POST", CREATE, { status = 201, json = {} })
  local r = fire(tasks(21, 24), { allow_failure = true })
  nok(r.ok)
  eq(r[1].error, "1 of 2 batches failed; tasks 21..22: model: HTTP 500")
  eq(#mock.calls("ls%.test"), 1)
end)

test("empty results create nothing; a body without tasks does nothing", function()
  mock.http("POST", "^http://model%.test/",
            { status = 200, json = { results = { { result = {} } } } })
  ok(fire(tasks(31, 31)).ok)
  eq(#mock.calls("ls%.test"), 0)
  ok(fire({ action = "TASKS_CREATED" }).ok)
  eq(#mock.calls("model"), 1)
end)

test("tasks without an id are left out, with a warning; the others still go", function()
  mock.http("POST", "^http://model%.test/", model)
  mock.http("POST", CREATE, { status = 201, json = { created = 1 } })
  local r = fire(sample("TASKS_CREATED", { tasks = {
    { project = 7, data = { text = "no id" } },
    { id = 3, project = 7, data = { text = "t3" } },
  } }))
  ok(r.ok, r[1] and r[1].error)
  local m = mock.calls("model")
  eq(#m, 1)
  eq(m[1].json.tasks, { { id = 3, data = { text = "t3" } } })
  r = fire(sample("TASKS_CREATED", { tasks = { { project = 7, data = {} } } }))
  ok(r.ok, r[1] and r[1].error)
  eq(#mock.calls("model"), 1) -- nothing more sent
end)

test("the token is never logged", function()
  mock.http("POST", "^http://model%.test/", model)
  mock.http("POST", CREATE, { status = 401, json = { detail = "Invalid token." } })
  local r = fire(tasks(41, 42), { allow_failure = true })
  nok(r.ok)
  nok(r[1].error:find("0123456789abcdef0123", 1, true))
  for _, rec in ipairs(logs()) do
    nok(json.encode(rec):find("0123456789abcdef0123", 1, true))
  end
end)
