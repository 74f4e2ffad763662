---@meta luahook
-- luahook's Lua API, for lua-language-server: written by `luahook stubs`, never run.
-- The event shapes are in events.lua, the API of *_test.lua files in testing.lua.

---@alias luahook.Action
---| "ANNOTATION_CREATED" | "ANNOTATION_UPDATED" | "ANNOTATIONS_CREATED" | "ANNOTATIONS_DELETED"
---| "TASKS_CREATED" | "TASKS_DELETED" | "PROJECT_CREATED" | "PROJECT_UPDATED" | "PROJECT_DELETED"
---| "LABEL_LINK_CREATED" | "LABEL_LINK_UPDATED" | "LABEL_LINK_DELETED"
---| "REVIEW_CREATED" | "REVIEW_UPDATED" | "REVIEWS_DELETED" | "START_TRAINING" | "*"
---| string

---@class luahook.OnOpts
---@field name? string the handler's id is "<script name>#<name>": a letter, then letters, digits, '_', '.', '-' (at most 64)

---@class (exact) luahook.Ctx
---@field id string the delivery id (also in the answer and the logs)
---@field action string the event's action
---@field path string the request's path ("/")
---@field headers table<string, string> lower-case names; repeated headers joined with ", "
---@field remote string "ip:port" of the sender
---@field received_at number seconds since the epoch
---@field body string the raw body bytes (exact forwarding, signature checks)
---@field attempt integer 1 for a first delivery, more when the same event is delivered again

---Registers a handler for an action, a list of actions, or "*" (every event), while the
---scripts load. Handlers of one action run in registration order, then the "*" ones.
---`ev` is the decoded body (shared by the event's handlers: copy before changing it).
---@overload fun(action: "ANNOTATION_CREATED", handler: fun(ev: luahook.event.ANNOTATION_CREATED, ctx: luahook.Ctx), opts?: luahook.OnOpts)
---@overload fun(action: "ANNOTATION_UPDATED", handler: fun(ev: luahook.event.ANNOTATION_UPDATED, ctx: luahook.Ctx), opts?: luahook.OnOpts)
---@overload fun(action: "ANNOTATIONS_CREATED", handler: fun(ev: luahook.event.ANNOTATIONS_CREATED, ctx: luahook.Ctx), opts?: luahook.OnOpts)
---@overload fun(action: "ANNOTATIONS_DELETED", handler: fun(ev: luahook.event.ANNOTATIONS_DELETED, ctx: luahook.Ctx), opts?: luahook.OnOpts)
---@overload fun(action: "TASKS_CREATED", handler: fun(ev: luahook.event.TASKS_CREATED, ctx: luahook.Ctx), opts?: luahook.OnOpts)
---@overload fun(action: "TASKS_DELETED", handler: fun(ev: luahook.event.TASKS_DELETED, ctx: luahook.Ctx), opts?: luahook.OnOpts)
---@overload fun(action: "PROJECT_CREATED", handler: fun(ev: luahook.event.PROJECT_CREATED, ctx: luahook.Ctx), opts?: luahook.OnOpts)
---@overload fun(action: "PROJECT_UPDATED", handler: fun(ev: luahook.event.PROJECT_UPDATED, ctx: luahook.Ctx), opts?: luahook.OnOpts)
---@overload fun(action: "PROJECT_DELETED", handler: fun(ev: luahook.event.PROJECT_DELETED, ctx: luahook.Ctx), opts?: luahook.OnOpts)
---@overload fun(action: "LABEL_LINK_CREATED", handler: fun(ev: luahook.event.LABEL_LINK_CREATED, ctx: luahook.Ctx), opts?: luahook.OnOpts)
---@overload fun(action: "LABEL_LINK_UPDATED", handler: fun(ev: luahook.event.LABEL_LINK_UPDATED, ctx: luahook.Ctx), opts?: luahook.OnOpts)
---@overload fun(action: "LABEL_LINK_DELETED", handler: fun(ev: luahook.event.LABEL_LINK_DELETED, ctx: luahook.Ctx), opts?: luahook.OnOpts)
---@overload fun(action: "START_TRAINING", handler: fun(ev: luahook.event.START_TRAINING, ctx: luahook.Ctx), opts?: luahook.OnOpts)
---@param action luahook.Action|luahook.Action[] an action, a list of actions, or "*"
---@param handler fun(ev: luahook.Event, ctx: luahook.Ctx) runs in a coroutine of its own
---@param opts? luahook.OnOpts
function on(action, handler, opts) end

---An environment variable; `default` when it is unset; an error naming it when there is
---no default.
---@param name string
---@param default? string
---@return string
function env(name, default) end

---Waits `seconds` without blocking the server (inside a handler or a timer callback only).
---@param seconds number
function sleep(seconds) end

-- ------------------------------------------------------------------------------- json

---JSON's null: never nil.
---@class luahook.Null

---JSON: integers stay integers, null is json.null.
json = {}

---The value of JSON's `null`.
---@type luahook.Null
json.null = nil

---Decodes JSON text: integers stay Lua integers over the whole int64 range, `null` is
---json.null.
---@param s string
---@return any value
---@return string? err with line and column
function json.decode(s) end

---Encodes a value as JSON text; an empty table is `{}`.
---@param v any
---@return string
function json.encode(v) end

-- ------------------------------------------------------------------------------- log

---Structured log records to luahook's log.
log = {}

---@alias luahook.LogFields table<string, string|number|boolean>

---A debug record, with the calling script and line (and in a handler its action and id).
---@param message string
---@param fields? luahook.LogFields
function log.debug(message, fields) end

---An info record.
---@param message string
---@param fields? luahook.LogFields
function log.info(message, fields) end

---A warn record.
---@param message string
---@param fields? luahook.LogFields
function log.warn(message, fields) end

---An error record.
---@param message string
---@param fields? luahook.LogFields
function log.error(message, fields) end

-- ------------------------------------------------------------------------------- http

---@class luahook.HttpOpts
---@field method? string GET, or POST when there is a body
---@field url? string (http.request only) http:// or https://
---@field headers? table<string, string>
---@field query? table<string, string|number|boolean> URL-encoded in key order
---@field body? string
---@field json? any sent as json.encode(json) with Content-Type: application/json
---@field timeout? number seconds for the whole exchange (30)
---@field connect_timeout? number seconds (10)
---@field insecure? boolean skip the certificate check
---@field ca_file? string trust this CA
---@field follow? boolean follow redirects (off)
---@field max_size? integer largest response body (16 MiB)

---@alias luahook.HttpErrorKind "resolve"|"connect"|"timeout"|"tls"|"too_large"|"other"

---@class luahook.http.Response
---@field status integer
---@field headers table<string, string> lower-case names
---@field body string
local Response = {}

---The body decoded as JSON, or nil and the error.
---@return any value
---@return string? err
function Response:json() end

---Outbound HTTP(S), non-blocking: the handler waits, the server goes on.
http = {}

---An HTTP request; the handler waits while the server goes on. A 4xx or 5xx is a response;
---a network failure is nil, "METHOD url: cause (detail)", kind.
---@param opts luahook.HttpOpts with url
---@return luahook.http.Response? res
---@return string? err
---@return luahook.HttpErrorKind? kind
function http.request(opts) end

---GET `url`.
---@param url string
---@param opts? luahook.HttpOpts
---@return luahook.http.Response? res
---@return string? err
---@return luahook.HttpErrorKind? kind
function http.get(url, opts) end

---POST `url`.
---@param url string
---@param opts? luahook.HttpOpts
---@return luahook.http.Response? res
---@return string? err
---@return luahook.HttpErrorKind? kind
function http.post(url, opts) end

---PUT `url`.
---@param url string
---@param opts? luahook.HttpOpts
---@return luahook.http.Response? res
---@return string? err
---@return luahook.HttpErrorKind? kind
function http.put(url, opts) end

---PATCH `url`.
---@param url string
---@param opts? luahook.HttpOpts
---@return luahook.http.Response? res
---@return string? err
---@return luahook.HttpErrorKind? kind
function http.patch(url, opts) end

---DELETE `url`.
---@param url string
---@param opts? luahook.HttpOpts
---@return luahook.http.Response? res
---@return string? err
---@return luahook.HttpErrorKind? kind
function http.delete(url, opts) end

-- ------------------------------------------------------------------------------- timer

---@class luahook.Timer
local Timer = {}

---Stops the timer (a running callback finishes).
function Timer:stop() end

---Whether the timer will run again.
---@return boolean
function Timer:active() end

---Timers whose callbacks run in coroutines of their own.
timer = {}

---Runs fn(handle) once after `seconds`, in a coroutine of its own (it may use http and
---sleep), under the handler timeout.
---@param seconds number
---@param fn fun(handle: luahook.Timer)
---@return luahook.Timer
function timer.after(seconds, fn) end

---Runs fn(handle) every `seconds`; a tick that finds the previous run still going is
---skipped.
---@param seconds number
---@param fn fun(handle: luahook.Timer)
---@return luahook.Timer
function timer.every(seconds, fn) end
