#include "metrics.h"

#include <stddef.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_escape.h"

static const double bucket_bounds[LH_METRICS_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05,
                                                         0.1,    0.25,  0.5,    1,     5,    30};

static const char *const reject_names[LH_REJECT_COUNT_] = {
    "invalid_json", "not_object", "no_action", "unauthorized", "too_large", "headers_too_large",
    "method",       "timeout",    "overload",  "bad_request",  "journal"};

static char other_name[] = "_other";

static const char *const outcome_names[LH_OUTCOME_COUNT_] = {"ok", "error", "timeout", "memory"};

void lh_metrics_init(lh_metrics_t *m)
{
    memset(m, 0, sizeof(*m));
    m->actions[LH_METRICS_MAX_ACTIONS].name = other_name;
    m->actions[LH_METRICS_MAX_ACTIONS].nlen = 6;
    m->handlers[LH_METRICS_MAX_HANDLERS].id = other_name;
}

void lh_metrics_dispose(lh_metrics_t *m)
{
    free(m->text);
    free(m->text_of);
    for (size_t i = 0; i < m->nactions; i++)
        free(m->actions[i].name);
    for (size_t i = 0; i < m->nhandlers; i++) {
        free(m->handlers[i].id);
        free(m->handlers[i].site);
    }
    memset(m, 0, sizeof(*m));
}

const char *lh_metrics_reject_name(lh_reject_t r)
{
    return reject_names[r];
}

const char *lh_metrics_outcome_name(lh_outcome_t o)
{
    return outcome_names[o];
}

lh_action_stats_t *lh_metrics_action(lh_metrics_t *m, const char *action, size_t len)
{
    /* a linear scan: a handful of Label Studio actions, the busiest found first */
    for (size_t i = 0; i < m->nactions; i++) {
        lh_action_stats_t *a = &m->actions[i];
        if (a->nlen == len && memcmp(a->name, action, len) == 0)
            return a;
    }
    if (m->nactions < LH_METRICS_MAX_ACTIONS && len <= 64 && memchr(action, '\0', len) == NULL) {
        lh_action_stats_t *a = &m->actions[m->nactions];
        if ((a->name = strndup(action, len)) != NULL) {
            a->nlen = len;
            m->nactions++;
            return a;
        }
    }
    return &m->actions[LH_METRICS_MAX_ACTIONS];
}

void lh_metrics_handler_done(lh_action_stats_t *a, lh_outcome_t outcome, double seconds)
{
    a->runs[outcome]++;
    a->duration_sum += seconds;
    a->duration_count++;
    for (int i = 0; i < LH_METRICS_BUCKETS; i++) {
        if (seconds <= bucket_bounds[i]) {
            a->buckets[i]++;
            break;
        }
    }
}

void lh_metrics_handler_site(lh_handler_stats_t *s, const char *site, const char *recipe)
{
    char *copy = NULL;
    if (s == NULL || s->id == NULL) /* "_other" has no site */
        return;
    if (site != NULL) {
        size_t n = strlen(site) + strlen(recipe) + 2;
        if ((copy = malloc(n)) == NULL)
            return;
        snprintf(copy, n, "%s%c%s", site, '\0', recipe); /* two strings in one block */
    }
    free(s->site);
    s->site = copy;
    s->site_changes++;
}

lh_handler_stats_t *lh_metrics_handler(lh_metrics_t *m, const char *id)
{
    for (size_t i = 0; i < m->nhandlers; i++)
        if (strcmp(m->handlers[i].id, id) == 0)
            return &m->handlers[i];
    if (m->nhandlers < LH_METRICS_MAX_HANDLERS) {
        lh_handler_stats_t *h = &m->handlers[m->nhandlers];
        if ((h->id = strdup(id)) != NULL) {
            m->nhandlers++;
            return h;
        }
    }
    return &m->handlers[LH_METRICS_MAX_HANDLERS];
}

typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} out_t;

static void outf(out_t *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void outf(out_t *o, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        if (o->failed)
            return;
        va_start(ap, fmt);
        int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t ncap = o->cap * 2 + (size_t)n;
        char *np = realloc(o->p, ncap);
        if (np == NULL) {
            o->failed = 1;
            return;
        }
        o->p = np, o->cap = ncap;
    }
}

/* One series per big-body phase (lh_big_phase_t). */
static void by_phase(out_t *o, const char *name, const char *type, const char *help,
                     const double v[3])
{
    static const char *const phases[3] = {"check", "build", "collect"};
    outf(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (int i = 0; i < 3; i++)
        outf(o, "%s{phase=\"%s\"} %.9g\n", name, phases[i], v[i]);
}

/* Action names come from the network, handler ids from file names: written as Prometheus
** label values, which escape only '\\', '"' and newline and must be UTF-8. Any other control
** character (CR, ESC, C1) and any byte that is not UTF-8 becomes U+FFFD: a scraper that
** splits lines or a terminal that shows them sees nothing it would obey. Cut between
** characters when buf is short. */
static const char *label(const char *s, char *buf, size_t cap)
{
    size_t j = 0, n = strlen(s);
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        size_t len = lh_utf8_seq(s + i, n - i);
        const char *w = s + i;
        size_t wl = len;
        if (c == '"' || c == '\\')
            w = c == '"' ? "\\\"" : "\\\\", wl = 2;
        else if (c == '\n')
            w = "\\n", wl = 2;
        else if (len == 0 || c < 0x20 || c == 0x7f || (c == 0xC2 && (unsigned char)s[i + 1] < 0xA0))
            w = "\xEF\xBF\xBD", wl = 3;
        if (wl >= cap - j)
            break;
        memcpy(buf + j, w, wl);
        j += wl;
        i += len ? len : 1;
    }
    buf[j] = '\0';
    return buf;
}

/* Named actions always show; "_other" once something fell into it. */
static int shown(const lh_metrics_t *m, size_t i)
{
    const lh_action_stats_t *a = &m->actions[i];
    if (i < m->nactions)
        return 1;
    return i == LH_METRICS_MAX_ACTIONS && (a->received != 0 || a->duration_count != 0);
}

const double lh_metrics_commit_bounds[LH_JOURNAL_COMMIT_BUCKETS] = {
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1};

/* The journal's series (with --state-dir only). */
static void render_journal(out_t *o, const lh_metrics_t *m)
{
    /* by lh_run_state_t; ok runs are not counted (retention keeps days of them) */
    static const char *const states[5] = {"pending", "running", NULL, "retrying", "dead"};
    outf(o, "# HELP luahook_journal_runs Handler runs in the journal not ok, by state.\n"
            "# TYPE luahook_journal_runs gauge\n");
    for (int k = 0; k < 5; k++)
        if (states[k] != NULL)
            outf(o, "luahook_journal_runs{state=\"%s\"} %llu\n", states[k],
                 (unsigned long long)m->journal_runs[k]);
    outf(o,
         "# HELP luahook_journal_oldest_pending_seconds Age of the oldest delivery with a run "
         "not finished.\n"
         "# TYPE luahook_journal_oldest_pending_seconds gauge\n"
         "luahook_journal_oldest_pending_seconds %.3f\n"
         "# HELP luahook_journal_retries_total Attempts after the first that started.\n"
         "# TYPE luahook_journal_retries_total counter\n"
         "luahook_journal_retries_total %llu\n"
         "# HELP luahook_journal_dead_total Runs that became dead.\n"
         "# TYPE luahook_journal_dead_total counter\n"
         "luahook_journal_dead_total %llu\n"
         "# HELP luahook_journal_refused_total Events answered 503 because the journal could "
         "not store them.\n"
         "# TYPE luahook_journal_refused_total counter\n"
         "luahook_journal_refused_total %llu\n"
         "# HELP luahook_journal_pruned_total Deliveries removed by retention.\n"
         "# TYPE luahook_journal_pruned_total counter\n"
         "luahook_journal_pruned_total %llu\n"
         "# HELP luahook_journal_database_bytes Size of the state database and the journal's "
         "log.\n"
         "# TYPE luahook_journal_database_bytes gauge\n"
         "luahook_journal_database_bytes %llu\n"
         "# HELP luahook_journal_log_writes_total Batches written to the journal's log: one "
         "write, and one fdatasync with --sync full, each.\n"
         "# TYPE luahook_journal_log_writes_total counter\n"
         "luahook_journal_log_writes_total %llu\n"
         "# HELP luahook_journal_commit_seconds From an event's accept to its write to the "
         "log, synced.\n"
         "# TYPE luahook_journal_commit_seconds histogram\n",
         m->journal_oldest_age, (unsigned long long)m->journal_retries,
         (unsigned long long)m->journal_dead_total, (unsigned long long)m->journal_refused,
         (unsigned long long)m->journal_pruned, (unsigned long long)m->journal_bytes,
         (unsigned long long)m->journal_log_writes);
    uint64_t cum = 0;
    for (int i = 0; i < LH_JOURNAL_COMMIT_BUCKETS; i++) {
        cum += m->journal_commit_buckets[i];
        outf(o, "luahook_journal_commit_seconds_bucket{le=\"%g\"} %llu\n",
             lh_metrics_commit_bounds[i], (unsigned long long)cum);
    }
    outf(o,
         "luahook_journal_commit_seconds_bucket{le=\"+Inf\"} %llu\n"
         "luahook_journal_commit_seconds_sum %.6f\n"
         "luahook_journal_commit_seconds_count %llu\n",
         (unsigned long long)m->journal_commit_count, m->journal_commit_sum,
         (unsigned long long)m->journal_commit_count);
}

char *lh_metrics_render(const lh_metrics_t *m, size_t *len)
{
    out_t o = {malloc(4096), 0, 4096, 0};
    char lb[512];
    if (o.p == NULL)
        return NULL;

    outf(&o, "# HELP luahook_events_received_total Events accepted, by action.\n"
             "# TYPE luahook_events_received_total counter\n");
    for (size_t i = 0; i <= LH_METRICS_MAX_ACTIONS; i++) {
        const lh_action_stats_t *a = &m->actions[i];
        if (shown(m, i))
            outf(&o, "luahook_events_received_total{action=\"%s\"} %llu\n",
                 label(a->name, lb, sizeof(lb)), (unsigned long long)a->received);
    }
    outf(&o, "# HELP luahook_events_rejected_total Requests refused, by reason.\n"
             "# TYPE luahook_events_rejected_total counter\n");
    for (int r = 0; r < LH_REJECT_COUNT_; r++)
        outf(&o, "luahook_events_rejected_total{reason=\"%s\"} %llu\n", reject_names[r],
             (unsigned long long)m->rejected[r]);
    outf(&o, "# HELP luahook_handler_runs_total Handler runs, by action and outcome.\n"
             "# TYPE luahook_handler_runs_total counter\n");
    for (size_t i = 0; i <= LH_METRICS_MAX_ACTIONS; i++) {
        const lh_action_stats_t *a = &m->actions[i];
        if (!shown(m, i))
            continue;
        label(a->name, lb, sizeof(lb));
        for (int k = 0; k < LH_OUTCOME_COUNT_; k++)
            outf(&o, "luahook_handler_runs_total{action=\"%s\",outcome=\"%s\"} %llu\n", lb,
                 outcome_names[k], (unsigned long long)a->runs[k]);
    }
    outf(&o, "# HELP luahook_handler_runs_by_id_total Handler runs, by handler id and outcome.\n"
             "# TYPE luahook_handler_runs_by_id_total counter\n");
    for (size_t i = 0; i <= LH_METRICS_MAX_HANDLERS; i++) {
        const lh_handler_stats_t *h = &m->handlers[i];
        uint64_t any = 0;
        for (int k = 0; k < LH_OUTCOME_COUNT_; k++)
            any |= h->runs[k];
        if (i >= m->nhandlers && !(i == LH_METRICS_MAX_HANDLERS && any != 0))
            continue;
        label(h->id, lb, sizeof(lb));
        for (int k = 0; k < LH_OUTCOME_COUNT_; k++)
            outf(&o, "luahook_handler_runs_by_id_total{handler=\"%s\",outcome=\"%s\"} %llu\n", lb,
                 outcome_names[k], (unsigned long long)h->runs[k]);
    }
    outf(&o, "# HELP luahook_handler_info Where a recipe instance's handler comes from: its "
             "use() site and recipe.\n"
             "# TYPE luahook_handler_info gauge\n");
    for (size_t i = 0; i < m->nhandlers && i < LH_METRICS_MAX_HANDLERS; i++) {
        const lh_handler_stats_t *h = &m->handlers[i];
        char sb[512], rb[512];
        if (h->site == NULL)
            continue;
        label(h->id, lb, sizeof(lb));
        outf(&o, "luahook_handler_info{handler=\"%s\",site=\"%s\",recipe=\"%s\"} 1\n", lb,
             label(h->site, sb, sizeof(sb)), label(h->site + strlen(h->site) + 1, rb, sizeof(rb)));
    }
    outf(&o, "# HELP luahook_handler_duration_seconds Handler run time (wall clock), by action.\n"
             "# TYPE luahook_handler_duration_seconds histogram\n");
    for (size_t i = 0; i <= LH_METRICS_MAX_ACTIONS; i++) {
        const lh_action_stats_t *a = &m->actions[i];
        if (!shown(m, i) || a->duration_count == 0)
            continue;
        label(a->name, lb, sizeof(lb));
        uint64_t cum = 0;
        for (int b = 0; b < LH_METRICS_BUCKETS; b++) {
            cum += a->buckets[b];
            outf(&o, "luahook_handler_duration_seconds_bucket{action=\"%s\",le=\"%g\"} %llu\n", lb,
                 bucket_bounds[b], (unsigned long long)cum);
        }
        outf(&o, "luahook_handler_duration_seconds_bucket{action=\"%s\",le=\"+Inf\"} %llu\n", lb,
             (unsigned long long)a->duration_count);
        outf(&o, "luahook_handler_duration_seconds_sum{action=\"%s\"} %.9g\n", lb, a->duration_sum);
        outf(&o, "luahook_handler_duration_seconds_count{action=\"%s\"} %llu\n", lb,
             (unsigned long long)a->duration_count);
    }
    outf(&o,
         "# HELP luahook_connections_open Client connections open now.\n"
         "# TYPE luahook_connections_open gauge\n"
         "luahook_connections_open %lld\n"
         "# HELP luahook_connections_total Client connections accepted.\n"
         "# TYPE luahook_connections_total counter\n"
         "luahook_connections_total %llu\n"
         "# HELP luahook_connections_buffered Connections holding request buffers (a request "
         "read or handled now); an idle keep-alive connection holds none.\n"
         "# TYPE luahook_connections_buffered gauge\n"
         "luahook_connections_buffered %lld\n"
         "# HELP luahook_vm_generation Generation of the Lua VM serving new events.\n"
         "# TYPE luahook_vm_generation gauge\n"
         "luahook_vm_generation %llu\n"
         "# HELP luahook_reloads_total Script reloads, by result.\n"
         "# TYPE luahook_reloads_total counter\n"
         "luahook_reloads_total{result=\"ok\"} %llu\n"
         "luahook_reloads_total{result=\"failed\"} %llu\n"
         "# HELP luahook_reload_duration_seconds How long the last reload took.\n"
         "# TYPE luahook_reload_duration_seconds gauge\n"
         "luahook_reload_duration_seconds %.6f\n",
         (long long)m->connections_open, (unsigned long long)m->connections_total,
         (long long)m->connections_buffered, (unsigned long long)m->vm_generation,
         (unsigned long long)m->reloads_ok, (unsigned long long)m->reloads_failed,
         m->reload_seconds);
    double counts[3];
    for (int i = 0; i < 3; i++)
        counts[i] = (double)m->big_slices[i];
    by_phase(&o, "luahook_big_body_slice_seconds_max", "gauge",
             "Longest slice of work on big bodies since start, by phase (check: validation; "
             "build: the tables, then the handlers' start; collect: their garbage, after the "
             "event), in CPU time of the loop's thread.",
             m->big_slice_max);
    by_phase(&o, "luahook_big_body_slice_seconds_total", "counter",
             "CPU time big bodies held the loop, in slices, by phase.", m->big_slice_sum);
    by_phase(&o, "luahook_big_body_slices_total", "counter",
             "Slices of work on big bodies, by phase.", counts);
    outf(&o,
         "# HELP luahook_store_keys Keys in the store.\n"
         "# TYPE luahook_store_keys gauge\n"
         "luahook_store_keys %llu\n"
         "# HELP luahook_store_refused_total Store calls refused at a bound (key or value size, "
         "--store-max-keys).\n"
         "# TYPE luahook_store_refused_total counter\n"
         "luahook_store_refused_total %llu\n"
         "# HELP luahook_state_commits_total Transactions the state writer committed "
         "(result ok) or lost (failed).\n"
         "# TYPE luahook_state_commits_total counter\n"
         "luahook_state_commits_total{result=\"ok\"} %llu\n"
         "luahook_state_commits_total{result=\"failed\"} %llu\n"
         "# HELP luahook_state_writes_total Writes the state writer committed.\n"
         "# TYPE luahook_state_writes_total counter\n"
         "luahook_state_writes_total %llu\n",
         (unsigned long long)m->store_keys, (unsigned long long)m->store_refused,
         (unsigned long long)m->state_commits, (unsigned long long)m->state_failed,
         (unsigned long long)m->state_writes);
    if (m->journal_on)
        render_journal(&o, m);
    outf(&o,
         "# HELP luahook_metrics_renders_total Times this text was built; scrapes in between "
         "that found every number unchanged got the text built before.\n"
         "# TYPE luahook_metrics_renders_total counter\n"
         "luahook_metrics_renders_total %llu\n",
         (unsigned long long)m->renders);
    if (o.failed) {
        free(o.p);
        return NULL;
    }
    *len = o.len;
    return o.p;
}

const char *lh_metrics_text(lh_metrics_t *m, size_t *len)
{
    size_t numbers = offsetof(lh_metrics_t, text);
    if (m->text != NULL && memcmp(m->text_of, m, numbers) == 0) {
        *len = m->text_len;
        return m->text;
    }
    if (m->text_of == NULL && (m->text_of = malloc(numbers)) == NULL)
        return NULL;
    free(m->text);
    m->renders++;
    m->text = lh_metrics_render(m, &m->text_len);
    if (m->text == NULL)
        return NULL;
    memcpy(m->text_of, m, numbers);
    *len = m->text_len;
    return m->text;
}
