-- forward: the exact bytes of chosen events to one or more URLs, retried with backoff
-- inside the handler's run.
local ls = require "labelstudio"

-- The cause of an http error without its URL: a URL may hold a key in its path.
local function cause(err)
  return (err:match("^%u+ %S+: (.*)$") or err)
end

local function set(list)
  if list == nil then return nil end
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

return {
  name = "forward",
  version = "0.1.0",
  description = "The raw body of chosen events to one or more URLs, with retries and backoff",
  config = {
    urls = {
      type = "list", required = true, secret = true, min = 1,
      of = { type = "string", secret = true, match = "^https?://" },
      description = "where each event goes (secret: a URL may hold a key)",
      example = { "https://collector.example.com/labelstudio" },
    },
    actions = {
      type = "list", of = { type = "string" }, min = 1,
      description = "only these actions (all when absent)",
      example = { "ANNOTATION_CREATED", "ANNOTATION_UPDATED" },
    },
    projects = {
      type = "list", min = 1, of = { type = "integer", min = 1 },
      description = "only these projects' events (all when absent)",
      example = { 7 },
    },
    headers = {
      type = "map", of = { type = "string", secret = true }, secret = true,
      description = "extra request headers (secret: they often carry a token)",
      example = { Authorization = "Bearer abc123" },
    },
    signing_secret = {
      type = "string", secret = true,
      description = "sign each post the Standard Webhooks way (webhook-id, -timestamp, -signature)",
      example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    },
    timeout = {
      type = "number", default = 10, min = 0.1, max = 300,
      description = "seconds for one attempt",
    },
    retries = {
      type = "integer", default = 3, min = 0, max = 10,
      description = "further attempts after a network error, a 429 or a 5xx",
    },
    backoff = {
      type = "number", default = 1, min = 0, max = 60,
      description = "seconds before the first retry, doubled for each next one",
    },
    budget = {
      type = "number", default = 25, min = 1,
      description = "seconds all attempts of one run may take; keep it under "
        .. "--handler-timeout (30)",
    },
  },

  setup = function(cfg)
    local projects = set(cfg.projects)

    local function attempt(url, ctx)
      local headers = {}
      for k, v in pairs(cfg.headers or {}) do headers[k] = v end
      headers["Content-Type"] = ctx.headers["content-type"] or "application/json"
      headers["X-Luahook-Delivery"] = ctx.id
      if cfg.signing_secret and cfg.signing_secret ~= "" then
        for k, v in pairs(crypto.webhook_headers(cfg.signing_secret, ctx.body, ctx.id)) do
          headers[k] = v
        end
      end
      local res, err, kind = http.post(url, { body = ctx.body, headers = headers,
                                              timeout = cfg.timeout })
      if not res then return false, cause(err), kind ~= "too_large" end
      if res.status >= 200 and res.status <= 299 then return true end
      local retry = res.status == 429 or res.status >= 500
      return false, ("HTTP %d"):format(res.status), retry
    end

    -- One URL: attempts until success, a final answer, or no time left in the budget.
    local function deliver(i, url, ctx, started)
      local wait = cfg.backoff
      local tries = 0
      while true do
        tries = tries + 1
        local ok, why, retry = attempt(url, ctx)
        if ok then return true end
        local spent = os.time() - started
        if not retry or tries > cfg.retries or spent + wait + cfg.timeout > cfg.budget then
          return false, ("urls[%d]: %s (%d %s)")
            :format(i, why, tries, tries == 1 and "try" or "tries")
        end
        log.warn("forward failed, retrying", { url = i, error = why, try = tries, wait = wait })
        sleep(wait)
        wait = wait * 2
      end
    end

    on(cfg.actions or "*", function(ev, ctx)
      if projects and not projects[ls.project_id(ev)] then return end
      -- The same bytes again (the journal repeating a failed run, or Label Studio sending
      -- the event twice) skip the URLs an earlier run reached, which would get it twice
      -- otherwise. Only a run that failed somewhere leaves such a key.
      local key = "sent:" .. crypto.sha256(ctx.body)
      local sent = store.get(key) or {}
      local started = os.time()
      local failed = {}
      local reached = {}
      for i, url in ipairs(cfg.urls) do
        if sent[tostring(i)] then
          reached[tostring(i)] = true
        else
          local ok, err = deliver(i, url, ctx, started)
          if ok then reached[tostring(i)] = true else failed[#failed + 1] = err end
        end
      end
      if #failed > 0 then
        if next(reached) then store.set(key, reached, 7 * 86400) end
        error("forward failed: " .. table.concat(failed, "; "), 0)
      end
      if next(sent) then store.delete(key) end
    end, { name = "post" })
  end,
}
