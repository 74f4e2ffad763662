/* /metrics' cached text (lh_metrics_text): built again whenever what it shows changed. */
#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "test.h"

static int shows(lh_metrics_t *m, const char *needle)
{
    size_t len = 0;
    const char *text = lh_metrics_text(m, &len);
    return text != NULL && strstr(text, needle) != NULL;
}

/* A handler's site changed twice between two scrapes: the allocator may hand the second
** copy the address the cached text was built with, so the cache must not compare it. */
static void test_site_changed_twice_between_scrapes(void)
{
    lh_metrics_t *m = calloc(1, sizeof(*m));
    CHECK(m != NULL);
    lh_metrics_init(m);
    lh_handler_stats_t *h = lh_metrics_handler(m, "a.lua:1");
    lh_metrics_handler_site(h, "use.lua:11", "r.lua");
    CHECK(shows(m, "site=\"use.lua:11\""));
    lh_metrics_handler_site(h, "use.lua:12", "r.lua");
    lh_metrics_handler_site(h, "use.lua:13", "r.lua");
    CHECK(shows(m, "site=\"use.lua:13\""));
    lh_metrics_dispose(m);
    free(m);
}

int main(void)
{
    RUN_TEST(test_site_changed_twice_between_scrapes);
    return TEST_SUMMARY();
}
