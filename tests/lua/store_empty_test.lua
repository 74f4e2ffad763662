-- Another file: the store of store_test.lua is not carried over.
handlers("handlers/store/counter.lua")

test("each file starts with an empty store", function()
  eq(store("counter.lua").keys(), {})
  eq(store("counter.lua").get("trainings"), nil)
end)
