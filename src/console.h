/*
** console — the web console's pages under /-/ (not /-/api/): the page and the sign-in form
** compiled in from console/, their static files, sign-in (the token for a session cookie,
** wrong tokens slowed down on a timer) and sign-out; the cookie and CSRF check of /-/api/;
** who sent a request when a trusted proxy stands between (ctx.remote, logs, Secure).
*/
#ifndef LH_CONSOLE_H
#define LH_CONSOLE_H

#include "app.h"
#include "conn.h"
#include "request.h"
#include "session.h"

/* Every answer under /-/ carries these: nothing cached, sniffed or framed, no referrer to
** another site (same-origin: under no-referrer Chromium sends "Origin: null" with the
** sign-in form, which the same-origin check refuses), and a page that runs only its own
** files (no inline script or style, no eval). */
#define LH_CONSOLE_CSP                                                                             \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
#define LH_CONSOLE_HEADERS                                                                         \
    "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"                               \
    "Referrer-Policy: same-origin\r\nX-Frame-Options: DENY\r\n"                                    \
    "Content-Security-Policy: " LH_CONSOLE_CSP "\r\n"

typedef struct lh_console_s lh_console_t;

/** The console's state (sessions, the slow-down), for a server. NULL when out of memory. */
lh_console_t *lh_console_new(lh_app_t *app);

/** Closes its timers: a sign-in answer still delayed is answered 503 at once (the server
 *  stops); the loop then runs their close callbacks. Idempotent. */
void lh_console_close(lh_console_t *con);

/** After the loop ran out. NULL is a no-op. */
void lh_console_free(lh_console_t *con);

/** Answers as lh_conn_respond, with LH_CONSOLE_HEADERS before `extra`. */
void lh_console_respond(lh_conn_t *c, int status, const char *extra, const char *ctype,
                        const char *body, size_t len);

/** On every head: fills r->remote, r->https and r->host from the peer, or from a trusted
 *  proxy's X-Forwarded-* headers. */
void lh_console_client(lh_app_t *app, const lh_conn_t *c, lh_request_t *r);

/** 1 if `r` is one of the console's pages (under /-/ but not /-/api/). */
int lh_console_owns(const lh_request_t *r);

/** On the head of a console request (a server with a token): answers what needs no body
 *  and returns 1; 0 lets the body be read for lh_console_request. */
int lh_console_head(lh_app_t *app, lh_conn_t *c, lh_request_t *r);

/** A complete console request whose body was wanted (sign-in, sign-out). */
void lh_console_request(lh_app_t *app, lh_conn_t *c, lh_request_t *r);

/**
 * The cookie's half of /-/api/'s access (the token's is ingest's): 0 with `*s` set when the
 * request carries a live session cookie (and, unless it is a GET or HEAD, a same-origin
 * Origin if any and the session's X-CSRF-Token); 1 when it was answered (403 for the CSRF
 * rules, 401 for an ended session); -1 when it carries no session cookie at all.
 */
int lh_console_api_auth(lh_app_t *app, lh_conn_t *c, const lh_request_t *r, const lh_session_t **s);

#endif
