/* libFuzzer target: connection-string parsing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "peeklock.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) return 0;
    memcpy(s, data, size);
    s[size] = '\0';
    pl_connstr *cs = NULL;
    if (pl_connstr_parse(&cs, s) == PL_OK) {
        const char *ep = pl_connstr_endpoint(cs);
        if (!ep || strncmp(ep, "http", 4) != 0) abort();
        (void)pl_connstr_key_name(cs);
        (void)pl_connstr_entity_path(cs);
    } else if (pl_error_last()->code != PL_EINVAL && pl_error_last()->code != PL_ENOMEM) {
        abort();
    }
    pl_connstr_free(cs);
    free(s);
    return 0;
}
