#include "proxy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "::ffff:1.2.3.4" is the IPv4 address 1.2.3.4 (a dual-stack listener's peers) */
static const unsigned char v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Text to (family, 16 bytes); 0, or -1 if it is no address. */
static int parse_ip(const char *s, size_t n, int *family, unsigned char out[16])
{
    char buf[64];
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    memset(out, 0, 16);
    if (inet_pton(AF_INET, buf, out) == 1) {
        *family = 4;
        return 0;
    }
    if (inet_pton(AF_INET6, buf, out) == 1) {
        *family = 6;
        if (memcmp(out, v4mapped, 12) == 0) {
            memmove(out, out + 12, 4);
            memset(out + 4, 0, 12);
            *family = 4;
        }
        return 0;
    }
    return -1;
}

int lh_cidr_parse(const char *s, lh_cidr_t *out, char *err, size_t errlen)
{
    const char *slash = strchr(s, '/');
    size_t n = slash ? (size_t)(slash - s) : strlen(s);
    if (parse_ip(s, n, &out->family, out->addr) != 0) {
        snprintf(err, errlen, "'%.64s' is not an IPv4 or IPv6 address (or ADDRESS/BITS)", s);
        return -1;
    }
    /* "::ffff:10.0.0.0/104" is 10.0.0.0/8: its bits count the 96 of the mapping too */
    int mapped = out->family == 4 && memchr(s, ':', n) != NULL;
    int min = mapped ? 96 : 0, max = out->family == 4 && !mapped ? 32 : 128;
    out->bits = max;
    if (slash != NULL) {
        char *end;
        long b = strtol(slash + 1, &end, 10);
        if (slash[1] == '\0' || !isdigit((unsigned char)slash[1]) || *end != '\0' || b < min ||
            b > max) {
            snprintf(err, errlen, "'%.64s': the prefix length must be a number from %d to %d%s", s,
                     min, max, mapped ? " (an IPv4-mapped block)" : "");
            return -1;
        }
        out->bits = (int)b;
    }
    out->bits -= mapped ? 96 : 0;
    return 0;
}

static int in_block(const lh_cidr_t *c, int family, const unsigned char *a)
{
    if (c->family != family)
        return 0;
    int full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->addr, a, (size_t)full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    unsigned char mask = (unsigned char)(0xff << (8 - rest));
    return (c->addr[full] & mask) == (a[full] & mask);
}

static int match(const lh_cidr_t *list, size_t n, int family, const unsigned char *a)
{
    for (size_t i = 0; i < n; i++)
        if (in_block(&list[i], family, a))
            return 1;
    return 0;
}

int lh_cidr_match(const lh_cidr_t *list, size_t n, const char *ip)
{
    int family;
    unsigned char a[16];
    return parse_ip(ip, strlen(ip), &family, a) == 0 && match(list, n, family, a);
}

static void put(char *out, size_t outlen, const char *s, size_t n)
{
    if (n >= outlen)
        n = outlen - 1;
    memcpy(out, s, n);
    out[n] = '\0';
}

int lh_proxy_client(const lh_cidr_t *list, size_t n, const char *peer_ip, const char *const *xff,
                    const size_t *xff_len, size_t nxff, char *out, size_t outlen)
{
    put(out, outlen, peer_ip, strlen(peer_ip));
    /* right to left: the last header's last entry was added by the peer itself */
    for (size_t h = nxff; h-- > 0;) {
        const char *v = xff[h];
        size_t end = xff_len[h];
        while (end > 0) {
            size_t start = end;
            while (start > 0 && v[start - 1] != ',')
                start--;
            size_t a = start, b = end;
            while (a < b && (v[a] == ' ' || v[a] == '\t'))
                a++;
            while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
                b--;
            end = start > 0 ? start - 1 : 0;
            if (a == b)
                continue; /* "a, , b": an empty entry says nothing */
            int family;
            unsigned char ip[16];
            if (parse_ip(v + a, b - a, &family, ip) != 0)
                goto done; /* not an address: believe nothing left of it */
            char text[INET6_ADDRSTRLEN];
            /* the canonical text: "::ffff:1.2.3.4" and "1.2.3.4" read the same in logs */
            inet_ntop(family == 4 ? AF_INET : AF_INET6, ip, text, sizeof(text));
            put(out, outlen, text, strlen(text));
            if (!match(list, n, family, ip))
                goto done;
        }
    }
done:
    return strcmp(out, peer_ip) != 0;
}

void lh_proxy_strip_port(const char *remote, char *out, size_t outlen)
{
    const char *s = remote, *e;
    if (*s == '[') {
        s++;
        e = strchr(s, ']');
    } else {
        e = strchr(s, ':');
        if (e != NULL && strchr(e + 1, ':') != NULL)
            e = NULL; /* a bare IPv6 address (a trusted proxy's client): no port */
    }
    put(out, outlen, s, e ? (size_t)(e - s) : strlen(s));
}

void lh_proxy_client_key(const char *ip, char *out, size_t outlen)
{
    int family = 0;
    unsigned char a[16];
    char text[INET6_ADDRSTRLEN];
    if (parse_ip(ip, strlen(ip), &family, a) != 0) {
        put(out, outlen, ip, strlen(ip)); /* not an address ("?"): as it is */
        return;
    }
    if (family == 6)
        memset(a + 8, 0, 8);
    /* the canonical text: "::ffff:1.2.3.4" counts as 1.2.3.4 */
    inet_ntop(family == 4 ? AF_INET : AF_INET6, a, text, sizeof(text));
    snprintf(out, outlen, family == 4 ? "%s" : "%s/64", text);
}
