-- store under luahook test: the real store, in memory, empty for each file, on the
-- virtual clock; store(script) gives a test that script's own store.
handlers("handlers/store/counter.lua")

test("a test file's store starts empty", function()
  eq(store("counter.lua").keys(), {})
end)

test("handlers write, the test reads and seeds through the same functions", function()
  local s = store("counter.lua")
  fire({ action = "COUNT", project = 7 })
  fire({ action = "COUNT", project = 7 })
  eq(s.get("count:7"), 2)
  s.set("count:8", 40)
  fire({ action = "COUNT", project = 8 })
  eq(s.get("count:8"), 41)
  eq(store("other.lua").get("count:7"), nil, "namespaced per script")
end)

test("ttl follows the virtual clock", function()
  local s = store("counter.lua")
  fire({ action = "COUNT", project = 9 })
  clock.advance(59)
  eq(s.get("count:9"), 1)
  clock.advance(2)
  eq(s.get("count:9"), nil)
end)

test("store.lock: concurrent runs train once", function()
  local rs = fire_all({ { action = "TRAIN" }, { action = "TRAIN" }, { action = "TRAIN" } })
  eq(#rs, 3)
  eq(store("counter.lua").get("trainings"), 1)
end)

test("store.lock needs a handler", function()
  fails(function() store("counter.lua").lock("k", function() end) end)
end)
