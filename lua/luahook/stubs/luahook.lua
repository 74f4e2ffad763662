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
---@field retries? integer with --state-dir: retries of a failed run of this handler before it is dead (instead of --retries)

---@class (exact) luahook.Ctx
---@field id string the delivery id (also in the answer and the logs)
---@field action string the event's action
---@field path string the request's path ("/")
---@field headers table<string, string> lower-case names; repeated headers joined with ", "
---@field remote string "ip:port" of the sender
---@field received_at number seconds since the epoch
---@field body string the raw body bytes (exact forwarding, signature checks)
---@field attempt integer 1 for a first delivery, more when the journal runs the handler again (a retry, a replay, after a crash)

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

---An error value that says retrying cannot help: `error(permanent("bad data"))` makes the
---run dead at once instead of retried (with --state-dir). Elsewhere it reads as `message`.
---@param message string
---@return table
function permanent(message) end

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

-- ------------------------------------------------------------------------------- crypto

---Hashing, HMAC, encodings and Standard Webhooks signatures (OpenSSL's libcrypto). Nothing
---here waits: every function may run at load time or in a handler.
crypto = {}

---@alias luahook.DigestAlg "sha1"|"sha256"|"sha384"|"sha512"
---@alias luahook.DigestEncoding "hex"|"base64"|"raw"

---The HMAC of `data` under `key`; hex by default.
---@param alg luahook.DigestAlg
---@param key string
---@param data string
---@param enc? luahook.DigestEncoding
---@return string
function crypto.hmac(alg, key, data, enc) end

---SHA-1 of `data`; hex by default.
---@param data string
---@param enc? luahook.DigestEncoding
---@return string
function crypto.sha1(data, enc) end

---SHA-256 of `data`; hex by default.
---@param data string
---@param enc? luahook.DigestEncoding
---@return string
function crypto.sha256(data, enc) end

---SHA-384 of `data`; hex by default.
---@param data string
---@param enc? luahook.DigestEncoding
---@return string
function crypto.sha384(data, enc) end

---SHA-512 of `data`; hex by default.
---@param data string
---@param enc? luahook.DigestEncoding
---@return string
function crypto.sha512(data, enc) end

---Lower-case hex of the bytes of `s`.
---@param s string
---@return string
function crypto.hex(s) end

---The bytes of hex text (either case); nil, msg when it is not hex.
---@param s string
---@return string|nil bytes
---@return string? err
function crypto.unhex(s) end

---Base64 of `s`: "std" (padded, the default) or "url" (-_ alphabet, unpadded).
---@param s string
---@param variant? "std"|"url"
---@return string
function crypto.base64(s, variant) end

---The bytes of base64 text; nil, msg when it is not base64.
---@param s string
---@param variant? "std"|"url"
---@return string|nil bytes
---@return string? err
function crypto.unbase64(s, variant) end

---Whether two strings are equal, in time that does not depend on where they differ.
---@param a string
---@param b string
---@return boolean
function crypto.equal(a, b) end

---`n` random bytes (0 to 65536) from the system's generator; nil, msg if it fails.
---@param n integer
---@return string|nil bytes
---@return string? err
function crypto.random(n) end

---A Standard Webhooks signature "v1,<base64>" of msg_id.timestamp.body; a secret
---"whsec_<base64>" is decoded, any other string is the key itself.
---@param secret string
---@param msg_id string
---@param timestamp integer|string
---@param body string
---@return string
function crypto.webhook_sign(secret, msg_id, timestamp, body) end

---The three Standard Webhooks headers for `body`: webhook-id (msg_id, or a random one),
---webhook-timestamp (now, or `timestamp`) and webhook-signature.
---@param secret string
---@param body string
---@param msg_id? string
---@param timestamp? integer|string
---@return table<string, string>
function crypto.webhook_headers(secret, body, msg_id, timestamp) end

---Checks a Standard Webhooks signature (header names in any case) and that the timestamp
---is within `tolerance_s` (300) of now: true, or nil, msg, kind.
---@param secret string
---@param headers table<string, string>
---@param body string
---@param tolerance_s? number
---@return true|nil ok
---@return string? err
---@return "missing"|"timestamp"|"signature"|nil kind
function crypto.webhook_verify(secret, headers, body, tolerance_s) end

-- ------------------------------------------------------------------------------- store

---Values that outlive a run, a reload and (with --state-dir) a restart, namespaced per
---script. Reads come from memory; writes reach the state folder's database through its
---writer. A bad key, value or ttl, or a full store, raises at the call.
store = {}

---@alias luahook.StoreValue string|integer|number|boolean|table

---The value of `key`, or nil.
---@param key string
---@return luahook.StoreValue|nil
function store.get(key) end

---Sets `key` (nil deletes it); `ttl` seconds until it expires (0 or nil: never).
---@param key string
---@param value luahook.StoreValue|nil
---@param ttl? number
function store.set(key, value, ttl) end

---Adds `by` (1) to the number at `key` (0 when unset) and returns the new value; `ttl`
---applies when the key is created.
---@param key string
---@param by? integer|number
---@param ttl? number
---@return integer|number
function store.incr(key, by, ttl) end

---Removes `key`.
---@param key string
function store.delete(key) end

---The keys of this script's store, under `prefix` if given.
---@param prefix? string
---@return string[]
function store.keys(prefix) end

---Runs fn() holding a lock on `key` that other runs wait for (without blocking the
---server); released however fn ends. Returns what fn returns. Waits: only in a handler
---or a timer callback.
---@generic R
---@param key string
---@param fn fun(): R
---@return R
function store.lock(key, fn) end
