#include "reload.h"

#include <dirent.h>

#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>

#include "lib.h"
#include "log.h"
#include "task.h"
#include "vm.h"

/* Editors save in bursts (write, rename, chmod): changes closer than this are one. */
#define DEBOUNCE_MS         100
#define MAX_PROBLEMS_LOGGED 50

typedef struct watch_s {
    uv_fs_event_t handle;
    struct lh_reload_s *r;
    char *name; /* owned; the file watched in this folder, NULL: any *.lua */
    char *dir;  /* owned; the folder watched, as derived from the path given */
} watch_t;

static const char WATCH_REASON[] = "a watched file changed";

struct lh_reload_s {
    lh_app_t *app;
    uv_signal_t sighup;
    uv_timer_t soon;     /* runs the requested reload from the loop */
    uv_timer_t debounce; /* --watch */
    uv_idle_t reaper;    /* frees replaced VMs once drained; runs only when one is */
    int pending;
    const char *why; /* static: what asked for the pending reload */
    watch_t **watches;
    size_t nwatches;
    lh_vm_t *retired; /* replaced VMs with handler runs left, through vm->next_retired */
    int closing;
    /* --watch: the first file that changed since the last debounced reload, and how many
    ** others did; copied into `file` when the reload is requested ("x.lua and 2 more") */
    char changed[512];
    int nchanged;
    char file[560]; /* the file(s) named on the lines of the reload --watch asked for */
};

typedef struct {
    int count;
    lh_reload_result_t *keep; /* the console's copy of the first few */
} problems_t;

static void report_problem(void *data, const char *problem)
{
    problems_t *p = data;
    if (p->count < LH_RELOAD_PROBLEMS_KEPT)
        snprintf(p->keep->problems[p->count], sizeof(p->keep->problems[0]), "%s", problem);
    if (++p->count <= MAX_PROBLEMS_LOGGED) {
        lh_field_t f[] = {LH_FIELD("problem", problem)};
        lh_log_fields(LH_ERROR, "reload problem", f, 1);
    }
}

static void close_vm(lh_vm_t *vm)
{
    char gen[24];
    snprintf(gen, sizeof(gen), "%llu", (unsigned long long)vm->generation);
    lh_field_t f[] = {LH_FIELD_NUM("generation", gen)};
    lh_log_fields(LH_DEBUG, "vm closed", f, 1);
    lh_vm_free(vm);
}

static void on_reap(uv_idle_t *c)
{
    lh_reload_t *r = c->data;
    lh_vm_t **pp = &r->retired;
    while (*pp != NULL) {
        lh_vm_t *vm = *pp;
        if (vm->tasks == 0) {
            *pp = vm->next_retired;
            close_vm(vm);
        } else {
            pp = &vm->next_retired;
        }
    }
    uv_idle_stop(&r->reaper);
}

/* The last handler run of a replaced VM ended: free it from the loop, never from inside
** that run's own call stack. */
static void on_vm_drained(lh_vm_t *vm)
{
    lh_reload_t *r = vm->drained_data;
    uv_idle_start(&r->reaper, on_reap);
}

/* The old VM takes no new events: its timers stop now, its running handlers finish, and
** the reaper frees it after its last one (never from inside one of its own calls). */
static void retire(lh_reload_t *r, lh_vm_t *vm)
{
    lh_timer_stop_all(vm);
    if (vm->tasks == 0) { /* nothing of it runs now: free at once */
        close_vm(vm);
        return;
    }
    vm->on_drained = on_vm_drained;
    vm->drained_data = r;
    vm->next_retired = r->retired;
    r->retired = vm;
}

/* One line per script or handler id that `from` has and `to` has not, at `level`. */
static void log_missing(const lh_vm_t *from, const lh_vm_t *to, lh_level_t level,
                        const char *script_msg, const char *handler_msg)
{
    char n[16], ln[16];
    if (!lh_log_enabled(level))
        return;
    for (size_t i = 0; i < from->nscripts; i++) {
        const lh_script_t *sc = &from->scripts[i];
        if (lh_vm_script_find(to, sc->name) >= 0)
            continue;
        snprintf(n, sizeof(n), "%d", sc->nhandlers);
        lh_field_t f[] = {LH_FIELD("script", sc->name), LH_FIELD("path", sc->path),
                          LH_FIELD_NUM("handlers", n)};
        lh_log_fields(level, script_msg, f, 3);
    }
    for (size_t i = 0; i < from->nhandlers; i++) {
        const lh_handler_t *h = &from->handlers[i];
        if (lh_vm_handler_find(to, h->id) != NULL)
            continue;
        snprintf(ln, sizeof(ln), "%d", h->line);
        lh_field_t f[] = {LH_FIELD("handler", h->id), LH_FIELD("script", h->script),
                          LH_FIELD_NUM("line", ln)};
        lh_log_fields(level, handler_msg, f, 3);
    }
}

/*
** What a reload changed, by stable name. A script or handler id that is gone is said at
** info: whatever was kept under it (its `store` keys, its journal runs) stays as it was,
** and is never attached to another handler — a new handler gets it only by taking the
** same id. New ones are said at debug.
*/
static void log_changes(const lh_vm_t *old, const lh_vm_t *vm)
{
    log_missing(old, vm, LH_INFO, "script removed", "handler removed");
    log_missing(vm, old, LH_DEBUG, "script added", "handler added");
}

typedef struct {
    lh_vm_t *vm;
    char *const *paths;
    size_t npaths;
    lh_vm_report_cb report;
    void *data;
    int problems;
} load_t;

/* Counts what it passes on: a load cut short by memory returns no count of its own. */
static void count_problem(void *data, const char *problem)
{
    load_t *a = data;
    a->problems++;
    a->report(a->data, problem);
}

/* Under lua_pcall: the scripts into the new VM. */
static int load_protected(lua_State *L)
{
    load_t *a = lua_touserdata(L, 1);
    lh_vm_load(a->vm, a->paths, a->npaths, count_problem, a);
    return 0;
}

int lh_reload_load(lh_vm_t *vm, char *const *paths, size_t npaths, lh_vm_report_cb report,
                   void *data)
{
    load_t a = {vm, paths, npaths, report, data, 0};
    if (lh_task_protect(vm->L, load_protected, &a, 0, 0) != LUA_OK)
        count_problem(&a, "not enough memory to load the scripts");
    return a.problems;
}

static void do_reload(lh_reload_t *r, const char *why)
{
    lh_app_t *app = r->app;
    uint64_t t0 = uv_hrtime();
    uint64_t gen = app->vm->generation + 1;
    char err[256], g[24], ms[32], n[16];
    problems_t problems = {0, &app->last_reload};
    struct timeval tv;
    gettimeofday(&tv, NULL);

    lh_vm_t *vm = lh_vm_new(app, gen, err, sizeof(err));
    if (vm == NULL)
        report_problem(&problems, err);
    else
        lh_reload_load(vm, app->cfg->paths, app->cfg->npaths, report_problem, &problems);
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    app->metrics.reload_seconds = secs;
    snprintf(ms, sizeof(ms), "%.3f", secs * 1000);
    app->last_reload.at = (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
    app->last_reload.ok = problems.count == 0;
    app->last_reload.nproblems = problems.count;
    if (problems.count > 0) {
        lh_vm_free(vm);
        app->metrics.reloads_failed++;
        snprintf(g, sizeof(g), "%llu", (unsigned long long)app->vm->generation);
        snprintf(n, sizeof(n), "%d", problems.count);
        lh_field_t f[] = {LH_FIELD("reason", why), LH_FIELD_NUM("problems", n),
                          LH_FIELD_NUM("generation", g), LH_FIELD_NUM("duration_ms", ms),
                          LH_FIELD("file", r->file)};
        lh_log_fields(LH_ERROR, "reload failed, the running scripts stay", f,
                      4 + (why == WATCH_REASON));
        return;
    }
    lh_vm_t *old = app->vm;
    app->vm = vm;
    app->metrics.vm_generation = gen;
    app->metrics.reloads_ok++;
    snprintf(g, sizeof(g), "%llu", (unsigned long long)gen);
    snprintf(n, sizeof(n), "%zu", vm->nhandlers);
    lh_field_t f[] = {LH_FIELD("reason", why), LH_FIELD_NUM("generation", g),
                      LH_FIELD_NUM("handlers", n), LH_FIELD_NUM("duration_ms", ms),
                      LH_FIELD("file", r->file)};
    lh_log_fields(LH_INFO, "reloaded", f, 4 + (why == WATCH_REASON));
    for (size_t i = 0; i < vm->nwarnings; i++)
        LH_LOG(LH_WARN, "%s", vm->warnings[i]);
    log_changes(old, vm);
    retire(r, old); /* may free it */
}

static void on_soon(uv_timer_t *t)
{
    lh_reload_t *r = t->data;
    /* requests that arrive while this runs (signals queue in libuv) schedule one more */
    r->pending = 0;
    if (!r->app->stopping)
        do_reload(r, r->why);
}

void lh_reload_request(lh_reload_t *r, const char *why)
{
    /* why: a string literal, kept until the reload runs */
    if (r->closing || r->app->stopping)
        return;
    if (why == WATCH_REASON)
        LH_LOG(LH_INFO, "reload requested (%s: %s)", why, r->file);
    else
        LH_LOG(LH_INFO, "reload requested (%s)", why);
    if (r->pending)
        return;
    r->pending = 1;
    r->why = why;
    uv_timer_start(&r->soon, on_soon, 0, 0);
}

static void on_sighup(uv_signal_t *s, int signum)
{
    (void)signum;
    lh_reload_request(s->data, "SIGHUP");
}

static void on_debounced(uv_timer_t *t)
{
    lh_reload_t *r = t->data;
    if (r->nchanged > 1)
        snprintf(r->file, sizeof(r->file), "%s and %d more", r->changed, r->nchanged - 1);
    else
        snprintf(r->file, sizeof(r->file), "%s", r->changed);
    r->changed[0] = '\0';
    r->nchanged = 0;
    lh_reload_request(r, WATCH_REASON);
}

static void on_fs_event(uv_fs_event_t *h, const char *filename, int events, int status)
{
    watch_t *w = h->data;
    (void)events;
    if (status < 0)
        return;
    if (filename != NULL) {
        size_t len = strlen(filename);
        if (w->name != NULL ? strcmp(filename, w->name) != 0
                            : (len < 5 || strcmp(filename + len - 4, ".lua") != 0 ||
                               (len >= 9 && strcmp(filename + len - 9, "_test.lua") == 0)))
            return;
    }
    lh_reload_t *r = w->r;
    char path[sizeof(r->changed)];
    if (filename != NULL)
        snprintf(path, sizeof(path), "%s/%s", w->dir, filename);
    else
        snprintf(path, sizeof(path), "%s", w->dir); /* the platform did not say which */
    if (r->nchanged == 0)
        snprintf(r->changed, sizeof(r->changed), "%s", path), r->nchanged = 1;
    else if (strcmp(r->changed, path) != 0)
        r->nchanged++;
    uv_timer_start(&r->debounce, on_debounced, DEBOUNCE_MS, 0);
}

static void watch_close_cb(uv_handle_t *h)
{
    watch_t *w = h->data;
    free(w->name);
    free(w->dir);
    free(w);
}

/* A file is watched through its folder, so an editor that saves by renaming a new file
** over the old one is still seen. */
static int add_watch(lh_reload_t *r, const char *path)
{
    struct stat st;
    char *copy = strdup(path), *dir;
    watch_t *w = calloc(1, sizeof(*w));
    watch_t **ws = realloc(r->watches, (r->nwatches + 1) * sizeof(*ws));
    if (copy == NULL || w == NULL || ws == NULL) {
        free(copy);
        free(w);
        if (ws != NULL)
            r->watches = ws;
        return -1;
    }
    r->watches = ws;
    w->r = r;
    if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) {
        dir = copy;
    } else {
        w->name = strdup(basename(copy));
        free(copy);
        if ((copy = strdup(path)) == NULL || w->name == NULL) {
            free(copy);
            free(w->name);
            free(w);
            return -1;
        }
        dir = dirname(copy);
    }
    if ((w->dir = strdup(dir)) != NULL) { /* "handlers/" names files "handlers/x.lua" */
        size_t n = strlen(w->dir);
        while (n > 1 && w->dir[n - 1] == '/')
            w->dir[--n] = '\0';
    }
    if (w->dir == NULL) {
        free(copy);
        free(w->name);
        free(w);
        return -1;
    }
    uv_fs_event_init(r->app->loop, &w->handle);
    w->handle.data = w;
    int rc = uv_fs_event_start(&w->handle, on_fs_event, dir, 0);
    if (rc != 0)
        LH_LOG(LH_WARN, "--watch: cannot watch %s: %s", dir, uv_strerror(rc));
    free(copy);
    r->watches[r->nwatches++] = w;
    return 0;
}

/* The lib/ folder beside the scripts of `path` (a script, or a folder of them): the
** modules their require() finds there are part of what they run. Only lib/ itself is
** watched, not its subfolders (inotify does not recurse). */
static void add_lib_watch(lh_reload_t *r, const char *path)
{
    struct stat st;
    char lib[4096];
    int isdir = stat(path, &st) == 0 && S_ISDIR(st.st_mode);
    const char *slash = strrchr(path, '/');
    if (isdir)
        snprintf(lib, sizeof(lib), "%s/lib", path);
    else if (slash == NULL)
        snprintf(lib, sizeof(lib), "lib");
    else
        snprintf(lib, sizeof(lib), "%.*s/lib", (int)(slash - path), path);
    if (stat(lib, &st) == 0 && S_ISDIR(st.st_mode))
        add_watch(r, lib);
}

/* The recipe folders under each --recipes DIR: their recipe.lua and modules are part of
** what runs. Each DIR/NAME/ with a recipe.lua is watched (not deeper, as for lib/); a
** recipe folder added later is seen at the next reload. */
static void add_recipe_watches(lh_reload_t *r, const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    struct stat st;
    char path[4096];
    if (d == NULL)
        return;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        snprintf(path, sizeof(path), "%s/%s/recipe.lua", dir, e->d_name);
        if (stat(path, &st) != 0 || !S_ISREG(st.st_mode))
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        add_watch(r, path);
    }
    closedir(d);
}

lh_reload_t *lh_reload_new(lh_app_t *app, int watch)
{
    lh_reload_t *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return NULL;
    r->app = app;
    uv_signal_init(app->loop, &r->sighup);
    uv_timer_init(app->loop, &r->soon);
    uv_timer_init(app->loop, &r->debounce);
    uv_idle_init(app->loop, &r->reaper);
    r->sighup.data = r->soon.data = r->debounce.data = r->reaper.data = r;
    uv_signal_start(&r->sighup, on_sighup, SIGHUP);
    for (size_t i = 0; watch && i < app->cfg->npaths; i++) {
        add_watch(r, app->cfg->paths[i]);
        add_lib_watch(r, app->cfg->paths[i]);
    }
    for (size_t i = 0; watch && i < app->cfg->nrecipes; i++)
        add_recipe_watches(r, app->cfg->recipes[i]);
    return r;
}

static void reload_close_cb(uv_handle_t *h)
{
    lh_reload_t *r = h->data;
    if (--r->closing == 0)
        free(r);
}

void lh_reload_free(lh_reload_t *r)
{
    if (r == NULL)
        return;
    while (r->retired != NULL) {
        lh_vm_t *vm = r->retired;
        r->retired = vm->next_retired;
        lh_vm_free(vm); /* cancels what its handlers wait on */
    }
    for (size_t i = 0; i < r->nwatches; i++)
        uv_close((uv_handle_t *)&r->watches[i]->handle, watch_close_cb);
    free(r->watches);
    r->closing = 4;
    uv_close((uv_handle_t *)&r->sighup, reload_close_cb);
    uv_close((uv_handle_t *)&r->soon, reload_close_cb);
    uv_close((uv_handle_t *)&r->debounce, reload_close_cb);
    uv_close((uv_handle_t *)&r->reaper, reload_close_cb);
}
