-- counts.lua: count annotations per project in memory, and log a summary line per
-- project every EVERY_EVENTS events, or every EVERY_SECONDS when something changed.
--
--   2026-11-26T17:03:03.123Z info annotation counts script=counts.lua:35 project=7 created=12 skipped=1 deleted=2
--
-- The counts live in this script's VM: a reload (SIGHUP, --watch) or a restart starts
-- them again from zero. Use /metrics, or archive.lua, for anything that must last.
--
-- Try it: luahook fire examples/counts.lua --sample ANNOTATIONS_CREATED --log-level debug

local EVERY_EVENTS = 100
local EVERY_SECONDS = 300

local counts = {} -- [project id] = { created = n, skipped = n, deleted = n }
local seen = 0    -- events counted since the last summary

local function bump(project, what, n)
  if math.type(project) ~= "integer" then return end -- no project in the body
  local c = counts[project]
  if not c then
    c = { created = 0, skipped = 0, deleted = 0 }
    counts[project] = c
  end
  c[what] = c[what] + n
end

local function summary()
  local projects = {}
  for project in pairs(counts) do
    projects[#projects + 1] = project
  end
  table.sort(projects)
  for _, project in ipairs(projects) do
    local c = counts[project]
    log.info("annotation counts", {
      project = project, created = c.created, skipped = c.skipped, deleted = c.deleted,
    })
  end
  seen = 0
end

local function counted()
  seen = seen + 1
  if seen >= EVERY_EVENTS then
    summary()
  end
end

-- The project of an event: the body's project object, else the annotation's own field
-- (null for very old annotations).
local function project_of(ev, annotation)
  if type(ev.project) == "table" then
    return ev.project.id
  end
  return annotation.project
end

on("ANNOTATION_CREATED", function(ev, ctx)
  local a = ev.annotation
  if type(a) ~= "table" then return end -- "Send payload" off: nothing to count
  bump(project_of(ev, a), a.was_cancelled and "skipped" or "created", 1)
  counted()
end)

-- A skip of an existing annotation arrives as an update with was_cancelled = true.
on("ANNOTATION_UPDATED", function(ev, ctx)
  local a = ev.annotation
  if type(a) ~= "table" or not a.was_cancelled then return end
  bump(project_of(ev, a), "skipped", 1)
  counted()
end)

-- "Create annotations from predictions" in the data manager: the key is `annotation`,
-- singular, but it holds a list.
on("ANNOTATIONS_CREATED", function(ev, ctx)
  if type(ev.annotation) ~= "table" then return end
  for _, a in ipairs(ev.annotation) do
    bump(project_of(ev, a), a.was_cancelled and "skipped" or "created", 1)
  end
  counted()
end)

-- Deletions carry ids only, under the plural key `annotations`.
on("ANNOTATIONS_DELETED", function(ev, ctx)
  if type(ev.annotations) ~= "table" or type(ev.project) ~= "table" then return end
  bump(ev.project.id, "deleted", #ev.annotations)
  counted()
end)

-- Started at load time; a quiet period logs nothing.
timer.every(EVERY_SECONDS, function()
  if seen > 0 then
    summary()
  end
end)
