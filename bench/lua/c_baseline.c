/* C baseline for bench/lua: the same operations as bench.lua, through the C API.
 *   c_baseline net  CONNSTR ENTITY N   send + peek_lock + complete, N times (3N ops)
 *   c_baseline wire CONNSTR ENTITY N   sans-I/O: build a send request and parse a
 *                                      peek-lock response, N times (2N ops)
 * Prints "<mode> <ops> <cpu_seconds>" (process CPU time, every thread: the clock
 * behind clock() and Lua's os.clock()).
 *   c_baseline serve CONNSTR ENTITY    one client, then per stdin line "net|wire K":
 *                                      K iterations, prints "<ops> <cpu_seconds>"
 *                                      (bench/lua/run.py's interleaved rounds). */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "peeklock.h"

static int die(const char *what, int rc)
{
    fprintf(stderr, "%s failed: %d %s\n", what, rc, pl_error_last()->message);
    return -1;
}

static int build_outgoing(pl_outgoing **out, int i)
{
    char body[64];
    int n = snprintf(body, sizeof body, "payload %d", i);
    int rc = pl_outgoing_new(out, body, (size_t)n);
    if (rc == 0) rc = pl_outgoing_set_broker(*out, "Label", "bench");
    if (rc == 0) rc = pl_outgoing_add_string(*out, "Priority", "High");
    if (rc == 0) rc = pl_outgoing_add_int(*out, "Attempt", i);
    return rc;
}

static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* What bench.lua reads of a received message (msg.body, msg.message_id, msg.properties):
 * the body, the id, every property's name and value. */
static void read_message(const pl_message *msg)
{
    size_t len;
    (void)pl_message_body(msg, &len);
    (void)pl_message_id(msg);
    for (size_t p = 0; p < pl_message_property_count(msg); p++) {
        (void)pl_message_property_name(msg, p);
        (void)pl_message_property_string(msg, p);
    }
}

/* send + peek_lock + complete, n times: 3n ops, or -1 */
static long net_loop(pl_client *c, const char *entity, long n)
{
    int rc;
    for (long i = 0; i < n; i++) {
        pl_outgoing *m = NULL;
        pl_message *msg = NULL;
        if ((rc = build_outgoing(&m, (int)i))) return die("outgoing", rc);
        if ((rc = pl_send(c, entity, m))) return die("send", rc);
        pl_outgoing_free(m);
        if ((rc = pl_peek_lock(&msg, c, entity, 5))) return die("peek_lock", rc);
        read_message(msg);
        if ((rc = pl_complete(c, msg))) return die("complete", rc);
        pl_message_free(msg);
    }
    return 3 * n;
}

/* build a send request and parse a peek-lock response, n times: 2n ops, or -1 */
static long wire_loop(pl_client *c, const char *entity, long n)
{
    char location[256], bp[512];
    int rc;
    snprintf(location, sizeof location, "%s/%s/messages/7/0f8fad5b-d9cb-469f-a165-70867728950e",
             pl_client_endpoint(c), entity);
    for (long i = 0; i < n; i++) {
        pl_outgoing *m = NULL;
        pl_request *req = NULL, *rreq = NULL;
        pl_response *resp = NULL;
        pl_message *msg = NULL;
        size_t len;
        if ((rc = build_outgoing(&m, (int)i))) return die("outgoing", rc);
        if ((rc = pl_request_send(&req, c, entity, m))) return die("request_send", rc);
        (void)pl_request_method(req);
        (void)pl_request_url(req);
        (void)pl_request_body(req, &len);
        for (size_t h = 0; h < pl_request_header_count(req); h++) {
            (void)pl_request_header_name(req, h);
            (void)pl_request_header_value(req, h);
        }
        pl_request_free(req);
        pl_outgoing_free(m);
        if ((rc = pl_request_receive(&rreq, c, entity, 0, 1))) return die("request_receive", rc);
        snprintf(bp, sizeof bp,
                 "{\"DeliveryCount\":1,\"EnqueuedSequenceNumber\":0,"
                 "\"EnqueuedTimeUtc\":\"Sun, 22 Nov 2026 14:00:00 GMT\",\"Label\":\"bench\","
                 "\"LockToken\":\"0f8fad5b-d9cb-469f-a165-70867728950e\","
                 "\"LockedUntilUtc\":\"Sun, 22 Nov 2026 14:01:00 GMT\",\"MessageId\":\"m%ld\","
                 "\"SequenceNumber\":7,\"State\":\"Active\",\"TimeToLive\":922337203685.47754}",
                 i);
        if ((rc = pl_response_new(&resp, 201))) return die("response_new", rc);
        pl_response_add_header(resp, "Date", "Sun, 22 Nov 2026 14:00:00 GMT");
        pl_response_add_header(resp, "BrokerProperties", bp);
        pl_response_add_header(resp, "Location", location);
        pl_response_add_header(resp, "Priority", "\"High\"");
        pl_response_add_header(resp, "Attempt", "3");
        pl_response_add_header(resp, "Content-Type", "text/plain");
        pl_response_set_body(resp, "payload", 7);
        if ((rc = pl_response_result(&msg, c, rreq, NULL, resp, pl_now_mono_ms())))
            return die("response_result", rc);
        read_message(msg);
        pl_message_free(msg);
        pl_response_free(resp);
        pl_request_free(rreq);
    }
    return 2 * n;
}

static long run_mode(pl_client *c, const char *mode, const char *entity, long n)
{
    if (strcmp(mode, "net") == 0) return net_loop(c, entity, n);
    if (strcmp(mode, "wire") == 0) return wire_loop(c, entity, n);
    fprintf(stderr, "c_baseline: mode must be net or wire, got %s\n", mode);
    return -1;
}

int main(int argc, char **argv)
{
    int serve = argc == 4 && strcmp(argv[1], "serve") == 0;
    if (argc != 5 && !serve) {
        fprintf(stderr, "usage: c_baseline net|wire CONNSTR ENTITY N | c_baseline serve CONNSTR ENTITY\n");
        return 2;
    }
    const char *entity = argv[3];
    pl_client *c = NULL;
    int rc = pl_client_new_from_connection_string(&c, argv[2]);
    if (rc) {
        die("client", rc);
        return 1;
    }
    if (serve) {
        char line[64], mode[16];
        long k;
        while (fgets(line, sizeof line, stdin)) {
            if (sscanf(line, "%15s %ld", mode, &k) != 2) {
                fprintf(stderr, "c_baseline: bad line\n");
                return 2;
            }
            double t0 = cpu_s();
            long ops = run_mode(c, mode, entity, k);
            if (ops < 0) return 1;
            printf("%ld %.9f\n", ops, cpu_s() - t0);
            fflush(stdout);
        }
    } else {
        double t0 = cpu_s();
        long ops = run_mode(c, argv[1], entity, atol(argv[4]));
        if (ops < 0) return 1;
        printf("%s %ld %.6f\n", argv[1], ops, cpu_s() - t0);
    }
    pl_client_free(c);
    return 0;
}
