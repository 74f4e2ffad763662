-- notify.lua: one chat message per submitted, updated or skipped annotation.
--
-- Posts {"text": "..."} to SLACK_WEBHOOK_URL, a Slack incoming-webhook URL (Mattermost and
-- Rocket.Chat take the same body). With LABEL_STUDIO_URL set, the task number becomes a
-- link to the task. Both are read inside the handler, so the script loads without them.
--
-- A failed post raises: the failure is logged as `handler failed` and counted in
-- luahook_handler_runs_total{outcome="error"}. Label Studio never sees it (it has had
-- its answer already) and luahook does not retry.
--
-- Try it:
--   SLACK_WEBHOOK_URL=https://hooks.slack.com/services/T000/B000/XXXX \
--     luahook fire examples/notify.lua --sample ANNOTATION_CREATED

-- "Task 101" or, with LABEL_STUDIO_URL, a Slack link to the task in the data manager.
local function task_ref(project_id, task_id)
  local base = env("LABEL_STUDIO_URL", nil)
  if base and math.type(project_id) == "integer" and math.type(task_id) == "integer" then
    return ("<%s/projects/%d/data?task=%d|task %d>"):format((base:gsub("/+$", "")), project_id,
                                                            task_id, task_id)
  end
  return "task " .. task_id
end

local function message(ev)
  local a = ev.annotation
  -- ev.project is the full project; its title may be null (json.null, not nil).
  local project = type(ev.project) == "table" and ev.project or {}
  -- very old annotations have no project (json.null): never concatenate it blindly
  local title = type(project.title) == "string" and project.title
                or (math.type(a.project) == "integer" and ("project " .. a.project))
                or "a project"
  local who = math.type(a.completed_by) == "integer" and ("user " .. a.completed_by)
              or "a deleted user"
  local task = task_ref(project.id or a.project, a.task)

  if a.was_cancelled then
    -- A skip is an annotation with was_cancelled = true and an empty result.
    return ("%s: %s skipped %s"):format(title, who, task)
  end
  local regions = type(a.result) == "table" and #a.result or 0
  local verb = ev.action == "ANNOTATION_UPDATED" and "updated" or "submitted"
  return ("%s: %s %s annotation %d on %s (%d region%s)"):format(
    title, who, verb, a.id, task, regions, regions == 1 and "" or "s")
end

on({ "ANNOTATION_CREATED", "ANNOTATION_UPDATED" }, function(ev, ctx)
  if type(ev.annotation) ~= "table" then
    -- The webhook was saved with "Send payload" off: the body is {"action": ...} only.
    log.warn("no annotation in the event: turn on 'Send payload' in Label Studio")
    return
  end
  local url = env("SLACK_WEBHOOK_URL") -- raises "env: SLACK_WEBHOOK_URL is not set ..."

  local res, err = http.post(url, { json = { text = message(ev) }, timeout = 10 })
  if not res then
    -- err reads "POST <url>: <cause>". A Slack webhook URL is a secret: keep it out of
    -- the log and report the cause only.
    error("chat post failed: " .. (err:match("^%u+ %S+: (.*)$") or err), 0)
  end
  if res.status < 200 or res.status > 299 then
    error(("chat post failed: HTTP %d %s"):format(res.status, res.body:sub(1, 200)), 0)
  end
end)
