-- on, fire, ctx, results, sample, env, logs, handlers(): the harness's own tests.
handlers("handlers/basic")

local function msgs(level)
  local out = {}
  for _, r in ipairs(logs(level)) do out[#out + 1] = r.msg end
  return out
end

test("handlers of an action run in registration order, then the '*' ones", function()
  local r = fire({ action = "ORDER", star = true })
  eq(msgs(), { "a1", "a2", "b1", "a-star" })
  eq(r.handlers, 4)
  ok(r.ok)
  eq(#r, 4)
  match(r[1].handler, "handlers/basic/a_order%.lua:1$")
  match(r[2].handler, "handlers/basic/a_order%.lua:3$")
  match(r[3].handler, "handlers/basic/b_order%.lua:1$")
  match(r[4].handler, "handlers/basic/a_order%.lua:2$")
  -- stable ids: the script's name in the folder given, and the handler's ordinal in it
  eq({ r[1].id, r[2].id, r[3].id, r[4].id },
     { "a_order.lua#1", "a_order.lua#3", "b_order.lua#1", "a_order.lua#2" })
  eq(r[1].ok, true)
  eq(r[1].error, nil)
end)

test("a list of actions, and '*' alone", function()
  fire({ action = "OTHER", star = true })
  eq(msgs(), { "a2", "a-star" })
  local r = fire({ action = "NOBODY_LISTENS", star = true })
  eq(r.handlers, 1)
  eq(msgs(), { "a2", "a-star", "a-star" })
end)

test("each script has its own globals", function()
  fire({ action = "WHO" })
  eq(msgs(), { "a", "c" })
end)

test("ctx is built like the server's", function()
  local body = '{"action":"CTX","n":1}'
  local r = fire(body, { headers = { ["X-Token"] = "s3cret" }, path = "/hooks/ls",
                         remote = "10.0.0.9:5555" })
  local f = logs()[1].fields
  local ctx = f.ctx
  eq(ctx.id, r.id)
  eq(r.id, r.id:match("^%x+$"))
  eq(#r.id, 20)
  eq(ctx.action, "CTX")
  eq(ctx.path, "/hooks/ls")
  eq(ctx.remote, "10.0.0.9:5555")
  eq(ctx.headers["x-token"], "s3cret")
  eq(ctx.headers["X-Token"], nil)
  eq(ctx.headers["content-type"], "application/json")
  eq(ctx.received_at, clock.now())
  eq(math.type(ctx.received_at), "float")
  eq(ctx.body, body)
  eq(f.ev, { action = "CTX", n = 1 })
end)

test("ctx defaults, and a new delivery id per event", function()
  local r1 = fire({ action = "CTX" })
  local r2 = fire({ action = "CTX" })
  local c1, c2 = logs()[1].fields.ctx, logs()[2].fields.ctx
  eq(c1.path, "/")
  eq(c1.remote, "127.0.0.1:40000")
  neq(r1.id, r2.id)
  eq(c2.id, r2.id)
  eq(json.decode(c1.body), { action = "CTX" })
end)

test("a handler error is a result, the other handlers still run", function()
  local r = fire({ action = "FAIL", n = 7 }, { allow_failure = true })
  nok(r.ok)
  eq(r.handlers, 3) -- with the '*' one
  eq(r[1].ok, false)
  match(r[1].error, "c_ctx%.lua:8: refused 7$")
  eq(r[2].ok, true)
  eq(msgs(), { "after failure" })
  r = fire({ action = "FAIL_TABLE" }, { allow_failure = true })
  eq(r[1].error, "(error object is a table value)")
end)

test("decoded types are the server's: integers, floats, null", function()
  fire('{"action":"TYPES","id":21,"f":1.0,"x":null,"big":9223372036854775807}')
  eq(logs()[1].fields, { id = "integer", f = "float", null = true, big = math.maxinteger })
  -- a table goes through json.encode and json.decode
  fire({ action = "TYPES", id = 21, f = 1.0, x = json.null, big = math.mininteger })
  eq(logs()[2].fields, { id = "integer", f = "float", null = true, big = math.mininteger })
end)

test("fire takes a .json file, relative to the test file", function()
  local r = fire("../fixtures/labelstudio/ANNOTATION_CREATED.json")
  ok(r.ok)
  eq(msgs(), {})
end)

test("fire takes a sample", function()
  local ev = sample("ANNOTATION_CREATED")
  eq(ev.action, "ANNOTATION_CREATED")
  eq(type(ev.annotation), "table")
  eq(math.type(ev.annotation.id), "integer")
  eq(fire(ev).handlers, 1)
end)

test("sample merges overrides deeply", function()
  local base = sample("ANNOTATION_CREATED")
  local ev = sample("ANNOTATION_CREATED", { annotation = { id = 9, extra = "x" }, flag = true })
  eq(ev.annotation.id, 9)
  eq(ev.annotation.extra, "x")
  eq(ev.flag, true)
  eq(ev.annotation.result, base.annotation.result)
  eq(ev.task, base.task)
  local t = sample("TASKS_CREATED")
  eq(type(t.tasks), "table")
  ok(#t.tasks >= 1)
  match(fails(function() sample("NO_SUCH_ACTION") end), "no sample for action 'NO_SUCH_ACTION'")
end)

test("sample: a sequence replaces, an empty one too; sample.REMOVE deletes a key", function()
  local base = sample("ANNOTATION_CREATED")
  ok(#base.annotation.result >= 1)
  local ev = sample("ANNOTATION_CREATED", { annotation = { result = {} } })
  eq(ev.annotation.result, {})
  eq(ev.annotation.id, base.annotation.id, "the rest of the object is merged")
  local t = sample("TASKS_CREATED", { tasks = { { id = 5 } } })
  eq(t.tasks, { { id = 5 } }, "exactly the one task given")
  local d = sample("TASKS_DELETED", { project = sample.REMOVE })
  eq(d.project, nil)
  eq(d.action, "TASKS_DELETED")
  local n = sample("ANNOTATION_CREATED", { task = { data = sample.REMOVE, id = 9 },
                                           extra = { keep = 1, drop = sample.REMOVE } })
  eq(n.task.data, nil)
  eq(n.task.id, 9)
  eq(n.extra, { keep = 1 })
  eq(tostring(sample.REMOVE), "sample.REMOVE")
  ok(fire(d, { allow_failure = true }))
end)

test("fire refuses what the server answers 400", function()
  match(fails(function() fire("[1, 2]") end),
        'api_test%.lua:%d+: fire: the body is not a JSON object %(it is an array%)')
  fails(function() fire("42") end, "it is number value")
  fails(function() fire("null") end, "it is null value")
  fails(function() fire('{"n": 1}') end, 'the event has no "action"')
  fails(function() fire('{"action": 5}') end, '"action" must be a string, not number')
  fails(function() fire('{"action": null}') end, '"action" must be a string, not null')
  fails(function() fire("{not json") end, "fire: ")
  fails(function() fire({ 1, 2 }) end, "not a JSON object")
  fails(function() fire("no_such_file.json") end, "cannot open")
end)

test("module-level state persists between tests (1)", function()
  fire({ action = "COUNT" })
  eq(logs()[1].fields.n, 1)
end)

test("module-level state persists between tests (2)", function()
  fire({ action = "COUNT" })
  eq(logs()[1].fields.n, 2, "the counter went on; logs were reset")
  eq(#logs(), 1)
end)

test("env: overrides, defaults, the real environment, unset", function()
  mock.env("LH_TEST_VAR", "from mock")
  fire({ action = "ENV", name = "LH_TEST_VAR" })
  eq(logs()[1].fields.v, "from mock")
  fire({ action = "ENV", name = "LH_TEST_SURELY_UNSET_VAR" })
  eq(logs()[2].fields.v, "the default")
  local r = fire({ action = "ENV_STRICT", name = "LH_TEST_SURELY_UNSET_VAR" }, { allow_failure = true })
  -- as from the server: the handler's file:line, then the message
  match(r[1].error, "^[^:]+c_ctx%.lua:%d+: env: LH_TEST_SURELY_UNSET_VAR is not set %(and no default was given%)$")
  -- the real environment
  fire({ action = "ENV_STRICT", name = "PATH" })
  eq(logs()[3].fields.v, os.getenv("PATH"))
  -- nil unsets a variable that the real environment has
  mock.env("PATH", nil)
  r = fire({ action = "ENV_STRICT", name = "PATH" }, { allow_failure = true })
  match(r[1].error, "c_ctx%.lua:%d+: env: PATH is not set %(and no default was given%)$")
end)

test("env overrides are reset between tests", function()
  fire({ action = "ENV", name = "LH_TEST_VAR" })
  eq(logs()[1].fields.v, "the default")
end)

test("logs: every level, fields as given, filtered by level", function()
  fire({ action = "LOG_LEVELS" })
  eq(logs(), {
    { level = "debug", msg = "d" },
    { level = "info", msg = "i", fields = { k = 1 } },
    { level = "warn", msg = "w" },
    { level = "error", msg = "e", fields = { why = "because" } },
  })
  eq(logs("error"), { { level = "error", msg = "e", fields = { why = "because" } } })
  eq(#logs("warn"), 1)
  fails(function() logs("loud") end, "logs: the level")
end)

test("on works only while scripts load", function()
  local r = fire({ action = "LATE_ON" }, { allow_failure = true })
  match(r[1].error, "on: handlers can only be registered while scripts load")
end)

-- handlers() runs at the top level only: what the broken scripts raise, kept for a test.
local load_errors = {}
for _, p in ipairs({ "syntax", "raises", "sleep_at_load", "http_at_load", "on_number",
                     "on_string", "on_empty_list", "on_list_number" }) do
  local okr, e = pcall(handlers, "handlers/broken/" .. p .. ".lua")
  load_errors[p] = okr and "(loaded)" or e
end
do
  local okr, e = pcall(handlers, "handlers/no_such_script.lua")
  load_errors.missing = okr and "(loaded)" or e
end

test("handlers() reports load problems as file:line: message", function()
  local e = load_errors
  match(e.syntax, "^[^\n]*handlers/broken/syntax%.lua:3: ")
  match(e.raises, "handlers/broken/raises%.lua:2: refusing to load$")
  match(e.sleep_at_load, "^[^\n]*sleep_at_load%.lua:1: sleep: only inside a handler or a timer callback")
  match(e.http_at_load, "^[^\n]*http_at_load%.lua:1: http: only inside a handler or a timer callback")
  match(e.on_number,
        "on_number%.lua:1: bad argument #1 to 'on' %(action name or list of names expected, got number%)")
  match(e.on_string, "on_string%.lua:1: bad argument #2 to 'on' %(function expected, got string%)")
  match(e.on_empty_list, "on_empty_list%.lua:1: .*the list of actions is empty")
  match(e.on_list_number, "on_list_number%.lua:1: on: each action in the list must be a string, got number")
  match(e.missing, "no_such_script%.lua: cannot open: No such file or directory")
end)

test("handlers() inside a test raises", function()
  match(fails(function() handlers("handlers/basic/b_order.lua") end),
        "api_test%.lua:%d+: handlers: call it at the top level of the test file$")
  -- nothing was registered again
  fire({ action = "ORDER" })
  eq(#logs(), 3)
end)

test("a run can be a retry: opts.attempt is ctx.attempt", function()
  fire({ action = "CTX" })
  eq(logs()[1].fields.ctx.attempt, 1)
  fire({ action = "CTX" }, { attempt = 3 })
  eq(logs()[2].fields.ctx.attempt, 3)
  fails(function() fire({ action = "CTX" }, { attempt = 0 }) end, "opts.attempt must be an integer >= 1")
end)
