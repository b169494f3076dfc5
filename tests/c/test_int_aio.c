/* Integration: the asynchronous engine (pl_aio) against the emulator, driven as an
 * event loop drives it (poll on its fd, drain). Every operation; completions from
 * many submitting threads (run under ThreadSanitizer in tests/c/run.sh); cancel of
 * a waiting long poll leaves no message locked; a completion withdrawn by cancel
 * has its lock released at once; close ends long polls at once; pl_aio_idle says
 * through the fd when the background unlocks are done (or its limit passed). */
#include <cjson/cJSON.h>
#include <pthread.h>
#include <time.h>

#include "aio_support.h"

static pl_client *client;
static pl_aio *aio;

static void send_one(const char *q, const char *id)
{
    pl_outgoing *o = NULL;
    REQUIRE(pl_outgoing_new(&o, id, strlen(id)) == PL_OK);
    REQUIRE(pl_outgoing_set_broker(o, "MessageId", id) == PL_OK);
    uint64_t n = 0;
    CHECK_EQ(aio_finish(aio, pl_aio_send(aio, &n, q, o), &n, NULL), PL_OK);
    pl_outgoing_free(o);
}

/* Locked messages of q per the emulator's state dump. */
static int locked_count(const char *q)
{
    char path[128], *body = NULL;
    snprintf(path, sizeof path, "/$admin/entities/%s", q);
    if (pl_test_admin("GET", path, NULL, &body) != 200 || !body) {
        free(body);
        return -1;
    }
    cJSON *j = cJSON_Parse(body);
    free(body);
    const cJSON *msgs = cJSON_GetObjectItem(j, "messages"), *m;
    int n = msgs ? 0 : -1;
    cJSON_ArrayForEach(m, msgs) n += cJSON_IsTrue(cJSON_GetObjectItem(m, "locked"));
    cJSON_Delete(j);
    return n;
}

/* Peek-lock requests the emulator has taken in so far (its counters). A receive the
 * server has begun to serve waits for a message and checks its connection when one
 * comes; one it has not yet read could take a message before it sees the connection
 * gone, so the cancel tests wait for this before cancelling. */
static int peek_requests(void)
{
    char *body = NULL;
    if (pl_test_admin("GET", "/$admin/state", NULL, &body) != 200 || !body) {
        free(body);
        return -1;
    }
    cJSON *j = cJSON_Parse(body);
    free(body);
    const cJSON *n = cJSON_GetObjectItem(cJSON_GetObjectItem(j, "counters"), "requests.peek_lock");
    int v = cJSON_IsNumber(n) ? n->valueint : 0;
    cJSON_Delete(j);
    return v;
}

static void wait_peek_requests(int want)
{
    for (int i = 0; i < 1000 && peek_requests() < want; i++) {
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    CHECK(peek_requests() >= want);
}

static void test_operations(void)
{
    REQUIRE(pl_test_entity("aq", "queue", 30, 10) / 100 == 2);
    send_one("aq", "a1");
    pl_batch *b = NULL;
    REQUIRE(pl_batch_new(&b) == PL_OK);
    for (int i = 2; i <= 3; i++) {
        char id[8];
        snprintf(id, sizeof id, "a%d", i);
        pl_outgoing *o = NULL;
        REQUIRE(pl_outgoing_new(&o, id, strlen(id)) == PL_OK);
        REQUIRE(pl_outgoing_set_broker(o, "MessageId", id) == PL_OK);
        REQUIRE(pl_batch_add(b, o) == PL_OK);
        pl_outgoing_free(o);
    }
    uint64_t id = 0;
    CHECK_EQ(aio_finish(aio, pl_aio_send_batch(aio, &id, "aq", b), &id, NULL), PL_OK);
    pl_batch_free(b);
    CHECK_EQ(pl_test_message_count("aq"), 3);

    pl_message *m = NULL;
    CHECK_EQ(aio_finish(aio, pl_aio_peek_lock(aio, &id, "aq", 5), &id, &m), PL_OK);
    REQUIRE(m);
    CHECK_STR(pl_message_id(m), "a1");
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_HELD);
    CHECK_EQ(aio_finish(aio, pl_aio_renew_lock(aio, &id, m), &id, NULL), PL_OK);
    CHECK_EQ(aio_finish(aio, pl_aio_complete(aio, &id, m), &id, NULL), PL_OK);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_SETTLED);
    /* the fence answers a second settle at once: no completion follows */
    CHECK_EQ(pl_aio_complete(aio, &id, m), PL_ESTATE);
    CHECK_EQ(id, 0);
    pl_message_free(m);
    CHECK_EQ(pl_test_completed_count("aq", "a1"), 1);

    CHECK_EQ(aio_finish(aio, pl_aio_peek_lock(aio, &id, "aq", 5), &id, &m), PL_OK);
    REQUIRE(m);
    CHECK_EQ(aio_finish(aio, pl_aio_unlock(aio, &id, m), &id, NULL), PL_OK);
    pl_message_free(m);
    CHECK_EQ(locked_count("aq"), 0);

    CHECK_EQ(aio_finish(aio, pl_aio_receive_and_delete(aio, &id, "aq", 5), &id, &m), PL_OK);
    REQUIRE(m);
    CHECK_STR(pl_message_id(m), "a2");
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_NONE);
    CHECK_EQ(pl_aio_complete(aio, &id, m), PL_ESTATE);
    pl_message_free(m);
    CHECK_EQ(aio_finish(aio, pl_aio_receive_and_delete(aio, &id, "aq", 0), &id, &m), PL_OK);
    pl_message_free(m);
    /* empty now: a receive with no wait says so */
    CHECK_EQ(aio_finish(aio, pl_aio_peek_lock(aio, &id, "aq", 0), &id, &m), PL_EMPTY);
    CHECK(m == NULL);
    /* errors come back as the blocking calls give them */
    CHECK_EQ(aio_finish(aio, pl_aio_peek_lock(aio, &id, "no-such-queue", 0), &id, &m), PL_ENOTFOUND);
    CHECK(pl_aio_peek_lock(aio, &id, "", 0) == PL_EINVAL);
    /* a message received through another client: refused, named as the user calls it */
    pl_client *other = NULL;
    REQUIRE(pl_client_new_from_connection_string(&other, pl_test_connection_string()) == PL_OK);
    send_one("aq", "a4");
    REQUIRE(pl_peek_lock(&m, other, "aq", 5) == PL_OK);
    CHECK_EQ(pl_aio_complete(aio, &id, m), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "message: was received through another client");
    CHECK_EQ(pl_complete(other, m), PL_OK);
    pl_message_free(m);
    pl_client_free(other);
}

/* A waiting long poll cancelled: completes with PL_ECANCELED at once, and a message
 * sent afterwards is not locked by it (the emulator shows it available). */
static void test_cancel_waiting(void)
{
    REQUIRE(pl_test_entity("cq", "queue", 30, 10) / 100 == 2);
    uint64_t ids[20];
    int seen = peek_requests();
    for (int i = 0; i < 20; i++) REQUIRE(pl_aio_peek_lock(aio, &ids[i], "cq", 60) == PL_OK);
    wait_peek_requests(seen + 20);
    /* let them reach the server */
    pl_aio_stats st;
    for (int i = 0; i < 200; i++) {
        pl_aio_stats_get(aio, &st);
        if (st.inflight == 20) break;
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    CHECK_EQ(st.inflight, 20);
    int64_t t0 = pl_now_mono_ms();
    for (int i = 0; i < 20; i++) CHECK_EQ(pl_aio_cancel(aio, ids[i]), PL_OK);
    CHECK_EQ(aio_collect(aio, 20, PL_ECANCELED, 10000), 20);
    CHECK(pl_now_mono_ms() - t0 < 5000);
    CHECK_EQ(pl_aio_cancel(aio, ids[0]), PL_EINVAL); /* done and taken */
    send_one("cq", "c1");
    CHECK_EQ(locked_count("cq"), 0);
    pl_message *m = NULL;
    REQUIRE(pl_peek_lock(&m, client, "cq", 0) == PL_OK);
    CHECK_STR(pl_message_id(m), "c1");
    CHECK_EQ(pl_message_delivery_count(m), 1);
    CHECK_EQ(pl_complete(client, m), PL_OK);
    pl_message_free(m);
}

/* A peek-lock completion not yet taken, cancelled: withdrawn, its lock released at
 * once (the message is available again, delivery count 2), counted; the
 * completion still comes, saying PL_ECANCELED. */
static void test_cancel_withdraws(void)
{
    REQUIRE(pl_test_entity("wq", "queue", 30, 10) / 100 == 2);
    send_one("wq", "w1");
    uint64_t id = 0;
    REQUIRE(pl_aio_peek_lock(aio, &id, "wq", 5) == PL_OK);
    struct pollfd p = {pl_aio_fd(aio), POLLIN, 0};
    REQUIRE(poll(&p, 1, 10000) == 1);
    pl_aio_stats before, after;
    pl_aio_stats_get(aio, &before);
    CHECK_EQ(pl_aio_cancel(aio, id), PL_OK);
    pl_aio_stats_get(aio, &after);
    CHECK_EQ(after.cancel_abandoned, before.cancel_abandoned + 1);
    /* the one completion of id still follows, without the message */
    pl_aio_done *d = NULL;
    REQUIRE(pl_aio_next(&d, aio) == PL_OK);
    CHECK_EQ(pl_aio_done_id(d), id);
    CHECK_EQ(pl_aio_done_code(d), PL_ECANCELED);
    CHECK(pl_aio_done_take_message(d) == NULL);
    pl_aio_done_free(d);
    CHECK_EQ(pl_aio_next(&d, aio), PL_EMPTY);
    CHECK_EQ(poll(&p, 1, 0), 0); /* nothing queued any more: the fd is quiet */
    pl_message *m = NULL;
    REQUIRE(pl_peek_lock(&m, client, "wq", 10) == PL_OK); /* the unlock lands soon */
    CHECK_STR(pl_message_id(m), "w1");
    CHECK_EQ(pl_message_delivery_count(m), 2);
    CHECK_EQ(pl_complete(client, m), PL_OK);
    pl_message_free(m);
}

/* Producers on several threads submit at once; one thread drains. */
#define THREADS 4
#define PER     50
static void *producer(void *arg)
{
    int t = (int)(long)arg;
    for (int i = 0; i < PER; i++) {
        char id[32];
        snprintf(id, sizeof id, "t%d-%d", t, i);
        pl_outgoing *o = NULL;
        REQUIRE(pl_outgoing_new(&o, id, strlen(id)) == PL_OK);
        uint64_t n = 0;
        CHECK_EQ(pl_aio_send(aio, &n, "tq", o), PL_OK);
        pl_outgoing_free(o);
    }
    return NULL;
}

static void test_threads(void)
{
    REQUIRE(pl_test_entity("tq", "queue", 30, 10) / 100 == 2);
    pthread_t th[THREADS];
    for (long t = 0; t < THREADS; t++) pthread_create(&th[t], NULL, producer, (void *)t);
    int ok = 0, seen = 0;
    while (seen < THREADS * PER) {
        struct pollfd p = {pl_aio_fd(aio), POLLIN, 0};
        if (poll(&p, 1, 30000) != 1) break;
        pl_aio_done *d = NULL;
        while (pl_aio_next(&d, aio) == PL_OK) {
            seen++;
            ok += pl_aio_done_code(d) == PL_OK && pl_aio_done_kind(d) == PL_AIO_SEND;
            pl_aio_done_free(d);
        }
    }
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    CHECK_EQ(seen, THREADS * PER);
    CHECK_EQ(ok, THREADS * PER);
    CHECK_EQ(pl_test_message_count("tq"), THREADS * PER);
    pl_aio_stats st;
    pl_aio_stats_get(aio, &st);
    CHECK_EQ(st.pending, 0);
    struct pollfd p = {pl_aio_fd(aio), POLLIN, 0};
    CHECK_EQ(poll(&p, 1, 0), 0); /* every completion taken: the fd is quiet */
}

/* pl_aio_finish, the non-blocking pl_renewer_finish: a held message is completed
 * (or abandoned) through the engine and taken off the renewer; one the handler
 * settled is left alone (no id); a receive-and-delete message is refused. */
static pl_message *peek_one(const char *q)
{
    uint64_t id = 0;
    pl_message *m = NULL;
    CHECK_EQ(aio_finish(aio, pl_aio_peek_lock(aio, &id, q, 5), &id, &m), PL_OK);
    REQUIRE(m != NULL);
    return m;
}

static void test_finish(void)
{
    REQUIRE(pl_test_entity("fq", "queue", 30, 10) / 100 == 2);
    pl_renewer *r = NULL;
    REQUIRE(pl_renewer_new(&r, client, NULL) == PL_OK);
    uint64_t id = 0;
    /* held, the handler succeeded: completed by this call, off the renewer */
    send_one("fq", "f1");
    pl_message *m = peek_one("fq");
    REQUIRE(pl_renewer_hold(r, m, 0) == PL_OK);
    CHECK_EQ(pl_aio_finish(aio, &id, m, r, 1), PL_OK);
    CHECK(id != 0);
    CHECK_EQ(aio_finish(aio, PL_OK, &id, NULL), PL_OK);
    CHECK_EQ(pl_finish_outcome(m, 1), PL_FINISH_COMPLETED);
    pl_renewer_stats rs;
    REQUIRE(pl_renewer_stats_get(r, &rs) == PL_OK);
    CHECK_EQ(rs.held, 0);
    CHECK_EQ(pl_test_completed_count("fq", "f1"), 1);
    pl_message_free(m);
    /* held, the handler failed: abandoned, delivered again */
    send_one("fq", "f2");
    m = peek_one("fq");
    CHECK_EQ(pl_aio_finish(aio, &id, m, NULL, 0), PL_OK);
    CHECK(id != 0);
    CHECK_EQ(aio_finish(aio, PL_OK, &id, NULL), PL_OK);
    CHECK_EQ(pl_finish_outcome(m, 1), PL_FINISH_ABANDONED);
    pl_message_free(m);
    m = peek_one("fq");
    CHECK_STR(pl_message_id(m), "f2");
    CHECK_EQ(pl_message_delivery_count(m), 2);
    /* settled by the handler: nothing sent */
    CHECK_EQ(pl_complete(client, m), PL_OK);
    id = 99;
    CHECK_EQ(pl_aio_finish(aio, &id, m, r, 1), PL_OK);
    CHECK_EQ(id, 0);
    CHECK_EQ(pl_finish_outcome(m, 0), PL_FINISH_BY_HANDLER);
    pl_message_free(m);
    /* receive-and-delete: nothing to settle */
    send_one("fq", "f3");
    CHECK_EQ(aio_finish(aio, pl_aio_receive_and_delete(aio, &id, "fq", 5), &id, &m), PL_OK);
    REQUIRE(m != NULL);
    CHECK_EQ(pl_aio_finish(aio, &id, m, NULL, 1), PL_ESTATE);
    pl_message_free(m);
    pl_renewer_free(r);
}

/* pl_aio_idle: a completion of kind PL_AIO_IDLE once the background work is done,
 * at once when there is none; its time limit kept by the engine; cancellable. */
static uint64_t background(void)
{
    pl_aio_stats st;
    REQUIRE(pl_aio_stats_get(aio, &st) == PL_OK);
    return st.background;
}

static int idle_code(uint64_t id, int *kind)
{
    pl_aio_done *d = aio_wait(aio, id, 20000);
    if (!d) return 1;
    *kind = pl_aio_done_kind(d);
    int code = pl_aio_done_code(d);
    pl_aio_done_free(d);
    return code;
}

static void test_idle(void)
{
    REQUIRE(pl_test_entity("iq", "queue", 30, 10) / 100 == 2);
    uint64_t id = 0;
    int kind = 0;
    struct pollfd p = {pl_aio_fd(aio), POLLIN, 0};
    /* nothing in the background: completed at once */
    CHECK_EQ(background(), 0);
    REQUIRE(pl_aio_idle(aio, &id, -1) == PL_OK);
    CHECK(id != 0);
    CHECK_EQ(poll(&p, 1, 0), 1);
    CHECK_EQ(idle_code(id, &kind), PL_OK);
    CHECK_EQ(kind, PL_AIO_IDLE);
    CHECK_EQ(pl_aio_idle(aio, &id, -2), PL_EINVAL);
    /* an unlock in the background, held back 1 s by the server: the completion
     * comes once it was answered, the message unlocked */
    send_one("iq", "i1");
    pl_message *m = peek_one("iq");
    REQUIRE(pl_test_fault("{\"operation\":\"unlock\",\"entity\":\"iq\",\"delay_ms\":1000,\"count\":1}") ==
            201);
    REQUIRE(pl_aio_unlock_detached(aio, m) == PL_OK);
    pl_message_free(m);
    CHECK_EQ(background(), 1);
    uint64_t id2 = 0;
    REQUIRE(pl_aio_idle(aio, &id, -1) == PL_OK);
    REQUIRE(pl_aio_idle(aio, &id2, -1) == PL_OK); /* several may wait */
    CHECK(id2 != id);
    CHECK_EQ(poll(&p, 1, 0), 0);                    /* not yet: the unlock is held back */
    CHECK_EQ(aio_collect(aio, 2, PL_OK, 20000), 2); /* both */
    CHECK_EQ(background(), 0);
    CHECK_EQ(locked_count("iq"), 0);
    /* the time limit passes first: PL_ETIMEOUT, long before the unlock's answer */
    m = peek_one("iq");
    REQUIRE(pl_test_fault("{\"operation\":\"unlock\",\"entity\":\"iq\",\"delay_ms\":3000,\"count\":1}") ==
            201);
    REQUIRE(pl_aio_unlock_detached(aio, m) == PL_OK);
    pl_message_free(m);
    int64_t t0 = pl_now_mono_ms();
    REQUIRE(pl_aio_idle(aio, &id, 50) == PL_OK);
    CHECK_EQ(idle_code(id, &kind), PL_ETIMEOUT);
    CHECK(pl_now_mono_ms() - t0 < 2500);
    CHECK_EQ(background(), 1);
    /* cancelled: PL_ECANCELED at once; a second cancel finds nothing. A waiter is no
     * operation: its cancel is not counted in cancelled */
    pl_aio_stats before, after;
    REQUIRE(pl_aio_stats_get(aio, &before) == PL_OK);
    REQUIRE(pl_aio_idle(aio, &id, -1) == PL_OK);
    CHECK_EQ(pl_aio_cancel(aio, id), PL_OK);
    CHECK_EQ(idle_code(id, &kind), PL_ECANCELED);
    CHECK_EQ(pl_aio_cancel(aio, id), PL_EINVAL);
    REQUIRE(pl_aio_stats_get(aio, &after) == PL_OK);
    CHECK_EQ(after.cancelled, before.cancelled);
    CHECK_EQ(background(), 1);
    /* the end of the held-back unlock */
    REQUIRE(pl_aio_idle(aio, &id, -1) == PL_OK);
    CHECK_EQ(idle_code(id, &kind), PL_OK);
    CHECK_EQ(background(), 0);
    CHECK_EQ(locked_count("iq"), 0);
    CHECK_EQ(pl_test_clear_faults() / 100, 2);
}

/* Close ends waiting long polls at once with PL_ECLOSED; later submits are refused. */
static void test_close(void)
{
    REQUIRE(pl_test_entity("xq", "queue", 30, 10) / 100 == 2);
    pl_aio *a = NULL;
    REQUIRE(pl_aio_new(&a, client) == PL_OK);
    uint64_t ids[10];
    int seen = peek_requests();
    for (int i = 0; i < 10; i++) REQUIRE(pl_aio_peek_lock(a, &ids[i], "xq", 60) == PL_OK);
    wait_peek_requests(seen + 10);
    int64_t t0 = pl_now_mono_ms();
    CHECK_EQ(pl_aio_close(a), PL_OK);
    CHECK_EQ(aio_collect(a, 10, PL_ECLOSED, 10000), 10);
    CHECK(pl_now_mono_ms() - t0 < 5000);
    uint64_t id = 0;
    CHECK_EQ(pl_aio_peek_lock(a, &id, "xq", 1), PL_ECLOSED);
    CHECK_EQ(pl_aio_idle(a, &id, -1), PL_ECLOSED);
    pl_aio_free(a);
    send_one("xq", "x1");
    CHECK_EQ(locked_count("xq"), 0);
}

int main(void)
{
    REQUIRE(pl_client_new_from_connection_string(&client, pl_test_connection_string()) == PL_OK);
    REQUIRE(pl_aio_new(&aio, client) == PL_OK);
    CHECK(pl_aio_fd(aio) >= 0);
    test_operations();
    test_cancel_waiting();
    test_cancel_withdraws();
    test_threads();
    test_finish();
    test_idle();
    test_close();
    pl_aio_free(aio);
    pl_client_free(client);
    return pl_test_done("test_int_aio");
}
