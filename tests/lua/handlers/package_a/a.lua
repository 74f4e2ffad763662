-- tests/lua/package_test.lua: a script whose modules sit in its folder's lib/.
local util = require("util")
local shapes = require("shapes")          -- lib/shapes/init.lua, which requires "util" too
util.loads = util.loads + 1
package.path = "/nowhere/?.lua"           -- this script's own package: leaks nowhere

on("PKG", function(ev, ctx)
  local ok, err = pcall(require, "no_such_module")
  log.info("a", { who = util.who, loads = util.loads, same = shapes.util == util,
                  area = shapes.square(3), path = package.path, err = err,
                  json_shared = require("json") == json })
end)
