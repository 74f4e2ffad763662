/*
** proxy — --trusted-proxy: the peers whose X-Forwarded-For and X-Forwarded-Proto are
** believed, as IPv4/IPv6 addresses or CIDR blocks. From any other peer those headers mean
** nothing. Knows addresses and header values, not sockets.
*/
#ifndef LH_PROXY_H
#define LH_PROXY_H

#include <stddef.h>

typedef struct lh_cidr_s {
    int family; /* 4 or 6 */
    unsigned char addr[16];
    int bits;
} lh_cidr_t;

/** Parses "10.0.0.1", "10.0.0.0/8", "::1", "fd00::/8" (an IPv4-mapped IPv6 address is its
 *  IPv4 one). 0, or -1 with why in `err`. */
int lh_cidr_parse(const char *s, lh_cidr_t *out, char *err, size_t errlen);

/** 1 if the address `ip` (text, without port or brackets) is inside one of `list`. */
int lh_cidr_match(const lh_cidr_t *list, size_t n, const char *ip);

/**
 * The client of a request that came from trusted peer `peer_ip`, per the X-Forwarded-For
 * values (`xff`, `nxff` headers in order, each a comma list): the right-most address that
 * is not itself a trusted proxy. An entry that is not an address stops the walk there: the
 * client is then the last trusted hop. Writes it into `out` (the bare address); returns 1
 * if it differs from the peer.
 */
int lh_proxy_client(const lh_cidr_t *list, size_t n, const char *peer_ip, const char *const *xff,
                    const size_t *xff_len, size_t nxff, char *out, size_t outlen);

/** The address part of a remote ("1.2.3.4:5", "[::1]:5"; a bare "1.2.3.4" or "2001:db8::1"
 *  as a trusted proxy names it) into `out`. */
void lh_proxy_strip_port(const char *remote, char *out, size_t outlen);

/** The key the sign-in slow-down counts an address under: an IPv4 address itself, an IPv6
 *  one's /64 ("2001:db8:1:2::/64": one host's whole share of addresses). */
void lh_proxy_client_key(const char *ip, char *out, size_t outlen);

#endif
