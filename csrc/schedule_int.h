/*
 * schedule — when each held lock must be renewed. Pure: no I/O, no clock, no
 * threads. Every function takes the current monotonic time (ms) as an argument,
 * so the whole policy is unit-tested with an injected clock.
 *
 * Policy (architecture.md, "The one rule set for locks"):
 *  - a renewal is due at expiry - margin, where margin = p99 of the measured renew
 *    round trips + a floor, and never later than half the remaining lock time;
 *  - a seeded jitter moves each due time earlier by up to `jitter` of the wait, so
 *    locks taken together do not all renew together;
 *  - renewal stops at a cap counted from the handler's start (PL_SCHED_CAP);
 *  - transient failures are retried with exponential backoff (or Retry-After),
 *    never later than half the remaining lock time, while lock time remains.
 *
 * Entries are intrusive: the caller owns the memory of each pl_sched_entry (it is
 * embedded in the renewer's per-lock record); the schedule keeps only a binary
 * min-heap of pointers (8 bytes per lock).
 */
#ifndef PL_SCHEDULE_INT_H
#define PL_SCHEDULE_INT_H

#include <stddef.h>
#include <stdint.h>

#define PL_SCHED_NOT_QUEUED UINT32_MAX

/* What pl_sched_pop_due says to do with the entry it returns. */
#define PL_SCHED_NONE  0 /* nothing is due */
#define PL_SCHED_RENEW 1 /* send a renew now */
#define PL_SCHED_CAP   2 /* the renewal cap was reached: stop renewing */

/* Outcome of pl_sched_failed. */
#define PL_SCHED_RETRY   1 /* rescheduled for another attempt */
#define PL_SCHED_GIVE_UP 2 /* no lock time left to retry in: the lock is lost */

typedef struct pl_sched_entry {
    int64_t due_ms;    /* when the next action is due (heap key) */
    int64_t expiry_ms; /* client-side lock expiry estimate */
    int64_t cap_ms;    /* renewal ends at this time (INT64_MAX: no cap) */
    int64_t lock_duration_ms;
    uint32_t heap_index; /* position in the heap, or PL_SCHED_NOT_QUEUED */
    uint16_t failures;   /* consecutive failed attempts since the last success */
    uint16_t spare;
} pl_sched_entry;

typedef struct pl_sched_config {
    long margin_floor_ms; /* minimum margin before expiry (default 1000) */
    double jitter;        /* 0..1, fraction of the wait randomised (default 0.1) */
    double first_jitter;  /* the same for a lock's first renewal after it is added
                                 (<0: default min(0.5, 5 * jitter)): locks taken in a
                                 batch get their renewal phases spread once, and every
                                 later renewal keeps that spread */
    long retry_base_ms;   /* first retry delay (default 100) */
    long retry_max_ms;    /* longest retry delay (default 5000) */
    long min_window_ms;   /* give up when less lock time than this remains (default 20) */
    uint64_t seed;        /* jitter seed; equal seeds give equal schedules */
} pl_sched_config;

#define PL_SCHED_RTT_WINDOW 256

/* Histogram of non-negative durations (ms, stored in microseconds): exact below
 * 256 us, then 16 sub-buckets per power of two (about 6% relative error). */
#define PL_HIST_BUCKETS 640
typedef struct pl_hist {
    uint64_t count;
    double max_ms;
    uint32_t buckets[PL_HIST_BUCKETS];
} pl_hist;

void pl_hist_reset(pl_hist *h);
void pl_hist_record(pl_hist *h, double ms);
/* Value below which fraction q (0..1) of the samples lie; 0 when empty. */
double pl_hist_quantile(const pl_hist *h, double q);

typedef struct pl_sched {
    pl_sched_config cfg;
    pl_sched_entry **heap;
    size_t len, cap;
    uint64_t rng;
    /* recent renew round trips, for the margin */
    float rtt[PL_SCHED_RTT_WINDOW];
    uint32_t rtt_n, rtt_pos, rtt_since_sort;
    double rtt_p99_ms;
} pl_sched;

/* Fills unset (zero / negative jitter) fields with the defaults above. */
void pl_sched_config_defaults(pl_sched_config *cfg);
int pl_sched_init(pl_sched *s, const pl_sched_config *cfg);
void pl_sched_destroy(pl_sched *s);

/* Current margin (p99 round trip + floor). */
double pl_sched_margin_ms(const pl_sched *s);
double pl_sched_rtt_p99_ms(const pl_sched *s);
void pl_sched_observe_rtt(pl_sched *s, double rtt_ms);
/* A renew's round trip, by what became of it: observed (pl_sched_observe_rtt) when the
 * server answered (any status: an error answer took as long as a success) or the
 * transfer timed out (a slow server widens the margin too); a renew that never got
 * through (connect or send failed, answer unreadable) says nothing of the server's pace.
 * The one rule every driver follows (the C renewer, peeklock.resty's loop). */
void pl_sched_note_answer(pl_sched *s, double rtt_ms, int answered, int timed_out);

/* Starts tracking a lock. cap_ms is absolute (INT64_MAX: none). Returns 0, or -1
 * when the heap cannot grow (out of memory). */
int pl_sched_add(pl_sched *s, pl_sched_entry *e, int64_t now_ms, int64_t expiry_ms, int64_t lock_duration_ms,
                 int64_t cap_ms);
/* Stops tracking (no-op when not queued). */
void pl_sched_remove(pl_sched *s, pl_sched_entry *e);
size_t pl_sched_count(const pl_sched *s);
/* Earliest due time, INT64_MAX when nothing is queued. */
int64_t pl_sched_next_due(const pl_sched *s);
/* Takes the earliest entry out of the heap if it is due at now_ms: *out is set and
 * PL_SCHED_RENEW or PL_SCHED_CAP returned. The entry is no longer queued; the
 * caller hands it back with pl_sched_renewed / pl_sched_failed, or drops it.
 * Returns PL_SCHED_NONE when nothing is due. */
int pl_sched_pop_due(pl_sched *s, int64_t now_ms, pl_sched_entry **out);
/* Like pl_sched_pop_due, but may also take a renewal up to `ahead` (a fraction of
 * its lock duration, at most max_ahead_ms) before it is due: a renewer with an idle
 * connection works ahead instead of letting a burst of due times pile up into
 * lateness. Never runs a cap early, never takes an entry whose wake-up is its
 * cap, and never shortens a retry's backoff. */
int pl_sched_pop_ahead(pl_sched *s, int64_t now_ms, double ahead, int64_t max_ahead_ms, pl_sched_entry **out);
/* When pl_sched_pop_ahead with the same arguments would next return something
 * (INT64_MAX when nothing is queued). */
int64_t pl_sched_next_wake(const pl_sched *s, double ahead, int64_t max_ahead_ms);
/* Due time for a lock whose expiry is expiry_ms, as seen at now_ms (used by the
 * functions above; exposed for tests). Consumes one jitter draw. */
int64_t pl_sched_due_for(pl_sched *s, int64_t now_ms, int64_t expiry_ms, int64_t cap_ms);
/* A renewal succeeded: record the new expiry and queue the next one. Returns 0 or -1. */
int pl_sched_renewed(pl_sched *s, pl_sched_entry *e, int64_t now_ms, int64_t new_expiry_ms);
/* A renewal failed transiently. retry_after_ms > 0 is the server's Retry-After
 * hint. Returns PL_SCHED_RETRY (queued again) or PL_SCHED_GIVE_UP (not queued). */
int pl_sched_failed(pl_sched *s, pl_sched_entry *e, int64_t now_ms, long retry_after_ms);

#endif
