#include "journal_record.h"

#include <string.h>

#define NOSTR    0xFFFFFFFFu
#define F_PROJ   1u
#define F_DIGEST 2u
#define F_DUP    4u

/* ------------------------------------------------------------------ writing */

static unsigned char *w_u32(unsigned char *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        *p++ = (unsigned char)(v >> (8 * i));
    return p;
}

static unsigned char *w_u64(unsigned char *p, uint64_t v)
{
    return w_u32(w_u32(p, (uint32_t)v), (uint32_t)(v >> 32));
}

static unsigned char *w_f64(unsigned char *p, double d)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    return w_u64(p, v);
}

static unsigned char *w_str(unsigned char *p, const char *s, size_t n)
{
    if (s == NULL)
        return w_u32(p, NOSTR);
    p = w_u32(p, (uint32_t)n);
    memcpy(p, s, n);
    return p + n;
}

static size_t str_size(const char *s, size_t n)
{
    return 4 + (s ? n : 0);
}

size_t lh_jrec_event_size(const lh_jrec_event_t *e)
{
    size_t n = 8 + 8 + 1 + 8 + 8 + (e->digest ? 32 : 0) + str_size(e->delivery, e->delivery_len) +
               str_size(e->path, e->path_len) + str_size(e->remote, e->remote_len) +
               str_size(e->action, e->action_len) + str_size(e->headers, e->headers_len) + 4;
    for (uint32_t i = 0; i < e->nhandlers; i++)
        n += str_size(e->handlers[i], strlen(e->handlers[i]));
    return n;
}

void lh_jrec_event_write(unsigned char *p, const lh_jrec_event_t *e)
{
    p = w_u64(p, (uint64_t)e->id);
    p = w_f64(p, e->received);
    *p++ = (unsigned char)((e->has_project ? F_PROJ : 0) | (e->digest ? F_DIGEST : 0) |
                           (e->dup_of ? F_DUP : 0));
    p = w_u64(p, (uint64_t)(e->has_project ? e->project : 0));
    p = w_u64(p, (uint64_t)e->dup_of);
    if (e->digest) {
        memcpy(p, e->digest, 32);
        p += 32;
    }
    p = w_str(p, e->delivery, e->delivery_len);
    p = w_str(p, e->path, e->path_len);
    p = w_str(p, e->remote, e->remote_len);
    p = w_str(p, e->action, e->action_len);
    p = w_str(p, e->headers, e->headers_len);
    p = w_u32(p, e->nhandlers);
    for (uint32_t i = 0; i < e->nhandlers; i++)
        p = w_str(p, e->handlers[i], strlen(e->handlers[i]));
}

size_t lh_jrec_end_size(const lh_jrec_end_t *e)
{
    return 8 + 4 + 8 * 3 + 4 + 1 + str_size(e->handler, e->handler_len) +
           str_size(e->outcome, e->outcome_len) + str_size(e->error, e->error_len) +
           str_size(e->traceback, e->traceback_len);
}

void lh_jrec_end_write(unsigned char *p, const lh_jrec_end_t *e)
{
    p = w_u64(p, (uint64_t)e->id);
    p = w_u32(p, (uint32_t)e->attempt);
    p = w_f64(p, e->started);
    p = w_f64(p, e->ended);
    p = w_f64(p, e->next_at);
    p = w_u32(p, (uint32_t)e->state);
    *p++ = (unsigned char)(e->only_run != 0);
    p = w_str(p, e->handler, e->handler_len);
    p = w_str(p, e->outcome, e->outcome_len);
    p = w_str(p, e->error, e->error_len);
    w_str(p, e->traceback, e->traceback_len);
}

/* ------------------------------------------------------------------ reading */

typedef struct rbuf_s {
    const unsigned char *p, *end;
    int bad;
} rbuf_t;

static uint32_t r_u32(rbuf_t *r)
{
    if (r->end - r->p < 4) {
        r->bad = 1;
        return 0;
    }
    uint32_t v = (uint32_t)r->p[0] | (uint32_t)r->p[1] << 8 | (uint32_t)r->p[2] << 16 |
                 (uint32_t)r->p[3] << 24;
    r->p += 4;
    return v;
}

static uint64_t r_u64(rbuf_t *r)
{
    uint64_t lo = r_u32(r);
    return lo | (uint64_t)r_u32(r) << 32;
}

int64_t lh_jrec_id(const unsigned char *meta, size_t len)
{
    if (len < 8)
        return 0;
    rbuf_t r = {meta, meta + len, 0};
    return (int64_t)r_u64(&r);
}

static double r_f64(rbuf_t *r)
{
    uint64_t v = r_u64(r);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

static unsigned r_u8(rbuf_t *r)
{
    if (r->p >= r->end) {
        r->bad = 1;
        return 0;
    }
    return *r->p++;
}

/* A string; *len its length. NULL for none, or for a bad record (r->bad). */
static const char *r_str(rbuf_t *r, size_t *len)
{
    uint32_t n = r_u32(r);
    *len = 0;
    if (n == NOSTR || r->bad)
        return NULL;
    if ((size_t)(r->end - r->p) < n) {
        r->bad = 1;
        return NULL;
    }
    const char *s = (const char *)r->p;
    r->p += n;
    *len = n;
    return s;
}

int lh_jrec_event_read(const unsigned char *meta, size_t len, lh_jrec_event_t *e)
{
    rbuf_t r = {meta, meta ? meta + len : meta, 0};
    memset(e, 0, sizeof(*e));
    e->id = (int64_t)r_u64(&r);
    e->received = r_f64(&r);
    unsigned flags = r_u8(&r);
    e->project = (int64_t)r_u64(&r);
    e->has_project = (flags & F_PROJ) != 0;
    int64_t dup_of = (int64_t)r_u64(&r);
    e->dup_of = flags & F_DUP ? dup_of : 0;
    if (flags & F_DIGEST) {
        if (r.bad || r.end - r.p < 32)
            return -1;
        e->digest = r.p;
        r.p += 32;
    }
    e->delivery = r_str(&r, &e->delivery_len);
    e->path = r_str(&r, &e->path_len);
    e->remote = r_str(&r, &e->remote_len);
    e->action = r_str(&r, &e->action_len);
    e->headers = r_str(&r, &e->headers_len);
    e->nhandlers = r_u32(&r);
    e->next = r.p;
    e->end = r.end;
    return r.bad || e->delivery == NULL || e->path == NULL || e->headers == NULL ? -1 : 0;
}

const char *lh_jrec_event_handler(lh_jrec_event_t *e, size_t *len)
{
    *len = 0;
    if (e->handlers_read >= e->nhandlers)
        return NULL;
    rbuf_t r = {e->next, e->end, 0};
    const char *s = r_str(&r, len);
    if (s == NULL || r.bad)
        return NULL;
    e->next = r.p;
    e->handlers_read++;
    return s;
}

int lh_jrec_end_read(const unsigned char *meta, size_t len, lh_jrec_end_t *e)
{
    rbuf_t r = {meta, meta ? meta + len : meta, 0};
    memset(e, 0, sizeof(*e));
    e->id = (int64_t)r_u64(&r);
    e->attempt = (int)r_u32(&r);
    e->started = r_f64(&r);
    e->ended = r_f64(&r);
    e->next_at = r_f64(&r);
    uint32_t state = r_u32(&r);
    e->only_run = (int)r_u8(&r);
    if (r.bad || state > LH_RUN_DEAD)
        return -1;
    e->state = (lh_run_state_t)state;
    e->handler = r_str(&r, &e->handler_len);
    e->outcome = r_str(&r, &e->outcome_len);
    e->error = r_str(&r, &e->error_len);
    e->traceback = r_str(&r, &e->traceback_len);
    return r.bad || e->handler == NULL || e->outcome == NULL ? -1 : 0;
}
