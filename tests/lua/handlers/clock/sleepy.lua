on("SLEEP", function(ev, ctx)
  log.info("a start", { at = ctx.received_at })
  sleep(ev.a)
  log.info("a woke")
end)

on("SLEEP", function(ev)
  log.info("b start")
  sleep(ev.b)
  log.info("b woke")
end)

on("HANG", function() sleep(40) end)
on("HANG", function() log.info("second handler ran") end)

on("NESTED_SLEEP", function()
  coroutine.wrap(function() sleep(1) end)()
end)

on("BAD_SLEEP", function() sleep(-1) end)
