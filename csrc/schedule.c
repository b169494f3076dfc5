/*
 * schedule.c — when each held lock must be renewed (pure; see schedule_int.h).
 */
#include "schedule_int.h"

#include <math.h>

#include "error_int.h"
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------ */
/* The renewal cap a binding gives in seconds                                 */
/* ------------------------------------------------------------------------ */

int64_t pl_max_renew_ms(double seconds)
{
    if (!(seconds > 0.0) || seconds > (double)(PL_MAX_RENEW_MS / 1000))
        return pl_error_inval("max_renew", "must be a positive number of seconds, at most 1000000000");
    /* rounded up, but not past a float's noise (0.3 s is 300 ms, not 301) */
    double ms = ceil(seconds * 1000.0 - 1e-6);
    pl_error_ok();
    return ms < 1.0 ? 1 : (int64_t)ms;
}

/* ------------------------------------------------------------------------ */
/* Deterministic randomness (splitmix64)                                      */
/* ------------------------------------------------------------------------ */

static uint64_t rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rng_unit(uint64_t *state)
{
    return (double)(rng_next(state) >> 11) * (1.0 / 9007199254740992.0);
}

/* ------------------------------------------------------------------------ */
/* Histogram                                                                  */
/* ------------------------------------------------------------------------ */

static unsigned hist_index(uint64_t us)
{
    if (us < 256) return (unsigned)us;
    unsigned e = 63u - (unsigned)__builtin_clzll(us); /* >= 8 */
    unsigned sub = (unsigned)(us >> (e - 4)) & 15u;
    unsigned idx = 256u + (e - 8u) * 16u + sub;
    return idx < PL_HIST_BUCKETS ? idx : PL_HIST_BUCKETS - 1;
}

/* Upper bound (in us) of the values that land in bucket idx. */
static double hist_upper_us(unsigned idx)
{
    if (idx < 256) return (double)idx;
    unsigned e = 8u + (idx - 256u) / 16u;
    unsigned sub = (idx - 256u) % 16u;
    double width = ldexp(1.0, (int)e - 4);
    return (16.0 + sub) * width + width - 1.0;
}

void pl_hist_reset(pl_hist *h)
{
    memset(h, 0, sizeof(*h));
}

void pl_hist_record(pl_hist *h, double ms)
{
    if (!(ms >= 0.0)) /* negative or NaN */
        ms = 0.0;
    double us = ms * 1000.0 + 0.5;
    uint64_t v = us >= 1.8e19 ? UINT64_MAX : (uint64_t)us;
    h->buckets[hist_index(v)]++;
    h->count++;
    if (ms > h->max_ms) h->max_ms = ms;
}

double pl_hist_quantile(const pl_hist *h, double q)
{
    if (h->count == 0) return 0.0;
    if (q < 0.0) q = 0.0;
    if (q > 1.0) q = 1.0;
    uint64_t target = (uint64_t)ceil(q * (double)h->count);
    if (target == 0) target = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < PL_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= target) {
            if (i == PL_HIST_BUCKETS - 1) /* overflow bucket */
                return h->max_ms;
            double v = hist_upper_us(i) / 1000.0;
            return v < h->max_ms ? v : h->max_ms;
        }
    }
    return h->max_ms;
}

/* ------------------------------------------------------------------------ */
/* Heap                                                                       */
/* ------------------------------------------------------------------------ */

static void heap_set(pl_sched *s, size_t i, pl_sched_entry *e)
{
    s->heap[i] = e;
    e->heap_index = (uint32_t)i;
}

static void sift_up(pl_sched *s, size_t i)
{
    pl_sched_entry *e = s->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (s->heap[parent]->due_ms <= e->due_ms) break;
        heap_set(s, i, s->heap[parent]);
        i = parent;
    }
    heap_set(s, i, e);
}

static void sift_down(pl_sched *s, size_t i)
{
    pl_sched_entry *e = s->heap[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        int64_t best = e->due_ms;
        if (l < s->len && s->heap[l]->due_ms < best) {
            m = l;
            best = s->heap[l]->due_ms;
        }
        if (r < s->len && s->heap[r]->due_ms < best) m = r;
        if (m == i) break;
        heap_set(s, i, s->heap[m]);
        i = m;
    }
    heap_set(s, i, e);
}

static int heap_push(pl_sched *s, pl_sched_entry *e)
{
    if (s->len == s->cap) {
        size_t ncap = s->cap ? s->cap * 2 : 64;
        if (ncap >= PL_SCHED_NOT_QUEUED) return -1;
        pl_sched_entry **n = realloc(s->heap, ncap * sizeof(*n));
        if (!n) return -1;
        s->heap = n;
        s->cap = ncap;
    }
    s->heap[s->len] = e;
    s->len++;
    sift_up(s, s->len - 1);
    return 0;
}

static void heap_remove_at(pl_sched *s, size_t i)
{
    pl_sched_entry *e = s->heap[i];
    s->len--;
    if (i != s->len) {
        pl_sched_entry *last = s->heap[s->len];
        heap_set(s, i, last);
        if (i > 0 && s->heap[(i - 1) / 2]->due_ms > last->due_ms)
            sift_up(s, i);
        else
            sift_down(s, i);
    }
    e->heap_index = PL_SCHED_NOT_QUEUED;
}

/* ------------------------------------------------------------------------ */
/* Schedule                                                                   */
/* ------------------------------------------------------------------------ */

void pl_sched_config_defaults(pl_sched_config *cfg)
{
    if (cfg->margin_floor_ms <= 0) cfg->margin_floor_ms = 1000;
    if (!(cfg->jitter >= 0.0)) cfg->jitter = 0.1;
    if (cfg->jitter > 1.0) cfg->jitter = 1.0;
    if (!(cfg->first_jitter >= 0.0)) cfg->first_jitter = cfg->jitter * 5 < 0.5 ? cfg->jitter * 5 : 0.5;
    if (cfg->first_jitter > 1.0) cfg->first_jitter = 1.0;
    if (cfg->retry_base_ms <= 0) cfg->retry_base_ms = 100;
    if (cfg->retry_max_ms <= 0) cfg->retry_max_ms = 5000;
    if (cfg->retry_max_ms < cfg->retry_base_ms) cfg->retry_max_ms = cfg->retry_base_ms;
    if (cfg->min_window_ms <= 0) cfg->min_window_ms = 20;
}

int pl_sched_init(pl_sched *s, const pl_sched_config *cfg)
{
    memset(s, 0, sizeof(*s));
    if (cfg)
        s->cfg = *cfg;
    else
        s->cfg.jitter = s->cfg.first_jitter = -1.0;
    pl_sched_config_defaults(&s->cfg);
    s->rng = s->cfg.seed;
    return 0;
}

void pl_sched_destroy(pl_sched *s)
{
    free(s->heap); /* entries belong to the caller and are not touched */
    s->heap = NULL;
    s->len = s->cap = 0;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

void pl_sched_observe_rtt(pl_sched *s, double rtt_ms)
{
    if (!(rtt_ms >= 0.0)) rtt_ms = 0.0;
    s->rtt[s->rtt_pos] = (float)rtt_ms;
    s->rtt_pos = (s->rtt_pos + 1) % PL_SCHED_RTT_WINDOW;
    if (s->rtt_n < PL_SCHED_RTT_WINDOW) s->rtt_n++;
    s->rtt_since_sort++;
    /* Re-sort the window at first on every sample, then every 16 samples (or at
     * once when a sample exceeds the current p99, so a slowdown widens the margin
     * without delay). */
    if (s->rtt_n <= 16 || s->rtt_since_sort >= 16 || rtt_ms > s->rtt_p99_ms) {
        float tmp[PL_SCHED_RTT_WINDOW];
        memcpy(tmp, s->rtt, s->rtt_n * sizeof(float));
        qsort(tmp, s->rtt_n, sizeof(float), cmp_float);
        size_t k = (size_t)ceil(0.99 * (double)s->rtt_n);
        if (k == 0) k = 1;
        s->rtt_p99_ms = tmp[k - 1];
        s->rtt_since_sort = 0;
    }
}

void pl_sched_note_answer(pl_sched *s, double rtt_ms, int answered, int timed_out)
{
    if (answered || timed_out) pl_sched_observe_rtt(s, rtt_ms);
}

double pl_sched_rtt_p99_ms(const pl_sched *s)
{
    return s->rtt_p99_ms;
}

double pl_sched_margin_ms(const pl_sched *s)
{
    return s->rtt_p99_ms + (double)s->cfg.margin_floor_ms;
}

static int64_t due_jittered(pl_sched *s, int64_t now_ms, int64_t expiry_ms, int64_t cap_ms, double jitter)
{
    int64_t remaining = expiry_ms - now_ms;
    int64_t due;
    if (remaining <= 0) {
        due = now_ms;
    } else {
        int64_t by_margin = expiry_ms - (int64_t)ceil(pl_sched_margin_ms(s));
        int64_t by_half = now_ms + remaining / 2;
        due = by_margin < by_half ? by_margin : by_half;
        if (due < now_ms) due = now_ms;
    }
    double wait = (double)(due - now_ms);
    double u = rng_unit(&s->rng);
    due -= (int64_t)(wait * jitter * u);
    if (due > cap_ms) due = cap_ms < now_ms ? now_ms : cap_ms;
    return due;
}

int64_t pl_sched_due_for(pl_sched *s, int64_t now_ms, int64_t expiry_ms, int64_t cap_ms)
{
    return due_jittered(s, now_ms, expiry_ms, cap_ms, s->cfg.jitter);
}

size_t pl_sched_count(const pl_sched *s)
{
    return s->len;
}

int64_t pl_sched_next_due(const pl_sched *s)
{
    return s->len ? s->heap[0]->due_ms : INT64_MAX;
}

int pl_sched_add(pl_sched *s, pl_sched_entry *e, int64_t now_ms, int64_t expiry_ms, int64_t lock_duration_ms,
                 int64_t cap_ms)
{
    e->expiry_ms = expiry_ms;
    e->lock_duration_ms = lock_duration_ms;
    e->cap_ms = cap_ms;
    e->failures = 0;
    e->spare = 0;
    e->heap_index = PL_SCHED_NOT_QUEUED;
    e->due_ms = due_jittered(s, now_ms, expiry_ms, cap_ms, s->cfg.first_jitter);
    return heap_push(s, e);
}

void pl_sched_remove(pl_sched *s, pl_sched_entry *e)
{
    if (e->heap_index == PL_SCHED_NOT_QUEUED || e->heap_index >= s->len || s->heap[e->heap_index] != e)
        return;
    heap_remove_at(s, e->heap_index);
}

int pl_sched_pop_due(pl_sched *s, int64_t now_ms, pl_sched_entry **out)
{
    *out = NULL;
    if (s->len == 0 || s->heap[0]->due_ms > now_ms) return PL_SCHED_NONE;
    pl_sched_entry *e = s->heap[0];
    heap_remove_at(s, 0);
    *out = e;
    return now_ms >= e->cap_ms ? PL_SCHED_CAP : PL_SCHED_RENEW;
}

static int64_t ahead_of(const pl_sched_entry *e, double ahead, int64_t max_ahead_ms)
{
    if (e->due_ms >= e->cap_ms || e->failures > 0 || !(ahead > 0.0))
        return 0; /* a cap wake-up is never early, nor a retry's backoff shortened */
    int64_t a = (int64_t)((double)e->lock_duration_ms * ahead);
    return a < max_ahead_ms ? a : max_ahead_ms;
}

int64_t pl_sched_next_wake(const pl_sched *s, double ahead, int64_t max_ahead_ms)
{
    if (!s->len) return INT64_MAX;
    const pl_sched_entry *e = s->heap[0];
    return e->due_ms - ahead_of(e, ahead, max_ahead_ms);
}

int pl_sched_pop_ahead(pl_sched *s, int64_t now_ms, double ahead, int64_t max_ahead_ms, pl_sched_entry **out)
{
    *out = NULL;
    if (s->len == 0) return PL_SCHED_NONE;
    pl_sched_entry *e = s->heap[0];
    if (e->due_ms <= now_ms) return pl_sched_pop_due(s, now_ms, out);
    if (e->due_ms - ahead_of(e, ahead, max_ahead_ms) > now_ms) return PL_SCHED_NONE;
    heap_remove_at(s, 0);
    *out = e;
    return now_ms >= e->cap_ms ? PL_SCHED_CAP : PL_SCHED_RENEW;
}

int pl_sched_renewed(pl_sched *s, pl_sched_entry *e, int64_t now_ms, int64_t new_expiry_ms)
{
    pl_sched_remove(s, e);
    e->expiry_ms = new_expiry_ms;
    e->failures = 0;
    e->due_ms = pl_sched_due_for(s, now_ms, new_expiry_ms, e->cap_ms);
    return heap_push(s, e);
}

int pl_sched_failed(pl_sched *s, pl_sched_entry *e, int64_t now_ms, long retry_after_ms)
{
    pl_sched_remove(s, e);
    if (e->failures < UINT16_MAX) e->failures++;
    int64_t remaining = e->expiry_ms - now_ms;
    if (remaining < s->cfg.min_window_ms) return PL_SCHED_GIVE_UP;
    double delay;
    if (retry_after_ms > 0) {
        delay = (double)retry_after_ms;
    } else {
        int shift = e->failures - 1 < 20 ? e->failures - 1 : 20;
        delay = (double)s->cfg.retry_base_ms * (double)(1L << shift);
        if (delay > (double)s->cfg.retry_max_ms) delay = (double)s->cfg.retry_max_ms;
        delay *= 0.5 + 0.5 * rng_unit(&s->rng); /* "equal jitter" */
    }
    /* Never wait past half the remaining lock time: the lock matters more than
     * the server's hint, and another attempt must fit before expiry. */
    if (delay > (double)(remaining / 2)) delay = (double)(remaining / 2);
    int64_t due = now_ms + (int64_t)delay;
    if (due > e->cap_ms) due = e->cap_ms < now_ms ? now_ms : e->cap_ms;
    e->due_ms = due;
    if (heap_push(s, e) != 0) return PL_SCHED_GIVE_UP;
    return PL_SCHED_RETRY;
}
