--[[
luahook/testing/mocks.lua - what a test controls of the handlers' world: the answers to
their HTTP requests (mock.http), the record of those requests (mock.calls) and the
environment env() reads (mock.env). The requests themselves are the real http module's:
luahook hands each one to this file's answer() instead of libcurl, and turns the answer
into `res` or `nil, err, kind` exactly as it does a real one.
]]

local render = require("luahook.testing.render")

local fmt = string.format
local type_name = render.type_name

local M = {}

local host -- set by M.init
local S    -- this test's mocks, calls and env overrides

local KINDS = { resolve = true, connect = true, timeout = true, tls = true, too_large = true,
                other = true }

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

local function check_response(r, what)
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
  if r.kind ~= nil and not KINDS[r.kind] then
    bad("kind must be resolve, connect, timeout, tls, too_large or other")
  end
  return r
end

-- The answer to one request made by a handler (called by luahook, outside the handler, at
-- the moment of the request): { status, headers, body, delay } or { error, kind, delay }.
local function answer(call)
  call.json = decode_json_text(call.body)
  S.calls[#S.calls + 1] = call
  local mock
  for i = #S.mocks, 1, -1 do
    local m = S.mocks[i]
    if (m.method == "*" or m.method == call.method) and url_matches(call.url, m.pattern) then
      mock = m
      break
    end
  end
  if not mock then
    return { no_mock = true } -- "METHOD url: no mock matches this request (luahook test)"
  end
  mock.matched[#mock.matched + 1] = call
  local r = mock.response
  if type(r) == "function" then
    r = check_response(r(call), "the function's response")
  end
  if r.error then return { error = r.error, kind = r.kind or "connect", delay = r.delay } end
  local headers = {}
  if r.headers then
    for k, v in next, r.headers do headers[k:lower()] = tostring(v) end
  end
  local body = r.body
  if r.json ~= nil then
    body = json.encode(r.json)
    if headers["content-type"] == nil then headers["content-type"] = "application/json" end
  end
  return { status = r.status or 200, headers = headers, body = body or "", delay = r.delay }
end

function M.init(h)
  host = h
  host.on_http(answer)
end

-- A new test: no mocks, no calls; the environment as it was.
function M.reset()
  if S then
    for name, original in pairs(S.env_saved) do host.setenv(name, original or nil) end
  end
  S = { mocks = {}, calls = {}, env_saved = {} }
end

local mock_methods = {}
mock_methods.__index = mock_methods
function mock_methods.calls(m)
  local out = {}
  for i, c in ipairs(m.matched) do out[i] = c end
  return out
end

local mock = {}
M.api = mock

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

-- The real environment, changed for this test only.
function mock.env(name, value)
  if type(name) ~= "string" then
    error("mock.env: the name must be a string, not " .. type_name(name), 2)
  end
  if value ~= nil and type(value) ~= "string" then value = tostring(value) end
  if S.env_saved[name] == nil then S.env_saved[name] = os.getenv(name) or false end
  host.setenv(name, value)
end

return M
