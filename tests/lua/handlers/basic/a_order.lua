on("ORDER", function(ev, ctx) log.info("a1") end)
on("*", function(ev, ctx) if ev.star then log.info("a-star") end end)
on({ "ORDER", "OTHER" }, function(ev, ctx) log.info("a2") end)

-- per-script globals: c_ctx.lua has its own `whoami`
whoami = "a"
on("WHO", function() log.info(whoami) end)
