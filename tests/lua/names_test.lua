-- Stable handler ids in luahook test's results: r[i].id beside r[i].handler (file:line).
handlers("handlers/names")

test("each result has the handler's stable id", function()
  local r = fire({ action = "POST" })
  eq(#r, 3)
  eq({ r[1].id, r[2].id, r[3].id }, { "chat.lua#1", "chat.lua#slack", "chat.lua#3" })
  match(r[2].handler, "handlers/names/chat%.lua:3$")
end)

test("a handler of a list of actions has one id for all of them", function()
  local r = fire({ action = "EDIT" })
  eq(#r, 1)
  eq(r[1].id, "chat.lua#slack")
end)

test("a failure names the handler by id, then file:line", function()
  local m = fails(function() fire({ action = "EDIT", fail = true }) end)
  match(m, "names_test%.lua:%d+: handler chat%.lua#slack [^ ]*handlers/names/chat%.lua:3 failed: chat is down")
end)
