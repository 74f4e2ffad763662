/*
** main — argv, configuration, start order, signals, shutdown.
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "config.h"
#include "ingest.h"
#include "log.h"
#include "server.h"
#include "task.h"
#include "vm.h"

typedef struct {
    lh_app_t app;
    lh_server_t server;
    uv_signal_t sigint, sigterm;
    uv_timer_t shutdown_timer;
    uv_timer_t drain_poll;
    int signals;
} lh_main_t;

static void report_problem(void *data, const char *problem)
{
    int *count = data;
    fprintf(stderr, "%s\n", problem);
    (*count)++;
}

static void close_walk_cb(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void finish(lh_main_t *m)
{
    /* closing the watchers restores the default action: a late signal must not kill us */
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    lh_log_fields(LH_INFO, "stopped", NULL, 0);
    uv_walk(m->app.loop, close_walk_cb, NULL);
}

/* Poll while stopping: done once no connection is open and no handler runs. */
static void on_drain_poll(uv_timer_t *t)
{
    lh_main_t *m = t->data;
    if (m->server.nconns == 0 && m->app.vm->tasks == 0)
        finish(m);
}

static void on_shutdown_deadline(uv_timer_t *t)
{
    lh_main_t *m = t->data;
    if (m->app.vm->tasks > 0) {
        LH_LOG(LH_WARN, "shutdown deadline: stopping %d handler runs", m->app.vm->tasks);
        lh_task_cancel_all(m->app.vm);
    }
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
    lh_server_stop(&m->server, NULL);
    uv_timer_start(&m->shutdown_timer, on_shutdown_deadline,
                   (uint64_t)(m->app.cfg->shutdown_timeout * 1000), 0);
    uv_timer_start(&m->drain_poll, on_drain_poll, 0, 20);
}

static int serve(lh_main_t *m)
{
    lh_server_handler_t h = lh_ingest_handler(&m->app);
    /* signals first: "listening" may be followed by a SIGTERM at once */
    uv_signal_init(m->app.loop, &m->sigint);
    uv_signal_init(m->app.loop, &m->sigterm);
    uv_timer_init(m->app.loop, &m->shutdown_timer);
    uv_timer_init(m->app.loop, &m->drain_poll);
    m->sigint.data = m->sigterm.data = m->shutdown_timer.data = m->drain_poll.data = m;
    uv_signal_start(&m->sigint, on_signal, SIGINT);
    uv_signal_start(&m->sigterm, on_signal, SIGTERM);
    if (lh_server_start(&m->server, &m->app, &h) != 0)
        return 2;
    m->app.server = &m->server;
    uv_run(m->app.loop, UV_RUN_DEFAULT);
    return 0;
}

int main(int argc, char **argv)
{
    static lh_main_t m;
    lh_config_t cfg;
    char err[512];
    int rc;

    signal(SIGPIPE, SIG_IGN);
    if (lh_config_parse(&cfg, argc, argv, err, sizeof(err)) != 0) {
        fprintf(stderr, "luahook: %s\n", err);
        lh_config_dispose(&cfg);
        return 2;
    }
    if (cfg.command == LH_CMD_HELP) {
        fputs(lh_config_usage(), stdout);
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
    lh_log_setup(cfg.log_level, cfg.log_format);

    uv_loop_t loop;
    uv_loop_init(&loop);
    m.app.loop = &loop;
    m.app.cfg = &cfg;
    lh_metrics_init(&m.app.metrics);

    int problems = 0;
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
    if (cfg.command == LH_CMD_CHECK) {
        printf("ok: %zu handler%s\n", m.app.vm->nhandlers, m.app.vm->nhandlers == 1 ? "" : "s");
        rc = 0;
        goto done;
    }
    rc = serve(&m);
done:
    lh_vm_free(m.app.vm);
    uv_walk(&loop, close_walk_cb, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    lh_metrics_dispose(&m.app.metrics);
    lh_config_dispose(&cfg);
    return rc;
}
