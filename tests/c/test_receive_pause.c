/*
 * Unit tests of pl_receive_pause_ms (csrc/process.c): which failed receive ends a
 * processor's run, for every code the core has, and the pause before the next
 * receive otherwise (1 s doubling per consecutive failure, at most 10 s, whatever
 * the count). Pure: links peeklock_pure alone, nothing sleeps.
 */
#include <limits.h>
#include <stdio.h>

#include "support.h"

/* Every code the core has, and the rule's answer on the first failure when the
 * receive is not retryable and when it is (E: the run ends; P: pause 1 s; 0: no
 * failure). */
#define E (-1L)
#define P 1000L
static const struct {
    int code;
    long not_retryable, retryable;
} RULE[] = {
    {PL_OK, 0, 0},          {PL_EMPTY, 0, 0},     {PL_EINVAL, E, P},
    {PL_ENOMEM, P, P},      {PL_EAUTH, E, P},     {PL_ENOTFOUND, E, P},
    {PL_ELOCKLOST, P, P},   {PL_ETOOLARGE, E, P}, {PL_ETHROTTLED, P, P},
    {PL_ESERVER, P, P},     {PL_ETIMEOUT, P, P},  {PL_ECONNECT, P, P},
    {PL_EPROTOCOL, P, P},   {PL_EUNKNOWN, P, P}, /* the lock expires: waiting mends it */
    {PL_EBADREQUEST, E, P}, {PL_ECONFLICT, P, P}, {PL_ESTATE, E, P},
    {PL_ECLOSED, E, E}, /* the bindings end quietly on it */
    {PL_EHTTP, P, P},       {PL_EINTERNAL, E, P}, {PL_ECANCELED, P, P},
};
#define NRULE (sizeof RULE / sizeof RULE[0])

static void test_every_code(void)
{
    for (size_t i = 0; i < NRULE; i++) {
        CHECK_EQ(pl_receive_pause_ms(RULE[i].code, 0, 1), RULE[i].not_retryable);
        CHECK_EQ(pl_receive_pause_ms(RULE[i].code, 1, 1), RULE[i].retryable);
    }
    /* the table above has every code of the core's list */
    for (int i = 0; i < pl_code_count(); i++) {
        int code = pl_code_at(i), found = 0;
        for (size_t j = 0; j < NRULE; j++) found += RULE[j].code == code;
        if (found != 1) fprintf(stderr, "  %s: not in RULE\n", pl_code_name(code));
        CHECK_EQ(found, 1);
    }
    /* the cases the rule was written for */
    CHECK_EQ(pl_receive_pause_ms(PL_ENOTFOUND, 0, 7), -1);
    CHECK_EQ(pl_receive_pause_ms(PL_EAUTH, 0, UINT_MAX), -1);
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
