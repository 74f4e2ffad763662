-- tests/lua/package_test.lua: a module of a module: its require is its folder's.
local util = require("util")
return { util = util, square = function(n) return n * n end }
