on("ORDER", function() log.info("b1") end)
