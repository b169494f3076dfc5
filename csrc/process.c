/*
 * process.c — the value rules of a processor's options (pure): the one place
 * Python's processors and Lua's process check them, and what they do when a
 * receive fails (see peeklock.h).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "error_int.h"
#include "peeklock.h"

/* lo <= value <= hi (NaN is neither), and a whole number when whole is set. */
static int within(double value, double lo, double hi, int whole)
{
    return value >= lo && value <= hi && (!whole || value == floor(value));
}

int pl_check_process_option(const char *name, double value)
{
    int ok;
    const char *what;
    char range[64];
    if (!name) return pl_error_inval("name", "must not be NULL");
    if (!strcmp(name, "concurrency")) {
        ok = within(value, 1, PL_MAX_CONCURRENCY, 1);
        snprintf(range, sizeof range, "must be a whole number 1..%d", PL_MAX_CONCURRENCY);
        what = range;
    } else if (!strcmp(name, "batch")) {
        ok = within(value, 1, PL_MAX_BATCH, 1);
        snprintf(range, sizeof range, "must be a whole number 1..%d", PL_MAX_BATCH);
        what = range;
    } else if (!strcmp(name, "max_messages")) {
        ok = within(value, 1, 9007199254740992.0, 1); /* 2^53: every whole number up to it is exact */
        what = "must be a whole number 1..2^53";
    } else if (!strcmp(name, "max_wait")) {
        ok = within(value, 0, 3600, 0);
        what = "must be 0..3600 seconds";
    } else if (!strcmp(name, "idle_timeout")) {
        ok = value > 0 && isfinite(value);
        what = "must be a positive, finite number of seconds";
    } else if (!strcmp(name, "retry_delay")) {
        ok = within(value, 0, 86400, 0);
        what = "must be 0..86400 seconds";
    } else {
        return pl_error_set(PL_EINVAL, 0, 0, "%.64s: not a processor option", name);
    }
    if (!ok) return pl_error_inval(name, what);
    pl_error_ok();
    return PL_OK;
}

int pl_settle_action(const char *action)
{
    int rc = 0;
    if (action && !strcmp(action, "complete"))
        rc = PL_SETTLE_COMPLETE;
    else if (action && !strcmp(action, "abandon"))
        rc = PL_SETTLE_UNLOCK;
    if (!rc) return pl_error_inval("action", "must be 'complete' or 'abandon'");
    pl_error_ok();
    return rc;
}

long pl_receive_pause_ms(int code, int retryable, unsigned failures)
{
    if (code >= 0) return 0;
    switch (code) {
    case PL_ECLOSED: return -1;
    case PL_EAUTH:
    case PL_ENOTFOUND:
    case PL_EINVAL:
    case PL_EBADREQUEST:
    case PL_ETOOLARGE:
    case PL_ESTATE:
    case PL_EINTERNAL:
        if (!retryable) return -1;
        break;
    default: break;
    }
    long pause = PL_RECEIVE_PAUSE_BASE_MS;
    for (unsigned i = 1; i < failures && pause < PL_RECEIVE_PAUSE_MAX_MS; i++) pause *= 2;
    return pause < PL_RECEIVE_PAUSE_MAX_MS ? pause : PL_RECEIVE_PAUSE_MAX_MS;
}
