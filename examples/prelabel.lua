-- prelabel.lua: new tasks to a model in batches, its predictions stored in Label Studio
-- (the bundled recipe `prelabel`; `luahook recipes prelabel` lists every setting).
--   MODEL_URL           the model's predict URL
--   LABEL_STUDIO_URL    Label Studio's address
--   LABEL_STUDIO_TOKEN  an access token of Label Studio (legacy or personal)
-- Without all three it stays off and says so once at load.
local model, ls_url = env("MODEL_URL", ""), env("LABEL_STUDIO_URL", "")
local token = env("LABEL_STUDIO_TOKEN", "")
if model == "" or ls_url == "" or token == "" then -- empty is the same as unset
  log.info("prelabel is off: set MODEL_URL, LABEL_STUDIO_URL and LABEL_STUDIO_TOKEN to turn it on")
else
  use("prelabel", { model_url = model, label_studio_url = ls_url, token = token })
end
