whoami = "c"
on("WHO", function() log.info(whoami) end)

on("CTX", function(ev, ctx)
  log.info("ctx", { ev = ev, ctx = ctx })
end)

on("FAIL", function(ev) error("refused " .. ev.n) end)
on("FAIL", function() log.info("after failure") end)
on("FAIL_TABLE", function() error({}) end)

-- module-level state: survives from one test to the next (same file, same VM)
counter = 0
on("COUNT", function()
  counter = counter + 1
  log.info("count", { n = counter })
end)

on("TYPES", function(ev)
  log.info("types", { id = math.type(ev.id), f = math.type(ev.f), null = ev.x == json.null,
                      big = ev.big })
end)

on("ENV", function(ev) log.info("env", { v = env(ev.name, "the default") }) end)
on("ENV_STRICT", function(ev) log.info("env", { v = env(ev.name) }) end)

on("LATE_ON", function() on("X", function() end) end)

on("LOG_LEVELS", function()
  log.debug("d")
  log.info("i", { k = 1 })
  log.warn("w")
  log.error("e", { why = "because" })
end)
