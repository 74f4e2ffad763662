--[[
labelstudio - helpers over what Label Studio's webhooks really send, and a REST client.

  local ls = require "labelstudio"

Every helper takes a decoded event body and never raises on a body that lacks what it
looks for (send_payload=false bodies carry nothing but "action", deletes carry ids only,
fields may be json.null): it answers an empty list, nil or false instead. The client is in
labelstudio/client.lua.
]]

local M = {}

local null = json.null

-- v when it is a table other than json.null, else nil
local function tbl(v)
  if type(v) == "table" and v ~= null then return v end
  return nil
end

-- v when it is an integer (or a float holding one), else nil
local function int(v)
  if math.type(v) == "integer" then return v end
  if math.type(v) == "float" then return math.tointeger(v) end
  return nil
end

-- A list holding v: v itself when it is a list, {v} when it is one object, {} otherwise.
local function as_list(v)
  v = tbl(v)
  if v == nil then return {} end
  if v[1] ~= nil or next(v) == nil then return v end
  return { v }
end

local function check_event(ev, fn)
  if type(ev) ~= "table" then
    error(string.format("bad argument #1 to '%s' (event table expected, got %s)", fn,
                        ev == nil and "no value" or type(ev)), 3)
  end
end

--- tasks(ev) -> list of the task objects the body carries (always a list, maybe empty).
-- TASKS_CREATED/TASKS_DELETED: `tasks` (ids only for a delete); ANNOTATION_CREATED/UPDATED:
-- {task}; ANNOTATIONS_CREATED: its `task` list, each task once (the list repeats a task
-- that got several annotations). Other actions: {}.
function M.tasks(ev)
  check_event(ev, "tasks")
  local out = {}
  if ev.tasks ~= nil then
    for _, t in ipairs(as_list(ev.tasks)) do
      if tbl(t) then out[#out + 1] = t end
    end
    return out
  end
  local seen = {}
  for _, t in ipairs(as_list(ev.task)) do
    if tbl(t) then
      local id = int(t.id)
      if id == nil or not seen[id] then
        out[#out + 1] = t
        if id ~= nil then seen[id] = true end
      end
    end
  end
  return out
end

--- annotations(ev) -> list of { annotation = a, task = t|nil }, in the body's order.
-- ANNOTATION_CREATED/UPDATED: one, with the body's `task`; ANNOTATIONS_CREATED: the list
-- under the singular key `annotation`, each with its task from the parallel `task` list
-- (matched by the annotation's `task` id, else by position); ANNOTATIONS_DELETED: the
-- `annotations` list, ids only and task nil (Label Studio does not say which task).
function M.annotations(ev)
  check_event(ev, "annotations")
  local out = {}
  if ev.annotations ~= nil then
    for _, a in ipairs(as_list(ev.annotations)) do
      if tbl(a) then out[#out + 1] = { annotation = a } end
    end
    return out
  end
  local anns = as_list(ev.annotation)
  local tasks = as_list(ev.task)
  local by_id = {}
  for _, t in ipairs(tasks) do
    local id = tbl(t) and int(t.id)
    if id ~= nil and by_id[id] == nil then by_id[id] = t end
  end
  for i, a in ipairs(anns) do
    if tbl(a) then
      local tid, t = int(a.task), nil
      if tid ~= nil then t = by_id[tid] else t = tbl(tasks[i]) end
      out[#out + 1] = { annotation = a, task = t }
    end
  end
  return out
end

--- project_id(ev) -> the project's id (an integer), or nil when the body names none:
-- a send_payload=false body, the project-less TASKS_DELETED of "delete all tasks".
-- Looks at `project` (the object, or an id), then at the annotation, task and label link.
function M.project_id(ev)
  check_event(ev, "project_id")
  local p = ev.project
  if tbl(p) then
    local id = int(p.id)
    if id ~= nil then return id end
  elseif int(p) then
    return int(p)
  end
  for _, key in ipairs({ "annotation", "task", "tasks", "label_link" }) do
    for _, x in ipairs(as_list(ev[key])) do
      local id = tbl(x) and int(x.project)
      if id ~= nil then return id end
    end
  end
  return nil
end

-- The annotation of `a`: an annotation, or an entry of annotations(ev).
local function annotation_of(a, fn)
  if type(a) ~= "table" then
    error(string.format("bad argument #1 to '%s' (annotation table expected, got %s)", fn,
                        a == nil and "no value" or type(a)), 3)
  end
  if tbl(a.annotation) and a.id == nil then return a.annotation end
  return a
end

--- is_skip(annotation) -> true when the annotator skipped the task (was_cancelled: Label
-- Studio records a skip as an annotation with an empty result).
function M.is_skip(a)
  a = annotation_of(a, "is_skip")
  return a.was_cancelled == true
end

--- labels(annotation) -> list of the labels and choices chosen in the annotation's result,
-- each once, in the order they first appear; and a table from_name -> list of the same.
-- Reads every region's value.choices and value.<kind>labels (labels, rectanglelabels,
-- polygonlabels, ...). Text areas, ratings, numbers and taxonomies are not labels.
function M.labels(a)
  a = annotation_of(a, "labels")
  local all, by_name, seen = {}, {}, {}
  for _, region in ipairs(as_list(a.result)) do
    local value = tbl(region) and tbl(region.value)
    if value then
      local keys = {}
      for k, v in pairs(value) do
        if type(k) == "string" and (k == "choices" or k:match("labels$")) and tbl(v) then
          keys[#keys + 1] = k
        end
      end
      table.sort(keys) -- one order from run to run
      local name = type(region.from_name) == "string" and region.from_name or ""
      for _, k in ipairs(keys) do
        for _, label in ipairs(value[k]) do
          if type(label) == "string" then
            if not seen[label] then
              seen[label] = true
              all[#all + 1] = label
            end
            local list = by_name[name]
            if list == nil then
              list = {}
              by_name[name] = list
            end
            local dup = false
            for _, l in ipairs(list) do
              if l == label then dup = true break end
            end
            if not dup then list[#list + 1] = label end
          end
        end
      end
    end
  end
  return all, by_name
end

-- The project stats Label Studio adds to every full project object, by our name.
local STATS = {
  tasks = "task_number",
  finished = "finished_task_number",
  with_annotations = "num_tasks_with_annotations",
  annotations = "total_annotations_number",
  useful_annotations = "useful_annotation_number",
  skipped = "skipped_annotations_number",
  ground_truth = "ground_truth_number",
  predictions = "total_predictions_number",
}

--- progress(ev) -> the project's task counts as the body carries them, or nil when its
-- project object has none (ids-only PROJECT_DELETED, send_payload=false, old versions):
--   { project = id, tasks, finished, with_annotations, annotations, useful_annotations,
--     skipped, ground_truth, predictions, fraction }
-- Only the counts present are set. fraction = finished / tasks (0..1), nil when tasks is
-- 0 or unknown. The counts are Label Studio's at send time: deliveries may arrive out of
-- order, so a count may be older than one already seen.
function M.progress(ev)
  check_event(ev, "progress")
  local p = tbl(ev.project)
  if p == nil then return nil end
  local out, any = { project = int(p.id) }, false
  for name, key in pairs(STATS) do
    local n = int(p[key])
    if n ~= nil then
      out[name] = n
      any = true
    end
  end
  if not any then return nil end
  if out.tasks and out.finished and out.tasks > 0 then
    out.fraction = out.finished / out.tasks
  end
  return out
end

local COMPLETING = { ANNOTATION_CREATED = true, ANNOTATION_UPDATED = true,
                     ANNOTATIONS_CREATED = true }

--- is_task_complete(ev) -> done, tasks: whether the event leaves a task complete, and the
-- list of those tasks. Label Studio sends no "task completed" event; its own notion is the
-- task's is_labeled flag (set once the task has its `overlap` annotations, and what
-- finished_task_number counts; whether a skip counts depends on the Label Studio version
-- and the project's skip queue, so the flag the payload carries decides). So a
-- task is complete here when an annotation event (ANNOTATION_CREATED, ANNOTATION_UPDATED,
-- ANNOTATIONS_CREATED) carries it with is_labeled true. ANNOTATIONS_CREATED may carry its
-- tasks as they were before its annotations (total_annotations lower than the annotations
-- it brings for the task): then the task is complete when total_annotations plus those
-- reach its overlap (skips not counted). A skip completes a task when Label Studio's flag
-- says so (the real skipped body in tests/fixtures does; is_skip tells them apart).
-- Every later update of a complete task says so again: remember what you announced
-- (store). A body without tasks says false.
function M.is_task_complete(ev)
  check_event(ev, "is_task_complete")
  local done = {}
  if not COMPLETING[ev.action] then return false, done end
  -- the event's own submitted annotations per task
  local new = {}
  for _, p in ipairs(M.annotations(ev)) do
    local id = p.task and int(p.task.id)
    if id and p.annotation.was_cancelled ~= true then new[id] = (new[id] or 0) + 1 end
  end
  for _, t in ipairs(M.tasks(ev)) do
    local id, total, overlap = int(t.id), int(t.total_annotations), int(t.overlap)
    local n = id and new[id] or 0
    if total and overlap and total < n then
      -- a snapshot from before these annotations (ANNOTATIONS_CREATED sends one): count them
      if total + n >= overlap then done[#done + 1] = t end
    elseif t.is_labeled == true then
      done[#done + 1] = t
    end
  end
  return #done > 0, done
end

M.client = require("labelstudio.client").new

return M
