/*
 * Unit tests of pl_run (csrc/run.c), a processor's run bookkeeping: claims at
 * max_messages (one at a time and in batches), claims given back, idle only with
 * nothing in flight, which stop reason wins, the words, bad options. Pure: links
 * peeklock_pure alone; the time is a number the test moves, nothing sleeps.
 */
#include <math.h>

#include "support.h"

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
    CHECK_STR(pl_error_last()->message, "max_messages: must be a whole number, at least 1");
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
    pl_run_note(run, PL_RUN_RECEIVED, 1);
    pl_run_note(run, PL_RUN_RECEIVED, 1);
    CHECK_EQ(pl_run_in_flight(run), 2);
    CHECK_EQ(pl_run_claim(run, 1), 1);
    pl_run_unclaim(run, 5); /* only the one outstanding goes back, not the two kept */
    CHECK_EQ(pl_run_claim(run, 5), 1);
    CHECK_EQ(pl_run_stop_reason(run, 2), PL_RUN_GOING);
    pl_run_note(run, PL_RUN_RECEIVED, 2);
    CHECK_EQ(pl_run_stop_reason(run, 2), PL_RUN_MAX_MESSAGES); /* while two are still in flight */
    CHECK_EQ(pl_run_claim(run, 1), 0);
    pl_run_note(run, PL_RUN_FINISHED, 3);
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
    for (int i = 0; i < 3; i++) pl_run_note(run, PL_RUN_RECEIVED, 0);
    pl_run_unclaim(run, 1); /* the first batch closed with 3 of its 4 */
    CHECK_EQ(pl_run_claim(run, 4), 1);
    pl_run_free(run);
}

static void test_idle(void)
{
    pl_run *run = start(0, 1.5, 1000); /* idle 1500 ms after the start */
    CHECK_EQ(pl_run_idle_ms(run, 1000), 1500);
    CHECK_EQ(pl_run_stop_reason(run, 2499), PL_RUN_GOING);
    pl_run_note(run, PL_RUN_RECEIVED, 2000); /* one in flight: never idle, however long */
    CHECK_EQ(pl_run_idle_ms(run, 2000), -1);
    CHECK_EQ(pl_run_stop_reason(run, 100000), PL_RUN_GOING);
    CHECK_EQ(pl_run_claim(run, 1), 1); /* a receive waiting is no activity */
    pl_run_note(run, PL_RUN_FINISHED, 100000);
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
    pl_run_note(run, PL_RUN_RECEIVED, 0);
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
    pl_run_note(run, PL_RUN_RECEIVED, 0);
    pl_run_note(run, PL_RUN_FINISHED, 0);
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

int main(void)
{
    test_options();
    test_claims();
    test_batch_claims();
    test_idle();
    test_stop_reasons();
    test_words();
    return pl_test_done("test_run");
}
