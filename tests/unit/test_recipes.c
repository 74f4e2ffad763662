/* Recipe instances in the VM: an instance is a script of its own (ids "<instance>#N"),
 * its handlers told by the use() site, a failed use() deferred so that every use() of a
 * script is reported, instance names that collide refused, the stack left as found. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "clock.h"
#include "config.h"
#include "metrics.h"
#include "vm.h"
#include "test.h"

static char dir[64];

typedef struct {
    lh_app_t app;
    lh_config_t cfg;
    char *recipes[1];
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

static char *write_file(const char *name, const char *text)
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

/* A world whose --recipes is DIR/r, with the script `text` loaded (sealed). */
static world_t *load(const char *text)
{
    char err[256], rdir[128];
    world_t *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    snprintf(rdir, sizeof(rdir), "%s/r", dir);
    w->recipes[0] = strdup(rdir);
    w->cfg.recipes = w->recipes;
    w->cfg.nrecipes = 1;
    w->cfg.handler_timeout = 30;
    w->app.cfg = &w->cfg;
    lh_metrics_init(&w->app.metrics);
    w->app.clock = lh_clock_new_virtual(1700000000.0);
    w->vm = lh_vm_new(&w->app, 1, err, sizeof(err));
    char *path = strdup(write_file("h.lua", text));
    if (w->vm != NULL && path != NULL)
        lh_vm_load(w->vm, &path, 1, report, w);
    free(path);
    return w;
}

static void world_free(world_t *w)
{
    if (w == NULL)
        return;
    lh_vm_free(w->vm);
    lh_clock_free(w->app.clock);
    lh_metrics_dispose(&w->app.metrics);
    free(w->recipes[0]);
    free(w);
}

static const char RECIPE[] = "return { name = 'echo', version = '1.0.0', description = 'd',\n"
                             "  config = { n = { type = 'integer', min = 1, default = 1 } },\n"
                             "  setup = function(cfg)\n"
                             "    on('A', function() end)\n"
                             "    on('B', function() end, { name = 'named' })\n"
                             "  end }\n";

static void test_instances_are_scripts_told_by_their_site(void)
{
    world_t *w = load("local x = 1\n"
                      "use('echo', { n = 2 })\n"
                      "use('echo', nil, { as = 'e2' })\n");
    CHECK(w != NULL && w->vm != NULL);
    if (w == NULL || w->vm == NULL)
        return;
    CHECK_STR(w->problems, "");
    CHECK_EQ_INT(w->vm->nhandlers, 4);
    CHECK_EQ_INT(w->vm->nscripts, 3); /* h.lua, echo, e2 */
    const lh_handler_t *h = lh_vm_handler_find(w->vm, "echo#1");
    CHECK(h != NULL);
    if (h != NULL) {
        CHECK(strstr(h->script, "/h.lua") != NULL);
        CHECK_EQ_INT(h->line, 2);
        char want[256];
        snprintf(want, sizeof(want), "%s:2 (%s/r/echo/recipe.lua:4)", h->script, dir);
        CHECK_STR(h->label, want);
        CHECK_STR(lh_vm_script_name(w->vm, h->script_id), "echo");
    }
    CHECK(lh_vm_handler_find(w->vm, "echo#named") != NULL);
    CHECK(lh_vm_handler_find(w->vm, "e2#1") != NULL);
    CHECK(lh_vm_handler_find(w->vm, "e2#named") != NULL);
    CHECK_EQ_INT(lua_gettop(w->vm->L), 0);
    world_free(w);
}

static void test_every_failed_use_is_reported(void)
{
    world_t *w = load("use('echo', { n = 0 })\n"
                      "use('echo', { m = 1 }, { as = 'e2' })\n"
                      "use('nope')\n"
                      "on('A', function() end)\n");
    CHECK(w != NULL && w->vm != NULL);
    if (w == NULL || w->vm == NULL)
        return;
    CHECK_EQ_INT(w->nproblems, 3);
    CHECK(strstr(w->problems, "h.lua:1: echo: n: expected an integer >= 1, got 0\n") != NULL);
    CHECK(strstr(w->problems, "h.lua:2: echo: m: unknown key, did you mean n?\n") != NULL);
    CHECK(strstr(w->problems, "h.lua:3: use: no recipe \"nope\"") != NULL);
    CHECK_EQ_INT(w->vm->ndeferred, 0); /* handed over, freed */
    CHECK_EQ_INT(lua_gettop(w->vm->L), 0);
    world_free(w);
}

static void test_instance_names_collide(void)
{
    world_t *w = load("use('echo')\n");
    CHECK(w != NULL && w->vm != NULL && w->nproblems == 0);
    if (w == NULL || w->vm == NULL)
        return;
    char err[256];
    CHECK_EQ_INT(lh_vm_instance_begin(w->vm, "echo", "x/recipe.lua", "h.lua", 9, err, sizeof(err)),
                 -2);
    CHECK(strstr(err, "the name 'echo' is already taken by ") != NULL);
    CHECK_EQ_INT(lh_vm_instance_begin(w->vm, "h.lua", "x/recipe.lua", "h.lua", 9, err, sizeof(err)),
                 -2);
    int prev = lh_vm_instance_begin(w->vm, "fresh", "x/recipe.lua", "h.lua", 9, err, sizeof(err));
    CHECK_EQ_INT(prev, -1); /* no script was loading */
    CHECK_STR(lh_vm_script_name(w->vm, w->vm->loading_script), "fresh");
    lh_vm_instance_end(w->vm, prev);
    CHECK_EQ_INT(w->vm->loading_script, -1);
    world_free(w);
}

static void test_scrub_masks_an_instances_secrets(void)
{
    world_t *w = load("use('echo')\n");
    CHECK(w != NULL && w->vm != NULL && w->nproblems == 0);
    if (w == NULL || w->vm == NULL)
        return;
    char err[256];
    int failed = 1;
    int prev = lh_vm_instance_begin(w->vm, "sec", "x/recipe.lua", "h.lua", 9, err, sizeof(err));
    const char *secrets[] = {"https://hook/abcd-long", "abcd", "xy"};
    CHECK_EQ_INT(lh_vm_instance_secrets(w->vm, secrets, 3), 0);
    int id = w->vm->loading_script;
    lh_vm_instance_end(w->vm, prev);
    char *s = lh_vm_scrub(w->vm, id, "POST https://hook/abcd-long: abcd, xy, abcdabcd", &failed);
    CHECK(s != NULL && failed == 0);
    /* the longest first; one too short to mask safely kept */
    CHECK_STR(s ? s : "", "POST ***: ***, xy, ******");
    free(s);
    CHECK(lh_vm_scrub(w->vm, id, "nothing here", &failed) == NULL && failed == 0);
    CHECK(lh_vm_scrub(w->vm, id, NULL, &failed) == NULL);
    /* a script without secrets, and one out of range */
    CHECK(lh_vm_scrub(w->vm, 0, "abcd", &failed) == NULL && failed == 0);
    CHECK(lh_vm_scrub(w->vm, 999, "abcd", &failed) == NULL && failed == 0);
    world_free(w);
}

int main(void)
{
    char rdir[128];
    snprintf(dir, sizeof(dir), "/tmp/lh_recipes_XXXXXX");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(rdir, sizeof(rdir), "%s/r", dir);
    mkdir(rdir, 0700);
    snprintf(rdir, sizeof(rdir), "%s/r/echo", dir);
    mkdir(rdir, 0700);
    write_file("r/echo/recipe.lua", RECIPE);
    RUN_TEST(test_instances_are_scripts_told_by_their_site);
    RUN_TEST(test_every_failed_use_is_reported);
    RUN_TEST(test_instance_names_collide);
    RUN_TEST(test_scrub_masks_an_instances_secrets);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return TEST_SUMMARY();
}
