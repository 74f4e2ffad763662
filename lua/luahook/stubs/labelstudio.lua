---@meta labelstudio
-- require "labelstudio", for lua-language-server: written by `luahook stubs`, never run.

---@class labelstudio.AnnotationEntry
---@field annotation luahook.Annotation|luahook.Ref the annotation (ids only for ANNOTATIONS_DELETED)
---@field task? luahook.Task its task, when the body carries it

---@class labelstudio.Progress
---@field project? integer the project's id
---@field tasks? integer task_number
---@field finished? integer finished_task_number
---@field with_annotations? integer num_tasks_with_annotations
---@field annotations? integer total_annotations_number
---@field useful_annotations? integer useful_annotation_number
---@field skipped? integer skipped_annotations_number
---@field ground_truth? integer ground_truth_number
---@field predictions? integer total_predictions_number
---@field fraction? number finished / tasks (0..1); nil when tasks is 0 or unknown

---@alias labelstudio.ErrorKind "auth"|"not_found"|"client"|"rate_limited"|"server"|"decode"|luahook.HttpErrorKind

---@class labelstudio.ClientOpts
---@field url string Label Studio's base URL
---@field token string a legacy token, or a personal access token (a JWT refresh token)
---@field kind? "legacy"|"personal" the token's kind (default: personal when it is a JWT)
---@field timeout? number seconds per request (10)
---@field retries? integer retries of a 429, 5xx or failed connection (3)
---@field budget? number seconds a call may take, its retries and waits included (20)
---@field insecure? boolean skip the certificate check
---@field ca_file? string trust this CA

---@class labelstudio.Prediction
---@field task integer the task's id
---@field result table[] the regions, as in an annotation's result
---@field score? number
---@field model_version? string

---@class labelstudio.Client
---@field url string
---@field kind "legacy"|"personal"
---@field timeout number
---@field retries integer
---@field budget number
local Client = {}

---GET /api/tasks/ID/.
---@param id integer
---@return luahook.Task? task
---@return string? err
---@return labelstudio.ErrorKind? kind
---@return integer? status
function Client:task(id) end

---GET /api/projects/ID/.
---@param id integer
---@return luahook.Project? project
---@return string? err
---@return labelstudio.ErrorKind? kind
---@return integer? status
function Client:project(id) end

---One page of a project's tasks (GET /api/tasks/?project=P&page=N&page_size=S).
---On a failure: nil, err, kind, status.
---@param project integer
---@param page integer from 1
---@param page_size? integer 100
---@return luahook.Task[]? tasks
---@return integer|string|nil next_page the next page, nil on the last one (err on a failure)
---@return integer|labelstudio.ErrorKind|nil total
function Client:tasks_page(project, page, page_size) end

---Every task of a project, page by page; a failing page fails the whole.
---@param project integer
---@param opts? { page_size?: integer, max?: integer }
---@return luahook.Task[]? tasks
---@return string? err
---@return labelstudio.ErrorKind? kind
---@return integer? status
function Client:all_tasks(project, opts) end

---One bulk POST /api/projects/P/import/predictions; never repeated once the server may
---have acted (only 429, 503 and failed connections are retried).
---@param project integer
---@param predictions labelstudio.Prediction[]
---@return integer? created
---@return string? err
---@return labelstudio.ErrorKind? kind
---@return integer? status
function Client:create_predictions(project, predictions) end

---PATCH /api/tasks/ID/ with `fields`; the task as it is now.
---@param id integer
---@param fields table e.g. { data = {...}, meta = {...} }
---@return luahook.Task? task
---@return string? err
---@return labelstudio.ErrorKind? kind
---@return integer? status
function Client:update_task(id, fields) end

---Any endpoint: the decoded answer (json.null for an empty one) and the response.
---@param method string
---@param path string starting with /
---@param opts? { query?: table, json?: any, body?: string, safe?: boolean }
---@return any value
---@return luahook.http.Response|string|nil res_or_err
---@return labelstudio.ErrorKind? kind
---@return integer? status
function Client:request(method, path, opts) end

---Helpers over what Label Studio's webhooks send, and a REST client.
local labelstudio = {}

---Always a list: the task objects the body carries (each once).
---@param ev table
---@return luahook.Task[]
function labelstudio.tasks(ev) end

---The annotations, each with its task where the body carries one.
---@param ev table
---@return labelstudio.AnnotationEntry[]
function labelstudio.annotations(ev) end

---The project's id, or nil (no payload; the project-less TASKS_DELETED).
---@param ev table
---@return integer?
function labelstudio.project_id(ev) end

---Whether the annotation (or an entry of annotations(ev)) is a skip.
---@param annotation table
---@return boolean
function labelstudio.is_skip(annotation) end

---The labels and choices chosen, each once; and from_name -> list.
---@param annotation table
---@return string[] labels
---@return table<string, string[]> by_name
function labelstudio.labels(annotation) end

---The project's task counts the body carries, or nil.
---@param ev table
---@return labelstudio.Progress?
function labelstudio.progress(ev) end

---Whether an annotation event leaves tasks complete (is_labeled), and which.
---@param ev table
---@return boolean done
---@return luahook.Task[] tasks
function labelstudio.is_task_complete(ev) end

---A REST client; makes no request until used.
---@param opts labelstudio.ClientOpts
---@return labelstudio.Client
function labelstudio.client(opts) end

return labelstudio
