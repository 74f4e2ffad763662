--[[
luahook/testing/runner.lua - one test file: its handlers, its tests in order, fire and
fire_all, the clock, the log records, and the report (one line per test, details under a
failure).

Everything a handler does runs on luahook's own VM and standard library: handlers() loads
scripts as `serve` does; fire() goes through the server's dispatch (decode and validate,
accept, run: the same ctx, the same refusals), each handler in its own task with the
handler timeout (its CPU guard is the server's count hook); sleep, timers, http timeouts
and os.time() read the clock, here a virtual one; http requests go to the mocks
(mocks.lua) instead of libcurl. The host table (src/testing.c) is the bridge.

Between the tests of one file the handler scripts' state persists, and so does the clock:
each test starts at the time the previous one left off (1700000000.0 for the first).
Mocks, recorded calls, logs, mock.env overrides, timers started by handlers and waits still
pending are reset; timers started while the scripts loaded are armed again, as if the
scripts had just loaded.
]]

local render = require("luahook.testing.render")
local A = require("luahook.testing.assert")
local mocks = require("luahook.testing.mocks")
local samples = require("luahook.testing.samples")

local fmt = string.format
local type_name, errmsg = render.type_name, render.errmsg

local M = {}

local host
local F = {} -- the file: path, dir, tests
local S      -- the running test: logs, timer failures
local running_test = false

local function new_state()
  S = { logs = {}, timer_failures = {} }
end

function M.init(h)
  host = h
  samples.samples = h.samples or {}
  mocks.init(h)
  h.on_log(function(level, msg, fields)
    S.logs[#S.logs + 1] = { level = level, msg = msg, fields = fields }
  end)
  -- a timer callback failed: a log record, as the server's "timer failed" line, and a
  -- failure of the fire or clock.advance running now
  h.on_timer_failed(function(label, outcome, err)
    local script, line = label:match("^timer (.*):(%d+)$")
    S.logs[#S.logs + 1] = { level = "error", msg = "timer failed", fields = {
      script = script, line = tonumber(line), outcome = outcome, error = err } }
    S.timer_failures[#S.timer_failures + 1] = { label = label, error = err }
  end)
end

-- ----------------------------------------------------------------------------------------
-- handlers(), fire(), fire_all()
-- ----------------------------------------------------------------------------------------

local function join(dir, p)
  if p:sub(1, 1) == "/" or dir == nil or dir == "" or dir == "." then return p end
  return dir .. "/" .. p
end

local function handlers(...)
  if running_test then
    -- in a test it would register the handlers again for every later test
    error("handlers: call it at the top level of the test file", 2)
  end
  local n = select("#", ...)
  if n == 0 then error("handlers: give at least one script or folder", 2) end
  for i = 1, n do
    local p = select(i, ...)
    if type(p) ~= "string" then
      error(fmt("handlers: argument #%d must be a path (a string), not %s", i, type_name(p)), 2)
    end
    local problem = host.load(join(F.dir, p))
    if problem then error(problem, 0) end
  end
end

-- use(name, cfg [, opts]) at the top level of a test file: an instance of the recipe, its
-- handlers loaded before the tests as handlers() loads scripts'. Beside a recipe.lua, the
-- name of that folder means that very folder (a recipe's own tests test it, not another
-- copy found first); other names are found as a server finds them.
local function use(name, cfg, opts)
  if running_test then
    error("use: call it at the top level of the test file", 2)
  end
  local info = debug.getinfo(2, "Sl")
  local file = info.source:sub(1, 1) == "@" and info.source:sub(2) or info.short_src
  local problem = host.use(name, cfg, opts, file, info.currentline, F.dir)
  if problem then error(problem, 0) end
end

local function read_file(p, level)
  if p:sub(1, 8) == "bundled:" then -- a bundled recipe's test reads the binary's copy
    local s = host.embedded("recipes/" .. p:sub(9))
    if not s then error("fire: no bundled file " .. p, level + 1) end
    return s
  end
  local f, err = io.open(p, "rb")
  if not f then
    error("fire: cannot open " .. p .. ": " .. (err or ""):gsub("^.-: ", ""), level + 1)
  end
  local s = f:read("a")
  f:close()
  return s
end

-- Fails the calling fire or clock.advance, at the test file's line, with every handler
-- and timer that failed.
local function fail_runs(failed, what)
  local lines = {}
  for _, f in ipairs(failed) do
    lines[#lines + 1] = fmt("%s %s failed: %s", f.kind, f.label, f.error)
  end
  local first = table.remove(lines, 1)
  lines[#lines + 1] = fmt("(%s(..., { allow_failure = true }) expects failures)", what)
  A.fail(first, nil, lines, 4)
end

local function new_timer_failures(from)
  local out = {}
  for i = from, #S.timer_failures do
    local f = S.timer_failures[i]
    out[#out + 1] = { kind = "timer", label = f.label:gsub("^timer ", ""), error = f.error }
  end
  return out
end

local function not_in_task(what)
  if host.in_task() then
    error(what .. ": not while a handler or a timer runs (call it from the test itself)", 3)
  end
end

local function check_opts(opts, what, level)
  if opts ~= nil and type(opts) ~= "table" then
    error(what .. ": the options must be a table, not " .. type(opts), level + 1)
  end
  opts = opts or {}
  if opts.attempt ~= nil and (math.type(opts.attempt) ~= "integer" or opts.attempt < 1) then
    error(what .. ": opts.attempt must be an integer >= 1", level + 1)
  end
  return opts
end

-- Starts one event through dispatch: its handlers run until they first wait. A body the
-- server would refuse raises, with the server's message.
local function start(event, opts, what, level)
  local body
  if type(event) == "table" then
    local okr, s = pcall(json.encode, event)
    if not okr then
      error(what .. ": the event cannot be encoded as JSON: " .. errmsg(s), level + 1)
    end
    body = s
  elseif type(event) == "string" then
    body = event:sub(-5) == ".json" and read_file(join(F.dir, event), level + 1) or event
  else
    error(what .. ": the event must be a table, a JSON string or a .json file, not " ..
          type_name(event), level + 1)
  end
  local headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#body),
                    host = "127.0.0.1:9090" }
  if opts.headers ~= nil then
    if type(opts.headers) ~= "table" then error(what .. ": opts.headers must be a table", level + 1) end
    for k, v in next, opts.headers do headers[tostring(k):lower()] = tostring(v) end
  end
  local fired = host.fire(body, headers, opts.path or "/", opts.remote or "127.0.0.1:40000",
                          opts.attempt or 1)
  if host.ended(fired) then
    local status, answer = host.outcome(fired)
    if status ~= 200 and status ~= 500 then
      local a = json.decode(answer)
      error(what .. ": " .. tostring(a and a.error or answer), level + 1)
    end
  end
  return fired
end

-- Moves the clock from wait to wait until every event ended.
local function wait(list, what)
  while true do
    local running = false
    for _, f in ipairs(list) do
      if not host.ended(f) then running = true; break end
    end
    if not running then return end
    if not host.step() then error(what .. ": internal error: handlers wait on nothing", 3) end
  end
end

local function results(fired)
  local _, answer, runs = host.outcome(fired)
  local a = json.decode(answer)
  local r = { ok = true, handlers = a.handlers, id = a.id }
  for i, run in ipairs(runs) do
    r[i] = run
    if not run.ok then r.ok = false end
  end
  return r
end

local function check_failures(list, from, what)
  local failed = {}
  for _, r in ipairs(list) do
    for _, run in ipairs(r) do
      if not run.ok then
        -- the stable id first, then file:line, as luahook fire prints them
        failed[#failed + 1] = { kind = "handler", label = run.id .. " " .. run.handler,
                                error = run.error }
      end
    end
  end
  for _, f in ipairs(new_timer_failures(from)) do failed[#failed + 1] = f end
  if #failed > 0 then fail_runs(failed, what) end
end

local function fire(event, opts)
  not_in_task("fire")
  opts = check_opts(opts, "fire", 2)
  local from = #S.timer_failures + 1
  local fired = start(event, opts, "fire", 2)
  wait({ fired }, "fire")
  local r = results(fired)
  if opts.allow_failure ~= true then check_failures({ r }, from, "fire") end
  return r
end

-- Several events at once: their handlers interleave at their waits (sleep, http), as on a
-- server that receives them together. Returns one result list per event, in order.
local function fire_all(events, opts)
  not_in_task("fire_all")
  if type(events) ~= "table" then
    error("fire_all: the events must be a list, not " .. type_name(events), 2)
  end
  opts = check_opts(opts, "fire_all", 2)
  local from = #S.timer_failures + 1
  local list = {}
  for i, ev in ipairs(events) do list[i] = start(ev, opts, "fire_all", 2) end
  wait(list, "fire_all")
  local out = {}
  for i, f in ipairs(list) do out[i] = results(f) end
  if opts.allow_failure ~= true then check_failures(out, from, "fire_all") end
  return out
end

-- ----------------------------------------------------------------------------------------
-- clock, logs
-- ----------------------------------------------------------------------------------------

local clock = {}

function clock.now()
  return host.now()
end

function clock.advance(s, opts)
  not_in_task("clock.advance")
  if type(s) ~= "number" or not (s >= 0 and s <= 1e7) then
    error("clock.advance: seconds must be a number from 0 to 1e7", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("clock.advance: the options must be a table, not " .. type(opts), 2)
  end
  local from = #S.timer_failures + 1
  host.advance(s)
  if not (opts ~= nil and opts.allow_failure == true) then
    local failed = new_timer_failures(from)
    if #failed > 0 then fail_runs(failed, "clock.advance") end
  end
end

local LEVELS = { debug = true, info = true, warn = true, error = true }

local function logs(level)
  if level ~= nil and not LEVELS[level] then
    error("logs: the level must be debug, info, warn or error", 2)
  end
  local out = {}
  for _, r in ipairs(S.logs) do
    if level == nil or r.level == level then out[#out + 1] = r end
  end
  return out
end

-- ----------------------------------------------------------------------------------------
-- Running a file
-- ----------------------------------------------------------------------------------------

local function test(name, fn)
  if running_test then error("test: tests are registered at the top level of the test file", 2) end
  if type(name) ~= "string" then error("test: the name must be a string, not " .. type_name(name), 2) end
  if type(fn) ~= "function" then error("test: the test must be a function, not " .. type_name(fn), 2) end
  F.tests[#F.tests + 1] = { name = name, fn = fn }
end

-- What a test starts from: nothing waiting, the load-time timers armed again, no mocks.
local function reset()
  host.reset()
  mocks.reset()
  new_state()
end

-- A plain error: the message and the test file's frames of the stack.
local function capture(e)
  if getmetatable(e) == A.failure_mt then return e end
  local frames = {}
  local src = "@" .. F.path
  for l = 2, 60 do
    local info = debug.getinfo(l, "Sl")
    if not info then break end
    if info.source == src and info.currentline > 0 then
      frames[#frames + 1] = F.path .. ":" .. info.currentline
      if #frames == 8 then break end
    end
  end
  return { msg = errmsg(e), frames = frames }
end

local out = io.write

local function report(name, err, with_logs)
  out("FAIL ", F.path, ": ", name, "\n")
  if getmetatable(err) == A.failure_mt then
    -- a multi-line message or detail (a handler's error) stays indented
    out("    ", (tostring(err):gsub("\n", "\n      ")), "\n")
    for _, d in ipairs(err.details) do out("      ", (tostring(d):gsub("\n", "\n        ")), "\n") end
  else
    local msg = err.msg
    if not msg:match("^[^\n]-:%d+: ") and err.frames[1] then msg = err.frames[1] .. ": " .. msg end
    local first = true
    for line in (msg .. "\n"):gmatch("(.-)\n") do
      out(first and "    " or "      ", line, "\n")
      first = false
    end
    if #err.frames > 0 then
      out("      traceback:\n")
      for _, f in ipairs(err.frames) do out("        ", f, "\n") end
    end
  end
  if with_logs and S and #S.logs > 0 then
    out("    logs:\n")
    for _, r in ipairs(S.logs) do out("      ", render.log_record(r), "\n") end
  end
end

local function dirname(p)
  local d = p:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

-- Runs the test file at `path`; returns passed, failed.
function M.run(path)
  F = { path = path, dir = dirname(path), tests = {} }
  A.file = path
  mocks.reset()
  new_state()
  running_test = false
  local api = {
    handlers = handlers, use = use, test = test, fire = fire, fire_all = fire_all,
    sample = samples.sample,
    eq = A.eq, neq = A.neq, ok = A.ok, nok = A.nok, match = A.match, fails = A.fails,
    near = A.near,
    mock = mocks.api, clock = clock, logs = logs,
    os = host.real_os, -- the test file's own time is the real one
  }
  -- a later part (the store) plugs in here: inspection through the host, empty per file
  if host.store_inspect then api.store = host.store_inspect end
  local tenv = setmetatable(api, { __index = _G })
  -- require finds the modules of the test file's folder (FOLDER/lib/), as a script's does:
  -- a test beside its handlers gets the very modules they got; a recipe's test, the
  -- modules beside recipe.lua (a bundled recipe's: its copy in the binary)
  local bundled = path:match("^bundled:([^/]+)/")
  local chunk, lerr
  if bundled then
    host.package_root(tenv, "", "bundled:" .. bundled .. "\0test", "?.lua;?/init.lua", nil,
                      "recipes/" .. bundled)
    local src = host.embedded("recipes/" .. path:sub(9))
    chunk, lerr = load(src or "", "@" .. path, "t", tenv)
  else
    local rf = io.open(F.dir .. "/recipe.lua", "rb")
    if rf then
      rf:close()
      host.package_root(tenv, F.dir, F.dir .. "\0test", "?.lua;?/init.lua")
    else
      host.package(tenv, path)
    end
    chunk, lerr = loadfile(path, "t", tenv)
  end
  local passed, failed = 0, 0

  local okr, e
  if chunk then
    okr, e = xpcall(chunk, capture)
  else
    okr, e = false, { msg = errmsg(lerr), frames = {} }
  end
  host.seal() -- on() is closed from here, as once a server's scripts loaded
  if not okr then
    report("(load)", e, true)
    io.stdout:flush()
    mocks.reset()
    return 0, 1
  end

  if #F.tests == 0 then
    -- a mistyped file (tests(...), a test commented out) must not pass silently
    out("FAIL ", path, ": (no tests)\n")
    io.stdout:flush()
    mocks.reset()
    return 0, 1
  end

  running_test = true
  for _, t in ipairs(F.tests) do
    reset()
    local tok, terr = xpcall(t.fn, capture)
    if tok then
      passed = passed + 1
      out("ok   ", path, ": ", t.name, "\n")
    else
      failed = failed + 1
      report(t.name, terr, true)
    end
    io.stdout:flush()
  end
  running_test = false
  host.reset()
  mocks.reset() -- the environment as it was
  return passed, failed
end

return M
