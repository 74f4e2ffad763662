-- tests/lua/package_test.lua: a script (a handler file), not a module: require says where
-- modules go.
on("PKG_HELPER", function(ev, ctx)
  local ok, err = pcall(require, "helper")
  log.info("helper", { err = err })
end)
