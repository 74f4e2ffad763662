-- tests/lua/package_test.lua: package_b's own util.
return { who = "b" }
