-- require() per folder: each folder's lib/ (never loaded as handlers), one module cache per
-- folder, package.path per script, errors naming every place searched.
handlers("handlers/package_a", "handlers/package_b")

local function by_msg()
  local t = {}
  for _, r in ipairs(logs("info")) do t[r.msg] = r.fields end
  return t
end

test("two folders each get their own util; one folder's scripts share theirs", function()
  fire({ action = "PKG" })
  local l = by_msg()
  eq(l.a.who, "a")
  eq(l.b.who, "b")
  eq(l.a2.who, "a")
  eq(l.a.loads, 1, "loaded once for the folder, a's change seen by a2")
  eq(l.a2.loads, 1)
  ok(l.a.same, "a module's require is its folder's: the same util")
  eq(l.a.area, 9)
  ok(l.a.json_shared, "the stdlib stays shared")
end)

test("a script's package.path change stays its own", function()
  fire({ action = "PKG" })
  local l = by_msg()
  eq(l.a.path, "/nowhere/?.lua")
  eq(l.a2.path, package.path, "the other script of the folder keeps the default")
  eq(l.b.path, package.path)
  ok(package.path:find("/usr/share/lua/5.4/?.lua", 1, true), "Debian's modules are on the path")
end)

test("a missing module's error names every place searched, in order", function()
  fire({ action = "PKG" })
  local err = by_msg().a.err
  match(err, "^module 'no_such_module' not found:\n")
  local places = {}
  for line in err:gmatch("\n\t([^\n]+)") do places[#places + 1] = line end
  eq(places[1], "no field package.preload['no_such_module']")
  match(places[2], "^no file '[^']*handlers/package_a/lib/no_such_module%.lua'$")
  match(places[3], "^no file '[^']*handlers/package_a/lib/no_such_module/init%.lua'$")
  eq(places[4], "no file '/nowhere/no_such_module.lua'", "then the script's package.path")
  match(places[5], "^no file '.*%.so'$", "then package.cpath")
end)

test("a module left beside the scripts: the error says it is a handler, and where to go", function()
  fire({ action = "PKG_HELPER" })
  local err = by_msg().helper.err
  match(err, "^module 'helper' not found:")
  match(err, "\n\t%([^\n]*handlers/package_b/helper%.lua is loaded as a handler script: a module goes in [^\n]*handlers/package_b/lib/%)$")
end)

test("a test file's require is its own folder's", function()
  local okr, err = pcall(require, "util")
  nok(okr, "tests/lua/lib/ does not exist")
  -- "tests/lua/lib/util.lua", or "./lib/util.lua" when run from inside tests/lua
  match(err, "\n\tno file '[^']*lib/util%.lua'\n\tno file '[^']*lib/util/init%.lua'\n")
  nok(err:find("package_", 1, true), "not the handlers' folders")
end)

test("Debian's Lua modules load through package.path and package.cpath", function()
  fire({ action = "PKG_SYSTEM" })
  eq(by_msg().system, { cjson = "[1]", safe = true, util = "function" })
end)
