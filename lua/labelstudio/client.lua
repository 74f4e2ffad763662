--[[
labelstudio.client - Label Studio's REST API on luahook's `http`, inside a handler run.

  local c = ls.client{ url = env("LS_URL"), token = env("LS_TOKEN") }
  local task, err, kind = c:task(21)

Failures are values: nil, message, kind[, status]. Misuse (a wrong argument) raises.
The token never appears in a message: messages name the method and path only, and any
text quoted from an answer has the token cut out.

Tokens. A legacy token is sent as "Authorization: Token T". A personal access token is a
JWT refresh token: it is exchanged at POST /api/token/refresh/ {"refresh": T} for an access
token {"access": A}, sent as "Authorization: Bearer A" until shortly before A's `exp`, and
once more after a 401 (revoked early, clocks apart). Which kind a token is shows in it: a
JWT (three base64url parts) is a personal access token; `kind` forces one.

Retries (seconds, within the handler run; retrying for longer is the journal's job): an
answer 429 or 503 (the server did nothing) and a connection that could not be made are
retried for every request; other 5xx and timeouts only for requests safe to repeat (GET,
PUT, PATCH, DELETE, and the token refresh), never for a bulk prediction create, which
would create the predictions twice. Waits: Retry-After when the answer has one (seconds
or an HTTP date), else 0.5 s, 1 s, 2 s, ...; at most `retries` retries. A call takes at
most `budget` seconds, all included: an attempt's timeout is cut to what is left, and no
retry starts with less than a second left (then the last failure is returned at once).
]]

local M = {}

local fmt = string.format

-- How long before its exp an access token is refreshed (seconds).
local REFRESH_EARLY = 30
-- Lifetime assumed for an access token whose exp cannot be read (Label Studio's is 5 min).
local ACCESS_LIFETIME = 300

local IDEMPOTENT = { GET = true, HEAD = true, PUT = true, PATCH = true, DELETE = true }

local Client = {}
Client.__index = Client

-- The JSON payload of a JWT, or nil when `token` is not one.
local function jwt_payload(token)
  local p = token:match("^[%w_-]+%.([%w_-]+)%.[%w_-]+$")
  if p == nil then return nil end
  local raw = crypto.unbase64(p, "url")
  local v = raw and json.decode(raw)
  return type(v) == "table" and v or nil
end

local function is_jwt(token)
  return token:match("^[%w_-]+%.[%w_-]+%.[%w_-]+$") ~= nil
end

local function check_opts(o)
  if type(o) ~= "table" then
    error(fmt("bad argument #1 to 'client' (table expected, got %s)",
              o == nil and "no value" or type(o)), 3)
  end
  local function want(key, ty, optional)
    local v = o[key]
    if v == nil and optional then return end
    if type(v) ~= ty then
      error(fmt("labelstudio.client: %s: expected a %s, got %s", key, ty,
                v == nil and "nothing" or type(v)), 4)
    end
  end
  want("url", "string")
  want("token", "string")
  want("kind", "string", true)
  want("timeout", "number", true)
  want("retries", "number", true)
  want("budget", "number", true)
  if not o.url:match("^https?://[^/]") then
    error(fmt("labelstudio.client: url: expected http:// or https:// and a host, got %q",
              o.url), 3)
  end
  if o.token == "" then error("labelstudio.client: token: empty", 3) end
  if o.kind ~= nil and o.kind ~= "legacy" and o.kind ~= "personal" then
    error(fmt("labelstudio.client: kind: expected \"legacy\" or \"personal\", got %q",
              o.kind), 3)
  end
  if o.retries ~= nil and (math.type(o.retries) ~= "integer" or o.retries < 0) then
    error("labelstudio.client: retries: expected an integer >= 0", 3)
  end
  for _, k in ipairs({ "timeout", "budget" }) do
    if o[k] ~= nil and not (o[k] > 0) then
      error(fmt("labelstudio.client: %s: expected a number > 0", k), 3)
    end
  end
end

--- new{ url, token [, kind, timeout, retries, budget, insecure, ca_file] } -> client.
-- Makes no request (a client may be made while scripts load; it calls out in handlers).
function M.new(o)
  check_opts(o)
  local kind = o.kind or (is_jwt(o.token) and "personal" or "legacy")
  -- the token lives in a closure, not a field: a client logged or dumped shows no secret
  local token = o.token
  local self = setmetatable({
    url = o.url:gsub("/+$", ""),
    kind = kind,
    timeout = o.timeout or 10,
    retries = o.retries or 3,
    budget = o.budget or 20,
    insecure = o.insecure,
    ca_file = o.ca_file,
  }, Client)
  local access, access_until = nil, -math.huge
  self._secret = function(op, a, exp)
    if op == "set" then
      access, access_until = a, exp
    elseif op == "drop" then
      access, access_until = nil, -math.huge
    end
    return token, access, access_until
  end
  return self
end

-- `s` with the token and the access token replaced by ***. Only a token of 8 bytes or more:
-- a shorter one would cut common text apart (and is no secret worth the name).
function Client:_scrub(s)
  local token, access = self._secret("get")
  for _, t in ipairs({ token, access }) do
    if t and #t >= 8 then
      local at = 1
      while true do
        local i, j = s:find(t, at, true)
        if i == nil then break end
        s = s:sub(1, i - 1) .. "***" .. s:sub(j + 1)
        at = i + 3
      end
    end
  end
  return s
end

-- A short quote of an answer's body, for messages.
function Client:_quote(body)
  body = self:_scrub(body or ""):gsub("%s+", " ")
  if #body > 200 then body = body:sub(1, 200) .. "..." end
  return body
end

local MONTHS = { Jan = 1, Feb = 2, Mar = 3, Apr = 4, May = 5, Jun = 6, Jul = 7, Aug = 8,
                 Sep = 9, Oct = 10, Nov = 11, Dec = 12 }

-- Seconds since the epoch of a UTC civil date (os.time would read it as local time).
local function utc_epoch(y, m, d, hh, mm, ss)
  y = m <= 2 and y - 1 or y
  local era = y // 400
  local yoe = y - era * 400
  local doy = (153 * (m > 2 and m - 3 or m + 9) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return (era * 146097 + doe - 719468) * 86400 + hh * 3600 + mm * 60 + ss
end

-- Seconds the answer asks to wait: Retry-After in seconds, or as an HTTP date
-- ("Wed, 21 Oct 2026 07:28:00 GMT"); nil when it has none (or one that does not parse).
local function retry_after(res)
  local v = res.headers and res.headers["retry-after"]
  if v == nil then return nil end
  local n = tonumber(v:match("^%s*(%d+%.?%d*)%s*$"))
  if n then return n end
  local d, mon, y, hh, mm, ss = v:match("^%s*%a+, (%d+) (%a+) (%d+) (%d+):(%d+):(%d+) GMT%s*$")
  if d == nil or MONTHS[mon] == nil then return nil end
  local at = utc_epoch(tonumber(y), MONTHS[mon], tonumber(d), tonumber(hh), tonumber(mm),
                       tonumber(ss))
  return math.max(0, at - os.time())
end

-- One exchange, with the retries. `auth` is the Authorization value (nil: none).
-- Returns res (2xx or a final 4xx/5xx), or nil, err, kind.
function Client:_send(method, path, opts, auth, safe, deadline)
  local url = self.url .. path
  local attempt = 0
  while true do
    attempt = attempt + 1
    local headers = { Accept = "application/json" }
    if auth then headers.Authorization = auth end
    -- an attempt gets what is left of the budget, at most `timeout`
    local timeout = math.max(1, math.min(self.timeout, deadline - os.time()))
    local res, err, kind = http.request{
      method = method, url = url, query = opts.query, json = opts.json, body = opts.body,
      headers = headers, timeout = timeout, insecure = self.insecure,
      ca_file = self.ca_file,
    }
    local retry, wait
    if res == nil then
      retry = kind == "connect" or (kind == "timeout" and safe)
      err = self:_scrub(err)
    else
      local st = res.status
      retry = st == 429 or st == 503 or (st >= 500 and safe)
      wait = retry and retry_after(res) or nil
    end
    if not retry then
      if res == nil then return nil, err, kind end
      return res, nil, nil, attempt
    end
    wait = wait or 0.5 * 2 ^ (attempt - 1)
    -- no retry that would start with less than a second of the budget left
    local final = attempt > self.retries or os.time() + wait + 1 > deadline
    if final then
      if res == nil then return nil, err, kind end
      return res, nil, nil, attempt
    end
    log.debug("labelstudio: retrying", { method = method, path = path,
                                         status = res and res.status or kind, wait = wait })
    sleep(wait)
  end
end

-- A failure made of a final non-2xx answer.
function Client:_fail(method, path, res, attempts)
  local st = res.status
  local kind = (st == 401 or st == 403) and "auth" or st == 404 and "not_found"
    or st == 429 and "rate_limited" or st >= 500 and "server" or "client"
  local msg = fmt("labelstudio: %s %s: HTTP %d", method, path, st)
  if attempts and attempts > 1 then msg = msg .. fmt(" (after %d attempts)", attempts) end
  local body = self:_quote(res.body)
  if body ~= "" then msg = msg .. ": " .. body end
  return nil, msg, kind, st
end

-- The Authorization value; exchanges a personal access token first when needed.
function Client:_auth(deadline)
  local token, access, access_until = self._secret("get")
  if self.kind == "legacy" then return "Token " .. token end
  if access and os.time() < access_until - REFRESH_EARLY then return "Bearer " .. access end
  local path = "/api/token/refresh/"
  local res, err, kind = self:_send("POST", path, { json = { refresh = token } }, nil, true,
                                    deadline)
  if res == nil then return nil, "labelstudio: token refresh: " .. err, kind end
  if res.status < 200 or res.status > 299 then
    local _, msg, k, st = self:_fail("POST", path, res)
    if st == 401 or st == 400 then
      msg = msg .. " (the personal access token was refused: expired, revoked or not one)"
      k = "auth"
    end
    return nil, msg, k, st
  end
  local v = res:json()
  local a = type(v) == "table" and v.access
  if type(a) ~= "string" or a == "" then
    return nil, fmt("labelstudio: POST %s: no \"access\" token in the answer", path), "decode"
  end
  local claims = jwt_payload(a)
  local exp = claims and tonumber(claims.exp) or (os.time() + ACCESS_LIFETIME)
  self._secret("set", a, exp)
  return "Bearer " .. a
end

--- c:request(method, path [, { query, json, body, safe }]) -> the decoded answer (json.null
-- for an empty one), res; or nil, err, kind[, status]. `path` starts with "/"; `safe = true`
-- lets a POST be retried as GET, PUT, PATCH and DELETE are.
-- kinds: "auth" (401/403, or the token refresh refused), "not_found" (404), "client"
-- (another 4xx), "rate_limited" (429 after the retries), "server" (5xx after the
-- retries), "decode" (a 2xx whose body is not JSON), or http's own: "connect",
-- "timeout", "resolve", "tls", "too_large", "other".
function Client:request(method, path, opts)
  if type(method) ~= "string" then error("bad argument #1 to 'request' (string expected)", 2) end
  if type(path) ~= "string" or path:sub(1, 1) ~= "/" then
    error("bad argument #2 to 'request' (a path starting with / expected)", 2)
  end
  opts = opts or {}
  method = method:upper()
  local safe = IDEMPOTENT[method] or opts.safe == true
  local deadline = os.time() + self.budget
  local refreshed = false
  while true do
    local auth, aerr, akind, ast = self:_auth(deadline)
    if auth == nil then return nil, aerr, akind, ast end
    local res, err, kind, attempts = self:_send(method, path, opts, auth, safe, deadline)
    if res == nil then return nil, fmt("labelstudio: %s", err), kind end
    local st = res.status
    if st == 401 and self.kind == "personal" and not refreshed then
      -- the access token died before its exp: exchange once more, then try again
      self._secret("drop")
      refreshed = true
    elseif st < 200 or st > 299 then
      return self:_fail(method, path, res, attempts)
    else
      if res.body == nil or res.body:match("^%s*$") then return json.null, res end
      local v, jerr = res:json()
      if v == nil then
        return nil, fmt("labelstudio: %s %s: HTTP %d but the body is not JSON (%s)", method,
                        path, st, jerr), "decode", st
      end
      return v, res
    end
  end
end

-- v as an integer when it is one (or a float holding one), else nil
local function toint(v)
  if math.type(v) == "integer" then return v end
  if math.type(v) == "float" then return math.tointeger(v) end
  return nil
end

-- The first value on success, every value on failure.
local function value(v, ...)
  if v == nil then return nil, ... end
  return v
end

local function check_id(v, n, fn)
  if math.type(v) ~= "integer" then
    local f = math.type(v) == "float" and math.tointeger(v)
    if f then return f end
    error(fmt("bad argument #%d to '%s' (integer id expected, got %s)", n, fn,
              v == nil and "no value" or type(v)), 3)
  end
  return v
end

--- c:task(id) -> task (GET /api/tasks/ID/), or nil, err, kind[, status].
function Client:task(id)
  id = check_id(id, 1, "task")
  return value(self:request("GET", fmt("/api/tasks/%d/", id)))
end

--- c:project(id) -> project (GET /api/projects/ID/), or nil, err, kind[, status].
function Client:project(id)
  id = check_id(id, 1, "project")
  return value(self:request("GET", fmt("/api/projects/%d/", id)))
end

--- c:tasks_page(project, page [, page_size]) -> tasks, next_page (nil on the last page),
-- total; or nil, err, kind[, status]. GET /api/tasks/?project=P&page=N&page_size=S
-- (page_size 100 by default). A page past the end is an empty last page.
function Client:tasks_page(project, page, page_size)
  project = check_id(project, 1, "tasks_page")
  page = check_id(page or 1, 2, "tasks_page")
  page_size = check_id(page_size or 100, 3, "tasks_page")
  if page < 1 or page_size < 1 then error("tasks_page: page and page_size start at 1", 2) end
  local v, err, kind, st = self:request("GET", "/api/tasks/", {
    query = { project = project, page = page, page_size = page_size },
  })
  if v == nil then
    -- Label Studio answers a page past the last one with 404 "Invalid page"
    if st == 404 and page > 1 then return {}, nil, nil end
    return nil, err, kind, st
  end
  -- {"tasks": [...], "total": N} (data manager), or a bare list (older versions)
  local list = type(v) == "table" and (v.tasks or (v[1] ~= nil and v) or (next(v) == nil and v))
  if type(list) ~= "table" then
    return nil, "labelstudio: GET /api/tasks/: no \"tasks\" list in the answer", "decode"
  end
  local total = toint(v.total)
  local more = #list == page_size and (total == nil or page * page_size < total)
  return list, more and page + 1 or nil, total
end

--- c:all_tasks(project [, { page_size = 100, max = N }]) -> every task of the project,
-- page by page; or nil, err, kind[, status] (nothing partial). `max` stops early.
function Client:all_tasks(project, o)
  project = check_id(project, 1, "all_tasks")
  o = o or {}
  local out, page = {}, 1
  while page do
    local list, next_or_err, kind, st = self:tasks_page(project, page, o.page_size)
    if list == nil then return nil, next_or_err, kind, st end
    for _, t in ipairs(list) do
      out[#out + 1] = t
      if o.max and #out >= o.max then return out end
    end
    page = next_or_err
  end
  return out
end

--- c:create_predictions(project, predictions) -> count created; or nil, err, kind[, status].
-- One POST /api/projects/P/import/predictions of the list { { task = id, result = {...},
-- score = 0.9, model_version = "v1" }, ... }. Not safe to repeat: it is never retried
-- after the server may have acted (only 429, 503 and connection failures are).
function Client:create_predictions(project, predictions)
  project = check_id(project, 1, "create_predictions")
  if type(predictions) ~= "table" then
    error("bad argument #2 to 'create_predictions' (list of predictions expected)", 2)
  end
  for i, p in ipairs(predictions) do
    if type(p) ~= "table" or toint(p.task) == nil or type(p.result) ~= "table" then
      error(fmt("create_predictions: prediction %d: expected { task = id, result = {...} }", i), 2)
    end
    -- an empty result must reach Label Studio as [], not {}
    if json.array and next(p.result) == nil then json.array(p.result) end
  end
  if #predictions == 0 then return 0 end
  local v, err, kind, st = self:request("POST",
    fmt("/api/projects/%d/import/predictions", project), { json = predictions })
  if v == nil then return nil, err, kind, st end
  local n = type(v) == "table" and toint(v.created)
  return n or #predictions
end

--- c:update_task(id, fields) -> the task as Label Studio now has it (PATCH /api/tasks/ID/
-- with `fields`, e.g. { data = {...}, meta = {...} }); or nil, err, kind[, status].
function Client:update_task(id, fields)
  id = check_id(id, 1, "update_task")
  if type(fields) ~= "table" then error("bad argument #2 to 'update_task' (table expected)", 2) end
  return value(self:request("PATCH", fmt("/api/tasks/%d/", id), { json = fields }))
end

return M
