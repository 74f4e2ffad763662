-- train.lua: a training call after every TRAIN_EVERY (50) annotations of a project, at
-- most every 10 minutes (the bundled recipe `train_trigger`).
--   TRAIN_URL    the training URL (gets a POST {project, annotations})
--   TRAIN_EVERY  annotations per training (default 50)
-- Without TRAIN_URL it stays off and says so once at load.
local setting = require "setting"
local url = setting("TRAIN_URL")
if not url then
  log.info("train_trigger is off: set TRAIN_URL to the model's training URL to turn it on")
else
  local every = setting("TRAIN_EVERY", "50")
  -- not a whole number: passed as given, so that use() says what is wrong with it
  use("train_trigger", { url = url, every = math.tointeger(tonumber(every)) or every })
end
