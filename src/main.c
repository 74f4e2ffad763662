/*
** main — argv, configuration, start order, signals, shutdown.
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <llhttp.h> /* its version, for --version */
#include <sqlite3.h>

#include "actions.h"
#include "api.h"
#include "console.h"
#include "live.h"
#include "app.h"
#include "embedded.h"
#include "config.h"
#include "fire.h"
#include "http_client.h"
#include "journal_cli.h"
#include "ingest.h"
#include "lib.h"
#include "recipes.h"
#include "dispatch.h"
#include "journal.h"
#include "reload.h"
#include "log.h"
#include "server.h"
#include "state.h"
#include "store.h"
#include "store_cli.h"
#include "task.h"
#include "stubs.h"
#include "testing.h"
#include "vm.h"

typedef struct {
    lh_app_t app;
    lh_server_t server;
    uv_signal_t sigint, sigterm;
    uv_timer_t shutdown_timer;
    uv_timer_t finish_soon; /* armed once nothing runs and no connection is left */
    lh_reload_t *reload;
    int signals;
    int finished;
} lh_main_t;

static void report_problem(void *data, const char *problem)
{
    int *count = data;
    fprintf(stderr, "%s\n", problem);
    /* a test file's globals, read by a handler script: it is a test file given by mistake */
    if (strstr(problem, "(global 'handlers')") != NULL || strstr(problem, "(global 'test')"))
        fprintf(stderr, "  (this looks like a test file: run it with 'luahook test FILE')\n");
    (*count)++;
}

/* A *_test.lua given to check, serve or fire: a folder skips them, a file given by itself
** would load as a handler script and fail on handlers(). Each is a problem of its own. */
static int test_files_given(const lh_config_t *cfg)
{
    int problems = 0;
    for (size_t i = 0; i < cfg->npaths; i++) {
        const char *p = cfg->paths[i];
        size_t n = strlen(p);
        if (n >= 9 && strcmp(p + n - 9, "_test.lua") == 0) {
            fprintf(stderr,
                    "%s: a test file, not a handler script: run it with 'luahook test %s'\n", p, p);
            problems++;
        }
    }
    return problems;
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void close_handle(uv_handle_t *h)
{
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* Stops what is left; the loop ends once the last handle closed. */
static void finish(lh_main_t *m)
{
    if (m->finished)
        return;
    m->finished = 1;
    m->app.finished = 1; /* a big body still checked or built never runs now */
    /* runs first: a __close handler of a cancelled run may still start a timer */
    lh_journal_close(m->app.journal); /* no run taken up any more; runs cut short are pending */
    lh_task_cancel_all(m->app.vm);
    lh_timer_stop_all(m->app.vm);
    lh_reload_free(m->reload); /* replaced VMs: their waits cancelled, then freed */
    m->reload = NULL;
    lh_http_free(m->app.http);
    m->app.http = NULL;
    lh_server_close_all(&m->server);
    lh_console_close(m->app.console); /* sign-ins still delayed: their clients are gone */
    lh_live_close(m->app.live);
    close_handle((uv_handle_t *)&m->sigint);
    close_handle((uv_handle_t *)&m->sigterm);
    /* closing the watchers restored the default action: a late signal must not kill us (an
    ** orchestrator's repeated SIGTERM while the VM's memory is freed, say) */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    close_handle((uv_handle_t *)&m->shutdown_timer);
    close_handle((uv_handle_t *)&m->finish_soon);
    lh_log_fields(LH_INFO, "stopped", NULL, 0);
}

static void on_finish_soon(uv_timer_t *t)
{
    finish(t->data);
}

/* While stopping: once no connection is open and no handler runs, finish — from the loop,
** never inside the task or the close callback that got us here. */
static void check_drained(lh_main_t *m)
{
    if (!m->app.stopping || m->finished || m->server.nconns != 0 || m->app.tasks != 0)
        return;
    if (uv_timer_start(&m->finish_soon, on_finish_soon, 0, 0) != 0)
        finish(m); /* cannot happen on a live handle; never hang on it */
}

static void on_server_drained(lh_server_t *s)
{
    check_drained(s->app->drained_data);
}

static void on_tasks_drained(lh_app_t *app)
{
    check_drained(app->drained_data);
}

static void on_shutdown_deadline(uv_timer_t *t)
{
    lh_main_t *m = t->data;
    int left = m->app.tasks;
    if (left > 0) /* finish() stops them, on every VM */
        LH_LOG(LH_WARN, "shutdown deadline: stopping %d handler runs", left);
    lh_server_close_all(&m->server);
    finish(m);
}

static void on_signal(uv_signal_t *s, int signum)
{
    lh_main_t *m = s->data;
    if (++m->signals > 1) { /* a second signal: stop waiting */
        LH_LOG(LH_WARN, "second signal: stopping now");
        lh_server_close_all(&m->server);
        finish(m);
        return;
    }
    lh_field_t f[] = {LH_FIELD("signal", signum == SIGINT ? "SIGINT" : "SIGTERM")};
    lh_log_fields(LH_INFO, "stopping", f, 1);
    m->app.stopping = 1;
    lh_console_close(m->app.console); /* a slowed sign-in would hold the stop up to a minute */
    m->app.drained_data = m;
    m->app.on_tasks_drained = on_tasks_drained;
    lh_timer_stop_all(m->app.vm); /* no new work: running callbacks may finish */
    int rc = uv_timer_start(&m->shutdown_timer, on_shutdown_deadline,
                            (uint64_t)(m->app.cfg->shutdown_timeout * 1000), 0);
    if (rc != 0) { /* no deadline: do not wait without one */
        LH_LOG(LH_ERROR, "cannot arm the shutdown deadline: %s", uv_strerror(rc));
        lh_server_close_all(&m->server);
        finish(m);
        return;
    }
    lh_server_stop(&m->server, on_server_drained); /* may call it at once */
    check_drained(m);
}

/* luahook sample [ACTION]: the embedded body on stdout, or the list of actions. */
static int print_sample(const char *action)
{
    char name[160];
    const lh_embedded_t *e = NULL, *near = NULL;
    size_t neard = (size_t)-1;
    if (action != NULL) {
        snprintf(name, sizeof(name), "samples/%s.json", action);
        e = lh_embedded_find(name);
    }
    if (e != NULL) {
        fwrite(e->data, 1, e->len, stdout);
        return fflush(stdout) == 0 ? 0 : 1;
    }
    FILE *out = action == NULL ? stdout : stderr;
    if (action != NULL)
        fprintf(stderr, "luahook sample: no sample for '%s'", action);
    for (const lh_embedded_t *s = lh_embedded; s->name != NULL; s++) {
        size_t n = strlen(s->name);
        if (strncmp(s->name, "samples/", 8) != 0 || n < 14)
            continue;
        char act[128];
        snprintf(act, sizeof(act), "%.*s", (int)(n - 13), s->name + 8);
        if (action == NULL) {
            fprintf(out, "%s\n", act);
            continue;
        }
        size_t d = lh_actions_distance(action, act);
        if (d < neard)
            near = s, neard = d;
    }
    if (action == NULL)
        return 0;
    if (near != NULL && neard <= strlen(action) / 3 + 1)
        fprintf(stderr, ": did you mean %.*s?", (int)(strlen(near->name) - 13), near->name + 8);
    fprintf(stderr, " (luahook sample lists them)\n");
    return 2;
}

/* The start-up line's fields beyond version, pid and address (server.c writes it). */
static void startup_fields(lh_app_t *app)
{
    const lh_config_t *cfg = app->cfg;
    char scripts[512], n[24];
    size_t off = 0;
    scripts[0] = '\0';
    for (size_t i = 0; i < cfg->npaths && off < sizeof(scripts); i++)
        off += (size_t)snprintf(scripts + off, sizeof(scripts) - off, "%s%s", i ? " " : "",
                                cfg->paths[i]);
    snprintf(n, sizeof(n), "%zu", app->vm->nhandlers);
    lh_fieldset_set(&app->startup, "scripts", scripts, 0);
    lh_fieldset_set(&app->startup, "handlers", n, 1);
    /* the recipe instances by name: what their store keys and handler ids hang on */
    char instances[512];
    off = 0;
    instances[0] = '\0';
    for (size_t i = 0; i < app->vm->nscripts && off < sizeof(instances); i++)
        if (app->vm->scripts[i].site_file != NULL)
            off += (size_t)snprintf(instances + off, sizeof(instances) - off, "%s%s",
                                    off ? " " : "", app->vm->scripts[i].name);
    if (instances[0] != '\0')
        lh_fieldset_set(&app->startup, "instances", instances, 0);
    /* which header: the secret is looked for there only */
    lh_fieldset_set(&app->startup, "secret", cfg->token == NULL ? "none" : "required", 0);
    if (cfg->token != NULL)
        lh_fieldset_set(&app->startup, "auth_header", cfg->auth_header, 0);
    /* luahook's own API: behind the secret, so none without one */
    lh_fieldset_set(&app->startup, "api", cfg->token == NULL ? "off (no --token)" : "/-/api/", 0);
    /* the console: behind the secret too */
    lh_fieldset_set(&app->startup, "console",
                    cfg->token == NULL ? "off (no --token)"
                    : cfg->console_off ? "off (--console off)"
                                       : "/-/",
                    0);
    if (cfg->ntrusted_proxies > 0) {
        char np[24];
        snprintf(np, sizeof(np), "%zu", cfg->ntrusted_proxies);
        lh_fieldset_set(&app->startup, "trusted_proxies", np, 1);
    }
    /* where handlers' store (and later the journal) is kept */
    lh_fieldset_set(&app->startup, "state",
                    cfg->state_dir != NULL ? cfg->state_dir : "memory (lost at exit)", 0);
    lh_fieldset_set(&app->startup, "events",
                    app->journal == NULL ? "not durable (no --state-dir)"
                    : cfg->sync_normal ? "journaled (--sync normal: a power cut may lose the last)"
                                       : "journaled (--sync full)",
                    0);
}

/* Runs the journal may start now: retries and replays together hold at most half of
** --max-pending, so that they never starve new events. */
static int journal_room(void *data)
{
    lh_app_t *app = data;
    if (app->stopping) /* no new run while stopping: retries wait for the next start */
        return 0;
    int64_t left = (int64_t)app->cfg->max_pending - app->tasks - app->admitted;
    int64_t share = ((int64_t)app->cfg->max_pending + 1) / 2 - app->retrying;
    int64_t room = left < share ? left : share;
    return room <= 0 ? 0 : room > 1000000 ? 1000000 : (int)room;
}

static int serve(lh_main_t *m)
{
    lh_server_handler_t h = lh_ingest_handler(&m->app);
    int rc;
    /* signals first: "listening" may be followed by a SIGTERM at once */
    if ((rc = uv_signal_init(m->app.loop, &m->sigint)) != 0 ||
        (rc = uv_signal_init(m->app.loop, &m->sigterm)) != 0 ||
        (rc = uv_timer_init(m->app.loop, &m->shutdown_timer)) != 0 ||
        (rc = uv_timer_init(m->app.loop, &m->finish_soon)) != 0)
        goto fail;
    m->sigint.data = m->sigterm.data = m->shutdown_timer.data = m->finish_soon.data = m;
    if ((rc = uv_signal_start(&m->sigint, on_signal, SIGINT)) != 0 ||
        (rc = uv_signal_start(&m->sigterm, on_signal, SIGTERM)) != 0)
        goto fail;
    if ((m->reload = lh_reload_new(&m->app, m->app.cfg->watch)) == NULL)
        return 2;
    if ((m->app.live = lh_live_new(&m->app)) == NULL ||
        (m->app.console = lh_console_new(&m->app)) == NULL) {
        fprintf(stderr, "luahook: out of memory\n");
        return 2;
    }
    if (m->app.state != NULL) {
        lh_field_t f[] = {LH_FIELD("dir", m->app.cfg->state_dir),
                          LH_FIELD("database", lh_state_path(m->app.state))};
        lh_log_fields(LH_INFO, "state", f, 2);
    } else {
        lh_log_fields(LH_INFO,
                      "state in memory (no --state-dir): the store is lost when the "
                      "server stops",
                      NULL, 0);
    }
    if (lh_server_start(&m->server, &m->app, &h) != 0) {
        lh_reload_free(m->reload);
        m->reload = NULL;
        return 2;
    }
    uv_run(m->app.loop, UV_RUN_DEFAULT);
    return 0;
fail: /* the handles initialised are closed by main's uv_walk */
    fprintf(stderr, "luahook: cannot watch signals: %s\n", uv_strerror(rc));
    return 2;
}

/* The store, and with --state-dir (serve, fire) the state folder's database under it:
** opened (checked, upgraded) and loaded before any script loads, its writer started.
** 0, or 2 with a message. */
static int open_state(lh_app_t *app, char *err, size_t errlen)
{
    const lh_config_t *cfg = app->cfg;
    int rc;
    if (cfg->state_dir != NULL && cfg->command != LH_CMD_CHECK &&
        (lh_state_check_owner(cfg->state_dir, 0, err, errlen) != 0 ||
         lh_state_open(&app->state, cfg->state_dir, err, errlen) != 0 ||
         lh_state_claim(app->state, err, errlen) != 0))
        return 2;
    if ((app->store = lh_store_new(app->loop, app->state, (size_t)cfg->store_max_keys)) == NULL) {
        snprintf(err, errlen, "cannot create the store: out of memory");
        return 2;
    }
    lh_store_observe(app->store, &app->metrics);
    if (app->state == NULL)
        return 0;
    lh_state_observe(app->state, &app->metrics);
    if (lh_store_load(app->store, err, errlen) != 0)
        return 2;
    if (cfg->command == LH_CMD_SERVE) { /* the journal: serve's events only */
        lh_journal_config_t jc = {
            .sync_full = !cfg->sync_normal,
            .retry = {.retries = cfg->retries, .first = cfg->retry_first, .cap = cfg->retry_cap},
            .dedup_window = cfg->dedup_window,
            .keep = cfg->keep,
            .keep_dead = cfg->keep_dead,
            .max_size = cfg->journal_max_size,
        };
        if ((app->journal = lh_journal_open(app->state, &jc, err, errlen)) == NULL)
            return 2;
        lh_journal_observe(app->journal, &app->metrics);
    }
    lh_state_hooks_t hooks = lh_store_state_hooks(app->store);
    if ((rc = lh_state_start(app->state, app->loop, &hooks)) != 0) {
        snprintf(err, errlen, "cannot start the state writer: %s", uv_strerror(rc));
        return 2;
    }
    lh_journal_hooks_t jh = {.deliver = lh_dispatch_redeliver, .room = journal_room, .data = app};
    if (app->journal != NULL && (rc = lh_journal_start(app->journal, app->loop, &jh)) != 0) {
        snprintf(err, errlen, "cannot start the journal: %s", uv_strerror(rc));
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static lh_main_t m;
    lh_config_t cfg;
    char err[512];
    int rc;

    signal(SIGPIPE, SIG_IGN);
    /* over a file size limit (ulimit -f, LimitFSIZE=) a write fails with EFBIG: the journal
    ** answers 503, where the default action would kill the server mid-commit */
    signal(SIGXFSZ, SIG_IGN);
    /* nothing reads SQLite's memory statistics: keeping them costs a mutex per allocation */
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
    if (lh_journal_cli_is(argc, argv)) /* events, replay: their own arguments */
        return lh_journal_cli_run(argc, argv);
    if (lh_config_parse(&cfg, argc, argv, err, sizeof(err)) != 0) {
        fprintf(stderr, "luahook: %s\n", err);
        lh_config_dispose(&cfg);
        return 2;
    }
    if (cfg.command == LH_CMD_HELP) {
        fputs(lh_config_usage(cfg.help_for), stdout);
        lh_config_dispose(&cfg);
        return 0;
    }
    if (cfg.command == LH_CMD_VERSION) {
        printf("luahook %s (%s, libuv %s, llhttp %d.%d.%d)\n", LH_VERSION, LUA_RELEASE,
               uv_version_string(), LLHTTP_VERSION_MAJOR, LLHTTP_VERSION_MINOR,
               LLHTTP_VERSION_PATCH);
        lh_config_dispose(&cfg);
        return 0;
    }
    if (cfg.command == LH_CMD_STUBS) {
        rc = lh_stubs_write(cfg.paths[0]);
        lh_config_dispose(&cfg);
        return rc;
    }
    if (cfg.command == LH_CMD_STORE) {
        rc = lh_store_cli_run(&cfg);
        lh_config_dispose(&cfg);
        return rc;
    }
    if (cfg.command == LH_CMD_RECIPES || cfg.command == LH_CMD_NEW_RECIPE) {
        rc = lh_recipes_cli(&cfg);
        lh_config_dispose(&cfg);
        return rc;
    }
    if (cfg.command == LH_CMD_SAMPLE) {
        rc = print_sample(cfg.npaths > 0 ? cfg.paths[0] : NULL);
        lh_config_dispose(&cfg);
        return rc;
    }
    if (cfg.command == LH_CMD_TEST) {
        for (size_t i = 0; i < cfg.nwarnings; i++)
            fprintf(stderr, "luahook: warning: %s\n", cfg.warnings[i]);
        rc = lh_testing_run(&cfg);
        lh_config_dispose(&cfg);
        return rc;
    }
    if (cfg.command == LH_CMD_FIRE)
        cfg.ack = LH_ACK_HANDLED; /* fire reports every handler's outcome */
    lh_log_setup(cfg.log_level, cfg.log_format);
    for (size_t i = 0; i < cfg.nwarnings; i++)
        LH_LOG(LH_WARN, "%s", cfg.warnings[i]);

    uv_loop_t loop;
    if ((rc = uv_loop_init(&loop)) != 0) {
        fprintf(stderr, "luahook: cannot start the event loop: %s\n", uv_strerror(rc));
        lh_config_dispose(&cfg);
        return 2;
    }
    m.app.loop = &loop;
    m.app.cfg = &cfg;
    lh_metrics_init(&m.app.metrics);
    if (cfg.command != LH_CMD_CHECK && (m.app.http = lh_http_new(&loop)) == NULL) {
        fprintf(stderr, "luahook: out of memory\n");
        rc = 2;
        goto done;
    }

    int problems = test_files_given(&cfg);
    if (problems > 0) {
        rc = 1; /* as for a script that does not load */
        goto done;
    }
    if ((rc = open_state(&m.app, err, sizeof(err))) != 0) {
        fprintf(stderr, "luahook: not starting: %s\n", err);
        goto done;
    }
    m.app.vm = lh_vm_new(&m.app, 1, err, sizeof(err));
    if (m.app.vm == NULL) {
        fprintf(stderr, "luahook: %s\n", err);
        rc = 1;
        goto done;
    }
    m.app.metrics.vm_generation = 1;
    lh_vm_load(m.app.vm, cfg.paths, cfg.npaths, report_problem, &problems);
    if (problems > 0) {
        if (cfg.command == LH_CMD_SERVE)
            fprintf(stderr, "luahook: not starting: %d problem%s in the scripts\n", problems,
                    problems == 1 ? "" : "s");
        rc = 1;
        goto done;
    }
    /* actions Label Studio never sends: warned, never refused (other senders exist) */
    for (size_t i = 0; i < m.app.vm->nwarnings; i++) {
        if (cfg.command == LH_CMD_CHECK)
            fprintf(stderr, "%s\n", m.app.vm->warnings[i]);
        else
            LH_LOG(LH_WARN, "%s", m.app.vm->warnings[i]);
    }
    if (cfg.command == LH_CMD_CHECK) {
        /* each handler's stable id, where it is, what it handles: what logs, fire and
        ** /metrics will call it */
        int wid = 0, wlabel = 0;
        for (size_t i = 0; i < m.app.vm->nhandlers; i++) {
            const lh_handler_t *hd = &m.app.vm->handlers[i];
            wid = strlen(hd->id) > (size_t)wid ? (int)strlen(hd->id) : wid;
            wlabel = strlen(hd->label) > (size_t)wlabel ? (int)strlen(hd->label) : wlabel;
        }
        for (size_t i = 0; i < m.app.vm->nhandlers; i++) {
            const lh_handler_t *hd = &m.app.vm->handlers[i];
            printf("%-*s  %-*s  %s\n", wid, hd->id, wlabel, hd->label, hd->actions);
        }
        printf("ok: %zu handler%s", m.app.vm->nhandlers, m.app.vm->nhandlers == 1 ? "" : "s");
        if (m.app.vm->nwarnings > 0)
            printf(", %zu warning%s", m.app.vm->nwarnings, m.app.vm->nwarnings == 1 ? "" : "s");
        printf("\n");
        rc = 0;
        goto done;
    }
    if (cfg.command == LH_CMD_SERVE)
        startup_fields(&m.app);
    rc = cfg.command == LH_CMD_FIRE ? lh_fire_run(&m.app) : serve(&m);
done:
    /* what still waits (timers, handler runs, requests) stops before the loop closes */
    if (m.app.vm != NULL) {
        lh_task_cancel_all(m.app.vm); /* first: see finish() */
        lh_timer_stop_all(m.app.vm);
    }
    lh_http_free(m.app.http);
    m.app.http = NULL;
    lh_journal_close(m.app.journal); /* commits that come back now: stored, not run */
    lh_state_stop(m.app.state);      /* what handlers wrote is committed before we go */
    if (m.app.state != NULL) {
        lh_state_stats_t st;
        char ops[24], commits[24], largest[24], failed[24];
        lh_state_stats(m.app.state, &st);
        snprintf(ops, sizeof(ops), "%llu", (unsigned long long)st.ops);
        snprintf(commits, sizeof(commits), "%llu", (unsigned long long)st.commits);
        snprintf(largest, sizeof(largest), "%llu", (unsigned long long)st.max_batch);
        snprintf(failed, sizeof(failed), "%llu", (unsigned long long)st.failures);
        lh_field_t f[] = {LH_FIELD_NUM("writes", ops), LH_FIELD_NUM("commits", commits),
                          LH_FIELD_NUM("largest_commit", largest),
                          LH_FIELD_NUM("failed_commits", failed)};
        lh_log_fields(LH_INFO, "state closed", f, 4);
    }
    lh_store_close(m.app.store);
    lh_console_close(m.app.console);
    lh_live_close(m.app.live);
    uv_walk(&loop, close_walk_cb, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    lh_vm_free(m.app.vm);
    uv_run(&loop, UV_RUN_DEFAULT);
    lh_api_free(m.app.api); /* its last query done: the loop ran out */
    lh_console_free(m.app.console);
    lh_live_free(m.app.live);
    lh_store_free(m.app.store);
    lh_journal_free(m.app.journal); /* its statements, before the database closes */
    lh_state_free(m.app.state);
    if (uv_loop_close(&loop) != 0)
        LH_LOG(LH_WARN, "the loop closed with handles still open");
    lh_metrics_dispose(&m.app.metrics);
    lh_config_dispose(&cfg);
    return rc;
}
