#include "store.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "list.h"
#include "metrics.h"

/* Buckets the expiry sweep looks at per tick: it never holds the loop for long. */
#define SWEEP_BUCKETS 4096
#define SWEEP_MS      1000

typedef struct entry_s entry_t;
struct entry_s {
    entry_t *next; /* bucket chain */
    uint32_t hash;
    size_t nslen, klen;
    char *name; /* owned: ns \0 key \0 */
    int type;   /* lh_sv_type_t */
    int64_t i;
    double f;
    char *bytes; /* owned: string, JSON */
    size_t len;
    double expires; /* seconds since the epoch; 0: never */
    uint64_t wseq;  /* the state sequence number of our last write of it */
};

struct lh_store_lock_s {
    char *name; /* owned: ns \0 key */
    size_t nlen;
    uint64_t owner;             /* 0: free (a lock is freed once free and unwaited) */
    lh_store_waiter_t *waiters; /* FIFO: head first */
    lh_store_waiter_t *tail;
    lh_store_lock_t *prev, *next; /* s->locks */
};

enum { W_WAITING = 1, W_GRANTED }; /* lh_store_waiter_t.state */

struct lh_store_s {
    uv_loop_t *loop;   /* borrowed */
    lh_state_t *state; /* borrowed; NULL: memory only */
    entry_t **buckets; /* owned */
    size_t nbuckets;   /* a power of two */
    size_t count;      /* entries, live or expired not yet swept */
    size_t max_keys;
    size_t nexpiring; /* entries with an expiry */
    size_t sweep_pos;
    uv_timer_t sweep;
    uv_timer_t grant; /* delivers granted locks from the loop */
    int timers_open;
    /* luahook test (lh_store_use_clock): time and lock grants on its virtual clock */
    lh_clock_t *clock;             /* borrowed; NULL: the system's time, the loop's timers */
    lh_clock_timer_t *clock_grant; /* owned */
    lh_store_lock_t *locks;
    size_t nlocks;
    lh_store_waiter_t *granted; /* waiters whose lock is theirs, not told yet */
    lh_metrics_t *metrics;      /* borrowed; NULL: none */
};

static double now_s(const lh_store_t *s)
{
    if (s->clock != NULL) /* luahook test: the virtual clock */
        return lh_clock_wall(s->clock);
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static uint32_t hash_of(const char *ns, const char *key, size_t klen)
{
    uint32_t h = 2166136261u;
    for (const char *p = ns; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ 0u) * 16777619u;
    for (size_t i = 0; i < klen; i++)
        h = (h ^ (unsigned char)key[i]) * 16777619u;
    return h;
}

static int same(const entry_t *e, uint32_t h, const char *ns, size_t nslen, const char *key,
                size_t klen)
{
    return e->hash == h && e->nslen == nslen && e->klen == klen &&
           memcmp(e->name, ns, nslen) == 0 && memcmp(e->name + nslen + 1, key, klen) == 0;
}

static entry_t **find(lh_store_t *s, const char *ns, const char *key, size_t klen, uint32_t h)
{
    size_t nslen = strlen(ns);
    entry_t **pp = &s->buckets[h & (s->nbuckets - 1)];
    while (*pp && !same(*pp, h, ns, nslen, key, klen))
        pp = &(*pp)->next;
    return pp;
}

static void entry_free(entry_t *e)
{
    free(e->name);
    free(e->bytes);
    free(e);
}

/* Unlinks and frees *pp; `persist`: the delete goes to the database too. */
static void remove_at(lh_store_t *s, entry_t **pp, int persist)
{
    entry_t *e = *pp;
    *pp = e->next;
    if (persist && s->state != NULL)
        lh_state_delete(s->state, e->name, e->name + e->nslen + 1);
    if (e->expires > 0)
        s->nexpiring--;
    s->count--;
    if (s->metrics)
        s->metrics->store_keys = s->count;
    entry_free(e);
}

static int grow(lh_store_t *s)
{
    size_t n = s->nbuckets * 2;
    entry_t **b = calloc(n, sizeof(*b));
    if (b == NULL)
        return -1;
    for (size_t i = 0; i < s->nbuckets; i++) {
        entry_t *e = s->buckets[i];
        while (e) {
            entry_t *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(s->buckets);
    s->buckets = b;
    s->nbuckets = n;
    return 0;
}

/* The live entry of (ns, key), or NULL; an expired one is removed on the way. */
static entry_t *lookup(lh_store_t *s, const char *ns, const char *key, size_t klen)
{
    entry_t **pp = find(s, ns, key, klen, hash_of(ns, key, klen));
    if (*pp && (*pp)->expires > 0 && (*pp)->expires <= now_s(s)) {
        remove_at(s, pp, 1);
        return NULL;
    }
    return *pp;
}

/* Stores `v` into `e` (copying its bytes). */
static int assign(entry_t *e, const lh_store_value_t *v)
{
    char *copy = NULL;
    if (v->type == LH_SV_STRING || v->type == LH_SV_JSON) {
        if ((copy = malloc(v->len + 1)) == NULL)
            return -1;
        memcpy(copy, v->bytes, v->len);
        copy[v->len] = '\0';
    }
    free(e->bytes);
    e->bytes = copy;
    e->len = copy ? v->len : 0;
    e->type = v->type;
    e->i = v->i;
    e->f = v->f;
    return 0;
}

/* Creates the entry of (ns, key); NULL when out of memory. Not counted against max_keys
** here: callers check. */
static entry_t *insert(lh_store_t *s, const char *ns, const char *key, size_t klen)
{
    if (s->count + 1 > s->nbuckets && grow(s) != 0)
        return NULL;
    entry_t *e = calloc(1, sizeof(*e));
    size_t nslen = strlen(ns);
    if (e == NULL || (e->name = malloc(nslen + klen + 2)) == NULL) {
        free(e);
        return NULL;
    }
    memcpy(e->name, ns, nslen + 1);
    memcpy(e->name + nslen + 1, key, klen);
    e->name[nslen + 1 + klen] = '\0';
    e->nslen = nslen;
    e->klen = klen;
    e->hash = hash_of(ns, key, klen);
    entry_t **pp = &s->buckets[e->hash & (s->nbuckets - 1)];
    e->next = *pp;
    *pp = e;
    s->count++;
    if (s->metrics)
        s->metrics->store_keys = s->count;
    return e;
}

static void set_expiry(lh_store_t *s, entry_t *e, double expires)
{
    if (e->expires > 0)
        s->nexpiring--;
    e->expires = expires;
    if (expires > 0)
        s->nexpiring++;
}

static void persist(lh_store_t *s, entry_t *e)
{
    if (s->state == NULL)
        return;
    lh_state_row_t r = {.ns = e->name,
                        .key = e->name + e->nslen + 1,
                        .type = e->type,
                        .i = e->i,
                        .f = e->f,
                        .bytes = e->bytes,
                        .len = e->len,
                        .expires = e->expires};
    e->wseq = lh_state_put(s->state, &r);
}

/* ------------------------------------------------------------------ timers */

/* Removes expired entries, a slice of the buckets at a time. */
static void on_sweep(uv_timer_t *t)
{
    lh_store_t *s = t->data;
    if (s->nexpiring == 0)
        return;
    double now = now_s(s);
    for (size_t n = 0; n < SWEEP_BUCKETS && n < s->nbuckets; n++) {
        s->sweep_pos = (s->sweep_pos + 1) & (s->nbuckets - 1);
        entry_t **pp = &s->buckets[s->sweep_pos];
        while (*pp) {
            if ((*pp)->expires > 0 && (*pp)->expires <= now)
                remove_at(s, pp, 1);
            else
                pp = &(*pp)->next;
        }
    }
}

static void deliver_grants(lh_store_t *s)
{
    while (s->granted) {
        lh_store_waiter_t *w = s->granted;
        LH_LIST_REMOVE(s->granted, w);
        w->state = 0;
        w->granted(w);
    }
}

static void on_grant(uv_timer_t *t)
{
    deliver_grants(t->data);
}

static void on_clock_grant(lh_clock_timer_t *t)
{
    deliver_grants(t->data);
}

int lh_store_use_clock(lh_store_t *s, lh_clock_t *clock)
{
    assert(s->clock == NULL && !s->timers_open);
    if ((s->clock_grant = lh_clock_timer_new(clock, on_clock_grant, s)) == NULL)
        return -1;
    s->clock = clock;
    return 0;
}

static void free_on_close(uv_handle_t *h)
{
    lh_store_t *s = h->data;
    free(s->buckets);
    free(s);
}

lh_store_t *lh_store_new(uv_loop_t *loop, lh_state_t *state, size_t max_keys)
{
    lh_store_t *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->loop = loop;
    s->state = state;
    s->max_keys = max_keys;
    s->nbuckets = 64;
    if ((s->buckets = calloc(s->nbuckets, sizeof(*s->buckets))) == NULL)
        goto fail;
    if (loop != NULL) {
        if (uv_timer_init(loop, &s->sweep) != 0)
            goto fail;
        s->sweep.data = s->grant.data = s;
        if (uv_timer_init(loop, &s->grant) != 0) { /* s goes with the sweep handle */
            uv_close((uv_handle_t *)&s->sweep, free_on_close);
            return NULL;
        }
        s->timers_open = 1;
        uv_timer_start(&s->sweep, on_sweep, SWEEP_MS, SWEEP_MS);
        uv_unref((uv_handle_t *)&s->sweep);
    }
    return s;
fail:
    free(s->buckets);
    free(s);
    return NULL;
}

void lh_store_observe(lh_store_t *s, lh_metrics_t *m)
{
    s->metrics = m;
    m->store_keys = s->count;
}

size_t lh_store_count(const lh_store_t *s)
{
    return s->count;
}

/* ------------------------------------------------------------------ values */

int lh_store_get(lh_store_t *s, const char *ns, const char *key, size_t klen, lh_store_value_t *out)
{
    entry_t *e = lookup(s, ns, key, klen);
    if (e == NULL) {
        memset(out, 0, sizeof(*out));
        return 0;
    }
    out->type = e->type;
    out->i = e->i;
    out->f = e->f;
    out->bytes = e->bytes;
    out->len = e->len;
    return 1;
}

static void refused(lh_store_t *s)
{
    if (s->metrics)
        s->metrics->store_refused++;
}

static int check_key(lh_store_t *s, size_t klen, char *err, size_t errlen)
{
    if (klen == 0 || klen > LH_STORE_MAX_KEY) {
        refused(s);
        snprintf(err, errlen, "a key is 1 to %d bytes, this one has %zu", LH_STORE_MAX_KEY, klen);
        return -1;
    }
    return 0;
}

static int check_ttl(lh_store_t *s, double ttl, char *err, size_t errlen)
{
    if (!(ttl >= 0) || ttl > LH_STORE_MAX_TTL) {
        refused(s);
        snprintf(err, errlen, "ttl must be a number of seconds from 0 (none) to %.0f",
                 LH_STORE_MAX_TTL);
        return -1;
    }
    return 0;
}

static int full(lh_store_t *s, char *err, size_t errlen)
{
    snprintf(err, errlen, "the store is full (%zu keys, --store-max-keys)", s->max_keys);
    refused(s);
    return -1;
}

int lh_store_set(lh_store_t *s, const char *ns, const char *key, size_t klen,
                 const lh_store_value_t *v, double ttl, char *err, size_t errlen)
{
    if (check_key(s, klen, err, errlen) != 0 || check_ttl(s, ttl, err, errlen) != 0)
        return -1;
    if (v->type == 0) {
        lh_store_delete(s, ns, key, klen);
        return 0;
    }
    if ((v->type == LH_SV_STRING || v->type == LH_SV_JSON) && v->len > LH_STORE_MAX_VALUE) {
        refused(s);
        snprintf(err, errlen, "a value is at most %d bytes%s, this one has %zu", LH_STORE_MAX_VALUE,
                 v->type == LH_SV_JSON ? " as JSON" : "", v->len);
        return -1;
    }
    entry_t *e = lookup(s, ns, key, klen);
    int created = 0;
    if (e == NULL) {
        if (s->count >= s->max_keys)
            return full(s, err, errlen);
        if ((e = insert(s, ns, key, klen)) == NULL)
            goto oom;
        created = 1;
    }
    if (assign(e, v) != 0) {
        if (created)
            remove_at(s, find(s, ns, key, klen, e->hash), 0);
        goto oom;
    }
    set_expiry(s, e, ttl > 0 ? now_s(s) + ttl : 0);
    persist(s, e);
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

int lh_store_incr(lh_store_t *s, const char *ns, const char *key, size_t klen,
                  const lh_store_value_t *by, double ttl, lh_store_value_t *out, char *err,
                  size_t errlen)
{
    if (check_key(s, klen, err, errlen) != 0 || check_ttl(s, ttl, err, errlen) != 0)
        return -1;
    entry_t *e = lookup(s, ns, key, klen);
    lh_store_value_t cur = {.type = LH_SV_INT, .i = 0};
    if (e != NULL) {
        if (e->type != LH_SV_INT && e->type != LH_SV_FLOAT) {
            snprintf(err, errlen, "the value is not a number");
            return -1;
        }
        cur.type = e->type, cur.i = e->i, cur.f = e->f;
    } else if (s->count >= s->max_keys) {
        return full(s, err, errlen);
    }
    lh_store_value_t nv = {0};
    if (cur.type == LH_SV_INT && by->type == LH_SV_INT) {
        if (__builtin_add_overflow(cur.i, by->i, &nv.i)) {
            snprintf(err, errlen, "integer overflow");
            return -1;
        }
        nv.type = LH_SV_INT;
    } else {
        double a = cur.type == LH_SV_INT ? (double)cur.i : cur.f;
        double b = by->type == LH_SV_INT ? (double)by->i : by->f;
        nv.type = LH_SV_FLOAT;
        nv.f = a + b;
    }
    if (e == NULL) {
        if ((e = insert(s, ns, key, klen)) == NULL) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        set_expiry(s, e, ttl > 0 ? now_s(s) + ttl : 0);
    }
    assign(e, &nv); /* a number: cannot fail */
    persist(s, e);
    *out = nv;
    return 0;
}

int lh_store_delete(lh_store_t *s, const char *ns, const char *key, size_t klen)
{
    entry_t **pp = find(s, ns, key, klen, hash_of(ns, key, klen));
    if (*pp == NULL)
        return 0;
    int live = !((*pp)->expires > 0 && (*pp)->expires <= now_s(s));
    remove_at(s, pp, 1);
    return live;
}

void lh_store_keys(lh_store_t *s, const char *ns, const char *prefix, size_t plen,
                   void (*fn)(void *data, const char *key, size_t klen), void *data)
{
    size_t nslen = strlen(ns);
    double now = now_s(s);
    for (size_t i = 0; i < s->nbuckets; i++)
        for (entry_t *e = s->buckets[i]; e; e = e->next)
            if (e->nslen == nslen && memcmp(e->name, ns, nslen) == 0 && e->klen >= plen &&
                memcmp(e->name + nslen + 1, prefix, plen) == 0 &&
                !(e->expires > 0 && e->expires <= now))
                fn(data, e->name + nslen + 1, e->klen);
}

/* ------------------------------------------------------------------ the database */

static int load_row(void *data, const lh_state_row_t *r)
{
    lh_store_t *s = data;
    if (s->count >= s->max_keys)
        return -1;
    size_t klen = strlen(r->key);
    entry_t *e = insert(s, r->ns, r->key, klen);
    lh_store_value_t v = {.type = r->type, .i = r->i, .f = r->f, .bytes = r->bytes, .len = r->len};
    if (e == NULL || assign(e, &v) != 0)
        return -1;
    set_expiry(s, e, r->expires);
    return 0;
}

int lh_store_load(lh_store_t *s, char *err, size_t errlen)
{
    if (s->state == NULL)
        return 0;
    return lh_state_load_store(s->state, now_s(s), load_row, s, err, errlen);
}

/* Another process changed a key: our write wins if it is newer than what that process saw. */
static void on_external(void *data, const lh_state_row_t *r, uint64_t committed)
{
    lh_store_t *s = data;
    size_t klen = strlen(r->key);
    entry_t **pp = find(s, r->ns, r->key, klen, hash_of(r->ns, r->key, klen));
    if (*pp != NULL && (*pp)->wseq > committed)
        return;
    if (r->type == 0) {
        if (*pp != NULL)
            remove_at(s, pp, 0);
        return;
    }
    entry_t *e = *pp;
    if (e == NULL && (e = insert(s, r->ns, r->key, klen)) == NULL)
        return;
    lh_store_value_t v = {.type = r->type, .i = r->i, .f = r->f, .bytes = r->bytes, .len = r->len};
    if (assign(e, &v) != 0)
        return;
    set_expiry(s, e, r->expires);
}

lh_state_hooks_t lh_store_state_hooks(lh_store_t *s)
{
    lh_state_hooks_t h = {.external = on_external, .data = s};
    return h;
}

/* ------------------------------------------------------------------ locks */

static lh_store_lock_t *lock_find(lh_store_t *s, const char *name, size_t nlen)
{
    for (lh_store_lock_t *l = s->locks; l; l = l->next)
        if (l->nlen == nlen && memcmp(l->name, name, nlen) == 0)
            return l;
    return NULL;
}

static void lock_maybe_free(lh_store_t *s, lh_store_lock_t *l)
{
    if (l->owner != 0 || l->waiters != NULL)
        return;
    LH_LIST_REMOVE(s->locks, l);
    s->nlocks--;
    free(l->name);
    free(l);
}

int lh_store_lock(lh_store_t *s, const char *ns, const char *key, size_t klen, uint64_t owner,
                  lh_store_waiter_t *w, lh_store_lock_t **lock)
{
    size_t nslen = strlen(ns), nlen = nslen + 1 + klen;
    char stack[LH_STORE_MAX_KEY + 256], *name = nlen <= sizeof(stack) ? stack : malloc(nlen);
    assert(owner != 0);
    if (name == NULL)
        return -2;
    memcpy(name, ns, nslen + 1);
    memcpy(name + nslen + 1, key, klen);
    lh_store_lock_t *l = lock_find(s, name, nlen);
    if (l == NULL) {
        if ((l = calloc(1, sizeof(*l))) == NULL || (l->name = malloc(nlen)) == NULL) {
            free(l);
            if (name != stack)
                free(name);
            return -2;
        }
        memcpy(l->name, name, nlen);
        l->nlen = nlen;
        LH_LIST_PUSH(s->locks, l);
        s->nlocks++;
    }
    if (name != stack)
        free(name);
    if (l->owner == owner)
        return -1;
    for (lh_store_waiter_t *x = l->waiters; x; x = x->next)
        assert(x->owner != owner); /* a run waits for one thing at a time */
    if (l->owner == 0) {
        l->owner = owner;
        *lock = l;
        return 1;
    }
    w->owner = owner;
    w->lock = l;
    w->state = W_WAITING;
    w->next = NULL;
    w->prev = l->tail;
    if (l->tail)
        l->tail->next = w;
    else
        l->waiters = w;
    l->tail = w;
    *lock = l;
    return 0;
}

void lh_store_unlock(lh_store_t *s, lh_store_lock_t *l, uint64_t owner)
{
    assert(l->owner == owner);
    (void)owner;
    lh_store_waiter_t *w = l->waiters;
    if (w == NULL) {
        l->owner = 0;
        lock_maybe_free(s, l);
        return;
    }
    l->waiters = w->next;
    if (l->waiters)
        l->waiters->prev = NULL;
    else
        l->tail = NULL;
    l->owner = w->owner;
    w->state = W_GRANTED;
    LH_LIST_PUSH(s->granted, w);
    if (s->timers_open)
        uv_timer_start(&s->grant, on_grant, 0, 0);
    else if (s->clock_grant != NULL)
        lh_clock_timer_start(s->clock_grant, 0, 0);
}

void lh_store_lock_cancel(lh_store_t *s, lh_store_waiter_t *w)
{
    lh_store_lock_t *l = w->lock;
    if (w->state == W_WAITING) {
        if (w->prev)
            w->prev->next = w->next;
        else
            l->waiters = w->next;
        if (w->next)
            w->next->prev = w->prev;
        else
            l->tail = w->prev;
        w->state = 0;
        lock_maybe_free(s, l);
    } else if (w->state == W_GRANTED) {
        LH_LIST_REMOVE(s->granted, w);
        w->state = 0;
        lh_store_unlock(s, l, w->owner);
    }
}

size_t lh_store_nlocks(const lh_store_t *s)
{
    return s->nlocks;
}

void lh_store_close(lh_store_t *s)
{
    if (s == NULL || !s->timers_open)
        return;
    s->timers_open = 0;
    uv_close((uv_handle_t *)&s->sweep, NULL);
    uv_close((uv_handle_t *)&s->grant, NULL);
}

void lh_store_free(lh_store_t *s)
{
    if (s == NULL)
        return;
    lh_clock_timer_free(s->clock_grant);
    for (size_t i = 0; i < s->nbuckets; i++) {
        entry_t *e = s->buckets[i];
        while (e) {
            entry_t *next = e->next;
            entry_free(e);
            e = next;
        }
    }
    while (s->locks) { /* none should be left: their runs ended */
        lh_store_lock_t *l = s->locks;
        LH_LIST_REMOVE(s->locks, l);
        free(l->name);
        free(l);
    }
    free(s->buckets);
    free(s);
}
