-- prelabel: on TASKS_CREATED, the new tasks go to a model in batches, and the model's
-- predictions are stored through Label Studio's API in one bulk call per batch.
local ls = require "labelstudio"

-- How long a finished batch is remembered: a repeated run within it skips the batch.
local DONE_TTL = 7 * 86400

local array = json.array -- an empty list must go out as [], never {}

local function cause(err)
  return (err:match("^%u+ %S+: (.*)$") or err)
end

local function set(list)
  if list == nil then return nil end
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- The model's answer as a list parallel to the batch: {"results": [...]} (Label Studio's
-- ML backend /predict) or a bare list. Each item is {result, score, model_version}, and
-- may name its task.
local function results_of(body)
  if type(body) ~= "table" then return nil end
  if type(body.results) == "table" then return body.results end
  if body[1] ~= nil then return body end
  if next(body) == nil then return body end
  return nil
end

return {
  name = "prelabel",
  version = "0.1.0",
  description = "New tasks to a model in batches; its predictions stored in Label Studio in bulk",
  config = {
    model_url = {
      type = "string", required = true, match = "^https?://",
      description = "the model's predict URL; it gets {tasks, project} and answers "
        .. "{results: [{result, score, model_version}, ...]}, one per task in order",
      example = "http://model.internal:9090/predict",
    },
    model_headers = {
      type = "map", of = { type = "string", secret = true }, secret = true,
      description = "extra headers for the model (secret: they often carry a key)",
      example = { Authorization = "Bearer model-key" },
    },
    label_studio_url = {
      type = "string", required = true, match = "^https?://",
      description = "Label Studio's address",
      example = "https://label-studio.example.com",
    },
    token = {
      type = "string", required = true, secret = true,
      description = "a Label Studio access token (legacy token or personal access token)",
      example = "0123456789abcdef0123456789abcdef01234567",
    },
    batch_size = {
      type = "integer", default = 100, min = 1, max = 10000,
      description = "tasks per model call and per bulk create",
    },
    model_version = {
      type = "string", default = "luahook",
      description = "the predictions' model_version when the model names none",
    },
    projects = {
      type = "list", min = 1, of = { type = "integer", min = 1 },
      description = "only these projects' tasks (all when absent)",
      example = { 7 },
    },
    timeout = {
      type = "number", default = 20, min = 0.1, max = 3600,
      description = "seconds for one model call",
    },
  },

  setup = function(cfg)
    local projects = set(cfg.projects)
    local client = ls.client({ url = cfg.label_studio_url, token = cfg.token })

    -- The predictions of one batch, or nil and why.
    local function predict(project, batch)
      local tasks = {}
      for i, t in ipairs(batch) do tasks[i] = { id = t.id, data = t.data } end
      local res, err = http.post(cfg.model_url, {
        json = { tasks = array(tasks), project = project },
        headers = cfg.model_headers, timeout = cfg.timeout,
      })
      if not res then return nil, "model: " .. cause(err) end
      if res.status < 200 or res.status > 299 then
        return nil, ("model: HTTP %d"):format(res.status)
      end
      local body = res:json()
      local results = results_of(body)
      if not results then return nil, "model: the answer has no results list" end
      local out = {}
      for i, r in ipairs(results) do
        local task = type(r) == "table" and (r.task or (batch[i] and batch[i].id))
        if task and type(r.result) == "table" and next(r.result) ~= nil then
          out[#out + 1] = {
            task = task,
            result = array(r.result),
            score = type(r.score) == "number" and r.score or nil,
            model_version = type(r.model_version) == "string" and r.model_version
              or cfg.model_version,
          }
        end
      end
      return out
    end

    -- One batch, at most once: the lock keeps two deliveries of the same import from
    -- running it together, the key keeps a repeated run from creating it again.
    local function run_batch(project, batch)
      local key = ("done:%d:%d-%d:%d"):format(project, batch[1].id, batch[#batch].id, #batch)
      return store.lock(key, function()
        if store.get(key) then return "skipped" end
        local predictions, err = predict(project, batch)
        if not predictions then return nil, err end
        if #predictions > 0 then
          local ok, cerr = client:create_predictions(project, predictions)
          if not ok then return nil, "label studio: " .. tostring(cerr) end
        end
        store.set(key, #predictions, DONE_TTL)
        return "done", #predictions
      end)
    end

    on("TASKS_CREATED", function(ev, ctx)
      local tasks = ls.tasks(ev)
      if #tasks == 0 then return end
      local project = ls.project_id(ev) or tasks[1].project
      if math.type(project) ~= "integer" then
        log.warn("tasks without a project: nothing to predict", { tasks = #tasks })
        return
      end
      if projects and not projects[project] then return end
      -- a prediction names its task: a task without an id (a hand-made body) cannot have one
      local with_id = {}
      for _, t in ipairs(tasks) do
        if math.type(t.id) == "integer" then with_id[#with_id + 1] = t end
      end
      if #with_id < #tasks then
        log.warn("tasks without an id: not sent to the model",
                 { project = project, tasks = #tasks - #with_id })
      end
      tasks = with_id
      if #tasks == 0 then return end

      local batches, failed, skipped, stored = 0, {}, 0, 0
      for first = 1, #tasks, cfg.batch_size do
        local batch = table.move(tasks, first, math.min(first + cfg.batch_size - 1, #tasks), 1, {})
        batches = batches + 1
        local what, n = run_batch(project, batch)
        if what == "skipped" then
          skipped = skipped + 1
        elseif what == "done" then
          stored = stored + n
        else
          local where = ("tasks %d..%d"):format(batch[1].id, batch[#batch].id)
          log.warn("batch failed", { project = project, tasks = where, error = n })
          failed[#failed + 1] = where .. ": " .. n
        end
      end
      log.info("predictions stored", { project = project, tasks = #tasks, batches = batches,
                                       predictions = stored, skipped = skipped,
                                       failed = #failed })
      if #failed > 0 then
        error(("%d of %d batches failed; %s"):format(#failed, batches, failed[1]), 0)
      end
    end, { name = "predict" })
  end,
}
