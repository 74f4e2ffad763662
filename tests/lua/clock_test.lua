-- The virtual clock: sleep in handlers, timers, the handler timeout, clock.advance.
handlers("handlers/clock/sleepy.lua", "handlers/clock/timers.lua")

local T0 = 1700000000.0

local function msgs(level)
  local out = {}
  for _, r in ipairs(logs(level)) do out[#out + 1] = r.msg end
  return out
end

test("the clock starts at 1700000000.0 in the first test", function()
  eq(clock.now(), T0)
  clock.advance(12.5)
  eq(clock.now(), T0 + 12.5)
end)

test("...and goes on from there in the next one: it never goes back in a file", function()
  eq(clock.now(), T0 + 12.5)
end)

test("fire waits for sleeping handlers; time moves only as far as needed", function()
  local t0 = clock.now()
  local r = fire({ action = "SLEEP", a = 5, b = 3 })
  ok(r.ok)
  eq(r.handlers, 2)
  -- both started at once; b woke first, a later; results stay in registration order
  eq(msgs(), { "a start", "b start", "b woke", "a woke" })
  eq(logs()[1].fields.at, t0)
  eq(clock.now(), t0 + 5)
  match(r[1].handler, "sleepy%.lua:1$")
  match(r[2].handler, "sleepy%.lua:7$")
end)

test("a handler waiting past 30 s times out; the others are not held up", function()
  local t0 = clock.now()
  local r = fire({ action = "HANG" }, { allow_failure = true })
  nok(r.ok)
  eq(r[1], { handler = r[1].handler, id = "sleepy.lua#3", ok = false,
             error = "handler timed out after 30 s (--handler-timeout)" })
  eq(r[2].ok, true)
  eq(clock.now(), t0 + 30)
  -- the load-time timer ticked at +10 and +20 while fire waited
  eq(msgs(), { "second handler ran", "tick", "tick" })
end)

test("sleep works only in the handler's own coroutine", function()
  local r = fire({ action = "NESTED_SLEEP" }, { allow_failure = true })
  match(r[1].error, "sleep: only inside a handler or a timer callback, in its own coroutine")
  r = fire({ action = "BAD_SLEEP" }, { allow_failure = true })
  match(r[1].error, "seconds must be a number from 0 to 1e7")
end)

test("a timer started at load time ticks with the virtual clock", function()
  clock.advance(9.999)
  eq(#logs(), 0)
  clock.advance(0.001)
  eq(#logs(), 1)
  clock.advance(20)
  eq(msgs(), { "tick", "tick", "tick" })
  eq(logs()[1].fields.active, true)
end)

test("load-time timers are armed again in every test; script state stays", function()
  fire({ action = "TICKS" })
  local before = logs()[1].fields.n
  ok(before >= 3, "ticks counted in the earlier test")
  eq(logs()[1].fields.active, true)
  clock.advance(10)
  eq(logs()[2].fields.n, before + 1)
end)

test("a stopped load-time timer does not tick", function()
  fire({ action = "STOP_TICKS" })
  fire({ action = "TICKS" })
  eq(logs()[1].fields.active, false)
  clock.advance(100)
  eq(#logs("info"), 1)
end)

test("...and ticks again in the next test", function()
  clock.advance(10)
  eq(msgs(), { "tick" })
end)

test("timer.after fires once, with its handle", function()
  fire({ action = "AFTER", s = 2 })
  eq(logs()[1].fields.active, true)
  match(logs()[1].fields.text, "^timer .*timers%.lua:%d+$")
  clock.advance(1.5)
  eq(#logs(), 1)
  clock.advance(0.5)
  eq(logs()[2].msg, "after fired")
  eq(logs()[2].fields, { same = true, active = false })
  clock.advance(100)
  eq(msgs(), { "armed", "after fired", "tick", "tick", "tick", "tick", "tick", "tick", "tick",
               "tick", "tick", "tick" })
end)

test("a stopped timer never fires", function()
  fire({ action = "CANCEL", s = 1 })
  eq(logs()[1].fields, { active = false, text = "timer (stopped)" })
  clock.advance(5)
  eq(msgs(), { "cancelled" })
end)

test("a timer callback's error, allowed, is a log record", function()
  fire({ action = "BAD_TIMER" })
  clock.advance(1, { allow_failure = true })
  local e = logs("error")
  eq(#e, 1)
  eq(e[1].msg, "timer failed")
  match(e[1].fields.error, "timers%.lua:%d+: boom in a timer$")
  eq(e[1].fields.outcome, "error")
end)

test("timer callbacks may sleep", function()
  fire({ action = "SLEEPY_TIMER" })
  clock.advance(2.5)
  eq(#logs(), 0)
  clock.advance(0.5)
  eq(msgs(), { "timer callback done" })
end)

test("timer.every never overlaps itself", function()
  fire({ action = "SLOW_EVERY" })
  clock.advance(5) -- ticks at +1 (runs until +3.5), +2 and +3 skipped, +4 runs
  eq(#logs("info"), 2)
  eq(logs()[2].fields.n, 2)
end)

test("timers made in a test are dropped at its end", function()
  clock.advance(60)
  local slow = 0
  for _, r in ipairs(logs()) do if r.msg == "slow run" then slow = slow + 1 end end
  eq(slow, 0)
end)

test("timer argument checks", function()
  fire({ action = "TIMER_ARGS" })
  local m = logs()[1].fields.msgs
  match(m[1], "timer.every needs at least 0.001 seconds")
  match(m[2], "seconds must be a number from 0 to 1e7")
  match(m[3], "bad argument #2 to 'after' %(function expected, got string%)")
  match(m[4], "bad argument #1 to 'after' %(number expected, got string%)")
end)

test("fire_all: the handlers of several events interleave at their waits", function()
  local t0 = clock.now()
  local rs = fire_all({ { action = "SLEEP", a = 2, b = 1 }, { action = "SLEEP", a = 1, b = 3 } })
  eq(#rs, 2)
  ok(rs[1].ok and rs[2].ok)
  neq(rs[1].id, rs[2].id)
  eq(rs[2][2].handler, rs[1][2].handler)
  -- all four start at once; each wakes at its own time, the first started first
  eq(msgs(), { "a start", "b start", "a start", "b start", "b woke", "a woke", "a woke",
               "b woke" })
  eq(clock.now(), t0 + 3)
end)

test("fire_all: a failure fails the call unless allowed; refusals raise", function()
  local m = fails(function() fire_all({ { action = "SLEEP", a = 0, b = 0 }, { action = "HANG" } }) end)
  match(m, "clock_test%.lua:%d+: handler .*sleepy%.lua:%d+ failed: handler timed out after 30 s")
  local rs = fire_all({ { action = "HANG" } }, { allow_failure = true })
  nok(rs[1].ok)
  match(fails(function() fire_all({ { action = "SLEEP" }, "[1]" }) end),
        "clock_test%.lua:%d+: fire_all: the body is not a JSON object")
  fails(function() fire_all("x") end, "the events must be a list")
end)

test("extra arguments to timer.after never take the handle's place", function()
  fire({ action = "EXTRA_ARGS" })
  collectgarbage()
  clock.advance(5)
  eq(msgs(), { "second fired" })
  eq(logs()[1].fields, { same = true })
end)
