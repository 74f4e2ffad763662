-- names_test.lua: ids by ordinal and by name; a list of actions is one handler.
on("POST", function() log.info("first") end)
on({ "POST", "EDIT" }, function(ev)
  if ev.fail then error("chat is down", 0) end
end, { name = "slack" })
on("POST", function() log.info("third") end)
