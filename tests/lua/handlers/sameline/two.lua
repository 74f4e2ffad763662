-- Two handlers on one line: they share a label, and end in the other order.
on("SAME", function() sleep(2) error("the slow one failed", 0) end) on("SAME", function() sleep(1) end)
