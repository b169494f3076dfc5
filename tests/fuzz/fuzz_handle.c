/* libFuzzer target: lock handles (pl_client_attach parses a string that may come from
 * anywhere: another process, a job queue, a user). Anything but a handle for this
 * client's namespace is PL_EINVAL; a handle that attaches round-trips. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "peeklock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pl_client *client;
    if (!client) {
        pl_client_options o = PL_CLIENT_OPTIONS_INIT;
        o.connection_string = "Endpoint=sb://127.0.0.1:1;SharedAccessKeyName=k;SharedAccessKey=v;"
                              "UseDevelopmentEmulator=true";
        if (pl_client_new(&client, &o) != PL_OK) abort();
    }
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    pl_message *m = NULL;
    if (pl_client_attach(&m, client, s) == PL_OK) {
        if (pl_message_lock_state(m) != PL_LOCK_HELD || !pl_message_lock_token(m)) abort();
        char *again = NULL;
        if (pl_message_lock_handle(&again, m) != PL_OK || strncmp(again, "plh1.", 5) != 0) abort();
        pl_free(again);
        pl_message_free(m);
    } else if (pl_error_last()->code != PL_EINVAL && pl_error_last()->code != PL_ENOMEM) {
        abort();
    }
    free(s);
    return 0;
}
