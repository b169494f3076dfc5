/*
 * peeklock — a client for the Azure Service Bus REST message-lock operations.
 *
 * One public header. Conventions (see docs/ and shared design):
 *  - Functions and types are prefixed pl_, macros and codes PL_.
 *  - Fallible calls return int: PL_OK (0), a positive non-error outcome where one
 *    exists (PL_EMPTY), or a negative PL_E* code. Codes never renumber.
 *    Detail (message, HTTP status, retryable) is in the thread-local pl_error_last().
 *  - A call that hands back a new object or string takes that output first,
 *    named out (pl_peek_lock(&msg, client, ...)); the caller frees it with the
 *    matching pl_*_free, which accepts NULL. A call on a handle takes the handle
 *    first and returns any other result through a pointer after it: a length
 *    (pl_message_body(m, &len)), a request id (pl_aio_send(a, &id, ...)),
 *    pl_renewer_finish's outcome, a stats struct (pl_*_stats_get(x, &st)).
 *    Nothing filled that way needs freeing. One exception: pl_aio_done_take_message
 *    returns the message it hands over (NULL when there is none).
 *  - Borrowed pointers (const char * returned by accessors) live as long as the
 *    object they were read from, unless stated otherwise.
 *  - A handle parameter named <x>_or_null may be NULL (its comment says what NULL
 *    means there). The bindings go by the name: the Lua module refuses nil for
 *    every other handle parameter.
 *  - No secret (SAS key, signature, lock token) ever appears in an error message.
 *
 * Thread safety: a pl_client may be used by many threads at once. A pl_message
 * may be settled from any thread; its accessors are safe to call concurrently
 * (the body and properties never change after receipt). pl_outgoing and
 * pl_batch are not thread-safe: build them on one thread.
 */
#ifndef PEEKLOCK_H
#define PEEKLOCK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32) && defined(PEEKLOCK_SHARED_BUILD)
#define PL_EXTERN __declspec(dllexport)
#elif defined(__GNUC__)
#define PL_EXTERN __attribute__((visibility("default")))
#else
#define PL_EXTERN
#endif

#define PEEKLOCK_VERSION_MAJOR 0
#define PEEKLOCK_VERSION_MINOR 1
#define PEEKLOCK_VERSION_PATCH 0
#define PEEKLOCK_VERSION       "0.1.0"

/* Library version string (matches PEEKLOCK_VERSION of the header it was built with). */
PL_EXTERN const char *pl_version(void);

/* ------------------------------------------------------------------------ */
/* Result codes. Never renumbered; new codes are appended.                    */
/* ------------------------------------------------------------------------ */

#define PL_OK    0
#define PL_EMPTY 1 /* receive: no message arrived within the timeout */

#define PL_EINVAL     (-1)  /* invalid argument (message names it) */
#define PL_ENOMEM     (-2)  /* out of memory */
#define PL_EAUTH      (-3)  /* 401, or 403 that is not a size limit */
#define PL_ENOTFOUND  (-4)  /* entity does not exist (410; 404 on management) */
#define PL_ELOCKLOST  (-5)  /* 404 on renew/unlock/complete: lock or message gone */
#define PL_ETOOLARGE  (-6)  /* 403 whose detail says the size limit was exceeded */
#define PL_ETHROTTLED (-7)  /* 503 ServerBusy / 429, after the retry policy */
#define PL_ESERVER    (-8)  /* other 5xx, after the retry policy */
#define PL_ETIMEOUT   (-9)  /* transport timeout */
#define PL_ECONNECT   (-10) /* could not connect, connection reset, TLS failure */
#define PL_EPROTOCOL  (-11) /* malformed or unexpected response */
/* outcome unknown: the request may or may not have been carried out (a send may
 * have stored the message, a receive-and-delete removed one, a complete or unlock
 * settled it). Remembered on a message: a later settle says PL_EUNKNOWN again.
 * The table: docs/c-api.md, "Outcomes" */
#define PL_EUNKNOWN    (-12)
#define PL_EBADREQUEST (-13) /* 400 */
#define PL_ECONFLICT   (-14) /* 409 */
/* the object is in the wrong state for the call (e.g. message already settled,
 * or not peek-locked) */
#define PL_ESTATE    (-15)
#define PL_ECLOSED   (-16) /* the client or renewer was closed */
#define PL_EHTTP     (-17) /* any other unexpected HTTP status */
#define PL_EINTERNAL (-18) /* a bug in peeklock */
/* an asynchronous operation was cancelled before it took effect (pl_aio_cancel) */
#define PL_ECANCELED (-19)

/* The same code under the name the bindings use (OutcomeUnknownError). */
#define PL_EOUTCOME_UNKNOWN PL_EUNKNOWN

/* Static, human-readable name of a code ("PL_ELOCKLOST: lock lost"). Never NULL. */
PL_EXTERN const char *pl_strerror(int code);
/* Static name of a code ("PL_ELOCKLOST"); NULL for a number that is no code. */
PL_EXTERN const char *pl_code_name(int code);
/* Static word for a code, as the Lua module's err.code spells it ("lock_lost",
 * "unknown_outcome"); NULL for a number that is no code. Words never change. */
PL_EXTERN const char *pl_code_word(int code);
/* Every code, for bindings that build their tables from the core: how many there
 * are, and the i-th of them (0 <= i < pl_code_count(), PL_OK first; any other i
 * gives PL_EINTERNAL). */
PL_EXTERN int pl_code_count(void);
PL_EXTERN int pl_code_at(int i);

typedef struct pl_error {
    int code;            /* the PL_* code of the last failure on this thread */
    int http_status;     /* HTTP status if a response was received, else 0 */
    int retryable;       /* 1 when retrying the same call later may succeed */
    const char *message; /* never NULL; contains no secret */
} pl_error;

/* The last error set on the calling thread. Valid until the next peeklock call on
 * this thread. Never NULL (code PL_OK and message "" when nothing failed). */
PL_EXTERN const pl_error *pl_error_last(void);
PL_EXTERN void pl_error_clear(void);

/* Frees memory returned through a char **out (tokens, strings). Accepts NULL. */
PL_EXTERN void pl_free(void *p);

/* The one list of secret forms, for text that may carry one (a server's error
 * detail, a message a binding shows): *out = text with the value after each of
 * sig=, SharedAccessKey=, SharedSecretValue= (whitespace allowed around the '='),
 * "SharedAccessSignature[=] sr=..." and "Bearer <8 or more token characters>"
 * replaced by <redacted> (the name is kept; names match in any case; whitespace
 * includes the Unicode spaces, NBSP and the like, in UTF-8), and every GUID (a
 * lock token looks like one) replaced by <guid>, but for one after "TrackingId:"
 * (the service's id of a request, no secret, which its support asks for). A value runs to whitespace, a
 * quote, or '&' (sig) or ';' (the others); a value that opens with a quote runs
 * to the matching quote (with none, to '&' or ';' or the end). Freed with
 * pl_free. Redacting redacted text changes nothing.
 * PL_OK, PL_EINVAL (NULL argument) or PL_ENOMEM; pl_error_last() is left as it
 * was (a binding redacts the message of the error it is reporting). Pure; any
 * thread. */
PL_EXTERN int pl_redact(char **out, const char *text);

/* The names of the core's operations, which open some of its messages ("complete on
 * 'q': ...", "send: ..."): index 0, 1, 2, ... gives each name, then NULL (a binding
 * that recognises them lists them by counting up from 0). Index 0 is "request", the
 * name of a call of no other kind. Pure; any thread. */
PL_EXTERN const char *pl_op_name(int index);

/* ------------------------------------------------------------------------ */
/* SAS tokens and connection strings (pure, no I/O)                           */
/* Thread safety: all of these may be called from any thread. A pl_connstr is */
/* immutable once parsed; the strings its accessors return are borrowed and   */
/* live until pl_connstr_free.                                                 */
/* ------------------------------------------------------------------------ */

/* Signs resource_uri per the Service Bus SAS algorithm: sr = lowercase
 * percent-encoding of resource_uri, sig = base64(HMAC-SHA256(UTF-8 key text,
 * sr "\n" expiry)). *out = "SharedAccessSignature sr=..&sig=..&se=..&skn=..",
 * freed with pl_free. The key is used as text, never base64-decoded. An
 * expiry_unix before 1000000000 (2001-09-09) is refused: it is a lifetime in
 * seconds passed where the absolute end was meant. */
PL_EXTERN int pl_sas_token(char **out, const char *resource_uri, const char *key_name, const char *key,
                           int64_t expiry_unix);

/* An expiry as a binding takes it (a number of Unix seconds, rounded down to the
 * int64_t of pl_sas_token): PL_OK when -2^63 < unix_seconds < 2^63, else PL_EINVAL with
 * pl_error_last() "<name>: must be a 64-bit Unix time (seconds), got <value>" (NaN
 * and the infinities too). Python's and Lua's sas_token check their expiry with it. */
PL_EXTERN int pl_check_expiry(const char *name, double unix_seconds);

/* Same, but signs sr exactly as given (already encoded). */
PL_EXTERN int pl_sas_token_raw(char **out, const char *encoded_sr, const char *key_name, const char *key,
                               int64_t expiry_unix);

typedef struct pl_connstr pl_connstr;

/* Parses "Endpoint=sb://..;SharedAccessKeyName=..;SharedAccessKey=..[;EntityPath=..]
 * [;UseDevelopmentEmulator=true]", the SharedAccessSignature= form and the legacy
 * SharedSecretIssuer/SharedSecretValue form. Keys are case-insensitive. On
 * failure the message names the faulty part and never echoes a key. */
PL_EXTERN int pl_connstr_parse(pl_connstr **out, const char *s);
PL_EXTERN void pl_connstr_free(pl_connstr *cs);
/* REST base URL derived from Endpoint: "https://host[:port]" ("http://" when
 * UseDevelopmentEmulator=true), without a trailing slash. */
PL_EXTERN const char *pl_connstr_endpoint(const pl_connstr *cs);
PL_EXTERN const char *pl_connstr_key_name(const pl_connstr *cs);     /* or NULL */
PL_EXTERN const char *pl_connstr_key(const pl_connstr *cs);          /* or NULL; a secret */
PL_EXTERN const char *pl_connstr_sas_token(const pl_connstr *cs);    /* or NULL; a secret */
PL_EXTERN const char *pl_connstr_entity_path(const pl_connstr *cs);  /* or NULL */
PL_EXTERN int pl_connstr_development_emulator(const pl_connstr *cs); /* 0 or 1 */

/* ------------------------------------------------------------------------ */
/* Client                                                                     */
/* Thread safety: every function taking a pl_client may be called from many  */
/* threads at once, except pl_client_free, which must not race with the      */
/* caller's own calls on that client (messages and renewers keep their own    */
/* references, so they may outlive the caller's).                             */
/* Outcomes (csrc/outcome.c; the table: docs/c-api.md, "Outcomes"): failures */
/* where retrying is safe (nothing sent; 503/429; other 5xx and lost answers  */
/* on peek-lock, renew, unlock, complete) are retried max_retries times with  */
/* exponential backoff and jitter, or after Retry-After. A send, batch or     */
/* receive-and-delete whose answer was lost, cut short or a 5xx other than    */
/* 503 returns PL_EUNKNOWN (never retried unless pl_outgoing_set_resend), as  */
/* does a settle that fails after an attempt that may have been carried out. */
/* Past max_retries (when it is not 0), unlock and complete keep trying (at   */
/* most 64 tries) while the lock they settle is still valid.                  */
/* ------------------------------------------------------------------------ */

typedef struct pl_client pl_client;

/* Bearer-token callback (Entra ID): write a NUL-terminated token (without the
 * "Bearer " prefix) of at most buflen-1 bytes into buf and its expiry (Unix
 * seconds) into *expires_unix; return 0 on success, nonzero on failure. May be
 * called from any peeklock thread (including the renewer), never concurrently
 * with itself for one client. */
typedef int (*pl_token_cb)(void *userdata, const char *audience, char *buf, size_t buflen,
                           int64_t *expires_unix);

/* Log hook: what a blocking call meets, told as it happens (see pl_log_fn). */
#define PL_LOG_RETRY  1 /* an attempt failed; the call tries again after delay_ms */
#define PL_LOG_FAILED 2 /* the call ends in an error (after its retries), about to return code */

typedef struct pl_log_record {
    int kind;              /* PL_LOG_RETRY or PL_LOG_FAILED */
    const char *operation; /* "send", "send_batch", "peek_lock", "receive_and_delete",
                              "renew_lock", "unlock", "complete" */
    const char *entity;    /* the queue, topic or subscription path */
    int code;              /* RETRY: the failed attempt's PL_E* code; FAILED: the call's result */
    int http_status;       /* the attempt's HTTP status; 0 when no answer came */
    int attempt;           /* the attempt that failed, counted from 1 */
    long delay_ms;         /* RETRY: the wait before the next attempt; FAILED: 0 */
    const char *message;   /* what went wrong (as pl_error_last()'s message); no secret */
} pl_log_record;

/* Called for each retry and each failed call of the blocking operations (pl_send,
 * pl_send_batch, pl_peek_lock, pl_receive_and_delete, pl_renew_lock, pl_unlock,
 * pl_complete), synchronously, on the thread that made the call, before it waits
 * (RETRY) or returns (FAILED); with no peeklock lock held. Calls on several threads
 * call it concurrently: it must be thread-safe, and quick (the call waits for it).
 * rec and its strings are borrowed for the duration of the call: copy what you keep.
 * No field ever holds a lock token, SAS key or signature. It may call peeklock
 * functions (the thread's pl_error_last() is put back as the call returns it after
 * the hook). A receive that finds nothing or is ended by pl_client_interrupt_receives
 * is no failure. The renewer and pl_aio never call it (their threads must not wait
 * on the host): renewer events (PL_EVENT_RENEW_FAILED) and pl_aio completions tell
 * the same. Retries and failed calls are counted in pl_client_stats either way. */
typedef void (*pl_log_fn)(void *userdata, const pl_log_record *rec);

typedef struct pl_client_options {
    unsigned int version;          /* PL_CLIENT_OPTIONS_VERSION (1: without the log hook) */
    const char *connection_string; /* or endpoint + credentials below */
    const char *endpoint;          /* "https://ns.servicebus.windows.net" or "http://127.0.0.1:PORT" */
    const char *key_name;          /* SAS key name */
    const char *key;               /* SAS key (text) */
    const char *sas_token;         /* ready-made "SharedAccessSignature ..." */
    pl_token_cb token_cb;          /* bearer token provider */
    void *token_userdata;
    long connect_timeout_ms; /* 0: PL_DEFAULT_CONNECT_TIMEOUT_MS */
    long request_timeout_ms; /* 0: PL_DEFAULT_REQUEST_TIMEOUT_MS; added to any long-poll timeout */
    int max_retries;         /* -1: PL_DEFAULT_MAX_RETRIES; 0 disables retries */
    long retry_base_ms;      /* 0: PL_DEFAULT_RETRY_BASE_MS */
    long retry_max_ms;       /* 0: PL_DEFAULT_RETRY_MAX_MS */
    int pool_size;           /* easy handles kept for reuse; 0: PL_DEFAULT_POOL_SIZE */
    const char *ca_file;     /* NULL: system store */
    int token_lifetime_s;    /* SAS token lifetime; 0: PL_DEFAULT_TOKEN_LIFETIME_S */
    pl_log_fn log_fn;        /* (version 2) retries and failed calls, or NULL */
    void *log_userdata;      /* (version 2) passed to log_fn */
} pl_client_options;

/* The client's defaults, what a 0 (max_retries: -1) in pl_client_options stands
 * for; Python's and Lua's clients take the same (their None/nil is the core's). The
 * SAS token lifetime is also the default of Python's sas_token and `peeklock token`. */
#define PL_DEFAULT_CONNECT_TIMEOUT_MS 10000
#define PL_DEFAULT_REQUEST_TIMEOUT_MS 30000
#define PL_DEFAULT_MAX_RETRIES        3
#define PL_DEFAULT_RETRY_BASE_MS      100
#define PL_DEFAULT_RETRY_MAX_MS       5000
#define PL_DEFAULT_POOL_SIZE          8
#define PL_DEFAULT_TOKEN_LIFETIME_S   3600
/* A bearer token is fetched again this many seconds before its expiry: through
 * token_cb here, and by Python's token_provider, which pushes the new one with
 * pl_client_set_bearer_token. */
#define PL_BEARER_REFRESH_MARGIN_S 300

#define PL_CLIENT_OPTIONS_VERSION 2
#define PL_CLIENT_OPTIONS_INIT                                                                               \
    {                                                                                                        \
        PL_CLIENT_OPTIONS_VERSION, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, -1, 0, 0, 0, NULL, 0,     \
            NULL, NULL                                                                                       \
    }

/* Fills opts with the defaults of PL_CLIENT_OPTIONS_INIT for the given version
 * (1 or PL_CLIENT_OPTIONS_VERSION); PL_EINVAL for any other version. For callers
 * that cannot use the macro (bindings, other languages' FFI). */
PL_EXTERN int pl_client_options_init(pl_client_options *opts, unsigned int version);
PL_EXTERN int pl_client_new(pl_client **out, const pl_client_options *opts);
PL_EXTERN int pl_client_new_from_connection_string(pl_client **out, const char *conn);
/* Frees the client once every message received through it has been freed too
 * (messages hold a reference). Accepts NULL. */
PL_EXTERN void pl_client_free(pl_client *client);
/* REST base URL in use, e.g. "http://127.0.0.1:5300". Borrowed. */
PL_EXTERN const char *pl_client_endpoint(const pl_client *client);
/* Entity from the connection string's EntityPath, or NULL. Borrowed. */
PL_EXTERN const char *pl_client_entity_path(const pl_client *client);
/* The connect and request timeouts the client uses, in milliseconds: its options'
 * or, where they gave 0, the defaults (10000, 30000). */
PL_EXTERN long pl_client_connect_timeout_ms(const pl_client *client);
PL_EXTERN long pl_client_request_timeout_ms(const pl_client *client);
/* The connections the client keeps for reuse: its options' pool_size or, where it
 * gave 0, PL_DEFAULT_POOL_SIZE (a driver with its own sockets keeps as many). */
PL_EXTERN int pl_client_pool_size(const pl_client *client);
/* Replaces the bearer token used when no SAS key is configured (for bindings whose
 * token provider lives in the host language). Thread-safe. */
PL_EXTERN int pl_client_set_bearer_token(pl_client *client, const char *token, int64_t expires_unix);

typedef struct pl_client_stats {
    uint64_t requests;           /* HTTP requests sent (including retries) */
    uint64_t reused_connections; /* of which went on an already-open connection */
    uint64_t retries;
    uint64_t sent;     /* messages sent (a batch counts each message) */
    uint64_t received; /* messages received (peek-lock + receive-and-delete) */
    uint64_t completed;
    uint64_t abandoned;
    uint64_t renewed;    /* successful renewals, foreground and renewer */
    uint64_t lost;       /* locks found lost */
    double renew_p50_ms; /* renew round-trip percentiles, 0 if none yet */
    double renew_p99_ms;
    uint64_t orphaned_locks; /* peek-locks whose answer was lost or unreadable: a
                                   message may stay locked by nobody until its lock
                                   expires (then it is delivered again) */
    uint64_t failed;         /* calls that ended in an error after their retries (a receive
                                that finds nothing or is interrupted is not one) */
    uint64_t renew_failures; /* failed renew attempts, retried or final, foreground and
                                renewer (the renewer's count is also in its stats) */
} pl_client_stats;

PL_EXTERN int pl_client_stats_get(const pl_client *client, pl_client_stats *out);
/* Ends the blocking receives (pl_peek_lock, pl_receive_and_delete) waiting on any
 * thread, within about a second, with PL_ECLOSED, and refuses later ones the same
 * way; other calls (settles, sends) are unaffected, so held messages can still be
 * settled. For a binding's close(). A receive ended this way had no answer yet:
 * the server takes no message for a connection that has gone. Thread-safe. */
PL_EXTERN void pl_client_interrupt_receives(pl_client *client);
/* How many of the calling thread's last pl_peek_lock's attempts lost their answer (or got an
 * unreadable one) after the server may have locked a message: that message stays locked by
 * nobody until its lock expires, then comes back. 0 normally; for warnings (bindings log
 * it). */
PL_EXTERN unsigned pl_client_last_orphaned(void);

/* ------------------------------------------------------------------------ */
/* Outgoing messages                                                          */
/* ------------------------------------------------------------------------ */

typedef struct pl_outgoing pl_outgoing;

/* body may contain NUL bytes; len 0 is allowed. The body is copied. */
PL_EXTERN int pl_outgoing_new(pl_outgoing **out, const void *body, size_t len);
PL_EXTERN void pl_outgoing_free(pl_outgoing *m);
PL_EXTERN int pl_outgoing_set_content_type(pl_outgoing *m, const char *content_type);
/* Settable BrokerProperties string fields: "MessageId", "Label", "CorrelationId",
 * "SessionId", "PartitionKey", "ReplyTo", "ReplyToSessionId", "To",
 * "ViaPartitionKey". Any other name is PL_EINVAL. NULL value unsets. A value is
 * PL_EINVAL when empty (leave the field unset instead: the service refuses an empty
 * MessageId) and, for MessageId, SessionId and PartitionKey, longer than 128
 * characters; pl_error_last() names the field as the bindings do ("message_id: ..."). */
PL_EXTERN int pl_outgoing_set_broker(pl_outgoing *m, const char *field, const char *value);
/* Those fields, for bindings that build their tables from the core: how many there
 * are, and the i-th (0 <= i < pl_broker_field_count()) as the wire names it
 * ("ReplyToSessionId") and as the bindings name the argument ("reply_to_session_id");
 * NULL for any other i. */
PL_EXTERN int pl_broker_field_count(void);
PL_EXTERN const char *pl_broker_field_name(int i);
PL_EXTERN const char *pl_broker_field_arg(int i);
PL_EXTERN int pl_outgoing_set_time_to_live(pl_outgoing *m, double seconds);
/* Unix seconds of the years 1970..9999, sent as the second it falls in (floored:
 * 1.9 is 1, -0.5 is refused). A double, so a binding hands over a time as it has it
 * and the core owns the rounding and the range. */
PL_EXTERN int pl_outgoing_set_scheduled_enqueue_time(pl_outgoing *m, double unix_seconds);
PL_EXTERN int pl_outgoing_set_force_persistence(pl_outgoing *m, int on);
/* Opt-in: when a send's answer is lost after the request left, send it again
 * instead of returning PL_EUNKNOWN. Only safe on an entity with duplicate
 * detection, which drops the second copy by MessageId: a message with resend on
 * and no MessageId is refused (PL_EINVAL) when sent. A batch is sent again only
 * when every message in it opted in. Off by default. */
PL_EXTERN int pl_outgoing_set_resend(pl_outgoing *m, int on);
/* Custom properties, each sent as its own header and typed by the server from
 * its form: strings quoted (inner quotes escaped), numbers bare, booleans
 * true/false, dates as quoted RFC 1123 GMT. Names must be HTTP tokens and not
 * reserved headers (PL_EINVAL otherwise). Adding an existing name replaces it.
 * A DateTime is Unix seconds, whole (the service keeps it in whole seconds: a
 * fraction is refused, not cut) and of the years 1970..9999: pl_check_datetime's
 * rule. It takes a double so that a binding hands over a time as it has it and
 * the core refuses the fraction. */
PL_EXTERN int pl_outgoing_add_string(pl_outgoing *m, const char *name, const char *value);
PL_EXTERN int pl_outgoing_add_int(pl_outgoing *m, const char *name, int64_t value);
PL_EXTERN int pl_outgoing_add_double(pl_outgoing *m, const char *name, double value);
PL_EXTERN int pl_outgoing_add_bool(pl_outgoing *m, const char *name, int value);
PL_EXTERN int pl_outgoing_add_datetime(pl_outgoing *m, const char *name, double unix_seconds);

typedef struct pl_batch pl_batch;
PL_EXTERN int pl_batch_new(pl_batch **out);
PL_EXTERN void pl_batch_free(pl_batch *b);
/* Copies m into the batch. A message with a content type is refused (PL_EINVAL):
 * the service marks every message of a batch "application/xml; charset=utf-8"
 * and ignores the sender's, so send such a message alone with pl_send. A body
 * with a NUL byte is refused too (a batch carries bodies as JSON text). */
PL_EXTERN int pl_batch_add(pl_batch *b, const pl_outgoing *m);
PL_EXTERN size_t pl_batch_count(const pl_batch *b);

/* ------------------------------------------------------------------------ */
/* Received messages                                                          */
/* ------------------------------------------------------------------------ */

typedef struct pl_message pl_message;

/* Lock states (pl_message_lock_state). */
#define PL_LOCK_NONE     0 /* received with receive-and-delete: nothing to settle */
#define PL_LOCK_HELD     1
#define PL_LOCK_SETTLING 2 /* complete or unlock in progress: no renewal goes out */
#define PL_LOCK_SETTLED  3
#define PL_LOCK_LOST     4
/* a complete or unlock whose outcome could not be known: it may or may not have
 * been settled; any later settle returns PL_EUNKNOWN */
#define PL_LOCK_UNKNOWN 5
/* Static name of a lock state ("none", "held", "settling", "settled", "lost",
 * "unknown" for PL_LOCK_NONE..PL_LOCK_UNKNOWN); NULL for a number that is no
 * state, so bindings build their tables from the core by walking from
 * PL_LOCK_NONE up to the first NULL. */
PL_EXTERN const char *pl_lock_state_name(int state);

/* Custom property types, as the server typed them from the header's form. */
#define PL_PROP_STRING   1
#define PL_PROP_INT      2
#define PL_PROP_DOUBLE   3
#define PL_PROP_BOOL     4
#define PL_PROP_DATETIME 5

/* Messages are reference-counted; pl_message_free drops the caller's reference.
 * Accepts NULL. Every accessor below may be called from any thread; the strings
 * and the body they return are borrowed and live as long as the message (until
 * its last reference is dropped). A message keeps its client alive. */
PL_EXTERN void pl_message_free(pl_message *m);

PL_EXTERN const void *pl_message_body(const pl_message *m, size_t *len);
PL_EXTERN const char *pl_message_content_type(const pl_message *m); /* or NULL */
PL_EXTERN const char *pl_message_entity(const pl_message *m);       /* entity it came from */
/* BrokerProperties string field by name ("MessageId", "Label", "CorrelationId",
 * "SessionId", "PartitionKey", "ReplyTo", "ReplyToSessionId", "To", "State"),
 * or NULL when absent. "LockToken" is not served here (see pl_message_lock_token). */
PL_EXTERN const char *pl_message_broker(const pl_message *m, const char *field);
PL_EXTERN const char *pl_message_id(const pl_message *m);
PL_EXTERN int64_t pl_message_sequence_number(const pl_message *m); /* -1 if absent */
PL_EXTERN int64_t pl_message_enqueued_sequence_number(const pl_message *m);
PL_EXTERN int pl_message_delivery_count(const pl_message *m);    /* -1 if absent */
PL_EXTERN int64_t pl_message_enqueued_time(const pl_message *m); /* Unix s, -1 if absent */
PL_EXTERN int64_t pl_message_locked_until(const pl_message *m);  /* Unix s (server's), -1 */
/* Seconds; -1 if absent or TimeSpan.MaxValue, the service's "no time to live". */
PL_EXTERN double pl_message_time_to_live(const pl_message *m);
/* The raw BrokerProperties JSON as received. Contains the lock token: a secret. */
PL_EXTERN const char *pl_message_broker_properties_json(const pl_message *m);
/* The lock token (a secret: never log it), or NULL for receive-and-delete. */
PL_EXTERN const char *pl_message_lock_token(const pl_message *m);

PL_EXTERN size_t pl_message_property_count(const pl_message *m);
PL_EXTERN const char *pl_message_property_name(const pl_message *m, size_t i);
PL_EXTERN int pl_message_property_type(const pl_message *m, size_t i);        /* PL_PROP_* */
PL_EXTERN const char *pl_message_property_raw(const pl_message *m, size_t i); /* header text */
/* Value as text: strings unquoted and unescaped; dates as received, unquoted. */
PL_EXTERN const char *pl_message_property_string(const pl_message *m, size_t i);
PL_EXTERN int64_t pl_message_property_int(const pl_message *m, size_t i);
PL_EXTERN double pl_message_property_double(const pl_message *m, size_t i);
PL_EXTERN int pl_message_property_bool(const pl_message *m, size_t i);
PL_EXTERN int64_t pl_message_property_datetime(const pl_message *m, size_t i); /* Unix s, -1 */

/* Lock bookkeeping (client side, per the lock rules: monotonic clock, from the
 * time the locking or renewing request was sent). Atomic; any thread. */
PL_EXTERN int pl_message_lock_state(const pl_message *m);              /* PL_LOCK_* */
PL_EXTERN int64_t pl_message_lock_duration_ms(const pl_message *m);    /* learned from receive */
PL_EXTERN int64_t pl_message_lock_expiry_mono_ms(const pl_message *m); /* pl_now_mono_ms() scale */
PL_EXTERN int64_t pl_message_lock_remaining_ms(const pl_message *m);   /* <= 0 when expired */
/* Code of the failure that made the lock lost (PL_ELOCKLOST, PL_ENOTFOUND, …), 0 if not lost;
 * PL_EUNKNOWN in state PL_LOCK_UNKNOWN; PL_ECLOSED when pl_renewer_close(r, 1) settled
 * (unlocked) it behind its handler's back (a later settle then returns PL_ECLOSED). */
PL_EXTERN int pl_message_lost_reason(const pl_message *m);

/* Which settle moved the message out of PL_LOCK_HELD last: PL_SETTLE_COMPLETE or
 * PL_SETTLE_UNLOCK (an unlock by pl_renewer_close included; see pl_request_settle),
 * 0 when none has. With pl_message_lock_state it tells the outcome: SETTLED by a
 * complete (completed) or an unlock (abandoned); UNKNOWN: that settle may or may
 * not have been carried out. Atomic; any thread. */
PL_EXTERN int pl_message_settle_kind(const pl_message *m);

/* Lock handles: a held lock as a string that another process (or thread, or
 * client) turns back into a message with pl_client_attach, to renew, unlock or
 * complete it there: over REST a lock is a URL, and any holder of a valid token
 * for the namespace may settle it. The handle is a SECRET: it contains the lock
 * token (never log it or show it). Its expiry crosses processes as wall-clock
 * time; the server stays the authority (an expired lock settles as
 * PL_ELOCKLOST). Two holders may both renew; the first settle wins and the other
 * then gets PL_ELOCKLOST, never a false success.
 * pl_message_lock_handle: *out freed with pl_free; PL_ESTATE when m's lock is not
 * held. pl_client_attach: a message in PL_LOCK_HELD with the handle's entity,
 * sequence number, MessageId and lock (no body or properties), holding a
 * reference to client, which must be for the same namespace (PL_EINVAL
 * otherwise, and for anything that is not a handle; the message never quotes
 * the handle). Any thread. */
PL_EXTERN int pl_message_lock_handle(char **out, const pl_message *m);
PL_EXTERN int pl_client_attach(pl_message **out, pl_client *client, const char *handle);

/* Monotonic milliseconds (CLOCK_MONOTONIC). */
PL_EXTERN int64_t pl_now_mono_ms(void);
/* Sleeps ms milliseconds on this thread (a signal does not cut it short; 0 or less
 * returns at once): for a binding with no sleep of its own (plain Lua's processor
 * pausing after a failed receive, pl_receive_pause_ms). */
PL_EXTERN void pl_sleep_ms(int64_t ms);

/* ------------------------------------------------------------------------ */
/* Operations (blocking; thread-safe on one client)                           */
/* ------------------------------------------------------------------------ */

/* entity: "queue", "topic", "topic/subscriptions/sub", "queue/$DeadLetterQueue",
 * "topic/subscriptions/sub/$DeadLetterQueue". Segments are validated (no empty,
 * ".", "..", control characters) and percent-encoded. */
PL_EXTERN int pl_send(pl_client *client, const char *entity, const pl_outgoing *m);
PL_EXTERN int pl_send_batch(pl_client *client, const char *entity, const pl_batch *b);

/* Long-poll up to timeout_s seconds (0: answer at once; max 300). Returns PL_OK with
 * *out set (the caller owns it: pl_message_free), PL_EMPTY with *out NULL when
 * nothing arrived, or a negative code. */
/* The argument checks of the calls that take these values, on their own: PL_OK, or
 * PL_EINVAL with pl_error_last() naming the argument ("entity: ...", "timeout: ...").
 * For a binding that takes a value now and uses it in a later call (a processor's
 * entity and poll timeout); every call checks its arguments anyway. An entity is
 * refused when empty, longer than PL_MAX_ENTITY_LEN (1024) bytes, with an empty, '.',
 * '..' or 'messages' path segment or a control character; a receive timeout outside
 * 0..PL_MAX_RECEIVE_TIMEOUT_S (300) seconds. */
#define PL_MAX_ENTITY_LEN 1024
PL_EXTERN int pl_check_entity(const char *entity);
/* An entity's destination and subscription names, as telemetry labels them
 * (messaging.destination.name, messaging.destination.subscription_name):
 * "<topic>/subscriptions/<name>[/...]" gives *out "<topic>" and *out2 "<name>" (the
 * "subscriptions" segment in any case, as the service's paths are case-insensitive:
 * "orders/SUBSCRIPTIONS/s" gives "orders" and "s"); any other entity gives *out the
 * entity as it is and *out2 NULL. Both owned (pl_free). PL_OK, PL_EINVAL (NULL entity)
 * or PL_ENOMEM. The entity is not checked (pl_check_entity). Pure; any thread. */
PL_EXTERN int pl_entity_destination(char **out, char **out2, const char *entity);
PL_EXTERN int pl_check_timeout(int timeout_s);
/* The longest receive timeout (seconds): a wait longer than this (a processor's
 * max_wait for a batch) is made of several receives. */
#define PL_MAX_RECEIVE_TIMEOUT_S 300
/* The bindings' default waits, in seconds: a receive's long poll (Python's and Lua's
 * peek_lock, receive_and_delete, with_lock `timeout`), a processor's poll between
 * messages (`poll_timeout`) and how long a batch waits to fill (`max_wait`). */
#define PL_DEFAULT_RECEIVE_TIMEOUT_S 30
#define PL_DEFAULT_POLL_TIMEOUT_S    5
#define PL_DEFAULT_MAX_WAIT_S        1
/* A receive timeout as the bindings take it, in seconds (Python's and Lua's `timeout`,
 * a processor's `poll_timeout`): its whole seconds for pl_peek_lock and
 * pl_receive_and_delete, a fraction rounded up (0.5 s waits 1 s: it never becomes a
 * 0 s poll), or PL_EINVAL for NaN, an infinity or a value outside 0..300 seconds
 * (pl_error_last(): "timeout: must be 0..300 seconds"). pl_check_timeout is this rule
 * for a whole number. */
PL_EXTERN int pl_timeout_seconds(double seconds);
/* A DateTime custom property's value, the rule of pl_outgoing_add_datetime on its own
 * (a binding that takes a message now and builds it later checks it when it is made):
 * PL_OK, or PL_EINVAL with pl_error_last() "property '<name>': ..." unless unix_seconds
 * is whole Unix seconds of the years 1970..9999. */
PL_EXTERN int pl_check_datetime(const char *name, double unix_seconds);
/* A processor's option values (Python's processors, Lua's process), checked where
 * they are taken: PL_OK, or PL_EINVAL with pl_error_last() "<name>: ..." (or
 * "<name>: not a processor option"). The rules, by name:
 *   concurrency   a whole number 1..PL_MAX_CONCURRENCY (256)
 *   batch         a whole number 1..PL_MAX_BATCH (100000) messages
 *   max_messages  a whole number, at least 1 (at most 2^53)
 *   max_wait      0..3600 seconds
 *   idle_timeout  a positive, finite number of seconds
 *   retry_delay   0..86400 seconds (a number; a binding may take a function too)
 * A driver may run fewer handlers at a time than PL_MAX_CONCURRENCY (Lua's plain
 * driver runs one) and says so itself. */
#define PL_MAX_CONCURRENCY 256
#define PL_MAX_BATCH       100000
PL_EXTERN int pl_check_process_option(const char *name, double value);
/* A batch handler's settle for a message, by name (Python's returned mapping, Lua's
 * returned table): PL_SETTLE_COMPLETE for "complete", PL_SETTLE_UNLOCK for "abandon",
 * else PL_EINVAL ("action: must be 'complete' or 'abandon'"). */
PL_EXTERN int pl_settle_action(const char *action);
/* What a processor does when a receive fails (after the client's retry policy): the
 * one rule Python's processors and Lua's process follow. code and retryable are the
 * failed receive's (pl_error_last()); failures counts the consumer's consecutive
 * failed receives, this one included (any receive that answers, with a message or
 * empty, sets it back to 0; 0 counts as 1). Returns -1 when waiting cannot mend
 * the error and the run must end with it: PL_EAUTH, PL_ENOTFOUND, PL_EINVAL,
 * PL_EBADREQUEST, PL_ETOOLARGE, PL_ESTATE or PL_EINTERNAL that is not retryable, and
 * PL_ECLOSED. Otherwise (throttled, server, timeout, connect, protocol, outcome
 * unknown: the lock expires, conflict, HTTP, no memory, or any retryable error) the
 * milliseconds to pause before the next receive: PL_RECEIVE_PAUSE_BASE_MS doubled
 * with each further consecutive failure, at most PL_RECEIVE_PAUSE_MAX_MS. 0 for a
 * code that is no failure (PL_OK, PL_EMPTY). Pure. */
#define PL_RECEIVE_PAUSE_BASE_MS 1000
#define PL_RECEIVE_PAUSE_MAX_MS  10000
PL_EXTERN long pl_receive_pause_ms(int code, int retryable, unsigned failures);
/* A processor's run, its bookkeeping once for every driver (Python's processors,
 * Lua's process): when the run may take another message (max_messages), when it
 * is idle, why it stopped, and the words for it. Pure: no clock (each call that
 * needs the time is given pl_now_mono_ms() by the caller), no lock, no I/O. The
 * calls on one run must not overlap: the caller serializes them (Python holds the
 * GIL through each, the wrappers do not release it; Lua runs on one thread).
 *
 *   pl_run_options o;
 *   pl_run_options_init(&o, PL_RUN_OPTIONS_VERSION);
 *   o.max_messages = 100;
 *   pl_run_new(&run, &o, pl_now_mono_ms());
 *   while (pl_run_claim(run, 1) == 1) {            // a worker's loop
 *       if (receive(&m) != PL_OK) { pl_run_unclaim(run, 1); continue; }
 *       pl_run_received(run, pl_message_delivery_count(m), pl_now_mono_ms());
 *       unsigned how = handle(m);                    // PL_RUN_F_* flags
 *       pl_run_finish(run, how, pl_now_mono_ms());   // its outcome, counted
 *   }
 *   pl_run_tallies t = PL_RUN_TALLIES_INIT;
 *   pl_run_tallies_get(run, &t);
 *   puts(pl_run_stop_word(pl_run_stop(run, PL_RUN_STOPPED, pl_now_mono_ms())));
 *
 * max_messages counts messages received: a claim is taken before each receive and
 * kept when a message comes (pl_run_received), given back (pl_run_unclaim) when
 * none does, so concurrent receives never take more than max_messages. The run is
 * idle when no message is in flight (received and not yet finished) and nothing
 * was received or finished for idle_timeout seconds (a receive that is waiting is
 * no activity). */
typedef struct pl_run pl_run;

typedef struct pl_run_options {
    unsigned int version; /* PL_RUN_OPTIONS_VERSION */
    long max_messages;    /* messages the run receives at most; 0: no limit */
    double idle_timeout;  /* seconds (a processor's idle_timeout); 0: never idle */
} pl_run_options;

#define PL_RUN_OPTIONS_VERSION 1
#define PL_RUN_OPTIONS_INIT                                                                                  \
    {                                                                                                        \
        PL_RUN_OPTIONS_VERSION, 0, 0.0                                                                       \
    }

/* Why a run stops (pl_run_stop_word: the word Python's stopped_by and Lua's
 * summary.stopped_by show). PL_RUN_GOING: no reason yet. */
#define PL_RUN_GOING        0
#define PL_RUN_SIGNAL       1 /* "signal": SIGINT/SIGTERM, or the nginx worker exiting */
#define PL_RUN_STOP_EVENT   2 /* "stop_event": the caller's stop_event (Lua: its stop function) */
#define PL_RUN_MAX_MESSAGES 3 /* "max_messages": max_messages messages received */
#define PL_RUN_IDLE         4 /* "idle": idle for idle_timeout */
#define PL_RUN_ERROR        5 /* "error": a failed receive that waiting cannot mend */
#define PL_RUN_CLOSED       6 /* "closed": the client was closed under the run */
#define PL_RUN_STOPPED      7 /* "stopped": the workers ended with no other reason */

/* How a received message ended, as its driver saw it (pl_run_finish's flags,
 * any together; 0: the handler returned and the settle at its exit completed it). */
#define PL_RUN_F_HANDLER_FAILED 0x001 /* the handler failed (raised an error) */
#define PL_RUN_F_BY_HANDLER     0x002 /* the handler settled (or released) it itself */
#define PL_RUN_F_LOST           0x004 /* its lock was lost: nothing was completed */
#define PL_RUN_F_UNKNOWN        0x008 /* a settle of it had an unknown outcome */
#define PL_RUN_F_SETTLE_ERROR   0x010 /* the settle its driver made failed otherwise */
#define PL_RUN_F_COMPLETED      0x020 /* completed as the handler's result said (a batch's) */
#define PL_RUN_F_ABANDONED      0x040 /* abandoned as the handler's result said */
#define PL_RUN_F_DRAINED                                                                                     \
    0x080 /* given back by the drain (on_drain_timeout "abandon", or collected as it began) */
#define PL_RUN_F_EXPIRED 0x100 /* left to expire at the drain deadline (handler still running) */
#define PL_RUN_F_LATE    0x200 /* its handler finished after PL_RUN_F_EXPIRED counted it */

/* A finished message's outcome (pl_run_finish), one field of pl_run_tallies each. */
#define PL_RUN_PROCESSED          1 /* processed: the handler returned, the message was completed */
#define PL_RUN_SETTLED_BY_HANDLER 2 /* settled_by_handler */
#define PL_RUN_FAILED             3 /* failed: abandoned (delivered again) */
#define PL_RUN_LOST               4 /* lost: its lock was lost, nothing completed */
#define PL_RUN_UNKNOWN            5 /* unknown: may or may not have been completed */
#define PL_RUN_ABANDONED_ON_DRAIN 6 /* abandoned_on_drain */
#define PL_RUN_LEFT_TO_EXPIRE     7 /* left_to_expire */

/* A run's counts (pl_run_tallies_get): the fields of Python's ProcessSummary and of
 * Lua's process summary, by the same names. */
typedef struct pl_run_tallies {
    unsigned int version; /* PL_RUN_TALLIES_VERSION */
    uint64_t received;    /* messages received (locked) */
    uint64_t redelivered; /* of them, received with a delivery count above 1 */
    uint64_t processed;   /* see PL_RUN_PROCESSED and the others */
    uint64_t settled_by_handler;
    uint64_t failed;
    uint64_t lost;
    uint64_t unknown;
    uint64_t abandoned_on_drain;
    uint64_t left_to_expire;
    uint64_t errors;    /* failed receives (pl_run_receive_failed) and settles */
    uint64_t in_flight; /* received, not finished */
} pl_run_tallies;

#define PL_RUN_TALLIES_VERSION 1
#define PL_RUN_TALLIES_INIT                                                                                  \
    {                                                                                                        \
        PL_RUN_TALLIES_VERSION, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0                                              \
    }

/* Fills opts with the defaults of PL_RUN_OPTIONS_INIT; PL_EINVAL unless version is
 * PL_RUN_OPTIONS_VERSION. */
PL_EXTERN int pl_run_options_init(pl_run_options *opts, unsigned int version);
/* A new run (free it with pl_run_free), started at now_ms (the idle clock starts
 * there). PL_EINVAL, pl_error_last() naming the field, for a max_messages below 0
 * or an idle_timeout that is negative, NaN or infinite (a processor's option
 * rules: pl_check_process_option), or opts NULL. */
PL_EXTERN int pl_run_new(pl_run **out, const pl_run_options *opts, int64_t now_ms);
/* Accepts NULL. */
PL_EXTERN void pl_run_free(pl_run *run);
/* How many of want messages (want >= 1: a batch asks for its size) may be received
 * now: claimed until given back with pl_run_unclaim. 0 once every claim is taken
 * (max_messages reached, or claimed by receives still waiting) or the run has a
 * stop reason; want itself without max_messages. */
PL_EXTERN long pl_run_claim(pl_run *run, long want);
/* Gives back n claims that no message came for (at most those outstanding). */
PL_EXTERN void pl_run_unclaim(pl_run *run, long n);
/* A message was received at now_ms (its claim kept, one more in flight): counted
 * in received, and in redelivered when delivery_count is above 1. */
PL_EXTERN void pl_run_received(pl_run *run, long delivery_count, int64_t now_ms);
/* A received message is done with at now_ms (how: PL_RUN_F_* flags): one less in
 * flight, counted by the one rule, the first that applies: DRAINED:
 * abandoned_on_drain; EXPIRED: left_to_expire; LOST: lost; UNKNOWN: unknown (and
 * an error); SETTLE_ERROR: failed (and an error); COMPLETED: processed; ABANDONED:
 * failed; BY_HANDLER: settled_by_handler; HANDLER_FAILED: failed; else processed.
 * With PL_RUN_F_LATE (a message PL_RUN_F_EXPIRED counted, its handler done since)
 * nothing is in flight any more: a processed outcome moves it from left_to_expire
 * to processed, any other leaves the counts. Returns the outcome (PL_RUN_PROCESSED
 * ...), 0 for run NULL. */
PL_EXTERN int pl_run_finish(pl_run *run, unsigned int how, int64_t now_ms);
/* How a message ended, as pl_run_finish's flags, from what its driver saw (one
 * rule for every driver). before: its lock state (PL_LOCK_*) when the handler
 * returned or raised, -1 when the handler released it (freed or handed it over);
 * handler_failed: the handler raised; settle_rc: the driver's settle at the
 * handler's exit, 0 when it succeeded or none was made, else its PL_E* code;
 * now: its lock state after that exit. The first that applies, with
 * PL_RUN_F_HANDLER_FAILED added when the handler failed:
 *   before -1 or SETTLED (the handler settled it): PL_RUN_F_BY_HANDLER;
 *   before LOST: PL_RUN_F_LOST; before UNKNOWN: PL_RUN_F_UNKNOWN;
 *   settle_rc PL_ELOCKLOST, or now LOST (the exit's settle or abandon found
 *   the lock lost, also after a failed handler): PL_RUN_F_LOST;
 *   settle_rc PL_EUNKNOWN: PL_RUN_F_UNKNOWN; any other settle_rc:
 *   PL_RUN_F_SETTLE_ERROR; else none (processed, or failed when the handler
 *   failed and the exit abandoned it). Lost means lost: a lock that was gone
 *   when the exit came counts as lost whatever the handler did. Pure. */
PL_EXTERN unsigned int pl_run_how(int before, int handler_failed, int settle_rc, int now);
/* How a message given back unprocessed ended (a drain, or a close, while a batch
 * was collected; one received after the drain began), by its state once the
 * driver's abandon of it ran: completed (its handler settled it first, racing the
 * drain): PL_RUN_F_BY_HANDLER; lost: PL_RUN_F_LOST; unknown: PL_RUN_F_UNKNOWN;
 * still held (the abandon failed, the lock runs out): PL_RUN_F_SETTLE_ERROR; else
 * (abandoned, or the abandon still under way) PL_RUN_F_DRAINED, as for m NULL. */
PL_EXTERN unsigned int pl_run_given_back(const pl_message *m);
/* A failed receive (code, retryable: the error's; failures: the consumer's
 * consecutive failed receives, this one included) by the one rule: PL_ECLOSED (the
 * client was closed under the run) stops it quietly, PL_RUN_CLOSED, and is no
 * error; any other is counted in errors and, when waiting cannot mend it
 * (pl_receive_pause_ms < 0), stops it with PL_RUN_ERROR. Returns the milliseconds
 * to pause before the consumer's next receive, or -1: the run ends (its reason says
 * which). */
PL_EXTERN long pl_run_receive_failed(pl_run *run, int code, int retryable, unsigned failures, int64_t now_ms);
/* Counts an error that is neither a receive's nor a finished message's (a
 * message received and not kept). */
PL_EXTERN void pl_run_error(pl_run *run);
/* Fills *out (its version set by the caller: PL_RUN_TALLIES_INIT) with run's
 * counts. PL_EINVAL for out NULL or an unknown version; run NULL fills zeros. */
PL_EXTERN int pl_run_tallies_get(const pl_run *run, pl_run_tallies *out);
/* Messages received and not finished. */
PL_EXTERN long pl_run_in_flight(const pl_run *run);
/* Milliseconds until the run is idle at the earliest (a driver's wait): 0 when it
 * is idle now, -1 when it cannot become idle without an event (no idle_timeout, or
 * a message in flight). A now_ms before the last activity counts as no time passed
 * (the full idle_timeout is left); a span too long for int64_t is idle. */
PL_EXTERN int64_t pl_run_idle_ms(const pl_run *run, int64_t now_ms);
/* Why the run stops, at now_ms: the reason recorded by pl_run_stop, else its own
 * limits, recorded as they are met (PL_RUN_MAX_MESSAGES once max_messages messages
 * were received, PL_RUN_IDLE once it is idle), else PL_RUN_GOING. */
PL_EXTERN int pl_run_stop_reason(pl_run *run, int64_t now_ms);
/* Records why the run stops, unless it has a reason already: the first cause
 * wins (a limit met before it counts first: pl_run_stop_reason), except
 * PL_RUN_ERROR, which replaces any other (the run then ends with that error, and
 * says so). Returns the run's reason after the call; reason PL_RUN_GOING only asks.
 * Every later claim gets 0. A driver whose workers all ended calls it with
 * PL_RUN_STOPPED. PL_EINVAL for an unknown reason. */
PL_EXTERN int pl_run_stop(pl_run *run, int reason, int64_t now_ms);
/* The word of a PL_RUN_* reason ("signal", "stop_event", "max_messages", "idle",
 * "error", "closed", "stopped"; "" for PL_RUN_GOING), NULL for any other number. */
PL_EXTERN const char *pl_run_stop_word(int reason);
PL_EXTERN int pl_peek_lock(pl_message **out, pl_client *client, const char *entity, int timeout_s);
PL_EXTERN int pl_receive_and_delete(pl_message **out, pl_client *client, const char *entity, int timeout_s);

/* Renew: extends the client's expiry estimate (send time + lock duration).
 * PL_ESTATE if the message is not held. A 404 marks the lock lost (PL_ELOCKLOST). */
PL_EXTERN int pl_renew_lock(pl_client *client, pl_message *m);
/* Unlock (abandon) and complete settle the message exactly once: the state goes
 * held -> settling -> settled (or lost). PL_ESTATE if already settling/settled,
 * PL_ELOCKLOST if the lock was lost. A complete whose outcome cannot be known
 * returns PL_EUNKNOWN. */
PL_EXTERN int pl_unlock(pl_client *client, pl_message *m);
PL_EXTERN int pl_complete(pl_client *client, pl_message *m);

/* ------------------------------------------------------------------------ */
/* Renewer: one background thread keeping many locks alive                    */
/* ------------------------------------------------------------------------ */

typedef struct pl_renewer pl_renewer;

typedef struct pl_renewer_options {
    unsigned int version;      /* PL_RENEWER_OPTIONS_VERSION */
    int max_connections;       /* keep-alive connections used for renewals; 0: automatic
                                  (4, growing up to 32 while renewals are due with
                                  every connection busy) */
    long margin_floor_ms;      /* minimum margin before expiry; 0: default 1000 */
    double jitter;             /* fraction of the wait before each renewal randomised
                                  (renewals only move earlier); <0: default 0.1 */
    long default_max_renew_ms; /* cap when pl_renewer_add gets 0; 0: PL_DEFAULT_MAX_RENEW_MS */
    long request_timeout_ms;   /* per renew request; 0: default 10000 */
} pl_renewer_options;

#define PL_RENEWER_OPTIONS_VERSION 1
#define PL_RENEWER_OPTIONS_INIT                                                                              \
    {                                                                                                        \
        PL_RENEWER_OPTIONS_VERSION, 0, 0, -1.0, 0, 0                                                         \
    }

/* Starts the renewer thread. The renewer keeps a reference to client, whose
 * settings are the defaults; each message is renewed through (and counted in) the
 * client it was received through, so one renewer serves any number of clients. */
/* Fills opts with the defaults of PL_RENEWER_OPTIONS_INIT; PL_EINVAL unless
 * version is PL_RENEWER_OPTIONS_VERSION. */
PL_EXTERN int pl_renewer_options_init(pl_renewer_options *opts, unsigned int version);
PL_EXTERN int pl_renewer_new(pl_renewer **out, pl_client *client, const pl_renewer_options *opts);
/* Keeps m's lock alive until it is settled, removed, lost, or max_renew_ms
 * (counted from this call: the handler's start; 0: the renewer's default, at most
 * PL_MAX_RENEW_MS) has passed. Takes a reference to m (and so to its client).
 * PL_ESTATE if m is not held.
 * Adding m again sets a new cap (the handler restarted). See docs/renewer.md. */
PL_EXTERN int pl_renewer_add(pl_renewer *r, pl_message *m, long max_renew_ms);
/* The renewal cap when none is given: a renewer's default_max_renew_ms, and the
 * default max_renew (300 s) of Python's and Lua's peek_lock, with_lock and process. */
#define PL_DEFAULT_MAX_RENEW_MS 300000
/* The longest cap pl_renewer_add and pl_renewer_hold take: 10^9 s (about 31 years). */
#define PL_MAX_RENEW_MS 1000000000000LL
/* max_renew as the bindings take it, in seconds (Python and Lua `max_renew`): its
 * whole milliseconds for pl_renewer_hold, rounded up (a positive duration never
 * becomes 0, the renewer's default), or PL_EINVAL unless it is a positive, finite
 * number of seconds of at most PL_MAX_RENEW_MS / 1000 (pl_error_last(): "max_renew:
 * ..."). For a binding that takes max_renew now and holds a message later. */
PL_EXTERN int64_t pl_max_renew_ms(double seconds);
/* Stops renewing m (does not settle it). Idempotent. */
PL_EXTERN int pl_renewer_remove(pl_renewer *r, pl_message *m);
/* Stops the thread. With unlock_held nonzero, unlocks every lock still held so
 * those messages are redelivered at once. Further adds return PL_ECLOSED. */
PL_EXTERN int pl_renewer_close(pl_renewer *r, int unlock_held);
/* Closes (without unlocking) if needed, then frees. Accepts NULL. */
PL_EXTERN void pl_renewer_free(pl_renewer *r);

/* The workflow every binding runs around a handler, written once: hold the message
 * (renewed while the handler runs), then settle it by the handler's result.
 *
 *   pl_renewer_hold(r, m, max_ms);
 *   int ok = handle(m) == 0;          // the handler may settle m itself
 *   rc = pl_renewer_finish(r, m, ok, &outcome);
 *
 * pl_renewer_hold: pl_renewer_add for a handler about to start (max_ms from now;
 * 0: the renewer's default), worded for it: PL_ESTATE when m was received with
 * receive-and-delete ("nothing to lock") or its lock is not held.
 * pl_renewer_finish: stops renewing m, then, if its lock is still held, completes
 * it (handler_ok nonzero) or abandons it (handler_ok 0) through the client m came
 * through. A message the handler settled, that was lost, or that a close unlocked
 * meanwhile is left as it is: nothing is sent. *outcome (may be NULL) says what
 * became of m, read from its own state (pl_message_lock_state, settle kind):
 * PL_FINISH_*. Returns the error of the settle this call made (PL_ELOCKLOST,
 * PL_EUNKNOWN, ...), PL_ESTATE for a receive-and-delete message, else PL_OK,
 * also when *outcome is LOST, UNKNOWN or CLOSED from before this call.
 * r may be NULL (the renewer is gone): m is then settled as above, not removed.
 * A message handed over (pl_message_lock_handle) is not finished: call
 * pl_renewer_remove instead. Both take the caller's thread (finish blocks for the
 * settle; release the GIL), any thread, on a message held by one handler. */
#define PL_FINISH_COMPLETED 1 /* completed by this call (the handler succeeded) */
#define PL_FINISH_ABANDONED 2 /* abandoned by this call (the handler failed) */
#define PL_FINISH_BY_HANDLER                                                                                 \
    3                       /* settled, or being settled, by the handler itself: nothing sent
                                  (pl_message_settle_kind says how) */
#define PL_FINISH_LOST    4 /* lock lost while the handler ran, or by this call's settle */
#define PL_FINISH_UNKNOWN 5 /* a settle whose outcome is unknown: the handler's, or this call's */
#define PL_FINISH_CLOSED  6 /* abandoned by pl_renewer_close(r, 1) while the handler ran */
#define PL_FINISH_HELD    7 /* still held: this call's settle failed and did not happen */
PL_EXTERN int pl_renewer_hold(pl_renewer *r, pl_message *m, int64_t max_ms);
PL_EXTERN int pl_renewer_finish(pl_renewer *r_or_null, pl_message *m, int handler_ok, int *outcome);
/* What became of m after a finish, read from its own state as pl_renewer_finish
 * reads it (PL_FINISH_*); sent: the finish sent the settle itself (pl_aio_finish
 * gave an id). For pl_aio_finish, the non-blocking pl_renewer_finish. */
PL_EXTERN int pl_finish_outcome(const pl_message *m, int sent);
/* What a finish's outcome means for a handler that succeeded, in the core's words once
 * for every binding: for PL_FINISH_LOST, PL_FINISH_UNKNOWN and PL_FINISH_CLOSED sets the
 * thread's last error (pl_error_last: PL_ELOCKLOST, PL_EUNKNOWN or PL_ECLOSED, its message
 * naming m and saying it was not completed, or may not have been) and returns that code;
 * PL_OK for any other outcome, nothing set. */
PL_EXTERN int pl_finish_error(const pl_message *m, int outcome);
/* The settle a finish sends for m, as pl_renewer_finish chooses it: PL_SETTLE_COMPLETE
 * (handler_ok nonzero) or PL_SETTLE_UNLOCK while m's lock is held, 0 when nothing is
 * to be sent (settled, lost, unknown, receive-and-delete). For a driver that sends the
 * settle over its own sockets, then reads pl_finish_outcome(m, 1). */
PL_EXTERN int pl_finish_action(const pl_message *m, int handler_ok);

/* Events, drained by the host language; the renewer never calls into it. Events are
 * queued in order, per renewer; RENEWED and RENEW_FAILED are dropped (and counted)
 * beyond 4096 queued, LOST and CAP_REACHED always kept. */
#define PL_EVENT_RENEWED 1
/* lock lost; pl_event_code says why: PL_ELOCKLOST (404), PL_ENOTFOUND (410), or
 * the last transient error when renewals failed until time ran out (its reason then
 * PL_REASON_GAVE_UP, as every renewer words it: the C one, peeklock.resty's) */
#define PL_EVENT_LOST        2
#define PL_REASON_GAVE_UP    "renewals kept failing until the lock expired"
#define PL_EVENT_CAP_REACHED 3 /* max_renew reached; renewal stopped */
/* a renew attempt failed; pl_event_code and pl_event_http_status say how, the reason
 * in words, pl_event_will_retry whether another attempt follows (if not, the lock is
 * lost: a PL_EVENT_LOST follows unless the message was settled meanwhile) */
#define PL_EVENT_RENEW_FAILED 4

typedef struct pl_event pl_event;
/* PL_OK with *out set, PL_EMPTY when no event is queued (never blocks). */
PL_EXTERN int pl_renewer_next_event(pl_event **out, pl_renewer *r);
/* Blocks up to timeout_ms for an event: PL_OK, or PL_EMPTY. Release the GIL.
 * Once the renewer is closed and its queue drained, returns PL_EMPTY at once. */
PL_EXTERN int pl_renewer_wait_event(pl_event **out, pl_renewer *r, long timeout_ms);
PL_EXTERN void pl_event_free(pl_event *e);
PL_EXTERN int pl_event_type(const pl_event *e);
PL_EXTERN pl_message *pl_event_message(const pl_event *e); /* borrowed; lives as long as e */
PL_EXTERN int pl_event_code(const pl_event *e);            /* PL_* code for LOST and RENEW_FAILED, else 0 */
PL_EXTERN int pl_event_http_status(const pl_event *e);
PL_EXTERN const char *pl_event_reason(const pl_event *e); /* never NULL, no secret */
/* RENEW_FAILED: 1 when the renewer tries again while lock time remains, else 0. */
PL_EXTERN int pl_event_will_retry(const pl_event *e);
/* RENEWED: the renewal's slack, the lock time (ms) that was left, by the renewer's
 * estimate, when the renewal landed (negative: it landed after the estimate ran out);
 * 0 for other events. */
PL_EXTERN int64_t pl_event_slack_ms(const pl_event *e);

/* Number of slack histogram buckets in pl_renewer_stats (bounds below). */
#define PL_SLACK_BUCKETS 6

typedef struct pl_renewer_stats {
    uint64_t held;     /* locks being renewed now */
    uint64_t renewals; /* successful renewals */
    uint64_t failures; /* failed renew attempts (retried or final) */
    uint64_t lost;
    uint64_t cap_reached;
    uint64_t threads;       /* threads the renewer uses (1) */
    double lateness_p99_ms; /* how far after its due time a renewal went out */
    double rtt_p99_ms;
    /* Slack histogram: lock time left when a renewal completed, in buckets of
     * <1%, <5%, <10%, <25%, <50%, >=50% of the lock duration. */
    uint64_t slack_buckets[PL_SLACK_BUCKETS];
    uint64_t state_bytes; /* library memory held for renewal state */
} pl_renewer_stats;

/* Fills *out with r's figures. r NULL (no renewer yet) fills *out with zeros and
 * returns PL_OK, so a binding shows "nothing counted" with the same fields. */
PL_EXTERN int pl_renewer_stats_get(pl_renewer *r_or_null, pl_renewer_stats *out);

/* ------------------------------------------------------------------------ */
/* Asynchronous engine: operations for event loops, without a thread per call */
/*                                                                            */
/* One I/O thread per pl_aio drives one curl multi handle carrying every      */
/* operation in flight. Operations are submitted from any thread and return   */
/* at once with an id; when one finishes, its completion is queued and the    */
/* file descriptor pl_aio_fd becomes readable. An event loop (asyncio, libuv, */
/* cqueues, epoll) watches that fd and calls pl_aio_next until PL_EMPTY; the  */
/* fd stays readable exactly while completions are queued (level-triggered,   */
/* nothing to read from it by hand). Each attempt is reported to the same     */
/* outcome rules as the blocking calls (retries, "outcome unknown", orphaned  */
/* peek-locks, the settle fence; docs/c-api.md "Outcomes"). Lock renewal      */
/* stays with pl_renewer (its own thread): a stalled event loop starves no    */
/* renewal.                                                                   */
/*                                                                            */
/* Thread rules: every pl_aio_* call may be made from any thread, concurrently */
/* with the others, except pl_aio_free (not concurrently with calls on the    */
/* same pl_aio). A pl_aio_done belongs to whoever took it from pl_aio_next.   */
/* Ownership: submit calls copy what they need (the outgoing message or batch */
/* may be freed at once); a settle takes its own reference to the message.    */
/* The pl_aio keeps a reference to its client.                                */
/* ------------------------------------------------------------------------ */

typedef struct pl_aio pl_aio;
typedef struct pl_aio_done pl_aio_done;

/* Kinds of operation (pl_aio_done_kind). */
#define PL_AIO_SEND               1
#define PL_AIO_SEND_BATCH         2
#define PL_AIO_PEEK_LOCK          3
#define PL_AIO_RECEIVE_AND_DELETE 4
#define PL_AIO_RENEW              5
#define PL_AIO_UNLOCK             6
#define PL_AIO_COMPLETE           7
#define PL_AIO_IDLE               8 /* pl_aio_idle: no operation, the background is done */

/* Starts the engine's I/O thread for client (which it keeps a reference to). */
PL_EXTERN int pl_aio_new(pl_aio **out, pl_client *client);
/* The fd to watch for readability (eventfd on Linux, the read end of a pipe
 * elsewhere). Owned by the engine: never read, write or close it. */
PL_EXTERN int pl_aio_fd(const pl_aio *a);

/* Submit calls: PL_OK with *id set (never 0; ids are unique per engine), or a
 * negative code for a call refused at once (invalid argument, PL_ECLOSED, or
 * for a settle the fence's answer: PL_ESTATE, PL_ELOCKLOST, PL_EUNKNOWN), in
 * which case no completion follows. Otherwise exactly one completion with that
 * id follows, whatever happens (cancel and close included). */
PL_EXTERN int pl_aio_send(pl_aio *a, uint64_t *id, const char *entity, const pl_outgoing *m);
PL_EXTERN int pl_aio_send_batch(pl_aio *a, uint64_t *id, const char *entity, const pl_batch *b);
PL_EXTERN int pl_aio_peek_lock(pl_aio *a, uint64_t *id, const char *entity, int timeout_s);
PL_EXTERN int pl_aio_receive_and_delete(pl_aio *a, uint64_t *id, const char *entity, int timeout_s);
PL_EXTERN int pl_aio_renew_lock(pl_aio *a, uint64_t *id, pl_message *m);
PL_EXTERN int pl_aio_unlock(pl_aio *a, uint64_t *id, pl_message *m);
PL_EXTERN int pl_aio_complete(pl_aio *a, uint64_t *id, pl_message *m);
/* pl_renewer_finish for an event loop, without blocking: stops renewing m (r may
 * be NULL) and, if its lock is still held, submits its complete (handler_ok
 * nonzero) or unlock as pl_aio_complete / pl_aio_unlock do, with *id set; once
 * that completion is taken, pl_finish_outcome(m, 1) says what became of m. When
 * there is nothing to send (the handler settled m or is settling it, the lock was
 * lost, a close abandoned it), PL_OK with *id 0: pl_finish_outcome(m, 0) says
 * it now. PL_ESTATE for a receive-and-delete message, else a submit's error. */
PL_EXTERN int pl_aio_finish(pl_aio *a, uint64_t *id, pl_message *m, pl_renewer *r_or_null, int handler_ok);
/* Abandons m in the background: no completion; counted in
 * pl_aio_stats.cancel_abandoned. For a lock that reached a caller who no longer
 * wants it (a receive cancelled in the event loop after its answer came, a
 * handler cancelled while it held the lock). */
PL_EXTERN int pl_aio_unlock_detached(pl_aio *a, pl_message *m);

/* Asks to be told, through the fd like any completion, when the engine's
 * background work (pl_aio_stats.background: cancelled operations not yet ended,
 * the unlocks counted in cancel_abandoned) reaches 0: PL_OK with *id set, then
 * one completion of kind PL_AIO_IDLE with that id, queued after the completions
 * of the operations that ended the work (at once when there is none now). Its
 * code: PL_OK; PL_ETIMEOUT when timeout_ms passed first (-1: no limit; kept by
 * the I/O thread, so the host arms no timer); PL_ECANCELED after pl_aio_cancel
 * (a, id). One-shot: ask again for the next time. Any thread, as the submit
 * calls; several may wait at once. PL_ECLOSED once pl_aio_close was called; one
 * asked before still completes when the work the close left ends. It is not an
 * operation: not counted in submitted, completed or pending. */
PL_EXTERN int pl_aio_idle(pl_aio *a, uint64_t *id, int timeout_ms);

/* Cancels operation id. PL_OK: its completion will say PL_ECANCELED (or, for a
 * send or settle that may already have been carried out, PL_EUNKNOWN), except
 * a receive whose answer had begun to arrive: then it runs to its end, a
 * peek-locked message is unlocked at once (counted in cancel_abandoned) and the
 * completion says PL_ECANCELED; a receive-and-delete that got a message
 * completes with it (PL_OK), since the message is already deleted.
 * A peek-lock completion still queued (not yet taken by pl_aio_next) with a
 * message is withdrawn: its lock is unlocked at once and counted, and the
 * completion, still queued, says PL_ECANCELED without a message; any other
 * queued completion keeps its outcome (PL_ESTATE).
 * Waiting receives are aborted (the transfer is stopped at once; a server that is
 * serving the receive takes no message for a connection that has gone, but one
 * cancelled before the server read it, or while the server was taking a lock
 * for it, may still lock a message for nobody, which then comes back after its
 * lock duration); a send or
 * settle already on the wire cannot be called back: PL_ESTATE, its completion
 * says what happened. PL_EINVAL for an id that is not pending (done and taken,
 * or never submitted). */
PL_EXTERN int pl_aio_cancel(pl_aio *a, uint64_t id);

/* Takes the next completion: PL_OK with *out set (free it with
 * pl_aio_done_free), or PL_EMPTY (never blocks). */
PL_EXTERN int pl_aio_next(pl_aio_done **out, pl_aio *a);
PL_EXTERN uint64_t pl_aio_done_id(const pl_aio_done *d);
PL_EXTERN int pl_aio_done_kind(const pl_aio_done *d); /* PL_AIO_* */
/* The operation's result: PL_OK, PL_EMPTY (a receive found nothing), or a
 * negative code, as the blocking call would have returned. */
PL_EXTERN int pl_aio_done_code(const pl_aio_done *d);
PL_EXTERN int pl_aio_done_http_status(const pl_aio_done *d);
PL_EXTERN int pl_aio_done_retryable(const pl_aio_done *d);
PL_EXTERN const char *pl_aio_done_message(const pl_aio_done *d); /* error text, "" on success; no secret */
/* Peek-lock attempts whose answer was lost after the server may have locked a
 * message (pl_client_last_orphaned's figure for this operation). */
PL_EXTERN unsigned pl_aio_done_orphaned(const pl_aio_done *d);
/* Attempts the operation made (1 + its retries; 0 when it never went out): what
 * a host logs for it, since the engine calls no log hook (see pl_log_fn). */
PL_EXTERN int pl_aio_done_attempts(const pl_aio_done *d);
/* The received message (receives with PL_OK), handed over: the caller owns it
 * (pl_message_free); later calls return NULL. A peek-locked message left in a
 * completion that is freed is unlocked by nobody: take it. */
PL_EXTERN pl_message *pl_aio_done_take_message(pl_aio_done *d);
PL_EXTERN void pl_aio_done_free(pl_aio_done *d);

/* Begins closing: no new submissions (PL_ECLOSED); queued operations and
 * waiting receives complete with PL_ECLOSED at once; sends and settles on the
 * wire run to their end. Does not block. Idempotent. */
PL_EXTERN int pl_aio_close(pl_aio *a);
/* Closes, waits for the I/O thread to finish, frees the completions nobody
 * took, then the engine. Blocks (up to the request timeout of a settle on the
 * wire). Accepts NULL. */
PL_EXTERN void pl_aio_free(pl_aio *a);

typedef struct pl_aio_stats {
    uint64_t submitted;
    uint64_t completed; /* completions queued */
    uint64_t pending;   /* submitted, not yet completed */
    uint64_t inflight;  /* of which on the wire now */
    uint64_t max_pending;
    uint64_t cancelled;        /* completions that said PL_ECANCELED */
    uint64_t cancel_abandoned; /* locks unlocked in the background (pl_aio_unlock_detached):
                                  a lock that reached a cancelled receive, or a block
                                  cancelled while it held one */
    uint64_t op_bytes;         /* engine memory per pending operation (excluding libcurl's) */
    uint64_t background;       /* pending operations nobody waits for, which the engine
                                  finishes on its own: cancelled (or closed) ones not yet
                                  ended, and the unlocks counted in cancel_abandoned
                                  (pl_aio_idle tells when it reaches 0) */
} pl_aio_stats;

PL_EXTERN int pl_aio_stats_get(pl_aio *a, pl_aio_stats *out);

/* ------------------------------------------------------------------------ */
/* Sans-I/O: requests and response parsing for drivers that own their I/O     */
/* (OpenResty cosockets). The blocking client uses exactly these.             */
/* Thread safety: the builders may be called concurrently on one client; a   */
/* pl_request or pl_response belongs to one thread at a time. Strings read    */
/* from a request are borrowed and live until pl_request_free.                */
/* ------------------------------------------------------------------------ */

typedef struct pl_request pl_request;
typedef struct pl_response pl_response;

PL_EXTERN int pl_request_send(pl_request **out, pl_client *client, const char *entity, const pl_outgoing *m);
PL_EXTERN int pl_request_send_batch(pl_request **out, pl_client *client, const char *entity,
                                    const pl_batch *b);
/* peek_lock nonzero: POST …/messages/head; zero: DELETE (receive-and-delete). */
PL_EXTERN int pl_request_receive(pl_request **out, pl_client *client, const char *entity, int timeout_s,
                                 int peek_lock);
#define PL_SETTLE_RENEW    1
#define PL_SETTLE_UNLOCK   2
#define PL_SETTLE_COMPLETE 3
PL_EXTERN int pl_request_settle(pl_request **out, pl_client *client, const pl_message *m, int op);
PL_EXTERN void pl_request_free(pl_request *req);
PL_EXTERN const char *pl_request_method(const pl_request *req);
PL_EXTERN const char *pl_request_url(const pl_request *req);
PL_EXTERN size_t pl_request_header_count(const pl_request *req);
PL_EXTERN const char *pl_request_header_name(const pl_request *req, size_t i);
/* Includes Authorization: a secret. */
PL_EXTERN const char *pl_request_header_value(const pl_request *req, size_t i);
PL_EXTERN const void *pl_request_body(const pl_request *req, size_t *len);

PL_EXTERN int pl_response_new(pl_response **out, int status);
PL_EXTERN void pl_response_free(pl_response *resp);
PL_EXTERN int pl_response_add_header(pl_response *resp, const char *name, const char *value);
PL_EXTERN int pl_response_set_body(pl_response *resp, const void *body, size_t len);

/* Interprets resp as the answer to req. For receives: PL_OK with *out set, or
 * PL_EMPTY. For settles: updates m's lock state and expiry as the blocking calls
 * do (sent_mono_ms is when the request went out); m is NULL for the others. For
 * sends: PL_OK. Otherwise a negative code with pl_error_last() filled in. out may
 * be NULL for non-receives. */
PL_EXTERN int pl_response_result(pl_message **out, pl_client *client, const pl_request *req,
                                 pl_message *m_or_null, const pl_response *resp, int64_t sent_mono_ms);

/* The error an HTTP status stands for, by the table every answer of the REST API is read
 * by: 400 PL_EBADREQUEST, 401 PL_EAUTH, 403 PL_EAUTH or PL_ETOOLARGE (body, which may be
 * NULL, speaks of a size), 404 and 410 PL_ENOTFOUND (a settle's 404: PL_ELOCKLOST),
 * 409 PL_ECONFLICT, 429 and 503 PL_ETHROTTLED and other 5xx PL_ESERVER (both retryable),
 * any other PL_EHTTP. Sets pl_error_last() ("<what>: HTTP <status>") and returns the
 * code; for requests the library does not build (Python's management GETs). */
PL_EXTERN int pl_http_status_error(int status, const char *body, const char *what);

#ifdef __cplusplus
}
#endif

#endif /* PEEKLOCK_H */
