-- json.array/json.object marks, decoded empty arrays that stay arrays, sorted object keys.
handlers("handlers/json/reencode.lua")

test("decode then encode keeps empty arrays arrays, at any depth", function()
  local text = '{"a":[],"b":{},"c":[[],[[]],{}],"d":{"e":[]}}'
  eq(json.encode(json.decode(text)), text)
  eq(json.encode(json.decode("[]")), "[]")
  eq(json.encode(json.decode("[[]]")), "[[]]")
  eq(json.encode(json.decode('{"result":[]}')), '{"result":[]}')
end)

test("a decoded empty array keeps its mark when filled and emptied again", function()
  local v = json.decode('{"result":[]}')
  v.result[1] = { id = 1 }
  eq(json.encode(v), '{"result":[{"id":1}]}')
  v.result[1] = nil
  eq(json.encode(v), '{"result":[]}')
end)

test("the event a handler gets re-encodes with its empty arrays", function()
  fire({ action = "REENCODE", result = {}, annotation = { result = json.array(), id = 7 } })
  eq(logs()[1].fields.body,
     '{"action":"REENCODE","annotation":{"id":7,"result":[]},"result":{}}')
end)

test("the event's empty arrays from a file body stay arrays", function()
  fire('{"action":"REENCODE","tasks":[],"project":{"ids":[[],[1]]}}')
  eq(logs()[1].fields.body, '{"action":"REENCODE","project":{"ids":[[],[1]]},"tasks":[]}')
end)

test("json.array and json.object mark tables built by hand and return them", function()
  local t = {}
  eq(rawequal(json.array(t), t), true)
  eq(json.encode(t), "[]")
  eq(json.encode(json.object({})), "{}")
  eq(json.encode(json.array({})), "[]")
  eq(json.encode({ list = json.array(), map = json.object() }), '{"list":[],"map":{}}')
  eq(json.encode(json.array({ 1, 2, 3 })), "[1,2,3]")
  eq(json.encode(json.object({ b = 1, a = 2 })), '{"a":2,"b":1}')
end)

test("an unmarked empty table is still an object", function()
  eq(json.encode({}), "{}")
  eq(json.encode({ tags = {} }), '{"tags":{}}')
end)

test("json.object of a sequence writes its integer keys as strings", function()
  eq(json.encode(json.object({ "x", "y" })), '{"1":"x","2":"y"}')
  eq(json.encode(json.object({ [42] = true, [-1] = false, name = "n" })),
     '{"-1":false,"42":true,"name":"n"}')
  match(fails(function() return json.encode(json.object({ [1] = "a", ["1"] = "b" })) end),
        'json.encode: cannot encode a json.object with both integer key 1 and string key "1"')
  match(fails(function() return json.encode(json.object({ [1.5] = "a" })) end),
        "json.encode: cannot encode a json.object with float key 1.5")
end)

test("a json.array with string keys is refused", function()
  match(fails(function() return json.encode({ x = json.array({ a = 1 }) }) end),
        'json.encode: cannot encode a json.array with a string key "a" at .x')
  match(fails(function() return json.encode(json.array({ 1, 2, a = 1 })) end),
        'cannot encode a json.array with a string key "a"')
end)

test("marks are checked arguments", function()
  match(fails(function() return json.array(nil) end),
        "bad argument #1 to 'array' %(table expected, got nil%)")
  match(fails(function() return json.object("x") end),
        "bad argument #1 to 'object' %(table expected, got string%)")
  local obj = setmetatable({}, { __index = {} })
  match(fails(function() return json.array(obj) end),
        "bad argument #1 to 'array' %(the table has a metatable")
  -- one mark can replace the other
  eq(json.encode(json.object(json.array({}))), "{}")
  eq(json.encode(json.array(json.object({}))), "[]")
end)

test("object keys come out in byte order", function()
  local t = {}
  for i = 1, 40 do t["k" .. string.char(64 + (i * 7) % 26) .. i] = i end
  t["B"], t["a"], t["_"], t["ab"], t["a\0b"] = 1, 2, 3, 4, 5
  local out = json.encode(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  -- byte order by hand: table.sort compares with strcoll, which follows the locale
  table.sort(keys, function(a, b)
    for i = 1, math.min(#a, #b) do
      local x, y = a:byte(i), b:byte(i)
      if x ~= y then return x < y end
    end
    return #a < #b
  end)
  local parts = {}
  for i, k in ipairs(keys) do parts[i] = json.encode(k) .. ":" .. json.encode(t[k]) end
  eq(out, "{" .. table.concat(parts, ",") .. "}")
  eq(json.encode({ b = { d = 1, c = 2 }, a = 0 }), '{"a":0,"b":{"c":2,"d":1}}')
end)

test("integers stay exact through a round trip", function()
  local text = '{"big":9223372036854775807,"small":-9223372036854775808,"list":[]}'
  local v = json.decode(text)
  eq(v.big, math.maxinteger)
  eq(v.small, math.mininteger)
  eq(json.encode(v), '{"big":9223372036854775807,"list":[],"small":-9223372036854775808}')
end)
