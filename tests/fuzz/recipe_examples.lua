-- Prints, per bundled recipe, a config of its examples (else defaults) as one JSON line:
-- `lua5.4 tests/fuzz/recipe_examples.lua $(ls recipes) > tests/fuzz/recipe_examples.tsv`
-- (run from the top folder), the seeds make_seeds.py writes for fuzz_recipes.
local function enc(v)
  local t = type(v)
  if t == "string" then return string.format("%q", v):gsub("\\\n", "\\n") end
  if t == "number" or t == "boolean" then return tostring(v) end
  if t == "table" then
    if #v > 0 or next(v) == nil then
      local p = {} for i = 1, #v do p[i] = enc(v[i]) end return "[" .. table.concat(p, ",") .. "]"
    end
    local ks = {} for k in pairs(v) do ks[#ks + 1] = tostring(k) end
    table.sort(ks) -- the same text every run
    local p = {} for _, k in ipairs(ks) do p[#p + 1] = enc(k) .. ":" .. enc(v[k]) end
    return "{" .. table.concat(p, ",") .. "}"
  end
  return "null"
end
local stub = setmetatable({}, { __index = function() return function() end end })
for _, name in ipairs(arg) do
  local env = setmetatable({ require = function() return stub end, store = stub, json = stub, log = stub, http = stub, timer = stub, env = stub }, { __index = _G })
  local r = assert(loadfile("recipes/" .. name .. "/recipe.lua", "t", env))()
  local function fill(fields)
    local out = {}
    for k, s in pairs(fields) do
      if s.example ~= nil then out[k] = s.example
      elseif s.default ~= nil then out[k] = s.default
      elseif s.type == "record" and s.fields then out[k] = fill(s.fields) end
    end
    return out
  end
  print(name .. "\t" .. enc(fill(r.config or {})))
end
