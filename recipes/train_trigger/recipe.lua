-- train_trigger: call a training URL after every N new or updated annotations of a
-- project, at most once per min_interval. The counts live in `store` (reloads and, with
-- --state-dir, restarts keep them) and one lock per project makes sure that one
-- threshold starts one training, however many events arrive while it is being started.
local ls = require "labelstudio"

local function set(list)
  if list == nil then return nil end
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function cause(err)
  return (err:match("^%u+ %S+: (.*)$") or err)
end

return {
  name = "train_trigger",
  version = "0.1.0",
  description = "Call a training URL after every N new or updated annotations per project",
  config = {
    url = {
      type = "string", required = true, secret = true, match = "^https?://",
      description = "the training URL; it gets a POST {project, annotations} "
        .. "(secret: it may hold a key)",
      example = "http://model.internal:9090/train",
    },
    headers = {
      type = "map", of = { type = "string", secret = true }, secret = true,
      description = "extra headers for the training call",
      example = { Authorization = "Bearer model-key" },
    },
    every = {
      type = "integer", default = 50, min = 1,
      description = "annotations counted per project before a training",
      example = 100,
    },
    min_interval = {
      type = "number", default = 600, min = 0,
      description = "seconds between two trainings of one project; what comes meanwhile "
        .. "keeps counting and the next event after the interval starts the training",
    },
    actions = {
      type = "list", of = { type = "string" }, min = 1,
      default = { "ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED" },
      description = "the actions whose annotations count",
    },
    count_skips = {
      type = "boolean", default = false,
      description = "count skipped annotations too",
    },
    projects = {
      type = "list", min = 1, of = { type = "integer", min = 1 },
      description = "only these projects (all when absent)",
      example = { 7 },
    },
    timeout = {
      type = "number", default = 20, min = 0.1, max = 300,
      description = "seconds for the training call",
    },
  },

  setup = function(cfg)
    local projects = set(cfg.projects)

    on(cfg.actions, function(ev, ctx)
      local project = ls.project_id(ev)
      if math.type(project) ~= "integer" then return end
      if projects and not projects[project] then return end
      local n = 0
      for _, pair in ipairs(ls.annotations(ev)) do
        if cfg.count_skips or not ls.is_skip(pair.annotation) then n = n + 1 end
      end
      if n == 0 then return end

      local p = "project:" .. project
      store.lock(p, function()
        local count = store.incr(p .. ":count", n)
        if count < cfg.every then return end
        local last = store.get(p .. ":last")
        local now = os.time()
        if last and now - last < cfg.min_interval then
          log.debug("training due, waiting for min_interval",
                    { project = project, count = count, wait = cfg.min_interval - (now - last) })
          return
        end
        local res, err = http.post(cfg.url, {
          json = { project = project, annotations = count },
          headers = cfg.headers, timeout = cfg.timeout,
        })
        local why
        if not res then
          why = cause(err)
        elseif res.status < 200 or res.status > 299 then
          why = ("HTTP %d"):format(res.status)
        end
        if why then
          -- This run's annotations are taken back: a repeat of this run (the journal)
          -- counts them again, and the next event tries the training again.
          store.incr(p .. ":count", -n)
          error("training call failed: " .. why, 0)
        end
        store.set(p .. ":count", 0)
        store.set(p .. ":last", now)
        log.info("training started", { project = project, annotations = count })
      end)
    end, { name = "count" })
  end,
}
