/* Test support: blocking helpers over the asynchronous engine (pl_aio), for the C
 * tests that drive it as an event loop would: poll() on its fd, then drain. */
#ifndef PL_TEST_AIO_SUPPORT_H
#define PL_TEST_AIO_SUPPORT_H

#include <poll.h>

#include "error_int.h"
#include "support.h"

/* Waits (poll on the fd, up to timeout_ms) for the completion of id, taking the
 * completions that come before it into *others (freed when NULL). Returns it, or
 * NULL on timeout. The thread's last error is set from the completion. */
static inline pl_aio_done *aio_wait(pl_aio *a, uint64_t id, long timeout_ms)
{
    int64_t end = pl_now_mono_ms() + timeout_ms;
    for (;;) {
        pl_aio_done *d = NULL;
        while (pl_aio_next(&d, a) == PL_OK) {
            if (pl_aio_done_id(d) == id) {
                int code = pl_aio_done_code(d);
                if (code < 0)
                    pl_error_set(code, pl_aio_done_http_status(d), pl_aio_done_retryable(d), "%s",
                                 pl_aio_done_message(d));
                else
                    pl_error_ok();
                return d;
            }
            pl_aio_done_free(d);
        }
        int64_t left = end - pl_now_mono_ms();
        if (left <= 0) return NULL;
        struct pollfd p = {pl_aio_fd(a), POLLIN, 0};
        poll(&p, 1, (int)left);
    }
}

/* Waits for the completion of a submit that returned rc and set *id (a pointer:
 * read after the submit ran), returns its code; *got takes a received message
 * when got is not NULL. */
static inline int aio_finish(pl_aio *a, int rc, const uint64_t *idp, pl_message **got)
{
    uint64_t id = *idp;
    if (got) *got = NULL;
    if (rc != PL_OK) return rc;
    pl_aio_done *d = aio_wait(a, id, 120000);
    if (!d) return pl_error_set(PL_ETIMEOUT, 0, 0, "no completion in time");
    int code = pl_aio_done_code(d);
    if (got) *got = pl_aio_done_take_message(d);
    pl_aio_done_free(d);
    return code;
}

/* Takes n completions (waiting on the fd, up to timeout_ms in all); returns how
 * many had code want. Received messages are freed. */
static inline int aio_collect(pl_aio *a, int n, int want, long timeout_ms)
{
    int64_t end = pl_now_mono_ms() + timeout_ms;
    int seen = 0, match = 0;
    while (seen < n) {
        pl_aio_done *d = NULL;
        if (pl_aio_next(&d, a) == PL_OK) {
            seen++;
            match += pl_aio_done_code(d) == want;
            pl_message_free(pl_aio_done_take_message(d));
            pl_aio_done_free(d);
            continue;
        }
        int64_t left = end - pl_now_mono_ms();
        if (left <= 0) break;
        struct pollfd p = {pl_aio_fd(a), POLLIN, 0};
        poll(&p, 1, (int)left);
    }
    return match;
}

#endif
