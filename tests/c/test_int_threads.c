/* Integration: 8 threads share one pl_client. Producers and consumers run at
 * once; every message is received and completed exactly once (checked against
 * the emulator's state dump), and the easy-handle pool keeps connections. Runs
 * under ThreadSanitizer in tests/c/run.sh. */
#include <pthread.h>

#include "error_int.h"
#include "support.h"

#define THREADS    8
#define PER_THREAD 40
#define TOTAL      (THREADS * PER_THREAD)

static pl_client *client;
static int seen[TOTAL];
static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static int thread_failures[THREADS];

static pthread_barrier_t barrier;

static void *producer_consumer(void *arg)
{
    int t = (int)(long)arg;
    /* The last error is per thread: set one, let every thread set its own, read ours back. */
    pl_error_set(-(t + 1), 400 + t, t % 2, "thread %d", t);
    pthread_barrier_wait(&barrier);
    char want[32];
    snprintf(want, sizeof want, "thread %d", t);
    if (strcmp(pl_error_last()->message, want) != 0 || pl_error_last()->code != -(t + 1) ||
        pl_error_last()->http_status != 400 + t || pl_error_last()->retryable != t % 2)
        thread_failures[t]++;
    /* Each thread sends its share, then consumes until the queue is drained. */
    for (int i = 0; i < PER_THREAD; i++) {
        char id[32], body[32];
        int n = t * PER_THREAD + i;
        snprintf(id, sizeof id, "m-%d", n);
        snprintf(body, sizeof body, "%d", n);
        pl_outgoing *o = NULL;
        if (pl_outgoing_new(&o, body, strlen(body)) != PL_OK ||
            pl_outgoing_set_broker(o, "MessageId", id) != PL_OK || pl_send(client, "tq", o) != PL_OK)
            thread_failures[t]++;
        pl_outgoing_free(o);
    }
    for (;;) {
        pl_message *m = NULL;
        int rc = pl_peek_lock(&m, client, "tq", 1);
        if (rc == PL_EMPTY) {
            pthread_mutex_lock(&seen_lock);
            int done = 1;
            for (int i = 0; i < TOTAL; i++)
                if (!seen[i]) done = 0;
            pthread_mutex_unlock(&seen_lock);
            if (done) break;
            continue;
        }
        if (rc != PL_OK) {
            fprintf(stderr, "thread %d: peek-lock: %s\n", t, pl_error_last()->message);
            thread_failures[t]++;
            break;
        }
        size_t len;
        const char *b = pl_message_body(m, &len);
        int n = atoi(b);
        int rc2 = pl_complete(client, m);
        if (rc2 != PL_OK || n < 0 || n >= TOTAL) {
            fprintf(stderr, "thread %d: complete: %s\n", t, pl_error_last()->message);
            thread_failures[t]++;
        } else {
            pthread_mutex_lock(&seen_lock);
            seen[n]++;
            pthread_mutex_unlock(&seen_lock);
        }
        pl_message_free(m);
    }
    return NULL;
}

/* Many threads race to settle (and renew) one message: exactly one settle goes
 * out and succeeds; the others get PL_ESTATE without a request; no renew ever
 * reports a false loss. */
#define RACERS 8
static pl_message *contested;
static int race_rc[RACERS], renew_rc[RACERS];
static pthread_barrier_t race_barrier;

static void *racer(void *arg)
{
    int t = (int)(long)arg;
    pthread_barrier_wait(&race_barrier);
    renew_rc[t] = pl_renew_lock(client, contested);
    race_rc[t] = (t % 2) ? pl_unlock(client, contested) : pl_complete(client, contested);
    return NULL;
}

static void settle_race(void)
{
    pl_outgoing *o = NULL;
    REQUIRE(pl_outgoing_new(&o, "race", 4) == PL_OK);
    REQUIRE(pl_outgoing_set_broker(o, "MessageId", "race-1") == PL_OK);
    REQUIRE(pl_send(client, "tq", o) == PL_OK);
    pl_outgoing_free(o);
    REQUIRE(pl_peek_lock(&contested, client, "tq", 5) == PL_OK);
    pl_client_stats before, after;
    pl_client_stats_get(client, &before);
    pthread_barrier_init(&race_barrier, NULL, RACERS);
    pthread_t th[RACERS];
    for (long i = 0; i < RACERS; i++) REQUIRE(pthread_create(&th[i], NULL, racer, (void *)i) == 0);
    for (int i = 0; i < RACERS; i++) pthread_join(th[i], NULL);
    pthread_barrier_destroy(&race_barrier);
    int ok = 0, state = 0, winner = -1;
    for (int i = 0; i < RACERS; i++) {
        if (race_rc[i] == PL_OK) {
            ok++;
            winner = i;
        } else if (race_rc[i] == PL_ESTATE)
            state++;
        else
            fprintf(stderr, "racer %d: settle rc %d\n", i, race_rc[i]);
        CHECK(renew_rc[i] == PL_OK || renew_rc[i] == PL_ESTATE);
    }
    CHECK_EQ(ok, 1);
    CHECK_EQ(state, RACERS - 1);
    CHECK_EQ(pl_message_lock_state(contested), PL_LOCK_SETTLED);
    pl_client_stats_get(client, &after);
    CHECK_EQ(after.completed + after.abandoned - before.completed - before.abandoned, 1);
    if (winner >= 0 && winner % 2) {
        /* the unlock won: the message comes back; finish it */
        pl_message *m = NULL;
        REQUIRE(pl_peek_lock(&m, client, "tq", 5) == PL_OK);
        CHECK_STR(pl_message_id(m), "race-1");
        CHECK_EQ(pl_complete(client, m), PL_OK);
        pl_message_free(m);
    }
    CHECK_EQ(pl_test_completed_count("tq", "race-1"), 1);
    pl_message_free(contested);
}

int main(void)
{
    REQUIRE(pl_test_entity("tq", "queue", 60, 10) == 201);
    pl_client_options o = PL_CLIENT_OPTIONS_INIT;
    o.connection_string = pl_test_connection_string();
    o.pool_size = THREADS;
    REQUIRE(pl_client_new(&client, &o) == PL_OK);
    pthread_barrier_init(&barrier, NULL, THREADS);
    pthread_t th[THREADS];
    for (long i = 0; i < THREADS; i++)
        REQUIRE(pthread_create(&th[i], NULL, producer_consumer, (void *)i) == 0);
    for (int i = 0; i < THREADS; i++) pthread_join(th[i], NULL);
    for (int i = 0; i < THREADS; i++) CHECK_EQ(thread_failures[i], 0);
    int once = 0;
    for (int i = 0; i < TOTAL; i++) {
        if (seen[i] == 1)
            once++;
        else
            fprintf(stderr, "message %d seen %d times\n", i, seen[i]);
    }
    CHECK_EQ(once, TOTAL);
    CHECK_EQ(pl_test_message_count("tq"), 0);
    int completed_once = 0;
    for (int i = 0; i < TOTAL; i++) {
        char id[32];
        snprintf(id, sizeof id, "m-%d", i);
        if (pl_test_completed_count("tq", id) == 1) completed_once++;
    }
    CHECK_EQ(completed_once, TOTAL);
    pl_client_stats st;
    CHECK_EQ(pl_client_stats_get(client, &st), PL_OK);
    CHECK_EQ(st.sent, TOTAL);
    CHECK_EQ(st.received, TOTAL);
    CHECK_EQ(st.completed, TOTAL);
    /* At most one new connection per pooled handle (plus retries): the rest reused. */
    printf("requests %llu, reused %llu\n", (unsigned long long)st.requests,
           (unsigned long long)st.reused_connections);
    CHECK(st.reused_connections + THREADS * 2 >= st.requests);
    pthread_barrier_destroy(&barrier);
    settle_race();
    pl_client_free(client);
    return pl_test_done("test_int_threads");
}
