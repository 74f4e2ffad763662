---@meta luahook.events
-- The shapes of Label Studio's webhook events (from lua/samples/*.json and Label Studio's
-- serializers), for lua-language-server: written by `luahook stubs`, never run.
-- A field that JSON may give as null is typed `T|luahook.Null` (json.null, never nil).
-- With the webhook's "send payload" off, a body is `{ action = ... }` alone.

---Any event (a "*" handler's): its action, and whatever the body holds.
---@class luahook.Event
---@field action string
---@field [string] any

---What a delete sends: the id alone.
---@class (exact) luahook.Ref
---@field id integer

---A project object (every event but the deletes' ids carries one). `token` and
---`task_data_password` are secrets: never log them.
---@class (exact) luahook.Project
---@field id integer
---@field task_number integer
---@field finished_task_number integer
---@field total_predictions_number integer
---@field total_annotations_number integer
---@field num_tasks_with_annotations integer
---@field useful_annotation_number integer
---@field ground_truth_number integer
---@field skipped_annotations_number integer
---@field title string|luahook.Null
---@field description string
---@field label_config string the labeling config, XML
---@field parsed_label_config table<string, any>|luahook.Null
---@field label_config_hash integer a 64-bit integer, beyond 2^53: exact here
---@field expert_instruction string
---@field show_instruction boolean
---@field show_skip_button boolean
---@field enable_empty_annotation boolean
---@field reveal_preannotations_interactively boolean
---@field show_annotation_history boolean
---@field show_collab_predictions boolean
---@field evaluate_predictions_automatically boolean
---@field token string a secret: never log it
---@field result_count integer
---@field color string
---@field maximum_annotations integer
---@field min_annotations_to_start_training integer
---@field control_weights table<string, any>
---@field model_version string|luahook.Null
---@field data_types table<string, string>
---@field is_draft boolean
---@field is_published boolean
---@field created_at string ISO-8601 UTC
---@field updated_at string ISO-8601 UTC
---@field sampling string
---@field skip_queue string
---@field show_ground_truth_first boolean
---@field show_overlap_first boolean
---@field overlap_cohort_percentage integer
---@field task_data_login string|luahook.Null
---@field task_data_password string|luahook.Null a secret: never log it
---@field pinned_at string|luahook.Null
---@field organization integer
---@field created_by integer|luahook.Null

---A task: its data, no annotations.
---@class (exact) luahook.Task
---@field id integer
---@field data table<string, any> the task's own data, as imported
---@field meta table<string, any>|luahook.Null
---@field created_at string
---@field updated_at string
---@field is_labeled boolean
---@field allow_skip boolean|luahook.Null
---@field overlap integer
---@field inner_id integer|luahook.Null
---@field total_annotations integer
---@field cancelled_annotations integer
---@field total_predictions integer
---@field precomputed_agreement number|luahook.Null
---@field comment_count integer
---@field unresolved_comment_count integer
---@field last_comment_updated_at string|luahook.Null
---@field project integer|luahook.Null
---@field updated_by integer|luahook.Null
---@field file_upload integer|luahook.Null
---@field comment_authors integer[]

---One region of an annotation's result.
---@class (exact) luahook.Region
---@field id string
---@field from_name string the control's name in the labeling config
---@field to_name string the object's name
---@field type string "choices", "labels", "rectanglelabels", ...
---@field value table<string, any> by type: { choices = {...} }, { start, end, labels }, ...
---@field origin string "manual", "prediction", ...

---An annotation. A skip has was_cancelled = true and an empty result.
---@class (exact) luahook.Annotation
---@field id integer
---@field result luahook.Region[]|luahook.Null
---@field was_cancelled boolean true: skipped
---@field ground_truth boolean
---@field created_at string
---@field updated_at string
---@field draft_created_at string|luahook.Null
---@field lead_time number|luahook.Null seconds
---@field prediction table<string, any>
---@field result_count integer
---@field unique_id string
---@field import_id integer|luahook.Null
---@field last_action string|luahook.Null "submitted", "updated", "skipped", "accepted", ...
---@field bulk_created boolean|luahook.Null
---@field task integer
---@field project integer|luahook.Null
---@field completed_by integer|luahook.Null
---@field updated_by integer|luahook.Null
---@field parent_prediction integer|luahook.Null
---@field parent_annotation integer|luahook.Null
---@field last_created_by integer|luahook.Null

---@class (exact) luahook.LabelLink
---@field id integer
---@field from_name string
---@field project integer
---@field label integer

---@class (exact) luahook.Label
---@field id integer
---@field links integer[]
---@field created_at string
---@field updated_at string
---@field value any
---@field title string
---@field description string|luahook.Null
---@field approved boolean
---@field created_by integer
---@field approved_by integer|luahook.Null
---@field organization integer
---@field projects integer[]

---@class (exact) luahook.event.ANNOTATION_CREATED
---@field action "ANNOTATION_CREATED"
---@field annotation luahook.Annotation
---@field task luahook.Task
---@field project luahook.Project

---@class (exact) luahook.event.ANNOTATION_UPDATED
---@field action "ANNOTATION_UPDATED"
---@field annotation luahook.Annotation
---@field task luahook.Task
---@field project luahook.Project

---Annotations created from predictions: `annotation` (singular key) is a list, `task` a
---parallel list.
---@class (exact) luahook.event.ANNOTATIONS_CREATED
---@field action "ANNOTATIONS_CREATED"
---@field annotation luahook.Annotation[]
---@field task luahook.Task[]
---@field project luahook.Project

---@class (exact) luahook.event.ANNOTATIONS_DELETED
---@field action "ANNOTATIONS_DELETED"
---@field annotations luahook.Ref[] ids only
---@field project luahook.Project

---Always a list, even for one task; an import sends every task in one body.
---@class (exact) luahook.event.TASKS_CREATED
---@field action "TASKS_CREATED"
---@field tasks luahook.Task[]
---@field project luahook.Project

---@class (exact) luahook.event.TASKS_DELETED
---@field action "TASKS_DELETED"
---@field tasks luahook.Ref[] ids only
---@field project? luahook.Project absent for "delete all tasks"

---@class (exact) luahook.event.PROJECT_CREATED
---@field action "PROJECT_CREATED"
---@field project luahook.Project

---@class (exact) luahook.event.PROJECT_UPDATED
---@field action "PROJECT_UPDATED"
---@field project luahook.Project

---@class (exact) luahook.event.PROJECT_DELETED
---@field action "PROJECT_DELETED"
---@field project luahook.Ref the id alone

---@class (exact) luahook.event.LABEL_LINK_CREATED
---@field action "LABEL_LINK_CREATED"
---@field label_link luahook.LabelLink[]
---@field project luahook.Project

---@class (exact) luahook.event.LABEL_LINK_UPDATED
---@field action "LABEL_LINK_UPDATED"
---@field label_link luahook.LabelLink
---@field label luahook.Label
---@field project luahook.Project

---@class (exact) luahook.event.LABEL_LINK_DELETED
---@field action "LABEL_LINK_DELETED"
---@field label_link luahook.Ref
---@field project luahook.Project

---Sent to ML backends.
---@class (exact) luahook.event.START_TRAINING
---@field action "START_TRAINING"
---@field project luahook.Project
