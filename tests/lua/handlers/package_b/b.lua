-- tests/lua/package_test.lua: another folder with its own util.
local util = require("util")
on("PKG", function(ev, ctx)
  log.info("b", { who = util.who, path = package.path })
end)
