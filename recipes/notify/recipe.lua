-- notify: one chat message per chosen event, to an incoming webhook of Slack, Mattermost,
-- Discord or Teams, or any URL as JSON. Submitted, updated and skipped annotations are
-- told apart and each has its own template.
local ls = require "labelstudio"
local chat = require "chat"

-- The kinds an annotation event is split into; every other action is its own kind.
local KINDS = { submitted = true, updated = true, skipped = true }

local DEFAULTS = {
  submitted = "{project_title}: task {task} annotated by user {user} ({labels})",
  updated = "{project_title}: annotation {annotation} of task {task} updated by user {user} "
    .. "({labels})",
  skipped = "{project_title}: task {task} skipped by user {user}",
  ANNOTATIONS_CREATED = "{project_title}: {count} annotations created",
  ANNOTATIONS_DELETED = "{project_title}: {count} annotations deleted",
  TASKS_CREATED = "{project_title}: {count} tasks imported",
  TASKS_DELETED = "{project_title}: {count} tasks deleted",
}
local FALLBACK = "{project_title}: {action}"

local FIELDS = {
  "action", "kind", "project", "project_title", "task", "annotation", "user", "labels",
  "count", "link", "id",
}

return {
  name = "notify",
  version = "0.1.0",
  description = "A chat message (Slack, Mattermost, Discord, Teams) or a JSON post for "
    .. "chosen actions",
  config = {
    url = {
      type = "string", required = true, secret = true, match = "^https?://",
      description = "the incoming webhook URL (it holds the channel's key: kept secret)",
      example = "https://hooks.slack.com/services/T000/B000/XXXX",
    },
    format = {
      type = "string", default = "slack",
      one_of = { "slack", "mattermost", "discord", "teams", "json" },
      description = "the message's shape: {text} for slack and mattermost, {content} for "
        .. "discord, an Adaptive Card for teams (a Workflows webhook), the event's fields for json",
      example = "discord",
    },
    actions = {
      type = "list", of = { type = "string" }, min = 1,
      default = { "ANNOTATION_CREATED", "ANNOTATION_UPDATED" },
      description = "the actions that send a message",
      example = { "ANNOTATION_CREATED", "TASKS_CREATED" },
    },
    projects = {
      type = "list", min = 1, of = { type = "integer", min = 1 },
      description = "only these projects' events (all when absent)",
      example = { 7, 12 },
    },
    templates = {
      type = "map", of = { type = "string" },
      description = "message per kind (submitted, updated, skipped) or action, with {field} "
        .. "placeholders: " .. table.concat(FIELDS, ", "),
      example = { skipped = "Task {task} skipped by {user}: {link}" },
    },
    label_studio_url = {
      type = "string", match = "^https?://",
      description = "Label Studio's address, for the {link} placeholder",
      example = "https://label-studio.example.com",
    },
    timeout = {
      type = "number", default = 10, min = 0.1, max = 300,
      description = "seconds for one post",
    },
    retries = {
      type = "integer", default = 2, min = 0, max = 5,
      description = "further tries of a post that surely did not arrive (connection refused, "
        .. "host unknown, HTTP 429), 1 s then 2 s apart",
    },
  },

  setup = function(cfg)
    local templates = {}
    for k, v in pairs(DEFAULTS) do templates[k] = v end
    local wanted = {}
    for _, a in ipairs(cfg.actions) do wanted[a] = true end
    for k, v in pairs(cfg.templates or {}) do
      if not KINDS[k] and not wanted[k] then
        error(("templates.%s: neither a kind (submitted, updated, skipped) nor one of actions")
          :format(k), 0)
      end
      local bad = chat.unknown_field(v, FIELDS)
      if bad then
        error(("templates.%s: unknown field {%s}; the fields are %s")
          :format(k, bad, table.concat(FIELDS, ", ")), 0)
      end
      templates[k] = v
    end
    local projects = chat.set(cfg.projects)

    local function send(fields)
      local template = templates[fields.kind] or templates[fields.action] or FALLBACK
      local text = chat.render(template, fields)
      local ok, err = chat.post(cfg, chat.payload(cfg.format, text, fields))
      if not ok then
        error(("%s: %s"):format(fields.kind, err), 0)
      end
      log.debug("notified", { kind = fields.kind, project = fields.project })
    end

    on(cfg.actions, function(ev, ctx)
      local project = ls.project_id(ev)
      if projects and not projects[project] then return end
      local base = chat.fields(ev, ctx, project, cfg.label_studio_url)
      if ctx.action == "ANNOTATION_CREATED" or ctx.action == "ANNOTATION_UPDATED" then
        for _, pair in ipairs(ls.annotations(ev)) do
          local f = chat.annotation_fields(base, pair, ls)
          if ls.is_skip(pair.annotation) then
            f.kind = "skipped"
          else
            f.kind = ctx.action == "ANNOTATION_CREATED" and "submitted" or "updated"
          end
          send(f)
        end
        return
      end
      base.kind = ctx.action
      send(base)
    end)
  end,
}
