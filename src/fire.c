#include "fire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <lauxlib.h>

#include "request.h"
#include "dispatch.h"
#include "embedded.h"
#include "lib.h"
#include "vm.h"

typedef struct {
    uv_loop_t *loop;
    lh_app_t *app;
    uv_timer_t deadline; /* after the answer: how long one-shot timers are waited for */
    int status;          /* 0 until answered */
    int failed, ran;
    char error[512];
} fire_state_t;

static char *read_all(FILE *f, size_t *len)
{
    size_t cap = 65536, n = 0;
    char *buf = malloc(cap + 1);
    while (buf != NULL) {
        size_t got = fread(buf + n, 1, cap - n, f);
        n += got;
        if (got == 0)
            break;
        if (n == cap) {
            char *nb = realloc(buf, cap * 2 + 1);
            if (nb == NULL) {
                free(buf);
                return NULL;
            }
            buf = nb, cap *= 2;
        }
    }
    if (buf != NULL) {
        buf[n] = '\0';
        *len = n;
    }
    return buf;
}

/* The body: a sample, a file or stdin. NULL after printing why. */
static char *load_event(const lh_config_t *cfg, size_t *len)
{
    if (cfg->sample != NULL) {
        char name[160];
        snprintf(name, sizeof(name), "samples/%s.json", cfg->sample);
        const lh_embedded_t *e = lh_embedded_find(name);
        if (e == NULL) {
            fprintf(stderr, "luahook fire: no sample for '%s'; samples:", cfg->sample);
            for (const lh_embedded_t *s = lh_embedded; s->name != NULL; s++)
                if (strncmp(s->name, "samples/", 8) == 0)
                    fprintf(stderr, " %.*s", (int)(strlen(s->name) - 13), s->name + 8);
            fputc('\n', stderr);
            return NULL;
        }
        char *copy = malloc(e->len + 1);
        if (copy != NULL) {
            memcpy(copy, e->data, e->len + 1);
            *len = e->len;
        }
        return copy;
    }
    int from_stdin = strcmp(cfg->event_path, "-") == 0;
    FILE *f = from_stdin ? stdin : fopen(cfg->event_path, "rb");
    if (f == NULL) {
        fprintf(stderr, "luahook fire: cannot open %s: %s\n", cfg->event_path, strerror(errno));
        return NULL;
    }
    char *body = read_all(f, len);
    if (!from_stdin)
        fclose(f);
    if (body == NULL)
        fprintf(stderr, "luahook fire: cannot read %s\n", cfg->event_path);
    return body;
}

/* One handler run, or one timer callback run, ended: its line on stdout. `what` is the
** handler's stable id and its file:line ("notify.lua#1  notify.lua:44"), or "timer
** file:line". */
static void report_run(fire_state_t *st, const char *what, lh_outcome_t outcome, const char *err,
                       double secs)
{
    st->ran++;
    if (outcome == LH_OUTCOME_OK) {
        printf("ok   %s  (%.1f ms)\n", what, secs * 1000);
    } else {
        st->failed++;
        if (outcome == LH_OUTCOME_ERROR)
            printf("FAIL %s  %s\n", what, err ? err : "");
        else
            printf("FAIL %s  [%s] %s\n", what, lh_metrics_outcome_name(outcome), err ? err : "");
    }
    fflush(stdout);
}

static void on_handler_done(void *data, const lh_event_t *e, const lh_handler_t *h,
                            lh_outcome_t outcome, const char *err, double secs)
{
    char what[1024];
    (void)e;
    snprintf(what, sizeof(what), "%s  %s", h->id, h->label);
    report_run(data, what, outcome, err, secs);
}

static void on_timer_done(void *data, const char *label, lh_outcome_t outcome, const char *err,
                          double secs)
{
    report_run(data, label, outcome, err, secs);
}

/* Done once answered, no run is left and no one-shot timer waits: timers that handlers
** (or scripts at load) armed once still run; `every` timers never end, so they are not
** waited for. Checked when the answer comes and whenever the last run ends (a pending
** timer changes only while a run or the load goes on). */
static void check_done(fire_state_t *st)
{
    if (st->status != 0 && st->app->tasks == 0 && lh_timer_pending_once(st->app->vm) == 0)
        uv_stop(st->loop);
}

static void on_tasks_drained(lh_app_t *app)
{
    check_done(app->drained_data);
}

static void on_deadline(uv_timer_t *t)
{
    fire_state_t *st = t->data;
    uv_stop(st->loop); /* what still waits is stopped by main */
}

static void on_reply(void *data, int status, const char *extra, const char *body, size_t len)
{
    fire_state_t *st = data;
    (void)extra;
    st->status = status;
    if (status != 200 && status != 500) {
        snprintf(st->error, sizeof(st->error), "%.*s", (int)len, body);
        uv_stop(st->loop);
        return;
    }
    int rc = uv_timer_start(&st->deadline, on_deadline,
                            (uint64_t)(st->app->cfg->handler_timeout * 1000), 0);
    if (rc != 0) { /* no deadline: do not wait without one */
        uv_stop(st->loop);
        return;
    }
    check_done(st);
}

int lh_fire_run(lh_app_t *app)
{
    const lh_config_t *cfg = app->cfg;
    fire_state_t st = {.loop = app->loop, .app = app};
    size_t len = 0;
    char *body = load_event(cfg, &len);
    if (body == NULL)
        return 2;

    lh_header_t headers[] = {
        {"content-type", "application/json", 12, 16},
        {"user-agent", "luahook-fire/" LH_VERSION, 10, strlen("luahook-fire/" LH_VERSION)},
    };
    struct timeval tv;
    gettimeofday(&tv, NULL);
    lh_request_t req = {
        .method = LH_METHOD_POST,
        .method_name = "POST",
        .path = "/",
        .path_len = 1,
        .url = "/",
        .url_len = 1,
        .headers = headers,
        .nheaders = 2,
        .body = body,
        .body_len = len,
        .received_ns = uv_hrtime(),
        .received_at = (double)tv.tv_sec + (double)tv.tv_usec / 1e6,
    };
    lh_dispatch_observer_t observer = {.handler_done = on_handler_done, .data = &st};
    lh_timer_observer_t timers = {.run_done = on_timer_done, .data = &st};
    lh_dispatch_input_t in = {
        .req = &req,
        .remote = "fire",
        .attempt = 1,
        .action = cfg->fire_action,
        .reply = on_reply,
        .reply_data = &st,
        .observer = &observer,
    };
    int rc = uv_timer_init(app->loop, &st.deadline);
    if (rc != 0) {
        fprintf(stderr, "luahook fire: cannot start a timer: %s\n", uv_strerror(rc));
        free(body);
        return 2;
    }
    st.deadline.data = &st;
    app->vm->timer_observer = &timers;
    app->on_tasks_drained = on_tasks_drained;
    app->drained_data = &st;
    lh_dispatch_submit(app, &in);
    uv_run(app->loop, UV_RUN_DEFAULT); /* until check_done, the deadline or a refusal stops it */
    app->on_tasks_drained = NULL;
    app->vm->timer_observer = NULL;
    uv_close((uv_handle_t *)&st.deadline, NULL);
    uv_run(app->loop, UV_RUN_NOWAIT);
    free(body);
    if (st.status != 200 && st.status != 500) {
        fprintf(stderr, "luahook fire: the event was refused (%d): %s\n", st.status, st.error);
        return 1;
    }
    if (st.ran == 0)
        printf("no handler ran for this action\n");
    printf("%d passed, %d failed\n", st.ran - st.failed, st.failed);
    return st.failed ? 1 : 0;
}
