-- tests/lua/package_test.lua: a second script of the same folder: the same modules.
local util = require("util")
on("PKG", function(ev, ctx)
  log.info("a2", { who = util.who, loads = util.loads, path = package.path })
end)
