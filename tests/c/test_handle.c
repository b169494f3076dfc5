/*
 * Unit tests of the lock handle codec (csrc/handle_codec.c): a handle is untrusted
 * text, so numbers that do not fit the message's fields (too large, negative,
 * fractional) are refused as PL_EINVAL rather than converted. Pure: links
 * peeklock_pure alone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handle_int.h"
#include "support.h"

#define EP "http://127.0.0.1:1"

/* "plh1." + unpadded base64url of json, in buf */
static const char *handle_of(char *buf, size_t cap, const char *json)
{
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const unsigned char *in = (const unsigned char *)json;
    size_t n = strlen(json), o = 0;
    o += (size_t)snprintf(buf, cap, "plh1.");
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16;
        if (i + 1 < n) v |= (unsigned)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        size_t k = n - i >= 3 ? 4 : n - i + 1;
        for (size_t j = 0; j < k && o + 1 < cap; j++) buf[o++] = A[(v >> (18 - 6 * j)) & 63];
    }
    buf[o] = '\0';
    return buf;
}

static int decode(const char *fields, int64_t *seq)
{
    char json[1024], h[2048];
    snprintf(json, sizeof json,
             "{\"e\":\"q\",\"l\":\"" EP "/q/messages/7/0a1b2c3d-0000-0000-0000-000000000001\",%s}", fields);
    pl_message *m = NULL;
    int64_t expiry = 0;
    int rc = pl_handle_decode(&m, EP, handle_of(h, sizeof h, json), &expiry);
    if (rc == PL_OK && seq) *seq = pl_message_sequence_number(m);
    pl_message_free(m);
    return rc;
}

int main(void)
{
    int64_t seq = -1;
    CHECK_EQ(decode("\"q\":7,\"d\":30000,\"x\":1800000000000", &seq), PL_OK);
    CHECK_EQ(seq, 7);
    CHECK_EQ(decode("\"q\":9007199254740992,\"d\":30000,\"x\":0", &seq), PL_OK);
    CHECK_EQ(seq, (int64_t)9007199254740992LL);
    /* numbers outside what the fields hold: refused, never cast */
    CHECK_EQ(decode("\"q\":1e300,\"d\":30000,\"x\":1800000000000", NULL), PL_EINVAL);
    CHECK_EQ(decode("\"q\":-1,\"d\":30000,\"x\":1800000000000", NULL), PL_EINVAL);
    CHECK_EQ(decode("\"q\":7.5,\"d\":30000,\"x\":1800000000000", NULL), PL_EINVAL);
    CHECK_EQ(decode("\"q\":7,\"d\":30000,\"x\":1e300", NULL), PL_EINVAL);
    CHECK_EQ(decode("\"q\":7,\"d\":30000,\"x\":-1e300", NULL), PL_EINVAL);
    CHECK_EQ(decode("\"q\":7,\"d\":0,\"x\":1800000000000", NULL), PL_EINVAL);
    CHECK_EQ(decode("\"q\":7,\"d\":3600001,\"x\":1800000000000", NULL), PL_EINVAL);
    CHECK_EQ(decode("\"q\":7,\"d\":0.5,\"x\":1800000000000", NULL), PL_EINVAL);
    return pl_test_done("test_handle");
}
