/*
 * pl_renewer_hold / pl_renewer_finish against the emulator (run under
 * with_emulator.py): the workflow around a handler settles by the handler's
 * result and reports what became of the message from its own state.
 *
 *  - success: completed once; failure: abandoned (delivered again at once);
 *  - the handler settled it itself: nothing sent, reported as BY_HANDLER;
 *  - lock lost while the handler ran (the emulator's clock moved past the lock,
 *    then the renewer's renewal was refused): nothing completed, LOST;
 *  - lock expired on the server before the settle: PL_ELOCKLOST, LOST;
 *  - a complete answered 500 after the server acted: PL_EUNKNOWN, UNKNOWN; a
 *    handler's own unknown settle: UNKNOWN with nothing sent again;
 *  - the renewer closed with unlock while the handler ran: CLOSED;
 *  - state and argument errors, and r NULL.
 */
#include "support.h"

static pl_client *client;
static int seq;

/* A fresh queue (5 s locks) with one message "id" in it, locked. */
static pl_message *lock_one(char *q, size_t qn, const char *id)
{
    snprintf(q, qn, "hold-%d", ++seq);
    REQUIRE(pl_test_entity(q, "queue", 5, 10) / 100 == 2);
    pl_test_send_id(client, q, id);
    pl_message *m = NULL;
    REQUIRE(pl_peek_lock(&m, client, q, 5) == PL_OK && m);
    return m;
}

static void test_success_and_failure(pl_renewer *r)
{
    char q[64];
    int outcome = -1;
    pl_message *m = lock_one(q, sizeof q, "ok");
    CHECK_EQ(pl_renewer_hold(r, m, 60000), PL_OK);
    /* the settle a finish sends while the lock is held (what pl_renewer_finish sends) */
    CHECK_EQ(pl_finish_action(m, 1), PL_SETTLE_COMPLETE);
    CHECK_EQ(pl_finish_action(m, 0), PL_SETTLE_UNLOCK);
    CHECK_EQ(pl_renewer_finish(r, m, 1, &outcome), PL_OK);
    CHECK_EQ(outcome, PL_FINISH_COMPLETED);
    CHECK_EQ(pl_finish_action(m, 1), 0); /* settled: nothing to send */
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_SETTLED);
    CHECK_EQ(pl_message_settle_kind(m), PL_SETTLE_COMPLETE);
    CHECK_EQ(pl_test_completed_count(q, "ok"), 1);
    CHECK_EQ(pl_test_message_count(q), 0);
    pl_message_free(m);

    m = lock_one(q, sizeof q, "fail");
    CHECK_EQ(pl_renewer_hold(r, m, 0), PL_OK);
    CHECK_EQ(pl_renewer_finish(r, m, 0, &outcome), PL_OK);
    CHECK_EQ(outcome, PL_FINISH_ABANDONED);
    CHECK_EQ(pl_message_settle_kind(m), PL_SETTLE_UNLOCK);
    pl_message_free(m);
    m = NULL; /* abandoned: delivered again at once, not after the lock */
    REQUIRE(pl_peek_lock(&m, client, q, 0) == PL_OK && m);
    CHECK_EQ(pl_message_delivery_count(m), 2);
    CHECK_EQ(pl_test_completed_count(q, "fail"), 0);
    /* finished without a renewer (r NULL: it is gone): settled all the same */
    CHECK_EQ(pl_renewer_finish(NULL, m, 1, NULL), PL_OK);
    CHECK_EQ(pl_test_completed_count(q, "fail"), 1);
    pl_message_free(m);
}

static void test_settled_by_handler(pl_renewer *r)
{
    char q[64];
    int outcome = -1;
    pl_message *m = lock_one(q, sizeof q, "self");
    CHECK_EQ(pl_renewer_hold(r, m, 60000), PL_OK);
    CHECK_EQ(pl_complete(client, m), PL_OK); /* the handler's own settle */
    CHECK_EQ(pl_renewer_finish(r, m, 0, &outcome), PL_OK);
    CHECK_EQ(outcome, PL_FINISH_BY_HANDLER);
    CHECK_EQ(pl_message_settle_kind(m), PL_SETTLE_COMPLETE); /* not abandoned after it */
    CHECK_EQ(pl_test_completed_count(q, "self"), 1);
    pl_renewer_stats st;
    REQUIRE(pl_renewer_stats_get(r, &st) == PL_OK);
    CHECK_EQ(st.held, 0);
    pl_message_free(m);
}

/* The next event of type `type` for m, waiting up to 15 s (0 if none came). */
static int wait_for(pl_renewer *r, pl_message *m, int type)
{
    for (int i = 0; i < 150; i++) {
        pl_event *ev = NULL;
        if (pl_renewer_wait_event(&ev, r, 100) != PL_OK) continue;
        int hit = pl_event_type(ev) == type && pl_event_message(ev) == m;
        pl_event_free(ev);
        if (hit) return 1;
    }
    return 0;
}

static void test_lost(pl_renewer *r)
{
    char q[64];
    int outcome = -1;
    /* lost while the handler ran: the server's lock ran out (its clock moved on),
     * and the renewer's next renewal was refused */
    pl_message *m = lock_one(q, sizeof q, "lost");
    CHECK_EQ(pl_renewer_hold(r, m, 60000), PL_OK);
    REQUIRE(pl_test_advance(6) / 100 == 2);
    CHECK(wait_for(r, m, PL_EVENT_LOST));
    CHECK_EQ(pl_finish_action(m, 1), 0); /* lost: nothing to send */
    CHECK_EQ(pl_renewer_finish(r, m, 1, &outcome), PL_OK);
    CHECK_EQ(outcome, PL_FINISH_LOST);
    /* the outcome's error, in the core's words for every binding */
    CHECK_EQ(pl_finish_error(m, outcome), PL_ELOCKLOST);
    CHECK_EQ(pl_error_last()->code, PL_ELOCKLOST);
    CHECK(strstr(pl_error_last()->message, "was lost while the handler ran; nothing was completed (") !=
          NULL);
    CHECK(strstr(pl_error_last()->message, q) != NULL);
    CHECK_EQ(pl_test_completed_count(q, "lost"), 0);
    pl_message_free(m);

    /* the lock ran out on the server before the settle: this call's complete is refused */
    m = lock_one(q, sizeof q, "late");
    CHECK_EQ(pl_renewer_hold(r, m, 60000), PL_OK);
    REQUIRE(pl_test_advance(6) / 100 == 2);
    CHECK_EQ(pl_renewer_finish(r, m, 1, &outcome), PL_ELOCKLOST);
    CHECK_EQ(outcome, PL_FINISH_LOST);
    CHECK_EQ(pl_test_completed_count(q, "late"), 0);
    pl_message_free(m);
}

/* The next complete on q is answered 500 after the server acted. */
static void fail_next_complete(const char *q)
{
    char rule[256];
    snprintf(
        rule, sizeof rule,
        "{\"operation\": \"complete\", \"entity\": \"%s\", \"status\": 500, \"after\": true, \"count\": 1}",
        q);
    REQUIRE(pl_test_fault(rule) == 201);
}

static void test_unknown(pl_renewer *r)
{
    char q[64];
    int outcome = -1;
    pl_message *m = lock_one(q, sizeof q, "unk");
    fail_next_complete(q);
    CHECK_EQ(pl_renewer_hold(r, m, 60000), PL_OK);
    CHECK_EQ(pl_renewer_finish(r, m, 1, &outcome), PL_EUNKNOWN);
    CHECK_EQ(outcome, PL_FINISH_UNKNOWN);
    CHECK_EQ(pl_finish_error(m, outcome), PL_EUNKNOWN);
    CHECK(strstr(pl_error_last()->message, "had an unknown outcome; it may or may not have been completed") !=
          NULL);
    CHECK_EQ(pl_test_completed_count(q, "unk"), 1); /* it was, in fact, completed */
    pl_message_free(m);

    /* the handler's own complete had an unknown outcome: nothing is sent again */
    m = lock_one(q, sizeof q, "unk2");
    fail_next_complete(q);
    CHECK_EQ(pl_renewer_hold(r, m, 60000), PL_OK);
    CHECK_EQ(pl_complete(client, m), PL_EUNKNOWN);
    CHECK_EQ(pl_renewer_finish(r, m, 0, &outcome), PL_OK);
    CHECK_EQ(outcome, PL_FINISH_UNKNOWN);
    CHECK_EQ(pl_test_completed_count(q, "unk2"), 1);
    pl_message_free(m);
    pl_test_clear_faults();
}

static void test_closed(void)
{
    char q[64];
    int outcome = -1;
    pl_renewer *r = NULL;
    REQUIRE(pl_renewer_new(&r, client, NULL) == PL_OK);
    pl_message *m = lock_one(q, sizeof q, "closed");
    CHECK_EQ(pl_renewer_hold(r, m, 60000), PL_OK);
    CHECK_EQ(pl_renewer_close(r, 1), PL_OK); /* unlocks what it holds */
    CHECK_EQ(pl_renewer_finish(r, m, 1, &outcome), PL_OK);
    CHECK_EQ(outcome, PL_FINISH_CLOSED);
    CHECK_EQ(pl_finish_error(m, outcome), PL_ECLOSED);
    CHECK(strstr(pl_error_last()->message, "was abandoned when the client closed while the handler ran") !=
          NULL);
    CHECK_EQ(pl_test_completed_count(q, "closed"), 0);
    CHECK_EQ(pl_test_message_count(q), 1);
    pl_message_free(m);
    m = lock_one(q, sizeof q, "after-close");
    CHECK_EQ(pl_renewer_hold(r, m, 0), PL_ECLOSED);
    CHECK_EQ(pl_renewer_finish(r, m, 1, &outcome), PL_OK); /* still settled */
    CHECK_EQ(outcome, PL_FINISH_COMPLETED);
    CHECK_EQ(pl_finish_error(m, outcome), PL_OK); /* completed: no error */
    pl_message_free(m);
    pl_renewer_free(r);
}

static void test_errors(pl_renewer *r)
{
    char q[64];
    int outcome = -1;
    snprintf(q, sizeof q, "hold-%d", ++seq);
    REQUIRE(pl_test_entity(q, "queue", 5, 10) / 100 == 2);
    pl_test_send_id(client, q, "rd");
    pl_message *m = NULL;
    REQUIRE(pl_receive_and_delete(&m, client, q, 5) == PL_OK && m);
    CHECK_EQ(pl_renewer_hold(r, m, 0), PL_ESTATE);
    CHECK(strstr(pl_error_last()->message, "nothing to lock") != NULL);
    CHECK_EQ(pl_renewer_finish(r, m, 1, &outcome), PL_ESTATE);
    CHECK_EQ(outcome, 0);
    CHECK_EQ(pl_finish_action(m, 1), 0); /* receive-and-delete: no lock to settle */
    CHECK_EQ(pl_finish_action(NULL, 1), 0);
    pl_message_free(m);

    m = lock_one(q, sizeof q, "twice");
    CHECK_EQ(pl_renewer_hold(NULL, m, 0), PL_EINVAL);
    CHECK_EQ(pl_renewer_hold(r, NULL, 0), PL_EINVAL);
    CHECK_EQ(pl_renewer_hold(r, m, -1), PL_EINVAL);
    CHECK_EQ(pl_renewer_hold(r, m, PL_MAX_RENEW_MS + 1), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "max_ms") != NULL);
    CHECK_EQ(pl_renewer_finish(r, NULL, 1, &outcome), PL_EINVAL);
    CHECK_EQ(pl_complete(client, m), PL_OK);
    CHECK_EQ(pl_renewer_hold(r, m, 0), PL_ESTATE);
    CHECK_STR(pl_error_last()->message, "message lock is settled, not held");
    pl_message_free(m);
}

int main(void)
{
    REQUIRE(pl_client_new_from_connection_string(&client, pl_test_connection_string()) == PL_OK);
    pl_renewer *r = NULL;
    REQUIRE(pl_renewer_new(&r, client, NULL) == PL_OK);
    test_success_and_failure(r);
    test_settled_by_handler(r);
    test_unknown(r);
    test_closed();
    test_errors(r);
    test_lost(r);
    pl_renewer_free(r);
    pl_client_free(client);
    return pl_test_done("test_renewer_hold");
}
