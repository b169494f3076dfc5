/* The asynchronous engine's own cost per message, without Python: K consumers,
 * each a small state machine (send -> peek-lock -> complete), driven through one
 * pl_aio from one thread that waits on its fd, as an event loop does. The loop
 * that bench/python/bench_aio.py times for peeklock.aio, with the binding and the
 * event loop taken out: what is left is the engine, libcurl and the kernel.
 *
 *   aio_loop [-n MESSAGES] [-k CONSUMERS] [-w WARMUP]
 * Needs PEEKLOCK_CONNECTION_STRING (tests/c/with_emulator.py) and queue "bq".
 * Prints the process CPU per message. For instruction counts run it under
 * callgrind twice with different -n (the difference cancels start-up):
 *
 *   valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.aio \
 *       build/bench/bench/c/aio_loop -n 2000 -k 64
 */
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "peeklock.h"

#define QUEUE "bq"

typedef struct consumer {
    uint64_t id;   /* the operation in flight */
    int step;      /* 0 send, 1 peek-lock, 2 complete */
    int left;      /* messages still to do */
    pl_message *m; /* the locked message, until completed */
} consumer;

static void die(const char *what)
{
    fprintf(stderr, "aio_loop: %s failed: %s\n", what, pl_error_last()->message);
    exit(1);
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static pl_outgoing *body;

static void submit(pl_aio *a, consumer *c)
{
    int rc;
    if (c->step == 0)
        rc = pl_aio_send(a, &c->id, QUEUE, body);
    else if (c->step == 1)
        rc = pl_aio_peek_lock(a, &c->id, QUEUE, 5);
    else
        rc = pl_aio_complete(a, &c->id, c->m);
    if (rc != PL_OK) die("submit");
}

/* Runs per messages on each of k consumers; returns when all are done. */
static void run(pl_aio *a, consumer *cs, int k, int per)
{
    int busy = k;
    for (int i = 0; i < k; i++) {
        cs[i].step = 0;
        cs[i].left = per;
        submit(a, &cs[i]);
    }
    while (busy > 0) {
        struct pollfd p = {pl_aio_fd(a), POLLIN, 0};
        if (poll(&p, 1, 30000) <= 0) die("poll (no completion in 30 s)");
        pl_aio_done *d = NULL;
        while (pl_aio_next(&d, a) == PL_OK) {
            uint64_t id = pl_aio_done_id(d);
            consumer *c = NULL;
            for (int i = 0; i < k && !c; i++)
                if (cs[i].id == id) c = &cs[i];
            if (!c || pl_aio_done_code(d) != PL_OK) {
                fprintf(stderr, "aio_loop: completion %llu: %d %s\n", (unsigned long long)id,
                        pl_aio_done_code(d), pl_aio_done_message(d));
                exit(1);
            }
            if (c->step == 1) {
                c->m = pl_aio_done_take_message(d);
                if (!c->m) die("peek-lock (no message)");
                size_t len = 0;
                pl_message_body(c->m, &len);
            } else if (c->step == 2) {
                pl_message_free(c->m);
                c->m = NULL;
            }
            pl_aio_done_free(d);
            c->step = (c->step + 1) % 3;
            if (c->step == 0 && --c->left == 0) {
                busy--;
                continue;
            }
            submit(a, c);
        }
    }
}

int main(int argc, char **argv)
{
    int n = 2000, k = 64, warm = 1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "-n"))
            n = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-k"))
            k = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "-w"))
            warm = atoi(argv[i + 1]);
    }
    if (k < 1 || n < k) {
        fprintf(stderr, "usage: aio_loop [-n MESSAGES] [-k CONSUMERS] [-w WARMUP]\n");
        return 2;
    }
    const char *cs = getenv("PEEKLOCK_CONNECTION_STRING");
    if (!cs) {
        fprintf(stderr, "aio_loop: needs PEEKLOCK_CONNECTION_STRING\n");
        return 2;
    }
    pl_client *c = NULL;
    pl_aio *a = NULL;
    if (pl_client_new_from_connection_string(&c, cs)) die("client");
    if (pl_aio_new(&a, c)) die("pl_aio_new");
    if (pl_outgoing_new(&body, "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 64) ||
        pl_outgoing_add_int(body, "Index", 1))
        die("message");
    consumer *cons = calloc((size_t)k, sizeof *cons);
    if (!cons) die("calloc");
    if (warm > 0) run(a, cons, k, warm); /* connections open, token made */
    int per = n / k;
    double t0 = cpu_s();
    run(a, cons, k, per);
    double t1 = cpu_s();
    printf("aio_loop: %d consumers, %d messages: %.1f us CPU per message (send + peek-lock + complete)\n", k,
           per * k, (t1 - t0) * 1e6 / (per * k));
    free(cons);
    pl_outgoing_free(body);
    pl_aio_free(a);
    pl_client_free(c);
    return 0;
}
