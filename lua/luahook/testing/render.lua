--[[
luahook/testing/render.lua - values as a test failure shows them: Lua-like, keys sorted,
1 and 1.0 apart, json.null by name, long values cut; and error objects as text.
]]

local fmt = string.format

local M = {}

local function is_null(v)
  return json ~= nil and json.null ~= nil and rawequal(v, json.null)
end
M.is_null = is_null

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
M.quote = quote

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
M.number = render_number

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
M.key_order = key_order

local function sorted_keys(t)
  local keys = {}
  for k in next, t do keys[#keys + 1] = k end
  table.sort(keys, key_order)
  return keys
end
M.sorted_keys = sorted_keys

-- A sequence: keys exactly 1..n.
local function seq_len(t)
  local n = 0
  for _ in next, t do n = n + 1 end
  for i = 1, n do
    if rawget(t, i) == nil then return nil end
  end
  return n
end
M.seq_len = seq_len

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

-- A value on one line, cut at RENDER_MAX bytes.
function M.show(v)
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

-- ".key" or "[key]": one step of the path to a difference.
function M.path_elem(k)
  if type(k) == "string" and k:match(IDENT) then return "." .. k end
  return "[" .. render(k, 0, {}) .. "]"
end

-- An error object as text, as luahook reports a handler's error.
function M.errmsg(e)
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

-- A log record as a failing test lists it: "level msg key=value ...".
function M.log_record(r)
  local s = r.level .. " " .. r.msg
  if type(r.fields) == "table" then
    for _, k in ipairs(sorted_keys(r.fields)) do
      local v = r.fields[k]
      local vs = type(v) == "string" and (v:find("^[%w%._:/%-]+$") and v or quote(v))
                 or M.show(v)
      s = s .. " " .. tostring(k) .. "=" .. vs
    end
  end
  return s
end

function M.type_name(v)
  if v == nil then return "nil" end
  return type(v)
end

return M
