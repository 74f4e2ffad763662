-- store in luahook test: counts events per project, with a 60 s window; TRAIN takes the
-- lock, waits on the model (sleep), and records one training per window.
on("COUNT", function(ev)
  store.incr("count:" .. ev.project, 1, 60)
end)

on("TRAIN", function(ev)
  store.lock("train", function()
    if store.get("training") then return end
    sleep(1) -- the training POST
    store.set("training", true, 600)
    store.incr("trainings")
  end)
end)
