-- The parts of notify that do not depend on its config: fields of an event, templates,
-- the message shape of each chat service, and the post with its few safe retries.
local M = {}

-- A set of the list's values, or nil for an absent list (meaning "all").
function M.set(list)
  if list == nil then return nil end
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- The first {name} of the template that is not one of `fields`, or nil.
function M.unknown_field(template, fields)
  local known = M.set(fields)
  for name in template:gmatch("{([%w_]+)}") do
    if not known[name] then return name end
  end
  return nil
end

-- The template with each {name} replaced by the field's value; "?" where the event has none.
function M.render(template, fields)
  return (template:gsub("{([%w_]+)}", function(name)
    local v = fields[name]
    if v == nil or v == json.null or v == "" then return "?" end
    return tostring(v)
  end))
end

local function count_of(ev)
  for _, key in ipairs({ "tasks", "annotations", "annotation" }) do
    local v = ev[key]
    if type(v) == "table" and v[1] ~= nil then return #v end
  end
  return nil
end

-- The fields every kind of event has.
function M.fields(ev, ctx, project, ls_url)
  local title
  if type(ev.project) == "table" and type(ev.project.title) == "string" then
    title = ev.project.title
  end
  local f = {
    action = ctx.action,
    project = project,
    project_title = title or (project and ("project " .. project)) or "Label Studio",
    count = count_of(ev),
    id = ctx.id,
  }
  if ls_url then
    ls_url = ls_url:gsub("/+$", "")
    f.link = project and ("%s/projects/%d/data"):format(ls_url, project) or ls_url
    f.ls_url = ls_url
  end
  return f
end

-- A copy of `base` with the fields of one annotation (and its task, if the body has it).
function M.annotation_fields(base, pair, ls)
  local f = {}
  for k, v in pairs(base) do f[k] = v end
  local a = pair.annotation
  f.annotation = a.id
  f.task = (type(pair.task) == "table" and pair.task.id) or a.task
  f.user = a.completed_by
  local labels = ls.labels(a) or {}
  f.labels = #labels > 0 and table.concat(labels, ", ") or "no labels"
  f.label_list = labels
  if f.ls_url and f.project and math.type(f.task) == "integer" then
    f.link = ("%s/projects/%d/data?task=%d"):format(f.ls_url, f.project, f.task)
  end
  return f
end

local array = json.array -- an empty list must go out as [], never {}

-- The body to post for each format.
function M.payload(format, text, f)
  if format == "discord" then
    return { content = text }
  elseif format == "teams" then
    -- A Teams "Workflows" incoming webhook takes a message with an Adaptive Card.
    return {
      type = "message",
      attachments = array({ {
        contentType = "application/vnd.microsoft.card.adaptive",
        content = {
          ["$schema"] = "http://adaptivecards.io/schemas/adaptive-card.json",
          type = "AdaptiveCard",
          version = "1.4",
          body = array({ { type = "TextBlock", text = text, wrap = true } }),
        },
      } }),
    }
  elseif format == "json" then
    return {
      text = text, kind = f.kind, action = f.action, project = f.project, task = f.task,
      annotation = f.annotation, user = f.user, labels = array(f.label_list or {}),
      count = f.count, delivery = f.id,
    }
  end
  return { text = text } -- slack, mattermost
end

-- The cause of an http error without its URL: the URL holds the webhook's key.
local function cause(err)
  return (err:match("^%u+ %S+: (.*)$") or err)
end

-- Posts `body`; true, or false and why. Only what surely did not arrive is tried again:
-- a refused connection, an unknown host, a 429. A timeout or a 5xx may have been posted,
-- and a second try would show the message twice.
function M.post(cfg, body)
  local tries = 0
  while true do
    tries = tries + 1
    local res, err, kind = http.post(cfg.url, { json = body, timeout = cfg.timeout })
    local why
    local again = false
    if not res then
      why = cause(err)
      again = kind == "connect" or kind == "resolve"
    elseif res.status >= 200 and res.status <= 299 then
      return true
    else
      why = ("HTTP %d %s"):format(res.status, (res.body or ""):sub(1, 200))
      again = res.status == 429
    end
    if not again or tries > cfg.retries then
      return false, tries > 1 and ("%s (after %d tries)"):format(why, tries) or why
    end
    log.warn("post failed, trying again", { error = why, try = tries })
    sleep(tries)
  end
end

return M
