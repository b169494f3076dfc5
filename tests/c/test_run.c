/*
 * Unit tests of pl_run (csrc/run.c), a processor's run bookkeeping: claims at
 * max_messages (one at a time and in batches), claims given back, idle only with
 * nothing in flight, which stop reason wins, the words, bad options, the one rule
 * that classifies a finished message and a failed receive, and the tallies. Pure: links
 * peeklock_pure alone; the time is a number the test moves, nothing sleeps.
 */
#include <limits.h>
#include <math.h>

#include "message_int.h"
#include "outcome_int.h"
#include "support.h"
#include "wire_int.h"

static pl_run *start(long max_messages, double idle_timeout, int64_t now)
{
    pl_run_options o;
    pl_run *run = NULL;
    REQUIRE(pl_run_options_init(&o, PL_RUN_OPTIONS_VERSION) == PL_OK);
    o.max_messages = max_messages;
    o.idle_timeout = idle_timeout;
    REQUIRE(pl_run_new(&run, &o, now) == PL_OK);
    return run;
}

static void test_options(void)
{
    pl_run_options o;
    pl_run *run = (pl_run *)&o;
    CHECK_EQ(pl_run_options_init(&o, PL_RUN_OPTIONS_VERSION), PL_OK);
    CHECK_EQ(o.max_messages, 0);
    CHECK(o.idle_timeout == 0.0);
    CHECK_EQ(pl_run_options_init(&o, 99), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "version: must be PL_RUN_OPTIONS_VERSION");
    CHECK_EQ(pl_run_options_init(NULL, PL_RUN_OPTIONS_VERSION), PL_EINVAL);

    pl_run_options_init(&o, PL_RUN_OPTIONS_VERSION);
    o.max_messages = -1;
    CHECK_EQ(pl_run_new(&run, &o, 0), PL_EINVAL);
    CHECK(run == NULL);
    CHECK_STR(pl_error_last()->message, "max_messages: must be 0 (no limit) or a whole number, at least 1");
    o.max_messages = LONG_MIN;
    CHECK_EQ(pl_run_new(&run, &o, 0), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "max_messages: must be 0 (no limit) or a whole number, at least 1");
    o.max_messages = 0; /* no limit */
    REQUIRE(pl_run_new(&run, &o, 0) == PL_OK);
    pl_run_free(run);
    run = NULL;
    o.max_messages = 1;
    REQUIRE(pl_run_new(&run, &o, 0) == PL_OK);
    pl_run_free(run);
    run = NULL;
    const double bad[] = {-1.0, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        pl_run_options_init(&o, PL_RUN_OPTIONS_VERSION);
        o.idle_timeout = bad[i];
        CHECK_EQ(pl_run_new(&run, &o, 0), PL_EINVAL);
        CHECK_STR(pl_error_last()->message, "idle_timeout: must be a positive, finite number of seconds");
    }
    o.version = 2;
    o.idle_timeout = 0;
    CHECK_EQ(pl_run_new(&run, &o, 0), PL_EINVAL);
    CHECK_EQ(pl_run_new(&run, NULL, 0), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "opts: must not be NULL");
    CHECK_EQ(pl_run_new(NULL, &o, 0), PL_EINVAL);
    pl_run_free(NULL);
}

static void test_claims(void)
{
    pl_run *run = start(3, 0, 0);
    CHECK_EQ(pl_run_claim(run, 1), 1);
    CHECK_EQ(pl_run_claim(run, 1), 1);
    CHECK_EQ(pl_run_claim(run, 1), 1);
    CHECK_EQ(pl_run_claim(run, 1), 0); /* three receives under way: no fourth */
    pl_run_unclaim(run, 1);            /* one found nothing */
    CHECK_EQ(pl_run_stop_reason(run, 0), PL_RUN_GOING);
    pl_run_received(run, 1, 1);
    pl_run_received(run, 1, 1);
    CHECK_EQ(pl_run_in_flight(run), 2);
    CHECK_EQ(pl_run_claim(run, 1), 1);
    pl_run_unclaim(run, 5); /* only the one outstanding goes back, not the two kept */
    CHECK_EQ(pl_run_claim(run, 5), 1);
    CHECK_EQ(pl_run_stop_reason(run, 2), PL_RUN_GOING);
    pl_run_received(run, 1, 2);
    CHECK_EQ(pl_run_stop_reason(run, 2), PL_RUN_MAX_MESSAGES); /* while two are still in flight */
    CHECK_EQ(pl_run_claim(run, 1), 0);
    pl_run_finish(run, 0, 3);
    CHECK_EQ(pl_run_in_flight(run), 2);
    CHECK_EQ(pl_run_claim(run, 0), 0);
    CHECK_EQ(pl_run_claim(run, -4), 0);
    pl_run_free(run);

    /* no max_messages: every claim is granted */
    run = start(0, 0, 0);
    CHECK_EQ(pl_run_claim(run, 1000), 1000);
    CHECK_EQ(pl_run_claim(run, 1), 1);
    pl_run_unclaim(run, 1001);
    CHECK_EQ(pl_run_stop_reason(run, 1000000), PL_RUN_GOING);
    pl_run_free(run);
}

static void test_batch_claims(void)
{
    pl_run *run = start(10, 0, 0);
    CHECK_EQ(pl_run_claim(run, 4), 4); /* a batch of 4 */
    CHECK_EQ(pl_run_claim(run, 4), 4); /* another */
    CHECK_EQ(pl_run_claim(run, 4), 2); /* what is left of 10 */
    CHECK_EQ(pl_run_claim(run, 4), 0);
    for (int i = 0; i < 3; i++) pl_run_received(run, 1, 0);
    pl_run_unclaim(run, 1); /* the first batch closed with 3 of its 4 */
    CHECK_EQ(pl_run_claim(run, 4), 1);
    pl_run_free(run);
}

static void test_idle(void)
{
    pl_run *run = start(0, 1.5, 1000); /* idle 1500 ms after the start */
    CHECK_EQ(pl_run_idle_ms(run, 1000), 1500);
    CHECK_EQ(pl_run_stop_reason(run, 2499), PL_RUN_GOING);
    pl_run_received(run, 1, 2000); /* one in flight: never idle, however long */
    CHECK_EQ(pl_run_idle_ms(run, 2000), -1);
    CHECK_EQ(pl_run_stop_reason(run, 100000), PL_RUN_GOING);
    CHECK_EQ(pl_run_claim(run, 1), 1); /* a receive waiting is no activity */
    pl_run_finish(run, 0, 100000);
    CHECK_EQ(pl_run_idle_ms(run, 100000), 1500);
    CHECK_EQ(pl_run_idle_ms(run, 101000), 500);
    CHECK_EQ(pl_run_stop_reason(run, 101499), PL_RUN_GOING);
    CHECK_EQ(pl_run_stop_reason(run, 101500), PL_RUN_IDLE);
    CHECK_EQ(pl_run_claim(run, 1), 0); /* idle: nothing more is received */
    CHECK_EQ(pl_run_stop_reason(run, 101500), PL_RUN_IDLE);
    pl_run_free(run);

    /* no idle_timeout: never idle; a fraction of a millisecond rounds up */
    run = start(0, 0, 0);
    CHECK_EQ(pl_run_idle_ms(run, INT64_MAX / 2), -1);
    pl_run_free(run);
    run = start(0, 0.0001, 0);
    CHECK_EQ(pl_run_idle_ms(run, 0), 1);
    CHECK_EQ(pl_run_stop_reason(run, 1), PL_RUN_IDLE);
    pl_run_free(run);
    run = start(0, 1e300, 0);
    CHECK_EQ(pl_run_idle_ms(run, 0), INT64_MAX);
    pl_run_free(run);

    /* the times at the ends of int64_t: no overflow (UBSan checks) */
    run = start(0, 1.5, INT64_MIN);
    CHECK_EQ(pl_run_idle_ms(run, INT64_MAX), 0); /* the span saturates: idle */
    CHECK_EQ(pl_run_idle_ms(run, INT64_MIN + 1000), 500);
    CHECK_EQ(pl_run_stop_reason(run, INT64_MAX), PL_RUN_IDLE);
    pl_run_free(run);
    run = start(0, 1.5, INT64_MAX);
    CHECK_EQ(pl_run_idle_ms(run, INT64_MIN), 1500); /* a clock gone back: no time passed */
    CHECK_EQ(pl_run_idle_ms(run, INT64_MAX), 1500);
    CHECK_EQ(pl_run_stop_reason(run, INT64_MIN), PL_RUN_GOING);
    pl_run_free(run);
    run = start(0, 1e300, -1);
    CHECK_EQ(pl_run_idle_ms(run, INT64_MAX), 0); /* INT64_MAX ms idle_timeout, INT64_MAX + 1 ms passed */
    pl_run_free(run);
}

static void test_stop_reasons(void)
{
    /* the first cause wins */
    pl_run *run = start(0, 0, 0);
    CHECK_EQ(pl_run_stop(run, PL_RUN_GOING, 0), PL_RUN_GOING); /* only asks */
    CHECK_EQ(pl_run_stop(run, PL_RUN_SIGNAL, 0), PL_RUN_SIGNAL);
    CHECK_EQ(pl_run_stop(run, PL_RUN_STOP_EVENT, 0), PL_RUN_SIGNAL);
    CHECK_EQ(pl_run_stop(run, PL_RUN_STOPPED, 0), PL_RUN_SIGNAL);
    CHECK_EQ(pl_run_claim(run, 1), 0); /* stopping: nothing more is received */
    /* an error replaces any reason: the run ends with it */
    CHECK_EQ(pl_run_stop(run, PL_RUN_ERROR, 0), PL_RUN_ERROR);
    CHECK_EQ(pl_run_stop(run, PL_RUN_CLOSED, 0), PL_RUN_ERROR);
    CHECK_EQ(pl_run_stop(run, 8, 0), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "reason: must be a PL_RUN_* reason");
    CHECK_EQ(pl_run_stop(run, -1, 0), PL_EINVAL);
    CHECK_EQ(pl_run_stop(NULL, PL_RUN_STOPPED, 0), PL_EINVAL);
    pl_run_free(run);

    /* a limit met before a stop counts first */
    run = start(1, 0, 0);
    CHECK_EQ(pl_run_claim(run, 1), 1);
    pl_run_received(run, 1, 0);
    CHECK_EQ(pl_run_stop(run, PL_RUN_STOP_EVENT, 0), PL_RUN_MAX_MESSAGES);
    CHECK_EQ(pl_run_stop(run, PL_RUN_ERROR, 0), PL_RUN_ERROR);
    pl_run_free(run);
    run = start(0, 2, 0);
    CHECK_EQ(pl_run_stop(run, PL_RUN_STOPPED, 2000), PL_RUN_IDLE);
    pl_run_free(run);
    run = start(0, 2, 0);
    CHECK_EQ(pl_run_stop(run, PL_RUN_CLOSED, 1999), PL_RUN_CLOSED);
    CHECK_EQ(pl_run_stop_reason(run, 5000), PL_RUN_CLOSED);
    pl_run_free(run);
    /* max_messages reached and idle at once: max_messages */
    run = start(1, 1, 0);
    pl_run_received(run, 1, 0);
    pl_run_finish(run, 0, 0);
    CHECK_EQ(pl_run_stop_reason(run, 5000), PL_RUN_MAX_MESSAGES);
    pl_run_free(run);
}

static void test_words(void)
{
    CHECK_STR(pl_run_stop_word(PL_RUN_GOING), "");
    CHECK_STR(pl_run_stop_word(PL_RUN_SIGNAL), "signal");
    CHECK_STR(pl_run_stop_word(PL_RUN_STOP_EVENT), "stop_event");
    CHECK_STR(pl_run_stop_word(PL_RUN_MAX_MESSAGES), "max_messages");
    CHECK_STR(pl_run_stop_word(PL_RUN_IDLE), "idle");
    CHECK_STR(pl_run_stop_word(PL_RUN_ERROR), "error");
    CHECK_STR(pl_run_stop_word(PL_RUN_CLOSED), "closed");
    CHECK_STR(pl_run_stop_word(PL_RUN_STOPPED), "stopped");
    CHECK(pl_run_stop_word(8) == NULL);
    CHECK(pl_run_stop_word(-1) == NULL);
}

static pl_run_tallies tallies(const pl_run *run)
{
    pl_run_tallies t = PL_RUN_TALLIES_INIT;
    REQUIRE(pl_run_tallies_get(run, &t) == PL_OK);
    return t;
}

/* Each outcome of the one rule, and which flag wins when several apply. */
static void test_outcomes(void)
{
    static const struct {
        unsigned int how;
        int outcome;
    } rule[] = {
        {0, PL_RUN_PROCESSED},
        {PL_RUN_F_BY_HANDLER, PL_RUN_SETTLED_BY_HANDLER},
        {PL_RUN_F_HANDLER_FAILED, PL_RUN_FAILED},
        {PL_RUN_F_HANDLER_FAILED | PL_RUN_F_LOST, PL_RUN_LOST},
        {PL_RUN_F_HANDLER_FAILED | PL_RUN_F_BY_HANDLER, PL_RUN_SETTLED_BY_HANDLER},
        {PL_RUN_F_LOST, PL_RUN_LOST},
        {PL_RUN_F_UNKNOWN, PL_RUN_UNKNOWN},
        {PL_RUN_F_SETTLE_ERROR, PL_RUN_FAILED},
        {PL_RUN_F_COMPLETED, PL_RUN_PROCESSED},
        {PL_RUN_F_COMPLETED | PL_RUN_F_HANDLER_FAILED, PL_RUN_PROCESSED},
        {PL_RUN_F_ABANDONED, PL_RUN_FAILED},
        {PL_RUN_F_ABANDONED | PL_RUN_F_BY_HANDLER, PL_RUN_FAILED},
        {PL_RUN_F_COMPLETED | PL_RUN_F_LOST, PL_RUN_LOST},
        {PL_RUN_F_DRAINED, PL_RUN_ABANDONED_ON_DRAIN},
        {PL_RUN_F_DRAINED | PL_RUN_F_LOST, PL_RUN_ABANDONED_ON_DRAIN},
        {PL_RUN_F_EXPIRED, PL_RUN_LEFT_TO_EXPIRE},
    };
    for (size_t i = 0; i < sizeof rule / sizeof rule[0]; i++) {
        pl_run *run = start(0, 0, 0);
        pl_run_received(run, 1, 0);
        CHECK_EQ(pl_run_finish(run, rule[i].how, 0), rule[i].outcome);
        pl_run_tallies t = tallies(run);
        uint64_t *field[] = {NULL,    &t.processed, &t.settled_by_handler, &t.failed,
                             &t.lost, &t.unknown,   &t.abandoned_on_drain, &t.left_to_expire};
        uint64_t sum = t.processed + t.settled_by_handler + t.failed + t.lost + t.unknown +
                       t.abandoned_on_drain + t.left_to_expire;
        CHECK_EQ(*field[rule[i].outcome], 1);
        CHECK_EQ(sum, 1); /* counted once, in one field */
        CHECK_EQ(t.in_flight, 0);
        /* a settle that failed is an error too */
        CHECK_EQ(t.errors, (rule[i].how & (PL_RUN_F_UNKNOWN | PL_RUN_F_SETTLE_ERROR)) ? 1 : 0);
        pl_run_free(run);
    }
    CHECK_EQ(pl_run_finish(NULL, 0, 0), 0);
}

/* pl_run_how: what a driver saw -> the flags, then the outcome pl_run_finish gives. */
static void test_how(void)
{
    enum { F = PL_RUN_F_HANDLER_FAILED };
    static const struct {
        int before, failed, settle_rc, now;
        unsigned int how;
        int outcome;
    } rule[] = {
        /* returned, the exit completed it */
        {PL_LOCK_HELD, 0, 0, PL_LOCK_SETTLED, 0, PL_RUN_PROCESSED},
        /* raised, the exit abandoned it */
        {PL_LOCK_HELD, 1, 0, PL_LOCK_SETTLED, F, PL_RUN_FAILED},
        /* the handler settled it, released it (Lua: freed, handed over) */
        {PL_LOCK_SETTLED, 0, 0, PL_LOCK_SETTLED, PL_RUN_F_BY_HANDLER, PL_RUN_SETTLED_BY_HANDLER},
        {-1, 0, 0, -1, PL_RUN_F_BY_HANDLER, PL_RUN_SETTLED_BY_HANDLER},
        /* settled, then raised: the handler's settle stands */
        {PL_LOCK_SETTLED, 1, 0, PL_LOCK_SETTLED, PL_RUN_F_BY_HANDLER | F, PL_RUN_SETTLED_BY_HANDLER},
        {-1, 1, 0, -1, PL_RUN_F_BY_HANDLER | F, PL_RUN_SETTLED_BY_HANDLER},
        /* lost or unknown by the time the handler ended */
        {PL_LOCK_LOST, 0, 0, PL_LOCK_LOST, PL_RUN_F_LOST, PL_RUN_LOST},
        {PL_LOCK_LOST, 1, 0, PL_LOCK_LOST, PL_RUN_F_LOST | F, PL_RUN_LOST},
        {PL_LOCK_UNKNOWN, 0, 0, PL_LOCK_UNKNOWN, PL_RUN_F_UNKNOWN, PL_RUN_UNKNOWN},
        {PL_LOCK_UNKNOWN, 1, 0, PL_LOCK_UNKNOWN, PL_RUN_F_UNKNOWN | F, PL_RUN_UNKNOWN},
        /* the exit's complete failed */
        {PL_LOCK_HELD, 0, PL_ELOCKLOST, PL_LOCK_LOST, PL_RUN_F_LOST, PL_RUN_LOST},
        {PL_LOCK_HELD, 0, PL_EUNKNOWN, PL_LOCK_UNKNOWN, PL_RUN_F_UNKNOWN, PL_RUN_UNKNOWN},
        {PL_LOCK_HELD, 0, PL_ETHROTTLED, PL_LOCK_HELD, PL_RUN_F_SETTLE_ERROR, PL_RUN_FAILED},
        /* raised, and the exit's abandon found the lock lost: lost, not failed */
        {PL_LOCK_HELD, 1, 0, PL_LOCK_LOST, PL_RUN_F_LOST | F, PL_RUN_LOST},
        {PL_LOCK_HELD, 1, PL_ELOCKLOST, PL_LOCK_LOST, PL_RUN_F_LOST | F, PL_RUN_LOST},
        {PL_LOCK_HELD, 1, PL_ETHROTTLED, PL_LOCK_HELD, PL_RUN_F_SETTLE_ERROR | F, PL_RUN_FAILED},
    };
    for (size_t i = 0; i < sizeof rule / sizeof rule[0]; i++) {
        unsigned int how = pl_run_how(rule[i].before, rule[i].failed, rule[i].settle_rc, rule[i].now);
        CHECK_EQ(how, rule[i].how);
        pl_run *run = start(0, 0, 0);
        pl_run_received(run, 1, 0);
        CHECK_EQ(pl_run_finish(run, how, 0), rule[i].outcome);
        pl_run_free(run);
    }
}

/* pl_run_given_back: a message's state once its abandon ran -> the flags. */
static void test_given_back(void)
{
    static const struct {
        int op, rc; /* the settle that ran (0: none) and its result */
        unsigned int how;
    } rule[] = {
        {PL_OP_UNLOCK, PL_OK, PL_RUN_F_DRAINED},              /* abandoned */
        {PL_OP_COMPLETE, PL_OK, PL_RUN_F_BY_HANDLER},         /* its handler completed it first */
        {PL_OP_UNLOCK, PL_ELOCKLOST, PL_RUN_F_LOST},          /* the lock was lost meanwhile */
        {PL_OP_UNLOCK, PL_EUNKNOWN, PL_RUN_F_UNKNOWN},        /* the abandon's outcome unknown */
        {PL_OP_UNLOCK, PL_ETHROTTLED, PL_RUN_F_SETTLE_ERROR}, /* failed: still held */
        {0, 0, PL_RUN_F_SETTLE_ERROR},
    };
    for (size_t i = 0; i < sizeof rule / sizeof rule[0]; i++) {
        pl_message *m = pl_message_alloc();
        REQUIRE(m);
        pl_message_set_state(m, PL_LOCK_HELD);
        if (rule[i].op) {
            CHECK_EQ(pl_fence_enter(m, rule[i].op), PL_OK);
            pl_fence_leave(m, rule[i].rc);
        }
        CHECK_EQ(pl_run_given_back(m), rule[i].how);
        pl_message_free(m);
    }
    /* the abandon still under way */
    pl_message *m = pl_message_alloc();
    REQUIRE(m);
    pl_message_set_state(m, PL_LOCK_SETTLING);
    CHECK_EQ(pl_run_given_back(m), PL_RUN_F_DRAINED);
    pl_message_free(m);
    CHECK_EQ(pl_run_given_back(NULL), PL_RUN_F_DRAINED);
}

/* A run with a processed, a handler-settled, an abandoned and a redelivered
 * message (the one every processor's test runs), then what a drain counts. */
static void test_tallies(void)
{
    pl_run *run = start(0, 0, 0);
    pl_run_tallies t = tallies(run);
    CHECK_EQ(t.version, PL_RUN_TALLIES_VERSION);
    CHECK_EQ(t.received + t.errors + t.in_flight, 0);
    pl_run_received(run, 1, 1);
    pl_run_received(run, 1, 1);
    pl_run_received(run, 1, 1);
    CHECK_EQ(tallies(run).in_flight, 3);
    CHECK_EQ(pl_run_finish(run, 0, 2), PL_RUN_PROCESSED);
    CHECK_EQ(pl_run_finish(run, PL_RUN_F_BY_HANDLER, 2), PL_RUN_SETTLED_BY_HANDLER);
    CHECK_EQ(pl_run_finish(run, PL_RUN_F_HANDLER_FAILED, 2), PL_RUN_FAILED);
    pl_run_received(run, 2, 3); /* the abandoned one, delivered again */
    CHECK_EQ(pl_run_finish(run, 0, 4), PL_RUN_PROCESSED);
    t = tallies(run);
    CHECK_EQ(t.received, 4);
    CHECK_EQ(t.redelivered, 1);
    CHECK_EQ(t.processed, 2);
    CHECK_EQ(t.settled_by_handler, 1);
    CHECK_EQ(t.failed, 1);
    CHECK_EQ(t.lost + t.unknown + t.abandoned_on_drain + t.left_to_expire + t.errors, 0);
    CHECK_EQ(t.in_flight, 0);

    /* left to expire, then the handler finished and completed it after all */
    pl_run_received(run, 1, 5);
    CHECK_EQ(pl_run_finish(run, PL_RUN_F_EXPIRED, 5), PL_RUN_LEFT_TO_EXPIRE);
    CHECK_EQ(tallies(run).left_to_expire, 1);
    CHECK_EQ(pl_run_finish(run, PL_RUN_F_LATE, 6), PL_RUN_PROCESSED);
    t = tallies(run);
    CHECK_EQ(t.left_to_expire, 0);
    CHECK_EQ(t.processed, 3);
    CHECK_EQ(t.in_flight, 0);
    /* ... or failed: it stays left to expire */
    pl_run_received(run, 1, 7);
    pl_run_finish(run, PL_RUN_F_EXPIRED, 7);
    CHECK_EQ(pl_run_finish(run, PL_RUN_F_LATE | PL_RUN_F_HANDLER_FAILED, 8), PL_RUN_FAILED);
    t = tallies(run);
    CHECK_EQ(t.left_to_expire, 1);
    CHECK_EQ(t.failed, 1);
    pl_run_error(run);
    CHECK_EQ(tallies(run).errors, 1);
    pl_run_error(NULL);
    pl_run_received(NULL, 2, 0);

    t.version = 2;
    CHECK_EQ(pl_run_tallies_get(run, &t), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "version: must be PL_RUN_TALLIES_VERSION");
    CHECK_EQ(pl_run_tallies_get(run, NULL), PL_EINVAL);
    t = tallies(NULL); /* no run: nothing counted */
    CHECK_EQ(t.received, 0);
    CHECK_EQ(t.version, PL_RUN_TALLIES_VERSION);
    pl_run_free(run);
}

/* A failed receive: paused, the run ended by an error, or closed quietly. */
static void test_receive_failed(void)
{
    pl_run *run = start(0, 0, 0);
    CHECK_EQ(pl_run_receive_failed(run, PL_ETIMEOUT, 1, 1, 0), PL_RECEIVE_PAUSE_BASE_MS);
    CHECK_EQ(pl_run_receive_failed(run, PL_ETIMEOUT, 1, 2, 0), 2 * PL_RECEIVE_PAUSE_BASE_MS);
    CHECK_EQ(pl_run_stop_reason(run, 0), PL_RUN_GOING);
    CHECK_EQ(tallies(run).errors, 2);
    CHECK_EQ(pl_run_receive_failed(run, PL_ENOTFOUND, 0, 1, 0), -1);
    CHECK_EQ(pl_run_stop_reason(run, 0), PL_RUN_ERROR);
    CHECK_EQ(tallies(run).errors, 3);
    pl_run_free(run);

    /* a client closed under the run: it stops as "closed", no error */
    run = start(0, 0, 0);
    CHECK_EQ(pl_run_receive_failed(run, PL_ECLOSED, 0, 1, 0), -1);
    CHECK_EQ(pl_run_stop_reason(run, 0), PL_RUN_CLOSED);
    CHECK_STR(pl_run_stop_word(pl_run_stop(run, PL_RUN_STOPPED, 0)), "closed");
    CHECK_EQ(tallies(run).errors, 0);
    CHECK_EQ(pl_run_claim(run, 1), 0);
    pl_run_free(run);
    CHECK_EQ(pl_run_receive_failed(NULL, PL_ETIMEOUT, 1, 1, 0), -1);
}

int main(void)
{
    test_options();
    test_claims();
    test_batch_claims();
    test_idle();
    test_stop_reasons();
    test_words();
    test_outcomes();
    test_how();
    test_given_back();
    test_tallies();
    test_receive_failed();
    return pl_test_done("test_run");
}
