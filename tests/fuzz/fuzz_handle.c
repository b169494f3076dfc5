/* libFuzzer target: lock handles (pl_client_attach parses a string that may come from
 * anywhere: another process, a job queue, a user). The pure codec alone: anything but
 * a handle for this endpoint is PL_EINVAL; a handle that decodes encodes again and
 * decodes to the same lock. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "handle_int.h"
#include "peeklock.h"

#define EP "http://127.0.0.1:1"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    pl_message *m = NULL;
    int64_t expiry = 0;
    if (pl_handle_decode(&m, EP, s, &expiry) == PL_OK) {
        if (pl_message_lock_state(m) != PL_LOCK_HELD || !pl_message_lock_token(m)) abort();
        char *again = NULL;
        pl_message *m2 = NULL;
        int64_t expiry2 = 0;
        if (pl_handle_encode(&again, m, expiry) != PL_OK || strncmp(again, "plh1.", 5) != 0) abort();
        if (pl_handle_decode(&m2, EP, again, &expiry2) != PL_OK ||
            strcmp(pl_message_lock_token(m2), pl_message_lock_token(m)) != 0)
            abort();
        free(again);
        pl_message_free(m2);
        pl_message_free(m);
    } else if (pl_error_last()->code != PL_EINVAL && pl_error_last()->code != PL_ENOMEM) {
        abort();
    }
    free(s);
    return 0;
}
