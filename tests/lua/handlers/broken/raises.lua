-- fine
error("refusing to load")
