on({}, function() end)
