-- forward.lua: pass every event on to another service, byte for byte.
--
-- POSTs the raw body (ctx.body, not the decoded table: no key reordering, no number
-- rewriting, Label Studio's \uXXXX escapes kept) to FORWARD_URL, with the original
-- Content-Type and the delivery id in X-Luahook-Delivery, so the receiver can match its
-- logs with luahook's and drop a delivery it has already seen.
--
-- A network error (no connection, timeout) is retried once, one second later; an HTTP
-- answer is never retried. Either failure raises, so it is logged and counted. A retry
-- after a timeout may deliver twice: the receiver should be idempotent (Label Studio
-- itself can send one event twice).
--
-- With FORWARD_SIGNING_SECRET set (a Standard Webhooks secret "whsec_<base64>", or any
-- non-empty string), each POST is signed as https://www.standardwebhooks.com/ says: the
-- webhook-id (the delivery id, the same on the retry), webhook-timestamp (the time of
-- that attempt) and webhook-signature headers, which the receiver checks with its
-- Standard Webhooks library (or crypto.webhook_verify).
--
-- Try it: FORWARD_URL=http://127.0.0.1:8000/hook luahook fire examples/forward.lua --sample TASKS_CREATED

local function post(url, ctx, secret)
  local headers = {
    ["Content-Type"] = ctx.headers["content-type"] or "application/json",
    ["X-Luahook-Delivery"] = ctx.id,
  }
  if secret and secret ~= "" then
    for name, value in pairs(crypto.webhook_headers(secret, ctx.body, ctx.id)) do
      headers[name] = value
    end
  end
  return http.post(url, { body = ctx.body, headers = headers, timeout = 10 })
end

local function cause(err)
  return err:match("^%u+ %S+: (.*)$") or err
end

on("*", function(ev, ctx)
  local url = env("FORWARD_URL")
  local secret = env("FORWARD_SIGNING_SECRET", nil)

  local res, err = post(url, ctx, secret)
  if not res then
    -- err reads "POST <url>: cause"; the URL may hold a secret in its path, so only the
    -- cause is logged
    log.warn("forward failed, retrying in 1 s", { error = cause(err) })
    sleep(1)
    res, err = post(url, ctx, secret)
    if not res then
      error("forward failed twice: " .. cause(err), 0)
    end
  end
  if res.status < 200 or res.status > 299 then
    error(("forward answered HTTP %d"):format(res.status), 0)
  end
end)
