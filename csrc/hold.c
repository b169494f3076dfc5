/*
 * hold.c — the auto-renew-and-settle workflow around a handler, written once
 * for every binding (pl_renewer_hold / pl_renewer_finish, peeklock.h).
 *
 * Nothing here keeps state of its own: the renewer keeps the lock alive, the
 * settle fence (outcome.c) moves the message out of PL_LOCK_HELD exactly once,
 * and what became of the message is read back from the message itself (its lock
 * state, settle kind and lost reason), whoever settled it.
 */
#include <limits.h>
#include <string.h>

#include "client_int.h"
#include "error_int.h"
#include "message_int.h"

static const char *const state_names[] = {"none", "held", "settling", "settled", "lost", "unknown"};

int pl_renewer_hold(pl_renewer *r, pl_message *m, int64_t max_ms)
{
    if (!r) return pl_error_inval("r", "is NULL");
    if (!m) return pl_error_inval("m", "is NULL");
    if (max_ms < 0 || max_ms > LONG_MAX || max_ms > PL_MAX_RENEW_MS)
        return pl_error_inval("max_ms", "must be 0 (the renewer's default) to PL_MAX_RENEW_MS");
    int st = pl_message_state(m);
    if (st == PL_LOCK_NONE)
        return pl_error_set(PL_ESTATE, 0, 0, "message was received with receive_and_delete: nothing to lock");
    if (st != PL_LOCK_HELD)
        return pl_error_set(PL_ESTATE, 0, 0, "message lock is %s, not held",
                            st > 0 && st <= PL_LOCK_UNKNOWN ? state_names[st] : "unknown");
    return pl_renewer_add(r, m, (long)max_ms);
}

/* What became of m, from its own state; `mine`: this call sent the settle. */
int pl_finish_outcome(const pl_message *m, int mine)
{
    if (!m) return 0;
    switch (pl_message_state(m)) {
    case PL_LOCK_HELD: return PL_FINISH_HELD;
    case PL_LOCK_SETTLED:
        if (!mine && pl_message_lost_reason(m) == PL_ECLOSED) return PL_FINISH_CLOSED;
        if (!mine) return PL_FINISH_BY_HANDLER;
        return pl_message_settle_kind(m) == PL_SETTLE_COMPLETE ? PL_FINISH_COMPLETED : PL_FINISH_ABANDONED;
    case PL_LOCK_LOST: return PL_FINISH_LOST;
    case PL_LOCK_UNKNOWN: return PL_FINISH_UNKNOWN;
    default: /* PL_LOCK_SETTLING: the handler's own settle, on another thread */ return PL_FINISH_BY_HANDLER;
    }
}

int pl_finish_error(const pl_message *m, int outcome)
{
    if (!m) return pl_error_inval("m", "is NULL");
    long long seq = (long long)pl_message_sequence_number(m);
    const char *entity = pl_message_entity(m);
    switch (outcome) {
    case PL_FINISH_CLOSED:
        return pl_error_set(
            PL_ECLOSED, 0, 0,
            "message %lld in '%s' was abandoned when the client closed while the handler ran; "
            "it was not completed and will be delivered again",
            seq, entity);
    case PL_FINISH_UNKNOWN:
        return pl_error_set(
            PL_EUNKNOWN, 0, 0,
            "message %lld in '%s': a settle made while the handler ran had an unknown outcome; "
            "it may or may not have been completed",
            seq, entity);
    case PL_FINISH_LOST: {
        /* why: a refused renewal or settle (lock lost, entity gone), else the last transient
         * failure of renewals that gave up when no lock time was left */
        int why = pl_message_lost_reason(m);
        const char *text = why ? strstr(pl_strerror(why), ": ") : NULL; /* "PL_E...: text" */
        int gave_up = why != PL_ELOCKLOST && why != PL_ENOTFOUND;
        return pl_error_set(
            PL_ELOCKLOST, 0, 0,
            "lock on message %lld in '%s' was lost while the handler ran; nothing was completed%s%s%s%s", seq,
            entity, text ? " (" : "", text && gave_up ? PL_REASON_GAVE_UP ": " : "", text ? text + 2 : "",
            text ? ")" : "");
    }
    default: return PL_OK;
    }
}

int pl_finish_action(const pl_message *m, int handler_ok)
{
    if (!m || pl_message_state(m) != PL_LOCK_HELD) return 0;
    return handler_ok ? PL_SETTLE_COMPLETE : PL_SETTLE_UNLOCK;
}

int pl_renewer_finish(pl_renewer *r, pl_message *m, int handler_ok, int *outcome)
{
    if (outcome) *outcome = 0;
    if (!m) return pl_error_inval("m", "is NULL");
    if (pl_message_state(m) == PL_LOCK_NONE)
        return pl_error_set(PL_ESTATE, 0, 0,
                            "message was received with receive_and_delete: nothing to settle");
    if (r) pl_renewer_remove(r, m);
    int rc = PL_OK, mine = 0;
    int action = pl_finish_action(m, handler_ok);
    if (action) {
        pl_client *c = pl_message_client(m);
        if (!c) return pl_error_set(PL_ESTATE, 0, 0, "message has no client to settle it through");
        rc = action == PL_SETTLE_COMPLETE ? pl_complete(c, m) : pl_unlock(c, m);
        /* PL_ESTATE: the handler's settle (another thread) won the fence meanwhile */
        mine = rc != PL_ESTATE;
        if (rc == PL_ESTATE) rc = PL_OK;
    } else {
        pl_error_ok();
    }
    if (outcome) *outcome = pl_finish_outcome(m, mine);
    return rc;
}
