-- tests/lua/package_test.lua: package_a's own util.
return { who = "a", loads = 0 }
