-- tests/lua/package_test.lua: another folder with its own util.
local util = require("util")
on("PKG", function(ev, ctx)
  log.info("b", { who = util.who, path = package.path })
end)

-- Debian's Lua modules (lua-cjson, a test dependency): a C module through package.cpath,
-- another in the same .so through its all-in-one form, a Lua one through package.path.
on("PKG_SYSTEM", function(ev, ctx)
  local cjson, safe, util = require("cjson"), require("cjson.safe"), require("cjson.util")
  log.info("system", { cjson = cjson.encode({ 1 }), safe = select(2, safe.decode("{")) ~= nil,
                       util = type(util.serialise_value) })
end)
