-- Logs the event as json.encode writes it again: what a recipe forwarding it would send.
on("REENCODE", function(ev)
  log.info("reencoded", { body = json.encode(ev) })
end)
