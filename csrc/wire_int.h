/* Private: sans-I/O requests and responses (wire.c). Pure: no I/O, no clock. */
#ifndef PEEKLOCK_WIRE_INT_H
#define PEEKLOCK_WIRE_INT_H

#include <stddef.h>
#include <stdint.h>
#include "peeklock.h"

#define PL_MAX_HEADERS      256         /* more response headers: protocol error */
#define PL_MAX_HEADER_BYTES (64 * 1024) /* longer header value: protocol error */
#define PL_MAX_BODY_BYTES   ((size_t)128 * 1024 * 1024)

/* What a request is for. */
/* A macro's value as a string literal, for messages that state a public limit. */
#define PL_STRINGIFY_(x) #x
#define PL_STRINGIFY(x)  PL_STRINGIFY_(x)

#define PL_OP_SEND     1
#define PL_OP_BATCH    2
#define PL_OP_PEEKLOCK 3
#define PL_OP_RECVDEL  4
#define PL_OP_RENEW    5
#define PL_OP_UNLOCK   6
#define PL_OP_COMPLETE 7

typedef struct pl_header {
    char *name;
    char *value;
    int kind; /* response headers: PL_HDR_* (message_int.h), classified
                               once when collected; -1 when not known */
} pl_header;

#define PL_REQ_INLINE_HEADERS 4

/* One allocation holds the struct and its url, scope and entity strings (strs);
 * each header is one allocation "name\0value\0" (free name only). */
struct pl_request {
    int op;             /* PL_OP_* */
    const char *method; /* "POST", "PUT", "DELETE" (static) */
    char *url;          /* in strs */
    char *scope;        /* in strs: SAS scope URL (endpoint + "/" + entity), lower-cased */
    char *entity;       /* in strs: as given (receives, sends) or the message's entity */
    int timeout_s;      /* receives: long-poll seconds */
    pl_header *headers; /* hdr_inline or malloc'd */
    size_t nheaders;
    pl_header hdr_inline[PL_REQ_INLINE_HEADERS];
    unsigned char *body;
    size_t body_len;
    size_t msg_count; /* messages carried (send 1, batch n) */
    int resend_ok;    /* send/batch: every message opted in to being sent again
                               after a lost answer and carries a MessageId */
    char strs[];
};

struct pl_response {
    int status;
    pl_header *headers;
    size_t nheaders;
    size_t headers_cap; /* slots of headers */
    unsigned char *body;
    size_t body_len;
    size_t body_cap;
    int too_big; /* a limit was exceeded while collecting */
    /* Set by a driver that collected the response into storage of its own (the
     * libcurl collector, client_int.h): pl_response_free frees the body, then
     * calls it for the headers and the struct. NULL: each header name and value
     * and the header table are malloc'd (pl_response_new, _add_header). */
    void (*release)(pl_response *r);
};

/* Name of an operation for messages ("send", "peek-lock", ...). */
const char *pl_wire_op_name(int op);

/* Validates an entity path and returns its percent-encoded form (free()). */
int pl_entity_encode(char **out, const char *entity);

/* Builders. endpoint: "scheme://host[:port]" without trailing slash. auth: the
 * full Authorization header value, or NULL for none. */
int pl_wire_send(pl_request **out, const char *endpoint, const char *entity, const pl_outgoing *m,
                 const char *auth);
int pl_wire_batch(pl_request **out, const char *endpoint, const char *entity, const pl_batch *b,
                  const char *auth);
int pl_wire_receive(pl_request **out, const char *endpoint, const char *entity, int timeout_s, int peek_lock,
                    const char *auth);
/* op: PL_SETTLE_*; uses m->location verbatim after checking it is on endpoint. */
int pl_wire_settle(pl_request **out, const char *endpoint, const pl_message *m, int op, const char *auth);
/* The SAS scope of a request, without building it (for the token lookup). */
int pl_wire_scope(char **out, const char *endpoint, const char *entity);

/* Adds/replaces a request header (copied). */
int pl_request_set_header(pl_request *req, const char *name, const char *value);

/* First header of that name (case-insensitive), or NULL. */
const char *pl_response_header(const pl_response *resp, const char *name);
/* Appends body bytes (bounded by PL_MAX_BODY_BYTES; sets too_big). */
int pl_response_append_body(pl_response *resp, const void *p, size_t n);

/* Maps a non-success HTTP status of a request to a PL_E* code and sets the
 * thread's last error (message from the <Error><Detail> body, without secrets). */
int pl_wire_status_error(const pl_request *req, const pl_response *resp);

/* Interprets resp (pure part of pl_response_result): receives produce *out;
 * settles update m (state, expiry from sent_mono_ms). A new message has no
 * owner: the driver that hands it out sets one (pl_client_adopt). */
int pl_wire_result(pl_message **out, const char *endpoint, const pl_request *req, pl_message *m,
                   const pl_response *resp, int64_t sent_mono_ms);

#endif
