#include "clock.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <sys/time.h>

/* {====================================================== the loop's clock */

typedef struct {
    lh_clock_t base; /* first */
    uv_loop_t *loop; /* borrowed */
} loop_clock_t;

static uint64_t loop_now(lh_clock_t *c)
{
    (void)c;
    return uv_hrtime();
}

static double loop_wall(lh_clock_t *c)
{
    struct timeval tv;
    (void)c;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void on_uv_timer(uv_timer_t *uv)
{
    lh_clock_timer_t *t = uv->data;
    if (t->repeat_ns == 0)
        t->active = 0;
    t->cb(t);
}

static int loop_timer_init(lh_clock_t *c, lh_clock_timer_t *t)
{
    if ((t->uv = malloc(sizeof(*t->uv))) == NULL)
        return -1;
    int rc = uv_timer_init(((loop_clock_t *)c)->loop, t->uv);
    assert(rc == 0); /* uv_timer_init cannot fail */
    (void)rc;
    t->uv->data = t;
    return 0;
}

static uint64_t ms_of(uint64_t ns)
{
    return (ns + 500000) / 1000000;
}

static void loop_timer_start(lh_clock_timer_t *t, uint64_t after_ns)
{
    uint64_t rep = t->repeat_ns ? ms_of(t->repeat_ns) : 0;
    uv_timer_start(t->uv, on_uv_timer, ms_of(after_ns), t->repeat_ns && rep == 0 ? 1 : rep);
}

static void loop_timer_stop(lh_clock_timer_t *t)
{
    uv_timer_stop(t->uv);
}

static void uv_free_cb(uv_handle_t *h)
{
    free(h);
}

static void loop_timer_dispose(lh_clock_timer_t *t)
{
    /* libuv holds the handle until its close callback: it goes there, t goes now */
    uv_close((uv_handle_t *)t->uv, uv_free_cb);
    free(t);
}

static const lh_clock_ops_t loop_ops = {
    loop_now, loop_wall, loop_timer_init, loop_timer_start, loop_timer_stop, loop_timer_dispose,
};

lh_clock_t *lh_clock_new_loop(uv_loop_t *loop)
{
    loop_clock_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->base.ops = &loop_ops;
    c->loop = loop;
    return &c->base;
}

/* }====================================================== */

/* {====================================================== the virtual clock */

/* Its monotonic time starts here, well away from 0 (which means "no deadline"). */
#define VIRTUAL_EPOCH_NS 1000000000ull

typedef struct {
    lh_clock_t base; /* first */
    uint64_t now;    /* ns since VIRTUAL_EPOCH_NS */
    double wall0;    /* the wall time at now == 0 */
    uint64_t seq;    /* start order: timers due at once run in it */
    lh_clock_timer_t *head, *tail;
} virtual_clock_t;

static virtual_clock_t *vc_of(lh_clock_t *c)
{
    return (virtual_clock_t *)c;
}

static uint64_t virtual_now(lh_clock_t *c)
{
    return VIRTUAL_EPOCH_NS + vc_of(c)->now;
}

static double virtual_wall(lh_clock_t *c)
{
    return vc_of(c)->wall0 + (double)vc_of(c)->now / 1e9;
}

static int virtual_timer_init(lh_clock_t *c, lh_clock_timer_t *t)
{
    (void)c;
    (void)t;
    return 0;
}

static void dequeue(virtual_clock_t *vc, lh_clock_timer_t *t)
{
    if (!t->active)
        return;
    if (t->prev)
        t->prev->next = t->next;
    else
        vc->head = t->next;
    if (t->next)
        t->next->prev = t->prev;
    else
        vc->tail = t->prev;
    t->prev = t->next = NULL;
    t->active = 0;
}

/* Queues t at `due`, after every timer due at the same time (started before it). */
static void enqueue(virtual_clock_t *vc, lh_clock_timer_t *t, uint64_t due)
{
    t->due_ns = due;
    t->seq = ++vc->seq;
    lh_clock_timer_t *after = vc->tail;
    while (after != NULL && after->due_ns > due)
        after = after->prev;
    t->prev = after;
    t->next = after ? after->next : vc->head;
    if (t->next)
        t->next->prev = t;
    else
        vc->tail = t;
    if (after)
        after->next = t;
    else
        vc->head = t;
    t->active = 1;
}

static void virtual_timer_start(lh_clock_timer_t *t, uint64_t after_ns)
{
    virtual_clock_t *vc = vc_of(t->clock);
    dequeue(vc, t);
    enqueue(vc, t, vc->now + after_ns);
}

static void virtual_timer_stop(lh_clock_timer_t *t)
{
    dequeue(vc_of(t->clock), t);
}

static void virtual_timer_dispose(lh_clock_timer_t *t)
{
    dequeue(vc_of(t->clock), t);
    free(t);
}

static const lh_clock_ops_t virtual_ops = {
    virtual_now,         virtual_wall,       virtual_timer_init,
    virtual_timer_start, virtual_timer_stop, virtual_timer_dispose,
};

lh_clock_t *lh_clock_new_virtual(double wall)
{
    virtual_clock_t *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->base.ops = &virtual_ops;
    c->base.virtual_time = 1;
    c->wall0 = wall;
    return &c->base;
}

int lh_clock_run_next(lh_clock_t *c, uint64_t limit_ns)
{
    if (c->ops != &virtual_ops)
        return -1;
    virtual_clock_t *vc = vc_of(c);
    lh_clock_timer_t *t = vc->head;
    if (t == NULL || VIRTUAL_EPOCH_NS + t->due_ns > limit_ns)
        return 0;
    dequeue(vc, t);
    if (t->due_ns > vc->now)
        vc->now = t->due_ns;
    if (t->repeat_ns != 0) /* as libuv: the next run is armed before this one */
        enqueue(vc, t, vc->now + t->repeat_ns);
    t->cb(t);
    return 1;
}

void lh_clock_set(lh_clock_t *c, uint64_t ns)
{
    if (c->ops != &virtual_ops || ns < VIRTUAL_EPOCH_NS)
        return;
    virtual_clock_t *vc = vc_of(c);
    if (ns - VIRTUAL_EPOCH_NS > vc->now)
        vc->now = ns - VIRTUAL_EPOCH_NS;
}

/* }====================================================== */

void lh_clock_free(lh_clock_t *c)
{
    if (c == NULL)
        return;
    assert(c->ops != &virtual_ops || vc_of(c)->head == NULL);
    free(c);
}

uint64_t lh_clock_now(lh_clock_t *c)
{
    return c->ops->now(c);
}

double lh_clock_wall(lh_clock_t *c)
{
    return c->ops->wall(c);
}

lh_clock_timer_t *lh_clock_timer_new(lh_clock_t *c, lh_clock_cb cb, void *data)
{
    lh_clock_timer_t *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->clock = c;
    t->cb = cb;
    t->data = data;
    if (c->ops->timer_init(c, t) != 0) {
        free(t);
        return NULL;
    }
    return t;
}

void lh_clock_timer_start(lh_clock_timer_t *t, uint64_t after_ns, uint64_t repeat_ns)
{
    t->repeat_ns = repeat_ns;
    t->clock->ops->timer_start(t, after_ns);
    t->active = 1;
}

void lh_clock_timer_stop(lh_clock_timer_t *t)
{
    t->clock->ops->timer_stop(t);
    t->active = 0;
}

void lh_clock_timer_free(lh_clock_timer_t *t)
{
    if (t != NULL)
        t->clock->ops->timer_dispose(t);
}

uint64_t lh_clock_ns(double seconds)
{
    if (!(seconds > 0)) /* NaN too */
        return 0;
    /* past 1e7 s (115 days) a wait is as good as forever; beyond, llround overflows */
    return (uint64_t)llround((seconds < 1e7 ? seconds : 1e7) * 1e9);
}
