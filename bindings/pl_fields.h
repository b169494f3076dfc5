/* pl_fields.h — the fields of the public structs that the bindings convert (options in,
 * stats and tallies out), each list written once here and expanded by the Python glue
 * (bindings/python/glue.c) and the Lua glue (bindings/lua/options.c, bindings/lua/stats.c).
 * A new field of one of these structs in peeklock.h is one line here, and both bindings
 * take or show it by the field's name.
 *
 * Each list is a macro that calls X once per field, in the struct's order:
 *   options: X(struct type, field, kind), kind STR (const char *), INT (int), LONG (long)
 *            or DBL (double); PL_FIELD_OFFSET checks that the kind is the field's type.
 *   stats:   X(kind, field), kind U64 (uint64_t), DBL (double) or U64S (an array of
 *            uint64_t, shown as a list). */
#ifndef PL_FIELDS_H
#define PL_FIELDS_H

#include <stddef.h>
#include "peeklock.h"

/* The offset of field f of struct T, whose C type must be kind's (_Generic has no other
 * association: a list line whose kind is not the field's type does not compile). */
#define PL_FIELD_CTYPE_STR          const char *
#define PL_FIELD_CTYPE_INT          int
#define PL_FIELD_CTYPE_LONG         long
#define PL_FIELD_CTYPE_DBL          double
#define PL_FIELD_OFFSET(T, f, kind) _Generic(((T *)0)->f, PL_FIELD_CTYPE_##kind : offsetof(T, f))

/* ---- options (peeklock.client / pl_client_new, the renewer's, the run's) ------------------ */

#define PL_CLIENT_OPTIONS_FIELDS(X)                                                                          \
    X(pl_client_options, connection_string, STR)                                                             \
    X(pl_client_options, endpoint, STR)                                                                      \
    X(pl_client_options, key_name, STR)                                                                      \
    X(pl_client_options, key, STR)                                                                           \
    X(pl_client_options, sas_token, STR)                                                                     \
    X(pl_client_options, connect_timeout_ms, LONG)                                                           \
    X(pl_client_options, request_timeout_ms, LONG)                                                           \
    X(pl_client_options, max_retries, INT)                                                                   \
    X(pl_client_options, retry_base_ms, LONG)                                                                \
    X(pl_client_options, retry_max_ms, LONG)                                                                 \
    X(pl_client_options, pool_size, INT)                                                                     \
    X(pl_client_options, ca_file, STR)                                                                       \
    X(pl_client_options, token_lifetime_s, INT)

#define PL_RENEWER_OPTIONS_FIELDS(X)                                                                         \
    X(pl_renewer_options, max_connections, INT)                                                              \
    X(pl_renewer_options, margin_floor_ms, LONG)                                                             \
    X(pl_renewer_options, jitter, DBL)                                                                       \
    X(pl_renewer_options, default_max_renew_ms, LONG)                                                        \
    X(pl_renewer_options, request_timeout_ms, LONG)

#define PL_RUN_OPTIONS_FIELDS(X)                                                                             \
    X(pl_run_options, max_messages, LONG)                                                                    \
    X(pl_run_options, idle_timeout, DBL)

/* ---- stats and tallies (the *_stats_get / pl_run_tallies_get out structs) ----------------- */

#define PL_CLIENT_STATS_FIELDS(X)                                                                            \
    X(U64, requests)                                                                                         \
    X(U64, reused_connections)                                                                               \
    X(U64, retries)                                                                                          \
    X(U64, sent)                                                                                             \
    X(U64, received)                                                                                         \
    X(U64, completed)                                                                                        \
    X(U64, abandoned)                                                                                        \
    X(U64, renewed)                                                                                          \
    X(U64, lost)                                                                                             \
    X(DBL, renew_p50_ms)                                                                                     \
    X(DBL, renew_p99_ms)                                                                                     \
    X(U64, orphaned_locks)                                                                                   \
    X(U64, failed)                                                                                           \
    X(U64, renew_failures)

#define PL_RENEWER_STATS_FIELDS(X)                                                                           \
    X(U64, held)                                                                                             \
    X(U64, renewals)                                                                                         \
    X(U64, failures)                                                                                         \
    X(U64, lost)                                                                                             \
    X(U64, cap_reached)                                                                                      \
    X(U64, threads)                                                                                          \
    X(DBL, lateness_p99_ms)                                                                                  \
    X(DBL, rtt_p99_ms)                                                                                       \
    X(U64S, slack_buckets)                                                                                   \
    X(U64, state_bytes)

/* (its version field is the caller's: not a tally) */
#define PL_RUN_TALLIES_FIELDS(X)                                                                             \
    X(U64, received)                                                                                         \
    X(U64, redelivered)                                                                                      \
    X(U64, processed)                                                                                        \
    X(U64, settled_by_handler)                                                                               \
    X(U64, failed)                                                                                           \
    X(U64, lost)                                                                                             \
    X(U64, unknown)                                                                                          \
    X(U64, abandoned_on_drain)                                                                               \
    X(U64, left_to_expire)                                                                                   \
    X(U64, errors)                                                                                           \
    X(U64, in_flight)

#define PL_AIO_STATS_FIELDS(X)                                                                               \
    X(U64, submitted)                                                                                        \
    X(U64, completed)                                                                                        \
    X(U64, pending)                                                                                          \
    X(U64, inflight)                                                                                         \
    X(U64, max_pending)                                                                                      \
    X(U64, cancelled)                                                                                        \
    X(U64, cancel_abandoned)                                                                                 \
    X(U64, op_bytes)                                                                                         \
    X(U64, background)

#endif
