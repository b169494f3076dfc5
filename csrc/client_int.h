/* Private: what drivers other than client.c (renewer.c) need from a pl_client.
 * Not installed. All functions are thread-safe unless noted. */
#ifndef PEEKLOCK_CLIENT_INT_H
#define PEEKLOCK_CLIENT_INT_H

#include <curl/curl.h>
#include <stdint.h>
#include "peeklock.h"
#include "wire_int.h"

/* Reference counting: pl_client_free drops the user's reference; messages and
 * renewers hold their own. The client is destroyed at zero. */
void pl_client_ref(pl_client *c);
void pl_client_unref(pl_client *c);

/* 1 once pl_client_free was called by the user (new operations may still be
 * made by holders of references, e.g. the renewer unlocking on close). */
int pl_client_closed(const pl_client *c);

/* Makes c the owner of m, a message the pure core just made: takes a client
 * reference that m releases through its owner hook when it is freed. */
void pl_client_adopt(pl_client *c, pl_message *m);
/* The client that owns m (pl_client_adopt), or NULL. */
pl_client *pl_message_client(const pl_message *m);

/* The Authorization header value for requests under `scope` (see
 * pl_wire_scope), from the token cache: SAS tokens are cached per scope and
 * re-signed well before expiry; a ready-made SAS token or bearer token is used
 * as is (the bearer callback is called when the cached bearer token is near
 * expiry). *out freed with free(). A secret: never log it. */
int pl_client_auth(pl_client *c, const char *scope, char **out);

/* Builds a renew/unlock/complete request for m (op: PL_SETTLE_*), with the
 * Authorization header filled in; same as the public pl_request_settle. */
int pl_client_settle_request(pl_request **out, pl_client *c, const pl_message *m, int op);

/* The libcurl driver's response: the pure core's pl_response (first, so the
 * pl_response * of pl_client_setup_easy converts back with pl_collector_of) and
 * the state of collecting it from libcurl's callbacks. */
#define PL_RESP_INLINE_HEADERS 8
#define PL_RESP_INLINE_BYTES   640
typedef struct pl_collector {
    pl_response resp;
    size_t nseen;         /* headers seen (kept or dropped), for the limit */
    int only_retry_after; /* keep only Retry-After (answers to sends and settles
                             need no other header) */
    int headers_done;     /* the blank line that ends the headers came (a transfer
                             that ends without it was cut short, even when libcurl
                             reports success) */
    int sends;            /* times libcurl put the request on the wire (it silently
                             re-sends once on a dead reused connection: more than 1
                             means an earlier copy may have been acted on) */
    /* The first headers and their "name\0value\0" blocks live here (not freed
     * on their own); the rest is malloc'd, one block per header. Not zeroed. */
    pl_header hdr_inline[PL_RESP_INLINE_HEADERS];
    size_t strs_used;
    char strs[PL_RESP_INLINE_BYTES];
} pl_collector;

static inline pl_collector *pl_collector_of(const pl_response *r)
{
    return (pl_collector *)r;
}

/* Configures an easy handle the way the client does: timeouts (connect, and
 * request timeout + extra_timeout_ms), CA file / verification (https unless the
 * development emulator), CURLOPT_NOSIGNAL, TCP keep-alive. Then sets method,
 * URL, headers (plus an empty "Expect:"), body of req, and installs callbacks
 * that collect the answer into *resp_out (a new pl_response of a pl_collector;
 * the caller frees it with pl_response_free after the transfer; for anything
 * but a receive it keeps only the Retry-After header; the collector's `sends`
 * counts how often libcurl put the request on the wire: above 1, an earlier
 * copy may have been acted on). *hdrs_out must be freed with
 * curl_slist_free_all after the transfer. req and the easy handle must outlive
 * the transfer. Never shares a connection cache. */
int pl_client_setup_easy(pl_client *c, CURL *easy, const pl_request *req, long extra_timeout_ms,
                         struct curl_slist **hdrs_out, pl_response **resp_out);

/* A reusable easy handle of this client, as the blocking client pools them: its
 * static options and collecting callbacks are set once, and each request sets
 * only what differs from the handle's previous one (the header list is kept
 * while it matches, so a cached token's header is not built again). For a driver
 * that keeps its own handles (the async engine): one transfer at a time each.
 * pl_client_easy_prepare makes a new collector (*resp_out, freed by the caller
 * with pl_response_free after the transfer, as pl_client_setup_easy's);
 * pl_easy_done forgets it once the transfer has ended. The handle holds the
 * Authorization header until pl_client_easy_free, which wipes it. */
typedef struct pl_easy pl_easy;
pl_easy *pl_client_easy_new(pl_client *c);
int pl_client_easy_prepare(pl_client *c, pl_easy *s, const pl_request *req, long extra_timeout_ms,
                           pl_response **resp_out);
CURL *pl_easy_curl(const pl_easy *s);
void pl_easy_done(pl_easy *s);
void pl_client_easy_free(pl_easy *s);

/* Maps a failed transfer (CURLcode != CURLE_OK) to a PL_E* code and sets the
 * thread's last error: PL_ETIMEOUT, PL_ECONNECT, PL_EPROTOCOL (limits exceeded). */
int pl_client_curl_error(CURLcode rc, const pl_response *resp);
/* Same, more precise with the handle (CURLINFO_OS_ERRNO: out of file descriptors)
 * and its CURLOPT_ERRORBUFFER (which TLS check failed); either may be NULL. A CA
 * file that cannot be used is PL_EINVAL (not retried); a certificate that fails
 * verification is not retryable. */
int pl_client_curl_error_easy(CURLcode rc, const pl_response *resp, CURL *e, const char *errbuf);

/* How far a transfer that ended with rc got (PL_IO_*, outcome_int.h): not sent
 * (nothing reached the wire), unanswered, malformed (cut short, over a limit),
 * or answered. For outcome.c. */
int pl_client_transfer_io(CURLcode rc, const pl_response *resp);

/* The client's retry policy (max_retries, backoff), for drivers that run their
 * own I/O and ask outcome.c (the cosocket driver, the async engine). */
struct pl_policy;
const struct pl_policy *pl_client_policy(const pl_client *c);

/* Counts a finished call in the client's statistics as the blocking driver
 * does (sent, received, completed, abandoned, renewed, lost). */
void pl_client_count_result(pl_client *c, const pl_request *req, int rc);

/* Statistics (atomic counters). */
typedef enum pl_stat {
    PL_STAT_REQUESTS,
    PL_STAT_REUSED,
    PL_STAT_RETRIES,
    PL_STAT_SENT,
    PL_STAT_RECEIVED,
    PL_STAT_COMPLETED,
    PL_STAT_ABANDONED,
    PL_STAT_RENEWED,
    PL_STAT_LOST,
    PL_STAT_ORPHANED,
    PL_STAT_FAILED,
    PL_STAT_RENEW_FAILURES,
    PL_STAT__COUNT
} pl_stat;
void pl_client_stat_add(pl_client *c, pl_stat which, uint64_t n);
/* After pl_call_report said next (PL_NEXT_*) about an attempt of call (whose answer,
 * if any, had HTTP status): a retry, or a call that ends in an error, is counted
 * (failed, renew_failures) and, when log is nonzero, told to the client's log hook
 * (pl_client_options.log_fn) on this thread; pl_error_last() is left as it was.
 * Drivers whose thread must not wait on the host language (the async engine's, with
 * its lock held) pass log 0. */
struct pl_call;
void pl_client_call_reported(pl_client *c, const struct pl_call *call, int next, int status, int log);
/* Records one renew round trip (feeds renew_p50_ms / renew_p99_ms). */
void pl_client_record_renew_rtt(pl_client *c, double ms);
/* Current renew RTT percentile estimate (0 when none yet), pct in 0..100. */
double pl_client_renew_rtt_pct(pl_client *c, double pct);

#endif
