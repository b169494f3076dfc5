/* The C-core baseline of bench/python/bench_ops.py: the same operations (send,
 * peek-lock, complete) through libpeeklock directly, with the process CPU time
 * of each phase. Usage: c_ops CONNECTION_STRING QUEUE N BODY_BYTES
 * Prints one JSON object: {"send": cpu_us_per_op, "peek_lock": …, "complete": …}. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "peeklock.h"

static double cpu_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int fail(const char *what) {
    fprintf(stderr, "c_ops: %s: %s\n", what, pl_error_last()->message);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: c_ops CONNECTION_STRING QUEUE N BODY_BYTES\n");
        return 2;
    }
    const char *queue = argv[2];
    int n = atoi(argv[3]);
    size_t body_len = (size_t)atoi(argv[4]);
    char *body = malloc(body_len + 1);
    if (!body || n <= 0) return 2;
    memset(body, 'x', body_len);
    pl_client *c = NULL;
    if (pl_client_new_from_connection_string(&c, argv[1]) != PL_OK) return fail("client");
    pl_message **msgs = calloc((size_t)n, sizeof *msgs);
    if (!msgs) return 2;

    double t0 = cpu_us();
    for (int i = 0; i < n; i++) {
        pl_outgoing *m = NULL;
        if (pl_outgoing_new(&m, body, body_len) != PL_OK) return fail("outgoing");
        pl_outgoing_add_string(m, "Kind", "bench");
        pl_outgoing_add_int(m, "Index", i);
        if (pl_send(c, queue, m) != PL_OK) return fail("send");
        pl_outgoing_free(m);
    }
    double t1 = cpu_us();
    for (int i = 0; i < n; i++) {
        if (pl_peek_lock(&msgs[i], c, queue, 5) != PL_OK) return fail("peek_lock");
        size_t len = 0;
        (void)pl_message_body(msgs[i], &len);
        (void)pl_message_id(msgs[i]);
        (void)pl_message_sequence_number(msgs[i]);
    }
    double t2 = cpu_us();
    for (int i = 0; i < n; i++) {
        if (pl_complete(c, msgs[i]) != PL_OK) return fail("complete");
    }
    double t3 = cpu_us();
    for (int i = 0; i < n; i++) pl_message_free(msgs[i]);
    pl_client_free(c);
    free(msgs);
    free(body);
    printf("{\"send\": %.2f, \"peek_lock\": %.2f, \"complete\": %.2f}\n",
           (t1 - t0) / n, (t2 - t1) / n, (t3 - t2) / n);
    return 0;
}
