/* outcome.c — the one place that decides what an exchange's outcome means
 * (outcome_int.h has the table). Pure: no I/O, no clock; time comes in as
 * arguments and the jitter from a seed. */
#include "outcome_int.h"

#include <stdio.h>
#include <string.h>

#include "error_int.h"
#include "message_int.h"
#include "wire_int.h"

long pl_retry_after_ms(const char *v)
{
    if (!v) return -1;
    while (*v == ' ' || *v == '\t') v++;
    if (*v < '0' || *v > '9') return -1;
    double s = 0;
    for (; *v >= '0' && *v <= '9'; v++) {
        s = s * 10 + (*v - '0');
        if (s > 1e9) s = 1e9;
    }
    if (*v == '.') {
        double f = 0.1;
        for (v++; *v >= '0' && *v <= '9'; v++, f /= 10) s += (*v - '0') * f;
    }
    while (*v == ' ' || *v == '\t') v++;
    if (*v) return -1;
    double ms = s * 1000.0;
    return ms > (double)PL_RETRY_AFTER_MAX_MS ? PL_RETRY_AFTER_MAX_MS : (long)ms;
}

void pl_call_init(pl_call *call, int op, const char *entity, uint64_t seed)
{
    memset(call, 0, sizeof *call);
    call->op = op;
    call->entity = entity ? entity : "";
    call->rng = seed ? seed : 0x9E3779B97F4A7C15ULL;
}

/* xorshift64* */
static uint64_t rng_next(uint64_t *s)
{
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

/* Backoff before retry number `n` (0-based): base * 2^n capped at max, jittered
 * into [d/2, d]; or the server's Retry-After when it gave one. */
static long backoff(pl_call *call, const pl_policy *p, int n, long retry_after_ms)
{
    if (retry_after_ms >= 0) return retry_after_ms;
    double d = (double)p->retry_base_ms;
    for (int i = 0; i < n && d < (double)p->retry_max_ms; i++) d *= 2;
    if (d > (double)p->retry_max_ms) d = (double)p->retry_max_ms;
    long half = (long)(d / 2);
    return half + (long)(rng_next(&call->rng) % (uint64_t)(half + 1));
}

static int is_settle(int op)
{
    return op == PL_OP_UNLOCK || op == PL_OP_COMPLETE;
}
static int is_send(int op)
{
    return op == PL_OP_SEND || op == PL_OP_BATCH;
}

/* The call's result is unknown: says what may have happened, keeping the
 * attempt's own message (why). */
static int unknown(pl_call *call, int status)
{
    char why[300], prefix[240];
    const char *w = pl_error_last()->message;
    /* the attempt's message may already name the operation and entity */
    int np = snprintf(prefix, sizeof prefix, "%s on '%.200s': ", pl_wire_op_name(call->op), call->entity);
    if (np > 0 && (size_t)np < sizeof prefix && strncmp(w, prefix, (size_t)np) == 0) w += np;
    snprintf(why, sizeof why, "%s", w);
    const char *consequence;
    switch (call->op) {
    case PL_OP_SEND:
        consequence = "the message may have been stored (sending it again may store it twice)";
        break;
    case PL_OP_BATCH:
        consequence = "the messages may have been stored (sending them again may store them twice)";
        break;
    case PL_OP_RECVDEL:
        consequence = "a message may have been removed from the entity without being delivered";
        break;
    case PL_OP_COMPLETE: consequence = "the message may or may not have been completed"; break;
    case PL_OP_UNLOCK: consequence = "the message may or may not have been unlocked"; break;
    default: consequence = "it may or may not have been carried out"; break;
    }
    const char *earlier =
        call->uncertain && call->attempts > 1 ? " (an earlier attempt may have been carried out)" : "";
    call->code = pl_error_set(PL_EUNKNOWN, status, 0, "%s on '%.200s': outcome unknown%s: %s; %s",
                              pl_wire_op_name(call->op), call->entity, earlier, why[0] ? why : "no answer",
                              consequence);
    return PL_NEXT_DONE;
}

static int done(pl_call *call, int code)
{
    call->code = code;
    return PL_NEXT_DONE;
}

int pl_renew_retryable(int io, int code)
{
    switch (io) {
    case PL_IO_NOT_SENT:
    case PL_IO_UNANSWERED: return code != PL_ENOMEM;
    case PL_IO_MALFORMED: return 0;
    default: return code == PL_ETHROTTLED || code == PL_ESERVER;
    }
}

int pl_call_report(pl_call *call, const pl_policy *p, int io, int status, int code, long retry_after_ms,
                   int64_t lock_remaining_ms)
{
    int op = call->op;
    int n = call->attempts++; /* this attempt's number, 0-based */
    call->delay_ms = 0;
    if (io == PL_IO_ANSWERED && code == PL_EPROTOCOL) io = PL_IO_MALFORMED; /* e.g. a 2xx lacking a header */
    if (io == PL_IO_ANSWERED && code >= 0) return done(call, code);
    /* Never sent, and sending again cannot help (a bad CA file, a certificate that fails
     * verification, out of memory): the driver's error says so. */
    if (io == PL_IO_NOT_SENT && (code == PL_ENOMEM || code == PL_EINVAL || code == PL_EINTERNAL ||
                                 (pl_error_last()->code == code && !pl_error_last()->retryable)))
        return done(call, code);

    /* What kind of failure this is for the operation. */
    int again = 0; /* another attempt is safe */
    int acted = 0; /* this attempt may have been carried out */
    switch (io) {
    case PL_IO_NOT_SENT: again = 1; break;
    case PL_IO_UNANSWERED:
        acted = 1;
        if (op == PL_OP_PEEKLOCK) call->orphaned++;
        if (is_send(op))
            again = call->resend_ok;
        else if (op == PL_OP_RECVDEL)
            again = 0;
        else
            again = 1;
        break;
    case PL_IO_MALFORMED:
        acted = 1;
        if (op == PL_OP_PEEKLOCK) call->orphaned++;
        again = op == PL_OP_RENEW; /* a renew read wrong is simply made again */
        break;
    default: /* answered with an error status */
        if (code == PL_ETHROTTLED) {
            again = 1;
        } else if (code == PL_ESERVER) {
            acted = 1;
            if (op == PL_OP_PEEKLOCK) call->orphaned++; /* a lock may have been taken first */
            again = is_send(op) ? call->resend_ok : op != PL_OP_RECVDEL;
        }
        break;
    }
    if (acted && (is_settle(op) || is_send(op) || op == PL_OP_RECVDEL)) call->uncertain = 1;

    if (again && p->max_retries > 0 && call->attempts < PL_CALL_MAX_ATTEMPTS) {
        long delay = backoff(call, p, n, io == PL_IO_ANSWERED ? retry_after_ms : -1);
        int budget = n < p->max_retries;
        if (op == PL_OP_RENEW) {
            budget = budget && lock_remaining_ms > delay;
        } else if (is_settle(op) && !budget) {
            /* Past max_retries a settle keeps trying while its lock stays valid: giving
             * up during a short outage would send the message back at lock expiry. */
            budget = lock_remaining_ms > delay;
        }
        if (budget) {
            call->delay_ms = delay;
            return PL_NEXT_RETRY;
        }
    }

    /* Final. */
    if (call->uncertain) {
        if (is_settle(op) || op == PL_OP_RECVDEL || is_send(op)) return unknown(call, status);
    }
    if (io == PL_IO_MALFORMED && code != PL_EPROTOCOL)
        code = pl_error_set(PL_EPROTOCOL, status, 0, "%s", pl_error_last()->message);
    return done(call, code);
}

/* ---- the settle fence ---------------------------------------------------- */

static int state_error(const pl_message *m, int op)
{
    const char *what = pl_wire_op_name(op);
    switch (pl_message_state(m)) {
    case PL_LOCK_UNKNOWN:
        return pl_error_set(PL_EUNKNOWN, 0, 0,
                            "%s: the message's earlier settle had an unknown outcome (it may or may not "
                            "have been completed or unlocked)",
                            what);
    case PL_LOCK_LOST: return pl_error_set(PL_ELOCKLOST, 0, 0, "%s: the message's lock was lost", what);
    case PL_LOCK_SETTLED:
        if (pl_message_lost_reason(m) == PL_ECLOSED)
            return pl_error_set(PL_ECLOSED, 0, 0,
                                "%s: the message was abandoned (unlocked) when its renewer "
                                "closed; it will be delivered again",
                                what);
        return pl_error_set(PL_ESTATE, 0, 0, "%s: the message was already settled", what);
    case PL_LOCK_SETTLING: return pl_error_set(PL_ESTATE, 0, 0, "%s: the message is being settled", what);
    default: return pl_error_set(PL_ESTATE, 0, 0, "%s: the message holds no lock", what);
    }
}

int pl_fence_enter(pl_message *m, int op)
{
    if (op == PL_OP_RENEW) return pl_message_state(m) == PL_LOCK_HELD ? PL_OK : state_error(m, op);
    if (pl_message_cas_state(m, PL_LOCK_HELD, PL_LOCK_SETTLING)) {
        atomic_store(&m->settle_kind, op == PL_OP_COMPLETE ? PL_SETTLE_COMPLETE : PL_SETTLE_UNLOCK);
        return PL_OK;
    }
    return state_error(m, op);
}

void pl_fence_unknown(pl_message *m)
{
    atomic_store(&m->lost_reason, PL_EUNKNOWN);
    if (!pl_message_cas_state(m, PL_LOCK_SETTLING, PL_LOCK_UNKNOWN))
        pl_message_cas_state(m, PL_LOCK_LOST, PL_LOCK_UNKNOWN);
}

void pl_fence_leave(pl_message *m, int rc)
{
    if (rc == PL_OK) {
        /* the answer moved it; a settle that was answered 2xx is settled */
        pl_message_cas_state(m, PL_LOCK_SETTLING, PL_LOCK_SETTLED);
    } else if (rc == PL_EUNKNOWN) {
        pl_fence_unknown(m);
    } else if (rc == PL_ELOCKLOST || rc == PL_ENOTFOUND) {
        pl_message_mark_lost(m, rc, 1);
    } else {
        /* not settled and not lost (throttled, timed out before sending, ...): held */
        if (pl_message_cas_state(m, PL_LOCK_SETTLING, PL_LOCK_HELD)) atomic_store(&m->lost_reason, 0);
    }
}
