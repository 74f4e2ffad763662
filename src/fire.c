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
    uv_timer_t linger;
    uint64_t linger_until;
    int status; /* 0 until answered */
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

static void on_handler(void *data, const char *label, lh_outcome_t outcome, const char *err,
                       double secs)
{
    fire_state_t *st = data;
    st->ran++;
    if (outcome == LH_OUTCOME_OK) {
        printf("ok   %s  (%.1f ms)\n", label, secs * 1000);
    } else {
        st->failed++;
        if (outcome == LH_OUTCOME_ERROR)
            printf("FAIL %s  %s\n", label, err ? err : "");
        else
            printf("FAIL %s  [%s] %s\n", label, lh_metrics_outcome_name(outcome), err ? err : "");
    }
    fflush(stdout);
}

/* After the answer: timers that handlers (or scripts at load) armed once still run, up
** to --handler-timeout; `every` timers never end, so they are not waited for. */
static void on_linger(uv_timer_t *t)
{
    fire_state_t *st = t->data;
    if ((st->app->tasks == 0 && lh_timer_pending_once(st->app->vm) == 0) ||
        uv_hrtime() > st->linger_until)
        uv_stop(st->loop);
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
    st->linger_until = uv_hrtime() + (uint64_t)(st->app->cfg->handler_timeout * 1e9);
    uv_timer_start(&st->linger, on_linger, 0, 10);
}

int lh_fire_run(lh_app_t *app)
{
    const lh_config_t *cfg = app->cfg;
    fire_state_t st = {.loop = app->loop, .app = app};
    size_t len = 0;
    char *body = load_event(cfg, &len);
    if (body == NULL)
        return 2;
    app->action_override = cfg->fire_action;

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
    app->on_handler_done = on_handler;
    app->observer_data = &st;
    uv_timer_init(app->loop, &st.linger);
    st.linger.data = &st;
    lh_dispatch_event(app, &req, "fire", on_reply, &st);
    uv_run(app->loop, UV_RUN_DEFAULT); /* until on_linger (or a refusal) stops it */
    uv_close((uv_handle_t *)&st.linger, NULL);
    uv_run(app->loop, UV_RUN_NOWAIT);
    app->on_handler_done = NULL;
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
