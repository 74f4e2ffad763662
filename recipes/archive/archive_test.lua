-- Run: luahook test recipes/archive
-- Three instances on three fresh folders: masked, raw, and one project with small files.
local function tempdir()
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir -m 700 '" .. dir .. "'"))
  return dir
end
local MASKED, RAW, SMALL = tempdir(), tempdir(), tempdir()

use("archive", { dir = MASKED })
use("archive", { dir = RAW .. "/", raw = true, actions = { "PROJECT_UPDATED" } }, { as = "raw" })
use("archive", { dir = SMALL, projects = { 8 }, max_bytes = 1024 }, { as = "small" })

local function lines(path)
  local out = {}
  local f = io.open(path)
  if not f then return out end
  for line in f:lines() do out[#out + 1] = line end
  f:close()
  return out
end

-- The day of the archive's file names: the one of the events' received_at.
local function day()
  return os.date("!%Y-%m-%d", math.floor(clock.now()))
end

local BODY = '{"action": "PROJECT_UPDATED", "project": {"id": 8, "title": "Faces", '
  .. '"token": "tok-9f31c07a", "task_data_password": "hunter2", "labels": []}}'

test("one JSON line per event in the project's file of the day, secrets masked", function()
  local r1 = fire(sample("ANNOTATION_CREATED"))
  local r2 = fire(BODY)
  local file7 = ("%s/project-7-%s.jsonl"):format(MASKED, day())
  local l = lines(file7)
  eq(#l, 1)
  local rec = json.decode(l[1])
  eq(rec.id, r1.id)
  eq(rec.action, "ANNOTATION_CREATED")
  eq(rec.event.annotation.id, 501)
  eq(rec.event.project.token, "***")
  local l8 = lines(("%s/project-8-%s.jsonl"):format(MASKED, day()))
  eq(#l8, 1)
  nok(l8[1]:find("hunter2", 1, true))
  nok(l8[1]:find("tok-9f31c07a", 1, true))
  eq(json.decode(l8[1]).event.project.task_data_password, "***")
  ok(l8[1]:find('"labels":[]', 1, true), "an empty list stays a list")
  eq(json.decode(l8[1]).id, r2.id)
  for _, rec in ipairs(logs()) do
    nok(json.encode(rec):find("hunter2", 1, true), "no secret in the log")
  end
end)

test("raw keeps the exact bytes, on one line", function()
  fire(BODY)
  fire('{"action": "PROJECT_UPDATED",\n "project": {"id": 9}}')
  local l = lines(("%s/project-8-%s.jsonl"):format(RAW, day()))
  eq(l[#l], ('{"id":"%s","received_at":%s,"action":"PROJECT_UPDATED","event":%s}')
     :format(json.decode(l[#l]).id, json.encode(json.decode(l[#l]).received_at), BODY))
  eq(json.decode(lines(("%s/project-9-%s.jsonl"):format(RAW, day()))[1]).event.project.id, 9)
end)

test("a body without a project goes to project-none", function()
  fire('{"action": "REVIEW_CREATED"}')
  eq(json.decode(lines(("%s/project-none-%s.jsonl"):format(MASKED, day()))[1]).event,
     { action = "REVIEW_CREATED" })
end)

test("a full file is rotated to .1, then .2", function()
  local base = ("%s/project-8-%s"):format(SMALL, day())
  local before = #lines(base .. ".jsonl")
  for _ = 1, 12 do fire(BODY) end
  local paths = { base .. ".jsonl" }
  for n = 1, 100 do
    local f = io.open(("%s.%d.jsonl"):format(base, n))
    if not f then break end
    f:close()
    paths[#paths + 1] = ("%s.%d.jsonl"):format(base, n)
  end
  ok(#paths >= 3, "rotated at least twice")
  local total = 0
  for _, path in ipairs(paths) do
    local f = io.open(path)
    ok(f:seek("end") <= 1024, path)
    f:close()
    total = total + #lines(path)
  end
  eq(total, 12 + before, "every line kept")
  eq(#lines(("%s/project-7-%s.jsonl"):format(SMALL, day())), 0, "small only takes project 8")
end)

test("a missing folder fails the run", function()
  os.execute("rm -rf '" .. MASKED .. "'")
  local r = fire(sample("ANNOTATION_CREATED"), { allow_failure = true })
  nok(r.ok)
  for _, run in ipairs(r) do
    if run.id == "archive#write" then match(run.error, "^cannot open the archive: ") end
  end
  os.execute("rm -rf '" .. RAW .. "' '" .. SMALL .. "'")
end)
