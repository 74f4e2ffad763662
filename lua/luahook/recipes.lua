--[[
luahook/recipes.lua - recipes: find one, check its manifest and schema, validate a use()'s
config against it, and run its setup() as a named instance.

src/recipes.c runs this chunk once per VM with its host table and keeps what it returns:

  host.dirs             the --recipes folders (else LUAHOOK_RECIPES's), in search order
  host.begin(instance, path, site_file, site_line [, secrets]) -> previous | nil, why
                        opens the instance as a script of the VM: on() ids "<instance>#N",
                        and what it registers is told as at the use() site
  host.finish(previous) closes it again
  host.suspend() -> previous  no script loads (a recipe.lua's top level); finish(previous)
  host.store(ns)        the `store` table of namespace ns
  host.package(env, dir, key, templates, globals, bundled)  the recipe root's require
  host.embedded(path)   a file compiled into the binary, or nil
  host.bundled()        the names of the bundled recipes, sorted
  host.listdir(dir)     the names in a folder, sorted, or nil
  host.distance(a, b)   edit distance (the one did-you-mean of luahook: src/actions.c)
  host.log(level, msg, fields)

An instance is one use(): a name (its `as`, or the recipe's name), a validated config, and
its recipe's chunk run afresh, in an environment of its own whose `store` is namespaced by
the instance name. Its modules load per instance too (a recipe's module state belongs to
the instance, as its handlers do).
]]

local host = ...

local fmt = string.format
local M = {}

local TYPES = { "string", "number", "integer", "boolean", "list", "map", "record" }
local SPEC_KEYS = { "type", "of", "fields", "required", "default", "min", "max", "one_of",
                    "match", "secret", "description", "example" }
local MANIFEST_KEYS = { "name", "version", "description", "config", "setup" }

local function set_of(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end
local TYPE_SET, SPEC_SET, MANIFEST_SET = set_of(TYPES), set_of(SPEC_KEYS), set_of(MANIFEST_KEYS)

-- The closest of `cands` to `word` when close enough to be a typo.
local function closest(word, cands)
  local best, bestd
  for _, c in ipairs(cands) do
    local d = host.distance(word, c)
    if not bestd or d < bestd then best, bestd = c, d end
  end
  if best and bestd <= #word // 3 + 1 then return best end
end
M.closest = closest

local function sorted_keys(t)
  local ks = {}
  for k in pairs(t) do ks[#ks + 1] = k end
  table.sort(ks, function(a, b) return tostring(a) < tostring(b) end)
  return ks
end

-- ------------------------------------------------------------------------------ showing

-- A value as the user wrote it, short; a secret is never shown.
local function show(v, secret)
  if secret then return "***" end
  local t = type(v)
  if t == "string" then
    if #v > 60 then v = v:sub(1, 57) .. "..." end
    return fmt("%q", v):gsub("\\\n", "\\n")
  elseif t == "table" then
    return next(v) == nil and "an empty table" or "a table"
  elseif t == "nil" then
    return "nothing"
  elseif math.type(v) == "float" and v == math.floor(v) and v > -1e15 and v < 1e15 then
    return fmt("%.1f", v)
  end
  return tostring(v)
end

-- A config value as Lua source, for `recipes NAME` (defaults, examples): secrets masked.
local function literal(v, secret)
  if secret then return '"***"' end
  local t = type(v)
  if t == "string" then return fmt("%q", v):gsub("\\\n", "\\n") end
  if t ~= "table" then return tostring(v) end
  local parts, n = {}, #v
  for i = 1, n do parts[#parts + 1] = literal(v[i]) end
  for _, k in ipairs(sorted_keys(v)) do
    if not (math.type(k) == "integer" and k >= 1 and k <= n) then
      local key = type(k) == "string" and k:match("^[%a_][%w_]*$") and k or "[" .. literal(k) .. "]"
      parts[#parts + 1] = key .. " = " .. literal(v[k])
    end
  end
  return "{ " .. table.concat(parts, ", ") .. (#parts > 0 and " }" or "}")
end
M.literal = literal

local function bound_text(s, unit)
  unit = unit or ""
  if s.min ~= nil and s.max ~= nil then return fmt(" from %s to %s%s", s.min, s.max, unit) end
  if s.min ~= nil then return fmt(" >= %s%s", s.min, unit) end
  if s.max ~= nil then return fmt(" <= %s%s", s.max, unit) end
  return ""
end

-- What a spec expects, in words: "an integer >= 1", "a list of strings"; `many`: the
-- plural, for the items of a list or a map ("integers >= 1").
local function expected(s, many)
  local function noun(one, several) return many and several or one end
  local t = s.type
  if s.one_of then
    local opts = {}
    for i, v in ipairs(s.one_of) do opts[i] = literal(v, s.secret) end
    return noun("one of ", "each one of ") .. table.concat(opts, ", ")
  end
  if t == "string" then
    local e = noun("a string", "strings")
    if s.min or s.max then e = e .. " of" .. bound_text(s, " characters") end
    if s.match then e = e .. " matching " .. fmt("%q", s.match) end
    return e
  elseif t == "number" then return noun("a number", "numbers") .. bound_text(s)
  elseif t == "integer" then return noun("an integer", "integers") .. bound_text(s)
  elseif t == "boolean" then return noun("true or false", "booleans")
  elseif t == "list" then
    local e = noun("a list", "lists")
    if s.of then e = e .. " of " .. expected(s.of, true) end
    if s.min or s.max then e = e .. " with" .. bound_text(s, " items") end
    return e
  elseif t == "map" then
    return noun("a map", "maps") .. (s.of and " of " .. expected(s.of, true) or "")
  elseif t == "record" then
    return noun("a table", "tables") .. " with keys " .. table.concat(sorted_keys(s.fields), ", ")
  end
  return noun("a value", "values")
end
M.expected = expected

-- A short type name for the `recipes NAME` table: "list of integer".
local function type_text(s)
  if s.type == "list" or s.type == "map" then
    return s.type .. (s.of and " of " .. type_text(s.of) or "")
  end
  return s.type
end
M.type_text = type_text

-- ------------------------------------------------------------------------ schema check

local check_spec

local function check_fields(fields, path, problems)
  if type(fields) ~= "table" then
    problems[#problems + 1] = fmt("%s: expected a table of keys, got %s", path, show(fields))
    return
  end
  for _, k in ipairs(sorted_keys(fields)) do
    if type(k) ~= "string" or not k:match("^[%a_][%w_]*$") then
      problems[#problems + 1] = fmt("%s: the key %s is not a name (letters, digits, _)",
                                    path, show(k))
    else
      check_spec(fields[k], path .. "." .. k, problems)
    end
  end
end

-- A spec of the schema itself; problems name its path in recipe.lua ("config.url").
function check_spec(s, path, problems)
  local before = #problems
  local function bad(msg, ...) problems[#problems + 1] = path .. ": " .. fmt(msg, ...) end
  if type(s) ~= "table" then return bad("expected a table { type = ... }, got %s", show(s)) end
  for _, k in ipairs(sorted_keys(s)) do
    if not SPEC_SET[k] then
      local near = type(k) == "string" and closest(k, SPEC_KEYS)
      bad("unknown field %s%s", tostring(k), near and ", did you mean " .. near .. "?" or
          " (the fields are: " .. table.concat(SPEC_KEYS, ", ") .. ")")
    end
  end
  if not TYPE_SET[s.type] then
    local near = type(s.type) == "string" and closest(s.type, TYPES)
    return bad("%s type %s%s", s.type == nil and "no" or "unknown",
               s.type == nil and "(one of " .. table.concat(TYPES, ", ") .. ")" or show(s.type),
               near and ", did you mean " .. near .. "?" or "")
  end
  if s.type == "list" or s.type == "map" then
    if s.of == nil then return bad("a %s needs `of`, the spec of its items", s.type) end
    check_spec(s.of, path .. ".of", problems)
  elseif s.of ~= nil then
    bad("`of` is for a list or a map, not a %s", s.type)
  end
  if s.type == "record" then
    if s.fields == nil then return bad("a record needs `fields`") end
    check_fields(s.fields, path .. ".fields", problems)
  elseif s.fields ~= nil then
    bad("`fields` is for a record, not a %s", s.type)
  end
  for _, k in ipairs({ "min", "max" }) do
    if s[k] ~= nil and type(s[k]) ~= "number" then bad("%s must be a number", k) end
  end
  if (s.min or s.max) and (s.type == "boolean" or s.type == "record" or s.type == "map") then
    bad("min and max are for a number, an integer, a string or a list")
  end
  for _, k in ipairs({ "required", "secret" }) do
    if s[k] ~= nil and type(s[k]) ~= "boolean" then bad("%s must be true or false", k) end
  end
  for _, k in ipairs({ "description", "match" }) do
    if s[k] ~= nil and type(s[k]) ~= "string" then bad("%s must be a string", k) end
  end
  if s.match ~= nil and type(s.match) == "string" then
    if s.type ~= "string" then bad("match is for a string") end
    local okp, perr = pcall(string.find, "", s.match)
    if not okp then bad("match is not a Lua pattern: %s", tostring(perr):gsub("^.-:%d+: ", "")) end
  end
  if s.one_of ~= nil and (type(s.one_of) ~= "table" or #s.one_of == 0) then
    bad("one_of must be a non-empty list")
  end
  if s.required and s.default ~= nil then bad("a key with a default is not required") end
  -- a default and an example are values the spec must take (checked once it holds)
  for _, k in ipairs({ "default", "example" }) do
    if s[k] ~= nil and #problems == before then
      local sub = {}
      M.validate_value(s[k], s, "", sub)
      for _, p in ipairs(sub) do bad("the %s does not fit: %s", k, (p:gsub("^: ", ""))) end
    end
  end
end

-- The manifest recipe.lua returned; a list of problems (empty: fine).
function M.check_manifest(r, dirname)
  local problems = {}
  local function bad(msg, ...) problems[#problems + 1] = fmt(msg, ...) end
  if type(r) ~= "table" then
    bad("recipe.lua must return a table { name, version, description, config, setup }, not %s",
        type(r))
    return problems
  end
  for _, k in ipairs(sorted_keys(r)) do
    if not MANIFEST_SET[k] then
      local near = type(k) == "string" and closest(k, MANIFEST_KEYS)
      bad("unknown field %s%s", tostring(k), near and ", did you mean " .. near .. "?" or
          " (the fields are: " .. table.concat(MANIFEST_KEYS, ", ") .. ")")
    end
  end
  if type(r.name) ~= "string" or not r.name:match("^%a[%w_%-]*$") then
    bad("name must be a string: a letter, then letters, digits, '_' or '-'")
  elseif dirname and r.name ~= dirname then
    bad("name is %q but the folder is %s/: they must be the same", r.name, dirname)
  end
  if type(r.version) ~= "string" or
     not (r.version:match("^%d+%.%d+%.%d+$") or r.version:match("^%d+%.%d+%.%d+[-+][%w%.%-+]+$")) then
    bad("version must be a semantic version string (e.g. \"1.2.0\"), got %s", show(r.version))
  end
  if type(r.description) ~= "string" or r.description == "" then
    bad("description must be a non-empty string")
  end
  if type(r.setup) ~= "function" then bad("setup must be a function(cfg)") end
  if r.config == nil then
    r.config = {}
  else
    check_fields(r.config, "config", problems)
  end
  return problems
end

-- --------------------------------------------------------------------------- validation

local function join(path, k)
  if type(k) == "number" then return path .. "[" .. k .. "]" end
  if path == "" then return k end
  return path .. "." .. k
end

local function is_list(v)
  if type(v) ~= "table" then return false end
  local n = #v
  for k in pairs(v) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return true
end

local validate_fields

-- Checks `v` against spec `s`; problems go to `problems` as "path: what"; returns the value
-- to keep (defaults filled in, copied). `secret`: inside a secret list, map or record, whose
-- mark covers what it holds (its items' specs need not repeat it).
function M.validate_value(v, s, path, problems, secret)
  secret = secret or s.secret
  local function bad(what)
    problems[#problems + 1] = fmt("%s: expected %s, got %s", path, expected(s), show(v, secret))
  end
  local t = s.type
  if t == "string" then
    if type(v) ~= "string" then return bad() end
    if (s.min and #v < s.min) or (s.max and #v > s.max) then return bad() end
    if s.match and not v:find(s.match) then return bad() end
  elseif t == "number" then
    if type(v) ~= "number" then return bad() end
    if (s.min and v < s.min) or (s.max and v > s.max) then return bad() end
  elseif t == "integer" then
    if math.type(v) ~= "integer" then
      -- 3.0 from a JSON value or an env var converted is still 3
      if math.type(v) == "float" and v == math.floor(v) and v >= -2^63 and v < 2^63 then
        v = math.tointeger(v)
      else
        return bad()
      end
    end
    if (s.min and v < s.min) or (s.max and v > s.max) then return bad() end
  elseif t == "boolean" then
    if type(v) ~= "boolean" then return bad() end
  elseif t == "list" then
    if not is_list(v) then return bad() end
    if (s.min and #v < s.min) or (s.max and #v > s.max) then return bad() end
    local out = {}
    for i = 1, #v do out[i] = M.validate_value(v[i], s.of, join(path, i), problems, secret) end
    v = out
  elseif t == "map" then
    if type(v) ~= "table" then return bad() end
    local out = {}
    for _, k in ipairs(sorted_keys(v)) do
      if type(k) ~= "string" then
        problems[#problems + 1] = fmt("%s: the keys must be strings, got %s", path, show(k))
      else
        out[k] = M.validate_value(v[k], s.of, join(path, k), problems, secret)
      end
    end
    v = out
  elseif t == "record" then
    if type(v) ~= "table" then return bad() end
    v = validate_fields(v, s.fields, path, problems, secret)
  end
  if s.one_of then
    local found = false
    for _, o in ipairs(s.one_of) do if o == v then found = true end end
    if not found then return bad() end
  end
  return v
end

local function copy(v)
  if type(v) ~= "table" then return v end
  local out = {}
  for k, x in pairs(v) do out[k] = copy(x) end
  return out
end

-- The keys of table `cfg` against `fields`: unknown keys, required ones, defaults.
function validate_fields(cfg, fields, path, problems, secret)
  local out = {}
  local names = sorted_keys(fields)
  for _, k in ipairs(sorted_keys(cfg)) do
    if fields[k] == nil then
      local where = join(path, type(k) == "string" and k or "[" .. show(k) .. "]")
      local near = type(k) == "string" and closest(k, names)
      if near then
        problems[#problems + 1] = fmt("%s: unknown key, did you mean %s?", where, near)
      elseif #names == 0 then
        problems[#problems + 1] = fmt("%s: unknown key (this takes no keys)", where)
      else
        problems[#problems + 1] = fmt("%s: unknown key (the keys are: %s)", where,
                                      table.concat(names, ", "))
      end
    end
  end
  for _, k in ipairs(names) do
    local s, v = fields[k], cfg[k]
    if v == nil then
      if s.required then
        problems[#problems + 1] = fmt("%s is required", join(path, k))
      elseif s.default ~= nil then
        out[k] = copy(s.default)
      elseif s.type == "record" then
        -- an absent record is its fields' defaults, when none of them is required
        local sub = {}
        local filled = validate_fields({}, s.fields, join(path, k), sub)
        if #sub == 0 then out[k] = filled end
      end
    else
      out[k] = M.validate_value(v, s, join(path, k), problems, secret)
    end
  end
  return out
end

-- The config of a use(), checked: the validated copy, or nil and the problems.
function M.validate(recipe, cfg)
  local problems = {}
  if cfg == nil then cfg = {} end
  if type(cfg) ~= "table" then
    return nil, { fmt("the config must be a table, not %s", type(cfg)) }
  end
  local out = validate_fields(cfg, recipe.config, "", problems)
  if #problems > 0 then return nil, problems end
  return out
end

-- A config as one line for logs: secrets as ***.
local redact_fields
local function redact(v, s)
  if s.secret then return "***" end
  if type(v) ~= "table" then return v end
  if s.type == "record" then return redact_fields(v, s.fields) end
  local out = {}
  for k, x in pairs(v) do out[k] = s.of and redact(x, s.of) or x end
  return out
end
function redact_fields(v, fields)
  local out = {}
  for k, x in pairs(v) do out[k] = fields[k] and redact(x, fields[k]) or x end
  return out
end
function M.redact(cfg, recipe) return redact_fields(cfg, recipe.config) end

-- The secret strings of a validated config (inside a secret list, map or record too).
local secrets_fields
local function secrets_of(v, s, secret, out)
  secret = secret or s.secret
  if type(v) == "string" then
    if secret and v ~= "" then out[#out + 1] = v end
  elseif type(v) == "table" then
    if s.type == "record" then
      secrets_fields(v, s.fields, secret, out)
    elseif s.of then
      for _, x in pairs(v) do secrets_of(x, s.of, secret, out) end
    end
  end
end
function secrets_fields(v, fields, secret, out)
  for k, x in pairs(v) do
    if fields[k] then secrets_of(x, fields[k], secret, out) end
  end
end

-- The secret strings of a validated config, the longest first (a secret that holds
-- another is masked whole).
function M.secrets(cfg, recipe)
  local found = {}
  secrets_fields(cfg, recipe.config, false, found)
  table.sort(found, function(a, b) return #a > #b end)
  return found
end

-- `msg` with every secret of the config as ***: a recipe's own error may quote one.
function M.scrub(msg, cfg, recipe)
  for _, v in ipairs(M.secrets(cfg, recipe)) do
    local from = 1
    while true do
      local i, j = msg:find(v, from, true)
      if not i then break end
      msg = msg:sub(1, i - 1) .. "***" .. msg:sub(j + 1)
      from = i + 3
    end
  end
  return msg
end

-- ------------------------------------------------------------------------------ finding

local function readable(p)
  local f = io.open(p, "rb")
  if f then f:close() return true end
  return false
end

local function read(p)
  local f, err = io.open(p, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

-- Where recipe `name` comes from: { name, dir = folder | nil, bundled = true | nil }, or nil.
-- `prefer` (a folder holding recipe.lua) is the recipe a test beside it means.
function M.find(name, prefer)
  if prefer and prefer == "bundled:" .. name and host.embedded("recipes/" .. name .. "/recipe.lua") then
    return { name = name, bundled = true }
  end
  if prefer and readable(prefer .. "/recipe.lua") then
    local own = prefer:gsub("/+$", ""):match("([^/]+)$")
    if own == name then return { name = name, dir = prefer } end
  end
  for _, d in ipairs(host.dirs) do
    local dir = d:gsub("/+$", "") .. "/" .. name
    if readable(dir .. "/recipe.lua") then
      return { name = name, dir = dir, shadows = host.embedded("recipes/" .. name .. "/recipe.lua") ~= nil }
    end
  end
  if host.embedded("recipes/" .. name .. "/recipe.lua") then
    return { name = name, bundled = true }
  end
end

-- Every recipe known: folder ones first in search order, then bundled ones not shadowed.
function M.all()
  local out, seen = {}, {}
  for _, d in ipairs(host.dirs) do
    local dir = d:gsub("/+$", "")
    for _, n in ipairs(host.listdir(dir) or {}) do
      if not seen[n] and n:sub(1, 1) ~= "." and readable(dir .. "/" .. n .. "/recipe.lua") then
        seen[n] = true
        out[#out + 1] = { name = n, dir = dir .. "/" .. n }
      end
    end
  end
  for _, n in ipairs(host.bundled()) do
    if not seen[n] then
      seen[n] = true
      out[#out + 1] = { name = n, bundled = true }
    end
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

function M.names()
  local ns = {}
  for _, r in ipairs(M.all()) do ns[#ns + 1] = r.name end
  return ns
end

-- The recipe's file `rel` (recipe.lua, README.md): its text and the chunk name for it.
function M.file(where, rel)
  if where.bundled then
    local data = host.embedded("recipes/" .. where.name .. "/" .. rel)
    return data, "bundled:" .. where.name .. "/" .. rel
  end
  local p = where.dir .. "/" .. rel
  return read(p), p
end

-- Runs recipe.lua of `where` in `env` (its store and require set by the caller): the
-- manifest checked, or nil and a message "file: problem; problem".
local function run_manifest(where, env)
  local src, chunkname = M.file(where, "recipe.lua")
  if not src then return nil, chunkname .. ": cannot read" end
  local chunk, err = load(src, "@" .. chunkname, "t", env)
  if not chunk then return nil, err end
  local ok, r = pcall(chunk)
  if not ok then return nil, type(r) == "string" and r or chunkname .. ": recipe.lua failed" end
  local problems = M.check_manifest(r, where.name)
  if #problems > 0 then return nil, chunkname .. ": " .. table.concat(problems, "; ") end
  return r, chunkname
end

-- The manifest alone, for `recipes` and `recipes NAME` (setup never runs).
function M.manifest(where)
  local env = setmetatable({ store = host.store("(" .. where.name .. ")") }, { __index = _G })
  host.package(env, where.dir or "", (where.dir or "bundled:" .. where.name) .. "\0manifest",
               "?.lua;?/init.lua", nil, where.bundled and "recipes/" .. where.name or nil)
  return run_manifest(where, env)
end

-- A recipe folder given to check or serve as a path: its manifest and schema checked
-- (setup runs only through use()). nil, or the problem.
function M.check_folder(dir)
  dir = dir:gsub("/+$", "")
  local r, err = M.manifest({ name = dir:match("([^/]+)$") or dir, dir = dir })
  if not r then return err end
end

-- ---------------------------------------------------------------------------------- use

local instances = {} -- instance name -> { recipe, site }
local announced = {} -- recipe name -> true once its folder-over-bundled line was logged

local NAME_PAT = "^%a[%w_%.%-]*$"

-- use(name, cfg, opts) at `site` ("handlers/qa.lua:3"); `prefer`: see M.find. Raises a
-- message "site: ..." on any problem, with nothing registered.
function M.use(name, cfg, opts, site_file, site_line, prefer)
  local site = fmt("%s:%d", site_file, site_line)
  local function fail(msg, ...) error(site .. ": " .. fmt(msg, ...), 0) end
  if type(name) ~= "string" or name == "" then
    fail("use: the recipe name must be a string, got %s", show(name))
  end
  if opts ~= nil and type(opts) ~= "table" then
    fail("use: the options must be a table { as = \"name\" }, not %s", type(opts))
  end
  opts = opts or {}
  for _, k in ipairs(sorted_keys(opts)) do
    if k ~= "as" then fail("use: unknown option %s (the option is: as)", tostring(k)) end
  end
  local where = M.find(name, prefer)
  if not where then
    local near = closest(name, M.names())
    fail("use: no recipe %q%s (looked in %s)", name,
         near and fmt(", did you mean %q?", near) or "",
         #host.dirs > 0 and table.concat(host.dirs, ", ") .. " and the bundled ones"
         or "the bundled ones; add folders with --recipes DIR")
  end
  local as = opts.as
  if as ~= nil and (type(as) ~= "string" or not as:match(NAME_PAT) or #as > 64) then
    fail("use: bad instance name %s: a letter, then letters, digits, '_', '.' or '-'", show(as))
  end
  if as ~= nil and as:sub(-4) == ".lua" then
    fail("use: bad instance name %q: it must not end in .lua (script names do, and both " ..
         "name store keys)", as)
  end
  local instance = as or name
  local other = instances[instance]
  if other then
    if as == nil and other.recipe == name then
      fail("use: %s is used twice (here and at %s): give each use its own name, e.g. " ..
           "use(%q, cfg, { as = \"%s-2\" }); the name is what its store keys and logs hang on",
           name, other.site, name, name)
    end
    fail("use: the instance name %q is already taken (at %s): pick another with { as = ... }",
         instance, other.site)
  end
  if where.shadows and not announced[name] then -- once per recipe, not per instance
    announced[name] = true
    host.log("info", "recipe folder wins over the bundled one",
             { recipe = name, folder = where.dir })
  end

  local env = setmetatable({}, { __index = _G })
  local store = host.store(instance)
  env.store = store
  host.package(env, where.dir or "", (where.dir or "bundled:" .. name) .. "\0" .. instance,
               "?.lua;?/init.lua", { store = store }, where.bundled and "recipes/" .. name or nil)
  local suspended = host.suspend()
  local recipe, chunkname = run_manifest(where, env)
  host.finish(suspended)
  if not recipe then fail("%s", chunkname) end
  local valid, problems = M.validate(recipe, cfg)
  if not valid then fail("%s: %s", name, table.concat(problems, "; ")) end

  -- its handlers' errors are masked too (src/dispatch.c, lh_vm_scrub)
  local prev, why = host.begin(instance, chunkname, site_file, site_line,
                               M.secrets(valid, recipe))
  if not prev then fail("use: %s", why) end
  instances[instance] = { recipe = name, site = site }
  local ok, err = pcall(recipe.setup, valid)
  host.finish(prev)
  if not ok then
    fail("%s: setup failed: %s", instance,
         M.scrub(type(err) == "string" and err or tostring(err), valid, recipe))
  end
  -- the config as JSON, secrets masked (a NaN, which JSON cannot hold, is no reason to fail)
  local okj, shown = pcall(json.encode, M.redact(valid, recipe))
  host.log("debug", "recipe instance ready", {
    instance = instance, recipe = name, version = recipe.version, site = site,
    source = where.bundled and "bundled" or where.dir,
    config = okj and shown or "(not JSON)",
  })
  return instance
end

-- ----------------------------------------------------------------------------- commands

local function source_of(where)
  return where.bundled and "bundled" or where.dir
end

-- Every key of a schema, nested ones as paths ("channels[].url"), in order; `secret`: a
-- key inside a secret one is secret too.
local function flatten(fields, prefix, out, secret)
  for _, k in ipairs(sorted_keys(fields)) do
    local s = fields[k]
    local path = prefix == "" and k or prefix .. "." .. k
    local hidden = secret or s.secret or false
    out[#out + 1] = { path = path, spec = s, secret = hidden }
    local inner, suffix = s, ""
    while (inner.type == "list" or inner.type == "map") and inner.of do
      suffix = suffix .. (inner.type == "list" and "[]" or "{}")
      inner = inner.of
      hidden = hidden or inner.secret or false
    end
    if inner.type == "record" then flatten(inner.fields, path .. suffix, out, hidden) end
  end
  return out
end

local function md_cell(s)
  return (tostring(s):gsub("|", "\\|"):gsub("\n", " "))
end

-- README text with its headings `shift` levels down (code fences left alone).
local function shift_headings(text, shift)
  local out, fenced = {}, false
  for line in (text .. "\n"):gmatch("(.-)\n") do
    if line:match("^```") then fenced = not fenced end
    if not fenced and line:match("^#+ ") then line = ("#"):rep(shift) .. line end
    out[#out + 1] = line
  end
  while out[#out] == "" do out[#out] = nil end
  return table.concat(out, "\n")
end

local function describe_one(where, markdown)
  local r, err = M.manifest(where)
  if not r then return nil, err end
  local keys = flatten(r.config, "", {})
  local readme = M.file(where, "README.md")
  local o = {}
  if markdown then
    o[#o + 1] = fmt("#### `%s` %s\n", r.name, r.version)
    o[#o + 1] = r.description .. "\n"
    if #keys > 0 then
      o[#o + 1] = "| key | type | default | required | secret | description | example |"
      o[#o + 1] = "|---|---|---|---|---|---|---|"
      for _, k in ipairs(keys) do
        local s = k.spec
        o[#o + 1] = fmt("| `%s` | %s | %s | %s | %s | %s | %s |", k.path, md_cell(type_text(s)),
          s.default ~= nil and "`" .. md_cell(literal(s.default, k.secret)) .. "`" or "",
          s.required and "yes" or "", k.secret and "yes" or "",
          md_cell(s.description or ""),
          s.example ~= nil and "`" .. md_cell(literal(s.example)) .. "`" or "")
      end
      o[#o + 1] = ""
    else
      o[#o + 1] = "No config keys.\n"
    end
    if readme then o[#o + 1] = shift_headings(readme, 4) .. "\n" end
  else
    o[#o + 1] = fmt("%s %s (%s)", r.name, r.version, source_of(where))
    o[#o + 1] = r.description
    o[#o + 1] = ""
    o[#o + 1] = #keys > 0 and "config:" or "config: no keys"
    for _, k in ipairs(keys) do
      local s = k.spec
      local attrs = { type_text(s) }
      if s.required then attrs[#attrs + 1] = "required" end
      if k.secret then attrs[#attrs + 1] = "secret" end
      if s.default ~= nil then attrs[#attrs + 1] = "default " .. literal(s.default, k.secret) end
      o[#o + 1] = fmt("  %s  (%s)", k.path, table.concat(attrs, ", "))
      if s.one_of or s.min or s.max or s.match then
        o[#o + 1] = "      expects " .. expected(s)
      end
      if s.description then o[#o + 1] = "      " .. s.description end
      if s.example ~= nil then o[#o + 1] = "      example: " .. literal(s.example) end
    end
    if readme then
      o[#o + 1] = ""
      o[#o + 1] = "README.md:"
      o[#o + 1] = (readme:gsub("\n+$", ""))
    end
    o[#o + 1] = ""
  end
  return table.concat(o, "\n")
end

-- `luahook recipes NAME [--markdown]`: text and exit code.
function M.describe(name, markdown)
  local where = M.find(name)
  if not where then
    local near = closest(name, M.names())
    return fmt("luahook recipes: no recipe %q%s\n", name,
               near and fmt(", did you mean %q?", near) or ""), 2
  end
  local text, err = describe_one(where, markdown)
  if not text then return "luahook recipes: " .. err .. "\n", 1 end
  return text, 0
end

-- `luahook recipes [--markdown]`: every recipe, one line each (Markdown: a table, then
-- each described). Text and exit code (1: one does not load, shown in its place).
function M.list(_, markdown)
  local all, rows, code, parts = M.all(), {}, 0, {}
  for _, where in ipairs(all) do
    local r, err = M.manifest(where)
    if r then
      rows[#rows + 1] = { r.name, r.version, source_of(where), r.description }
      if markdown then parts[#parts + 1] = describe_one(where, true) end
    else
      code = 1
      rows[#rows + 1] = { where.name, "?", source_of(where), "does not load: " .. err }
    end
  end
  if markdown then
    local o = { "| recipe | version | description |", "|---|---|---|" }
    for _, row in ipairs(rows) do
      o[#o + 1] = fmt("| [`%s`](#%s-%s) | %s | %s |", row[1], row[1]:lower(),
                      row[2]:gsub("%.", ""), row[2], md_cell(row[4]))
    end
    return table.concat(o, "\n") .. "\n\n" .. table.concat(parts, "\n"), code
  end
  if #rows == 0 then return "no recipes found\n", 0 end
  local w = { 4, 7, 6 }
  for _, row in ipairs(rows) do
    for i = 1, 3 do w[i] = math.max(w[i], #row[i]) end
  end
  local o = { fmt("%-" .. w[1] .. "s  %-" .. w[2] .. "s  %-" .. w[3] .. "s  %s", "NAME",
                  "VERSION", "SOURCE", "DESCRIPTION") }
  for _, row in ipairs(rows) do
    o[#o + 1] = fmt("%-" .. w[1] .. "s  %-" .. w[2] .. "s  %-" .. w[3] .. "s  %s", row[1], row[2],
                    row[3], row[4])
  end
  return table.concat(o, "\n") .. "\n", code
end

return M
