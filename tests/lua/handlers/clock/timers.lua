-- a timer started at load time: armed again at the start of every test
ticks = 0
local ticker = timer.every(10, function(h)
  ticks = ticks + 1
  log.info("tick", { n = ticks, active = h:active() })
end)

on("TICKS", function() log.info("ticks", { n = ticks, active = ticker:active() }) end)
on("STOP_TICKS", function() ticker:stop() end)

on("AFTER", function(ev)
  local h
  h = timer.after(ev.s, function(got)
    log.info("after fired", { same = got == h, active = h:active() })
  end)
  log.info("armed", { active = h:active(), text = tostring(h) })
end)

on("CANCEL", function(ev)
  local h = timer.after(ev.s, function() log.info("should not fire") end)
  h:stop()
  h:stop() -- idempotent
  log.info("cancelled", { active = h:active(), text = tostring(h) })
end)

on("BAD_TIMER", function()
  timer.after(1, function() error("boom in a timer") end)
end)

on("SLEEPY_TIMER", function()
  timer.after(1, function()
    sleep(2)
    log.info("timer callback done")
  end)
end)

on("SLOW_EVERY", function()
  local runs = 0
  local h
  h = timer.every(1, function()
    runs = runs + 1
    log.info("slow run", { n = runs })
    sleep(2.5)
  end)
end)

on("TIMER_ARGS", function()
  local msgs = {}
  for _, f in ipairs({
    function() timer.every(0, function() end) end,
    function() timer.after(-1, function() end) end,
    function() timer.after(1, "not a function") end,
    function() timer.after("soon", function() end) end,
  }) do
    local ok, e = pcall(f)
    msgs[#msgs + 1] = ok and "no error" or e
  end
  log.info("timer args", { msgs = msgs })
end)

-- Extra arguments are ignored: the callback still gets its own handle, and :stop() works
-- on it (they once took the handle's place).
on("EXTRA_ARGS", function()
  local other = timer.every(1, function() log.info("other tick") end)
  local h
  h = timer.after(1, function(got)
    log.info("extra fired", { same = got == h })
  end, other, "x")
  h:stop()
  other:stop()
  local h2
  h2 = timer.after(2, function(got) log.info("second fired", { same = got == h2 }) end, 1)
  collectgarbage()
end)
