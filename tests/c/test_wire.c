/* The sans-I/O wire layer: every recorded receive/settle/send response from
 * tests/fixtures/recorded-exchanges.json parsed as the client would, request
 * building (URLs, headers, entity encoding, SAS scope), status mapping, and
 * malformed responses. No network; links the pure core alone (the same requests
 * made through a client: test_client_requests). */
#include <ctype.h>
#include <math.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#include "error_int.h"
#include "message_int.h"
#include "support.h"
#include "wire_int.h"

static const char *known_headers[] = {
    "transfer-encoding",         "content-type",   "location", "server", "brokerproperties", "date",
    "strict-transport-security", "content-length", NULL};

static int is_known(const char *h)
{
    for (int i = 0; known_headers[i]; i++)
        if (pl_strcaseeq(h, known_headers[i])) return 1;
    return 0;
}

/* Entity of a recorded path: strip "/messages/..." (case-insensitive). */
static void entity_of(const char *path, char *out, size_t n)
{
    const char *p = path + 1, *best = NULL;
    for (const char *q = p; *q; q++)
        if (q[0] == '/' && pl_strncaseeq(q, "/messages", 9) && (q[9] == '/' || q[9] == 0)) {
            best = q;
            break;
        }
    size_t len = best ? (size_t)(best - p) : strlen(p);
    snprintf(out, n, "%.*s", (int)len, p);
}

static pl_response *fixture_response(cJSON *resp)
{
    pl_response *r = NULL;
    REQUIRE(pl_response_new(&r, cJSON_GetObjectItem(resp, "status")->valueint) == PL_OK);
    cJSON *h;
    cJSON_ArrayForEach(h, cJSON_GetObjectItem(resp, "headers"))
    {
        REQUIRE(pl_response_add_header(r, h->string, h->valuestring) == PL_OK);
    }
    cJSON *b64 = cJSON_GetObjectItem(resp, "body_base64");
    cJSON *body = cJSON_GetObjectItem(resp, "body");
    if (cJSON_IsString(b64)) {
        size_t n = strlen(b64->valuestring);
        unsigned char *buf = malloc(n);
        int len = EVP_DecodeBlock(buf, (const unsigned char *)b64->valuestring, (int)n);
        if (n >= 1 && b64->valuestring[n - 1] == '=') len--;
        if (n >= 2 && b64->valuestring[n - 2] == '=') len--;
        REQUIRE(pl_response_set_body(r, buf, (size_t)len) == PL_OK);
        free(buf);
    } else if (cJSON_IsString(body)) {
        REQUIRE(pl_response_set_body(r, body->valuestring, strlen(body->valuestring)) == PL_OK);
    }
    return r;
}

static void check_broker_fields(const pl_message *m, const char *bp_text)
{
    cJSON *bp = cJSON_Parse(bp_text);
    REQUIRE(bp != NULL);
    cJSON *f;
    cJSON_ArrayForEach(f, bp)
    {
        const char *k = f->string;
        if (!strcmp(k, "LockToken"))
            CHECK_STR(pl_message_lock_token(m), f->valuestring);
        else if (!strcmp(k, "SequenceNumber"))
            CHECK_EQ(pl_message_sequence_number(m), (long long)f->valuedouble);
        else if (!strcmp(k, "EnqueuedSequenceNumber"))
            CHECK_EQ(pl_message_enqueued_sequence_number(m), (long long)f->valuedouble);
        else if (!strcmp(k, "DeliveryCount"))
            CHECK_EQ(pl_message_delivery_count(m), f->valueint);
        else if (!strcmp(k, "EnqueuedTimeUtc"))
            CHECK_EQ(pl_message_enqueued_time(m), pl_http_date_parse(f->valuestring));
        else if (!strcmp(k, "LockedUntilUtc"))
            CHECK_EQ(pl_message_locked_until(m), pl_http_date_parse(f->valuestring));
        else if (!strcmp(k, "TimeToLive"))
            /* the recorded 922337203685.47754 (TimeSpan.MaxValue) is "none", -1 */
            CHECK(f->valuedouble >= 922337203685.0
                      ? pl_message_time_to_live(m) == -1
                      : fabs(pl_message_time_to_live(m) - f->valuedouble) < 1e-3);
        else if (cJSON_IsString(f) && pl_message_broker_index(k) >= 0)
            CHECK_STR(pl_message_broker(m, k), f->valuestring);
        else if (!strcmp(k, "ForcePersistence")) { /* echoed flag, not served */
        } else {
            fprintf(stderr, "unexpected BrokerProperties field %s\n", k);
            pl_test_failures++;
        }
    }
    cJSON_Delete(bp);
}

static void replay_fixtures(void)
{
    size_t len;
    char *text = pl_test_read_file(PL_FIXTURES_DIR "/recorded-exchanges.json", &len);
    REQUIRE(text != NULL);
    cJSON *root = cJSON_Parse(text);
    free(text);
    REQUIRE(root != NULL);
    int receives = 0, settles = 0, sends = 0, empties = 0, props = 0;
    pl_message *last_locked = NULL;
    cJSON *ex;
    cJSON_ArrayForEach(ex, cJSON_GetObjectItem(root, "exchanges"))
    {
        const char *op = cJSON_GetObjectItem(ex, "operation")->valuestring;
        const char *id = cJSON_GetObjectItem(ex, "id")->valuestring;
        cJSON *rq = cJSON_GetObjectItem(ex, "request"), *rs = cJSON_GetObjectItem(ex, "response");
        char endpoint[256], entity[256];
        snprintf(endpoint, sizeof endpoint, "https://%s", cJSON_GetObjectItem(rq, "host")->valuestring);
        entity_of(cJSON_GetObjectItem(rq, "path")->valuestring, entity, sizeof entity);
        int peek = !strcmp(op, "peek-lock");
        pl_request *req = NULL;
        if (peek || !strcmp(op, "receive-and-delete")) {
            REQUIRE(pl_wire_receive(&req, endpoint, entity, 5, peek, NULL) == PL_OK);
            CHECK_STR(req->method, peek ? "POST" : "DELETE");
            pl_response *resp = fixture_response(rs);
            pl_message *m = NULL;
            int rc = pl_wire_result(&m, endpoint, req, NULL, resp, 1000);
            if (resp->status == 204) {
                CHECK_EQ(rc, PL_EMPTY);
                CHECK(m == NULL);
                empties++;
            } else {
                if (rc != PL_OK) fprintf(stderr, "fixture %s: %s\n", id, pl_error_last()->message);
                CHECK_EQ(rc, PL_OK);
                REQUIRE(m != NULL);
                receives++;
                size_t blen;
                const void *body = pl_message_body(m, &blen);
                CHECK_EQ(blen, resp->body_len);
                CHECK(blen == 0 || memcmp(body, resp->body, blen) == 0);
                const char *ct = pl_response_header(resp, "content-type");
                if (ct)
                    CHECK_STR(pl_message_content_type(m), ct);
                else
                    CHECK(pl_message_content_type(m) == NULL);
                const char *bp = pl_response_header(resp, "BrokerProperties");
                if (bp) check_broker_fields(m, bp);
                CHECK_STR(pl_message_entity(m), entity);
                size_t expect_props = 0;
                for (size_t i = 0; i < resp->nheaders; i++) {
                    if (is_known(resp->headers[i].name)) continue;
                    CHECK_STR(pl_message_property_name(m, expect_props), resp->headers[i].name);
                    CHECK_STR(pl_message_property_raw(m, expect_props), resp->headers[i].value);
                    expect_props++;
                    props++;
                }
                CHECK_EQ(pl_message_property_count(m), expect_props);
                if (peek) {
                    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_HELD);
                    CHECK_STR(m->location, pl_response_header(resp, "Location"));
                    int64_t dur =
                        (pl_message_locked_until(m) - pl_http_date_parse(pl_response_header(resp, "Date"))) *
                        1000;
                    CHECK_EQ(pl_message_lock_duration_ms(m), dur);
                    CHECK(dur >= 59000 && dur <= 62000); /* the service's Date lags by 0-2 s */
                    CHECK_EQ(pl_message_lock_expiry_mono_ms(m), 1000 + dur);
                    pl_message_free(last_locked);
                    last_locked = m;
                    m = NULL;
                } else {
                    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_NONE);
                    CHECK(pl_message_lock_token(m) == NULL);
                }
            }
            pl_message_free(m);
            pl_response_free(resp);
        } else if (!strcmp(op, "unlock") || !strcmp(op, "complete") || !strcmp(op, "renew-lock")) {
            REQUIRE(last_locked != NULL);
            int sop = !strcmp(op, "unlock")     ? PL_SETTLE_UNLOCK
                      : !strcmp(op, "complete") ? PL_SETTLE_COMPLETE
                                                : PL_SETTLE_RENEW;
            /* the recorded settle went to the Location of the preceding peek-lock */
            char url[512];
            snprintf(url, sizeof url, "%s%s", endpoint, cJSON_GetObjectItem(rq, "path")->valuestring);
            CHECK(pl_strcaseeq(url, last_locked->location));
            REQUIRE(pl_wire_settle(&req, endpoint, last_locked, sop, "auth") == PL_OK);
            CHECK_STR(req->url, last_locked->location);
            CHECK_STR(req->method, cJSON_GetObjectItem(rq, "method")->valuestring);
            pl_response *resp = fixture_response(rs);
            if (sop != PL_SETTLE_RENEW) pl_message_cas_state(last_locked, PL_LOCK_HELD, PL_LOCK_SETTLING);
            CHECK_EQ(pl_wire_result(NULL, endpoint, req, last_locked, resp, 5000), PL_OK);
            if (sop == PL_SETTLE_RENEW) {
                CHECK_EQ(pl_message_lock_state(last_locked), PL_LOCK_HELD);
                CHECK_EQ(pl_message_lock_expiry_mono_ms(last_locked), 5000 + last_locked->lock_duration_ms);
            } else {
                CHECK_EQ(pl_message_lock_state(last_locked), PL_LOCK_SETTLED);
            }
            settles++;
            pl_response_free(resp);
        } else if (!strcmp(op, "send") || !strcmp(op, "send-batch")) {
            pl_outgoing *o = NULL;
            REQUIRE(pl_outgoing_new(&o, "x", 1) == PL_OK);
            REQUIRE(pl_wire_send(&req, endpoint, entity, o, NULL) == PL_OK);
            pl_outgoing_free(o);
            pl_response *resp = fixture_response(rs);
            CHECK_EQ(pl_wire_result(NULL, endpoint, req, NULL, resp, 0), PL_OK);
            pl_response_free(resp);
            sends++;
        }
        pl_request_free(req);
    }
    pl_message_free(last_locked);
    cJSON_Delete(root);
    printf("fixtures: %d receives, %d empty, %d settles, %d sends, %d custom properties\n", receives, empties,
           settles, sends, props);
    CHECK(receives >= 40);
    CHECK(settles >= 13);
    CHECK(sends >= 29);
    CHECK(empties >= 4);
    CHECK(props >= 20);
}

static pl_response *resp_with(int status, const char *body)
{
    pl_response *r = NULL;
    REQUIRE(pl_response_new(&r, status) == PL_OK);
    if (body) REQUIRE(pl_response_set_body(r, body, strlen(body)) == PL_OK);
    return r;
}

static pl_message *locked_message(const char *endpoint)
{
    pl_request *req = NULL;
    REQUIRE(pl_wire_receive(&req, endpoint, "q", 0, 1, NULL) == PL_OK);
    pl_response *r = resp_with(201, "payload");
    pl_response_add_header(r, "Date", "Sat, 25 Oct 2014 00:56:48 GMT");
    pl_response_add_header(
        r, "Location", "https://ns.servicebus.windows.net/q/messages/3/0e80aa4d-a5d1-4a99-b09e-d118f8c5972c");
    pl_response_add_header(r, "BrokerProperties",
                           "{\"LockToken\":\"0e80aa4d-a5d1-4a99-b09e-d118f8c5972c\",\"SequenceNumber\":3,"
                           "\"LockedUntilUtc\":\"Sat, 25 Oct 2014 00:57:18 GMT\",\"DeliveryCount\":1}");
    pl_message *m = NULL;
    REQUIRE(pl_wire_result(&m, endpoint, req, NULL, r, 100) == PL_OK);
    CHECK_EQ(pl_message_lock_duration_ms(m), 30000);
    pl_response_free(r);
    pl_request_free(req);
    return m;
}

static void requests(void)
{
    const char *ep = "https://ns.servicebus.windows.net";
    pl_request *req = NULL;
    pl_outgoing *o = NULL;
    REQUIRE(pl_outgoing_new(&o, "a\0b", 3) == PL_OK);
    pl_outgoing_set_broker(o, "MessageId", "id1");
    pl_outgoing_add_int(o, "n", 3);
    REQUIRE(pl_wire_send(&req, ep, "my queue/$DeadLetterQueue", o, "SharedAccessSignature x") == PL_OK);
    CHECK_STR(req->url, "https://ns.servicebus.windows.net/my%20queue/$DeadLetterQueue/messages");
    CHECK_STR(req->method, "POST");
    CHECK_EQ(req->body_len, 3);
    CHECK(memcmp(req->body, "a\0b", 3) == 0);
    int seen = 0;
    for (size_t i = 0; i < pl_request_header_count(req); i++) {
        const char *n = pl_request_header_name(req, i), *v = pl_request_header_value(req, i);
        if (!strcmp(n, "BrokerProperties")) {
            CHECK_STR(v, "{\"MessageId\":\"id1\"}");
            seen |= 1;
        }
        if (!strcmp(n, "Content-Type")) {
            CHECK_STR(v, "application/octet-stream");
            seen |= 2;
        }
        if (!strcmp(n, "n")) {
            CHECK_STR(v, "3");
            seen |= 4;
        }
        if (!strcmp(n, "Authorization")) {
            CHECK_STR(v, "SharedAccessSignature x");
            seen |= 8;
        }
    }
    CHECK_EQ(seen, 15);
    CHECK_STR(req->scope, "https://ns.servicebus.windows.net/my%20queue/$deadletterqueue");
    pl_request_free(req);
    pl_outgoing_free(o);

    REQUIRE(pl_wire_receive(&req, ep, "Topic/subscriptions/Sub", 30, 1, NULL) == PL_OK);
    CHECK_STR(req->url, "https://ns.servicebus.windows.net/Topic/subscriptions/Sub/messages/head?timeout=30");
    CHECK_STR(req->method, "POST");
    pl_request_free(req);
    REQUIRE(pl_wire_receive(&req, ep, "q", 0, 0, NULL) == PL_OK);
    CHECK_STR(req->url, "https://ns.servicebus.windows.net/q/messages/head?timeout=0");
    CHECK_STR(req->method, "DELETE");
    pl_request_free(req);

    /* Entity validation: no path tricks. */
    const char *bad[] = {"", "../x", "a/../b", "a//b", "/a", "a/", ".", "q/messages/head", "a\nb", "a\x7f"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        req = (pl_request *)1;
        CHECK_EQ(pl_wire_receive(&req, ep, bad[i], 0, 1, NULL), PL_EINVAL);
        CHECK(req == NULL);
        CHECK(strstr(pl_error_last()->message, "entity") != NULL);
    }
    CHECK_EQ(pl_wire_receive(&req, ep, NULL, 0, 1, NULL), PL_EINVAL);
    CHECK_EQ(pl_wire_receive(&req, ep, "q", 301, 1, NULL), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "timeout: ") != NULL);
    CHECK_EQ(pl_wire_receive(&req, ep, "q", -1, 1, NULL), PL_EINVAL);
    /* The same checks on their own, for bindings: the same verdicts and messages. */
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_EQ(pl_check_entity(bad[i]), PL_EINVAL);
        CHECK(strncmp(pl_error_last()->message, "entity: ", 8) == 0);
    }
    CHECK_EQ(pl_check_entity(NULL), PL_EINVAL);
    CHECK_EQ(pl_check_entity("Q/Messages"), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "'messages'") != NULL);
    /* The segment rule is one: the plain fast path refuses what encoding refuses, in
     * the same words; the length limit is the public PL_MAX_ENTITY_LEN. */
    const char *bad_plain[] = {"q/MESSAGES", "a/./b", "a/..", "a//b"};
    for (size_t i = 0; i < sizeof bad_plain / sizeof bad_plain[0]; i++) {
        char *enc = NULL;
        CHECK_EQ(pl_entity_encode(&enc, bad_plain[i]), PL_EINVAL);
        char why[256];
        snprintf(why, sizeof why, "%s", pl_error_last()->message);
        CHECK_EQ(pl_check_entity(bad_plain[i]), PL_EINVAL);
        CHECK_STR(pl_error_last()->message, why);
    }
    CHECK_EQ(PL_MAX_ENTITY_LEN, 1024);
    /* An entity's destination and subscription, the case rule once. */
    static const struct {
        const char *entity, *name, *sub;
    } dests[] = {
        {"q", "q", NULL},
        {"orders/subscriptions/s", "orders", "s"},
        {"orders/SUBSCRIPTIONS/s", "orders", "s"},
        {"orders/Subscriptions/s/$DeadLetterQueue", "orders", "s"},
        {"q/$DeadLetterQueue", "q/$DeadLetterQueue", NULL},
        {"orders/subscriptions", "orders/subscriptions", NULL},
        {"orders/subscriptions/", "orders/subscriptions/", NULL},
        {"/subscriptions/s", "/subscriptions/s", NULL},
        {"orders/subscription/s", "orders/subscription/s", NULL},
        {"a/b/subscriptions/s", "a/b/subscriptions/s", NULL},
    };
    for (size_t i = 0; i < sizeof dests / sizeof dests[0]; i++) {
        char *name = NULL, *sub = (char *)1;
        CHECK_EQ(pl_entity_destination(&name, &sub, dests[i].entity), PL_OK);
        CHECK_STR(name, dests[i].name);
        if (dests[i].sub)
            CHECK_STR(sub, dests[i].sub);
        else
            CHECK(sub == NULL);
        pl_free(name);
        pl_free(sub);
    }
    {
        char *name = (char *)1, *sub = (char *)1;
        CHECK_EQ(pl_entity_destination(&name, &sub, NULL), PL_EINVAL);
        CHECK(name == NULL && sub == NULL);
    }
    /* The operations' names, listed by counting up until NULL: each is the name the
     * core's messages open with. */
    CHECK_STR(pl_op_name(0), "request");
    CHECK_STR(pl_op_name(PL_OP_BATCH), pl_wire_op_name(PL_OP_BATCH));
    CHECK_STR(pl_op_name(PL_OP_BATCH), "send batch");
    int nops = 0;
    while (pl_op_name(nops)) {
        CHECK_STR(pl_wire_op_name(nops), pl_op_name(nops));
        nops++;
    }
    CHECK_EQ(nops, PL_OP_COMPLETE + 1);
    CHECK(pl_op_name(-1) == NULL);
    CHECK_STR(pl_wire_op_name(99), "request");
    char longname[PL_MAX_ENTITY_LEN + 2];
    memset(longname, 'a', PL_MAX_ENTITY_LEN + 1);
    longname[PL_MAX_ENTITY_LEN + 1] = '\0';
    CHECK_EQ(pl_check_entity(longname), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "entity: is longer than 1024 characters");
    longname[PL_MAX_ENTITY_LEN] = '\0';
    CHECK_EQ(pl_check_entity(longname), PL_OK);
    CHECK_EQ(pl_check_entity("t/subscriptions/s/$DeadLetterQueue"), PL_OK);
    CHECK_EQ(pl_check_entity("caf\xc3\xa9 queue"), PL_OK); /* not plain: encoded, accepted */
    CHECK_EQ(pl_error_last()->code, PL_OK);
    CHECK_EQ(pl_check_timeout(0), PL_OK);
    CHECK_EQ(pl_check_timeout(300), PL_OK);
    CHECK_EQ(pl_check_timeout(301), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "timeout: must be 0..300 seconds");
    CHECK_EQ(pl_check_timeout(-1), PL_EINVAL);
    /* Seconds as the bindings take them: whole seconds, a fraction rounded up. */
    CHECK_EQ(pl_timeout_seconds(0), 0);
    CHECK_EQ(pl_error_last()->code, PL_OK);
    CHECK_EQ(pl_timeout_seconds(0.5), 1); /* not a 0 s poll */
    CHECK_EQ(pl_timeout_seconds(1e-9), 1);
    CHECK_EQ(pl_timeout_seconds(5), 5);
    CHECK_EQ(pl_timeout_seconds(5.01), 6);
    CHECK_EQ(pl_timeout_seconds(299.5), 300);
    CHECK_EQ(pl_timeout_seconds(300), 300);
    const double bad_timeouts[] = {300.5, 301, -0.5, -1, NAN, INFINITY, -INFINITY, 1e300};
    for (size_t i = 0; i < sizeof bad_timeouts / sizeof bad_timeouts[0]; i++) {
        CHECK_EQ(pl_timeout_seconds(bad_timeouts[i]), PL_EINVAL);
        CHECK_STR(pl_error_last()->message, "timeout: must be 0..300 seconds");
    }
    /* A processor's options: each rule's edges, NaN, and the message by name. */
    static const struct {
        const char *name;
        double ok[3], bad[3];
    } opts[] = {
        {"concurrency", {1, 2, 256}, {0, 257, 1.5}},
        {"batch", {1, 10, 100000}, {0, 100001, 2.5}},
        {"max_messages", {1, 3, 1e15}, {0, -1, 0.5}},
        {"max_wait", {0, 0.5, 3600}, {-0.001, 3600.5, INFINITY}},
        {"idle_timeout", {0.001, 1, 1e9}, {0, -1, INFINITY}},
        {"retry_delay", {0, 0.25, 86400}, {-1, 86400.5, INFINITY}},
    };
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        for (int j = 0; j < 3; j++) {
            CHECK_EQ(pl_check_process_option(opts[i].name, opts[i].ok[j]), PL_OK);
            CHECK_EQ(pl_check_process_option(opts[i].name, opts[i].bad[j]), PL_EINVAL);
            CHECK(strncmp(pl_error_last()->message, opts[i].name, strlen(opts[i].name)) == 0);
        }
        CHECK_EQ(pl_check_process_option(opts[i].name, NAN), PL_EINVAL);
    }
    CHECK_EQ(pl_check_process_option("concurrency", 0), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "concurrency: must be a whole number 1..256");
    CHECK_EQ(pl_check_process_option("idle_timeout", 0), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "idle_timeout: must be a positive, finite number of seconds");
    CHECK_EQ(pl_check_process_option("poll_interval", 1), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "poll_interval: not a processor option");
    CHECK_EQ(pl_check_process_option(NULL, 1), PL_EINVAL);
    CHECK_EQ(pl_settle_action("complete"), PL_SETTLE_COMPLETE);
    CHECK_EQ(pl_settle_action("abandon"), PL_SETTLE_UNLOCK);
    CHECK_EQ(pl_settle_action("Complete"), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "action: must be 'complete' or 'abandon'");
    CHECK_EQ(pl_settle_action(""), PL_EINVAL);
    CHECK_EQ(pl_settle_action(NULL), PL_EINVAL);
    char *enc = NULL;
    CHECK_EQ(pl_entity_encode(&enc, "a?b#c%d"), PL_OK);
    CHECK_STR(enc, "a%3Fb%23c%25d");
    free(enc);

    /* Settles use Location verbatim; receive-and-delete messages have no lock. */
    pl_message *m = locked_message(ep);
    REQUIRE(pl_wire_settle(&req, ep, m, PL_SETTLE_COMPLETE, NULL) == PL_OK);
    CHECK_STR(req->url,
              "https://ns.servicebus.windows.net/q/messages/3/0e80aa4d-a5d1-4a99-b09e-d118f8c5972c");
    CHECK_STR(req->method, "DELETE");
    pl_request_free(req);
    REQUIRE(pl_wire_settle(&req, ep, m, PL_SETTLE_UNLOCK, NULL) == PL_OK);
    CHECK_STR(req->method, "PUT");
    pl_request_free(req);
    REQUIRE(pl_wire_settle(&req, ep, m, PL_SETTLE_RENEW, NULL) == PL_OK);
    CHECK_STR(req->method, "POST");
    pl_request_free(req);
    CHECK_EQ(pl_wire_settle(&req, ep, m, 9, NULL), PL_EINVAL);
    CHECK_EQ(pl_wire_settle(&req, "https://other.example", m, PL_SETTLE_RENEW, NULL), PL_EPROTOCOL);

    /* A 404 on renew: lost, with the reason; the detail never shows the lock token. */
    pl_request *rr = NULL;
    REQUIRE(pl_wire_settle(&rr, ep, m, PL_SETTLE_RENEW, NULL) == PL_OK);
    pl_response *r = resp_with(
        404, "<Error><Code>404</Code><Detail>The lock token "
             "0E80AA4D-a5d1-4a99-b09e-d118f8c5972c is not valid sig=abc. TrackingId:x</Detail></Error>");
    CHECK_EQ(pl_wire_result(NULL, ep, rr, m, r, 200), PL_ELOCKLOST);
    CHECK(strstr(pl_error_last()->message, "0e80aa4d") == NULL);
    CHECK(strstr(pl_error_last()->message, "0E80AA4D") == NULL);
    CHECK(strstr(pl_error_last()->message, "abc") == NULL);
    CHECK(strstr(pl_error_last()->message, "renew-lock") != NULL);
    CHECK(strstr(pl_error_last()->message, "detail withheld") != NULL); /* it echoed the token */
    CHECK_EQ(pl_error_last()->http_status, 404);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_LOST);
    CHECK_EQ(pl_message_lost_reason(m), PL_ELOCKLOST);
    pl_response_free(r);
    pl_request_free(rr);
    pl_request_free(req);
    pl_message_free(m);

    /* A renew's 404 while a settle is in progress is not a loss. */
    m = locked_message(ep);
    REQUIRE(pl_wire_settle(&rr, ep, m, PL_SETTLE_RENEW, NULL) == PL_OK);
    pl_message_cas_state(m, PL_LOCK_HELD, PL_LOCK_SETTLING);
    r = resp_with(404, "");
    CHECK_EQ(pl_wire_result(NULL, ep, rr, m, r, 200), PL_ESTATE);
    CHECK_EQ(pl_message_lock_state(m), PL_LOCK_SETTLING);
    CHECK_EQ(pl_message_lost_reason(m), 0);
    pl_response_free(r);
    pl_request_free(rr);
    pl_message_free(m);

    m = pl_message_alloc();
    CHECK_EQ(pl_wire_settle(&req, ep, m, PL_SETTLE_COMPLETE, NULL), PL_ESTATE);
    pl_message_free(m);
}

static void status_mapping(void)
{
    const char *ep = "https://ns.servicebus.windows.net";
    struct {
        int status;
        const char *body;
        int send_code;
        int settle_code;
        int retryable;
    } t[] = {
        {400, "<Error><Code>400</Code><Detail>bad</Detail></Error>", PL_EBADREQUEST, PL_EBADREQUEST, 0},
        {401, "<Error><Code>401</Code><Detail>40103: Invalid authorization token signature</Detail></Error>",
         PL_EAUTH, PL_EAUTH, 0},
        {403, "<Error><Code>403</Code><Detail>The maximum message size has been exceeded.</Detail></Error>",
         PL_ETOOLARGE, PL_ETOOLARGE, 0},
        {403, "<Error><Code>403</Code><Detail>Quota exceeded.</Detail></Error>", PL_EAUTH, PL_EAUTH, 0},
        {404, "", PL_ENOTFOUND, PL_ELOCKLOST, 0},
        {409, "<Error><Code>409</Code><Detail>Conflict.</Detail></Error>", PL_ECONFLICT, PL_ECONFLICT, 0},
        {410, "<Error><Code>410</Code><Detail>gone</Detail></Error>", PL_ENOTFOUND, PL_ENOTFOUND, 0},
        {429, "", PL_ETHROTTLED, PL_ETHROTTLED, 1},
        {500, "", PL_ESERVER, PL_ESERVER, 1},
        {503, "<Error><Code>503</Code><Detail>ServerBusy</Detail></Error>", PL_ETHROTTLED, PL_ETHROTTLED, 1},
        {418, "", PL_EHTTP, PL_EHTTP, 0},
        {302, "", PL_EHTTP, PL_EHTTP, 0},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        pl_request *req = NULL;
        pl_outgoing *o = NULL;
        pl_outgoing_new(&o, "", 0);
        REQUIRE(pl_wire_send(&req, ep, "q", o, NULL) == PL_OK);
        pl_response *r = resp_with(t[i].status, t[i].body);
        CHECK_EQ(pl_wire_result(NULL, ep, req, NULL, r, 0), t[i].send_code);
        CHECK_EQ(pl_error_last()->http_status, t[i].status);
        CHECK_EQ(pl_error_last()->retryable, t[i].retryable);
        /* the same table for a request the library did not build */
        CHECK_EQ(pl_http_status_error(t[i].status, t[i].body, "GET x"), t[i].send_code);
        CHECK_EQ(pl_error_last()->retryable, t[i].retryable);
        CHECK(strncmp(pl_error_last()->message, "GET x: HTTP ", 12) == 0);
        pl_request_free(req);
        pl_message *m = locked_message(ep);
        REQUIRE(pl_wire_settle(&req, ep, m, PL_SETTLE_COMPLETE, NULL) == PL_OK);
        CHECK_EQ(pl_wire_result(NULL, ep, req, m, r, 0), t[i].settle_code);
        int lost = t[i].settle_code == PL_ELOCKLOST || t[i].settle_code == PL_ENOTFOUND;
        CHECK_EQ(pl_message_lock_state(m), lost ? PL_LOCK_LOST : PL_LOCK_HELD);
        pl_message_free(m);
        pl_request_free(req);
        pl_response_free(r);
        pl_outgoing_free(o);
    }
}

/* Malformed receive responses: protocol errors, never crashes. */
static void malformed(void)
{
    const char *ep = "https://ns.servicebus.windows.net";
    const char *bp = "{\"LockToken\":\"0e80aa4d-a5d1-4a99-b09e-d118f8c5972c\",\"SequenceNumber\":3,"
                     "\"LockedUntilUtc\":\"Sat, 25 Oct 2014 00:57:18 GMT\"}";
    const char *loc = "https://ns.servicebus.windows.net/q/messages/3/0e80aa4d-a5d1-4a99-b09e-d118f8c5972c";
    struct {
        const char *bp;
        const char *loc;
        const char *date;
        const char *want;
    } t[] = {
        {NULL, loc, "Sat, 25 Oct 2014 00:56:48 GMT", "no BrokerProperties"},
        {"{\"LockToken\":", loc, "Sat, 25 Oct 2014 00:56:48 GMT", "not valid JSON"},
        {bp, NULL, "Sat, 25 Oct 2014 00:56:48 GMT", "no Location"},
        {bp, "https://evil.example/q/messages/3/x", "Sat, 25 Oct 2014 00:56:48 GMT", "endpoint"},
        {bp, "https://ns.servicebus.windows.net.evil.example/q", "Sat, 25 Oct 2014 00:56:48 GMT", "endpoint"},
        {bp, "https://ns.servicebus.windows.net/q/messages/3/x y", "Sat, 25 Oct 2014 00:56:48 GMT",
         "valid URL"},
        {"{\"SequenceNumber\":3}", loc, "Sat, 25 Oct 2014 00:56:48 GMT", "no LockToken"},
        {bp, loc, "Sat, 25 Oct 2014 01:56:48 GMT", "not a lock duration"},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        pl_request *req = NULL;
        REQUIRE(pl_wire_receive(&req, ep, "q", 0, 1, NULL) == PL_OK);
        pl_response *r = resp_with(201, "x");
        if (t[i].bp) pl_response_add_header(r, "BrokerProperties", t[i].bp);
        if (t[i].loc) pl_response_add_header(r, "Location", t[i].loc);
        pl_response_add_header(r, "Date", t[i].date);
        pl_message *m = (pl_message *)1;
        CHECK_EQ(pl_wire_result(&m, ep, req, NULL, r, 0), PL_EPROTOCOL);
        CHECK(m == NULL);
        if (!strstr(pl_error_last()->message, t[i].want)) {
            fprintf(stderr, "case %zu: message \"%s\" lacks \"%s\"\n", i, pl_error_last()->message,
                    t[i].want);
            pl_test_failures++;
        }
        CHECK(strstr(pl_error_last()->message, "0e80aa4d") == NULL);
        pl_response_free(r);
        pl_request_free(req);
    }
    /* Absurd header sizes and counts. */
    pl_response *r = resp_with(201, NULL);
    char *big = malloc(PL_MAX_HEADER_BYTES + 2);
    memset(big, 'a', PL_MAX_HEADER_BYTES + 1);
    big[PL_MAX_HEADER_BYTES + 1] = 0;
    CHECK_EQ(pl_response_add_header(r, "BrokerProperties", big), PL_EPROTOCOL);
    free(big);
    pl_request *req = NULL;
    REQUIRE(pl_wire_receive(&req, ep, "q", 0, 1, NULL) == PL_OK);
    pl_message *m = NULL;
    CHECK_EQ(pl_wire_result(&m, ep, req, NULL, r, 0), PL_EPROTOCOL);
    pl_response_free(r);
    r = resp_with(200, NULL);
    int rc = PL_OK;
    for (int i = 0; i <= PL_MAX_HEADERS && rc == PL_OK; i++) rc = pl_response_add_header(r, "x", "1");
    CHECK_EQ(rc, PL_EPROTOCOL);
    pl_response_free(r);
    pl_request_free(req);
    CHECK_EQ(pl_response_new(&r, 42), PL_EINVAL);
    CHECK_EQ(pl_response_add_header(NULL, "a", "b"), PL_EINVAL);
    /* A bare 200 to a receive-and-delete is not a message (an answer cut short after
     * its status line looks like that): malformed, never an empty message. */
    REQUIRE(pl_wire_receive(&req, ep, "q", 0, 0, NULL) == PL_OK);
    r = resp_with(200, "");
    CHECK_EQ(pl_wire_result(&m, ep, req, NULL, r, 0), PL_EPROTOCOL);
    CHECK(m == NULL);
    pl_response_free(r);
    /* With its BrokerProperties (and no Location: no lock) it is a message, even empty. */
    r = resp_with(200, "");
    pl_response_add_header(r, "BrokerProperties", "{\"SequenceNumber\":7}");
    CHECK_EQ(pl_wire_result(&m, ep, req, NULL, r, 0), PL_OK);
    CHECK(m != NULL);
    size_t n = 99;
    CHECK(pl_message_body(m, &n) != NULL);
    CHECK_EQ(n, 0);
    pl_message_free(m);
    pl_response_free(r);
    pl_request_free(req);
}

/* An error answer that echoes the request's signature, however it is encoded, or names
 * a secret, is withheld whole: no literal pattern to dodge. */
static void redaction_by_value(const pl_request *req)
{
    const char *auth = NULL;
    for (size_t i = 0; i < pl_request_header_count(req); i++)
        if (!strcmp(pl_request_header_name(req, i), "Authorization")) auth = pl_request_header_value(req, i);
    REQUIRE(auth && strstr(auth, "sig="));
    const char *sig = strstr(auth, "sig=") + 4;
    char sigv[128], dec[128], twice[400], body[600];
    snprintf(sigv, sizeof sigv, "%.*s", (int)strcspn(sig, "&"), sig);
    /* the signature as the base64 text (decoded once), and encoded twice (%25XX) */
    size_t o = 0;
    for (const char *p = sigv; *p && o + 1 < sizeof dec; p++) {
        if (p[0] == '%' && p[1] && p[2]) {
            char hex[3] = {p[1], p[2], 0};
            dec[o++] = (char)strtol(hex, NULL, 16);
            p += 2;
        } else {
            dec[o++] = *p;
        }
    }
    dec[o] = '\0';
    o = 0;
    for (const char *p = sigv; *p && o + 4 < sizeof twice; p++) {
        if (*p == '%') {
            memcpy(twice + o, "%25", 3);
            o += 3;
        } else
            twice[o++] = *p;
    }
    twice[o] = '\0';
    const char *forms[] = {sigv, dec, twice};
    for (size_t i = 0; i < 3; i++) {
        snprintf(body, sizeof body, "<Error><Code>401</Code><Detail>token rejected: %s end</Detail></Error>",
                 forms[i]);
        pl_response *r = resp_with(401, body);
        CHECK_EQ(pl_wire_status_error(req, r), PL_EAUTH);
        CHECK(strstr(pl_error_last()->message, "detail withheld") != NULL);
        CHECK(strstr(pl_error_last()->message, sigv) == NULL);
        CHECK(strstr(pl_error_last()->message, dec) == NULL);
        pl_response_free(r);
    }
    /* names that introduce a secret, percent-encoded to dodge a literal "sig=" */
    const char *named[] = {"x sig%3Dabcdef",
                           "x SIG%253dabcdef",
                           "x SharedAccessKey%3Dzzz",
                           "x Shared%41ccessSignature sr",
                           "x SharedSecretValue%3Dzzz",
                           "x sig%20%3D%20abcdef"};
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        snprintf(body, sizeof body, "<Error><Detail>%s</Detail></Error>", named[i]);
        pl_response *r = resp_with(400, body);
        pl_wire_status_error(req, r);
        CHECK(strstr(pl_error_last()->message, "detail withheld") != NULL);
        CHECK(strstr(pl_error_last()->message, "abcdef") == NULL &&
              strstr(pl_error_last()->message, "zzz") == NULL);
        pl_response_free(r);
    }
    /* an ordinary detail is kept */
    pl_response *r = resp_with(400, "<Error><Detail>The request is invalid.</Detail></Error>");
    pl_wire_status_error(req, r);
    CHECK(strstr(pl_error_last()->message, "The request is invalid.") != NULL);
    pl_response_free(r);
    /* other secret forms are redacted by pl_redact's list, the rest of the detail kept */
    r = resp_with(400, "<Error><Detail>bad Bearer abcdefghijkl, lock "
                       "11111111-2222-3333-4444-555555555555 end</Detail></Error>");
    pl_wire_status_error(req, r);
    CHECK(strstr(pl_error_last()->message, "bad Bearer <redacted>, lock <guid> end") != NULL);
    pl_response_free(r);
    /* a TrackingId stays for support to trace (the service's own words, recorded) */
    r = resp_with(409, "<Error><Code>409</Code><Detail>SubCode=40900. Conflict. "
                       "TrackingId:fc76434b-a479-46d5-9103-25654dbf3899_G0,TimeStamp:6/30/2015 8:57:34 "
                       "PM</Detail></Error>");
    pl_wire_status_error(req, r);
    CHECK(strstr(pl_error_last()->message, "TrackingId:fc76434b-a479-46d5-9103-25654dbf3899_G0,") != NULL);
    pl_response_free(r);
}

/* The redaction rules on a request signed as a client signs it (pl_sas_token). */
static void redaction(void)
{
    char *auth = NULL;
    REQUIRE(pl_sas_token(&auth, "https://ns.servicebus.windows.net/orders", "Root", "k",
                         (int64_t)time(NULL) + 3600) == PL_OK);
    pl_request *req = NULL;
    REQUIRE(pl_wire_receive(&req, "https://ns.servicebus.windows.net", "Orders", 10, 1, auth) == PL_OK);
    redaction_by_value(req);
    pl_request_free(req);
    pl_free(auth);
}

int main(void)
{
    replay_fixtures();
    requests();
    status_mapping();
    malformed();
    redaction();
    return pl_test_done("test_wire");
}
