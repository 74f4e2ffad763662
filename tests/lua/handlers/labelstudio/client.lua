-- Calls a labelstudio client method the event names and logs what came back.
-- ev.client: the client's options (one client per ev.name, kept across events, so a
-- personal access token's access token is reused); ev.call: the method; ev.args: its args.
local ls = require "labelstudio"

local clients = {}

on("LS", function(ev)
  local c = clients[ev.name]
  if c == nil then
    c = ls.client(ev.client)
    clients[ev.name] = c
  end
  local r = table.pack(c[ev.call](c, table.unpack(ev.args or {})))
  log.info("ls", { n = r.n, r1 = r[1], r2 = r[2], r3 = r[3], r4 = r[4] })
end)

-- Misuse raises; the messages are logged.
on("LS_MISUSE", function()
  local msgs = {}
  local function try(f, ...)
    local ok, e = pcall(f, ...)
    msgs[#msgs + 1] = ok and "no error" or e
  end
  try(ls.client)
  try(ls.client, { url = "localhost:8080", token = "t" })
  try(ls.client, { url = "http://ls.test", token = "" })
  try(ls.client, { url = "http://ls.test", token = "t", kind = "jwt" })
  local c = ls.client{ url = "http://ls.test", token = "t" }
  try(c.task, c, "21")
  try(c.create_predictions, c, 7, { { result = {} } })
  log.info("misuse", { msgs = msgs })
end)

-- labelstudio from a module of lib/: the same module as the script's.
on("TASKS_CREATED", function(ev)
  local where = require("ls_where")(ev)
  log.info("where", { project = where.project, tasks = where.tasks,
                      same = package.loaded.labelstudio == ls })
end)
