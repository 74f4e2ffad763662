-- progress.lua: logs each project's 25/50/75/100 % of finished tasks once, and each task
-- that becomes complete (the bundled recipe `progress`). Always on: it needs no setting.
--   PROGRESS_URL  also post the announcements to this chat incoming webhook (Slack format)
local url = env("PROGRESS_URL", "") -- empty is the same as unset
use("progress", { url = url ~= "" and url or nil })
