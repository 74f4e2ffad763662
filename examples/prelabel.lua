-- prelabel.lua: when tasks are imported, ask a model for predictions and store them in
-- Label Studio, so annotators start from a suggestion.
--
-- Environment, read inside the handler (the script loads without it):
--   MODEL_URL           the model's predict endpoint, called with POST
--   LABEL_STUDIO_URL    Label Studio's base URL, e.g. https://label-studio.example.com
--   LABEL_STUDIO_TOKEN  an access token (Account & Settings), sent as "Authorization: Token ..."
--   MODEL_VERSION       optional: stored with predictions whose answer names no version
--
-- The model contract is this example's own; adapt it to your model. Request:
--   {"tasks": [{"id": 101, "data": {"text": "..."}}, ...]}
-- Answer, shaped like a Label Studio ML backend's /predict answer, one entry per task, in
-- the order of the request:
--   {"results": [{"result": [<regions>], "score": 0.93, "model_version": "v3"}, ...]}
--
-- Predictions are stored with one request per batch:
--   POST <LABEL_STUDIO_URL>/api/projects/<id>/import/predictions
--   [{"task": 101, "result": [<regions>], "score": 0.93, "model_version": "v3"}, ...]
-- (POST /api/predictions/ takes one such object at a time: fine for a few tasks, slow for
-- an import of thousands.)
--
-- TASKS_CREATED carries every task of an import in one body, so tasks go to the model
-- BATCH at a time. A batch that fails (model or Label Studio) is logged and skipped, the
-- next batch still goes, and at the end the handler raises, so the run counts as failed.
-- The whole run is under --handler-timeout (30 s by default): raise it for big imports.
--
-- Try it (needs a model and a Label Studio):
--   MODEL_URL=... LABEL_STUDIO_URL=... LABEL_STUDIO_TOKEN=... \
--     luahook fire examples/prelabel.lua --sample TASKS_CREATED

local BATCH = 100

-- Asks the model about tasks[first..last]. Returns a list of predictions, or nil, err.
local function predict(tasks, first, last)
  local batch = {}
  for i = first, last do
    batch[#batch + 1] = { id = tasks[i].id, data = tasks[i].data }
  end

  local res, err = http.post(env("MODEL_URL"), { json = { tasks = batch }, timeout = 20 })
  if not res then
    return nil, err
  end
  if res.status ~= 200 then
    return nil, ("model answered HTTP %d"):format(res.status)
  end
  local answer, jerr = res:json()
  if type(answer) ~= "table" or type(answer.results) ~= "table" then
    return nil, "model answer has no results list" .. (jerr and (": " .. jerr) or "")
  end
  if #answer.results ~= #batch then
    return nil, ("model answered %d results for %d tasks"):format(#answer.results, #batch)
  end

  local predictions = {}
  for i, r in ipairs(answer.results) do
    -- An empty result suggests nothing: leave the task alone. (It would also encode as
    -- {} rather than [], as Lua cannot tell an empty list from an empty object.)
    if type(r.result) == "table" and #r.result > 0 then
      predictions[#predictions + 1] = {
        task = batch[i].id,
        result = r.result,
        score = math.type(r.score) and r.score or nil, -- a number, else left out
        model_version = r.model_version or answer.model_version
                        or env("MODEL_VERSION", "luahook-example"),
      }
    end
  end
  return predictions
end

-- Stores a list of predictions in one request. Returns true, or nil, err.
local function store(project, predictions)
  local url = env("LABEL_STUDIO_URL"):gsub("/+$", "")
  local res, err = http.post(("%s/api/projects/%d/import/predictions"):format(url, project), {
    headers = { Authorization = "Token " .. env("LABEL_STUDIO_TOKEN") },
    json = predictions,
    timeout = 30,
  })
  if not res then
    return nil, err
  end
  if res.status < 200 or res.status > 299 then
    return nil, ("Label Studio answered HTTP %d: %s"):format(res.status, res.body:sub(1, 200))
  end
  return true
end

on("TASKS_CREATED", function(ev, ctx)
  local tasks = ev.tasks -- always a list, even for one task
  if type(tasks) ~= "table" or #tasks == 0 then
    log.warn("no tasks in the event: turn on 'Send payload' in Label Studio")
    return
  end
  local project = type(ev.project) == "table" and ev.project.id or tasks[1].project
  if math.type(project) ~= "integer" then
    error("TASKS_CREATED without a project id: cannot store predictions", 0)
  end

  local batches, failed, stored = 0, {}, 0
  for first = 1, #tasks, BATCH do
    local last = math.min(first + BATCH - 1, #tasks)
    batches = batches + 1
    local predictions, err = predict(tasks, first, last)
    if predictions and #predictions > 0 then
      local done, serr = store(project, predictions)
      if done then
        stored = stored + #predictions
      else
        predictions, err = nil, serr
      end
    end
    if not predictions then
      local where = ("tasks %d..%d"):format(tasks[first].id, tasks[last].id)
      failed[#failed + 1] = where .. ": " .. err
      log.warn("prelabel batch failed", { tasks = where, error = err })
    end
  end

  log.info("prelabelled", {
    project = project, tasks = #tasks, predictions = stored, failed_batches = #failed,
  })
  if #failed > 0 then
    error(("%d of %d batches failed; first: %s"):format(#failed, batches, failed[1]), 0)
  end
end)
