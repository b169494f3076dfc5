/* Lock handles: a peek-locked message's lock as a string another process can
 * attach to (pl_message_lock_handle, pl_client_attach). The format and its
 * parser are pure (handle_codec.c); this driver part reads the clocks and makes
 * the client the attached message's owner.
 *
 * Expiry crosses processes as wall-clock time (monotonic clocks are per
 * process); the server stays the authority: a settle of an expired lock is
 * answered 404 and reported as lock lost. */
#include "client_int.h"

#include <stdatomic.h>
#include <time.h>

#include "error_int.h"
#include "handle_int.h"
#include "message_int.h"

static int64_t now_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int pl_message_lock_handle(char **out, const pl_message *m)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (!m) return pl_error_inval("m", "must not be NULL");
    return pl_handle_encode(out, m, now_wall_ms() + pl_message_lock_remaining_ms(m));
}

int pl_client_attach(pl_message **out, pl_client *client, const char *handle)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (!client) return pl_error_inval("client", "must not be NULL");
    pl_message *m = NULL;
    int64_t expiry_wall_ms = 0;
    int rc = pl_handle_decode(&m, pl_client_endpoint(client), handle, &expiry_wall_ms);
    if (rc != PL_OK) return rc;
    /* wall-clock expiry back onto this process's monotonic clock */
    atomic_store(&m->lock_expiry_mono_ms, pl_now_mono_ms() + (expiry_wall_ms - now_wall_ms()));
    pl_client_adopt(client, m);
    *out = m;
    return PL_OK;
}
