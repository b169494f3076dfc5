/*
 * Unit tests of the outcome module (csrc/outcome.c): every operation against every
 * kind of attempt result, the retry budget and delays, Retry-After parsing, and the
 * settle fence. Pure: no clock, no network; time is an argument.
 */
#include "outcome_int.h"

#include <stdio.h>
#include <string.h>

#include "error_int.h"
#include "message_int.h"
#include "support.h"
#include "wire_int.h"

static const pl_policy P3 = {3, 100, 5000};
static const pl_policy P0 = {0, 100, 5000};

#define DONE(c) ((c).code)

/* One attempt reported as the first of a call; returns PL_NEXT_* and leaves call. */
static int first(pl_call *call, int op, int resend, const pl_policy *p, int io, int status, int code, long ra,
                 int64_t left)
{
    pl_call_init(call, op, "q", 7);
    call->resend_ok = resend;
    if (code < 0) pl_error_set(code, status, 1, "attempt failed");
    return pl_call_report(call, p, io, status, code, ra, left);
}

static void test_retry_after(void)
{
    CHECK_EQ(pl_retry_after_ms(NULL), -1);
    CHECK_EQ(pl_retry_after_ms(""), -1);
    CHECK_EQ(pl_retry_after_ms("2"), 2000);
    CHECK_EQ(pl_retry_after_ms(" 0.25 "), 250);
    CHECK_EQ(pl_retry_after_ms("0"), 0);
    CHECK_EQ(pl_retry_after_ms("3600"), PL_RETRY_AFTER_MAX_MS);
    CHECK_EQ(pl_retry_after_ms("99999999999999999999"), PL_RETRY_AFTER_MAX_MS);
    CHECK_EQ(pl_retry_after_ms("-1"), -1);
    CHECK_EQ(pl_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT"), -1);
    CHECK_EQ(pl_retry_after_ms("1x"), -1);
}

/* The table of outcome_int.h, one row per operation, first attempt. */
static void test_table(void)
{
    pl_call c;
    static const int ops[] = {PL_OP_SEND,  PL_OP_BATCH,  PL_OP_RECVDEL, PL_OP_PEEKLOCK,
                              PL_OP_RENEW, PL_OP_UNLOCK, PL_OP_COMPLETE};
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++) {
        int op = ops[i];
        int sendish = op == PL_OP_SEND || op == PL_OP_BATCH || op == PL_OP_RECVDEL;
        int settle = op == PL_OP_UNLOCK || op == PL_OP_COMPLETE;
        /* not sent: always retried */
        CHECK_EQ(first(&c, op, 0, &P3, PL_IO_NOT_SENT, 0, PL_ECONNECT, -1, 60000), PL_NEXT_RETRY);
        /* sent, no answer */
        int next = first(&c, op, 0, &P3, PL_IO_UNANSWERED, 0, PL_ETIMEOUT, -1, 60000);
        if (sendish) {
            CHECK_EQ(next, PL_NEXT_DONE);
            CHECK_EQ(c.code, PL_EUNKNOWN);
            CHECK_EQ(pl_error_last()->code, PL_EUNKNOWN);
            CHECK(strstr(pl_error_last()->message, "outcome unknown") != NULL);
        } else {
            CHECK_EQ(next, PL_NEXT_RETRY);
        }
        CHECK_EQ(c.orphaned, op == PL_OP_PEEKLOCK);
        /* malformed or cut short */
        next = first(&c, op, 0, &P3, PL_IO_MALFORMED, 200, PL_EPROTOCOL, -1, 60000);
        CHECK_EQ(next, op == PL_OP_RENEW ? PL_NEXT_RETRY : PL_NEXT_DONE);
        if (op != PL_OP_RENEW) CHECK_EQ(c.code, sendish || settle ? PL_EUNKNOWN : PL_EPROTOCOL);
        CHECK_EQ(c.orphaned, op == PL_OP_PEEKLOCK);
        /* an answered 2xx whose reading failed counts as malformed */
        if (first(&c, op, 0, &P3, PL_IO_ANSWERED, 200, PL_EPROTOCOL, -1, 60000) == PL_NEXT_DONE)
            CHECK_EQ(c.code, sendish || settle ? PL_EUNKNOWN : PL_EPROTOCOL);
        /* 503 / 429: retried, after Retry-After when given */
        CHECK_EQ(first(&c, op, 0, &P3, PL_IO_ANSWERED, 503, PL_ETHROTTLED, 1500, 60000), PL_NEXT_RETRY);
        CHECK_EQ(c.delay_ms, 1500);
        CHECK_EQ(first(&c, op, 0, &P3, PL_IO_ANSWERED, 429, PL_ETHROTTLED, -1, 60000), PL_NEXT_RETRY);
        CHECK(c.delay_ms >= 50 && c.delay_ms <= 100);
        /* other 5xx */
        next = first(&c, op, 0, &P3, PL_IO_ANSWERED, 500, PL_ESERVER, -1, 60000);
        if (sendish) {
            CHECK_EQ(next, PL_NEXT_DONE);
            CHECK_EQ(c.code, PL_EUNKNOWN);
            CHECK_EQ(pl_error_last()->http_status, 500);
        } else {
            CHECK_EQ(next, PL_NEXT_RETRY);
        }
        /* a plain 4xx is final */
        CHECK_EQ(first(&c, op, 0, &P3, PL_IO_ANSWERED, 401, PL_EAUTH, -1, 60000), PL_NEXT_DONE);
        CHECK_EQ(c.code, PL_EAUTH);
        /* success */
        CHECK_EQ(first(&c, op, 0, &P3, PL_IO_ANSWERED, 200, PL_OK, -1, 60000), PL_NEXT_DONE);
        CHECK_EQ(c.code, PL_OK);
    }
}

static void test_send_opt_in(void)
{
    pl_call c;
    /* with the opt-in (and MessageIds, checked when the request is built) a lost answer
     * is sent again; once the budget is spent the call is unknown, never an error that
     * hides a stored copy */
    CHECK_EQ(first(&c, PL_OP_SEND, 1, &P3, PL_IO_UNANSWERED, 0, PL_ETIMEOUT, -1, 0), PL_NEXT_RETRY);
    CHECK_EQ(first(&c, PL_OP_BATCH, 1, &P3, PL_IO_ANSWERED, 500, PL_ESERVER, -1, 0), PL_NEXT_RETRY);
    pl_call_init(&c, PL_OP_SEND, "q", 1);
    c.resend_ok = 1;
    int next = PL_NEXT_RETRY, n = 0;
    while (next == PL_NEXT_RETRY) {
        pl_error_set(PL_ETIMEOUT, 0, 1, "request timed out");
        next = pl_call_report(&c, &P3, PL_IO_UNANSWERED, 0, PL_ETIMEOUT, -1, 0);
        n++;
    }
    CHECK_EQ(n, 4);
    CHECK_EQ(c.code, PL_EUNKNOWN);
    /* an answer after a lost one: 201 is success (duplicate detection dropped any copy) */
    pl_call_init(&c, PL_OP_SEND, "q", 1);
    c.resend_ok = 1;
    CHECK_EQ(pl_call_report(&c, &P3, PL_IO_UNANSWERED, 0, PL_ETIMEOUT, -1, 0), PL_NEXT_RETRY);
    CHECK_EQ(pl_call_report(&c, &P3, PL_IO_ANSWERED, 201, PL_OK, -1, 0), PL_NEXT_DONE);
    CHECK_EQ(c.code, PL_OK);
}

static void test_budget(void)
{
    pl_call c;
    /* never sent, and the driver says sending again cannot help (a bad CA file, a
     * certificate that fails verification): not retried */
    pl_call_init(&c, PL_OP_SEND, "q", 1);
    pl_error_set(PL_ECONNECT, 0, 0, "TLS: the server's certificate failed verification");
    CHECK_EQ(pl_call_report(&c, &P3, PL_IO_NOT_SENT, 0, PL_ECONNECT, -1, 0), PL_NEXT_DONE);
    CHECK_EQ(c.code, PL_ECONNECT);
    pl_call_init(&c, PL_OP_SEND, "q", 1);
    pl_error_set(PL_EINVAL, 0, 0, "ca_file: cannot be used");
    CHECK_EQ(pl_call_report(&c, &P3, PL_IO_NOT_SENT, 0, PL_EINVAL, -1, 0), PL_NEXT_DONE);
    /* max_retries 0: nothing is retried; a connect failure is returned as is */
    CHECK_EQ(first(&c, PL_OP_PEEKLOCK, 0, &P0, PL_IO_NOT_SENT, 0, PL_ECONNECT, -1, 0), PL_NEXT_DONE);
    CHECK_EQ(c.code, PL_ECONNECT);
    /* peek-lock: max_retries retries, then the transport error; every lost answer counted */
    pl_call_init(&c, PL_OP_PEEKLOCK, "q", 3);
    int n = 0, next;
    do {
        pl_error_set(PL_ETIMEOUT, 0, 1, "timed out");
        next = pl_call_report(&c, &P3, PL_IO_UNANSWERED, 0, PL_ETIMEOUT, -1, 0);
        n++;
    } while (next == PL_NEXT_RETRY);
    CHECK_EQ(n, 4);
    CHECK_EQ(c.code, PL_ETIMEOUT);
    CHECK_EQ(c.orphaned, 4);
    /* backoff doubles, jittered into [d/2, d], capped */
    pl_call_init(&c, PL_OP_PEEKLOCK, "q", 3);
    pl_policy p = {10, 100, 400};
    long lo[] = {50, 100, 200, 200, 200}, hi[] = {100, 200, 400, 400, 400};
    for (int i = 0; i < 5; i++) {
        CHECK_EQ(pl_call_report(&c, &p, PL_IO_NOT_SENT, 0, PL_ECONNECT, -1, 0), PL_NEXT_RETRY);
        CHECK(c.delay_ms >= lo[i] && c.delay_ms <= hi[i]);
    }
    /* equal seeds, equal delays */
    pl_call a, b;
    pl_call_init(&a, PL_OP_RENEW, "q", 99);
    pl_call_init(&b, PL_OP_RENEW, "q", 99);
    for (int i = 0; i < 3; i++) {
        pl_call_report(&a, &p, PL_IO_NOT_SENT, 0, PL_ECONNECT, -1, 100000);
        pl_call_report(&b, &p, PL_IO_NOT_SENT, 0, PL_ECONNECT, -1, 100000);
        CHECK_EQ(a.delay_ms, b.delay_ms);
    }
    /* renew: never waits past the lock's remaining time */
    CHECK_EQ(first(&c, PL_OP_RENEW, 0, &P3, PL_IO_ANSWERED, 503, PL_ETHROTTLED, 5000, 4000), PL_NEXT_DONE);
    CHECK_EQ(c.code, PL_ETHROTTLED);
    CHECK_EQ(first(&c, PL_OP_RENEW, 0, &P3, PL_IO_ANSWERED, 503, PL_ETHROTTLED, 3000, 4000), PL_NEXT_RETRY);
    /* complete: past max_retries it keeps trying while the lock outlives the delay */
    pl_call_init(&c, PL_OP_COMPLETE, "q", 5);
    for (int i = 0; i < 10; i++)
        CHECK_EQ(pl_call_report(&c, &P3, PL_IO_ANSWERED, 503, PL_ETHROTTLED, 100, 60000), PL_NEXT_RETRY);
    pl_error_set(PL_ETHROTTLED, 503, 1, "busy");
    CHECK_EQ(pl_call_report(&c, &P3, PL_IO_ANSWERED, 503, PL_ETHROTTLED, 100, 50), PL_NEXT_DONE);
    CHECK_EQ(c.code, PL_ETHROTTLED); /* nothing was carried out: a plain error, still held */
    /* ... and never more than PL_CALL_MAX_ATTEMPTS attempts */
    pl_call_init(&c, PL_OP_UNLOCK, "q", 5);
    n = 0;
    do {
        pl_error_set(PL_ETHROTTLED, 503, 1, "busy");
        next = pl_call_report(&c, &P3, PL_IO_ANSWERED, 503, PL_ETHROTTLED, 0, 1000000);
        n++;
    } while (next == PL_NEXT_RETRY);
    CHECK_EQ(n, PL_CALL_MAX_ATTEMPTS);
}

/* A settle that may have been carried out stays unknown whatever the retry says. */
static void test_settle_uncertain(void)
{
    pl_call c;
    static const int ops[] = {PL_OP_COMPLETE, PL_OP_UNLOCK};
    for (int i = 0; i < 2; i++) {
        /* lost answer, then the retry finds no lock: it was probably the first attempt */
        pl_call_init(&c, ops[i], "q", 1);
        pl_error_set(PL_ETIMEOUT, 0, 1, "timed out");
        CHECK_EQ(pl_call_report(&c, &P3, PL_IO_UNANSWERED, 0, PL_ETIMEOUT, -1, 60000), PL_NEXT_RETRY);
        pl_error_set(PL_ELOCKLOST, 404, 0, "gone");
        CHECK_EQ(pl_call_report(&c, &P3, PL_IO_ANSWERED, 404, PL_ELOCKLOST, -1, 60000), PL_NEXT_DONE);
        CHECK_EQ(c.code, PL_EUNKNOWN);
        CHECK_EQ(pl_error_last()->http_status, 404);
        CHECK(strstr(pl_error_last()->message, "earlier attempt") != NULL);
        /* a 500, then the retry answers 200: done */
        pl_call_init(&c, ops[i], "q", 1);
        CHECK_EQ(pl_call_report(&c, &P3, PL_IO_ANSWERED, 500, PL_ESERVER, -1, 60000), PL_NEXT_RETRY);
        CHECK_EQ(pl_call_report(&c, &P3, PL_IO_ANSWERED, 200, PL_OK, -1, 60000), PL_NEXT_DONE);
        CHECK_EQ(c.code, PL_OK);
        /* lost answers until the lock runs out: unknown, not a timeout */
        pl_call_init(&c, ops[i], "q", 1);
        int next;
        int64_t left = 2000;
        do {
            pl_error_set(PL_ETIMEOUT, 0, 1, "timed out");
            next = pl_call_report(&c, &P3, PL_IO_UNANSWERED, 0, PL_ETIMEOUT, -1, left);
            left -= 300;
        } while (next == PL_NEXT_RETRY);
        CHECK_EQ(c.code, PL_EUNKNOWN);
        /* a 404 at once (no earlier attempt) is a lost lock */
        CHECK_EQ(first(&c, ops[i], 0, &P3, PL_IO_ANSWERED, 404, PL_ELOCKLOST, -1, 60000), PL_NEXT_DONE);
        CHECK_EQ(c.code, PL_ELOCKLOST);
    }
    /* secrets never pass through: the message is the attempt's own plus fixed words */
    pl_call_init(&c, PL_OP_RECVDEL, "orders", 1);
    pl_error_set(PL_ETIMEOUT, 0, 1, "request timed out");
    pl_call_report(&c, &P3, PL_IO_UNANSWERED, 0, PL_ETIMEOUT, -1, 0);
    CHECK_STR(pl_error_last()->message,
              "receive-and-delete on 'orders': outcome unknown: request timed out; a message may have been "
              "removed from the entity without being delivered");
}

static void test_fence(void)
{
    pl_message *m = pl_message_alloc();
    REQUIRE(m);
    /* never locked */
    CHECK_EQ(pl_fence_enter(m, PL_OP_COMPLETE), PL_ESTATE);
    pl_message_set_state(m, PL_LOCK_HELD);
    CHECK_EQ(pl_fence_enter(m, PL_OP_RENEW), PL_OK);
    CHECK_EQ(pl_message_state(m), PL_LOCK_HELD);
    CHECK_EQ(pl_fence_enter(m, PL_OP_COMPLETE), PL_OK);
    CHECK_EQ(pl_message_state(m), PL_LOCK_SETTLING);
    /* a second settle or a renew meanwhile */
    CHECK_EQ(pl_fence_enter(m, PL_OP_UNLOCK), PL_ESTATE);
    CHECK_EQ(pl_fence_enter(m, PL_OP_RENEW), PL_ESTATE);
    /* not carried out: held again */
    pl_fence_leave(m, PL_ETHROTTLED);
    CHECK_EQ(pl_message_state(m), PL_LOCK_HELD);
    /* unknown is remembered: every later settle or renew says unknown again */
    CHECK_EQ(pl_fence_enter(m, PL_OP_COMPLETE), PL_OK);
    pl_fence_leave(m, PL_EUNKNOWN);
    CHECK_EQ(pl_message_state(m), PL_LOCK_UNKNOWN);
    CHECK_EQ(pl_message_lost_reason(m), PL_EUNKNOWN);
    CHECK_EQ(pl_fence_enter(m, PL_OP_COMPLETE), PL_EUNKNOWN);
    CHECK(strstr(pl_error_last()->message, "unknown outcome") != NULL);
    CHECK_EQ(pl_fence_enter(m, PL_OP_UNLOCK), PL_EUNKNOWN);
    CHECK_EQ(pl_fence_enter(m, PL_OP_RENEW), PL_EUNKNOWN);
    /* a 404 already marked it lost, then the call was found unknown: unknown wins */
    pl_message_set_state(m, PL_LOCK_SETTLING);
    pl_message_mark_lost(m, PL_ELOCKLOST, 1);
    pl_fence_leave(m, PL_EUNKNOWN);
    CHECK_EQ(pl_message_state(m), PL_LOCK_UNKNOWN);
    /* settled and lost */
    pl_message_set_state(m, PL_LOCK_SETTLING);
    pl_fence_leave(m, PL_OK);
    CHECK_EQ(pl_message_state(m), PL_LOCK_SETTLED);
    CHECK_EQ(pl_fence_enter(m, PL_OP_COMPLETE), PL_ESTATE);
    pl_message_set_state(m, PL_LOCK_SETTLING);
    pl_fence_leave(m, PL_ELOCKLOST);
    CHECK_EQ(pl_message_state(m), PL_LOCK_LOST);
    CHECK_EQ(pl_fence_enter(m, PL_OP_COMPLETE), PL_ELOCKLOST);
    pl_message_free(m);
}

int main(void)
{
    test_retry_after();
    test_table();
    test_send_opt_in();
    test_budget();
    test_settle_uncertain();
    test_fence();
    return pl_test_done("test_outcome");
}
