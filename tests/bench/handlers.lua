-- The handlers scripts/bench serves: the per-action work the peer benchmark gives nginx-lua
-- and node (touch the decoded event, count it per action), so that instructions per event
-- measure luahook's path and not a handler's.
local seen = {}

local function count(ev)
    seen[ev.action] = (seen[ev.action] or 0) + 1
end

on("ANNOTATION_CREATED", function(ev) count(ev); return #ev.annotation.result end)
on("ANNOTATION_UPDATED", function(ev) count(ev); return #ev.annotation.result end)
on("ANNOTATIONS_DELETED", function(ev) count(ev); return #ev.annotations end)
on("TASKS_CREATED", function(ev) count(ev); return #ev.tasks end)
on("TASKS_DELETED", function(ev) count(ev); return #ev.tasks end)
on("PROJECT_UPDATED", function(ev) count(ev); return ev.project.id end)
