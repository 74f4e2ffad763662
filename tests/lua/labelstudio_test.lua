-- require "labelstudio": the helpers over every sample and every real body of
-- tests/fixtures/labelstudio, and the REST client against mocks (tokens, retries, paging).
local ls = require "labelstudio"

handlers("handlers/labelstudio/client.lua")

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

local function fixture(name)
  local f = assert(io.open(here .. "../fixtures/labelstudio/" .. name .. ".json", "rb"))
  local ev = assert(json.decode(f:read("a")))
  f:close()
  return ev
end

local function ids(list)
  local out = {}
  for i, t in ipairs(list) do out[i] = t.id end
  return out
end

-- What each helper says of a body: task ids, annotation id -> task id pairs, project id,
-- finished/tasks, the complete tasks' ids.
local function summary(ev)
  local pairs_ = {}
  for i, p in ipairs(ls.annotations(ev)) do
    pairs_[i] = { p.annotation.id, p.task and p.task.id or false }
  end
  local prog = ls.progress(ev)
  local done, tasks = ls.is_task_complete(ev)
  eq(done, #tasks > 0)
  return {
    tasks = ids(ls.tasks(ev)),
    annotations = pairs_,
    project = ls.project_id(ev) or false,
    progress = prog and { prog.finished, prog.tasks } or false,
    complete = ids(tasks),
  }
end

local NONE = { tasks = {}, annotations = {}, project = false, progress = false, complete = {} }
local P7 = { 1, 3 }

local function only(t)
  local out = {}
  for k, v in pairs(NONE) do out[k] = v end
  for k, v in pairs(t) do out[k] = v end
  return out
end

local EXPECTED = {
  ANNOTATION_CREATED = only{ tasks = { 101 }, annotations = { { 501, 101 } }, project = 7,
                             progress = P7, complete = { 101 } },
  ANNOTATION_UPDATED = only{ tasks = { 101 }, annotations = { { 501, 101 } }, project = 7,
                             progress = P7, complete = { 101 } },
  -- the singular key holds a list; the parallel task list is a snapshot from before
  ANNOTATIONS_CREATED = only{ tasks = { 102, 103 }, annotations = { { 601, 102 }, { 602, 103 } },
                              project = 7, progress = { 3, 3 }, complete = { 102, 103 } },
  ANNOTATIONS_DELETED = only{ annotations = { { 501, false } }, project = 7, progress = { 0, 3 } },
  TASKS_CREATED = only{ tasks = { 101, 102, 103 }, project = 7, progress = { 0, 3 } },
  TASKS_DELETED = only{ tasks = { 102, 103 }, project = 7, progress = { 1, 1 } },
  PROJECT_CREATED = only{ project = 7, progress = { 0, 0 } },
  PROJECT_UPDATED = only{ project = 7, progress = P7 },
  PROJECT_DELETED = only{ project = 7 }, -- {"id": 7} only: no counts
  LABEL_LINK_CREATED = only{ project = 7, progress = P7 },
  LABEL_LINK_UPDATED = only{ project = 7, progress = P7 },
  LABEL_LINK_DELETED = only{ project = 7, progress = P7 },
  START_TRAINING = only{ project = 7, progress = P7 },
  REVIEW_CREATED = NONE, REVIEW_UPDATED = NONE, REVIEWS_DELETED = NONE,
}

test("require: one module, its part by its dotted name; the binary's own files are not modules", function()
  ok(require("labelstudio") == ls, "loaded once")
  ok(require("labelstudio.client").new == ls.client)
  for _, name in ipairs({ "luahook.package", "luahook.testing", "samples.TASKS_CREATED" }) do
    local okay, err = pcall(require, name)
    nok(okay, name)
    match(err, "module '" .. name:gsub("%.", "%%.") .. "' not found")
  end
end)

test("a module of lib/ requires it too, and gets the same module", function()
  fire(sample("TASKS_CREATED"))
  eq(logs("info")[1].fields, { project = 7, tasks = 3, same = true })
end)

test("every helper over every sample body", function()
  local n = 0
  for action, want in pairs(EXPECTED) do
    eq(summary(sample(action)), want, action)
    n = n + 1
  end
  eq(n, 16)
end)

test("every helper over the real bodies of tests/fixtures/labelstudio", function()
  local want = {
    ["ANNOTATION_CREATED.skipped"] = only{ tasks = { 103 }, annotations = { { 502, 103 } },
                                           project = 7, progress = { 2, 3 }, complete = { 103 } },
    ["TASKS_CREATED.single"] = only{ tasks = { 104 }, project = 7, progress = { 1, 4 } },
    ["TASKS_CREATED.storage"] = only{ tasks = { 105 }, project = 7, progress = { 1, 5 } },
    -- "delete all tasks of a project": no project key at all
    ["TASKS_DELETED.all-tasks"] = only{ tasks = { 101, 102, 103 } },
    ["ANNOTATION_CREATED.nopayload"] = NONE,
    ["TASKS_CREATED.nopayload"] = NONE,
    ["PROJECT_DELETED.nopayload"] = NONE,
    ["REVIEW_CREATED.nopayload"] = NONE,
  }
  for action, w in pairs(EXPECTED) do
    if not action:match("^REVIEW") then want[action] = w end
  end
  for name, w in pairs(want) do eq(summary(fixture(name)), w, name) end
end)

test("is_skip and labels over real annotations", function()
  local skipped = fixture("ANNOTATION_CREATED.skipped")
  eq(ls.is_skip(skipped.annotation), true)
  eq(ls.is_skip(ls.annotations(skipped)[1]), true) -- an entry of annotations() works too
  eq(ls.labels(skipped.annotation), {})
  local created = fixture("ANNOTATION_CREATED")
  eq(ls.is_skip(created.annotation), false)
  local all, by_name = ls.labels(created.annotation)
  eq(all, { "Positive" })
  eq(by_name, { sentiment = { "Positive" } })
  local many = {}
  for _, p in ipairs(ls.annotations(fixture("ANNOTATIONS_CREATED"))) do
    many[#many + 1] = ls.labels(p)[1]
  end
  eq(many, { "Negative", "Neutral" })
end)

test("labels: every *labels kind and choices, each once; text and ratings are not labels", function()
  local a = { was_cancelled = false, result = {
    { from_name = "box", type = "rectanglelabels", value = { x = 1, rectanglelabels = { "Car" } } },
    { from_name = "box", type = "rectanglelabels", value = { rectanglelabels = { "Car", "Bus" } } },
    { from_name = "ner", type = "labels", value = { start = 0, ["end"] = 4, labels = { "PER" } } },
    { from_name = "kind", type = "choices", value = { choices = { "Urban" } } },
    { from_name = "note", type = "textarea", value = { text = { "free text" } } },
    { from_name = "stars", type = "rating", value = { rating = 4 } },
    json.null, { from_name = "x" },
  } }
  local all, by_name = ls.labels(a)
  eq(all, { "Car", "Bus", "PER", "Urban" })
  eq(by_name, { box = { "Car", "Bus" }, ner = { "PER" }, kind = { "Urban" } })
  eq(ls.labels({ result = json.null }), {})
  eq(ls.labels({}), {})
end)

test("project_id: from the annotation or task when project is not an object", function()
  eq(ls.project_id({ action = "X", project = 12 }), 12)
  eq(ls.project_id({ action = "X", annotation = { id = 1, project = 9 } }), 9)
  eq(ls.project_id({ action = "X", tasks = { { id = 1, project = json.null }, { id = 2, project = 4 } } }), 4)
  eq(ls.project_id({ action = "X", project = json.null }), nil)
  eq(ls.project_id({ action = "TASKS_DELETED", tasks = { { id = 1 } } }), nil)
end)

test("progress: every count the project carries, and the fraction", function()
  local p = ls.progress(fixture("ANNOTATION_CREATED.skipped"))
  eq(p.project, 7)
  eq(p.tasks, 3)
  eq(p.finished, 2)
  eq(p.skipped, 1)
  eq(p.with_annotations, 1)
  near(p.fraction, 2 / 3, 1e-12)
  eq(ls.progress(fixture("PROJECT_CREATED")).fraction, nil) -- no tasks: no fraction
  eq(ls.progress({ action = "X", project = { id = 3, task_number = 4 } }),
     { project = 3, tasks = 4 })
end)

test("is_task_complete: a fresh snapshot follows is_labeled; other actions never complete", function()
  local ev = sample("ANNOTATION_CREATED", { task = { is_labeled = false } })
  eq(ls.is_task_complete(ev), false)
  -- overlap 2, one annotation already counted: not complete
  ev = sample("ANNOTATIONS_CREATED", { task = { { id = 102, total_annotations = 1, overlap = 2,
                                                  is_labeled = false } } })
  local done, tasks = ls.is_task_complete(ev)
  eq(done, false)
  eq(tasks, {})
  eq(ls.is_task_complete(sample("TASKS_CREATED", { tasks = { { id = 1, is_labeled = true } } })),
     false)
end)

test("misuse of a helper raises, naming it", function()
  fails(function() ls.tasks() end, "bad argument #1 to 'tasks' %(event table expected, got no value%)")
  fails(function() ls.labels("x") end, "bad argument #1 to 'labels'")
end)

-- ------------------------------------------------------------------------------ client

local URL = "http://ls.test"
local LEGACY = "0123456789abcdef0123456789abcdef01234567"

local function jwt(claims)
  return "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9." .. crypto.base64(json.encode(claims), "url")
    .. ".c2lnbmF0dXJl"
end

local PAT = jwt({ token_type = "refresh", exp = 8000000000, user_id = "1" })

-- Fires one client call; returns the values it returned (r1..r4, n).
local names = 0
local function call(client, method, ...)
  if type(client) == "string" then client = { name = client } end
  if client.name == nil then
    names = names + 1
    client.name = "c" .. names
  end
  local opts = client.opts or { url = URL, token = client.token or LEGACY }
  fire({ action = "LS", name = client.name, client = opts, call = method, args = { ... } })
  local rec = logs("info")
  for i = #rec, 1, -1 do
    if rec[i].msg == "ls" then return rec[i].fields end
  end
end

-- A refresh endpoint handing out access tokens that live `life` seconds; counts exchanges.
local function refresh_endpoint(life)
  local n = { count = 0, issued = {} }
  mock.http("POST", "^http://ls%.test/api/token/refresh/$", function(req)
    if req.json == nil or req.json.refresh ~= PAT then return { status = 401, json = { detail = "Token is invalid" } } end
    n.count = n.count + 1
    local a = jwt({ token_type = "access", exp = math.floor(clock.now()) + life, n = n.count })
    n.issued[n.count] = a
    return { status = 200, json = { access = a } }
  end)
  return n
end

test("legacy token: 'Authorization: Token', the task decoded", function()
  mock.http("GET", "^http://ls%.test/api/tasks/21/$", { json = { id = 21, data = { text = "hi" } } })
  local r = call({}, "task", 21)
  eq(r.r1, { id = 21, data = { text = "hi" } })
  eq(r.n, 1)
  local c = mock.calls()
  eq(#c, 1)
  eq(c[1].headers.authorization, "Token " .. LEGACY)
  eq(c[1].headers.accept, "application/json")
end)

test("project: GET /api/projects/ID/", function()
  mock.http("GET", "^http://ls%.test/api/projects/7/$", { json = { id = 7, title = "P" } })
  eq(call({}, "project", 7).r1, { id = 7, title = "P" })
end)

test("personal access token: exchanged once, Bearer, refreshed when it expires", function()
  local ex = refresh_endpoint(300)
  mock.http("GET", "^http://ls%.test/api/tasks/%d+/$", function(req)
    local want = "Bearer " .. ex.issued[ex.count]
    if req.headers.authorization ~= want then return { status = 401 } end
    return { json = { id = 1 } }
  end)
  local c = { token = PAT }
  eq(call(c, "task", 1).r1, { id = 1 })
  eq(call(c, "task", 2).r1, { id = 1 })
  eq(ex.count, 1) -- the access token is reused while it lives
  local calls = mock.calls()
  eq(calls[1].url, URL .. "/api/token/refresh/")
  eq(calls[1].json, { refresh = PAT })
  eq(calls[1].headers.authorization, nil)
  clock.advance(280) -- within 30 s of its exp: exchanged again before use
  eq(call(c, "task", 3).r1, { id = 1 })
  eq(ex.count, 2)
end)

test("personal access token: a 401 before exp exchanges again and retries once", function()
  local ex = refresh_endpoint(3600)
  local revoked = {}
  mock.http("GET", "^http://ls%.test/api/tasks/", function(req)
    local tok = req.headers.authorization:match("^Bearer (.*)$")
    if revoked[tok] or tok ~= ex.issued[ex.count] then return { status = 401 } end
    return { json = { ok = true } }
  end)
  local c = { token = PAT }
  eq(call(c, "task", 1).r1, { ok = true })
  revoked[ex.issued[1]] = true -- Label Studio forgot it (restart, revoked)
  eq(call(c, "task", 1).r1, { ok = true })
  eq(ex.count, 2)
  -- a 401 that stays: one more exchange, then the failure
  mock.http("GET", "^http://ls%.test/api/tasks/", { status = 401, json = { detail = "no" } })
  local r = call(c, "task", 1)
  eq(r.r1, nil)
  eq(r.r2, 'labelstudio: GET /api/tasks/1/: HTTP 401: {"detail":"no"}')
  eq(r.r3, "auth")
  eq(r.r4, 401)
  eq(ex.count, 3)
end)

test("personal access token refused: nil, message without the token, 'auth'", function()
  mock.http("POST", "/api/token/refresh/$", { status = 401,
    json = { detail = "Token is invalid or expired", token = PAT } })
  local r = call({ token = PAT }, "task", 1)
  eq(r.r1, nil)
  eq(r.r3, "auth")
  eq(r.r4, 401)
  match(r.r2, "^labelstudio: POST /api/token/refresh/: HTTP 401: ")
  match(r.r2, "personal access token was refused")
  nok(r.r2:find(PAT, 1, true), "the token is cut out of the message")
  match(r.r2, "%*%*%*")
  eq(#mock.calls(), 1) -- never the API call without a token
end)

test("kind forces the token kind: a JWT as a legacy token", function()
  mock.http("GET", "/api/tasks/5/$", { json = { id = 5 } })
  call({ opts = { url = URL .. "/", token = PAT, kind = "legacy" } }, "task", 5)
  eq(mock.calls()[1].url, URL .. "/api/tasks/5/") -- a trailing / of url is dropped
  eq(mock.calls()[1].headers.authorization, "Token " .. PAT)
end)

test("429 with Retry-After: waits that long, then succeeds", function()
  local n = 0
  mock.http("GET", "/api/tasks/", function()
    n = n + 1
    if n == 1 then return { status = 429, headers = { ["Retry-After"] = "3" } } end
    return { json = { id = 9 } }
  end)
  local t0 = clock.now()
  eq(call({}, "task", 9).r1, { id = 9 })
  eq(n, 2)
  ok(clock.now() - t0 >= 3, "waited Retry-After")
  eq(#logs("debug"), 1)
  eq(logs("debug")[1].fields.status, 429)
end)

test("5xx on a GET: retried with backoff, then success; a connection failure too", function()
  local n = 0
  mock.http("GET", "/api/projects/", function()
    n = n + 1
    if n == 1 then return { error = "Connection refused" } end
    if n <= 3 then return { status = 502, body = "bad gateway" } end
    return { json = { id = 7 } }
  end)
  eq(call({}, "project", 7).r1, { id = 7 })
  eq(n, 4)
end)

test("5xx that stays: the last answer after retries+1 attempts, kind 'server'", function()
  mock.http("GET", "/api/tasks/", { status = 503, body = "down" })
  local r = call({ opts = { url = URL, token = LEGACY, retries = 2 } }, "task", 1)
  eq(r.r1, nil)
  eq(r.r2, "labelstudio: GET /api/tasks/1/: HTTP 503 (after 3 attempts): down")
  eq(r.r3, "server")
  eq(r.r4, 503)
  eq(#mock.calls(), 3)
end)

test("a Retry-After past the budget is not waited for", function()
  mock.http("GET", "/api/tasks/", { status = 429, headers = { ["Retry-After"] = "3600" } })
  local t0 = clock.now()
  local r = call({}, "task", 1)
  eq(r.r3, "rate_limited")
  eq(#mock.calls(), 1)
  ok(clock.now() - t0 < 1, "no wait")
end)

test("4xx is final at once: not_found, client with the body quoted", function()
  mock.http("GET", "/api/tasks/", { status = 404, json = { detail = "Not found." } })
  local r = call({}, "task", 404)
  eq(r.r1, nil)
  eq(r.r2, 'labelstudio: GET /api/tasks/404/: HTTP 404: {"detail":"Not found."}')
  eq(r.r3, "not_found")
  eq(#mock.calls(), 1)
  mock.http("PATCH", "/api/tasks/", { status = 400, body = "bad\n  data " .. LEGACY })
  r = call({}, "update_task", 3, { data = { x = 1 } })
  eq(r.r2, "labelstudio: PATCH /api/tasks/3/: HTTP 400: bad data ***")
  eq(r.r3, "client")
end)

test("a network failure comes back as http's, kind kept", function()
  mock.http("GET", "/api/tasks/", { error = "Could not resolve host: ls.test", kind = "resolve" })
  local r = call({}, "task", 1)
  eq(r.r1, nil)
  match(r.r2, "^labelstudio: GET http://ls.test/api/tasks/1/: could not resolve")
  eq(r.r3, "resolve")
  eq(#mock.calls(), 1)
end)

test("a 2xx whose body is not JSON: 'decode'", function()
  mock.http("GET", "/api/tasks/", { body = "<html>login</html>" })
  local r = call({}, "task", 1)
  eq(r.r3, "decode")
  match(r.r2, "HTTP 200 but the body is not JSON")
end)

test("tasks page by page: 250 tasks in pages of 100, then all_tasks", function()
  mock.http("GET", "^http://ls%.test/api/tasks/%?", function(req)
    local page = tonumber(req.url:match("[?&]page=(%d+)"))
    local size = tonumber(req.url:match("[?&]page_size=(%d+)"))
    eq(req.url:match("[?&]project=(%d+)"), "7")
    local list = {}
    for id = (page - 1) * size + 1, math.min(page * size, 250) do list[#list + 1] = { id = id } end
    if #list == 0 then return { status = 404, json = { detail = "Invalid page." } } end
    return { json = { tasks = list, total = 250 } }
  end)
  local r = call({}, "tasks_page", 7, 1, 100)
  eq(#r.r1, 100)
  eq(r.r2, 2)
  eq(r.r3, 250)
  r = call({}, "tasks_page", 7, 3, 100)
  eq(#r.r1, 50)
  eq(r.r2, nil)
  r = call({}, "tasks_page", 7, 9, 100) -- past the end: an empty last page
  eq(r.r1, {})
  eq(r.r2, nil)
  local before = #mock.calls()
  r = call({}, "all_tasks", 7, { page_size = 100 })
  eq(#r.r1, 250)
  eq(r.r1[250].id, 250)
  eq(#mock.calls() - before, 3)
  r = call({}, "all_tasks", 7, { page_size = 100, max = 120 })
  eq(#r.r1, 120)
end)

test("all_tasks: a failing page fails the whole", function()
  mock.http("GET", "/api/tasks/", function(req)
    if req.url:match("page=2") then return { status = 403, json = { detail = "denied" } } end
    local list = {}
    for i = 1, 10 do list[i] = { id = i } end
    return { json = { tasks = list, total = 30 } }
  end)
  local r = call({}, "all_tasks", 7, { page_size = 10 })
  eq(r.r1, nil)
  eq(r.r3, "auth")
  eq(r.r4, 403)
end)

test("create_predictions: one bulk POST of the list; never retried after a 500", function()
  mock.http("POST", "^http://ls%.test/api/projects/7/import/predictions$", function(req)
    return { status = 201, json = { created = #req.json } }
  end)
  local preds = {
    { task = 101, result = { { from_name = "sentiment", to_name = "text", type = "choices",
                               value = { choices = { "Positive" } } } },
      score = 0.9, model_version = "m1" },
    { task = 102, result = { { from_name = "sentiment", to_name = "text", type = "choices",
                               value = { choices = { "Negative" } } } } },
  }
  local r = call({}, "create_predictions", 7, preds)
  eq(r.r1, 2)
  local c = mock.calls()
  eq(#c, 1)
  eq(c[1].json, preds)
  eq(call({}, "create_predictions", 7, {}).r1, 0) -- nothing to send: no request
  eq(#mock.calls(), 1)
  mock.http("POST", "/import/predictions$", { status = 500, body = "oops" })
  r = call({}, "create_predictions", 7, preds)
  eq(r.r3, "server")
  eq(#mock.calls(), 2) -- the server may have created them: not repeated
  -- a 429 or 503 did nothing: repeated
  local n = 0
  mock.http("POST", "/import/predictions$", function()
    n = n + 1
    if n == 1 then return { status = 429 } end
    return { status = 201, json = { created = 2 } }
  end)
  eq(call({}, "create_predictions", 7, preds).r1, 2)
  eq(n, 2)
end)

test("update_task: PATCH /api/tasks/ID/ with the fields, the task back", function()
  mock.http("PATCH", "^http://ls%.test/api/tasks/5/$", function(req)
    return { json = { id = 5, meta = req.json.meta } }
  end)
  local r = call({}, "update_task", 5, { meta = { reviewed = true } })
  eq(r.r1, { id = 5, meta = { reviewed = true } })
  eq(mock.calls()[1].json, { meta = { reviewed = true } })
end)

test("request: any endpoint; an empty 2xx body is json.null", function()
  mock.http("DELETE", "/api/tasks/5/$", { status = 204 })
  local r = call({}, "request", "DELETE", "/api/tasks/5/")
  eq(r.r1, json.null)
end)

test("misuse raises with a precise message", function()
  fire({ action = "LS_MISUSE" })
  local msgs = logs("info")[1].fields.msgs
  eq(msgs[1], "bad argument #1 to 'client' (table expected, got no value)")
  match(msgs[2], "url: expected http:// or https:// and a host, got \"localhost:8080\"")
  match(msgs[3], "token: empty")
  match(msgs[4], "kind: expected \"legacy\" or \"personal\", got \"jwt\"")
  match(msgs[5], "bad argument #1 to 'task' %(integer id expected, got string%)")
  match(msgs[6], "prediction 1: expected { task = id, result = {...} }")
end)

test("Retry-After as an HTTP date: waits until then", function()
  local n = 0
  local at = math.floor(clock.now()) + 4
  mock.http("GET", "/api/tasks/", function()
    n = n + 1
    if n == 1 then
      return { status = 503, headers = { ["Retry-After"] = os.date("!%a, %d %b %Y %H:%M:%S GMT", at) } }
    end
    return { json = { id = 1 } }
  end)
  eq(call({}, "task", 1).r1, { id = 1 })
  eq(n, 2)
  ok(clock.now() >= at, "waited until the date")
  ok(clock.now() < at + 1, "and no longer")
end)

test("budget bounds the whole call: an attempt's timeout is cut to what is left", function()
  mock.http("GET", "/api/tasks/", { status = 200, json = { id = 1 }, delay = 8 })
  local t0 = clock.now()
  local r = call({ opts = { url = URL, token = LEGACY, budget = 5, timeout = 10 } }, "task", 1)
  eq(r.r1, nil)
  eq(r.r3, "timeout")
  match(r.r2, "^labelstudio: GET http://ls.test/api/tasks/1/: timed out after 5 s")
  eq(#mock.calls(), 1) -- nothing left for a retry
  ok(clock.now() - t0 < 6, "within the budget")
end)

test("request: safe = true lets a POST be retried after a 500; without it, not", function()
  local n = 0
  mock.http("POST", "/api/dm/actions", function()
    n = n + 1
    if n == 1 then return { status = 500 } end
    return { json = { ok = true } }
  end)
  eq(call({}, "request", "POST", "/api/dm/actions", { json = { id = "x" }, safe = true }).r1,
     { ok = true })
  eq(n, 2)
  n = 0
  local r = call({}, "request", "POST", "/api/dm/actions", { json = { id = "x" } })
  eq(r.r3, "server")
  eq(n, 1)
end)
