on("A", "not a function")
