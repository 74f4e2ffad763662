/*
** api — luahook's own HTTP API under /-/api/: the journal as JSON (deliveries listed and
** shown, status counts, replay). /-/ is never an event. Queries run on libuv's thread pool
** with their own database connection, one at a time, so the loop never waits on the disk.
*/
#ifndef LH_API_H
#define LH_API_H

#include "app.h"
#include "conn.h"
#include "request.h"
#include "session.h"

typedef struct lh_api_s lh_api_t;

/** 1 if `r` is for luahook itself (its path starts with /-/): never an event. */
int lh_api_owns(const lh_request_t *r);

/**
 * On the head of a request under /-/api/ whose access was checked (`s`: the session of its
 * cookie; NULL: the token): answers at once what needs no database (an unknown path 404, a
 * wrong method 405, the session, the live picture) and returns 1; 0 lets its body be
 * read, then lh_api_request answers it.
 */
int lh_api_head(lh_app_t *app, lh_conn_t *c, const lh_request_t *r, const lh_session_t *s);

/** Answers a complete request under /-/ (later, from the thread pool's result). */
void lh_api_request(lh_app_t *app, lh_conn_t *c, const lh_request_t *r);

/** After the loop ran its last work: closes the connection, frees. NULL is a no-op. */
void lh_api_free(lh_api_t *api);

#endif
