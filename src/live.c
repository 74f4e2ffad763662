#include "live.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "vm.h"

enum { EVENTS, FAILURES, RETRIES, NSERIES };

struct lh_live_s {
    lh_app_t *app; /* borrowed */
    uv_timer_t tick;
    int closing;
    double started;
    int64_t minute;              /* the minute being counted (Unix time / 60) */
    uint64_t base[NSERIES];      /* the totals when it began */
    int64_t at[LH_LIVE_MINUTES]; /* which minute each slot holds */
    uint64_t ring[LH_LIVE_MINUTES][NSERIES];
};

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void totals(const lh_metrics_t *m, uint64_t t[NSERIES], uint64_t *rejected)
{
    memset(t, 0, NSERIES * sizeof(*t));
    for (size_t i = 0; i <= LH_METRICS_MAX_ACTIONS; i++) { /* the last: "_other" */
        const lh_action_stats_t *a = &m->actions[i];
        t[EVENTS] += a->received;
        t[FAILURES] +=
            a->runs[LH_OUTCOME_ERROR] + a->runs[LH_OUTCOME_TIMEOUT] + a->runs[LH_OUTCOME_MEMORY];
    }
    t[RETRIES] = m->journal_retries;
    if (rejected != NULL) {
        *rejected = 0;
        for (int k = 0; k < LH_REJECT_COUNT_; k++)
            *rejected += m->rejected[k];
    }
}

/* Closes the minute being counted when the clock has left it. */
static void roll(lh_live_t *l, double now)
{
    int64_t cur = (int64_t)floor(now / 60);
    if (cur <= l->minute)
        return;
    uint64_t t[NSERIES];
    totals(&l->app->metrics, t, NULL);
    size_t slot = (size_t)(l->minute % LH_LIVE_MINUTES);
    l->at[slot] = l->minute;
    for (int k = 0; k < NSERIES; k++)
        l->ring[slot][k] = t[k] - l->base[k];
    memcpy(l->base, t, sizeof(t));
    l->minute = cur;
}

static void on_tick(uv_timer_t *t);

static void arm_next(lh_live_t *l)
{
    double now = now_s();
    double wait = (floor(now / 60) + 1) * 60 - now;
    uv_timer_start(&l->tick, on_tick, (uint64_t)(wait * 1000) + 20, 0);
}

static void on_tick(uv_timer_t *t)
{
    lh_live_t *l = t->data;
    roll(l, now_s());
    arm_next(l);
}

lh_live_t *lh_live_new(lh_app_t *app)
{
    lh_live_t *l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    if (uv_timer_init(app->loop, &l->tick) != 0) {
        free(l);
        return NULL;
    }
    l->app = app;
    l->tick.data = l;
    l->started = now_s();
    l->minute = (int64_t)floor(l->started / 60);
    for (size_t i = 0; i < LH_LIVE_MINUTES; i++)
        l->at[i] = -1;
    totals(&app->metrics, l->base, NULL);
    arm_next(l);
    uv_unref((uv_handle_t *)&l->tick); /* never what keeps the loop alive */
    return l;
}

void lh_live_close(lh_live_t *l)
{
    if (l == NULL || l->closing)
        return;
    l->closing = 1;
    uv_close((uv_handle_t *)&l->tick, NULL);
}

void lh_live_free(lh_live_t *l)
{
    free(l);
}

static void num(lh_jbuf_t *b, const char *key, uint64_t v)
{
    lh_jbuf_addf(b, "\"%s\":%llu", key, (unsigned long long)v);
}

/* "recipes/notify/recipe.lua", "bundled:notify/recipe.lua" -> "notify" */
static void recipe_name(lh_jbuf_t *b, const char *path)
{
    const char *end = strrchr(path, '/'), *start;
    if (end == NULL) {
        lh_jbuf_adds(b, "null");
        return;
    }
    start = end;
    while (start > path && start[-1] != '/' && start[-1] != ':')
        start--;
    lh_jbuf_str(b, start, (size_t)(end - start));
}

static void scripts_json(lh_jbuf_t *b, const lh_vm_t *vm)
{
    lh_jbuf_adds(b, "\"scripts\":[");
    for (size_t i = 0; vm != NULL && i < vm->nscripts; i++) {
        const lh_script_t *sc = &vm->scripts[i];
        lh_jbuf_adds(b, i ? ",{\"file\":" : "{\"file\":");
        lh_jbuf_str(b, sc->name, strlen(sc->name));
        lh_jbuf_adds(b, ",\"path\":");
        lh_jbuf_str(b, sc->path, strlen(sc->path));
        lh_jbuf_addf(b, ",\"instance\":%s,\"handlers\":[", sc->site_file ? "true" : "false");
        int first = 1;
        for (size_t k = 0; k < vm->nhandlers; k++) {
            const lh_handler_t *h = &vm->handlers[k];
            if (h->script_id != (int)i)
                continue;
            char site[600];
            snprintf(site, sizeof(site), "%s:%d", h->script, h->line);
            lh_jbuf_adds(b, first ? "{\"handler\":" : ",{\"handler\":");
            first = 0;
            lh_jbuf_str(b, h->id, strlen(h->id));
            lh_jbuf_adds(b, ",\"action\":");
            lh_jbuf_str(b, h->actions, strlen(h->actions));
            lh_jbuf_adds(b, ",\"site\":");
            lh_jbuf_str(b, site, strlen(site));
            lh_jbuf_adds(b, ",\"label\":");
            lh_jbuf_str(b, h->label, strlen(h->label));
            lh_jbuf_adds(b, ",\"recipe\":");
            if (sc->site_file != NULL)
                recipe_name(b, sc->path);
            else
                lh_jbuf_adds(b, "null");
            lh_jbuf_adds(b, "}");
        }
        lh_jbuf_adds(b, "]}");
    }
    lh_jbuf_adds(b, "],\"instances\":[");
    int first = 1;
    for (size_t i = 0; vm != NULL && i < vm->nscripts; i++) {
        const lh_script_t *sc = &vm->scripts[i];
        if (sc->site_file == NULL)
            continue;
        char site[600];
        snprintf(site, sizeof(site), "%s:%d", sc->site_file, sc->site_line);
        lh_jbuf_adds(b, first ? "{\"name\":" : ",{\"name\":");
        first = 0;
        lh_jbuf_str(b, sc->name, strlen(sc->name));
        lh_jbuf_adds(b, ",\"recipe\":");
        recipe_name(b, sc->path);
        lh_jbuf_adds(b, ",\"site\":");
        lh_jbuf_str(b, site, strlen(site));
        lh_jbuf_adds(b, "}");
    }
    lh_jbuf_adds(b, "]");
}

static void series_json(lh_jbuf_t *b, lh_live_t *l, double now, const uint64_t t[NSERIES])
{
    static const char *const names[NSERIES] = {"events", "failures", "retries"};
    int64_t cur = (int64_t)floor(now / 60);
    lh_jbuf_addf(b, "\"series\":{\"step\":60,\"start\":%lld",
                 (long long)((cur - LH_LIVE_MINUTES + 1) * 60));
    for (int k = 0; k < NSERIES; k++) {
        lh_jbuf_addf(b, ",\"%s\":[", names[k]);
        for (int64_t m = cur - LH_LIVE_MINUTES + 1; m <= cur; m++) {
            uint64_t v = 0;
            size_t slot = (size_t)(m % LH_LIVE_MINUTES);
            if (l != NULL && m == cur)
                v = t[k] - l->base[k];
            else if (l != NULL && l->at[slot] == m)
                v = l->ring[slot][k];
            lh_jbuf_addf(b, m == cur ? "%llu]" : "%llu,", (unsigned long long)v);
        }
    }
    lh_jbuf_adds(b, "}");
}

void lh_live_json(lh_app_t *app, lh_jbuf_t *b)
{
    const lh_metrics_t *m = &app->metrics;
    const lh_reload_result_t *rl = &app->last_reload;
    lh_live_t *l = app->live;
    double now = now_s();
    uint64_t t[NSERIES], rejected;
    if (l != NULL)
        roll(l, now); /* a late tick: the picture is still right */
    totals(m, t, &rejected);
    lh_jbuf_adds(b, "{\"ok\":true,\"version\":\"" LH_VERSION "\",");
    lh_jbuf_addf(b, "\"now\":%.3f,\"uptime\":%.3f,\"journal\":%s,", now,
                 l != NULL ? now - l->started : 0.0, app->journal != NULL ? "true" : "false");
    lh_jbuf_addf(b, "\"vm\":{\"generation\":%llu,\"reload\":{\"at\":",
                 (unsigned long long)(app->vm ? app->vm->generation : 0));
    if (rl->at > 0) {
        lh_jbuf_addf(b, "%.3f,\"ok\":%s,\"problems\":[", rl->at, rl->ok ? "true" : "false");
        for (int i = 0; i < rl->nproblems && i < LH_RELOAD_PROBLEMS_KEPT; i++) {
            if (i)
                lh_jbuf_adds(b, ",");
            lh_jbuf_str(b, rl->problems[i], strlen(rl->problems[i]));
        }
        lh_jbuf_addf(b, "],\"nproblems\":%d},", rl->nproblems);
    } else {
        lh_jbuf_adds(b, "null,\"ok\":null,\"problems\":[],\"nproblems\":0},");
    }
    num(b, "reloads_ok", m->reloads_ok);
    lh_jbuf_adds(b, ",");
    num(b, "reloads_failed", m->reloads_failed);
    lh_jbuf_adds(b, "},");
    scripts_json(b, app->vm);
    lh_jbuf_adds(b, ",\"totals\":{");
    num(b, "events", t[EVENTS]);
    lh_jbuf_adds(b, ",");
    num(b, "failures", t[FAILURES]);
    lh_jbuf_adds(b, ",");
    num(b, "retries", t[RETRIES]);
    lh_jbuf_adds(b, ",");
    num(b, "rejected", rejected);
    lh_jbuf_addf(b, ",\"runs_in_flight\":%d},\"journal_stats\":", app->tasks);
    if (app->journal != NULL && m->journal_on) {
        /* the journal's own count, as /metrics shows it (the loop has it: no query) */
        lh_jbuf_adds(b, "{");
        num(b, "pending", m->journal_runs[0] + m->journal_runs[1]);
        lh_jbuf_adds(b, ",");
        num(b, "running", m->journal_runs[1]);
        lh_jbuf_adds(b, ",");
        num(b, "retrying", m->journal_runs[3]);
        lh_jbuf_adds(b, ",");
        num(b, "dead", m->journal_runs[4]);
        lh_jbuf_adds(b, ",\"oldest_pending_age\":");
        if (m->journal_oldest_age > 0)
            lh_jbuf_addf(b, "%.3f", m->journal_oldest_age);
        else
            lh_jbuf_adds(b, "null");
        lh_jbuf_addf(b, ",\"bytes\":%llu},", (unsigned long long)m->journal_bytes);
    } else {
        lh_jbuf_adds(b, "null,");
    }
    series_json(b, l, now, t);
    lh_jbuf_adds(b, "}");
}
