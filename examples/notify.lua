-- notify.lua: a chat message for each submitted, updated or skipped annotation
-- (the bundled recipe `notify`; `luahook recipes notify` lists every setting).
--   NOTIFY_URL      an incoming webhook URL: Slack, Mattermost, Discord, Teams, or any
--   NOTIFY_FORMAT   slack (default), mattermost, discord, teams or json
-- Without NOTIFY_URL it stays off and says so once at load.
local url = env("NOTIFY_URL", "") -- empty is the same as unset
if url == "" then
  log.info("notify is off: set NOTIFY_URL to a chat incoming webhook to turn it on")
else
  local format = env("NOTIFY_FORMAT", "")
  use("notify", { url = url, format = format ~= "" and format or "slack" })
end
