-- A placeholder (helper recipes-bundled replaces it). Beside recipe.lua, use("notify")
-- means this folder under `luahook test recipes/notify`, and the binary's copy under
-- `luahook test bundled:notify`.
use("notify", { url = "https://chat.test/hook", projects = { 1 } })

test("an instance of notify loads", function()
  eq(#logs(), 0)
end)
