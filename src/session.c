#include "session.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

int lh_session_same(const char *a, size_t alen, const char *b, size_t blen)
{
    unsigned char diff = (unsigned char)(alen != blen);
    for (size_t i = 0; i < blen; i++)
        diff |= (unsigned char)((i < alen ? (unsigned char)a[i] : 0) ^ (unsigned char)b[i]);
    return diff == 0;
}

/* 32 random bytes as 43 base64url characters: the id and the CSRF token alike. */
static int random_token(char out[LH_SESSION_ID_LEN + 1])
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    unsigned char r[33] = {0};
    if (uv_random(NULL, NULL, r, 32, 0, NULL) != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < 33 && o < LH_SESSION_ID_LEN; i += 3) {
        unsigned v = (unsigned)r[i] << 16 | (unsigned)r[i + 1] << 8 | r[i + 2];
        for (int k = 3; k >= 0 && o < LH_SESSION_ID_LEN; k--)
            out[o++] = abc[(v >> (6 * k)) & 63];
    }
    out[o] = '\0';
    return 0;
}

int lh_sessions_init(lh_sessions_t *t, size_t cap, double ttl)
{
    t->s = calloc(cap, sizeof(*t->s));
    t->cap = t->s != NULL ? cap : 0;
    t->ttl = ttl;
    return t->s != NULL ? 0 : -1;
}

void lh_sessions_dispose(lh_sessions_t *t)
{
    if (t->s != NULL) /* the ids are secrets: no copy left behind in freed memory */
        memset(t->s, 0, t->cap * sizeof(*t->s));
    free(t->s);
    t->s = NULL;
    t->cap = 0;
}

const lh_session_t *lh_sessions_new(lh_sessions_t *t, double now)
{
    lh_session_t *slot = NULL;
    for (size_t i = 0; i < t->cap; i++) {
        lh_session_t *s = &t->s[i];
        if (s->id[0] == '\0' || s->expires <= now) {
            slot = s;
            break;
        }
        if (slot == NULL || s->created < slot->created)
            slot = s; /* full: the oldest goes */
    }
    if (slot == NULL)
        return NULL;
    lh_session_t fresh = {0};
    if (random_token(fresh.id) != 0 || random_token(fresh.csrf) != 0)
        return NULL;
    fresh.created = now;
    fresh.expires = now + t->ttl;
    *slot = fresh;
    return slot;
}

const lh_session_t *lh_sessions_find(lh_sessions_t *t, const char *id, size_t len, double now)
{
    const lh_session_t *found = NULL;
    for (size_t i = 0; i < t->cap; i++) {
        lh_session_t *s = &t->s[i];
        if (s->id[0] == '\0')
            continue;
        if (s->expires <= now) {
            memset(s, 0, sizeof(*s));
            continue;
        }
        /* every live slot is compared: the time says nothing of which one matched */
        if (lh_session_same(id, len, s->id, LH_SESSION_ID_LEN))
            found = s;
    }
    return found;
}

void lh_sessions_end(lh_sessions_t *t, const lh_session_t *s)
{
    if (s >= t->s && s < t->s + t->cap)
        memset(&t->s[s - t->s], 0, sizeof(*s));
}

size_t lh_sessions_count(const lh_sessions_t *t, double now)
{
    size_t n = 0;
    for (size_t i = 0; i < t->cap; i++)
        n += t->s[i].id[0] != '\0' && t->s[i].expires > now;
    return n;
}

int lh_session_csrf_ok(const lh_session_t *s, const char *v, size_t len)
{
    return s != NULL && lh_session_same(v, len, s->csrf, LH_SESSION_ID_LEN);
}

/* ------------------------------------------------------------------ throttle */

int lh_throttle_init(lh_throttle_t *t, size_t cap)
{
    t->e = calloc(cap, sizeof(*t->e));
    t->cap = t->e != NULL ? cap : 0;
    memset(&t->crowd, 0, sizeof(t->crowd));
    strcpy(t->crowd.addr, "*");
    return t->e != NULL ? 0 : -1;
}

void lh_throttle_dispose(lh_throttle_t *t)
{
    free(t->e);
    t->e = NULL;
    t->cap = 0;
}

static lh_throttle_entry_t *find(const lh_throttle_t *t, const char *addr)
{
    for (size_t i = 0; i < t->cap; i++)
        if (t->e[i].addr[0] != '\0' && strcmp(t->e[i].addr, addr) == 0)
            return &t->e[i];
    return NULL;
}

/* As the sweep forgets: quiet for LH_THROTTLE_QUIET, no answer still queued. */
static int quiet(const lh_throttle_entry_t *e, double now)
{
    return now - e->last >= LH_THROTTLE_QUIET && e->until <= now;
}

/* A slot `addr` may take: a free one, else the one quiet the longest if it is quiet; NULL
** when every slot holds an address still slowed down (the crowd's turn). */
static lh_throttle_entry_t *room(const lh_throttle_t *t, double now)
{
    lh_throttle_entry_t *slot = NULL;
    for (size_t i = 0; i < t->cap; i++) {
        lh_throttle_entry_t *e = &t->e[i];
        if (e->addr[0] == '\0')
            return e;
        if (quiet(e, now) && (slot == NULL || e->last < slot->last))
            slot = e;
    }
    return slot;
}

/* The entry that counts `addr`'s wrong tokens: its own, a new one, or the crowd's. */
static lh_throttle_entry_t *take(lh_throttle_t *t, const char *addr, double now)
{
    lh_throttle_entry_t *slot = find(t, addr);
    if (slot != NULL)
        return slot;
    if ((slot = room(t, now)) == NULL)
        return &t->crowd;
    memset(slot, 0, sizeof(*slot));
    strncpy(slot->addr, addr, sizeof(slot->addr) - 1);
    return slot;
}

static double delay_of(unsigned fails)
{
    if (fails < 2)
        return 0;
    double d = 0.25;
    for (unsigned i = 2; i < fails && d < LH_THROTTLE_CAP; i++)
        d *= 2;
    return d < LH_THROTTLE_CAP ? d : LH_THROTTLE_CAP;
}

int lh_throttle_refused(const lh_throttle_t *t, const char *addr, double now)
{
    const lh_throttle_entry_t *e = find(t, addr);
    if (e == NULL && room(t, now) == NULL)
        e = &t->crowd;
    return e != NULL && e->until - now > LH_THROTTLE_BACKLOG;
}

static void burst_of(const lh_throttle_entry_t *e, lh_throttle_burst_t *b)
{
    memcpy(b->addr, e->addr, sizeof(b->addr));
    b->fails = e->fails;
    b->first = e->first;
    b->last = e->last;
}

double lh_throttle_attempt(lh_throttle_t *t, const char *addr, int ok, double now,
                           lh_throttle_burst_t *ended, int *has_ended)
{
    lh_throttle_entry_t *e = find(t, addr);
    *has_ended = 0;
    double at = e != NULL && e->until > now ? e->until : now; /* behind those queued */
    if (ok) {
        if (e != NULL) {
            if (e->fails >= 2) {
                burst_of(e, ended);
                *has_ended = 1;
            }
            if (e->until > now)
                e->fails = 0; /* answers still queued: keep the slot until they are out */
            else
                memset(e, 0, sizeof(*e));
        }
        return at - now;
    }
    if (e == NULL) {
        e = take(t, addr, now);
        at = e->until > now ? e->until : now; /* the crowd's queue */
    }
    if (e->fails++ == 0)
        e->first = now;
    e->last = now;
    at += delay_of(e->fails);
    e->until = at;
    return at - now;
}

int lh_throttle_sweep(lh_throttle_t *t, double now, lh_throttle_burst_t *ended)
{
    lh_throttle_entry_t *c = &t->crowd;
    if (c->fails > 0 && quiet(c, now)) { /* the crowd is forgotten too, its name kept */
        int worth = c->fails >= 2;
        if (worth)
            burst_of(c, ended);
        c->fails = 0;
        c->first = c->last = c->until = 0;
        if (worth)
            return 1;
    }
    for (size_t i = 0; i < t->cap; i++) {
        lh_throttle_entry_t *e = &t->e[i];
        if (e->addr[0] == '\0' || now - e->last < LH_THROTTLE_QUIET || e->until > now)
            continue;
        int worth = e->fails >= 2;
        if (worth)
            burst_of(e, ended);
        memset(e, 0, sizeof(*e));
        if (worth)
            return 1;
    }
    return 0;
}
