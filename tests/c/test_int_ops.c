/* Integration: every operation and every reachable error code of the blocking
 * client against the emulator (run under with_emulator.py). Lock expiry is
 * driven with the emulator's clock (POST /$admin/clock/advance), never sleeps. */
#include <math.h>
#include <time.h>

#include "message_int.h"
#include "support.h"

static pl_client *client;

static pl_outgoing *text_msg(const char *body)
{
    pl_outgoing *o = NULL;
    REQUIRE(pl_outgoing_new(&o, body, strlen(body)) == PL_OK);
    return o;
}

static void send_text(const char *entity, const char *body, const char *id)
{
    pl_outgoing *o = text_msg(body);
    if (id) REQUIRE(pl_outgoing_set_broker(o, "MessageId", id) == PL_OK);
    REQUIRE(pl_send(client, entity, o) == PL_OK);
    pl_outgoing_free(o);
}

static int find_prop(const pl_message *m, const char *name)
{
    for (size_t i = 0; i < pl_message_property_count(m); i++)
        if (!strcmp(pl_message_property_name(m, i), name)) return (int)i;
    return -1;
}

static void test_send_peek_complete(void)
{
    const unsigned char body[] = {'b', 0, 'i', 'n', 0xff, '\n'};
    pl_outgoing *o = NULL;
    REQUIRE(pl_outgoing_new(&o, body, sizeof body) == PL_OK);
    CHECK_EQ(pl_outgoing_set_content_type(o, "application/x-test"), PL_OK);
    const char *fields[] = {"MessageId", "Label", "CorrelationId", "ReplyTo", "ReplyToSessionId", "To"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        CHECK_EQ(pl_outgoing_set_broker(o, fields[i], fields[i]), PL_OK);
    CHECK_EQ(pl_outgoing_set_broker(o, "SessionId", "sess"), PL_OK);
    CHECK_EQ(pl_outgoing_set_broker(o, "PartitionKey", "sess"), PL_OK);
    CHECK_EQ(pl_outgoing_set_time_to_live(o, 3600), PL_OK);
    CHECK_EQ(pl_outgoing_set_force_persistence(o, 1), PL_OK);
    CHECK_EQ(pl_outgoing_add_string(o, "s", "say \"hi\""), PL_OK);
    CHECK_EQ(pl_outgoing_add_int(o, "i", -12345678901LL), PL_OK);
    CHECK_EQ(pl_outgoing_add_double(o, "d", 2.5), PL_OK);
    CHECK_EQ(pl_outgoing_add_bool(o, "b", 1), PL_OK);
    CHECK_EQ(pl_outgoing_add_datetime(o, "t", 1414198608), PL_OK);
    CHECK_EQ(pl_outgoing_add_datetime(o, "tf", 1414198608.5), PL_EINVAL); /* whole seconds only */
    CHECK_EQ(pl_send(client, "q1", o), PL_OK);
    pl_outgoing_free(o);

    pl_message *m = NULL;
    int64_t before = pl_now_mono_ms();
    REQUIRE(pl_peek_lock(&m, client, "q1", 5) == PL_OK);
    size_t len;
    const void *b = pl_message_body(m, &len);
    CHECK_EQ(len, sizeof body);
    CHECK(memcmp(b, body, sizeof body) == 0);
    CHECK_STR(pl_message_content_type(m), "application/x-test");
    CHECK_STR(pl_message_entity(m), "q1");
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
        CHECK_STR(pl_message_broker(m, fields[i]), fields[i]);
    CHECK_STR(pl_message_id(m), "MessageId");
    CHECK_STR(pl_message_broker(m, "SessionId"), "sess");
    CHECK_EQ(pl_message_delivery_count(m), 1);
    CHECK(pl_message_sequence_number(m) >= 1);
    CHECK(fabs(pl_message_time_to_live(m) - 3600) < 1e-6);
    CHECK(pl_message_enqueued_time(m) > 1600000000);
    CHECK(pl_message_lock_token(m) != NULL);
    int k;
    CHECK((k = find_prop(m, "s")) >= 0);
    if (k >= 0) {
        CHECK_EQ(pl_message_property_type(m, k), PL_PROP_STRING);
        CHECK_STR(pl_message_property_string(m, k), "say \"hi\"");
    }
    CHECK_EQ(find_prop(m, "tf"), -1); /* the refused one was not sent */
    CHECK((k = find_prop(m, "i")) >= 0);
    if (k >= 0) {
        CHECK_EQ(pl_message_property_type(m, k), PL_PROP_INT);
        CHECK_EQ(pl_message_property_int(m, k), -12345678901LL);
    }
    CHECK((k = find_prop(m, "d")) >= 0);
    if (k >= 0) {
        CHECK_EQ(pl_message_property_type(m, k), PL_PROP_DOUBLE);
        CHECK(pl_message_property_double(m, k) == 2.5);
    }
    CHECK((k = find_prop(m, "b")) >= 0);
    if (k >= 0) {
        CHECK_EQ(pl_message_property_type(m, k), PL_PROP_BOOL);
        CHECK_EQ(pl_message_property_bool(m, k), 1);
    }
    CHECK((k = find_prop(m, "t")) >= 0);
    if (k >= 0) {
        CHECK_EQ(pl_message_property_type(m, k), PL_PROP_DATETIME);
        CHECK_EQ(pl_message_property_datetime(m, k), 1414198608);
    }
    /* Lock bookkeeping: duration learned from LockedUntilUtc - Date (entity: 30 s). */
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_HELD);
    CHECK_EQ(pl_message_lock_duration_ms(m), 30000);
    CHECK(pl_message_lock_expiry_mono_ms(m) >= before + 30000);
    CHECK(pl_message_lock_remaining_ms(m) > 25000);
    CHECK_EQ(pl_complete(client, m), PL_OK);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_SETTLED);
    CHECK_EQ(pl_test_completed_count("q1", "MessageId"), 1);
    /* Settling twice is a state error, and sends nothing. */
    CHECK_EQ(pl_complete(client, m), PL_ESTATE);
    CHECK_EQ(pl_unlock(client, m), PL_ESTATE);
    CHECK_EQ(pl_renew_lock(client, m), PL_ESTATE);
    pl_message_free(m);
    CHECK_EQ(pl_test_completed_count("q1", "MessageId"), 1);
    CHECK_EQ(pl_test_message_count("q1"), 0);
}

static void test_empty_and_receive_delete(void)
{
    pl_message *m = (pl_message *)1;
    CHECK_EQ(pl_peek_lock(&m, client, "q1", 0), PL_EMPTY);
    CHECK(m == NULL);
    CHECK_EQ(pl_receive_and_delete(&m, client, "q1", 0), PL_EMPTY);
    /* A long poll answered by a send from the emulator's clock: timeout 1 s elapses. */
    CHECK_EQ(pl_receive_and_delete(&m, client, "q1", 1), PL_EMPTY);
    send_text("q1", "rd body", "rd-1");
    REQUIRE(pl_receive_and_delete(&m, client, "q1", 5) == PL_OK);
    size_t len;
    CHECK(memcmp(pl_message_body(m, &len), "rd body", 7) == 0);
    CHECK_EQ(len, 7);
    CHECK_STR(pl_message_id(m), "rd-1");
    CHECK(pl_message_lock_token(m) == NULL);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_NONE);
    CHECK_EQ(pl_complete(client, m), PL_ESTATE);
    CHECK(strstr(pl_error_last()->message, "receive-and-delete") != NULL);
    CHECK_EQ(pl_renew_lock(client, m), PL_ESTATE);
    pl_message_free(m);
    CHECK_EQ(pl_test_message_count("q1"), 0);
}

static void test_batch(void)
{
    pl_batch *b = NULL;
    REQUIRE(pl_batch_new(&b) == PL_OK);
    for (int i = 0; i < 3; i++) {
        char body[32], id[32];
        snprintf(body, sizeof body, "batch %d", i);
        snprintf(id, sizeof id, "b-%d", i);
        pl_outgoing *o = text_msg(body);
        pl_outgoing_set_broker(o, "MessageId", id);
        pl_outgoing_add_string(o, "Priority", "Low");
        pl_outgoing_add_int(o, "n", i);
        CHECK_EQ(pl_batch_add(b, o), PL_OK);
        pl_outgoing_free(o);
    }
    CHECK_EQ(pl_send_batch(client, "t1", b), PL_OK); /* to a topic */
    pl_batch_free(b);
    for (int i = 0; i < 3; i++) {
        pl_message *m = NULL;
        REQUIRE(pl_peek_lock(&m, client, "t1/subscriptions/s1", 5) == PL_OK);
        char body[32], id[32];
        snprintf(body, sizeof body, "batch %d", i);
        snprintf(id, sizeof id, "b-%d", i);
        size_t len;
        const char *got = pl_message_body(m, &len);
        CHECK(len == strlen(body) && memcmp(got, body, len) == 0);
        CHECK_STR(pl_message_id(m), id);
        CHECK_STR(pl_message_entity(m), "t1/subscriptions/s1");
        /* the service marks every message of a batch so */
        CHECK_STR(pl_message_content_type(m), "application/xml; charset=utf-8");
        int k = find_prop(m, "Priority");
        CHECK(k >= 0 && !strcmp(pl_message_property_string(m, k), "Low"));
        k = find_prop(m, "n");
        CHECK(k >= 0 && pl_message_property_type(m, k) == PL_PROP_INT && pl_message_property_int(m, k) == i);
        CHECK_EQ(pl_complete(client, m), PL_OK);
        pl_message_free(m);
    }
    pl_batch *empty = NULL;
    pl_batch_new(&empty);
    CHECK_EQ(pl_send_batch(client, "q1", empty), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "messages: must not be empty");
    pl_batch_free(empty);
}

static void test_unlock_redelivers(void)
{
    send_text("q1", "again", "u-1");
    pl_message *m = NULL;
    REQUIRE(pl_peek_lock(&m, client, "q1", 5) == PL_OK);
    CHECK_EQ(pl_message_delivery_count(m), 1);
    /* Nobody else sees it while locked. */
    pl_message *none = NULL;
    CHECK_EQ(pl_peek_lock(&none, client, "q1", 0), PL_EMPTY);
    CHECK_EQ(pl_unlock(client, m), PL_OK);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_SETTLED);
    pl_message *again = NULL;
    REQUIRE(pl_peek_lock(&again, client, "q1", 0) == PL_OK);
    CHECK_STR(pl_message_id(again), "u-1");
    CHECK_EQ(pl_message_delivery_count(again), 2);
    CHECK_EQ(pl_message_sequence_number(again), pl_message_sequence_number(m));
    /* The old lock token is dead: the server says 404 -> lock lost. Force the
     * state back to held to send it. */
    pl_message_set_state(m, PL_LOCK_HELD);
    CHECK_EQ(pl_complete(client, m), PL_ELOCKLOST);
    CHECK_EQ(pl_error_last()->http_status, 404);
    CHECK(strstr(pl_error_last()->message, pl_message_lock_token(again)) == NULL);
    CHECK(strstr(pl_error_last()->message, pl_message_lock_token(m)) == NULL);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_LOST);
    CHECK_EQ(pl_message_lost_reason(m), PL_ELOCKLOST);
    CHECK_EQ(pl_complete(client, again), PL_OK);
    pl_message_free(m);
    pl_message_free(again);
    CHECK_EQ(pl_test_completed_count("q1", "u-1"), 1);
}

static void test_expiry_and_renew(void)
{
    /* Expiry: move the server clock past the lock; the message comes back. */
    send_text("q1", "expire me", "e-1");
    pl_message *m = NULL;
    REQUIRE(pl_peek_lock(&m, client, "q1", 5) == PL_OK);
    CHECK_EQ(pl_test_advance(31), 200);
    pl_message *again = NULL;
    REQUIRE(pl_peek_lock(&again, client, "q1", 0) == PL_OK);
    CHECK_STR(pl_message_id(again), "e-1");
    CHECK_EQ(pl_message_delivery_count(again), 2);
    CHECK_EQ(pl_renew_lock(client, m), PL_ELOCKLOST);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_LOST);
    CHECK_EQ(pl_complete(client, m), PL_ELOCKLOST); /* known lost: no request */
    pl_message_free(m);

    /* Renew extends the server's lock from the renew time: after 20 + 20 s
     * (more than one 30 s lock) the renewed message is still ours. */
    pl_client_stats st0, st1;
    pl_client_stats_get(client, &st0);
    int64_t exp0 = pl_message_lock_expiry_mono_ms(again);
    CHECK_EQ(pl_test_advance(20), 200);
    CHECK_EQ(pl_renew_lock(client, again), PL_OK);
    CHECK(pl_message_lock_expiry_mono_ms(again) >= exp0);
    CHECK_EQ(pl_message_lock_state(again), PL_LOCK_HELD);
    CHECK_EQ(pl_test_advance(20), 200);
    pl_message *none = NULL;
    CHECK_EQ(pl_peek_lock(&none, client, "q1", 0), PL_EMPTY);
    CHECK_EQ(pl_complete(client, again), PL_OK);
    pl_client_stats_get(client, &st1);
    CHECK_EQ(st1.renewed, st0.renewed + 1);
    CHECK(st1.renew_p50_ms > 0);
    pl_message_free(again);
    CHECK_EQ(pl_test_completed_count("q1", "e-1"), 1);
}

static void test_dead_letter(void)
{
    REQUIRE(pl_test_entity("dlq1", "queue", 30, 1) == 201);
    send_text("dlq1", "poison", "p-1");
    pl_message *m = NULL;
    REQUIRE(pl_peek_lock(&m, client, "dlq1", 5) == PL_OK);
    CHECK_EQ(pl_unlock(client, m), PL_OK);
    pl_message_free(m);
    CHECK_EQ(pl_peek_lock(&m, client, "dlq1", 0), PL_EMPTY);
    REQUIRE(pl_peek_lock(&m, client, "dlq1/$DeadLetterQueue", 5) == PL_OK);
    CHECK_STR(pl_message_id(m), "p-1");
    int k = find_prop(m, "DeadLetterReason");
    CHECK(k >= 0 && !strcmp(pl_message_property_string(m, k), "MaxDeliveryCountExceeded"));
    CHECK_EQ(pl_complete(client, m), PL_OK);
    pl_message_free(m);
}

static pl_client *client_with(const char *conn, long request_timeout_ms, int max_retries, long base_ms)
{
    pl_client_options o = PL_CLIENT_OPTIONS_INIT;
    o.connection_string = conn;
    o.request_timeout_ms = request_timeout_ms;
    o.max_retries = max_retries;
    o.retry_base_ms = base_ms;
    o.retry_max_ms = base_ms * 4;
    pl_client *c = NULL;
    REQUIRE(pl_client_new(&c, &o) == PL_OK);
    return c;
}

static void test_errors(void)
{
    pl_outgoing *o = text_msg("x");
    pl_message *m = NULL;

    /* PL_EINVAL, naming the argument. */
    CHECK_EQ(pl_send(NULL, "q1", o), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "client") != NULL);
    CHECK_EQ(pl_send(client, NULL, o), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "entity") != NULL);
    CHECK_EQ(pl_send(client, "q1", NULL), PL_EINVAL);
    CHECK_EQ(pl_send(client, "../admin", o), PL_EINVAL);
    CHECK_EQ(pl_peek_lock(NULL, client, "q1", 0), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "out") != NULL);
    CHECK_EQ(pl_peek_lock(&m, client, "q1", 301), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "timeout: ") != NULL);
    CHECK_EQ(pl_complete(client, NULL), PL_EINVAL);
    CHECK_EQ(pl_renew_lock(NULL, NULL), PL_EINVAL);

    /* PL_ENOTFOUND: 410 for a missing entity. */
    CHECK_EQ(pl_send(client, "nosuchqueue", o), PL_ENOTFOUND);
    CHECK_EQ(pl_error_last()->http_status, 410);
    CHECK_EQ(pl_peek_lock(&m, client, "nosuchqueue", 0), PL_ENOTFOUND);

    /* PL_EAUTH: wrong key (401); no credentials at all; a bad bearer token. */
    const char *cs = pl_test_connection_string();
    const char *host = strstr(cs, "sb://");
    REQUIRE(host != NULL);
    size_t hostlen = strcspn(host, ";");
    char bad2[1024];
    snprintf(bad2, sizeof bad2,
             "Endpoint=%.*s;SharedAccessKeyName=RootManageSharedAccessKey;"
             "SharedAccessKey=wrong-key;UseDevelopmentEmulator=true",
             (int)hostlen, host);
    pl_client *wrong = NULL;
    REQUIRE(pl_client_new_from_connection_string(&wrong, bad2) == PL_OK);
    CHECK_EQ(pl_send(wrong, "q1", o), PL_EAUTH);
    CHECK_EQ(pl_error_last()->http_status, 401);
    CHECK(strstr(pl_error_last()->message, "wrong-key") == NULL);
    CHECK(strstr(pl_error_last()->message, "sig=") == NULL ||
          strstr(pl_error_last()->message, "sig=<redacted>"));
    pl_client_free(wrong);
    pl_client_options bo = PL_CLIENT_OPTIONS_INIT;
    bo.endpoint = pl_test_base_url();
    pl_client *bearer = NULL;
    REQUIRE(pl_client_new(&bearer, &bo) == PL_OK);
    CHECK_EQ(pl_send(bearer, "q1", o), PL_EAUTH);
    CHECK_EQ(pl_client_set_bearer_token(bearer, "not-a-real-token", (int64_t)time(NULL) + 3600), PL_OK);
    CHECK_EQ(pl_send(bearer, "q1", o), PL_EAUTH);
    CHECK(strstr(pl_error_last()->message, "not-a-real-token") == NULL);
    CHECK_EQ(pl_client_set_bearer_token(bearer, "bad token", 0), PL_EINVAL);
    pl_client_free(bearer);

    /* PL_ETOOLARGE: 403 with a size detail. */
    CHECK_EQ(pl_test_admin("PUT", "/$admin/entities/small", "{\"kind\":\"queue\",\"max_message_size\":1024}",
                           NULL),
             201);
    char big[4096];
    memset(big, 'x', sizeof big);
    pl_outgoing *ob = NULL;
    pl_outgoing_new(&ob, big, sizeof big);
    CHECK_EQ(pl_send(client, "small", ob), PL_ETOOLARGE);
    CHECK_EQ(pl_error_last()->http_status, 403);
    pl_outgoing_free(ob);

    /* Injected statuses map to distinct codes (no retries on this client). A 500 to a
     * send is an unknown outcome: the message may have been stored before it. */
    pl_client *noretry = client_with(cs, 0, 0, 10);
    struct {
        int status;
        int code;
    } inj[] = {
        {400, PL_EBADREQUEST}, {409, PL_ECONFLICT},  {500, PL_EUNKNOWN},
        {503, PL_ETHROTTLED},  {429, PL_ETHROTTLED}, {418, PL_EHTTP},
    };
    for (size_t i = 0; i < sizeof inj / sizeof inj[0]; i++) {
        char f[128];
        snprintf(f, sizeof f, "{\"operation\":\"send\",\"entity\":\"q1\",\"status\":%d,\"count\":1}",
                 inj[i].status);
        REQUIRE(pl_test_fault(f) == 201);
        CHECK_EQ(pl_send(noretry, "q1", o), inj[i].code);
        CHECK_EQ(pl_error_last()->http_status, inj[i].status);
        CHECK_EQ(pl_error_last()->retryable, inj[i].status == 503 || inj[i].status == 429);
    }
    CHECK_EQ(pl_test_message_count("q1"), 0);

    /* PL_ETIMEOUT: the server takes longer than the request timeout. */
    pl_client *quick = client_with(cs, 300, 0, 10);
    REQUIRE(pl_test_fault("{\"operation\":\"peek_lock\",\"entity\":\"q1\",\"delay_ms\":2000,\"count\":1}") ==
            201);
    CHECK_EQ(pl_peek_lock(&m, quick, "q1", 0), PL_ETIMEOUT);
    CHECK_EQ(pl_error_last()->retryable, 1);
    pl_client_free(quick);

    /* PL_ECONNECT: nothing listens there. */
    pl_client_options co = PL_CLIENT_OPTIONS_INIT;
    co.endpoint = "http://127.0.0.1:1";
    co.max_retries = 1;
    co.retry_base_ms = 1;
    pl_client *nowhere = NULL;
    REQUIRE(pl_client_new(&nowhere, &co) == PL_OK);
    CHECK_EQ(pl_send(nowhere, "q1", o), PL_ECONNECT);
    pl_client_stats st;
    pl_client_stats_get(nowhere, &st);
    CHECK_EQ(st.requests, 2); /* connect failures are safe to retry, even for send */
    CHECK_EQ(st.retries, 1);
    pl_client_free(nowhere);

    /* A dropped send is not retried (it may have been enqueued): outcome unknown. */
    REQUIRE(pl_test_fault("{\"operation\":\"send\",\"entity\":\"q1\",\"drop\":true,\"count\":1}") == 201);
    pl_client *r3 = client_with(cs, 0, 3, 10);
    CHECK_EQ(pl_send(r3, "q1", o), PL_EUNKNOWN);
    CHECK(strstr(pl_error_last()->message, "may have been stored") != NULL);
    pl_client_stats_get(r3, &st);
    CHECK_EQ(st.requests, 1);
    CHECK_EQ(st.retries, 0);

    /* 503 twice, then success: retried with backoff. */
    REQUIRE(pl_test_fault("{\"operation\":\"send\",\"entity\":\"q1\",\"status\":503,\"count\":2}") == 201);
    CHECK_EQ(pl_send(r3, "q1", o), PL_OK);
    pl_client_stats_get(r3, &st);
    CHECK_EQ(st.retries, 2);
    CHECK_EQ(st.sent, 1);
    /* Always 503: PL_ETHROTTLED after max_retries + 1 tries. */
    REQUIRE(pl_test_fault("{\"operation\":\"send\",\"entity\":\"q1\",\"status\":503,\"count\":4}") == 201);
    CHECK_EQ(pl_send(r3, "q1", o), PL_ETHROTTLED);
    CHECK_EQ(pl_error_last()->retryable, 1);
    pl_client_stats_get(r3, &st);
    CHECK_EQ(st.retries, 5);
    /* Retry-After is honoured: the retry waits at least that long. */
    REQUIRE(pl_test_fault(
                "{\"operation\":\"send\",\"entity\":\"q1\",\"status\":503,\"retry_after\":1,\"count\":1}") ==
            201);
    int64_t t0 = pl_now_mono_ms();
    CHECK_EQ(pl_send(r3, "q1", o), PL_OK);
    CHECK(pl_now_mono_ms() - t0 >= 950);

    /* A dropped peek-lock is retried transparently. */
    REQUIRE(pl_test_fault("{\"operation\":\"peek_lock\",\"entity\":\"q1\",\"drop\":true,\"count\":1}") ==
            201);
    REQUIRE(pl_peek_lock(&m, r3, "q1", 5) == PL_OK);
    CHECK_EQ(pl_complete(r3, m), PL_OK);
    pl_message_free(m);
    REQUIRE(pl_peek_lock(&m, r3, "q1", 5) == PL_OK);
    CHECK_EQ(pl_complete(r3, m), PL_OK);
    pl_message_free(m);
    CHECK_EQ(pl_test_message_count("q1"), 0);

    /* A complete throttled beyond the retries leaves the message held. */
    send_text("q1", "held", "h-1");
    REQUIRE(pl_peek_lock(&m, noretry, "q1", 5) == PL_OK);
    REQUIRE(pl_test_fault("{\"operation\":\"complete\",\"entity\":\"q1\",\"status\":503,\"count\":1}") ==
            201);
    CHECK_EQ(pl_complete(noretry, m), PL_ETHROTTLED);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_HELD);
    CHECK_EQ(pl_complete(noretry, m), PL_OK);
    pl_message_free(m);

    /* An outage longer than max_retries: a complete keeps trying while its
     * lock is valid, so the message is settled instead of coming back later. */
    send_text("q1", "outage", "o-1");
    REQUIRE(pl_peek_lock(&m, r3, "q1", 5) == PL_OK);
    pl_client_stats_get(r3, &st);
    uint64_t retries_before = st.retries;
    REQUIRE(pl_test_fault("{\"operation\":\"complete\",\"entity\":\"q1\",\"status\":503,\"count\":6}") ==
            201);
    CHECK_EQ(pl_complete(r3, m), PL_OK);
    pl_client_stats_get(r3, &st);
    CHECK_EQ(st.retries - retries_before, 6);
    CHECK_EQ(pl_test_completed_count("q1", "o-1"), 1);
    pl_message_free(m);
    /* ... and a dropped connection (outcome unknown) the same way. */
    send_text("q1", "outage", "o-2");
    REQUIRE(pl_peek_lock(&m, r3, "q1", 5) == PL_OK);
    REQUIRE(pl_test_fault("{\"operation\":\"unlock\",\"entity\":\"q1\",\"drop\":true,\"count\":5}") == 201);
    CHECK_EQ(pl_unlock(r3, m), PL_OK);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_SETTLED);
    pl_message_free(m);
    REQUIRE(pl_peek_lock(&m, r3, "q1", 5) == PL_OK);
    CHECK_EQ(pl_message_delivery_count(m), 2);
    CHECK_EQ(pl_complete(r3, m), PL_OK);
    pl_message_free(m);

    /* PL_EUNKNOWN: the complete is applied but its answer is lost; the retry
     * then finds no lock. The message was completed exactly once. */
    send_text("q1", "unknown", "x-1");
    REQUIRE(pl_peek_lock(&m, r3, "q1", 5) == PL_OK);
    REQUIRE(pl_test_fault(
                "{\"operation\":\"complete\",\"entity\":\"q1\",\"drop\":true,\"after\":true,\"count\":1}") ==
            201);
    CHECK_EQ(pl_complete(r3, m), PL_EUNKNOWN);
    CHECK(strstr(pl_error_last()->message, "may or may not") != NULL);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_UNKNOWN);
    CHECK_EQ(pl_message_lost_reason(m), PL_EUNKNOWN);
    CHECK_EQ(pl_test_completed_count("q1", "x-1"), 1);
    pl_message_free(m);
    /* A 500 after the complete was carried out: the retry finds no lock, and
     * that proves nothing, so the outcome is unknown, not "lost, not completed". */
    send_text("q1", "applied-500", "x-2");
    REQUIRE(pl_peek_lock(&m, r3, "q1", 5) == PL_OK);
    REQUIRE(pl_test_fault(
                "{\"operation\":\"complete\",\"entity\":\"q1\",\"status\":500,\"after\":true,\"count\":1}") ==
            201);
    CHECK_EQ(pl_complete(r3, m), PL_EUNKNOWN);
    CHECK_EQ(pl_error_last()->http_status, 404);
    CHECK_EQ(pl_message_lost_reason(m), PL_EUNKNOWN);
    CHECK_EQ(pl_test_completed_count("q1", "x-2"), 1);
    pl_message_free(m);
    /* A 500 before anything was done: retried, completed once. */
    send_text("q1", "plain-500", "x-3");
    REQUIRE(pl_peek_lock(&m, r3, "q1", 5) == PL_OK);
    REQUIRE(pl_test_fault("{\"operation\":\"complete\",\"entity\":\"q1\",\"status\":500,\"count\":1}") ==
            201);
    CHECK_EQ(pl_complete(r3, m), PL_OK);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_SETTLED);
    CHECK_EQ(pl_test_completed_count("q1", "x-3"), 1);
    pl_message_free(m);
    /* A dropped renew is retried and succeeds. */
    send_text("q1", "renew-drop", "rd-2");
    REQUIRE(pl_peek_lock(&m, r3, "q1", 5) == PL_OK);
    REQUIRE(pl_test_fault("{\"operation\":\"renew\",\"entity\":\"q1\",\"drop\":true,\"count\":1}") == 201);
    CHECK_EQ(pl_renew_lock(r3, m), PL_OK);
    CHECK_EQ(pl_complete(r3, m), PL_OK);
    pl_message_free(m);

    pl_client_free(r3);
    pl_client_free(noretry);
    pl_outgoing_free(o);
    CHECK_EQ(pl_test_clear_faults(), 200);
}

/* Scheduled enqueue: invisible until the emulator's clock reaches it. */
static void test_scheduled(void)
{
    char *body = NULL;
    REQUIRE(pl_test_admin("GET", "/$admin/clock", NULL, &body) == 200);
    const char *p = strstr(body, "\"now\"");
    REQUIRE(p != NULL);
    double now = strtod(strchr(p, ':') + 1, NULL);
    free(body);
    pl_outgoing *o = text_msg("later");
    pl_outgoing_set_broker(o, "MessageId", "sched-1");
    CHECK_EQ(pl_outgoing_set_scheduled_enqueue_time(o, floor(now) + 100), PL_OK);
    CHECK_EQ(pl_send(client, "q1", o), PL_OK);
    pl_outgoing_free(o);
    pl_message *m = NULL;
    CHECK_EQ(pl_peek_lock(&m, client, "q1", 0), PL_EMPTY);
    CHECK_EQ(pl_test_advance(101), 200);
    REQUIRE(pl_peek_lock(&m, client, "q1", 0) == PL_OK);
    CHECK_STR(pl_message_id(m), "sched-1");
    CHECK_EQ(pl_complete(client, m), PL_OK);
    pl_message_free(m);
}

/* Other credentials and transports. */
static void test_credentials(void)
{
    /* A ready-made SAS token (namespace scope) in the connection string. */
    const char *base = pl_test_base_url();
    char scope[300], *tok = NULL, conn[2048];
    snprintf(scope, sizeof scope, "%s/", base);
    const char *cs = pl_test_connection_string();
    const char *key = strstr(cs, "SharedAccessKey=");
    REQUIRE(key != NULL);
    key += strlen("SharedAccessKey=");
    char keybuf[256];
    snprintf(keybuf, sizeof keybuf, "%.*s", (int)strcspn(key, ";"), key);
    REQUIRE(pl_sas_token(&tok, scope, "RootManageSharedAccessKey", keybuf, (int64_t)time(NULL) + 7200) ==
            PL_OK);
    snprintf(conn, sizeof conn, "Endpoint=sb://%s;SharedAccessSignature=%s;UseDevelopmentEmulator=true",
             base + strlen("http://"), tok);
    pl_free(tok);
    pl_client *c = NULL;
    REQUIRE(pl_client_new_from_connection_string(&c, conn) == PL_OK);
    pl_outgoing *o = text_msg("via token");
    CHECK_EQ(pl_send(c, "q1", o), PL_OK);
    pl_message *m = NULL;
    REQUIRE(pl_receive_and_delete(&m, c, "q1", 5) == PL_OK);
    size_t len;
    CHECK(memcmp(pl_message_body(m, &len), "via token", 9) == 0);
    pl_message_free(m);
    pl_client_free(c);

    /* Without UseDevelopmentEmulator the client speaks TLS and verifies: the
     * emulator's plain-HTTP port fails the handshake instead of leaking a request. */
    snprintf(conn, sizeof conn,
             "Endpoint=sb://%s;SharedAccessKeyName=RootManageSharedAccessKey;SharedAccessKey=%s",
             base + strlen("http://"), keybuf);
    pl_client_options opt = PL_CLIENT_OPTIONS_INIT;
    opt.connection_string = conn;
    opt.max_retries = 0;
    REQUIRE(pl_client_new(&c, &opt) == PL_OK);
    CHECK(strncmp(pl_client_endpoint(c), "https://", 8) == 0);
    CHECK_EQ(pl_send(c, "q1", o), PL_ECONNECT);
    CHECK(strstr(pl_error_last()->message, keybuf) == NULL);
    pl_client_free(c);
    pl_outgoing_free(o);
    CHECK_EQ(pl_test_message_count("q1"), 0);
}

static void test_messages_outlive_client(void)
{
    pl_client *c = NULL;
    REQUIRE(pl_client_new_from_connection_string(&c, pl_test_connection_string()) == PL_OK);
    send_text("q1", "outlive", "o-1");
    pl_message *m = NULL;
    REQUIRE(pl_peek_lock(&m, c, "q1", 5) == PL_OK);
    pl_client_free(c); /* the message keeps the client alive */
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_HELD);
    CHECK_EQ(pl_complete(client, m), PL_OK);
    pl_message_free(m);
}

int main(void)
{
    REQUIRE(pl_test_entity("q1", "queue", 30, 10) == 201);
    REQUIRE(pl_test_entity("t1", "topic", 30, 10) == 201);
    REQUIRE(pl_test_entity("t1/subscriptions/s1", "subscription", 30, 10) == 201);
    REQUIRE(pl_client_new_from_connection_string(&client, pl_test_connection_string()) == PL_OK);
    test_send_peek_complete();
    test_empty_and_receive_delete();
    test_batch();
    test_unlock_redelivers();
    test_expiry_and_renew();
    test_dead_letter();
    test_errors();
    test_messages_outlive_client();
    test_scheduled();
    test_credentials();
    pl_client_stats st;
    CHECK_EQ(pl_client_stats_get(client, &st), PL_OK);
    CHECK(st.requests > 20);
    CHECK(st.reused_connections > 0);
    CHECK(st.completed >= 8);
    pl_client_free(client);
    return pl_test_done("test_int_ops");
}
