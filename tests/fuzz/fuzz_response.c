/* libFuzzer target: whole responses fed to the response interpreter.
 * Input layout: first byte picks the request kind (peek-lock, receive-and-delete,
 * renew, unlock, complete, send); then "STATUS\n", header lines "Name: value\n",
 * an empty line, and the body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error_int.h"
#include "message_int.h"
#include "wire_int.h"

#define EP "https://ns.servicebus.windows.net"

static pl_message *held(void)
{
    pl_message *m = pl_message_alloc();
    m->entity = pl_strdup("q");
    m->location = pl_strdup(EP "/q/messages/1/0e80aa4d-a5d1-4a99-b09e-d118f8c5972c");
    m->lock_token = pl_strdup("0e80aa4d-a5d1-4a99-b09e-d118f8c5972c");
    m->lock_duration_ms = 60000;
    pl_message_set_state(m, PL_LOCK_HELD);
    return m;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int kind = data[0] % 6;
    const char *p = (const char *)data + 1, *end = (const char *)data + size;
    int status = 0;
    while (p < end && *p >= '0' && *p <= '9' && status < 1000) status = status * 10 + (*p++ - '0');
    if (p < end && *p == '\n') p++;
    pl_response *resp = NULL;
    if (pl_response_new(&resp, status) != PL_OK) return 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (!nl) nl = end;
        if (nl == p) {
            p++;
            break;
        }
        const char *colon = memchr(p, ':', (size_t)(nl - p));
        if (colon) {
            char *name = pl_strndup(p, (size_t)(colon - p));
            const char *v = colon + 1;
            while (v < nl && *v == ' ') v++;
            char *value = pl_strndup(v, (size_t)(nl - v));
            if (name && value) (void)pl_response_add_header(resp, name, value);
            free(name);
            free(value);
        }
        p = nl < end ? nl + 1 : end;
    }
    if (p < end) (void)pl_response_set_body(resp, p, (size_t)(end - p));

    pl_request *req = NULL;
    pl_message *m = NULL, *out = NULL;
    int rc;
    switch (kind) {
    case 0:
    case 1: rc = pl_wire_receive(&req, EP, "q", 5, kind == 0, NULL); break;
    case 2:
    case 3:
    case 4:
        m = held();
        rc = pl_wire_settle(&req, EP, m, kind - 1, NULL);
        break;
    default: {
        pl_outgoing *o = NULL;
        pl_outgoing_new(&o, "x", 1);
        rc = pl_wire_send(&req, EP, "q", o, NULL);
        pl_outgoing_free(o);
    }
    }
    if (rc == PL_OK) {
        rc = pl_wire_result(kind <= 1 ? &out : NULL, EP, req, m, resp, 0);
        if (rc == PL_OK && kind <= 1 && !out) abort();
        if (out) {
            size_t len;
            const unsigned char *b = pl_message_body(out, &len);
            if (len && !b) abort();
            for (size_t i = 0; i < pl_message_property_count(out); i++)
                (void)pl_message_property_string(out, i);
        }
    }
    pl_message_free(out);
    pl_message_free(m);
    pl_request_free(req);
    pl_response_free(resp);
    return 0;
}
