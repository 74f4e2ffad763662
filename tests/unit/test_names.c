/* Stable names: scripts named by the path given, handler ids that survive an edit above
 * them, on()'s name option and its checks, and the per-id metrics bound. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock.h"
#include "config.h"
#include "metrics.h"
#include "vm.h"
#include "test.h"

static char dir[64];

typedef struct {
    lh_app_t app;
    lh_config_t cfg;
    lh_vm_t *vm;
    char problems[4096];
    int nproblems;
} world_t;

static void report(void *data, const char *problem)
{
    world_t *w = data;
    size_t len = strlen(w->problems);
    snprintf(w->problems + len, sizeof(w->problems) - len, "%s\n", problem);
    w->nproblems++;
}

static const char *write_file(const char *name, const char *text)
{
    static char path[256];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f == NULL)
        return NULL;
    fputs(text, f);
    fclose(f);
    return path;
}

/* A world with a VM that loaded `paths` (sealed). */
static world_t *load(char *const *paths, size_t n)
{
    char err[256];
    world_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    w->cfg.handler_timeout = 30;
    w->app.cfg = &w->cfg;
    lh_metrics_init(&w->app.metrics);
    w->app.clock = lh_clock_new_virtual(1700000000.0);
    w->vm = lh_vm_new(&w->app, 1, err, sizeof(err));
    if (w->vm != NULL)
        lh_vm_load(w->vm, paths, n, report, w);
    return w;
}

static void world_free(world_t *w)
{
    if (w == NULL)
        return;
    lh_vm_free(w->vm);
    lh_clock_free(w->app.clock);
    lh_metrics_dispose(&w->app.metrics);
    free(w);
}

static world_t *load_one(const char *path)
{
    char *p = strdup(path);
    world_t *w = load(&p, 1);
    free(p);
    return w;
}

static const char V1[] = "on('A', function() end)\n"
                         "on({ 'A', 'B' }, function() end, { name = 'slack' })\n"
                         "on('*', function() end)\n";
/* V1 edited: lines above every handler, and one more at the end */
static const char V2[] = "-- a comment\n\nlocal x = 1\n"
                         "on('A', function() return x end)\n\n"
                         "on({ 'A', 'B' }, function() end, { name = 'slack' })\n"
                         "-- more\n"
                         "on('*', function() end)\n"
                         "on('C', function() end)\n";

static void test_ids_survive_an_edit_above(void)
{
    const char *ids[] = {"x.lua#1", "x.lua#slack", "x.lua#3"};
    world_t *a = load_one(write_file("x.lua", V1));
    CHECK(a != NULL && a->vm != NULL && a->nproblems == 0);
    if (a == NULL || a->vm == NULL)
        return;
    CHECK_EQ_INT(a->vm->nhandlers, 3);
    for (size_t i = 0; i < 3 && i < a->vm->nhandlers; i++)
        CHECK_STR(a->vm->handlers[i].id, ids[i]);
    world_t *b = load_one(write_file("x.lua", V2));
    CHECK(b != NULL && b->vm != NULL && b->nproblems == 0);
    if (b != NULL && b->vm != NULL) {
        CHECK_EQ_INT(b->vm->nhandlers, 4);
        for (size_t i = 0; i < 3; i++) {
            const lh_handler_t *was = &a->vm->handlers[i];
            const lh_handler_t *now = lh_vm_handler_find(b->vm, ids[i]);
            CHECK(now != NULL);
            if (now == NULL)
                continue;
            CHECK(now->line != was->line); /* file:line moved, the id did not */
            CHECK_STR(now->actions, was->actions);
        }
        CHECK(lh_vm_handler_find(b->vm, "x.lua#4") != NULL);
        CHECK(lh_vm_handler_find(a->vm, "x.lua#4") == NULL);
    }
    world_free(a);
    world_free(b);
}

static void test_script_names(void)
{
    char sub[128], *paths[2];
    snprintf(sub, sizeof(sub), "%s/handlers", dir);
    mkdir(sub, 0700);
    write_file("handlers/n.lua", "on('A', function() end)\n");
    write_file("handlers/m.lua", "on('A', function() end)\n");
    write_file("handlers/m_test.lua", "error('a test file is no handler')\n");
    /* a folder: the path inside it, in name order */
    paths[0] = sub;
    world_t *w = load(paths, 1);
    CHECK(w->nproblems == 0);
    CHECK_EQ_INT(w->vm->nscripts, 2);
    CHECK_STR(lh_vm_script_name(w->vm, w->vm->handlers[0].script_id), "m.lua");
    CHECK_STR(lh_vm_script_name(w->vm, w->vm->handlers[1].script_id), "n.lua");
    CHECK_EQ_INT(lh_vm_script_find(w->vm, "n.lua"), 1);
    CHECK_EQ_INT(lh_vm_script_find(w->vm, "handlers/n.lua"), -1);
    world_free(w);
    /* a file: its base name; the same name twice is a load error */
    char file[160];
    snprintf(file, sizeof(file), "%s/handlers/n.lua", dir);
    paths[0] = file;
    paths[1] = sub;
    w = load(paths, 2);
    CHECK_STR(lh_vm_script_name(w->vm, 0), "n.lua");
    CHECK_EQ_INT(w->nproblems, 1);
    CHECK(strstr(w->problems, "n.lua: the script is loaded twice") != NULL);
    world_free(w);
    /* two files of one base name */
    char other[160];
    snprintf(other, sizeof(other), "%s/n.lua", dir);
    write_file("n.lua", "on('A', function() end)\n");
    paths[1] = other;
    w = load(paths, 2);
    CHECK_EQ_INT(w->nproblems, 1);
    CHECK(strstr(w->problems, "the script name 'n.lua' is already taken by ") != NULL);
    world_free(w);
}

static void test_names_checked(void)
{
    static const struct {
        const char *opts;
        const char *problem; /* NULL: loads */
    } cases[] = {
        {"{ name = 'a.b-c_D9' }", NULL},
        {"{}", NULL},
        {"nil", NULL},
        {"{ name = "
         "'a123456789012345678901234567890123456789012345678901234567890123' }",
         NULL},
        {"{ name = "
         "'a1234567890123456789012345678901234567890123456789012345678901234' }",
         "bad handler name"},
        {"{ name = '1' }", "bad handler name '1'"},
        {"{ name = '' }", "bad handler name ''"},
        {"{ name = 'x#y' }", "bad handler name 'x#y'"},
        {"{ name = '-x' }", "bad handler name"},
        {"{ name = true }", "the name must be a string, got boolean"},
        {"{ Name = 'x' }", "unknown option 'Name'"},
        {"{ 'x' }", "takes string keys (name, custom, retries), not a number"},
        {"{ retries = -1 }", "retries must be a whole number from 0 to 1000, got -1"},
        {"{ retries = 2.5 }", "retries must be a whole number from 0 to 1000, got 2.5"},
        {"{ retries = 0 }", NULL},
        {"{ custom = 'yes' }", "custom must be true or false, got string"},
        {"{ custom = true, name = 'x' }", NULL},
        {"'x'", "bad argument #3 to 'on' (table expected, got string)"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char src[256];
        snprintf(src, sizeof(src), "\non('A', function() end, %s)\n", cases[i].opts);
        world_t *w = load_one(write_file("o.lua", src));
        if (cases[i].problem == NULL) {
            CHECK_EQ_INT(w->nproblems, 0);
        } else {
            CHECK_EQ_INT(w->nproblems, 1);
            CHECK(strstr(w->problems, "o.lua:2: ") != NULL);
            if (strstr(w->problems, cases[i].problem) == NULL)
                fprintf(stderr, "case %zu: %s", i, w->problems);
            CHECK(strstr(w->problems, cases[i].problem) != NULL);
        }
        world_free(w);
    }
    /* one name twice in a script: the second on() fails; in two scripts, both load */
    world_t *w = load_one(write_file("d.lua", "on('A', function() end, { name = 'n' })\n"
                                              "on('B', function() end, { name = 'n' })\n"));
    CHECK(strstr(w->problems, "d.lua:2: on: the handler name 'n' is already used in this "
                              "script (by ") != NULL);
    world_free(w);
    char *paths[2] = {strdup(write_file("p.lua", "on('A', function() end, { name = 'n' })\n")),
                      strdup(write_file("q.lua", "on('A', function() end, { name = 'n' })\n"))};
    w = load(paths, 2);
    CHECK_EQ_INT(w->nproblems, 0);
    CHECK(lh_vm_handler_find(w->vm, "p.lua#n") != NULL);
    CHECK(lh_vm_handler_find(w->vm, "q.lua#n") != NULL);
    world_free(w);
    free(paths[0]);
    free(paths[1]);
}

static void test_handler_metrics_bounded(void)
{
    lh_metrics_t m;
    char id[32];
    lh_metrics_init(&m);
    lh_handler_stats_t *first = lh_metrics_handler(&m, "a.lua#1");
    CHECK(first == lh_metrics_handler(&m, "a.lua#1"));
    for (int i = 0; i < 300; i++) {
        snprintf(id, sizeof(id), "b.lua#%d", i);
        lh_metrics_handler(&m, id)->runs[LH_OUTCOME_OK]++;
    }
    CHECK_EQ_INT(m.nhandlers, LH_METRICS_MAX_HANDLERS);
    CHECK_STR(lh_metrics_handler(&m, "c.lua#1")->id, "_other");
    size_t len;
    char *text = lh_metrics_render(&m, &len);
    CHECK(text != NULL);
    if (text != NULL) {
        CHECK(strstr(text, "luahook_handler_runs_by_id_total{handler=\"a.lua#1\",outcome=\"ok\"} "
                           "0\n") != NULL);
        /* 300 - 255 runs fell into _other */
        CHECK(strstr(text, "luahook_handler_runs_by_id_total{handler=\"_other\",outcome=\"ok\"} "
                           "45\n") != NULL);
        CHECK(strstr(text, "b.lua#254\"") != NULL);
        CHECK(strstr(text, "b.lua#255\"") == NULL);
        free(text);
    }
    lh_metrics_dispose(&m);
}

int main(void)
{
    snprintf(dir, sizeof(dir), "/tmp/lh_names_XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    RUN_TEST(test_ids_survive_an_edit_above);
    RUN_TEST(test_script_names);
    RUN_TEST(test_names_checked);
    RUN_TEST(test_handler_metrics_bounded);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return TEST_SUMMARY();
}
