-- fine
on("A", function(ev, ctx)
  local x = = 1
end)
