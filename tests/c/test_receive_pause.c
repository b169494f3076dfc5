/*
 * Unit tests of pl_receive_pause_ms (csrc/process.c): which failed receive ends a
 * processor's run, for every code the core has, and the pause before the next
 * receive otherwise (1 s doubling per consecutive failure, at most 10 s, whatever
 * the count). Pure: links peeklock_pure alone, nothing sleeps.
 */
#include <limits.h>
#include <stdio.h>

#include "support.h"

/* The codes waiting cannot mend unless the core says the call may be retried. */
static int ends_unless_retryable(int code)
{
    switch (code) {
    case PL_EAUTH:
    case PL_ENOTFOUND:
    case PL_EINVAL:
    case PL_EBADREQUEST:
    case PL_ETOOLARGE:
    case PL_ESTATE:
    case PL_EINTERNAL: return 1;
    default: return 0;
    }
}

static void test_every_code(void)
{
    int n = pl_code_count();
    CHECK(n > 19);
    for (int i = 0; i < n; i++) {
        int code = pl_code_at(i);
        for (int retryable = 0; retryable <= 1; retryable++) {
            long want;
            if (code >= 0)
                want = 0; /* not a failure */
            else if (code == PL_ECLOSED || (!retryable && ends_unless_retryable(code)))
                want = -1;
            else
                want = PL_RECEIVE_PAUSE_BASE_MS;
            long got = pl_receive_pause_ms(code, retryable, 1);
            if (got != want) fprintf(stderr, "  %s retryable=%d\n", pl_code_name(code), retryable);
            CHECK_EQ(got, want);
        }
    }
    /* the cases the rule was written for */
    CHECK_EQ(pl_receive_pause_ms(PL_ENOTFOUND, 0, 1), -1);
    CHECK_EQ(pl_receive_pause_ms(PL_EAUTH, 0, 7), -1);
    CHECK_EQ(pl_receive_pause_ms(PL_ECLOSED, 1, 1), -1);
    CHECK_EQ(pl_receive_pause_ms(PL_EUNKNOWN, 0, 1), 1000); /* the lock expires: waiting mends it */
    CHECK_EQ(pl_receive_pause_ms(PL_ETHROTTLED, 1, 1), 1000);
    CHECK_EQ(pl_receive_pause_ms(PL_ECONNECT, 0, 1), 1000);
    CHECK_EQ(pl_receive_pause_ms(-1000, 0, 1), 1000); /* a number that is no code: waiting is safe */
    CHECK_EQ(pl_receive_pause_ms(PL_EMPTY, 0, 5), 0);
}

static void test_schedule(void)
{
    CHECK_EQ(PL_RECEIVE_PAUSE_BASE_MS, 1000);
    CHECK_EQ(PL_RECEIVE_PAUSE_MAX_MS, 10000);
    const long want[] = {1000, 1000, 2000, 4000, 8000, 10000, 10000, 10000};
    for (unsigned f = 0; f < sizeof want / sizeof want[0]; f++) {
        CHECK_EQ(pl_receive_pause_ms(PL_ESERVER, 1, f), want[f]);
        CHECK_EQ(pl_receive_pause_ms(PL_EUNKNOWN, 0, f), want[f]);
    }
    /* the count never overflows the pause */
    const unsigned big[] = {32, 33, 63, 64, 65, 1000, UINT_MAX / 2, UINT_MAX - 1, UINT_MAX};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        CHECK_EQ(pl_receive_pause_ms(PL_ETIMEOUT, 0, big[i]), PL_RECEIVE_PAUSE_MAX_MS);
}

int main(void)
{
    test_every_code();
    test_schedule();
    return pl_test_done("test_receive_pause");
}
