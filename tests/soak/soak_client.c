/* soak_client — the soak's load: EVENTS webhook POSTs over CONNS keep-alive connections
 * to 127.0.0.1:PORT, each connection one request at a time (the server answers with
 * --ack handled, so the load follows the handlers' pace). Prints one JSON line:
 * {"events":N,"ok":N,"other":N,"reconnects":N,"seconds":S}. Python is too slow for a
 * million events; this is plain POSIX sockets and threads. */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int port;
static long events;
static atomic_long next_event, ok, other, reconnects, broken;

static int dial(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int send_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            return -1;
        }
        p += w, n -= (size_t)w;
    }
    return 0;
}

/* One answer: its status, its body skipped. -1 when the connection ended or broke. */
static int read_answer(int fd, char *buf, size_t cap)
{
    size_t have = 0;
    char *end = NULL;
    while (end == NULL) {
        if (have == cap - 1)
            return -1;
        ssize_t r = recv(fd, buf + have, cap - 1 - have, 0);
        if (r <= 0)
            return -1;
        have += (size_t)r;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    size_t body_have = have - (size_t)(end + 4 - buf);
    *end = '\0'; /* the head alone from here */
    int status = 0;
    if (sscanf(buf, "HTTP/1.1 %d", &status) != 1)
        return -1;
    long len = 0;
    const char *cl = strcasestr(buf, "\r\nContent-Length:");
    if (cl != NULL)
        len = strtol(cl + 17, NULL, 10);
    int closing = strcasestr(buf, "\r\nConnection: close") != NULL;
    while ((long)body_have < len) { /* one request at a time: nothing follows the body */
        ssize_t r = recv(fd, buf, cap - 1, 0);
        if (r <= 0)
            return -1;
        body_have += (size_t)r;
    }
    return closing ? -status : status; /* answered, then closed */
}

static void *run(void *arg)
{
    char req[512], body[128], buf[65536];
    int fd = -1, dialed = 0;
    (void)arg;
    for (;;) {
        long n = atomic_fetch_add(&next_event, 1);
        if (n >= events)
            break;
        int blen = snprintf(body, sizeof(body), "{\"action\":\"SOAK\",\"n\":%ld}", n);
        int rlen = snprintf(req, sizeof(req),
                            "POST /soak HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
                            blen, body);
        int status = -1;
        for (int tries = 0; tries < 2 && status == -1; tries++) {
            if (fd < 0) {
                if ((fd = dial()) < 0)
                    break;
                if (dialed++) /* keep-alive held: only a closed connection dials again */
                    atomic_fetch_add(&reconnects, 1);
            }
            if (send_all(fd, req, (size_t)rlen) == 0)
                status = read_answer(fd, buf, sizeof(buf));
            if (status < 0) {
                close(fd);
                fd = -1;
            }
        }
        if (status < -1)
            status = -status;
        if (status == 200)
            atomic_fetch_add(&ok, 1);
        else if (status > 0)
            atomic_fetch_add(&other, 1);
        else
            atomic_fetch_add(&broken, 1);
    }
    if (fd >= 0)
        close(fd);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: soak_client PORT EVENTS CONNECTIONS\n");
        return 2;
    }
    port = atoi(argv[1]);
    events = atol(argv[2]);
    int conns = atoi(argv[3]);
    if (port <= 0 || events <= 0 || conns <= 0 || conns > 256) {
        fprintf(stderr, "soak_client: bad arguments\n");
        return 2;
    }
    pthread_t th[256];
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < conns; i++)
        pthread_create(&th[i], NULL, run, NULL);
    for (int i = 0; i < conns; i++)
        pthread_join(th[i], NULL);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("{\"events\":%ld,\"ok\":%ld,\"other\":%ld,\"broken\":%ld,\"reconnects\":%ld,"
           "\"seconds\":%.3f}\n",
           events, (long)ok, (long)other, (long)broken, (long)reconnects, s);
    return broken == 0 ? 0 : 1;
}
