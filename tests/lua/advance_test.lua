-- clock.advance's bounds, in a file of its own: no handler script here arms a timer, so
-- moving the clock by 1e7 s runs nothing (clock_test's 10 s ticker would tick a million
-- times).
handlers("handlers/basic")

test("clock.advance takes 0 to 1e7 seconds", function()
  fails(function() clock.advance(1e300) end, "from 0 to 1e7")
  fails(function() clock.advance(-1) end, "from 0 to 1e7")
  fails(function() clock.advance(0 / 0) end, "from 0 to 1e7")
  local t0 = clock.now()
  clock.advance(1e7)
  eq(clock.now(), t0 + 1e7)
end)
