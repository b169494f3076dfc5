/*
 * run.c — a processor's run bookkeeping (pure): the claims against max_messages,
 * the messages in flight, when the run is idle and why it stops. Every processor
 * (Python's two, Lua's process) asks it; see peeklock.h.
 */
#include <math.h>
#include <stdlib.h>

#include "error_int.h"
#include "peeklock.h"

struct pl_run {
    long max_messages;     /* 0: no limit */
    int64_t idle_ms;       /* 0: never idle */
    long claimed;          /* claims taken: messages received + receives under way */
    long received;         /* claims kept: messages received */
    long in_flight;        /* received, not finished */
    int64_t last_activity; /* the start, or the last received or finished message */
    int reason;            /* PL_RUN_*: PL_RUN_GOING until one is recorded */
    pl_run_tallies t;      /* the counts (in_flight filled on reading) */
};

static const char *const WORDS[] = {"",     "signal", "stop_event", "max_messages",
                                    "idle", "error",  "closed",     "stopped"};

int pl_run_options_init(pl_run_options *opts, unsigned int version)
{
    if (!opts) return pl_error_inval("opts", "must not be NULL");
    if (version != PL_RUN_OPTIONS_VERSION) return pl_error_inval("version", "must be PL_RUN_OPTIONS_VERSION");
    const pl_run_options init = PL_RUN_OPTIONS_INIT;
    *opts = init;
    pl_error_ok();
    return PL_OK;
}

int pl_run_new(pl_run **out, const pl_run_options *opts, int64_t now_ms)
{
    int rc;
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (!opts) return pl_error_inval("opts", "must not be NULL");
    if (opts->version != PL_RUN_OPTIONS_VERSION)
        return pl_error_inval("version", "must be PL_RUN_OPTIONS_VERSION");
    /* 0 is "none"; any other value follows the processor's option rule */
    if (opts->max_messages < 0)
        return pl_error_inval("max_messages", "must be 0 (no limit) or a whole number, at least 1");
    if (opts->max_messages && (rc = pl_check_process_option("max_messages", (double)opts->max_messages)) < 0)
        return rc;
    if (opts->idle_timeout != 0 && (rc = pl_check_process_option("idle_timeout", opts->idle_timeout)) < 0)
        return rc;
    pl_run *run = calloc(1, sizeof *run);
    if (!run) return pl_error_nomem();
    run->max_messages = opts->max_messages;
    /* whole milliseconds, up: a positive idle_timeout never becomes "never idle" */
    run->idle_ms = opts->idle_timeout > 9.2e15 ? INT64_MAX : (int64_t)ceil(opts->idle_timeout * 1000.0);
    run->last_activity = now_ms;
    *out = run;
    pl_error_ok();
    return PL_OK;
}

void pl_run_free(pl_run *run)
{
    free(run);
}

long pl_run_claim(pl_run *run, long want)
{
    if (!run || want < 1 || run->reason != PL_RUN_GOING) return 0;
    if (run->max_messages) {
        long left = run->max_messages - run->claimed;
        if (want > left) want = left > 0 ? left : 0;
    }
    run->claimed += want;
    return want;
}

void pl_run_unclaim(pl_run *run, long n)
{
    if (!run || n < 1) return;
    long waiting = run->claimed - run->received;
    run->claimed -= n < waiting ? n : waiting;
}

void pl_run_received(pl_run *run, long delivery_count, int64_t now_ms)
{
    if (!run) return;
    if (run->claimed == run->received) run->claimed++; /* received without a claim: counted all the same */
    run->received++;
    run->in_flight++;
    run->t.received++;
    if (delivery_count > 1) run->t.redelivered++;
    run->last_activity = now_ms;
}

/* The one rule: a finished message's outcome from how its driver saw it end. */
static int outcome_of(unsigned int how)
{
    if (how & PL_RUN_F_DRAINED) return PL_RUN_ABANDONED_ON_DRAIN;
    if (how & PL_RUN_F_EXPIRED) return PL_RUN_LEFT_TO_EXPIRE;
    if (how & PL_RUN_F_LOST) return PL_RUN_LOST;
    if (how & PL_RUN_F_UNKNOWN) return PL_RUN_UNKNOWN;
    if (how & PL_RUN_F_SETTLE_ERROR) return PL_RUN_FAILED;
    if (how & PL_RUN_F_COMPLETED) return PL_RUN_PROCESSED;
    if (how & PL_RUN_F_ABANDONED) return PL_RUN_FAILED;
    if (how & PL_RUN_F_BY_HANDLER) return PL_RUN_SETTLED_BY_HANDLER;
    if (how & PL_RUN_F_HANDLER_FAILED) return PL_RUN_FAILED;
    return PL_RUN_PROCESSED;
}

static uint64_t *field_of(pl_run_tallies *t, int outcome)
{
    switch (outcome) {
    case PL_RUN_PROCESSED: return &t->processed;
    case PL_RUN_SETTLED_BY_HANDLER: return &t->settled_by_handler;
    case PL_RUN_FAILED: return &t->failed;
    case PL_RUN_LOST: return &t->lost;
    case PL_RUN_UNKNOWN: return &t->unknown;
    case PL_RUN_ABANDONED_ON_DRAIN: return &t->abandoned_on_drain;
    default: return &t->left_to_expire;
    }
}

unsigned int pl_run_how(int before, int handler_failed, int settle_rc, int now)
{
    unsigned int failed = handler_failed ? PL_RUN_F_HANDLER_FAILED : 0;
    if (before < 0 || before == PL_LOCK_SETTLED) return PL_RUN_F_BY_HANDLER | failed;
    if (before == PL_LOCK_LOST) return PL_RUN_F_LOST | failed;
    if (before == PL_LOCK_UNKNOWN) return PL_RUN_F_UNKNOWN | failed;
    if (settle_rc == PL_ELOCKLOST || now == PL_LOCK_LOST) return PL_RUN_F_LOST | failed;
    if (settle_rc == PL_EUNKNOWN) return PL_RUN_F_UNKNOWN | failed;
    if (settle_rc != 0) return PL_RUN_F_SETTLE_ERROR | failed;
    return failed;
}

unsigned int pl_run_given_back(const pl_message *m)
{
    if (!m) return PL_RUN_F_DRAINED;
    switch (pl_message_lock_state(m)) {
    case PL_LOCK_SETTLED:
        return pl_message_settle_kind(m) == PL_SETTLE_COMPLETE ? PL_RUN_F_BY_HANDLER : PL_RUN_F_DRAINED;
    case PL_LOCK_LOST: return PL_RUN_F_LOST;
    case PL_LOCK_UNKNOWN: return PL_RUN_F_UNKNOWN;
    case PL_LOCK_HELD: return PL_RUN_F_SETTLE_ERROR;
    default: return PL_RUN_F_DRAINED;
    }
}

int pl_run_finish(pl_run *run, unsigned int how, int64_t now_ms)
{
    if (!run) return 0;
    int outcome = outcome_of(how & ~(unsigned int)PL_RUN_F_LATE);
    if (how & PL_RUN_F_LATE) {
        /* counted as left to expire already: completed after all, or as it was */
        if (outcome == PL_RUN_PROCESSED && run->t.left_to_expire > 0) {
            run->t.left_to_expire--;
            run->t.processed++;
        }
        return outcome;
    }
    (*field_of(&run->t, outcome))++;
    if (how & (PL_RUN_F_UNKNOWN | PL_RUN_F_SETTLE_ERROR) && !(how & (PL_RUN_F_DRAINED | PL_RUN_F_EXPIRED)))
        run->t.errors++;
    if (run->in_flight > 0) run->in_flight--;
    run->last_activity = now_ms;
    return outcome;
}

long pl_run_receive_failed(pl_run *run, int code, int retryable, unsigned failures, int64_t now_ms)
{
    if (!run) return -1;
    if (code == PL_ECLOSED) {
        pl_run_stop(run, PL_RUN_CLOSED, now_ms);
        return -1;
    }
    run->t.errors++;
    long ms = pl_receive_pause_ms(code, retryable, failures);
    if (ms < 0) pl_run_stop(run, PL_RUN_ERROR, now_ms);
    return ms;
}

void pl_run_error(pl_run *run)
{
    if (run) run->t.errors++;
}

int pl_run_tallies_get(const pl_run *run, pl_run_tallies *out)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    if (out->version != PL_RUN_TALLIES_VERSION)
        return pl_error_inval("version", "must be PL_RUN_TALLIES_VERSION");
    const pl_run_tallies zero = PL_RUN_TALLIES_INIT;
    *out = run ? run->t : zero;
    out->version = PL_RUN_TALLIES_VERSION;
    out->in_flight = run ? (uint64_t)run->in_flight : 0;
    pl_error_ok();
    return PL_OK;
}

long pl_run_in_flight(const pl_run *run)
{
    return run ? run->in_flight : 0;
}

int64_t pl_run_idle_ms(const pl_run *run, int64_t now_ms)
{
    if (!run || !run->idle_ms || run->in_flight > 0) return -1;
    /* now_ms - last_activity without overflow: a clock gone back is no time passed,
     * a span past INT64_MAX is INT64_MAX */
    int64_t since;
    if (now_ms <= run->last_activity)
        since = 0;
    else if (run->last_activity < 0 && now_ms > INT64_MAX + run->last_activity)
        since = INT64_MAX;
    else
        since = now_ms - run->last_activity;
    return since >= run->idle_ms ? 0 : run->idle_ms - since;
}

int pl_run_stop_reason(pl_run *run, int64_t now_ms)
{
    if (!run) return PL_RUN_GOING;
    if (run->reason == PL_RUN_GOING) {
        if (run->max_messages && run->received >= run->max_messages)
            run->reason = PL_RUN_MAX_MESSAGES;
        else if (pl_run_idle_ms(run, now_ms) == 0)
            run->reason = PL_RUN_IDLE;
    }
    return run->reason;
}

int pl_run_stop(pl_run *run, int reason, int64_t now_ms)
{
    if (!run) return pl_error_inval("run", "must not be NULL");
    if (reason < PL_RUN_GOING || reason > PL_RUN_STOPPED)
        return pl_error_inval("reason", "must be a PL_RUN_* reason");
    if (reason == PL_RUN_ERROR)
        run->reason = reason;
    else if (pl_run_stop_reason(run, now_ms) == PL_RUN_GOING)
        run->reason = reason;
    pl_error_ok();
    return run->reason;
}

const char *pl_run_stop_word(int reason)
{
    return reason >= 0 && reason < (int)(sizeof WORDS / sizeof WORDS[0]) ? WORDS[reason] : NULL;
}
