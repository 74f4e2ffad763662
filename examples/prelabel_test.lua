-- Run: luahook test examples/prelabel_test.lua
handlers("prelabel.lua")

-- The environment set, and Label Studio answering `ls` (by default: 201, created).
local function setup(ls)
  mock.env("MODEL_URL", "http://model.test/predict")
  mock.env("LABEL_STUDIO_URL", "https://ls.test/")
  mock.env("LABEL_STUDIO_TOKEN", "s3cret")
  mock.http("POST", "^https://ls%.test/", ls or { status = 201, json = { created = 1 } })
end

-- A fake model: one "Positive" choice per task it is asked about.
local function model(req)
  local results = {}
  for _, t in ipairs(req.json.tasks) do
    results[#results + 1] = {
      result = { { from_name = "sentiment", to_name = "text", type = "choices",
                   value = { choices = { "Positive" } } } },
      score = 0.9,
    }
  end
  return { status = 200, json = { results = results, model_version = "fake-1" } }
end

-- A TASKS_CREATED event with n tasks, ids 1001..1000+n.
local function import(n)
  local tasks = {}
  for i = 1, n do
    tasks[i] = { id = 1000 + i, project = 7, data = { text = "text " .. i } }
  end
  return { action = "TASKS_CREATED", project = { id = 7 }, tasks = tasks }
end

local function header(call, name)
  for k, v in pairs(call.headers) do
    if k:lower() == name then return v end
  end
end

test("an import gets one prediction per task", function()
  setup()
  mock.http("POST", "^http://model%.test/", model)
  local r = fire(sample("TASKS_CREATED"))
  ok(r.ok)

  local asked = mock.calls("model%.test")
  eq(#asked, 1)
  eq(#asked[1].json.tasks, 3)
  ok(asked[1].json.tasks[1].data.text, "the task data goes to the model")

  local stored = mock.calls("ls%.test")
  eq(#stored, 1)
  eq(stored[1].url, "https://ls.test/api/projects/7/import/predictions")
  eq(header(stored[1], "authorization"), "Token s3cret")
  eq(#stored[1].json, 3)
  eq(stored[1].json[1].task, 101)
  eq(stored[1].json[1].model_version, "fake-1")
  near(stored[1].json[1].score, 0.9)
  eq(stored[1].json[1].result[1].value.choices, { "Positive" })
end)

test("a big import goes in batches of 100", function()
  setup()
  mock.http("POST", "^http://model%.test/", model)
  local r = fire(import(250))
  ok(r.ok)
  local asked = mock.calls("model%.test")
  eq(#asked, 3)
  eq({ #asked[1].json.tasks, #asked[2].json.tasks, #asked[3].json.tasks }, { 100, 100, 50 })
  eq(#mock.calls("ls%.test"), 3)
  eq(mock.calls("ls%.test")[3].json[50].task, 1250)
end)

test("a failed model batch is skipped, the others are stored, the run fails", function()
  setup()
  local n = 0
  mock.http("POST", "^http://model%.test/", function(req)
    n = n + 1
    if n == 2 then return { status = 500, body = "CUDA out of memory" } end
    return model(req)
  end)
  local r = fire(import(250), { allow_failure = true })
  nok(r.ok)
  eq(r[1].error, "1 of 3 batches failed; first: tasks 1101..1200: model answered HTTP 500")
  eq(#mock.calls("ls%.test"), 2, "batches 1 and 3 were stored")
  local warned = logs("warn")
  eq(#warned, 1)
  eq(warned[1].fields.tasks, "tasks 1101..1200")
end)

test("a model that cannot be reached fails every batch", function()
  setup()
  mock.http("POST", "^http://model%.test/", { error = "connection refused" })
  local r = fire(sample("TASKS_CREATED"), { allow_failure = true })
  nok(r.ok)
  match(r[1].error, "^1 of 1 batches failed; first: tasks 101%.%.103: .*connection refused")
  eq(#mock.calls("ls%.test"), 0)
end)

test("Label Studio refusing the predictions fails the batch", function()
  setup({ status = 401, json = { detail = "Invalid token." } })
  mock.http("POST", "^http://model%.test/", model)
  local r = fire(sample("TASKS_CREATED"), { allow_failure = true })
  nok(r.ok)
  match(r[1].error, "Label Studio answered HTTP 401")
end)

test("empty suggestions are not stored", function()
  setup()
  mock.http("POST", "^http://model%.test/", {
    status = 200, body = '{"results": [{"result": []}, {"result": []}, {"result": []}]}',
  })
  local r = fire(sample("TASKS_CREATED"))
  ok(r.ok)
  eq(#mock.calls("ls%.test"), 0)
end)

test("a body without tasks does nothing", function()
  setup()
  local r = fire({ action = "TASKS_CREATED" })
  ok(r.ok)
  eq(#mock.calls(), 0)
end)
