-- A placeholder: the bundled notify recipe (helper recipes-bundled) replaces this file.
-- Until then it gives the bundled path something to load: name, version, a required
-- secret, a list of projects.
return {
  name = "notify",
  version = "0.1.0",
  description = "Post a message about chosen actions to a chat webhook (placeholder)",
  config = {
    url = { type = "string", required = true, secret = true,
            description = "the incoming webhook URL", example = "https://hooks.slack.com/services/T000/B000/XXXX" },
    projects = { type = "list", of = { type = "integer", min = 1 },
                 description = "the project ids to react to (all when absent)", example = { 1, 2 } },
    actions = { type = "list", of = { type = "string" }, default = { "ANNOTATION_CREATED" },
                description = "the actions to announce" },
  },
  setup = function(cfg)
    local wanted = {}
    for _, p in ipairs(cfg.projects or {}) do wanted[p] = true end
    on(cfg.actions, function(ev)
      local pid = ev.project and ev.project.id
      if cfg.projects and not wanted[pid] then return end
      http.post(cfg.url, { json = { text = ev.action } })
    end)
  end,
}
