-- archive.lua: append every event, as one JSON line, to a file per day (UTC):
--   <ARCHIVE_DIR>/events-2026-11-26.jsonl
-- Each line is {"id": <delivery id>, "received_at": <seconds>, "action": ..., "event": <body>}.
--
-- ARCHIVE_DIR defaults to /var/lib/luahook (the systemd unit in deploy/ creates it and
-- lets luahook write there); the folder must exist.
--
-- Label Studio puts the project's secrets in every project object: `token` (the invite
-- token) and `task_data_password`. They are dropped from what is archived. The body is
-- never logged, only the file it went to (at debug level).
--
-- The line is the decoded body encoded again, so it is equal as JSON, not byte for byte:
-- keys come in another order, and an empty list ([]) is written as {} (Lua has one empty
-- table for both). Keep ctx.body instead if you need the exact bytes (see forward.lua).
-- Writing is synchronous: a body of tens of MB (a big import) holds the server while it
-- is written.
--
-- Try it: ARCHIVE_DIR=/tmp luahook fire examples/archive.lua --sample PROJECT_UPDATED

local SECRETS = { "token", "task_data_password" }

-- A copy of the event without the project's secrets. The handlers of one event share
-- `ev`: changing it in place would change it for the handlers that run after this one.
local function without_secrets(ev)
  if type(ev.project) ~= "table" then
    return ev
  end
  local project = {}
  for k, v in pairs(ev.project) do
    project[k] = v
  end
  for _, k in ipairs(SECRETS) do
    project[k] = nil
  end
  local copy = {}
  for k, v in pairs(ev) do
    copy[k] = v
  end
  copy.project = project
  return copy
end

on("*", function(ev, ctx)
  local dir = env("ARCHIVE_DIR", "/var/lib/luahook")
  local path = ("%s/events-%s.jsonl"):format(dir, os.date("!%Y-%m-%d", math.floor(ctx.received_at)))
  local line = json.encode({
    id = ctx.id,
    received_at = ctx.received_at,
    action = ctx.action,
    event = without_secrets(ev),
  })

  local f, err = io.open(path, "a")
  if not f then
    error("cannot open the archive: " .. err, 0)
  end
  local written, werr = f:write(line, "\n")
  f:close()
  if not written then
    error("cannot write the archive: " .. werr, 0)
  end
  log.debug("archived", { file = path, bytes = #line + 1 })
end)
