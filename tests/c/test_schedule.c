/*
 * Unit tests of the renewal schedule (csrc/schedule.c). Pure: the clock is a
 * variable passed in, nothing sleeps, nothing touches the network.
 */
#include "schedule_int.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

static pl_sched_config cfg_nojitter(void)
{
    pl_sched_config c;
    memset(&c, 0, sizeof(c));
    c.margin_floor_ms = 1000;
    c.jitter = 0.0;
    c.seed = 42;
    return c;
}

/* Heap invariant: every parent due <= its children, indices consistent. */
static int heap_ok(const pl_sched *s)
{
    for (size_t i = 0; i < s->len; i++) {
        if (s->heap[i]->heap_index != i) return 0;
        if (i > 0 && s->heap[(i - 1) / 2]->due_ms > s->heap[i]->due_ms) return 0;
    }
    return 1;
}

static void test_defaults(void)
{
    pl_sched_config c;
    memset(&c, 0, sizeof(c));
    c.jitter = -1.0;
    pl_sched_config_defaults(&c);
    CHECK_EQ(c.margin_floor_ms, 1000);
    CHECK(fabs(c.jitter - 0.1) < 1e-12);
    CHECK_EQ(c.retry_base_ms, 100);
    CHECK_EQ(c.retry_max_ms, 5000);
    CHECK(c.min_window_ms > 0);
}

static void test_half_remaining_rule(void)
{
    pl_sched s;
    pl_sched_config c = cfg_nojitter();
    pl_sched_init(&s, &c);
    int64_t now = 1000000;
    /* 30 s lock: expiry - margin = +29 s, half the remaining = +15 s -> +15 s. */
    CHECK_EQ(pl_sched_due_for(&s, now, now + 30000, INT64_MAX), now + 15000);
    /* 2 s lock: +1 s either way. */
    CHECK_EQ(pl_sched_due_for(&s, now, now + 2000, INT64_MAX), now + 1000);
    /* 1.5 s lock: expiry - margin (+0.5 s) is earlier than half (+0.75 s). */
    CHECK_EQ(pl_sched_due_for(&s, now, now + 1500, INT64_MAX), now + 500);
    /* Less lock time than the margin: renew at once. */
    CHECK_EQ(pl_sched_due_for(&s, now, now + 800, INT64_MAX), now);
    /* Already expired on our clock: at once (the server decides). */
    CHECK_EQ(pl_sched_due_for(&s, now, now - 5, INT64_MAX), now);
    /* A cap before the due time moves the wake-up to the cap. */
    CHECK_EQ(pl_sched_due_for(&s, now, now + 30000, now + 4000), now + 4000);
    /* A cap already passed: at once. */
    CHECK_EQ(pl_sched_due_for(&s, now, now + 30000, now - 1), now);
    pl_sched_destroy(&s);
}

static void test_margin_follows_rtt(void)
{
    pl_sched s;
    pl_sched_config c = cfg_nojitter();
    pl_sched_init(&s, &c);
    CHECK(pl_sched_rtt_p99_ms(&s) == 0.0);
    CHECK(pl_sched_margin_ms(&s) == 1000.0);
    for (int i = 0; i < 200; i++)
        pl_sched_observe_rtt(&s, i == 100 ? 900.0 : (i == 150 ? 950.0 : 100.0 + i % 7));
    /* 200 samples: the 198th smallest is the p99 -> the 900 ms sample. */
    CHECK(fabs(pl_sched_rtt_p99_ms(&s) - 900.0) < 1e-3);
    CHECK(fabs(pl_sched_margin_ms(&s) - 1900.0) < 1e-3);
    int64_t now = 0;
    /* 3 s lock: expiry - 1.9 s = +1.1 s, earlier than half (+1.5 s). */
    CHECK_EQ(pl_sched_due_for(&s, now, 3000, INT64_MAX), 1100);
    /* Slow samples above the p99 widen the margin at once (no waiting for the
     * periodic re-sort): 203 samples, the 201st smallest is 2500. */
    for (int i = 0; i < 3; i++) pl_sched_observe_rtt(&s, 2500.0);
    CHECK(fabs(pl_sched_rtt_p99_ms(&s) - 2500.0) < 1e-3);
    /* Old samples leave the window: after 256 fast ones the margin shrinks back. */
    for (int i = 0; i < 256 + 16; i++) pl_sched_observe_rtt(&s, 5.0);
    CHECK(fabs(pl_sched_rtt_p99_ms(&s) - 5.0) < 1e-3);
    /* Garbage in: negative and NaN count as 0. */
    pl_sched_observe_rtt(&s, -3.0);
    pl_sched_observe_rtt(&s, NAN);
    CHECK(pl_sched_rtt_p99_ms(&s) >= 0.0);
    pl_sched_destroy(&s);
}

/* Which renew round trips count: answered (any status) or timed out, never one that
 * did not get through. */
static void test_note_answer(void)
{
    pl_sched s;
    pl_sched_config c = cfg_nojitter();
    pl_sched_init(&s, &c);
    pl_sched_note_answer(&s, 4000.0, 0, 0); /* connect or send failed: says nothing */
    CHECK(pl_sched_rtt_p99_ms(&s) == 0.0);
    pl_sched_note_answer(&s, 300.0, 1, 0); /* an answer, whatever its status */
    CHECK(fabs(pl_sched_rtt_p99_ms(&s) - 300.0) < 1e-3);
    pl_sched_note_answer(&s, 2000.0, 0, 1); /* no answer in time: a slow server */
    CHECK(fabs(pl_sched_rtt_p99_ms(&s) - 2000.0) < 1e-3);
    pl_sched_destroy(&s);
}

static void test_heap_order_and_remove(void)
{
    enum { N = 2000 };
    pl_sched s;
    pl_sched_config c = cfg_nojitter();
    pl_sched_init(&s, &c);
    pl_sched_entry *e = calloc(N, sizeof(*e));
    uint64_t x = 12345;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        int64_t expiry = 10000 + (int64_t)((x >> 33) % 100000);
        CHECK_EQ(pl_sched_add(&s, &e[i], 0, expiry, 60000, INT64_MAX), 0);
    }
    CHECK(heap_ok(&s));
    CHECK_EQ(pl_sched_count(&s), N);
    /* Remove every third entry, twice (idempotent). */
    for (int i = 0; i < N; i += 3) {
        pl_sched_remove(&s, &e[i]);
        pl_sched_remove(&s, &e[i]);
        CHECK_EQ(e[i].heap_index, PL_SCHED_NOT_QUEUED);
    }
    CHECK(heap_ok(&s));
    size_t expected = N - (N + 2) / 3;
    CHECK_EQ(pl_sched_count(&s), expected);
    /* Nothing is due before the earliest due time. */
    int64_t first = pl_sched_next_due(&s);
    pl_sched_entry *out = NULL;
    CHECK_EQ(pl_sched_pop_due(&s, first - 1, &out), PL_SCHED_NONE);
    CHECK(out == NULL);
    /* Pops come out in due order, and only removed entries are missing. */
    int64_t last = INT64_MIN;
    size_t popped = 0;
    while (pl_sched_pop_due(&s, INT64_MAX - 1, &out) == PL_SCHED_RENEW) {
        CHECK(out->due_ms >= last);
        last = out->due_ms;
        CHECK(((out - e) % 3) != 0);
        CHECK_EQ(out->heap_index, PL_SCHED_NOT_QUEUED);
        popped++;
    }
    CHECK_EQ(popped, expected);
    CHECK_EQ(pl_sched_next_due(&s), INT64_MAX);
    pl_sched_destroy(&s);
    free(e);
}

static void test_jitter_spreads_and_is_deterministic(void)
{
    enum { N = 1000 };
    pl_sched_config c = cfg_nojitter();
    c.jitter = 0.1;
    pl_sched a, b;
    pl_sched_init(&a, &c);
    pl_sched_init(&b, &c);
    int64_t now = 500, expiry = now + 30000; /* unjittered due: now + 15000 */
    int64_t lo = INT64_MAX, hi = INT64_MIN;
    int distinct = 0;
    static int seen[1501];
    memset(seen, 0, sizeof(seen));
    for (int i = 0; i < N; i++) {
        int64_t da = pl_sched_due_for(&a, now, expiry, INT64_MAX);
        int64_t db = pl_sched_due_for(&b, now, expiry, INT64_MAX);
        CHECK_EQ(da, db); /* same seed, same schedule */
        CHECK(da <= now + 15000);
        CHECK(da >= now + 15000 - 1500);
        if (da < lo) lo = da;
        if (da > hi) hi = da;
        int64_t k = now + 15000 - da;
        if (k >= 0 && k <= 1500 && !seen[k]++) distinct++;
    }
    /* Locks taken together spread over (almost) the whole jitter window. */
    CHECK(hi - lo > 1300);
    CHECK(distinct > 400);
    /* A different seed gives a different sequence. */
    c.seed = 43;
    pl_sched d;
    pl_sched_init(&d, &c);
    pl_sched_init(&a, &(pl_sched_config){.margin_floor_ms = 1000, .jitter = 0.1, .seed = 42});
    int differ = 0;
    for (int i = 0; i < 20; i++)
        differ +=
            pl_sched_due_for(&a, now, expiry, INT64_MAX) != pl_sched_due_for(&d, now, expiry, INT64_MAX);
    CHECK(differ > 10);
    pl_sched_destroy(&a);
    pl_sched_destroy(&b);
    pl_sched_destroy(&d);

    /* First renewal after add: spread over up to half the wait (5 x jitter, at
     * most 0.5), so a batch of locks taken together gets distinct phases. */
    pl_sched_config f = cfg_nojitter();
    f.jitter = 0.1;
    f.first_jitter = -1.0;
    pl_sched_config_defaults(&f);
    CHECK(fabs(f.first_jitter - 0.5) < 1e-12);
    pl_sched fs;
    pl_sched_init(&fs, &f);
    pl_sched_entry *es = calloc(N, sizeof(*es));
    lo = INT64_MAX;
    hi = INT64_MIN;
    for (int i = 0; i < N; i++) {
        CHECK_EQ(pl_sched_add(&fs, &es[i], now, expiry, 30000, INT64_MAX), 0);
        CHECK(es[i].due_ms <= now + 15000 && es[i].due_ms >= now + 7500);
        if (es[i].due_ms < lo) lo = es[i].due_ms;
        if (es[i].due_ms > hi) hi = es[i].due_ms;
    }
    CHECK(hi - lo > 7000);
    /* later renewals use the ordinary jitter */
    pl_sched_entry *out;
    CHECK_EQ(pl_sched_pop_due(&fs, hi, &out), PL_SCHED_RENEW);
    CHECK_EQ(pl_sched_renewed(&fs, out, hi, hi + 30000), 0);
    CHECK(out->due_ms <= hi + 15000 && out->due_ms >= hi + 15000 - 1500);
    /* jitter 0 means no first-renewal jitter either */
    f = cfg_nojitter();
    f.first_jitter = -1.0;
    pl_sched_config_defaults(&f);
    CHECK(f.first_jitter == 0.0);
    pl_sched_destroy(&fs);
    free(es);
}

/* Simulated renewer: each due renewal takes rtt_ms and succeeds; the new expiry is
 * the send time + lock duration (the client rule). Returns the number of renewals
 * and the number of times a lock expired before its renewal was sent. */
static void simulate(int n, int64_t lock_ms, int64_t rtt_ms, int64_t run_ms, double jitter, long *renewals,
                     long *expired, int64_t *min_slack)
{
    pl_sched s;
    pl_sched_config c = cfg_nojitter();
    c.jitter = jitter;
    pl_sched_init(&s, &c);
    pl_sched_entry *e = calloc((size_t)n, sizeof(*e));
    int64_t now = 0;
    for (int i = 0; i < n; i++) {
        /* locks taken over the first second */
        int64_t t = (int64_t)i * 1000 / n;
        CHECK_EQ(pl_sched_add(&s, &e[i], t, t + lock_ms, lock_ms, INT64_MAX), 0);
    }
    *renewals = 0;
    *expired = 0;
    *min_slack = INT64_MAX;
    while ((now = pl_sched_next_due(&s)) <= run_ms) {
        pl_sched_entry *out;
        int act = pl_sched_pop_due(&s, now, &out);
        CHECK_EQ(act, PL_SCHED_RENEW);
        if (act != PL_SCHED_RENEW) break;
        int64_t slack = out->expiry_ms - (now + rtt_ms);
        if (slack < *min_slack) *min_slack = slack;
        if (now >= out->expiry_ms) (*expired)++;
        pl_sched_observe_rtt(&s, (double)rtt_ms);
        CHECK_EQ(pl_sched_renewed(&s, out, now + rtt_ms, now + lock_ms), 0);
        (*renewals)++;
    }
    pl_sched_destroy(&s);
    free(e);
}

static void test_simulated_many_locks(void)
{
    long renewals, expired;
    int64_t min_slack;
    /* 10,000 locks of 30 s for 90 s with 20 ms round trips: renewed at about half
     * life, so about 10,000 * 90 / 15 renewals; none expires. */
    simulate(10000, 30000, 20, 90000, 0.1, &renewals, &expired, &min_slack);
    CHECK_EQ(expired, 0);
    CHECK(renewals >= 10000L * 5 && renewals <= 10000L * 7);
    CHECK(min_slack >= 13000);
    /* 5 s locks, slow 400 ms round trips: still no expiry. */
    simulate(1000, 5000, 400, 30000, 0.1, &renewals, &expired, &min_slack);
    CHECK_EQ(expired, 0);
    CHECK(min_slack > 1000);
}

static void test_cap(void)
{
    pl_sched s;
    pl_sched_config c = cfg_nojitter();
    pl_sched_init(&s, &c);
    pl_sched_entry e;
    int64_t lock = 5000, start = 100, cap = start + 12000;
    CHECK_EQ(pl_sched_add(&s, &e, start, start + lock, lock, cap), 0);
    int renews = 0, caps = 0;
    int64_t now;
    while ((now = pl_sched_next_due(&s)) != INT64_MAX) {
        pl_sched_entry *out;
        int act = pl_sched_pop_due(&s, now, &out);
        CHECK(out == &e);
        if (act == PL_SCHED_CAP) {
            caps++;
            CHECK_EQ(now, cap); /* stops exactly at the cap */
            break;
        }
        CHECK_EQ(act, PL_SCHED_RENEW);
        CHECK(now < cap);
        renews++;
        pl_sched_renewed(&s, &e, now, now + lock);
    }
    /* renewals at +2.5, +5, +7.5, +10 s; then the cap at +12 s */
    CHECK_EQ(renews, 4);
    CHECK_EQ(caps, 1);
    CHECK_EQ(pl_sched_count(&s), 0);
    /* Cap already reached when added: CAP at once. */
    CHECK_EQ(pl_sched_add(&s, &e, 1000, 6000, 5000, 1000), 0);
    pl_sched_entry *out;
    CHECK_EQ(pl_sched_pop_due(&s, 1000, &out), PL_SCHED_CAP);
    pl_sched_destroy(&s);
}

static void test_retry_until_time_runs_out(void)
{
    pl_sched s;
    pl_sched_config c = cfg_nojitter();
    c.retry_base_ms = 100;
    c.retry_max_ms = 1000;
    c.min_window_ms = 20;
    pl_sched_init(&s, &c);
    pl_sched_entry e;
    int64_t lock = 5000;
    CHECK_EQ(pl_sched_add(&s, &e, 0, lock, lock, INT64_MAX), 0);
    int64_t now = pl_sched_next_due(&s);
    CHECK_EQ(now, 2500);
    pl_sched_entry *out;
    CHECK_EQ(pl_sched_pop_due(&s, now, &out), PL_SCHED_RENEW);
    /* Every attempt fails (503 forever). */
    int attempts = 1, outcome;
    int64_t prev_delay = 0;
    while ((outcome = pl_sched_failed(&s, &e, now, 0)) == PL_SCHED_RETRY) {
        int64_t due = pl_sched_next_due(&s);
        int64_t delay = due - now;
        int64_t remaining = e.expiry_ms - now;
        CHECK(delay >= 0);
        CHECK(delay <= remaining / 2); /* never later than half the remaining time */
        CHECK(due < e.expiry_ms);      /* each retry goes out while the lock holds */
        if (attempts <= 3)             /* exponential backoff at first, with jitter */
            CHECK(delay >= 50L << (attempts - 1) && delay <= 100L << (attempts - 1));
        prev_delay = delay;
        now = due;
        CHECK_EQ(pl_sched_pop_due(&s, now, &out), PL_SCHED_RENEW);
        attempts++;
        CHECK(attempts < 100);
        if (attempts >= 100) break;
    }
    (void)prev_delay;
    CHECK_EQ(outcome, PL_SCHED_GIVE_UP);
    CHECK(now < lock);      /* gave up before the lock expired ... */
    CHECK(lock - now < 20); /* ... when less than the minimum window remained */
    CHECK(attempts > 5);
    CHECK_EQ(e.failures, attempts);
    CHECK_EQ(e.heap_index, PL_SCHED_NOT_QUEUED);
    /* A success resets the failure count. */
    CHECK_EQ(pl_sched_renewed(&s, &e, now, now + lock), 0);
    CHECK_EQ(e.failures, 0);
    pl_sched_destroy(&s);
}

static void test_retry_after(void)
{
    pl_sched s;
    pl_sched_config c = cfg_nojitter();
    pl_sched_init(&s, &c);
    pl_sched_entry e;
    CHECK_EQ(pl_sched_add(&s, &e, 0, 30000, 30000, INT64_MAX), 0);
    pl_sched_entry *out;
    CHECK_EQ(pl_sched_pop_due(&s, 15000, &out), PL_SCHED_RENEW);
    /* Retry-After 2 s with 15 s left: honoured exactly. */
    CHECK_EQ(pl_sched_failed(&s, &e, 15000, 2000), PL_SCHED_RETRY);
    CHECK_EQ(pl_sched_next_due(&s), 17000);
    CHECK_EQ(pl_sched_pop_due(&s, 17000, &out), PL_SCHED_RENEW);
    /* Retry-After 60 s with 13 s left: clamped to half the remaining time. */
    CHECK_EQ(pl_sched_failed(&s, &e, 17000, 60000), PL_SCHED_RETRY);
    CHECK_EQ(pl_sched_next_due(&s), 17000 + 6500);
    /* A retry never goes past the cap: it becomes the cap. */
    pl_sched_remove(&s, &e);
    e.cap_ms = 18000;
    CHECK_EQ(pl_sched_failed(&s, &e, 17000, 5000), PL_SCHED_RETRY);
    CHECK_EQ(pl_sched_next_due(&s), 18000);
    CHECK_EQ(pl_sched_pop_due(&s, 18000, &out), PL_SCHED_CAP);
    pl_sched_destroy(&s);
}

static void test_work_ahead(void)
{
    pl_sched s;
    pl_sched_config c = cfg_nojitter();
    pl_sched_init(&s, &c);
    pl_sched_entry a, b, capped;
    /* a: 5 s lock due at +2500; b: due at +2600; capped: wakes for its cap at +1000 */
    CHECK_EQ(pl_sched_add(&s, &a, 0, 5000, 5000, INT64_MAX), 0);
    CHECK_EQ(pl_sched_add(&s, &b, 100, 5100, 5000, INT64_MAX), 0);
    CHECK_EQ(pl_sched_add(&s, &capped, 0, 5000, 5000, 1000), 0);
    pl_sched_entry *out;
    /* the cap wake-up comes first and is never taken early */
    CHECK_EQ(pl_sched_next_wake(&s, 0.1, 2000), 1000);
    CHECK_EQ(pl_sched_pop_ahead(&s, 999, 0.1, 2000, &out), PL_SCHED_NONE);
    CHECK_EQ(pl_sched_pop_ahead(&s, 1000, 0.1, 2000, &out), PL_SCHED_CAP);
    CHECK(out == &capped);
    /* renewals may go up to 10% of the lock duration (500 ms) early */
    CHECK_EQ(pl_sched_next_wake(&s, 0.1, 2000), 2000);
    CHECK_EQ(pl_sched_pop_ahead(&s, 1999, 0.1, 2000, &out), PL_SCHED_NONE);
    CHECK_EQ(pl_sched_pop_ahead(&s, 2000, 0.1, 2000, &out), PL_SCHED_RENEW);
    CHECK(out == &a);
    CHECK_EQ(pl_sched_pop_ahead(&s, 2000, 0.1, 2000, &out), PL_SCHED_NONE); /* b: +2600 */
    /* ... bounded by max_ahead_ms */
    CHECK_EQ(pl_sched_next_wake(&s, 0.1, 50), 2550);
    CHECK_EQ(pl_sched_pop_ahead(&s, 2549, 0.1, 50, &out), PL_SCHED_NONE);
    CHECK_EQ(pl_sched_pop_ahead(&s, 2550, 0.1, 50, &out), PL_SCHED_RENEW);
    CHECK(out == &b);
    /* a renewal whose due time is capped is not taken early either */
    pl_sched_entry d;
    CHECK_EQ(pl_sched_add(&s, &d, 0, 30000, 30000, 4000), 0); /* due = cap = 4000 */
    CHECK_EQ(pl_sched_pop_ahead(&s, 3999, 0.1, 2000, &out), PL_SCHED_NONE);
    CHECK_EQ(pl_sched_pop_ahead(&s, 4000, 0.1, 2000, &out), PL_SCHED_CAP);
    CHECK_EQ(pl_sched_next_wake(&s, 0.1, 2000), INT64_MAX);
    /* a retry waits out its backoff: no working ahead */
    pl_sched_entry f;
    CHECK_EQ(pl_sched_add(&s, &f, 0, 30000, 30000, INT64_MAX), 0);
    CHECK_EQ(pl_sched_pop_due(&s, 15000, &out), PL_SCHED_RENEW);
    CHECK_EQ(pl_sched_failed(&s, &f, 15000, 2000), PL_SCHED_RETRY);
    CHECK_EQ(pl_sched_next_wake(&s, 0.25, 15000), 17000);
    CHECK_EQ(pl_sched_pop_ahead(&s, 16999, 0.25, 15000, &out), PL_SCHED_NONE);
    CHECK_EQ(pl_sched_pop_ahead(&s, 17000, 0.25, 15000, &out), PL_SCHED_RENEW);
    pl_sched_destroy(&s);
}

static void test_histogram(void)
{
    pl_hist h;
    pl_hist_reset(&h);
    CHECK(pl_hist_quantile(&h, 0.99) == 0.0);
    for (int i = 1; i <= 1000; i++) pl_hist_record(&h, (double)i);
    CHECK_EQ(h.count, 1000);
    double p99 = pl_hist_quantile(&h, 0.99), p50 = pl_hist_quantile(&h, 0.5);
    CHECK(p99 >= 990.0 && p99 <= 990.0 * 1.07);
    CHECK(p50 >= 500.0 && p50 <= 500.0 * 1.07);
    CHECK(pl_hist_quantile(&h, 1.0) == 1000.0);
    /* sub-millisecond values are exact to the microsecond */
    pl_hist_reset(&h);
    pl_hist_record(&h, 0.1);
    pl_hist_record(&h, 0.2);
    CHECK(fabs(pl_hist_quantile(&h, 0.5) - 0.1) < 1e-9);
    CHECK(fabs(pl_hist_quantile(&h, 1.0) - 0.2) < 1e-9);
    /* negative, NaN and huge values do not break it */
    pl_hist_record(&h, -5.0);
    pl_hist_record(&h, NAN);
    pl_hist_record(&h, 1e30);
    CHECK_EQ(h.count, 5);
    CHECK(pl_hist_quantile(&h, 1.0) == 1e30);
}

/* max_renew in seconds, as the bindings take it: the core's rule and rounding */
static void test_max_renew_ms(void)
{
    CHECK_EQ(pl_max_renew_ms(300), 300000);
    CHECK_EQ(pl_max_renew_ms(0.3), 300); /* not 301: a float's noise is not rounded up */
    CHECK_EQ(pl_max_renew_ms(2.5), 2500);
    CHECK_EQ(pl_max_renew_ms(0.0001), 1);    /* under 1 ms: 1 ms, never 0 (the default) */
    CHECK_EQ(pl_max_renew_ms(1.0005), 1001); /* rounded up */
    CHECK_EQ(pl_max_renew_ms(1e9), PL_MAX_RENEW_MS);
    const double bad[] = {0, -1, 1e9 + 1, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(pl_max_renew_ms(bad[i]), PL_EINVAL);
        CHECK_STR(pl_error_last()->message,
                  "max_renew: must be a positive number of seconds, at most 1000000000");
    }
}

int main(void)
{
    test_defaults();
    test_half_remaining_rule();
    test_margin_follows_rtt();
    test_note_answer();
    test_heap_order_and_remove();
    test_jitter_spreads_and_is_deterministic();
    test_simulated_many_locks();
    test_cap();
    test_retry_until_time_runs_out();
    test_retry_after();
    test_work_ahead();
    test_histogram();
    test_max_renew_ms();
    return pl_test_done("test_schedule");
}
