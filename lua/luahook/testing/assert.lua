--[[
luahook/testing/assert.lua - eq, neq, ok, nok, match, fails, near, and the failure they
raise: a table that says where in the test file (M.file) it happened, what and how.
]]

local render = require("luahook.testing.render")

local fmt = string.format
local show, type_name = render.show, render.type_name

local M = { file = nil } -- the test file running (runner sets it)

M.failure_mt = {
  __tostring = function(f) return (f.where and (f.where .. ": ") or "") .. f.msg end,
}

-- "file:line" of the innermost frame in the test file, above `level`.
function M.where(level)
  local path = M.file or ""
  local src = "@" .. path
  for l = level + 1, 60 do
    local info = debug.getinfo(l, "Sl")
    if not info then break end
    if info.source == src and info.currentline > 0 then
      return path .. ":" .. info.currentline
    end
  end
  local info = debug.getinfo(level + 1, "Sl")
  if info and info.currentline > 0 then return info.short_src .. ":" .. info.currentline end
  return nil
end

-- Fails the test: `msg` (after `user_msg: `), detail lines, at the test file's line.
function M.fail(msg, user_msg, details, level)
  if user_msg ~= nil then msg = tostring(user_msg) .. ": " .. msg end
  error(setmetatable({ msg = msg, details = details or {}, where = M.where(level or 3) },
                     M.failure_mt), 0)
end
local fail = M.fail

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
  table.sort(keys, render.key_order)
  for _, k in ipairs(keys) do
    local p, x, y = diff(rawget(a, k), rawget(b, k), path .. render.path_elem(k), seen)
    if p then return p, x, y end
  end
  return nil
end

local function deep_equal(a, b)
  return diff(a, b, "", {}) == nil
end

function M.eq(actual, expected, msg)
  local p, a, e = diff(actual, expected, "", {})
  if p then
    fail(p == "" and "values differ" or ("values differ at " .. p), msg,
         { "expected: " .. show(e), "actual:   " .. show(a) })
  end
end

function M.neq(a, b, msg)
  if deep_equal(a, b) then fail("values are equal", msg, { "both:     " .. show(a) }) end
end

function M.ok(v, msg)
  if not v then fail("expected a truthy value", msg, { "actual:   " .. show(v) }) end
  return v
end

function M.nok(v, msg)
  if v then fail("expected a falsy value", msg, { "actual:   " .. show(v) }) end
end

function M.match(s, pattern, msg)
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

function M.fails(fn, pattern)
  if type(fn) ~= "function" then
    error("fails: the first argument must be a function, not " .. type_name(fn), 2)
  end
  local okr, e = pcall(fn)
  if okr then fail("the function did not raise") end
  local m = render.errmsg(e)
  if pattern ~= nil and not m:find(pattern) and not m:find(pattern, 1, true) then
    fail("the error does not match the pattern", nil,
         { "pattern:  " .. show(pattern), "actual:   " .. show(m) })
  end
  return m
end

function M.near(a, b, eps, msg)
  eps = eps or 1e-9
  if type(a) ~= "number" or type(b) ~= "number" or not (math.abs(a - b) <= eps) then
    fail("values are not within " .. render.number(eps + 0.0) .. " of each other", msg,
         { "expected: " .. show(b), "actual:   " .. show(a) })
  end
end

return M
