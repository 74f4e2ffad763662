#include "journal_cli.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "journal_query.h"
#include "state.h"

static const char events_usage[] =
    "usage: luahook events [--state-dir DIR] [--status S] [--action A] [--handler NAME]\n"
    "                      [--since T] [--before ID] [--limit N] [--json]\n"
    "       luahook events [--state-dir DIR] show ID [--json]\n"
    "       luahook replay [--state-dir DIR] [--all] [--handler NAME] [--json] ID...\n"
    "       luahook replay [--state-dir DIR] --dead [--since T] [--handler NAME] [--json]\n"
    "\n"
    "events lists the deliveries of the journal, newest first (at most --limit, 50; 1000 at\n"
    "most): S is pending, ok, retrying, dead, duplicate or none; T is a time ago (90s, 30m,\n"
    "1h, 7d) or a UTC date (2026-11-27, 2026-11-27T18:00:00Z); --before ID pages on from\n"
    "the last id shown. --json writes one JSON object a line (the API's fields).\n"
    "events show ID shows one delivery (ID: its delivery id or its number): headers, the\n"
    "body (the project's token and task_data_password masked) and every run's attempts.\n"
    "replay queues runs again: of the deliveries named, the failed ones (retrying or dead;\n"
    "--all: every run); with --dead, every dead run (received since T, of handler NAME).\n"
    "A running server takes them up within a second, a stopped one at its next start.\n"
    "The state folder is --state-dir or LUAHOOK_STATE_DIR; the server may be running.\n"
    "\n"
    "Exit codes: 0 done, 1 no such delivery (nothing queued), 2 usage or state folder "
    "error.\n";

typedef struct {
    const char *state_dir;
    lh_jq_filter_t f;
    const char *since;
    int json, all, dead, show;
    const char **ids;
    size_t nids;
} args_t;

static double now_s(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

/* "2026-11-27 18:52:48.123Z" (UTC), or "-". */
static const char *fmt_time(double t, char *buf, size_t len)
{
    if (isnan(t) || t <= 0)
        return "-";
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    size_t n = strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm);
    snprintf(buf + n, len - n, ".%03dZ", (int)((t - (double)s) * 1000));
    return buf;
}

static int usage_error(const char *cmd, const char *what)
{
    fprintf(stderr, "luahook %s: %s (see luahook %s --help)\n", cmd, what, cmd);
    return 2;
}

static int parse_args(const char *cmd, int argc, char **argv, args_t *a)
{
    char what[300];
    a->state_dir = getenv("LUAHOOK_STATE_DIR");
    if (a->state_dir != NULL && *a->state_dir == '\0')
        a->state_dir = NULL;
    a->f.limit = LH_JQ_DEFAULT_LIMIT;
    if ((a->ids = calloc((size_t)argc, sizeof(*a->ids))) == NULL)
        return usage_error(cmd, "out of memory");
    int replay = strcmp(cmd, "replay") == 0;
    for (int i = 2; i < argc; i++) {
        const char *o = argv[i];
        const char *v = NULL;
        static const char *const valued[] = {"--state-dir", "--status", "--action", "--handler",
                                             "--since",     "--before", "--limit",  NULL};
        if (o[0] != '-' || strcmp(o, "-") == 0) {
            if (!replay && a->nids == 0 && !a->show && strcmp(o, "show") == 0)
                a->show = 1;
            else
                a->ids[a->nids++] = o;
            continue;
        }
        size_t olen = strcspn(o, "=");
        for (int k = 0; valued[k] != NULL; k++) {
            if (strlen(valued[k]) == olen && strncmp(o, valued[k], olen) == 0) {
                if (o[olen] == '=')
                    v = o + olen + 1;
                else if (i + 1 < argc)
                    v = argv[++i];
                else {
                    snprintf(what, sizeof(what), "option %s needs a value", o);
                    return usage_error(cmd, what);
                }
                if (*v == '\0') {
                    snprintf(what, sizeof(what), "option %.*s: empty value", (int)olen, o);
                    return usage_error(cmd, what);
                }
                break;
            }
        }
        char name[32];
        snprintf(name, sizeof(name), "%.*s", (int)(olen < 31 ? olen : 31), o);
        if (strcmp(name, "--state-dir") == 0) {
            a->state_dir = v;
        } else if (strcmp(name, "--status") == 0 && !replay) {
            int ok = 0;
            for (int k = 0; lh_jq_statuses[k] != NULL; k++)
                ok |= strcmp(v, lh_jq_statuses[k]) == 0;
            if (!ok) {
                snprintf(what, sizeof(what),
                         "--status %s: expected pending, ok, retrying, dead, duplicate or none", v);
                return usage_error(cmd, what);
            }
            a->f.status = v;
        } else if (strcmp(name, "--action") == 0 && !replay) {
            a->f.action = v;
        } else if (strcmp(name, "--handler") == 0) {
            a->f.handler = v;
        } else if (strcmp(name, "--since") == 0) {
            if (lh_jq_parse_since(v, now_s(), &a->f.since) != 0) {
                snprintf(what, sizeof(what),
                         "--since %s: expected a time ago (90s, 30m, 1h, 7d) or a UTC date "
                         "(2026-11-27 or 2026-11-27T18:00:00Z)",
                         v);
                return usage_error(cmd, what);
            }
            a->since = v;
        } else if ((strcmp(name, "--before") == 0 || strcmp(name, "--limit") == 0) && !replay) {
            char *end;
            errno = 0;
            long long n = strtoll(v, &end, 10);
            int limit = strcmp(name, "--limit") == 0;
            if (errno != 0 || *end != '\0' || n < 1 || (limit && n > LH_JQ_MAX_LIMIT)) {
                snprintf(what, sizeof(what), "%s %s: expected a number from 1%s", name, v,
                         limit ? " to 1000" : "");
                return usage_error(cmd, what);
            }
            if (limit)
                a->f.limit = (int)n;
            else
                a->f.before = n;
        } else if (strcmp(o, "--json") == 0) {
            a->json = 1;
        } else if (strcmp(o, "--all") == 0 && replay) {
            a->all = 1;
        } else if (strcmp(o, "--dead") == 0 && replay) {
            a->dead = 1;
        } else {
            snprintf(what, sizeof(what), "unknown option '%s'", o);
            return usage_error(cmd, what);
        }
    }
    if (a->state_dir == NULL)
        return usage_error(cmd, "give the state folder: --state-dir DIR (or LUAHOOK_STATE_DIR)");
    if (replay) {
        if (a->dead == (a->nids > 0))
            return usage_error(cmd, a->dead ? "give delivery ids or --dead, not both"
                                            : "give delivery ids, or --dead");
        if (a->all && a->dead)
            return usage_error(cmd, "--all goes with delivery ids (--dead queues dead runs)");
        if (a->since != NULL && !a->dead)
            return usage_error(cmd, "--since goes with --dead");
    } else if (a->show) {
        if (a->nids != 1)
            return usage_error(cmd, "show takes one delivery id");
    } else if (a->nids > 0) {
        snprintf(what, sizeof(what), "unexpected '%s' (events show ID shows one)", a->ids[0]);
        return usage_error(cmd, what);
    }
    return 0;
}

/* ------------------------------------------------------------------ events */

static int print_event(void *data, const lh_jq_event_t *e)
{
    const args_t *a = data;
    char t[40], proj[24], runs[40];
    if (a->json) {
        lh_jbuf_t b = {0};
        lh_jq_event_json(&b, e);
        if (b.oom)
            return -1;
        printf("%s\n", b.p);
        lh_jbuf_free(&b);
        return 0;
    }
    snprintf(proj, sizeof(proj), e->project >= 0 ? "%lld" : "-", (long long)e->project);
    if (e->failed > 0)
        snprintf(runs, sizeof(runs), "%d (%d failed)", e->runs, e->failed);
    else
        snprintf(runs, sizeof(runs), "%d", e->runs);
    printf("%-8lld  %-20s  %-24s  %-9s  %-24s  %-7s  %-14s  %d  %s\n", (long long)e->id,
           e->delivery, fmt_time(e->received, t, sizeof(t)), e->status, e->action ? e->action : "-",
           proj, runs, e->attempts, e->path);
    return 0;
}

static int list_events(lh_jq_t *q, args_t *a)
{
    char err[1024];
    int more = 0;
    if (!a->json)
        printf("%-8s  %-20s  %-24s  %-9s  %-24s  %-7s  %-14s  %s  %s\n", "ID", "DELIVERY",
               "RECEIVED (UTC)", "STATUS", "ACTION", "PROJECT", "RUNS", "ATTEMPTS", "PATH");
    if (lh_jq_list(q, &a->f, print_event, a, &more, err, sizeof(err)) != 0) {
        fprintf(stderr, "luahook events: %s\n", err);
        return 2;
    }
    if (more && !a->json)
        fprintf(stderr, "(more: luahook events --before ID with the last ID above)\n");
    return fflush(stdout) == 0 ? 0 : 2;
}

/* Every line of `text` indented by `pad`. */
static void print_indented(const char *pad, const char *text)
{
    while (text != NULL && *text) {
        size_t n = strcspn(text, "\n");
        printf("%s%.*s\n", pad, (int)n, text);
        text += n + (text[n] == '\n');
    }
}

static int show_event(void *data, const lh_jq_event_t *e, const char *headers, const char *body,
                      size_t body_len)
{
    (void)data;
    char t[40], why[160];
    lh_jbuf_t b = {0};
    printf("delivery  %s (id %lld)\n", e->delivery, (long long)e->id);
    printf("received  %s from %s\n", fmt_time(e->received, t, sizeof(t)),
           e->remote ? e->remote : "-");
    printf("path      %s\n", e->path);
    printf("action    %s\n", e->action ? e->action : "-");
    if (e->project >= 0)
        printf("project   %lld\n", (long long)e->project);
    printf("status    %s", e->status);
    if (!isnan(e->finished))
        printf(" (final since %s)", fmt_time(e->finished, t, sizeof(t)));
    if (e->duplicate_of > 0)
        printf(", a duplicate of id %lld", (long long)e->duplicate_of);
    printf("\nheaders\n");
    if (headers != NULL &&
        lh_jq_json_masked(&b, headers, strlen(headers), 2, why, sizeof(why)) == 0)
        print_indented("  ", b.p);
    lh_jbuf_free(&b);
    printf("body (%zu bytes)\n", body_len);
    if (lh_jq_json_masked(&b, body, body_len, 2, why, sizeof(why)) == 0) {
        print_indented("  ", b.p);
    } else {
        /* not JSON: as one JSON string, so no byte can reach the terminal raw */
        printf("  (not JSON: %s; as a string, secrets masked:)\n", why);
        lh_jbuf_free(&b);
        lh_jq_text_masked(&b, body, body_len);
        printf("  %s\n", b.p ? b.p : "");
    }
    lh_jbuf_free(&b);
    printf("runs\n");
    return 0;
}

static int show_run(void *data, const lh_jq_run_t *r)
{
    (void)data;
    char t[40];
    printf("  %s: %s, %d attempt%s", r->handler, r->state, r->attempts,
           r->attempts == 1 ? "" : "s");
    if (!isnan(r->next_at) &&
        (strcmp(r->state, "pending") == 0 || strcmp(r->state, "retrying") == 0))
        printf(", next at %s", fmt_time(r->next_at, t, sizeof(t)));
    printf("\n");
    return 0;
}

static int show_attempt(void *data, const lh_jq_run_t *r, const lh_jq_attempt_t *a)
{
    (void)data, (void)r;
    char t[40];
    printf("    attempt %d at %s", a->n, fmt_time(a->started, t, sizeof(t)));
    if (!isnan(a->ended))
        printf(", %.3f s", a->ended - a->started);
    printf(": %s\n", a->outcome ? a->outcome : "(unfinished)");
    if (a->error != NULL)
        print_indented("      ", a->error);
    if (a->traceback != NULL)
        print_indented("      ", a->traceback);
    return 0;
}

static int show_one(lh_jq_t *q, args_t *a)
{
    char err[1024];
    int rc;
    if (a->json) {
        lh_jbuf_t b = {0};
        rc = lh_jq_show_json(q, a->ids[0], &b, err, sizeof(err));
        if (rc == 1 && b.oom) {
            snprintf(err, sizeof(err), "out of memory");
            rc = -1;
        }
        if (rc == 1)
            printf("%s\n", b.p);
        lh_jbuf_free(&b);
    } else {
        lh_jq_show_t cb = {a, show_event, show_run, show_attempt};
        rc = lh_jq_show(q, a->ids[0], &cb, err, sizeof(err));
    }
    if (rc < 0) {
        fprintf(stderr, "luahook events: %s\n", err);
        return 2;
    }
    if (rc == 0) {
        fprintf(stderr, "luahook events: no such delivery: %s\n", a->ids[0]);
        return 1;
    }
    return fflush(stdout) == 0 ? 0 : 2;
}

/* ------------------------------------------------------------------ replay */

/* One line per run queued, printed once the transaction committed. */
static void replay_line(void *data, int64_t id, const char *delivery, const char *handler)
{
    lh_jbuf_addf(data, "  %lld  %s  %s\n", (long long)id, delivery, handler);
}

static int replay(lh_jq_t *q, args_t *a)
{
    char err[4096];
    lh_jbuf_t out = {0}, unknown = {0}, lines = {0};
    lh_jq_replay_t r = {a->ids,     a->nids,      a->dead,     a->all,
                        a->f.since, a->f.handler, replay_line, &lines};
    int n = lh_jq_replay(q, &r, now_s(), &out, &unknown, err, sizeof(err));
    int rc = 0;
    if (n < 0) {
        fprintf(stderr, "luahook replay: %s\n", err);
        rc = n == -2 ? 1 : 2;
    } else if (a->json) {
        printf("%s\n", out.p);
    } else if (n == 0) {
        printf("nothing queued: %s\n", a->dead  ? "no dead run matches"
                                       : a->all ? "no run to queue (a duplicate, or no handler)"
                                                : "no failed run (--all runs every handler again)");
    } else {
        printf("queued %d run%s (a running server takes them up within a second, a stopped "
               "one at its next start):\n%s",
               n, n == 1 ? "" : "s", lines.p ? lines.p : "");
    }
    lh_jbuf_free(&out);
    lh_jbuf_free(&unknown);
    lh_jbuf_free(&lines);
    return rc == 0 && fflush(stdout) != 0 ? 2 : rc;
}

int lh_journal_cli_is(int argc, char **argv)
{
    return argc > 1 && (strcmp(argv[1], "events") == 0 || strcmp(argv[1], "replay") == 0);
}

int lh_journal_cli_run(int argc, char **argv)
{
    const char *cmd = argv[1];
    char err[9000], path[4096];
    args_t a = {0};
    lh_jq_t q;
    for (int i = 2; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            fputs(events_usage, stdout);
            return 0;
        }
    int rc = parse_args(cmd, argc, argv, &a);
    if (rc != 0)
        goto done;
    rc = 2;
    /* root on the service's folder: become its owner before any file is touched */
    if (lh_state_check_owner(a.state_dir, 1, err, sizeof(err)) != 0) {
        fprintf(stderr, "luahook %s: %s\n", cmd, err);
        goto done;
    }
    snprintf(path, sizeof(path), "%s/%s", a.state_dir, LH_STATE_DB_NAME);
    if (lh_jq_open(&q, path, strcmp(cmd, "replay") == 0, err, sizeof(err)) != 0) {
        fprintf(stderr, "luahook %s: %s\n", cmd, err);
        goto done;
    }
    if (strcmp(cmd, "replay") == 0)
        rc = replay(&q, &a);
    else if (a.show)
        rc = show_one(&q, &a);
    else
        rc = list_events(&q, &a);
    lh_jq_close(&q);
done:
    free(a.ids);
    return rc;
}
