---@meta luahook.testing
-- The API of *_test.lua files (luahook test), for lua-language-server: written by
-- `luahook stubs`, never run. The handlers' API is in luahook.lua.

---@class luahook.test.Run
---@field handler string "file:line" of the handler
---@field id string the handler's stable id
---@field ok boolean
---@field error? string

---@class luahook.test.Result: { [integer]: luahook.test.Run }
---@field ok boolean every handler succeeded
---@field handlers integer how many ran
---@field id string the delivery id, as ctx.id saw it

---@class luahook.test.FireOpts
---@field headers? table<string, string> added to content-type: application/json
---@field path? string default "/"
---@field remote? string
---@field attempt? integer ctx.attempt
---@field allow_failure? boolean a failing handler does not fail the test: check the result

---@class luahook.test.MockResponse
---@field status? integer 200
---@field headers? table<string, string>
---@field body? string
---@field json? any
---@field delay? number seconds (virtual)
---@field error? string a network failure with this detail
---@field kind? luahook.HttpErrorKind with error: "connect" when not given

---@class luahook.test.Call
---@field method string
---@field url string
---@field headers table<string, string> lower-case names
---@field body? string
---@field json? any the body decoded, if JSON

---@class luahook.test.Mock
local Mock = {}

---The requests this mock answered so far in this test.
---@return luahook.test.Call[]
function Mock:calls() end

---@class luahook.test.LogRecord
---@field level "debug"|"info"|"warn"|"error"
---@field msg string
---@field fields table<string, any>

---Loads handler scripts or folders (paths relative to the test file), at the top level.
---@param ... string
function handlers(...) end

---Loads an instance of the recipe `name` (validated as a script's use() is), its handlers
---before the tests, at the top level. Beside a recipe.lua, the folder's own name means
---that very folder; several calls give several instances (`as` tells them apart).
---@param name string
---@param cfg? table
---@param opts? luahook.UseOpts
function use(name, cfg, opts) end

---Declares a test; tests run in file order.
---@param name string
---@param fn fun()
function test(name, fn) end

---Runs the handlers of the event's action until every one ended. A failing handler fails
---the test here unless opts.allow_failure.
---@param event table|string a table, a JSON string, a .json file relative to the test file
---@param opts? luahook.test.FireOpts
---@return luahook.test.Result
function fire(event, opts) end

---Fires several events at once; their handlers interleave at their waits.
---@param events (table|string)[]
---@param opts? luahook.test.FireOpts
---@return luahook.test.Result[]
function fire_all(events, opts) end

---A realistic body of a Label Studio action; overrides merge in deeply (a list replaces
---a list; sample.REMOVE deletes a key).
---@class luahook.test.Sample
---@overload fun(action: luahook.Action, overrides?: table): table
sample = {}

---An override value that deletes its key.
sample.REMOVE = {}

---Deep equality (1 and 1.0 differ); fails with a diff.
---@param actual any
---@param expected any
---@param msg? string
function eq(actual, expected, msg) end

---Not deeply equal.
---@param a any
---@param b any
---@param msg? string
function neq(a, b, msg) end

---`v` is truthy.
---@param v any
---@param msg? string
function ok(v, msg) end

---`v` is falsy.
---@param v any
---@param msg? string
function nok(v, msg) end

---`s` matches the Lua pattern.
---@param s string
---@param pattern string
function match(s, pattern) end

---`fn` raises (an error matching `pattern`); returns the message.
---@param fn fun()
---@param pattern? string
---@return string
function fails(fn, pattern) end

---Numbers within `eps`.
---@param a number
---@param b number
---@param eps? number
function near(a, b, eps) end

---What the handlers' world answers: HTTP and the environment.
mock = {}

---Answers the requests of `method` ("*": any) whose URL matches the Lua pattern; the last
---matching mock wins.
---@param method string
---@param url_pattern string
---@param response luahook.test.MockResponse|fun(call: luahook.test.Call): luahook.test.MockResponse
---@return luahook.test.Mock
function mock.http(method, url_pattern, response) end

---The requests made so far in this test (those whose URL matches the pattern).
---@param url_pattern? string
---@return luahook.test.Call[]
function mock.calls(url_pattern) end

---Sets the variable env(name) reads for this test; nil unsets it.
---@param name string
---@param value string?
function mock.env(name, value) end

---The virtual clock of luahook test.
clock = {}

---The virtual time, seconds since the epoch.
---@return number
function clock.now() end

---Moves the virtual clock, running the timers that fall due.
---@param seconds number
---@param opts? { allow_failure?: boolean }
function clock.advance(seconds, opts) end

---The log records of this test.
---@param level? "debug"|"info"|"warn"|"error"
---@return luahook.test.LogRecord[]
function logs(level) end
