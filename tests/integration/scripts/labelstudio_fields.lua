-- Hand-written checks of what Label Studio's events look like to a handler: the fields an
-- operator's script really uses, with their Lua types. The test runs the server with
-- --ack handled and sends each fixture with an X-Fixture header naming the file; a 200
-- proves that every assertion below held, a 500 lists the one that broke.
--
-- Registered for a list of actions (one on() call), so it also proves list registration.

local HASH = -3917359123487098234          -- label_config_hash of the sentiment project
local CAFE = "Caf\u{E9} au lait was cold \u{1F61E}"  -- "Caf\u00e9 ... \ud83d\ude1e" decoded

local function is_int(v, want)
  return math.type(v) == "integer" and (want == nil or v == want)
end

local function check_project(p)
  assert(type(p) == "table", "project is not a table")
  assert(is_int(p.id, 7), "project.id is not integer 7: " .. tostring(p.id))
  assert("/api/projects/" .. p.id == "/api/projects/7", "project id does not concatenate as 7")
end

local function check_full_project(p, hash)
  check_project(p)
  assert(is_int(p.label_config_hash, hash or HASH),
         "label_config_hash not exact: " .. tostring(p.label_config_hash))
  assert(p.task_data_login == json.null, "task_data_login is not json.null")
  assert(p.task_data_password == json.null, "task_data_password is not json.null")
  assert(p.pinned_at == json.null, "pinned_at is not json.null")
  assert(p.show_skip_button == true, "show_skip_button is not true")
  assert(p.is_draft == false, "is_draft is not false")
  assert(p.token == "9f31c07a5be28d4e", "project.token differs")
  assert(type(p.parsed_label_config) == "table", "parsed_label_config is not a table")
end

local function check_sentiment_config(p)
  local s = p.parsed_label_config.sentiment
  assert(s.type == "Choices", "parsed_label_config.sentiment.type")
  assert(#s.labels == 3 and s.labels[1] == "Positive" and s.labels[3] == "Neutral", "labels")
  assert(#s.to_name == 1 and s.to_name[1] == "text", "to_name")
  assert(s.inputs[1].valueType == json.null, "inputs[1].valueType is not json.null")
  assert(p.label_config:find("\n", 1, true), "label_config lost its \\n escapes")
  assert(p.label_config:sub(1, 6) == "<View>", "label_config does not start with <View>")
end

local function check_task(t, id)
  assert(type(t) == "table", "task is not a table")
  assert(is_int(t.id, id), "task.id is not integer " .. id .. ": " .. tostring(t.id))
  assert("/api/tasks/" .. t.id == "/api/tasks/" .. string.format("%d", id), "task id concat")
  assert(is_int(t.project, 7), "task.project is not integer 7")
  assert(type(t.data) == "table", "task.data is not a table")
  assert(type(t.meta) == "table" and next(t.meta) == nil, "task.meta is not an empty table")
  assert(t.precomputed_agreement == json.null, "precomputed_agreement is not json.null")
  assert(type(t.comment_authors) == "table" and #t.comment_authors == 0, "comment_authors")
end

local function check_annotation(a, id, task)
  assert(is_int(a.id, id), "annotation.id is not integer " .. id .. ": " .. tostring(a.id))
  assert(is_int(a.task, task), "annotation.task is not integer " .. task)
  assert(is_int(a.project, 7), "annotation.project is not integer 7")
  assert(type(a.result) == "table", "annotation.result is not a table")
  assert(a.draft_created_at == json.null, "draft_created_at is not json.null")
  assert(a.parent_annotation == json.null, "parent_annotation is not json.null")
end

local checks = {}

checks["TASKS_CREATED.json"] = function(ev)
  assert(#ev.tasks == 3, "#ev.tasks is " .. #ev.tasks)
  check_task(ev.tasks[1], 101)
  check_task(ev.tasks[2], 102)
  check_task(ev.tasks[3], 103)
  assert(ev.tasks[1].data.text == "The delivery was fast and the packaging was great.", "text 1")
  assert(ev.tasks[2].data.text == CAFE, "surrogate pair / \\u00e9 not decoded to UTF-8: " ..
         string.format("%q", ev.tasks[2].data.text))
  assert(#ev.tasks[2].data.text == 27, "UTF-8 length of the cafe text is " .. #ev.tasks[2].data.text)
  assert(utf8.len(ev.tasks[2].data.text) == 23, "not valid UTF-8 / wrong code point count")
  assert(is_int(ev.tasks[1].file_upload, 12), "file_upload")
  assert(ev.tasks[3].updated_by == json.null, "updated_by is not json.null")
  check_full_project(ev.project)
  check_sentiment_config(ev.project)
end

checks["TASKS_CREATED.single.json"] = function(ev)
  assert(#ev.tasks == 1, "#ev.tasks is " .. #ev.tasks)
  check_task(ev.tasks[1], 104)
  assert(ev.tasks[1].file_upload == json.null, "file_upload is not json.null")
  assert(ev.tasks[1].data.text == "Created through POST /api/tasks", "text")
  check_full_project(ev.project)
end

checks["TASKS_CREATED.storage.json"] = function(ev)
  assert(#ev.tasks == 1, "#ev.tasks is " .. #ev.tasks)
  check_task(ev.tasks[1], 105)
  assert(ev.tasks[1].data.image == "s3://acme-labeling/inbox/img_000105.jpg", "image url")
  check_full_project(ev.project)
end

checks["TASKS_CREATED.nopayload.json"] = function(ev)
  assert(ev.tasks == nil and ev.project == nil, "an action-only body grew fields")
end

checks["TASKS_DELETED.json"] = function(ev)
  assert(#ev.tasks == 2, "#ev.tasks is " .. #ev.tasks)
  assert(is_int(ev.tasks[1].id, 102) and is_int(ev.tasks[2].id, 103), "deleted task ids")
  check_full_project(ev.project)
end

checks["TASKS_DELETED.all-tasks.json"] = function(ev)
  assert(#ev.tasks == 3, "#ev.tasks is " .. #ev.tasks)
  for i, id in ipairs({101, 102, 103}) do
    assert(is_int(ev.tasks[i].id, id), "tasks[" .. i .. "].id")
  end
  assert(ev.project == nil, "project must be absent (nil), it is " .. tostring(ev.project))
end

checks["ANNOTATION_CREATED.json"] = function(ev)
  check_annotation(ev.annotation, 501, 101)
  assert(#ev.annotation.result == 1, "#result")
  assert(ev.annotation.result[1].value.choices[1] == "Positive", "choice")
  assert(ev.annotation.was_cancelled == false, "was_cancelled")
  assert(math.type(ev.annotation.lead_time) == "float" and ev.annotation.lead_time == 12.481,
         "lead_time is not float 12.481: " .. tostring(ev.annotation.lead_time))
  assert(ev.annotation.parent_prediction == json.null, "parent_prediction")
  check_task(ev.task, 101)
  check_full_project(ev.project)
end

checks["ANNOTATION_CREATED.skipped.json"] = function(ev)
  check_annotation(ev.annotation, 502, 103)
  assert(ev.annotation.was_cancelled == true, "skipped annotation must have was_cancelled true")
  assert(type(ev.annotation.result) == "table" and #ev.annotation.result == 0, "empty result")
  assert(ev.annotation.last_action == "skipped", "last_action")
  assert(is_int(ev.annotation.result_count, 0), "result_count")
  check_full_project(ev.project)
end

checks["ANNOTATION_CREATED.nopayload.json"] = function(ev)
  assert(ev.annotation == nil and ev.project == nil, "an action-only body grew fields")
end

checks["ANNOTATION_UPDATED.json"] = function(ev)
  check_annotation(ev.annotation, 501, 101)
  assert(ev.annotation.result[1].value.choices[1] == "Negative", "choice")
  assert(ev.annotation.updated_at == "2024-05-02T09:40:02.778311Z", "updated_at")
  assert(math.type(ev.annotation.lead_time) == "float" and ev.annotation.lead_time == 31.77,
         "lead_time")
  check_full_project(ev.project)
end

checks["ANNOTATIONS_CREATED.json"] = function(ev)
  -- singular key holding a list; task is a list too, same order
  assert(#ev.annotation == 2, "#ev.annotation is " .. #ev.annotation)
  assert(#ev.task == #ev.annotation, "#ev.task ~= #ev.annotation")
  check_annotation(ev.annotation[1], 601, 102)
  assert(is_int(ev.annotation[1].parent_prediction, 9001), "parent_prediction 9001")
  assert(ev.annotation[1].bulk_created == true, "bulk_created")
  for i, a in ipairs(ev.annotation) do
    assert(is_int(ev.task[i].id, a.task), "task[" .. i .. "] does not match annotation task")
  end
  check_full_project(ev.project)
end

checks["ANNOTATIONS_DELETED.json"] = function(ev)
  assert(#ev.annotations == 1 and is_int(ev.annotations[1].id, 501), "annotations")
  check_full_project(ev.project)
end

checks["PROJECT_CREATED.json"] = function(ev)
  check_full_project(ev.project, 5740354900026072187)
  assert(ev.project.title == "New Project #7", "title")
  assert(type(ev.project.parsed_label_config) == "table"
         and next(ev.project.parsed_label_config) == nil, "parsed_label_config is not empty")
  assert(ev.project.label_config == "<View></View>", "label_config")
end

checks["PROJECT_UPDATED.json"] = function(ev)
  check_full_project(ev.project)
  check_sentiment_config(ev.project)
  assert(ev.project.title == "Sentiment batch 2024-05", "title")
end

checks["PROJECT_DELETED.json"] = function(ev)
  check_project(ev.project)
  local n = 0
  for _ in pairs(ev.project) do n = n + 1 end
  assert(n == 1, "deleted project should carry only its id, has " .. n .. " keys")
end

checks["PROJECT_DELETED.nopayload.json"] = function(ev)
  assert(ev.project == nil, "an action-only body grew fields")
end

checks["LABEL_LINK_CREATED.json"] = function(ev)
  assert(#ev.label_link == 2, "#label_link")
  assert(is_int(ev.label_link[1].id, 31) and is_int(ev.label_link[2].label, 13), "links")
  assert(ev.label_link[2].from_name == "sentiment", "from_name")
  check_full_project(ev.project)
end

checks["LABEL_LINK_UPDATED.json"] = function(ev)
  assert(is_int(ev.label_link.id, 31), "label_link.id")
  assert(ev.label_link.from_name == "sentiment_v2", "from_name")
  assert(type(ev.label) == "table", "label is not a table")
  check_full_project(ev.project)
end

checks["LABEL_LINK_DELETED.json"] = function(ev)
  assert(is_int(ev.label_link.id, 32), "label_link.id")
  assert(ev.label_link.project == nil, "label_link.project should be absent")
  check_full_project(ev.project)
end

checks["START_TRAINING.json"] = function(ev)
  check_full_project(ev.project)
  check_sentiment_config(ev.project)
end

checks["REVIEW_CREATED.nopayload.json"] = function(ev)
  local n = 0
  for _ in pairs(ev) do n = n + 1 end
  assert(n == 1, "action-only body has " .. n .. " keys")
end

on({
  "TASKS_CREATED", "TASKS_DELETED", "ANNOTATION_CREATED", "ANNOTATION_UPDATED",
  "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED", "PROJECT_CREATED", "PROJECT_UPDATED",
  "PROJECT_DELETED", "LABEL_LINK_CREATED", "LABEL_LINK_UPDATED", "LABEL_LINK_DELETED",
  "START_TRAINING", "REVIEW_CREATED",
}, function(ev, ctx)
  local name = ctx.headers["x-fixture"]
  local check = checks[name]
  assert(check, "no hand-written check for fixture " .. tostring(name))
  assert(type(ev.action) == "string" and ev.action == ctx.action, "ev.action ~= ctx.action")
  check(ev)
end)
