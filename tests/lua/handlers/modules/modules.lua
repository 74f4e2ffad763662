-- require() of the luahook modules, os.time/os.date on the virtual clock, and where the
-- API's errors point (the line of this script that called it, as with the server).
local http = require("http")
local log = require("log")
local timer = require("timer")
local json = require("json")

on("REQUIRE", function()
  local res, err = http.get("http://req.test/x")
  log.info("required", { status = res and res.status, err = err, json = json.encode({ 1 }),
                         timer = type(timer.after) })
end)

on("TIME", function(ev)
  if ev.sleep then sleep(ev.sleep) end
  log.info("time", { t = os.time(), day = os.date("!%Y-%m-%d %H:%M:%S"),
                     tbl = os.date("!*t").year,
                     given = os.time({ year = 2001, month = 1, day = 1, hour = 0 }),
                     given_date = os.date("!%Y", 0) })
end)

-- each misuse on a line of its own: the error names it
on("MISUSE_SLEEP", function() sleep("soon") end)
on("MISUSE_AFTER", function() timer.after(-1, function() end) end)
on("MISUSE_LOG", function() log.info({}) end)
on("MISUSE_ENV", function() env() end)
on("MISUSE_HTTP", function() http.get("ftp://x.test/") end)
on("MISUSE_HTTP_OPT", function() http.get("http://x.test/", { timeout = "1" }) end)
on("MISUSE_STOP", function() local h = timer.after(1, function() end); h.stop({}) end)
on("TIMEOUT", function()
  local res, err = http.get("http://slow.test/p?secret=1", { timeout = 2 })
  log.info("timeout", { err = err })
end)

-- a timer that fails when it fires, from a handler that waits past it
on("TIMER_FAILS_DURING_FIRE", function()
  timer.after(1, function() error("timer broke") end)
  sleep(2)
end)

-- a timer that fails later, when the test moves the clock
on("TIMER_FAILS_LATER", function()
  timer.after(1, function() error("timer broke later") end)
end)
