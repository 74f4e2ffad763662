-- Calls http with the arguments the event gives and logs what came back.
on("HTTP", function(ev)
  local res, err, kind
  if ev.fn == "request" then
    res, err, kind = http.request(ev.opts)
  else
    res, err, kind = http[ev.fn](ev.url, ev.opts)
  end
  local decoded, derr
  if res then decoded, derr = res:json() end
  log.info("http", { res = res, err = err, kind = kind, json = decoded, json_err = derr })
end)

-- Two calls in a row: the second after the first answered.
on("TWO_CALLS", function(ev)
  local r1 = assert(http.get("http://api.test/first"))
  local r2, e2 = http.post("http://api.test/second", { json = { after = r1.status } })
  log.info("two", { s1 = r1.status, s2 = r2 and r2.status, e2 = e2 })
end)

on("MISUSE", function()
  local msgs = {}
  local function try(f, ...)
    local ok, e = pcall(f, ...)
    msgs[#msgs + 1] = ok and "no error" or e
  end
  try(http.get)
  try(http.request, { url = 5 })
  try(http.request, { url = "ftp://files.test/x" })
  try(http.post, "http://x.test/", { body = "a", json = { 1 } })
  try(http.get, "http://x.test/", { timeout = "1" })
  try(http.get, "http://x.test/", { timeout = 0 })
  try(http.request, { url = "http://x.test/", method = "get" })
  try(http.get, "http://x.test/", { headers = { ["Bad Name"] = "v" } })
  try(http.get, "http://x.test/", { query = { [1] = "v" } })
  try(http.get, "http://x.test/", { query = { k = {} } })
  try(http.request, { url = "http://x.test/", method = "" })
  log.info("misuse", { msgs = msgs })
end)

on("NESTED_HTTP", function()
  coroutine.wrap(function() http.get("http://x.test/") end)()
end)
