/* Malformed answers through the real libcurl path: a tiny loopback server (a
 * thread in this test) answers peek-locks with broken responses chosen by the
 * entity name. Every peek-lock case must give PL_EPROTOCOL (never a crash, a hang, an
 * out-of-bounds read under ASan, or a message), and no request is retried. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

#include "error_int.h"
#include "support.h"

static int listen_fd;
static int port;
static volatile int served;

static void send_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        p += w;
        n -= (size_t)w;
    }
}

static const char *LOCKED_BP = "{\"LockToken\":\"0e80aa4d-a5d1-4a99-b09e-d118f8c5972c\",\"SequenceNumber\":1,"
                               "\"LockedUntilUtc\":\"Sat, 25 Oct 2014 00:57:48 GMT\"}";

static void answer(int fd, const char *entity)
{
    pl_buf b = PL_BUF_INIT;
    char loc[256];
    snprintf(loc, sizeof loc, "http://127.0.0.1:%d/%s/messages/1/0e80aa4d-a5d1-4a99-b09e-d118f8c5972c", port,
             entity);
    if (!strcmp(entity, "ok") || !strcmp(entity, "garbled") || !strcmp(entity, "badjson") ||
        !strcmp(entity, "foreign") || !strcmp(entity, "hugeheader") || !strcmp(entity, "manyheaders") ||
        !strcmp(entity, "truncated")) {
        pl_buf_puts(&b,
                    "HTTP/1.1 201 Created\r\nConnection: close\r\nDate: Sat, 25 Oct 2014 00:56:48 GMT\r\n");
        pl_buf_printf(&b, "BrokerProperties: %s\r\n",
                      !strcmp(entity, "badjson") ? "{\"LockToken\":" : LOCKED_BP);
        pl_buf_printf(&b, "Location: %s\r\n",
                      !strcmp(entity, "foreign")
                          ? "http://evil.example/q/messages/1/0e80aa4d-a5d1-4a99-b09e-d118f8c5972c"
                          : loc);
        if (!strcmp(entity, "hugeheader")) {
            pl_buf_puts(&b, "X-Big: ");
            for (int i = 0; i < 70000; i++) pl_buf_append(&b, "a", 1);
            pl_buf_puts(&b, "\r\n");
        }
        if (!strcmp(entity, "manyheaders"))
            for (int i = 0; i < 400; i++) pl_buf_printf(&b, "X-H%d: %d\r\n", i, i);
        if (!strcmp(entity, "truncated"))
            pl_buf_puts(&b, "Content-Length: 100\r\n\r\n0123456789");
        else
            pl_buf_puts(&b, "Content-Length: 5\r\n\r\nhello");
    } else if (!strcmp(entity, "garbage")) {
        pl_buf_puts(&b, "HELLO THERE\r\n\r\n");
    } else if (!strcmp(entity, "badstatus")) {
        pl_buf_puts(&b, "HTTP/1.1 2x1 Weird\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    } else {
        pl_buf_puts(&b, "HTTP/1.1 500 Internal\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    }
    send_all(fd, b.data, b.len);
    pl_buf_free(&b);
}

static void *server(void *arg)
{
    (void)arg;
    for (;;) {
        int fd = accept(listen_fd, NULL, NULL);
        if (fd < 0) return NULL;
        char req[8192];
        size_t n = 0;
        while (n < sizeof req - 1) {
            ssize_t r = recv(fd, req + n, sizeof req - 1 - n, 0);
            if (r <= 0) break;
            n += (size_t)r;
            req[n] = 0;
            if (strstr(req, "\r\n\r\n")) break;
        }
        req[n] = 0;
        if (!strncmp(req, "QUIT", 4)) {
            close(fd);
            return NULL;
        }
        /* "POST /<entity>/messages/head?timeout=0 HTTP/1.1" */
        char entity[64] = "";
        const char *p = strchr(req, '/');
        if (p) sscanf(p + 1, "%63[^/ ]", entity);
        served++;
        /* "garbled": locks fine, then answers its complete (DELETE) with garbage */
        int settle = !strncmp(req, "DELETE", 6);
        answer(fd, !strcmp(entity, "garbled") && settle ? "garbage" : entity);
        shutdown(fd, SHUT_WR);
        close(fd);
    }
}

int main(void)
{
    listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(listen_fd, (struct sockaddr *)&a, sizeof a) == 0);
    socklen_t al = sizeof a;
    getsockname(listen_fd, (struct sockaddr *)&a, &al);
    port = ntohs(a.sin_port);
    REQUIRE(listen(listen_fd, 16) == 0);
    pthread_t th;
    REQUIRE(pthread_create(&th, NULL, server, NULL) == 0);

    char ep[64];
    snprintf(ep, sizeof ep, "http://127.0.0.1:%d", port);
    pl_client_options o = PL_CLIENT_OPTIONS_INIT;
    o.endpoint = ep;
    o.key_name = "k";
    o.key = "v";
    o.retry_base_ms = 1;
    o.request_timeout_ms = 5000;
    pl_client *c = NULL;
    REQUIRE(pl_client_new(&c, &o) == PL_OK);

    pl_message *m = NULL;
    REQUIRE(pl_peek_lock(&m, c, "ok", 0) == PL_OK); /* the server itself works */
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_HELD);
    pl_message_free(m);

    const char *cases[] = {"badjson",   "foreign", "hugeheader", "manyheaders",
                           "truncated", "garbage", "badstatus"};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int before = served;
        m = (pl_message *)1;
        int rc = pl_peek_lock(&m, c, cases[i], 0);
        if (rc != PL_EPROTOCOL) {
            fprintf(stderr, "case %s: rc %d (%s)\n", cases[i], rc, pl_error_last()->message);
            pl_test_failures++;
        }
        CHECK(m == NULL);
        CHECK_EQ(served - before, 1); /* a malformed answer is not retried */
        CHECK(strstr(pl_error_last()->message, "0e80aa4d") == NULL);
    }

    /* A complete answered with garbage may have been carried out: PL_EUNKNOWN,
     * the message's state unknown (remembered), and the complete is not retried. */
    REQUIRE(pl_peek_lock(&m, c, "garbled", 0) == PL_OK);
    int before = served;
    CHECK_EQ(pl_complete(c, m), PL_EUNKNOWN);
    CHECK_EQ(served - before, 1);
    CHECK(strstr(pl_error_last()->message, "malformed") != NULL);
    CHECK(strstr(pl_error_last()->message, "0e80aa4d") == NULL);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_UNKNOWN);
    CHECK_EQ(pl_message_lost_reason(m), PL_EUNKNOWN);
    pl_message_free(m);
    pl_client_free(c);

    int q = socket(AF_INET, SOCK_STREAM, 0);
    REQUIRE(connect(q, (struct sockaddr *)&a, sizeof a) == 0);
    send_all(q, "QUIT\r\n\r\n", 8);
    close(q);
    pthread_join(th, NULL);
    close(listen_fd);
    return pl_test_done("test_badserver");
}
