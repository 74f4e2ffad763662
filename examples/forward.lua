-- forward.lua: every event's exact bytes to one or more URLs, retried with backoff
-- (the bundled recipe `forward`; `luahook recipes forward` lists every setting).
--   FORWARD_URL             where to, several separated by spaces
--   FORWARD_SIGNING_SECRET  sign each post the Standard Webhooks way (whsec_<base64>)
-- Without FORWARD_URL it stays off and says so once at load.
local urls = {}
for url in env("FORWARD_URL", ""):gmatch("%S+") do urls[#urls + 1] = url end
if #urls == 0 then
  log.info("forward is off: set FORWARD_URL to the URL(s) that should get every event")
else
  local secret = env("FORWARD_SIGNING_SECRET", "") -- empty is the same as unset
  use("forward", { urls = urls, signing_secret = secret ~= "" and secret or nil })
end
