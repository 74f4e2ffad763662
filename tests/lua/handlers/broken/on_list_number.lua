on({ "A", 7 }, function() end)
