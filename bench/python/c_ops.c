/* The C-core baseline of bench/python/bench_ops.py: the same operations (send,
 * peek-lock, complete) through libpeeklock directly. One process and one
 * client serve every round, as the Python side keeps one client, so neither
 * pays a start-up or a first connection inside a round.
 *
 * Usage: c_ops CONNECTION_STRING BODY_BYTES, then one line "QUEUE N" on stdin
 * per round. Each round answers one JSON line with the CPU time of each phase
 * in microseconds per operation, all threads (process clock), and how much of
 * it ran outside the main thread:
 *   {"send": …, "peek_lock": …, "complete": …, "other_threads": …}
 * Each phase starts with a getppid() call: the mark that the instruction count
 * (bench_ops.py --instructions, callgrind --dump-before=getppid) splits on. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "peeklock.h"

static double clock_us(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int fail(const char *what)
{
    fprintf(stderr, "c_ops: %s: %s\n", what, pl_error_last()->message);
    return 1;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: c_ops CONNECTION_STRING BODY_BYTES  (rounds \"QUEUE N\" on stdin)\n");
        return 2;
    }
    size_t body_len = (size_t)atoi(argv[2]);
    char *body = malloc(body_len + 1);
    if (!body) return 2;
    memset(body, 'x', body_len);
    pl_client *c = NULL;
    if (pl_client_new_from_connection_string(&c, argv[1]) != PL_OK) return fail("client");

    char queue[256];
    int n;
    while (scanf("%255s %d", queue, &n) == 2 && n > 0) {
        pl_message **msgs = calloc((size_t)n, sizeof *msgs);
        if (!msgs) return 2;
        getppid();
        double p0 = clock_us(CLOCK_PROCESS_CPUTIME_ID), m0 = clock_us(CLOCK_THREAD_CPUTIME_ID);
        for (int i = 0; i < n; i++) {
            pl_outgoing *m = NULL;
            if (pl_outgoing_new(&m, body, body_len) != PL_OK) return fail("outgoing");
            pl_outgoing_add_string(m, "Kind", "bench");
            pl_outgoing_add_int(m, "Index", i);
            if (pl_send(c, queue, m) != PL_OK) return fail("send");
            pl_outgoing_free(m);
        }
        getppid();
        double p1 = clock_us(CLOCK_PROCESS_CPUTIME_ID);
        for (int i = 0; i < n; i++) {
            if (pl_peek_lock(&msgs[i], c, queue, 5) != PL_OK) return fail("peek_lock");
            if (!msgs[i]) return fail("peek_lock (nothing received)");
            size_t len = 0;
            (void)pl_message_body(msgs[i], &len);
            (void)pl_message_id(msgs[i]);
            (void)pl_message_sequence_number(msgs[i]);
        }
        getppid();
        double p2 = clock_us(CLOCK_PROCESS_CPUTIME_ID);
        for (int i = 0; i < n; i++) {
            if (pl_complete(c, msgs[i]) != PL_OK) return fail("complete");
        }
        getppid();
        double p3 = clock_us(CLOCK_PROCESS_CPUTIME_ID), m3 = clock_us(CLOCK_THREAD_CPUTIME_ID);
        for (int i = 0; i < n; i++) pl_message_free(msgs[i]);
        free(msgs);
        printf("{\"send\": %.3f, \"peek_lock\": %.3f, \"complete\": %.3f, \"other_threads\": %.3f}\n",
               (p1 - p0) / n, (p2 - p1) / n, (p3 - p2) / n, ((p3 - p0) - (m3 - m0)) / (3.0 * n));
        fflush(stdout);
    }
    pl_client_free(c);
    free(body);
    return 0;
}
