#include "api.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "console.h"
#include "journal.h"
#include "journal_query.h"
#include "live.h"
#include "log.h"
#include "state.h"
#include "urlencoded.h"

#define API_PREFIX "/-/api/"

enum { JOB_LIST = 1, JOB_SHOW, JOB_STATS, JOB_REPLAY, JOB_BODY, ROUTE_SESSION, ROUTE_LIVE };

typedef struct job_s job_t;
struct job_s {
    job_t *next;
    uv_work_t work;
    lh_api_t *api;
    lh_conn_t *c; /* a ref held until the answer */
    int kind;
    lh_jq_filter_t f;  /* JOB_LIST; strings point into `args` */
    lh_jq_replay_t rp; /* JOB_REPLAY; keys point into `args` */
    char *key;         /* owned: JOB_SHOW's delivery id, decoded */
    int64_t last_id;   /* JOB_LIST: the last row's */
    char *args;        /* owned: the decoded query, NUL-separated */
    const char **keys; /* owned */
    double now;
    int status; /* the answer's */
    lh_jbuf_t out;
    const char *ctype; /* the answer's; NULL: JSON */
    char extra[200];   /* JOB_BODY: its Content-Disposition */
};

struct lh_api_s {
    lh_app_t *app; /* borrowed */
    char *db_path; /* owned */
    lh_jq_t q;     /* the pool thread's, one job at a time */
    int q_open;
    job_t *head, *tail; /* waiting */
    job_t *running;
};

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

int lh_api_owns(const lh_request_t *r)
{
    return r->path_len >= 3 && memcmp(r->path, "/-/", 3) == 0;
}

static void answer(lh_conn_t *c, int status, const char *extra, const char *body)
{
    lh_console_respond(c, status, extra, "application/json", body, strlen(body));
}

static void answer_error(lh_conn_t *c, int status, const char *extra, const char *msg)
{
    lh_jbuf_t b = {0};
    lh_jbuf_adds(&b, "{\"ok\":false,\"error\":");
    lh_jbuf_str(&b, msg, strlen(msg));
    lh_jbuf_adds(&b, "}");
    if (b.oom)
        answer(c, 500, NULL, "{\"ok\":false,\"error\":\"out of memory\"}");
    else
        answer(c, status, extra, b.p);
    lh_jbuf_free(&b);
}

/* The route of a path: its job kind, or 0; *key: the id in /-/api/events/ID. */
static int route(const lh_request_t *r, const char **key, size_t *keylen)
{
    const char *p = r->path + sizeof(API_PREFIX) - 1;
    size_t n = r->path_len >= sizeof(API_PREFIX) - 1 ? r->path_len - (sizeof(API_PREFIX) - 1) : 0;
    if (r->path_len < sizeof(API_PREFIX) - 1 ||
        memcmp(r->path, API_PREFIX, sizeof(API_PREFIX) - 1) != 0)
        return 0;
    if (n == 6 && memcmp(p, "events", 6) == 0)
        return JOB_LIST;
    if (n == 5 && memcmp(p, "stats", 5) == 0)
        return JOB_STATS;
    if (n == 6 && memcmp(p, "replay", 6) == 0)
        return JOB_REPLAY;
    if (n == 7 && memcmp(p, "session", 7) == 0)
        return ROUTE_SESSION;
    if (n == 4 && memcmp(p, "live", 4) == 0)
        return ROUTE_LIVE;
    if (n > 7 && memcmp(p, "events/", 7) == 0 && memchr(p + 7, '/', n - 7) == NULL) {
        *key = p + 7;
        *keylen = n - 7;
        return JOB_SHOW;
    }
    /* /-/api/events/ID/body: the whole body, to download */
    if (n > 12 && memcmp(p, "events/", 7) == 0 && memcmp(p + n - 5, "/body", 5) == 0 &&
        memchr(p + 7, '/', n - 12) == NULL) {
        *key = p + 7;
        *keylen = n - 12;
        return JOB_BODY;
    }
    return 0;
}

/* GET /-/api/session: the page's CSRF token (none with the token header: scripts need none) */
static void answer_session(lh_conn_t *c, const lh_session_t *s)
{
    char body[160];
    if (s == NULL)
        snprintf(body, sizeof(body), "{\"ok\":true,\"csrf\":null,\"expires\":null}");
    else
        snprintf(body, sizeof(body), "{\"ok\":true,\"csrf\":\"%s\",\"expires\":%.0f}", s->csrf,
                 s->expires);
    answer(c, 200, NULL, body);
}

int lh_api_head(lh_app_t *app, lh_conn_t *c, const lh_request_t *r, const lh_session_t *s)
{
    const char *key;
    size_t keylen;
    int kind = route(r, &key, &keylen);
    if (kind == 0) {
        answer_error(c, 404, NULL,
                     "no such page: luahook's API is GET /-/api/events, /-/api/events/ID, "
                     "/-/api/stats, /-/api/live, /-/api/session and POST /-/api/replay");
        return 1;
    }
    lh_method_t want = kind == JOB_REPLAY ? LH_METHOD_POST : LH_METHOD_GET;
    /* HEAD wherever GET: the same head, no body (conn leaves it out) */
    if (r->method != want && !(want == LH_METHOD_GET && r->method == LH_METHOD_HEAD)) {
        answer_error(c, 405, want == LH_METHOD_POST ? "Allow: POST\r\n" : "Allow: GET, HEAD\r\n",
                     want == LH_METHOD_POST ? "method not allowed: use POST"
                                            : "method not allowed: use GET");
        return 1;
    }
    if (kind == ROUTE_SESSION) {
        answer_session(c, s);
        return 1;
    }
    if (kind == ROUTE_LIVE) {
        lh_jbuf_t b = {0};
        lh_live_json(app, &b);
        if (b.oom || b.p == NULL)
            answer(c, 500, NULL, "{\"ok\":false,\"error\":\"out of memory\"}");
        else
            lh_console_respond(c, 200, NULL, "application/json", b.p, b.len);
        lh_jbuf_free(&b);
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------ query string */

static void job_free(job_t *j)
{
    if (j == NULL)
        return;
    free(j->args);
    free(j->keys);
    free(j->key);
    lh_jbuf_free(&j->out);
    free(j);
}

/* Fills the job from the query string; 0, or -1 with a message in `err`. */
static int parse_query(job_t *j, const lh_request_t *r, char *err, size_t errlen)
{
    const char *q = memchr(r->url, '?', r->url_len);
    size_t qlen = q ? r->url_len - (size_t)(q - r->url) - 1 : 0;
    size_t nkeys = 0;
    if (q != NULL)
        q++;
    if ((j->args = malloc(qlen + 2)) == NULL ||
        (j->keys = calloc(qlen / 2 + 2, sizeof(char *))) == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    char *o = j->args;
    j->f.limit = LH_JQ_DEFAULT_LIMIT;
    for (size_t i = 0; i < qlen;) {
        size_t n = 0;
        while (i + n < qlen && q[i + n] != '&')
            n++;
        const char *part = q + i;
        i += n + 1;
        if (n == 0)
            continue;
        const char *eq = memchr(part, '=', n);
        size_t nlen = eq ? (size_t)(eq - part) : n;
        char name[16];
        if (nlen >= sizeof(name)) {
            snprintf(err, errlen, "unknown parameter '%.*s'", (int)(nlen > 40 ? 40 : nlen), part);
            return -1;
        }
        memcpy(name, part, nlen);
        name[nlen] = '\0';
        char *v = o;
        size_t vlen = eq ? n - nlen - 1 : 0;
        if (lh_url_decode(eq ? eq + 1 : "", vlen, v, vlen + 1) < 0) {
            snprintf(err, errlen, "parameter %s: a bad %%-escape or a NUL byte", name);
            return -1;
        }
        o += strlen(v) + 1;
        int list = j->kind == JOB_LIST, replay = j->kind == JOB_REPLAY;
        if (*v == '\0' && strcmp(name, "dead") != 0 && strcmp(name, "all") != 0) {
            snprintf(err, errlen, "parameter %s: empty value", name);
            return -1;
        }
        if (list && strcmp(name, "status") == 0) {
            int ok = 0;
            for (int k = 0; lh_jq_statuses[k] != NULL; k++)
                ok |= strcmp(v, lh_jq_statuses[k]) == 0;
            if (!ok) {
                snprintf(err, errlen,
                         "status=%.40s: expected pending, ok, retrying, dead, duplicate or none",
                         v);
                return -1;
            }
            j->f.status = v;
        } else if (list && strcmp(name, "action") == 0) {
            j->f.action = v;
        } else if (list && strcmp(name, "q") == 0) {
            if (strlen(v) > 128) {
                snprintf(err, errlen, "q: a delivery id (or its start) is at most 128 bytes");
                return -1;
            }
            j->f.search = v;
        } else if ((list || replay) && strcmp(name, "handler") == 0) {
            j->f.handler = j->rp.handler = v;
        } else if ((list || replay) && strcmp(name, "since") == 0) {
            if (lh_jq_parse_since(v, j->now, &j->f.since) != 0) {
                snprintf(err, errlen,
                         "since=%.40s: expected a time ago (90s, 30m, 1h, 7d) or a UTC date "
                         "(2026-11-27T18:00:00Z)",
                         v);
                return -1;
            }
            j->rp.since = j->f.since;
        } else if (list && (strcmp(name, "before") == 0 || strcmp(name, "limit") == 0)) {
            char *end;
            errno = 0;
            long long x = strtoll(v, &end, 10);
            int limit = name[0] == 'l';
            if (errno != 0 || *end != '\0' || x < 1 || (limit && x > LH_JQ_MAX_LIMIT)) {
                snprintf(err, errlen, "%s=%.40s: expected a number from 1%s", name, v,
                         limit ? " to 1000" : "");
                return -1;
            }
            if (limit)
                j->f.limit = (int)x;
            else
                j->f.before = x;
        } else if (replay && strcmp(name, "id") == 0) {
            j->keys[nkeys++] = v;
        } else if (replay && (strcmp(name, "dead") == 0 || strcmp(name, "all") == 0)) {
            int on = *v == '\0' || strcmp(v, "1") == 0 || strcmp(v, "true") == 0;
            if (!on && strcmp(v, "0") != 0 && strcmp(v, "false") != 0) {
                snprintf(err, errlen, "%s=%.40s: expected 1 or 0", name, v);
                return -1;
            }
            if (name[0] == 'd')
                j->rp.dead = on;
            else
                j->rp.all = on;
        } else {
            snprintf(err, errlen, "unknown parameter '%s'", name);
            return -1;
        }
    }
    j->rp.keys = j->keys;
    j->rp.nkeys = nkeys;
    if (j->kind == JOB_REPLAY) {
        if (j->rp.dead == (nkeys > 0)) {
            snprintf(err, errlen,
                     j->rp.dead ? "give id=... or dead=1, not both"
                                : "give the deliveries (id=..., repeated) or dead=1");
            return -1;
        }
        if (j->rp.all && j->rp.dead) {
            snprintf(err, errlen, "all=1 goes with id=... (dead=1 queues dead runs)");
            return -1;
        }
        if (j->rp.since > 0 && !j->rp.dead) {
            snprintf(err, errlen, "since goes with dead=1");
            return -1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ the jobs */

static int list_row(void *data, const lh_jq_event_t *e)
{
    job_t *j = data;
    if (j->out.len > 0 && j->out.p[j->out.len - 1] != '[')
        lh_jbuf_adds(&j->out, ",");
    lh_jq_event_json(&j->out, e);
    j->last_id = e->id; /* the next page's cursor */
    return 0;
}

static void fail_json(lh_jbuf_t *b, const char *err)
{
    lh_jbuf_free(b);
    lh_jbuf_adds(b, "{\"ok\":false,\"error\":");
    lh_jbuf_str(b, err, strlen(err));
    lh_jbuf_adds(b, "}");
}

/* JOB_BODY's: the whole body, masked as show masks it, pretty-printed; a body that is no
** JSON comes as one JSON string of its text (masked too): the API only ever answers JSON. */
static int body_event(void *data, const lh_jq_event_t *e, const char *headers, const char *body,
                      size_t body_len)
{
    job_t *j = data;
    char why[128], name[96];
    size_t k = 0;
    (void)headers;
    /* the file's name from the delivery id: only what needs no quoting */
    for (const char *p = e->delivery; p != NULL && *p != '\0' && k < 64; p++)
        if (isalnum((unsigned char)*p) || *p == '-' || *p == '_' || *p == '.')
            name[k++] = *p;
    name[k] = '\0';
    if (lh_jq_json_masked(&j->out, body, body_len, 2, why, sizeof(why)) != 0)
        lh_jq_text_masked(&j->out, body, body_len);
    lh_jbuf_adds(&j->out, "\n");
    snprintf(j->extra, sizeof(j->extra),
             "Content-Disposition: attachment; filename=\"delivery-%s.json\"\r\n", name);
    return 0;
}

static int no_run(void *data, const lh_jq_run_t *r)
{
    (void)data, (void)r;
    return 0;
}

static int no_attempt(void *data, const lh_jq_run_t *r, const lh_jq_attempt_t *a)
{
    (void)data, (void)r, (void)a;
    return 0;
}

/* On a pool thread: the query, its answer in j->out and j->status. */
static void on_work(uv_work_t *w)
{
    job_t *j = w->data;
    lh_api_t *api = j->api;
    char err[4096];
    lh_jbuf_t *b = &j->out;
    int rc, more = 0;
    if (!api->q_open) {
        if (lh_jq_open(&api->q, api->db_path, 1, err, sizeof(err)) != 0) {
            j->status = 503;
            fail_json(b, err);
            return;
        }
        api->q_open = 1;
    }
    j->status = 200;
    switch (j->kind) {
    case JOB_LIST:
        lh_jbuf_adds(b, "{\"ok\":true,\"events\":[");
        if (lh_jq_list(&api->q, &j->f, list_row, j, &more, err, sizeof(err)) != 0)
            goto fail;
        if (more)
            lh_jbuf_addf(b, "],\"next\":%lld}", (long long)j->last_id);
        else
            lh_jbuf_adds(b, "],\"next\":null}");
        break;
    case JOB_SHOW:
        lh_jbuf_adds(b, "{\"ok\":true,\"event\":");
        rc = lh_jq_show_json_max(&api->q, j->key, LH_JQ_BODY_SHOWN, b, err, sizeof(err));
        if (rc < 0)
            goto fail;
        if (rc == 0) {
            j->status = 404;
            snprintf(err, sizeof(err), "no such delivery: %s", j->key);
            fail_json(b, err);
            return;
        }
        lh_jbuf_adds(b, "}");
        break;
    case JOB_BODY: {
        lh_jq_show_t cb = {j, body_event, no_run, no_attempt};
        rc = lh_jq_show(&api->q, j->key, &cb, err, sizeof(err));
        if (rc < 0)
            goto fail;
        if (rc == 0) {
            j->status = 404;
            j->ctype = NULL;
            j->extra[0] = '\0';
            snprintf(err, sizeof(err), "no such delivery: %s", j->key);
            fail_json(b, err);
            return;
        }
        break;
    }
    case JOB_STATS:
        lh_jbuf_adds(b, "{\"ok\":true,\"stats\":");
        if (lh_jq_stats_json(&api->q, b, err, sizeof(err)) != 0)
            goto fail;
        lh_jbuf_adds(b, "}");
        break;
    case JOB_REPLAY: {
        lh_jbuf_t res = {0}, unknown = {0};
        rc = lh_jq_replay(&api->q, &j->rp, j->now, &res, &unknown, err, sizeof(err));
        if (rc >= 0 && !res.oom) {
            lh_jbuf_adds(b, "{\"ok\":true,");
            lh_jbuf_adds(b, res.p + 1);
        } else if (rc == -2) {
            j->status = 404;
            fail_json(b, err);
            b->len--; /* reopen: add the list */
            lh_jbuf_adds(b, ",\"unknown\":");
            lh_jbuf_adds(b, unknown.p ? unknown.p : "[]");
            lh_jbuf_adds(b, "}");
        }
        lh_jbuf_free(&res);
        lh_jbuf_free(&unknown);
        if (rc == -1)
            goto fail;
        break;
    }
    default:
        assert(0);
    }
    if (b->oom) {
        snprintf(err, sizeof(err), "out of memory");
        goto fail;
    }
    return;
fail:
    j->status = 500;
    fail_json(b, err);
}

static void start_next(lh_api_t *api);

static void on_work_done(uv_work_t *w, int status)
{
    job_t *j = w->data;
    lh_api_t *api = j->api;
    assert(api->running == j);
    api->running = NULL;
    /* never cancelled: every queued job runs */
    (void)status;
    if (j->status >= 500 && j->out.p != NULL) /* the database's trouble: the operator's too */
        LH_LOG(LH_ERROR, "api: %d %s", j->status, j->out.p);
    if (lh_conn_is_open(j->c)) {
        if (j->out.oom || j->out.p == NULL)
            answer(j->c, 500, NULL, "{\"ok\":false,\"error\":\"out of memory\"}");
        else
            lh_console_respond(j->c, j->status, j->extra[0] ? j->extra : NULL,
                               j->ctype ? j->ctype : "application/json", j->out.p, j->out.len);
    }
    lh_conn_unref(j->c);
    job_free(j);
    start_next(api);
}

/* Queues the running job's query on the pool; 0, or -1 when it could not (answered). */
static int run_job(lh_api_t *api)
{
    job_t *j = api->running;
    j->work.data = j;
    int rc = uv_queue_work(api->app->loop, &j->work, on_work, on_work_done);
    if (rc == 0)
        return 0;
    api->running = NULL; /* the callbacks never run: answer here */
    if (lh_conn_is_open(j->c))
        answer_error(j->c, 500, NULL, uv_strerror(rc));
    lh_conn_unref(j->c);
    job_free(j);
    return -1;
}

/* The index caught up with every event answered before the job started. */
static void index_ready(void *data)
{
    lh_api_t *api = data;
    if (run_job(api) != 0)
        start_next(api);
}

static void start_next(lh_api_t *api)
{
    while (api->running == NULL && api->head != NULL) {
        job_t *j = api->head;
        api->head = j->next;
        if (api->head == NULL)
            api->tail = NULL;
        api->running = j;
        /* an event answered 200 is in the log at once and in the database (the log's index)
        ** a few ms later: the API reads its own server's events */
        if (lh_journal_index_wait(api->app->journal, index_ready, api))
            return;
        if (run_job(api) == 0)
            return;
    }
}

static lh_api_t *api_get(lh_app_t *app)
{
    if (app->api != NULL)
        return app->api;
    lh_api_t *api = calloc(1, sizeof(*api));
    if (api == NULL || (api->db_path = strdup(lh_state_path(app->state))) == NULL) {
        free(api);
        return NULL;
    }
    api->app = app;
    app->api = api;
    return api;
}

void lh_api_request(lh_app_t *app, lh_conn_t *c, const lh_request_t *r)
{
    char err[512];
    const char *key = NULL;
    size_t keylen = 0;
    int kind = route(r, &key, &keylen);
    assert(kind != 0); /* lh_api_head answered the others */
    if (app->state == NULL) {
        answer_error(c, 404, NULL,
                     "no journal: this server runs without --state-dir, so nothing is kept");
        return;
    }
    lh_api_t *api = api_get(app);
    job_t *j = calloc(1, sizeof(*j));
    if (api == NULL || j == NULL) {
        free(j);
        answer(c, 500, NULL, "{\"ok\":false,\"error\":\"out of memory\"}");
        return;
    }
    j->api = api;
    j->kind = kind;
    j->now = now_s();
    if (parse_query(j, r, err, sizeof(err)) != 0) {
        job_free(j);
        answer_error(c, 400, NULL, err);
        return;
    }
    if (kind == JOB_SHOW || kind == JOB_BODY) {
        char *k = malloc(keylen + 1);
        if (k == NULL || lh_url_decode(key, keylen, k, keylen + 1) < 0) {
            free(k);
            job_free(j);
            answer_error(c, 400, NULL, "the delivery id: a bad %-escape or a NUL byte");
            return;
        }
        j->key = k;
    }
    j->c = c;
    lh_conn_ref(c);
    if (api->tail != NULL)
        api->tail->next = j;
    else
        api->head = j;
    api->tail = j;
    start_next(api);
}

void lh_api_free(lh_api_t *api)
{
    if (api == NULL)
        return;
    assert(api->running == NULL && api->head == NULL);
    if (api->q_open)
        lh_jq_close(&api->q);
    free(api->db_path);
    free(api);
}
