-- archive: each event as one JSON line in a file per project and day (UTC), rotated by
-- size. The project's secrets are masked unless `raw` asks for the exact bytes.
local ls = require "labelstudio"

local SECRETS = { "token", "task_data_password" }
local MASK = "***"

local function set(list)
  if list == nil then return nil end
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- A copy of the event with the project's secrets masked. The handlers of one event share
-- `ev`: changing it in place would change it for the handlers after this one.
local function masked(ev)
  if type(ev.project) ~= "table" then return ev end
  local project = {}
  for k, v in pairs(ev.project) do project[k] = v end
  for _, k in ipairs(SECRETS) do
    if project[k] ~= nil and project[k] ~= json.null then project[k] = MASK end
  end
  local copy = {}
  for k, v in pairs(ev) do copy[k] = v end
  copy.project = project
  return copy
end

local function size_of(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n or 0
end

local function exists(path)
  local f = io.open(path, "rb")
  if f then f:close() return true end
  return false
end

return {
  name = "archive",
  version = "0.1.0",
  description = "Each event as one JSON line in a file per project and day, rotated by size",
  config = {
    dir = {
      type = "string", required = true,
      description = "the folder of the archive files (it must exist and be writable)",
      example = "/var/lib/luahook/archive",
    },
    max_bytes = {
      type = "integer", default = 100 * 1024 * 1024, min = 1024,
      description = "size at which a day's file is rotated: "
        .. "project-7-2026-11-27.jsonl becomes project-7-2026-11-27.1.jsonl (then .2, ...)",
    },
    raw = {
      type = "boolean", default = false,
      description = "keep the body's exact bytes, secrets included (else the project's "
        .. "token and task_data_password are masked as \"***\")",
    },
    actions = {
      type = "list", of = { type = "string" }, min = 1,
      description = "only these actions (all when absent)",
      example = { "ANNOTATION_CREATED", "ANNOTATION_UPDATED" },
    },
    projects = {
      type = "list", min = 1, of = { type = "integer", min = 1 },
      description = "only these projects' events (all when absent; an event without a "
        .. "project goes to project-none-DAY.jsonl)",
      example = { 7 },
    },
  },

  setup = function(cfg)
    local projects = set(cfg.projects)
    local dir = cfg.dir:gsub("/+$", "")
    if dir == "" then dir = "/" end

    -- Moves a full file to the first free .N name.
    local function rotate(path)
      local stem = path:gsub("%.jsonl$", "")
      local n = 1
      while exists(("%s.%d.jsonl"):format(stem, n)) do n = n + 1 end
      local ok, err = os.rename(path, ("%s.%d.jsonl"):format(stem, n))
      if not ok then error("cannot rotate the archive: " .. err, 0) end
    end

    on(cfg.actions or "*", function(ev, ctx)
      local project = ls.project_id(ev)
      if projects and not projects[project] then return end
      local event
      if cfg.raw then
        -- The bytes as sent. A pretty-printed body's line breaks (whitespace between
        -- tokens) become spaces, so that the line stays one line.
        event = ctx.body:gsub("[\r\n]", " ")
      else
        event = json.encode(masked(ev))
      end
      local line = ('{"id":%s,"received_at":%s,"action":%s,"event":%s}\n'):format(
        json.encode(ctx.id), json.encode(ctx.received_at), json.encode(ctx.action), event)

      local day = os.date("!%Y-%m-%d", math.floor(ctx.received_at))
      local path = ("%s/project-%s-%s.jsonl"):format(dir, project or "none", day)
      local size = size_of(path)
      if size > 0 and size + #line > cfg.max_bytes then rotate(path) end

      local f, err = io.open(path, "a")
      if not f then error("cannot open the archive: " .. err, 0) end
      local ok, werr = f:write(line)
      f:close()
      if not ok then error("cannot write the archive: " .. werr, 0) end
      log.debug("archived", { file = path, bytes = #line })
    end, { name = "write" })
  end,
}
