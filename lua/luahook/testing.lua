--[[
luahook/testing.lua - the Lua half of `luahook test`.

The C runner creates one fresh Lua state per test file (standard library, the global
`json` of luahook, and `__luahook = { version, samples = { [ACTION] = "<json>" } }`),
runs this chunk, and calls `run(test_file_path)` on the table it returns: the file's
tests run, one line per test is written to stdout, and `passed, failed` is returned.

A test file sees: handlers, test, fire, sample, eq, neq, ok, nok, match, fails, near,
mock (mock.http, mock.calls, mock.env), clock (clock.now, clock.advance), logs.

Handler scripts loaded by handlers() see what the server gives them (on, log, json, http,
sleep, timer, env and the standard library), each script in its own environment, except
that in test mode nothing touches the network and time is virtual:

- `http` is answered by the mocks of the running test (never the network);
- `sleep`, mock delays, http timeouts, timers, os.time() and os.date(fmt) use a virtual
  clock that starts at 1700000000.0 in every test and moves only when every handler is
  waiting (fire) or when the test calls clock.advance;
- the handler timeout (--handler-timeout, __luahook.handler_timeout) bounds a run's
  virtual waiting plus its real computing; a busy loop is stopped by the C count hook
  (__luahook.arm/disarm), which no pcall can catch;
- `log.*` records are captured (see logs()), not printed;
- `env` reads the mock.env overrides of the running test, then the real environment;
- require("http"/"log"/"timer") gives these test-mode modules, require("json") the real one;
- misuse raises "file:line: message" at the script's line, like the server's luaL_error.

A handler or timer callback that fails makes the fire or clock.advance that ran it fail
the test, unless that call was given { allow_failure = true }. handlers() works only at
the top level of a test file, and a file that declares no test fails.

Between the tests of one file, the handler scripts' own module-level state persists (a
counter in a script keeps counting); mocks, recorded calls, logs, env overrides, the
clock, timers started by handlers or callbacks, and waits still pending are reset. Timers
started while handlers() loaded the scripts are armed again at the start of every test, as
if the scripts had just loaded. Each test FILE gets a fresh Lua state.
]]

local json = json
local START = 1700000000.0
local host = type(__luahook) == "table" and __luahook or {}
-- --handler-timeout / LUAHOOK_HANDLER_TIMEOUT (0: no limit), as the server applies it
local HANDLER_TIMEOUT = tonumber(host.handler_timeout) or 30
local TIMEOUT_MSG = string.format("handler timed out after %g s (--handler-timeout)",
                                  HANDLER_TIMEOUT)
-- The CPU guard: a C count hook on every coroutine. arm(s) sets a deadline of s seconds of
-- real time for the Lua code that runs next; past it, the hook yields the running
-- coroutine (resume returns true and no value) or raises where it cannot yield, again and
-- again, so no pcall can keep a busy loop alive. disarm() tells whether it tripped.
local cpu_arm = host.arm or function() end
local cpu_disarm = host.disarm or function() return false end
local HARNESS_SRC = debug.getinfo(1, "S").source

local unpack = table.unpack
local fmt = string.format

local M = {}

-- ----------------------------------------------------------------------------------------
-- Rendering values (diffs, logs)
-- ----------------------------------------------------------------------------------------

local function is_null(v)
  return json ~= nil and json.null ~= nil and rawequal(v, json.null)
end

local function quote(s)
  return '"' .. s:gsub('[%c"\\\128-\255]', function(c)
    if c == '"' then return '\\"' end
    if c == "\\" then return "\\\\" end
    if c == "\n" then return "\\n" end
    if c == "\r" then return "\\r" end
    if c == "\t" then return "\\t" end
    if c:byte() >= 128 then return c end -- UTF-8 stays readable
    return fmt("\\%03d", c:byte())
  end) .. '"'
end

local function render_number(v)
  if math.type(v) == "integer" then return fmt("%d", v) end
  if v ~= v then return "0/0" end
  if v == math.huge then return "math.huge" end
  if v == -math.huge then return "-math.huge" end
  local s
  for p = 14, 17 do
    s = fmt("%." .. p .. "g", v)
    if tonumber(s) == v then break end
  end
  if not s:find("[%.eEn]") then s = s .. ".0" end
  return s
end

local IDENT = "^[%a_][%w_]*$"
local KEYWORDS = {}
for w in ([[and break do else elseif end false for function goto if in local nil not or
  repeat return then true until while]]):gmatch("%a+") do KEYWORDS[w] = true end

local function key_order(a, b)
  local ta, tb = type(a), type(b)
  if ta == "number" and tb == "number" then return a < b end
  if ta == "number" then return true end
  if tb == "number" then return false end
  if ta == "string" and tb == "string" then return a < b end
  if ta == "string" then return true end
  if tb == "string" then return false end
  return tostring(a) < tostring(b)
end

local function sorted_keys(t)
  local keys = {}
  for k in next, t do keys[#keys + 1] = k end
  table.sort(keys, key_order)
  return keys
end

-- A sequence: keys exactly 1..n.
local function seq_len(t)
  local n = 0
  for _ in next, t do n = n + 1 end
  for i = 1, n do
    if rawget(t, i) == nil then return nil end
  end
  return n
end

local render

local function render_key(k)
  if type(k) == "string" and k:match(IDENT) and not KEYWORDS[k] then return k end
  return "[" .. render(k, 0, {}) .. "]"
end

function render(v, depth, seen)
  local t = type(v)
  if t == "nil" then return "nil" end
  if is_null(v) then return "json.null" end
  if t == "string" then return quote(v) end
  if t == "number" then return render_number(v) end
  if t == "boolean" then return tostring(v) end
  if t == "table" then
    local mt = getmetatable(v)
    if type(mt) == "table" and rawget(mt, "__tostring") then
      local ok, s = pcall(tostring, v)
      if ok and type(s) == "string" then return s end
    end
    if seen[v] then return "<cycle>" end
    if depth > 6 then return "{...}" end
    seen[v] = true
    local parts = {}
    local n = seq_len(v)
    if n then
      for i = 1, n do parts[i] = render(v[i], depth + 1, seen) end
    else
      for _, k in ipairs(sorted_keys(v)) do
        parts[#parts + 1] = render_key(k) .. " = " .. render(v[k], depth + 1, seen)
      end
    end
    seen[v] = nil
    if #parts == 0 then return "{}" end
    return "{" .. table.concat(parts, ", ") .. "}"
  end
  return "<" .. t .. ">"
end

local RENDER_MAX = 200

local function show(v)
  local s = render(v, 0, {})
  if #s > RENDER_MAX then
    local cut = RENDER_MAX
    -- do not cut a UTF-8 sequence in two
    while cut > 1 and s:byte(cut + 1) and s:byte(cut + 1) >= 0x80 and s:byte(cut + 1) < 0xC0 do
      cut = cut - 1
    end
    s = s:sub(1, cut) .. fmt("... (%d bytes)", #s)
  end
  return s
end

local function path_elem(k)
  if type(k) == "string" and k:match(IDENT) then return "." .. k end
  return "[" .. render(k, 0, {}) .. "]"
end

local function errmsg(e)
  if type(e) == "string" then return e end
  if type(e) == "number" then return tostring(e) end
  local mt = getmetatable(e)
  if type(mt) == "table" and mt.__tostring then
    local ok, s = pcall(tostring, e)
    if ok and type(s) == "string" then return s end
  end
  if is_null(e) then return "(error object is a json.null value)" end
  return fmt("(error object is a %s value)", type(e))
end

-- ----------------------------------------------------------------------------------------
-- Per-file and per-test state
-- ----------------------------------------------------------------------------------------

local F = {} -- the file: path, dir, source, tests, handlers, routes, load timers
local S      -- the running test: clock, queue, mocks, calls, logs, env overrides

local tasks_by_co = setmetatable({}, { __mode = "k" })
local WAIT = {} -- what a task yields while it waits on the virtual clock

local function new_state()
  return { now = START, queue = {}, seq = 0, mocks = {}, calls = {}, logs = {}, env = {},
           timer_failures = {} }
end

-- The queue: entries { at, seq, fn }, kept sorted by (at, seq).
local function schedule(at, fn)
  S.seq = S.seq + 1
  local e = { at = at, seq = S.seq, fn = fn }
  local q = S.queue
  local lo, hi = 1, #q + 1
  while lo < hi do
    local mid = (lo + hi) // 2
    local m = q[mid]
    if m.at < at or (m.at == at and m.seq < e.seq) then lo = mid + 1 else hi = mid end
  end
  table.insert(q, lo, e)
  return e
end

local function cancel(e)
  if e then e.cancelled = true end
end

local function next_entry(limit)
  local q = S.queue
  while q[1] and q[1].cancelled do table.remove(q, 1) end
  local e = q[1]
  if e and (limit == nil or e.at <= limit) then
    table.remove(q, 1)
    return e
  end
  return nil
end

local function run_entry(e)
  if e.at > S.now then S.now = e.at end
  e.fn()
end

-- ----------------------------------------------------------------------------------------
-- Tasks: a handler run or a timer callback, each in its own coroutine
-- ----------------------------------------------------------------------------------------

local function fn_where(fn)
  local info = debug.getinfo(fn, "S")
  local src = info.source:sub(1, 1) == "@" and info.source:sub(2) or info.short_src
  return src, info.linedefined
end

local finish
local in_task = 0 -- > 0 while a task's coroutine runs (fire and clock.advance refuse then)

-- Closes a task's coroutine (its to-be-closed variables run), under the CPU guard with a
-- second of grace, as the server does.
local function close_co(co)
  if coroutine.status(co) ~= "suspended" then return end
  cpu_arm(1)
  pcall(coroutine.close, co)
  cpu_disarm()
end

local function time_out(t)
  if t.done then return end
  close_co(t.co)
  finish(t, false, TIMEOUT_MSG)
end

-- Resumes a task's coroutine with the CPU guard armed for what is left of its budget: the
-- handler timeout minus the virtual time it has waited and the real time it has computed.
local function step(t, ...)
  if t.done then return end
  local guarded = HANDLER_TIMEOUT > 0
  if guarded then
    local left = HANDLER_TIMEOUT - (S.now - t.started) - t.cpu
    if left < 0.001 then return time_out(t) end
    cpu_arm(left)
  end
  local c0 = os.clock()
  in_task = in_task + 1
  local rok, r1 = coroutine.resume(t.co, ...)
  in_task = in_task - 1
  local tripped = guarded and cpu_disarm()
  t.cpu = t.cpu + (os.clock() - c0)
  if t.done then return end -- killed meanwhile
  if tripped then
    time_out(t)
  elseif not rok then
    finish(t, false, errmsg(r1))
  elseif coroutine.status(t.co) == "dead" then
    finish(t, true)
  elseif r1 ~= WAIT then
    close_co(t.co)
    finish(t, false, "a handler may not yield by itself (use sleep or http, which wait)")
  end
end

function finish(t, ok, err)
  t.done = true
  t.ok = ok
  t.err = err
  cancel(t.timeout_entry)
  cancel(t.wait)
  t.wait = nil
  if t.on_done then t.on_done(t) end
end

local function spawn(label, fn, args, on_done)
  local t = { label = label, done = false, on_done = on_done, state = S, started = S.now,
              cpu = 0 }
  t.co = coroutine.create(fn)
  tasks_by_co[t.co] = t
  if HANDLER_TIMEOUT > 0 then
    -- the virtual part of the budget: waiting on sleep, http or mock delays
    t.timeout_entry = schedule(S.now + HANDLER_TIMEOUT, function()
      t.timeout_entry = nil
      time_out(t)
    end)
  end
  step(t, unpack(args, 1, args.n or #args))
  return t
end

-- Raises `msg` as the server's C functions do (luaL_error, luaL_argerror): prefixed with
-- "file:line: " of the code that called the API, the first frame outside this harness
-- (nothing when that caller is a C function such as pcall, as with luaL_where).
local function raise(msg)
  for level = 2, 100 do
    local info = debug.getinfo(level, "Sl")
    if not info then break end
    if info.source ~= HARNESS_SRC then
      if info.what ~= "C" and info.currentline > 0 then
        msg = info.short_src .. ":" .. info.currentline .. ": " .. msg
      end
      break
    end
  end
  error(msg, 0)
end

-- The task whose own coroutine is running, or raises `what`.
local function current_task(what)
  local co = coroutine.running()
  local t = tasks_by_co[co]
  if t == nil or t.done or t.state ~= S or not coroutine.isyieldable() then
    raise(what .. ": only inside a handler or a timer callback, in its own coroutine " ..
          (what == "http" and "(the call waits without blocking the server)"
                           or "(it waits without blocking the server)"))
  end
  return t
end

-- Waits until virtual time `at`, then returns what `values()` gives.
local function wait_until(t, at, values)
  t.wait = schedule(at, function()
    t.wait = nil
    if values then step(t, values()) else step(t) end
  end)
  return coroutine.yield(WAIT)
end

-- ----------------------------------------------------------------------------------------
-- Test-mode globals for handler scripts: on, log, http, sleep, timer, env
-- ----------------------------------------------------------------------------------------

local loading = false

local function check_action(a, what)
  if type(a) ~= "string" then
    raise(fmt("on: %s must be a string, got %s", what, type(a)))
  end
  if a == "" then raise(fmt("on: %s must not be empty", what)) end
end

local function on(action, fn)
  if not loading then
    raise("on: handlers can only be registered while scripts load")
  end
  local ta = type(action)
  if ta ~= "string" and ta ~= "table" then
    raise(fmt("bad argument #1 to 'on' (action name or list of names expected, got %s)",
              action == nil and "no value" or ta))
  end
  if type(fn) ~= "function" then
    raise(fmt("bad argument #2 to 'on' (function expected, got %s)",
              fn == nil and "no value" or type(fn)))
  end
  local actions
  if ta == "string" then
    check_action(action, "the action")
    actions = { action }
  else
    local n = #action
    if n == 0 then raise("bad argument #1 to 'on' (the list of actions is empty)") end
    actions = {}
    for i = 1, n do
      check_action(action[i], "each action in the list")
      actions[i] = action[i]
    end
  end
  local src, line = fn_where(fn)
  local h = { fn = fn, label = src .. ":" .. line }
  for _, a in ipairs(actions) do
    local list = F.routes[a]
    if not list then list = {}; F.routes[a] = list end
    list[#list + 1] = h
  end
end

-- log
local log = {}
for _, level in ipairs({ "debug", "info", "warn", "error" }) do
  log[level] = function(msg, fields)
    if type(msg) == "number" then msg = tostring(msg) end
    if type(msg) ~= "string" then
      raise(fmt("bad argument #1 to '%s' (string expected, got %s)", level,
                msg == nil and "no value" or type(msg)))
    end
    if fields ~= nil and type(fields) ~= "table" then
      raise(fmt("bad argument #2 to '%s' (table expected, got %s)", level, type(fields)))
    end
    S.logs[#S.logs + 1] = { level = level, msg = msg, fields = fields }
  end
end

local function add_log(level, msg, fields)
  S.logs[#S.logs + 1] = { level = level, msg = msg, fields = fields }
end

-- sleep
local function check_seconds(v, n, fname)
  if type(v) ~= "number" then
    local cv = type(v) == "string" and tonumber(v)
    if not cv then
      raise(fmt("bad argument #%d to '%s' (number expected, got %s)", n, fname,
                v == nil and "no value" or type(v)))
    end
    v = cv
  end
  if not (v >= 0) or v > 1e7 then
    raise(fmt("bad argument #%d to '%s' (seconds must be a number from 0 to 1e7)", n, fname))
  end
  return v
end

local function sleep(s)
  s = check_seconds(s, 1, "sleep")
  local t = current_task("sleep")
  wait_until(t, S.now + s)
end

-- timer
local timer_methods = {}
local timer_mt = {
  __index = timer_methods,
  __tostring = function(h) return h.running_ and h.label or "timer (stopped)" end,
}

local arm

local function tick(h)
  h.entry = nil
  if not h.running_ then return end
  if h.every then
    arm(h, S.now + h.interval)
    if h.task and not h.task.done then return end -- never overlaps itself
  else
    h.running_ = false
  end
  h.task = spawn(h.label, h.fn, { h, n = 1 }, function(t)
    if not t.ok then
      local timeout = t.err == TIMEOUT_MSG
      add_log("error", "timer failed", {
        script = h.script, line = h.line, outcome = timeout and "timeout" or "error",
        error = t.err,
      })
      -- the fire or clock.advance running now fails, unless it allows failures
      t.state.timer_failures[#t.state.timer_failures + 1] = { label = h.label, error = t.err }
    end
  end)
end

function arm(h, at)
  h.entry = schedule(at, function() tick(h) end)
end

function timer_methods.stop(h)
  if getmetatable(h) ~= timer_mt then raise("bad argument #1 to 'stop' (timer expected)") end
  h.running_ = false
  cancel(h.entry)
  h.entry = nil
end

function timer_methods.active(h)
  if getmetatable(h) ~= timer_mt then raise("bad argument #1 to 'active' (timer expected)") end
  return h.running_
end

local function start_timer(s, fn, every)
  local fname = every and "every" or "after"
  s = check_seconds(s, 1, fname)
  if type(fn) ~= "function" then
    raise(fmt("bad argument #2 to '%s' (function expected, got %s)", fname,
              fn == nil and "no value" or type(fn)))
  end
  if every and s < 0.001 then
    raise("bad argument #1 to 'every' (timer.every needs at least 0.001 seconds)")
  end
  local src, line = fn_where(fn)
  local h = setmetatable({
    fn = fn, every = every, interval = every and math.max(s, 0.001) or s, delay = s,
    running_ = true, script = src, line = line, label = fmt("timer %s:%d", src, line),
  }, timer_mt)
  arm(h, S.now + s)
  F.all_timers[h] = true
  if loading then
    h.load_time = true
    F.load_timers[#F.load_timers + 1] = h
  end
  return h
end

local timer = {
  after = function(s, fn) return start_timer(s, fn, false) end,
  every = function(s, fn) return start_timer(s, fn, true) end,
}

-- env
local function env(name, ...)
  if type(name) == "number" then name = tostring(name) end
  if type(name) ~= "string" then
    raise(fmt("bad argument #1 to 'env' (string expected, got %s)",
              name == nil and "no value" or type(name)))
  end
  local o = S.env[name]
  local v
  if o then v = o.value else v = os.getenv(name) end
  if v ~= nil then return v end
  if select("#", ...) >= 1 then return (...) end
  raise(fmt("env: %s is not set (and no default was given)", name)) -- the caller's line, as in C
end

-- http
local function escape(s)
  return (s:gsub("[^%w%-%._~]", function(c) return fmt("%%%02X", c:byte()) end))
end

local function type_name(v)
  if v == nil then return "nil" end
  return type(v)
end

local function opt(opts, name, want)
  local v = opts[name]
  if v ~= nil and type(v) ~= want then
    raise(fmt("http: option '%s' must be a %s, not %s", name, want, type_name(v)))
  end
  return v
end

local function opt_seconds(opts, name, default)
  local v = opt(opts, name, "number")
  if v == nil then return default end
  if not (v > 0) or v == math.huge then
    raise(fmt("http: option '%s' must be a positive number of seconds", name))
  end
  return v
end

local function url_matches(url, pattern)
  if pattern == nil then return true end
  local ok, found = pcall(string.find, url, pattern)
  if ok and found then return true end
  return url:find(pattern, 1, true) ~= nil
end

local function decode_json_text(s)
  if type(s) ~= "string" then return nil end
  local ok, v = pcall(json.decode, s)
  if ok then return v end
  return nil
end

local res_methods = {}
local res_mt = { __index = res_methods }

function res_methods.json(res)
  if type(res) ~= "table" then
    raise("bad argument #1 to 'json' (table expected, got " .. type_name(res) .. ")")
  end
  if type(res.body) ~= "string" then raise("res:json(): the response has no body") end
  local ok, v, err = pcall(json.decode, res.body)
  if not ok then return nil, errmsg(v) end
  return v, err
end

local check_response -- defined with mock.http

local function http_request(opts)
  if type(opts) ~= "table" then
    raise(fmt("bad argument #1 to 'request' (table expected, got %s)",
              opts == nil and "no value" or type(opts)))
  end
  local t = current_task("http")
  local url = opts.url
  if type(url) ~= "string" then
    raise(fmt("http: option 'url' must be a string, not %s", type_name(url)))
  end
  if url:sub(1, 7) ~= "http://" and url:sub(1, 8) ~= "https://" then
    raise(fmt("http: url must start with http:// or https:// (got '%s')", url))
  end
  local body = opt(opts, "body", "string")
  local has_json = opts.json ~= nil
  if body ~= nil and has_json then raise("http: give 'body' or 'json', not both") end
  if has_json then body = json.encode(opts.json) end
  local method = body ~= nil and "POST" or "GET"
  if opt(opts, "method", "string") then method = opts.method end
  if not method:match("^[A-Z%-]*$") then
    raise(fmt("http: method '%s' must be upper-case letters", method))
  end
  local timeout = opt_seconds(opts, "timeout", 30)
  opt_seconds(opts, "connect_timeout", 10)
  local max_size = opt(opts, "max_size", "number")
  if max_size ~= nil and (math.tointeger(max_size) or 0) <= 0 then
    raise("http: option 'max_size' must be a positive integer")
  end
  opt(opts, "insecure", "boolean")
  opt(opts, "follow", "boolean")
  opt(opts, "ca_file", "string")
  local headers, has_ctype = {}, false
  local hs = opt(opts, "headers", "table")
  if hs then
    for k, v in next, hs do
      if type(k) ~= "string" then raise("http: header names must be strings") end
      if type(v) ~= "string" and type(v) ~= "number" then
        raise(fmt("http: header '%s' must be a string or a number", k))
      end
      v = tostring(v)
      if k == "" or k:find("[:\r\n ]") or v:find("[\r\n]") then
        raise(fmt("http: header '%s' holds a forbidden character", k))
      end
      local lk = k:lower()
      if lk == "content-type" then has_ctype = true end
      headers[lk] = headers[lk] and (headers[lk] .. ", " .. v) or v
    end
  end
  if has_json and not has_ctype then headers["content-type"] = "application/json" end
  local full = url
  local q = opt(opts, "query", "table")
  if q then
    local keys = {}
    for k in next, q do
      if type(k) ~= "string" then raise("http: query keys must be strings") end
      keys[#keys + 1] = k
    end
    if #keys > 256 then raise("http: too many query parameters") end
    table.sort(keys)
    for i, k in ipairs(keys) do
      local v = q[k]
      if type(v) ~= "string" and type(v) ~= "number" and type(v) ~= "boolean" then
        raise(fmt("http: query value '%s' must be a string, number or boolean", k))
      end
      full = full .. ((i == 1 and not url:find("?", 1, true)) and "?" or "&") ..
             escape(k) .. "=" .. escape(tostring(v))
    end
  end
  local ulen = (url:find("[?#]") or (#url + 1)) - 1
  local what = fmt("%s %s%s", method, url:sub(1, math.min(ulen, 240)), ulen > 240 and "..." or "")

  local call = { method = method, url = full, headers = headers, body = body,
                 json = decode_json_text(body) }
  S.calls[#S.calls + 1] = call
  local mock
  for i = #S.mocks, 1, -1 do
    local m = S.mocks[i]
    if (m.method == "*" or m.method == method) and url_matches(full, m.pattern) then
      mock = m
      break
    end
  end
  if not mock then
    wait_until(t, S.now) -- a real request always waits: let the others run first
    return nil, what .. ": no mock matches this request (luahook test)"
  end
  mock.matched[#mock.matched + 1] = call
  local r = mock.response
  if type(r) == "function" then
    r = check_response(r(call), "the function's response")
  end
  local delay = r.delay or 0
  -- The server's message adds curl's own words: "GET url: timed out after 2.5 s (Operation
  -- timed out after 2500 milliseconds ...)"; tests should match() error texts, not eq().
  if delay > timeout then
    wait_until(t, S.now + timeout)
    return nil, fmt("%s: timed out after %s s", what, fmt("%g", timeout))
  end
  wait_until(t, S.now + delay)
  if r.error then return nil, what .. ": " .. r.error end
  local rh = {}
  if r.headers then
    for k, v in next, r.headers do rh[k:lower()] = tostring(v) end
  end
  local rbody = r.body
  if r.json ~= nil then
    rbody = json.encode(r.json)
    if rh["content-type"] == nil then rh["content-type"] = "application/json" end
  end
  if method == "HEAD" then rbody = "" end
  return setmetatable({ status = r.status or 200, headers = rh, body = rbody or "" }, res_mt)
end

local function with_method(method)
  local name = method:lower()
  return function(url, opts)
    if type(url) == "number" then url = tostring(url) end
    if type(url) ~= "string" then
      raise(fmt("bad argument #1 to '%s' (string expected, got %s)", name,
                url == nil and "no value" or type(url)))
    end
    if opts ~= nil and type(opts) ~= "table" then
      raise(fmt("bad argument #2 to '%s' (table expected, got %s)", name, type(opts)))
    end
    local req = {}
    for k, v in next, opts or {} do req[k] = v end
    req.url = url
    req.method = method
    return http_request(req)
  end
end

local http = {
  request = http_request,
  get = with_method("GET"),
  post = with_method("POST"),
  put = with_method("PUT"),
  patch = with_method("PATCH"),
  delete = with_method("DELETE"),
}

-- os for handler scripts: the real one, but os.time() and os.date(fmt) without a time
-- read the virtual clock (the test file's own os stays real).
local real_time, real_date = os.time, os.date
local handler_os = {}
for k, v in next, os do handler_os[k] = v end
function handler_os.time(t)
  if t == nil then return math.floor(S.now) end
  return real_time(t)
end
function handler_os.date(f, t)
  if t == nil then return real_date(f, math.floor(S.now)) end
  return real_date(f, t)
end

-- The globals every handler script sees through its own environment.
local shared = setmetatable({
  on = on, log = log, json = json, http = http, sleep = sleep, timer = timer, env = env,
  os = handler_os,
}, { __index = _G })
shared._G = shared

-- As under the server, the modules are require()-able under their names too.
package.loaded.http = http
package.loaded.log = log
package.loaded.timer = timer
package.loaded.json = json

-- ----------------------------------------------------------------------------------------
-- Assertions
-- ----------------------------------------------------------------------------------------

local failure_mt = {
  __tostring = function(f) return (f.where and (f.where .. ": ") or "") .. f.msg end,
}

-- "file:line" of the innermost frame in the test file, above `level`.
local function test_where(level)
  local src = "@" .. (F.path or "")
  for l = level + 1, 60 do
    local info = debug.getinfo(l, "Sl")
    if not info then break end
    if info.source == src and info.currentline > 0 then
      return F.path .. ":" .. info.currentline
    end
  end
  local info = debug.getinfo(level + 1, "Sl")
  if info and info.currentline > 0 then return info.short_src .. ":" .. info.currentline end
  return nil
end

local function fail(msg, user_msg, details, level)
  if user_msg ~= nil then msg = tostring(user_msg) .. ": " .. msg end
  error(setmetatable({ msg = msg, details = details or {}, where = test_where(level or 3) },
                     failure_mt), 0)
end

-- The path to the first difference of a and b, or nil when they are deeply equal.
local function diff(a, b, path, seen)
  local ta, tb = type(a), type(b)
  -- 1 and 1.0 are rawequal in Lua: compare numbers with their subtype first
  if rawequal(a, b) and ta ~= "number" then return nil end
  if ta ~= tb then return path, a, b end
  if ta == "number" then
    if math.type(a) ~= math.type(b) or a ~= b then
      if a ~= a and b ~= b and math.type(a) == math.type(b) then return nil end -- NaN == NaN
      return path, a, b
    end
    return nil
  end
  if ta ~= "table" then return path, a, b end
  seen[a] = seen[a] or {}
  if seen[a][b] then return nil end
  seen[a][b] = true
  local keys, have = {}, {}
  for k in next, b do keys[#keys + 1] = k; have[k] = true end
  for k in next, a do if not have[k] then keys[#keys + 1] = k end end
  table.sort(keys, key_order)
  for _, k in ipairs(keys) do
    local p, x, y = diff(rawget(a, k), rawget(b, k), path .. path_elem(k), seen)
    if p then return p, x, y end
  end
  return nil
end

local function deep_equal(a, b)
  return diff(a, b, "", {}) == nil
end

local function eq(actual, expected, msg)
  local p, a, e = diff(actual, expected, "", {})
  if p then
    fail(p == "" and "values differ" or ("values differ at " .. p), msg,
         { "expected: " .. show(e), "actual:   " .. show(a) })
  end
end

local function neq(a, b, msg)
  if deep_equal(a, b) then fail("values are equal", msg, { "both:     " .. show(a) }) end
end

local function ok_(v, msg)
  if not v then fail("expected a truthy value", msg, { "actual:   " .. show(v) }) end
  return v
end

local function nok(v, msg)
  if v then fail("expected a falsy value", msg, { "actual:   " .. show(v) }) end
end

local function match(s, pattern, msg)
  if type(pattern) ~= "string" then
    error("match: the pattern must be a string, not " .. type_name(pattern), 2)
  end
  if type(s) ~= "string" then
    fail("expected a string to match the pattern", msg,
         { "pattern:  " .. show(pattern), "actual:   " .. show(s) })
  end
  if not s:find(pattern) then
    fail("the string does not match the pattern", msg,
         { "pattern:  " .. show(pattern), "actual:   " .. show(s) })
  end
  return s
end

local function fails(fn, pattern)
  if type(fn) ~= "function" then
    error("fails: the first argument must be a function, not " .. type_name(fn), 2)
  end
  local okr, e = pcall(fn)
  if okr then fail("the function did not raise") end
  local m = errmsg(e)
  if pattern ~= nil and not m:find(pattern) and not m:find(pattern, 1, true) then
    fail("the error does not match the pattern", nil,
         { "pattern:  " .. show(pattern), "actual:   " .. show(m) })
  end
  return m
end

local function near(a, b, eps, msg)
  eps = eps or 1e-9
  if type(a) ~= "number" or type(b) ~= "number" or not (math.abs(a - b) <= eps) then
    fail("values are not within " .. render_number(eps + 0.0) .. " of each other", msg,
         { "expected: " .. show(b), "actual:   " .. show(a) })
  end
end

-- ----------------------------------------------------------------------------------------
-- handlers(), fire(), sample()
-- ----------------------------------------------------------------------------------------

local function join(dir, p)
  if p:sub(1, 1) == "/" or dir == nil or dir == "" or dir == "." then return p end
  return dir .. "/" .. p
end

local function is_dir(p)
  local f = io.open(p, "r")
  if not f then return false end
  local _, _, code = f:read(1)
  f:close()
  return code == 21 -- EISDIR
end

local function list_lua(dir)
  local names = {}
  local err
  names, err = __luahook.listdir(dir)
  if not names then error(err, 0) end
  local out = {}
  for _, n in ipairs(names) do
    -- like the server: a folder's test files are not handlers
    if #n >= 5 and n:sub(-4) == ".lua" and n:sub(1, 1) ~= "." and n:sub(-9) ~= "_test.lua" then
      out[#out + 1] = n
    end
  end
  table.sort(out)
  local d = dir:gsub("/+$", "")
  if d == "" then d = "/" end
  local paths = {}
  for _, n in ipairs(out) do
    local p = (d == "/" and "/" or d .. "/") .. n
    if not is_dir(p) then paths[#paths + 1] = p end
  end
  return paths
end

local function load_script(path)
  local f, oerr = io.open(path, "r")
  if not f then
    error(fmt("%s: cannot open: %s", path, (oerr or ""):gsub("^.-: ", "")), 0)
  end
  f:close()
  local senv = setmetatable({}, { __index = shared })
  local chunk, err = loadfile(path, "t", senv)
  if not chunk then error(err, 0) end
  loading = true
  local okr, e = pcall(chunk)
  loading = false
  if not okr then error(errmsg(e), 0) end
end

local running_test = false

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
    local full = join(F.dir, p)
    if is_dir(full) then
      for _, sp in ipairs(list_lua(full)) do load_script(sp) end
    else
      load_script(full)
    end
  end
end

-- sample.REMOVE: an override that deletes the key.
local REMOVE = setmetatable({}, { __tostring = function() return "sample.REMOVE" end,
                                  __name = "sample.REMOVE" })

-- A copy of an override value, without the REMOVE keys.
local function override_copy(v)
  if type(v) ~= "table" or is_null(v) or getmetatable(v) ~= nil then return v end
  local c = {}
  for k, x in next, v do
    if not rawequal(x, REMOVE) then c[k] = override_copy(x) end
  end
  return c
end

-- Objects merge deeply; a sequence (an empty table too) replaces the value it overrides,
-- so { tasks = { { id = 5 } } } gives exactly one task; REMOVE deletes the key.
local function deep_merge(base, over)
  for k, v in next, over do
    if rawequal(v, REMOVE) then
      base[k] = nil
    elseif type(v) == "table" and not is_null(v) and getmetatable(v) == nil
           and seq_len(v) == nil and type(base[k]) == "table" and not is_null(base[k]) then
      deep_merge(base[k], v)
    else
      base[k] = override_copy(v)
    end
  end
  return base
end

local function sample_of(action, overrides)
  if type(action) ~= "string" then
    error("sample: the action must be a string, not " .. type_name(action), 2)
  end
  local samples = type(__luahook) == "table" and __luahook.samples or {}
  local text = samples[action]
  if type(text) ~= "string" then
    local known = {}
    for k in next, samples do known[#known + 1] = tostring(k) end
    table.sort(known)
    error(fmt("sample: no sample for action '%s' (known: %s)", action,
              #known > 0 and table.concat(known, ", ") or "none"), 2)
  end
  local v, err = json.decode(text)
  if v == nil then error("sample: the built-in sample of " .. action .. " is broken: " ..
                         tostring(err), 2) end
  if overrides ~= nil then
    if type(overrides) ~= "table" then
      error("sample: the overrides must be a table, not " .. type(overrides), 2)
    end
    deep_merge(v, overrides)
  end
  return v
end

local sample = setmetatable({ REMOVE = REMOVE }, {
  __call = function(_, action, overrides) return sample_of(action, overrides) end,
})

local delivery = 0

local function read_file(p)
  local f, err = io.open(p, "rb")
  if not f then error("fire: cannot open " .. p .. ": " .. (err or ""):gsub("^.-: ", ""), 3) end
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
  fail(first, nil, lines, 4)
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
  if in_task > 0 then
    error(what .. ": not while a handler or a timer runs (call it from the test itself)", 3)
  end
end

local function fire(event, opts)
  not_in_task("fire")
  local body
  if type(event) == "table" then
    local okr, s = pcall(json.encode, event)
    if not okr then error("fire: the event cannot be encoded as JSON: " .. errmsg(s), 2) end
    body = s
  elseif type(event) == "string" then
    if event:sub(-5) == ".json" then body = read_file(join(F.dir, event)) else body = event end
  else
    error("fire: the event must be a table, a JSON string or a .json file, not " ..
          type_name(event), 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("fire: the options must be a table, not " .. type(opts), 2)
  end
  opts = opts or {}
  local okd, ev, derr = pcall(json.decode, body)
  if not okd then ev, derr = nil, errmsg(ev) end
  if ev == nil then error("fire: " .. tostring(derr), 2) end
  local first = body:match("^[ \t\r\n]*(.)")
  if type(ev) ~= "table" or first ~= "{" then
    local what = type(ev) == "table" and "an array" or
                 (is_null(ev) and "null value" or (type(ev) .. " value"))
    error(fmt('fire: the body is not a JSON object (it is %s): an event is an object with ' ..
              'a string "action"', what), 2)
  end
  local action = ev.action
  if type(action) ~= "string" then
    if action == nil then
      error('fire: the event has no "action": an event is an object with a string "action"', 2)
    end
    error(fmt('fire: "action" must be a string, not %s',
              is_null(action) and "null" or type(action)), 2)
  end
  local headers = { ["content-type"] = "application/json", ["content-length"] = tostring(#body),
                    host = "127.0.0.1:9090" }
  if opts.headers ~= nil then
    if type(opts.headers) ~= "table" then error("fire: opts.headers must be a table", 2) end
    for k, v in next, opts.headers do headers[tostring(k):lower()] = tostring(v) end
  end
  delivery = delivery + 1
  local id = fmt("%08x%012x", 0x7e577e57, delivery)
  local ctx = {
    id = id, action = action, path = opts.path or "/", headers = headers,
    remote = opts.remote or "127.0.0.1:40000", received_at = S.now, body = body,
  }
  local list = {}
  for _, h in ipairs(F.routes[action] or {}) do list[#list + 1] = h end
  if action ~= "*" then
    for _, h in ipairs(F.routes["*"] or {}) do list[#list + 1] = h end
  end
  local allow_failure = opts.allow_failure == true
  local timer_failures_from = #S.timer_failures + 1
  local results = { ok = true, handlers = #list, id = id }
  local pending = #list
  local tasks = {}
  for i, h in ipairs(list) do
    results[i] = { handler = h.label, ok = false }
    tasks[i] = spawn(h.label, h.fn, { ev, ctx, n = 2 }, function(t)
      pending = pending - 1
      results[i].ok = t.ok
      results[i].error = t.err
      if not t.ok then results.ok = false end
    end)
  end
  while pending > 0 do
    local e = next_entry()
    if not e then error("fire: internal error: handlers wait on nothing", 2) end
    run_entry(e)
  end
  if not allow_failure then
    local failed = {}
    for _, r in ipairs(results) do
      if not r.ok then
        failed[#failed + 1] = { kind = "handler", label = r.handler, error = r.error }
      end
    end
    for _, f in ipairs(new_timer_failures(timer_failures_from)) do failed[#failed + 1] = f end
    if #failed > 0 then fail_runs(failed, "fire") end
  end
  return results
end

-- ----------------------------------------------------------------------------------------
-- mock, clock, logs
-- ----------------------------------------------------------------------------------------

function check_response(r, what)
  if type(r) ~= "table" then
    error(fmt("mock.http: %s must be a table, not %s", what, type_name(r)), 0)
  end
  local function bad(m) error(fmt("mock.http: %s: %s", what, m), 0) end
  if r.status ~= nil and (math.type(r.status) ~= "integer" or r.status < 100 or r.status > 999) then
    bad("status must be an integer from 100 to 999")
  end
  if r.headers ~= nil then
    if type(r.headers) ~= "table" then bad("headers must be a table") end
    for k, v in next, r.headers do
      if type(k) ~= "string" then bad("header names must be strings") end
      if type(v) ~= "string" and type(v) ~= "number" then
        bad("header '" .. k .. "' must be a string or a number")
      end
    end
  end
  if r.body ~= nil and type(r.body) ~= "string" then bad("body must be a string") end
  if r.body ~= nil and r.json ~= nil then bad("give 'body' or 'json', not both") end
  if r.delay ~= nil and (type(r.delay) ~= "number" or not (r.delay >= 0)) then
    bad("delay must be a number of seconds >= 0")
  end
  if r.error ~= nil and type(r.error) ~= "string" then bad("error must be a string") end
  return r
end

local mock_methods = {}
mock_methods.__index = mock_methods
function mock_methods.calls(m)
  local out = {}
  for i, c in ipairs(m.matched) do out[i] = c end
  return out
end

local mock = {}

function mock.http(method, pattern, response)
  if type(method) ~= "string" or not (method == "*" or method:match("^[A-Z%-]+$")) then
    error("mock.http: the method must be an upper-case method name or \"*\", not " ..
          (type(method) == "string" and ("'" .. method .. "'") or type_name(method)), 2)
  end
  if type(pattern) ~= "string" then
    error("mock.http: the url pattern must be a string, not " .. type_name(pattern), 2)
  end
  if type(response) ~= "function" then
    local okr, e = pcall(check_response, response, "the response")
    if not okr then error(e, 2) end
  end
  local m = setmetatable({ method = method, pattern = pattern, response = response,
                           matched = {} }, mock_methods)
  S.mocks[#S.mocks + 1] = m
  return m
end

function mock.calls(pattern)
  local out = {}
  for _, c in ipairs(S.calls) do
    if url_matches(c.url, pattern) then out[#out + 1] = c end
  end
  return out
end

function mock.env(name, value)
  if type(name) ~= "string" then
    error("mock.env: the name must be a string, not " .. type_name(name), 2)
  end
  if value ~= nil and type(value) ~= "string" then value = tostring(value) end
  S.env[name] = { value = value }
end

local clock = {}

function clock.now()
  return S.now
end

function clock.advance(s, opts)
  not_in_task("clock.advance")
  if type(s) ~= "number" or not (s >= 0) or s == math.huge then
    error("clock.advance: seconds must be a number >= 0", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("clock.advance: the options must be a table, not " .. type(opts), 2)
  end
  local allow_failure = opts ~= nil and opts.allow_failure == true
  local from = #S.timer_failures + 1
  local target = S.now + s
  while true do
    local e = next_entry(target)
    if not e then break end
    run_entry(e)
  end
  S.now = target
  if not allow_failure then
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

local function reset()
  S = new_state()
  for _, h in ipairs(F.load_timers) do
    if h.load_time then
      h.running_ = true
      h.task = nil
      arm(h, S.now + h.delay)
    end
  end
  -- timers not started at load time belong to the test that made them
  for h in pairs(F.all_timers) do if not h.load_time then h.running_ = false end end
end

-- A plain error: the message and the test file's frames of the stack.
local function capture(e)
  if getmetatable(e) == failure_mt then return e end
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

local function render_log(r)
  local s = "      " .. r.level .. " " .. r.msg
  if type(r.fields) == "table" then
    for _, k in ipairs(sorted_keys(r.fields)) do
      local v = r.fields[k]
      local vs = type(v) == "string" and (v:find("^[%w%._:/%-]+$") and v or quote(v)) or show(v)
      s = s .. " " .. tostring(k) .. "=" .. vs
    end
  end
  return s
end

local function report(name, err, with_logs)
  out("FAIL ", F.path, ": ", name, "\n")
  if getmetatable(err) == failure_mt then
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
    for _, r in ipairs(S.logs) do out(render_log(r), "\n") end
  end
end

local function dirname(p)
  local d = p:match("^(.*)/[^/]*$")
  if d == nil then return "." end
  if d == "" then return "/" end
  return d
end

function M.run(path)
  F = { path = path, dir = dirname(path), tests = {}, routes = {}, load_timers = {},
        all_timers = setmetatable({}, { __mode = "k" }) }
  S = new_state()
  running_test = false
  local api = {
    handlers = handlers, test = test, fire = fire, sample = sample,
    eq = eq, neq = neq, ok = ok_, nok = nok, match = match, fails = fails, near = near,
    mock = mock, clock = clock, logs = logs,
  }
  local tenv = setmetatable(api, { __index = _G })
  local passed, failed = 0, 0

  local chunk, lerr = loadfile(path, "t", tenv)
  local okr, e
  if chunk then
    okr, e = xpcall(chunk, capture)
  else
    okr, e = false, { msg = errmsg(lerr), frames = {} }
  end
  if not okr then
    report("(load)", e, true)
    io.stdout:flush()
    return 0, 1
  end

  if #F.tests == 0 then
    -- a mistyped file (tests(...), a test commented out) must not pass silently
    out("FAIL ", path, ": (no tests)\n")
    io.stdout:flush()
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
  return passed, failed
end

return M
