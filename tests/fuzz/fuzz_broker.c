/* libFuzzer target: BrokerProperties JSON, custom-property header values and
 * RFC 1123 dates. The input need not be NUL-terminated. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error_int.h"
#include "message_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pl_message *m = pl_message_alloc();
    if (!m) return 0;
    int rc = pl_message_parse_broker(m, (const char *)data, size);
    if (rc != PL_OK && rc != PL_EPROTOCOL && rc != PL_ENOMEM) abort();
    char *s = malloc(size + 1);
    if (s) {
        memcpy(s, data, size);
        s[size] = '\0';
        (void)pl_message_add_received_prop(m, "p", s);
        (void)pl_http_date_parse(s);
        free(s);
    }
    pl_message_free(m);
    return 0;
}
