/* Private: the message objects (received pl_message, outgoing pl_outgoing,
 * pl_batch) and their lock bookkeeping. Not installed.
 *
 * Lock state machine of a received message (pl_message.lock_state, atomic):
 *   PL_LOCK_HELD -> PL_LOCK_SETTLING -> PL_LOCK_SETTLED | PL_LOCK_LOST
 *   PL_LOCK_HELD -> PL_LOCK_LOST (renew found it gone, or it expired)
 * Whoever wins pl_message_cas_state(m, PL_LOCK_HELD, PL_LOCK_SETTLING) owns the
 * settle; a renewer must only send a renew while the state is PL_LOCK_HELD and must
 * not change the state of a message that is SETTLING/SETTLED.
 */
#ifndef PEEKLOCK_MESSAGE_INT_H
#define PEEKLOCK_MESSAGE_INT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "peeklock.h"

/* One custom property (outgoing or received). */
typedef struct pl_prop {
    char *name;
    int type;   /* PL_PROP_* */
    char *raw;  /* header text as sent/received (strings quoted and escaped) */
    char *text; /* received: unquoted/unescaped text; outgoing: NULL */
    int64_t i;  /* PL_PROP_INT, PL_PROP_BOOL (0/1), PL_PROP_DATETIME (Unix s or -1) */
    double d;   /* PL_PROP_DOUBLE (also set for INT) */
} pl_prop;

struct pl_message {
    atomic_int refs; /* pl_message_free drops one; 0 frees */
    /* The message's owner (the client it came through, which the driver keeps
     * alive for the message's life): owner_release(owner) runs once the last
     * reference is gone. Set by the driver that hands the message out; NULL for
     * a message nobody owns. The pure core never looks at the owner. */
    void (*owner_release)(void *owner);
    void *owner;

    /* lock bookkeeping */
    atomic_int lock_state;                    /* PL_LOCK_* */
    atomic_int lost_reason;                   /* PL_E* code that made it lost, 0 otherwise */
    atomic_int settle_kind;                   /* PL_SETTLE_UNLOCK/COMPLETE: the settle that took the
                                         fence last, 0 before any */
    atomic_int_least64_t lock_expiry_mono_ms; /* client estimate, pl_now_mono_ms() scale */
    int64_t lock_duration_ms;                 /* learned at receive: LockedUntilUtc - Date */

    /* identity (immutable after receipt) */
    char *entity;          /* entity as given to the receive call */
    char *location;        /* settle URL, verbatim from Location; NULL for R&D */
    char *scope;           /* SAS scope of the receive (reused by settles), or NULL */
    char *lock_token;      /* secret; NULL for receive-and-delete */
    int64_t seq;           /* SequenceNumber, -1 if absent */
    int64_t enqueued_seq;  /* EnqueuedSequenceNumber, -1 if absent */
    int delivery_count;    /* -1 if absent */
    int64_t enqueued_time; /* Unix s, -1 */
    int64_t locked_until;  /* Unix s (server clock), -1 */
    double ttl;            /* seconds, -1 */

    /* content */
    unsigned char *body; /* NUL-terminated copy for convenience */
    size_t body_len;
    char *content_type;   /* or NULL */
    char *broker_json;    /* raw BrokerProperties, or NULL */
    char *broker_str[10]; /* see pl_message_broker_index */
    pl_prop *props;
    size_t nprops;
    size_t props_cap; /* slots of props (in the arena or malloc'd) */

    /* A received message is one allocation: the struct, then its property
     * table and strings (arena_pos..arena_end unused). A string or table that
     * lies inside [m, arena_end) is not freed on its own; anything else set on
     * the message (pl_message_alloc, or an arena too small) is malloc'd. */
    char *arena_pos, *arena_end;
};

/* Index of a string BrokerProperties field in broker_str, or -1. Fields:
 * MessageId Label CorrelationId SessionId PartitionKey ReplyTo ReplyToSessionId To
 * State ViaPartitionKey. */
int pl_message_broker_index(const char *field);

static inline void pl_message_ref(pl_message *m)
{
    atomic_fetch_add(&m->refs, 1);
}

/* Compare-and-swap of the lock state; 1 when it changed from `from` to `to`. */
static inline int pl_message_cas_state(pl_message *m, int from, int to)
{
    int expected = from;
    return atomic_compare_exchange_strong(&m->lock_state, &expected, to);
}
static inline int pl_message_state(const pl_message *m)
{
    return atomic_load(&((pl_message *)m)->lock_state);
}
/* Forces the state (use the CAS where a race matters). */
static inline void pl_message_set_state(pl_message *m, int s)
{
    atomic_store(&m->lock_state, s);
}

/* Sets expiry = sent_mono_ms + lock_duration_ms (call after a successful renew or
 * receive; sent_mono_ms is when the request went out). */
static inline void pl_message_extend(pl_message *m, int64_t sent_mono_ms)
{
    atomic_store(&m->lock_expiry_mono_ms, sent_mono_ms + m->lock_duration_ms);
}
/* HELD -> LOST with the given reason; returns 1 if this call made it lost.
 * Also moves SETTLING -> LOST when from_settling is nonzero (the settle's own
 * failure). */
int pl_message_mark_lost(pl_message *m, int reason, int from_settling);

/* What a response header is to a received message (pl_header_kind; n = strlen(name)). */
#define PL_HDR_CUSTOM       0 /* a custom property */
#define PL_HDR_RESERVED     1 /* never a property, not used otherwise */
#define PL_HDR_CONTENT_TYPE 2
#define PL_HDR_BROKER       3
#define PL_HDR_LOCATION     4
#define PL_HDR_DATE         5
#define PL_HDR_RETRY_AFTER  6
int pl_header_kind(const char *name, size_t n);

/* Creates an empty message with refs = 1, state PL_LOCK_NONE, numbers -1. */
pl_message *pl_message_alloc(void);
/* Same, with `arena` bytes after the struct for its strings, property table
 * (nprops_cap slots, placed first) and body. */
pl_message *pl_message_alloc_arena(size_t nprops_cap, size_t arena);
/* A copy of s[0..n) (NUL-terminated) in m's arena, else malloc'd. */
char *pl_message_strndup(pl_message *m, const char *s, size_t n);
/* Parses a BrokerProperties JSON value (len bytes, need not be NUL-terminated)
 * into m's fields. PL_EPROTOCOL (error set, never echoing the lock token) when
 * malformed. Pure. */
int pl_message_parse_broker(pl_message *m, const char *json, size_t len);
/* Adds a received custom property header, typing it from its form. Pure. */
int pl_message_add_received_prop(pl_message *m, const char *name, const char *value);
/* Same with the lengths known. */
int pl_message_add_received_prop_n(pl_message *m, const char *name, size_t nlen, const char *value,
                                   size_t vlen);
/* Types a header value the way the service does (PL_PROP_*), filling p->text/i/d. */
int pl_prop_parse_value(pl_prop *p, const char *value);

/* ---- outgoing ---------------------------------------------------------- */

#define PL_OUT_NFIELDS 9 /* settable string BrokerProperties fields */

struct pl_outgoing {
    unsigned char *body;
    size_t body_len;
    char *content_type;           /* NULL: default for send */
    char *fields[PL_OUT_NFIELDS]; /* order of pl_outgoing_field_names */
    double ttl;                   /* < 0: unset */
    int64_t scheduled;            /* < 0: unset */
    int force_persistence;        /* -1 unset, 0, 1 */
    int resend;                   /* pl_outgoing_set_resend: may be sent again after a
                                      lost answer (needs a MessageId) */
    pl_prop *props;
    size_t nprops;
};

extern const char *const pl_outgoing_field_names[PL_OUT_NFIELDS];

/* Serialises the BrokerProperties of m as compact JSON (*out, free()), or sets
 * *out = NULL when nothing is set. */
int pl_outgoing_broker_json(char **out, const pl_outgoing *m);
/* Deep copy. */
int pl_outgoing_clone(pl_outgoing **out, const pl_outgoing *m);

struct pl_batch {
    pl_outgoing **items;
    size_t n, cap;
};

/* Body of a batch send (JSON array), *out freed with free(). PL_EINVAL when a
 * body cannot be carried as JSON text (contains NUL). */
int pl_batch_json(char **out, size_t *len, const pl_batch *b);

#endif
