-- tests/lua/package_test.lua: lib/ is never loaded as handlers, and this is never required.
error("package_a/lib/trap.lua was loaded")
