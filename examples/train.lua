-- train.lua: a training call after every TRAIN_EVERY (50) annotations of a project, at
-- most every 10 minutes (the bundled recipe `train_trigger`).
--   TRAIN_URL    the training URL (gets a POST {project, annotations})
--   TRAIN_EVERY  annotations per training (default 50)
-- Without TRAIN_URL it stays off and says so once at load.
local url = env("TRAIN_URL", "") -- empty is the same as unset
if url == "" then
  log.info("train_trigger is off: set TRAIN_URL to the model's training URL to turn it on")
else
  local every = env("TRAIN_EVERY", "")
  if every == "" then every = "50" end
  -- not a whole number: passed as given, so that use() says what is wrong with it
  use("train_trigger", { url = url, every = math.tointeger(tonumber(every)) or every })
end
