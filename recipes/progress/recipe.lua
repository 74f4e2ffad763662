-- progress: milestones of a project's finished tasks (25, 50, 75, 100 % by default),
-- each announced once, remembered in `store`; and "task complete", the event Label
-- Studio never sends, from labelstudio.is_task_complete. Announced in the log, and posted
-- to a chat webhook when `url` is set.
local ls = require "labelstudio"

-- How long a task announced complete is remembered (its later updates say so again).
local TASK_TTL = 90 * 86400

local function set(list)
  if list == nil then return nil end
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

local function cause(err)
  return (err:match("^%u+ %S+: (.*)$") or err)
end

local function render(template, fields)
  return (template:gsub("{([%w_]+)}", function(name)
    local v = fields[name]
    if v == nil then return "?" end
    return tostring(v)
  end))
end

return {
  name = "progress",
  version = "0.1.0",
  description = "Milestones of finished tasks per project, announced once each; task completion",
  config = {
    milestones = {
      type = "list", of = { type = "integer", min = 1, max = 100 }, min = 1,
      default = { 25, 50, 75, 100 },
      description = "percentages of finished tasks to announce, each once per project",
      example = { 10, 50, 90, 100 },
    },
    tasks = {
      type = "boolean", default = true,
      description = "announce each task that becomes complete (labelstudio.is_task_complete)",
    },
    url = {
      type = "string", secret = true, match = "^https?://",
      description = "a chat incoming webhook to post announcements to (only logged when absent)",
      example = "https://hooks.slack.com/services/T000/B000/XXXX",
    },
    format = {
      type = "string", default = "slack", one_of = { "slack", "mattermost", "discord", "json" },
      description = "the post's shape: {text}, or {content} for discord, or the fields for json",
    },
    milestone_text = {
      type = "string",
      default = "{project_title}: {percent}% of the tasks are finished ({finished} of {total})",
      description = "the milestone message; fields project, project_title, percent (the "
        .. "milestone reached), finished, total",
    },
    task_text = {
      type = "string", default = "{project_title}: task {task} is complete",
      description = "the task message; fields project, project_title, task",
    },
    projects = {
      type = "list", min = 1, of = { type = "integer", min = 1 },
      description = "only these projects (all when absent)",
      example = { 7 },
    },
    timeout = {
      type = "number", default = 10, min = 0.1, max = 300,
      description = "seconds for one post",
    },
  },

  setup = function(cfg)
    local projects = set(cfg.projects)
    local milestones = {}
    for _, m in ipairs(cfg.milestones) do milestones[#milestones + 1] = m end
    table.sort(milestones)

    local function announce(kind, text, fields)
      log.info(kind == "milestone" and "milestone reached" or "task complete", {
        project = fields.project, percent = fields.percent, finished = fields.finished,
        total = fields.total, task = fields.task,
      })
      if not cfg.url then return end
      local body
      if cfg.format == "discord" then
        body = { content = text }
      elseif cfg.format == "json" then
        body = { text = text, kind = kind, project = fields.project, percent = fields.percent,
                 finished = fields.finished, total = fields.total, task = fields.task }
      else
        body = { text = text }
      end
      local res, err = http.post(cfg.url, { json = body, timeout = cfg.timeout })
      if not res then error(kind .. " post failed: " .. cause(err), 0) end
      if res.status < 200 or res.status > 299 then
        error(("%s post failed: HTTP %d"):format(kind, res.status), 0)
      end
    end

    on("*", function(ev, ctx)
      local project = ls.project_id(ev)
      if math.type(project) ~= "integer" then return end
      if projects and not projects[project] then return end
      local title = type(ev.project) == "table" and type(ev.project.title) == "string"
        and ev.project.title or ("project " .. project)

      if cfg.tasks then
        local complete, tasks = ls.is_task_complete(ev)
        for _, t in ipairs(complete and tasks or {}) do
          -- Every later update of a complete task says so again: announce it once. The
          -- lock: a second delivery of the task arriving while the first is posted waits.
          local key = "task:" .. tostring(t.id)
          store.lock(key, function()
            if store.get(key) then return end
            local fields = { project = project, project_title = title, task = t.id }
            announce("task", render(cfg.task_text, fields), fields)
            store.set(key, true, TASK_TTL)
          end)
        end
      end

      local p = ls.progress(ev)
      if not p or not p.tasks or not p.finished or p.tasks <= 0 then return end
      local percent = p.finished * 100 // p.tasks
      local p_key = "project:" .. project
      -- One event of a project at a time: two events reaching 50 % together announce once.
      store.lock(p_key, function()
        local reached
        for _, m in ipairs(milestones) do
          if percent >= m and not store.get(p_key .. ":" .. m) then reached = m end
        end
        if not reached then return end
        local fields = { project = project, project_title = title, percent = reached,
                         finished = p.finished, total = p.tasks }
        -- Several milestones at once (an import of finished tasks) give one message, the
        -- highest; the ones below it are marked too, never announced later.
        announce("milestone", render(cfg.milestone_text, fields), fields)
        for _, m in ipairs(milestones) do
          if m <= reached then store.set(p_key .. ":" .. m, true) end
        end
      end)
    end, { name = "watch" })
  end,
}
