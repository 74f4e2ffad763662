-- A module of the handlers' lib/ that requires labelstudio itself.
local ls = require "labelstudio"

return function(ev)
  return { project = ls.project_id(ev), tasks = #ls.tasks(ev) }
end
