--[[
luahook/testing/samples.lua - sample(action [, overrides]): a realistic body of a Label
Studio action (lua/samples/, compiled in), with overrides merged in deeply.
]]

local render = require("luahook.testing.render")

local fmt = string.format

local M = { samples = {} } -- action -> JSON text (runner sets it from the host)

-- sample.REMOVE: an override that deletes the key.
local REMOVE = setmetatable({}, { __tostring = function() return "sample.REMOVE" end,
                                  __name = "sample.REMOVE" })

-- A copy of an override value, without the REMOVE keys.
local function override_copy(v)
  if type(v) ~= "table" or render.is_null(v) or getmetatable(v) ~= nil then return v end
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
    elseif type(v) == "table" and not render.is_null(v) and getmetatable(v) == nil
           and render.seq_len(v) == nil and type(base[k]) == "table" and not render.is_null(base[k]) then
      deep_merge(base[k], v)
    else
      base[k] = override_copy(v)
    end
  end
  return base
end

local function sample_of(action, overrides)
  if type(action) ~= "string" then
    error("sample: the action must be a string, not " .. render.type_name(action), 2)
  end
  local samples = M.samples
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

M.sample = setmetatable({ REMOVE = REMOVE }, {
  __call = function(_, action, overrides) return sample_of(action, overrides) end,
})

return M
