-- Run: luahook test examples/archive_test.lua
handlers("archive.lua")

-- A fresh empty folder for ARCHIVE_DIR.
local function tempdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -m 700 '" .. dir .. "'"))
  mock.env("ARCHIVE_DIR", dir)
  return dir
end

-- The file the handler last wrote to, from its debug log line.
local function archive_file()
  local file
  for _, rec in ipairs(logs("debug")) do
    if rec.msg == "archived" then file = rec.fields.file end
  end
  return file
end

local function read_lines(path)
  local lines = {}
  for line in io.lines(path) do
    lines[#lines + 1] = line
  end
  return lines
end

local function cleanup(dir, file)
  if file then os.remove(file) end
  os.remove(dir)
end

test("each event is one JSON line in the day's file", function()
  local dir = tempdir()
  local r1 = fire(sample("ANNOTATION_CREATED"))
  local r2 = fire(sample("TASKS_DELETED"))
  ok(r1.ok and r2.ok)

  local file = archive_file()
  match(file, "/events%-%d%d%d%d%-%d%d%-%d%d%.jsonl$")
  eq(file:sub(1, #dir + 1), dir .. "/")
  local lines = read_lines(file)
  eq(#lines, 2)

  local first = json.decode(lines[1])
  eq(first.id, r1.id)
  eq(first.action, "ANNOTATION_CREATED")
  eq(first.event.annotation.id, 501)
  eq(first.event.project.title, "Sentiment batch 2024-05")
  eq(json.decode(lines[2]).action, "TASKS_DELETED")
  cleanup(dir, file)
end)

test("the project's secrets are not archived, nor logged", function()
  local dir = tempdir()
  local r = fire({
    action = "PROJECT_UPDATED",
    project = { id = 8, title = "Faces", token = "tok-9f31c07a", task_data_password = "hunter2" },
  })
  ok(r.ok)
  local file = archive_file()
  local line = read_lines(file)[1]
  nok(line:find("tok-9f31c07a", 1, true), "no token in the archive")
  nok(line:find("hunter2", 1, true), "no password in the archive")
  eq(json.decode(line).event.project, { id = 8, title = "Faces" })
  for _, rec in ipairs(logs()) do
    nok(json.encode(rec):find("hunter2", 1, true), "no password in the log")
  end
  cleanup(dir, file)
end)

test("a body without payload is archived too", function()
  local dir = tempdir()
  ok(fire('{"action": "REVIEW_CREATED"}').ok)
  local file = archive_file()
  eq(json.decode(read_lines(file)[1]).event, { action = "REVIEW_CREATED" })
  cleanup(dir, file)
end)

test("a missing folder fails the handler", function()
  local dir = tempdir()
  mock.env("ARCHIVE_DIR", dir .. "/missing")
  local r = fire(sample("ANNOTATION_CREATED"), { allow_failure = true })
  nok(r.ok)
  match(r[1].error, "^cannot open the archive: .*No such file or directory")
  cleanup(dir)
end)
