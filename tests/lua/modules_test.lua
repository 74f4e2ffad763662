-- require() of the modules, os.time/os.date on the virtual clock, error shapes of misuse,
-- and the failures a test does not expect.
handlers("handlers/modules/modules.lua")

local T0 = 1700000000.0
local SCRIPT = "[^:]*handlers/modules/modules%.lua"

test("require gives the test-mode http, log and timer, and the real json", function()
  mock.http("GET", "req%.test", { status = 203 })
  fire({ action = "REQUIRE" })
  eq(logs()[1].fields, { status = 203, json = "[1]", timer = "function" })
  eq(#mock.calls(), 1, "the mock answered, not the network")
end)

test("os.time() and os.date(fmt) in handlers read the virtual clock", function()
  fire({ action = "TIME" })
  local f = logs()[1].fields
  eq(clock.now(), T0, "no earlier test of this file moved the clock")
  eq(f.t, math.floor(T0))
  eq(math.type(f.t), "integer")
  eq(f.day, "2023-11-14 22:13:20")
  eq(f.tbl, 2023)
  eq(f.given, os.time({ year = 2001, month = 1, day = 1, hour = 0 }), "a given time is real")
  eq(f.given_date, "1970")
  fire({ action = "TIME", sleep = 20 })
  eq(logs()[2].fields.t, math.floor(T0) + 20)
  eq(logs()[2].fields.day, "2023-11-14 22:13:40")
  -- the test file's own os stays real
  ok(os.time() < T0 or os.time() > T0 + 7200)
end)

local function misuse(action)
  return fire({ action = action }, { allow_failure = true })[1].error
end

test("misuse raises at the script's line, like the server's luaL_error", function()
  match(misuse("MISUSE_SLEEP"), "^" .. SCRIPT .. ":23: bad argument #1 to 'sleep' %(number expected, got string%)$")
  match(misuse("MISUSE_AFTER"), "^" .. SCRIPT .. ":24: bad argument #1 to 'after' %(seconds must be")
  match(misuse("MISUSE_LOG"), "^" .. SCRIPT .. ":25: bad argument #1 to 'info' %(string expected, got table%)$")
  match(misuse("MISUSE_ENV"), "^" .. SCRIPT .. ":26: bad argument #1 to 'env' %(string expected, got no value%)$")
  match(misuse("MISUSE_HTTP"), "^" .. SCRIPT .. ":27: http: url must start with http:// or https://")
  match(misuse("MISUSE_HTTP_OPT"), "^" .. SCRIPT .. ":28: http: option 'timeout' must be a number, not string$")
  match(misuse("MISUSE_STOP"), "^" .. SCRIPT .. ":29: bad argument #1 to 'stop' %(luahook.timer expected, got table%)$")
end)

test("a mocked timeout reads 'METHOD url: timed out after N s', without the query", function()
  local t0 = clock.now()
  mock.http("GET", "slow%.test", { delay = 5 })
  fire({ action = "TIMEOUT" })
  -- the server adds curl's detail in parentheses: match the start, do not eq
  match(logs()[1].fields.err, "^GET http://slow%.test/p: timed out after 2 s")
  eq(clock.now(), t0 + 2)
end)

test("a handler failing unexpectedly fails fire, at the test's line", function()
  local m = fails(function() fire({ action = "MISUSE_ENV" }) end)
  match(m, "^[^\n]*modules_test%.lua:%d+: handler " .. SCRIPT .. ":26 failed: " .. SCRIPT ..
           ":26: bad argument #1 to 'env'")
end)

test("every failed handler is listed", function()
  local okr, e = pcall(fire, { action = "MISUSE_LOG" })
  nok(okr)
  match(tostring(e), "handler " .. SCRIPT .. ":25 failed: ")
  eq(#e.details, 1)
  match(e.details[1], "allow_failure = true")
end)

test("a timer failing unexpectedly fails clock.advance, at the test's line", function()
  fire({ action = "TIMER_FAILS_LATER" })
  local m = fails(function() clock.advance(5) end)
  match(m, "^[^\n]*modules_test%.lua:%d+: timer " .. SCRIPT .. ":43 failed: " .. SCRIPT ..
           ":43: timer broke later$")
  eq(logs("error")[1].msg, "timer failed", "it is a log record too")
end)

test("clock.advance(s, { allow_failure = true }) lets a timer fail", function()
  fire({ action = "TIMER_FAILS_LATER" })
  clock.advance(5, { allow_failure = true })
  local e = logs("error")
  eq(#e, 1)
  eq(e[1].msg, "timer failed")
  match(e[1].fields.error, "timer broke later$")
  clock.advance(5) -- that failure is not reported again
end)

test("a timer failing while fire runs fails that fire", function()
  local m = fails(function() fire({ action = "TIMER_FAILS_DURING_FIRE" }) end)
  match(m, "modules_test%.lua:%d+: timer " .. SCRIPT .. ":37 failed: " .. SCRIPT ..
           ":37: timer broke$")
  -- allowed, the handler's own result is ok
  local r = fire({ action = "TIMER_FAILS_DURING_FIRE" }, { allow_failure = true })
  ok(r.ok)
  eq(#logs("error"), 2)
end)
