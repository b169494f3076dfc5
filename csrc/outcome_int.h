/*
 * outcome — what a failed (or odd) exchange means, per operation. Pure: no I/O,
 * no clock, no threads; time (the lock's remaining time) is passed in and the
 * retry jitter comes from a seed. Every driver (client.c over libcurl easy
 * handles, renewer.c over a multi handle, lua/peeklock/resty.lua over cosockets
 * through the binding) moves bytes and reports each attempt here in I/O terms;
 * this module alone decides: done, retry after D ms, or outcome unknown.
 *
 * The per-operation table (docs/c-api.md, docs/python.md, docs/lua.md carry it):
 *
 *   op            | not sent | sent, no answer        | malformed / cut short  | 429, 503   | other 5xx            | 404
 *   send, batch   | retry    | UNKNOWN (retry only    | UNKNOWN                | retry      | UNKNOWN (retry only  | error
 *                 |          |  with resend opt-in)   |                        |            |  with resend opt-in) |
 *   recv+delete   | retry    | UNKNOWN                | UNKNOWN                | retry      | UNKNOWN              | error
 *   peek-lock     | retry    | retry, orphaned lock   | error, orphaned lock   | retry      | retry                | error
 *   renew         | retry while lock time remains (any of these, 429/503/5xx too)                              | lost
 *   unlock,       | retry    | retry while the lock   | UNKNOWN                | retry      | retry (uncertain)    | lost, or UNKNOWN
 *   complete      |          | is valid (uncertain)   |                        |            |                      | when uncertain
 *
 * A settle (unlock, complete) that ends in any failure after an attempt that may
 * have been carried out (no answer, or a 5xx other than throttling) is UNKNOWN.
 * "retry" is bounded by max_retries; past it, unlock and complete keep trying (at
 * most 64 attempts) while the lock outlives the next delay; a renew never waits
 * past its lock's remaining time. A send retried after a lost answer needs the
 * caller's opt-in and a MessageId on every message (the entity's duplicate
 * detection then drops the second copy).
 *
 * The settle fence lives here too: held -> settling -> settled | lost | unknown.
 * "unknown" is remembered on the message: a later settle of it says unknown again.
 */
#ifndef PEEKLOCK_OUTCOME_INT_H
#define PEEKLOCK_OUTCOME_INT_H

#include <stdint.h>
#include "peeklock.h"

/* How far one attempt got, in I/O terms, one value each: */
/* the request never left (DNS, connect, TLS failed) */
#define PL_IO_NOT_SENT 1
/* it left (maybe only partly); no answer came back: it may have been carried out */
#define PL_IO_UNANSWERED 2
/* an answer came that cannot be read: garbled, cut short, over a limit, or a 2xx
 * lacking what the operation needs */
#define PL_IO_MALFORMED 3
/* a readable answer; its code is the driver's reading of it */
#define PL_IO_ANSWERED 4

/* What the driver does next (pl_call_report). */
#define PL_NEXT_DONE  0 /* return call->code (pl_error_last() is set) */
#define PL_NEXT_RETRY 1 /* wait call->delay_ms, then send the same request again */

/* Retry-After values are capped here (a hint, never a reason to hang). */
#define PL_RETRY_AFTER_MAX_MS 60000L
/* Attempts of one call, at most, whatever the options. */
#define PL_CALL_MAX_ATTEMPTS 64

typedef struct pl_policy {
    int max_retries;    /* retries of one call (0: none) */
    long retry_base_ms; /* first backoff delay */
    long retry_max_ms;  /* longest backoff delay */
} pl_policy;

typedef struct pl_call {
    int op;             /* PL_OP_* (wire_int.h) */
    const char *entity; /* for messages; borrowed */
    int resend_ok;      /* send/batch: the caller opted in and every message
                                 carries a MessageId */
    int attempts;       /* attempts reported so far */
    int uncertain;      /* an earlier attempt may have been carried out */
    int orphaned;       /* peek-lock attempts whose lock may be held by nobody */
    uint64_t rng;       /* jitter state */
    int code;           /* PL_NEXT_DONE: the call's result */
    long delay_ms;      /* PL_NEXT_RETRY: wait this long first */
} pl_call;

/* Parses a Retry-After header value (delta seconds, fractions allowed) into ms,
 * capped at PL_RETRY_AFTER_MAX_MS. -1 when value is NULL or not a number of
 * seconds (an HTTP-date is ignored: the backoff applies). */
long pl_retry_after_ms(const char *value);

/* Starts the bookkeeping of one call. seed: any value (0 is replaced). */
void pl_call_init(pl_call *call, int op, const char *entity, uint64_t seed);

/* Reports one attempt. io: PL_IO_*. status: the HTTP status when answered, else 0.
 * code: the driver's code for it (PL_ANSWERED: its reading of the answer, PL_OK,
 * PL_EMPTY or a PL_E*; otherwise the transport's PL_E*; pl_error_last() holds its
 * message). retry_after_ms: pl_retry_after_ms of the answer, -1 for none.
 * lock_remaining_ms: renew/unlock/complete: the lock's remaining time; else ignored.
 * Returns PL_NEXT_DONE (call->code is the result and pl_error_last() describes it)
 * or PL_NEXT_RETRY (call->delay_ms). */
int pl_call_report(pl_call *call, const pl_policy *p, int io, int status, int code, long retry_after_ms,
                   int64_t lock_remaining_ms);

/* The renewer's question, without a budget (its schedule times retries): after a
 * renew attempt that ended as io/code, is it worth another attempt while lock time
 * remains (1), or is code final (0)? */
int pl_renew_retryable(int io, int code);

/* ---- the settle fence --------------------------------------------------- */

/* Enters the fence for a settle (op PL_OP_UNLOCK / PL_OP_COMPLETE) or checks it for a
 * renew (PL_OP_RENEW: the state must be held; nothing changes). PL_OK when the caller
 * now owns the settle (held -> settling); otherwise the error for the state it is in:
 * PL_EUNKNOWN when an earlier settle's outcome was unknown, PL_ELOCKLOST when lost,
 * PL_ESTATE when settling, settled, or never locked. */
int pl_fence_enter(pl_message *m, int op);
/* Leaves the fence with the call's result: PL_OK settled (the answer moved it),
 * PL_ELOCKLOST / PL_ENOTFOUND lost, PL_EUNKNOWN unknown (remembered), anything else:
 * not settled, held again. */
void pl_fence_leave(pl_message *m, int rc);
/* Marks m's settle unknown (settling or lost -> unknown). */
void pl_fence_unknown(pl_message *m);

#endif
