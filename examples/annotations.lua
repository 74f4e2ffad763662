-- Logs every annotation as it lands, and counts them per project.
-- Try it: ./scripts/run, then
--   curl -X POST localhost:9090/ -H 'Content-Type: application/json' \
--        -d '{"action":"ANNOTATION_CREATED","annotation":{"id":1,"was_cancelled":false,"result":[]},"project":{"id":7}}'
local per_project = {}

on({ "ANNOTATION_CREATED", "ANNOTATION_UPDATED" }, function(ev, ctx)
  local a = ev.annotation
  local project = type(ev.project) == "table" and ev.project.id or a.project
  per_project[project] = (per_project[project] or 0) + 1
  log.info("annotation", {
    annotation = a.id,
    project = project,
    skipped = a.was_cancelled,
    regions = type(a.result) == "table" and #a.result or 0,
    seen_in_project = per_project[project],
  })
end)

on("*", function(ev, ctx)
  log.debug("event", { action = ctx.action, from = ctx.remote })
end)
