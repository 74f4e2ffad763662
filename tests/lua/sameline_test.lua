-- Results stay in run order when two handlers share a line (and so a label) and the
-- second ends first.
handlers("handlers/sameline")

test("two handlers of one line keep their own results", function()
  local r = fire({ action = "SAME" }, { allow_failure = true })
  eq(r.handlers, 2)
  eq(r[1].handler, r[2].handler)
  -- their stable ids tell them apart
  eq({ r[1].id, r[2].id }, { "two.lua#1", "two.lua#2" })
  eq(r[1].ok, false)
  eq(r[1].error, "the slow one failed")
  eq(r[2].ok, true)
end)
