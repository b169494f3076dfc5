/* Outgoing messages (BrokerProperties JSON, custom property forms, batches),
 * received property typing, and RFC 1123 dates. Pure core only. */
#include <math.h>

#include <cjson/cJSON.h>

#include "error_int.h"
#include "message_int.h"
#include "support.h"

int main(void)
{
    /* Lock-state names: the one table the bindings build theirs from. */
    CHECK_STR(pl_lock_state_name(PL_LOCK_NONE), "none");
    CHECK_STR(pl_lock_state_name(PL_LOCK_HELD), "held");
    CHECK_STR(pl_lock_state_name(PL_LOCK_SETTLING), "settling");
    CHECK_STR(pl_lock_state_name(PL_LOCK_SETTLED), "settled");
    CHECK_STR(pl_lock_state_name(PL_LOCK_LOST), "lost");
    CHECK_STR(pl_lock_state_name(PL_LOCK_UNKNOWN), "unknown");
    CHECK(pl_lock_state_name(PL_LOCK_UNKNOWN + 1) == NULL);
    CHECK(pl_lock_state_name(-1) == NULL);

    /* Dates. */
    CHECK_EQ(pl_http_date_parse("Sat, 25 Oct 2014 00:56:48 GMT"), 1414198608);
    CHECK_EQ(pl_http_date_parse("Thu, 01 Jan 1970 00:00:00 GMT"), 0);
    CHECK_EQ(pl_http_date_parse("Wed, 07 Mar 2012 22:27:00 GMT+0000"), -1);
    CHECK_EQ(pl_http_date_parse("Wed, 07 Mar 2012 14:27:00 PST"), -1);
    CHECK_EQ(pl_http_date_parse("garbage"), -1);
    CHECK_EQ(pl_http_date_parse(""), -1);
    CHECK_EQ(pl_http_date_parse(NULL), -1);
    char d[40];
    pl_http_date_format(d, sizeof d, 1414198608);
    CHECK_STR(d, "Sat, 25 Oct 2014 00:56:48 GMT");
    pl_http_date_format(d, sizeof d, 951782400); /* leap day 2000 */
    CHECK_STR(d, "Tue, 29 Feb 2000 00:00:00 GMT");
    for (int64_t t = 0; t < 4102444800LL; t += 86399 * 37) {
        pl_http_date_format(d, sizeof d, t);
        CHECK_EQ(pl_http_date_parse(d), t);
    }

    /* Outgoing: body copied (binary), fields and custom properties. */
    const unsigned char bin[] = {'a', 0, 'b', 0xff};
    pl_outgoing *m = NULL;
    CHECK_EQ(pl_outgoing_new(&m, bin, sizeof bin), PL_OK);
    CHECK_EQ(m->body_len, 4);
    CHECK(memcmp(m->body, bin, 4) == 0);
    char *bp = (char *)1;
    CHECK_EQ(pl_outgoing_broker_json(&bp, m), PL_OK);
    CHECK(bp == NULL); /* nothing set: no header */
    CHECK_EQ(pl_outgoing_set_broker(m, "MessageId", "m-1"), PL_OK);
    CHECK_EQ(pl_outgoing_set_broker(m, "Label", "lbl \"q\""), PL_OK);
    CHECK_EQ(pl_outgoing_set_broker(m, "SessionId", "s"), PL_OK);
    CHECK_EQ(pl_outgoing_set_broker(m, "Bogus", "x"), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "field") != NULL);
    CHECK_EQ(pl_outgoing_set_broker(m, "LockToken", "x"), PL_EINVAL);
    char longid[200];
    memset(longid, 'x', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    CHECK_EQ(pl_outgoing_set_broker(m, "MessageId", longid), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "message_id: must be at most 128 characters");
    CHECK_EQ(pl_outgoing_set_broker(m, "PartitionKey", longid), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "partition_key: must be at most 128 characters");
    CHECK_EQ(pl_outgoing_set_broker(m, "Label", longid), PL_OK); /* no service limit on a label */
    /* 128 characters of two bytes each (U+00E9): within the limit, counted in characters */
    char wide[2 * 128 + 1];
    for (int i = 0; i < 128; i++) memcpy(wide + 2 * i, "\xc3\xa9", 2);
    wide[2 * 128] = 0;
    CHECK_EQ(pl_outgoing_set_broker(m, "SessionId", wide), PL_OK);
    /* an empty value is refused for every field (the service refuses an empty
     * MessageId): a field is left out by not setting it, or by NULL */
    const char *const args[] = {"message_id",       "label",    "correlation_id",      "session_id",
                                "partition_key",    "reply_to", "reply_to_session_id", "to",
                                "via_partition_key"};
    /* the table the bindings build theirs from: the same fields, names and words */
    CHECK_EQ(pl_broker_field_count(), PL_OUT_NFIELDS);
    CHECK(pl_broker_field_name(-1) == NULL && pl_broker_field_name(PL_OUT_NFIELDS) == NULL);
    CHECK(pl_broker_field_arg(-1) == NULL && pl_broker_field_arg(PL_OUT_NFIELDS) == NULL);
    for (int i = 0; i < PL_OUT_NFIELDS; i++) {
        CHECK_STR(pl_broker_field_name(i), pl_outgoing_field_names[i]);
        CHECK_STR(pl_broker_field_arg(i), args[i]);
        CHECK_EQ(pl_outgoing_set_broker(m, pl_outgoing_field_names[i], ""), PL_EINVAL);
        char want[96];
        snprintf(want, sizeof want, "%s: must not be empty (leave it unset instead)", args[i]);
        CHECK_STR(pl_error_last()->message, want);
    }
    CHECK_EQ(pl_outgoing_set_broker(m, "Label", "lbl \"q\""), PL_OK);
    CHECK_EQ(pl_outgoing_set_broker(m, "SessionId", "s"), PL_OK);
    CHECK_EQ(pl_outgoing_set_time_to_live(m, 40), PL_OK);
    CHECK_EQ(pl_outgoing_set_time_to_live(m, -1), PL_EINVAL);
    CHECK_EQ(pl_outgoing_set_time_to_live(m, NAN), PL_EINVAL);
    CHECK_EQ(pl_outgoing_set_time_to_live(m, 0), PL_EINVAL);
    CHECK(strncmp(pl_error_last()->message, "time_to_live: ", 14) == 0);
    /* The scheduled time: the second it falls in (floored), of the years 1970..9999. */
    const double bad_times[] = {-0.5, -1, 253402300800.0, NAN, INFINITY, -INFINITY, 1e300};
    for (size_t k = 0; k < sizeof bad_times / sizeof bad_times[0]; k++) {
        CHECK_EQ(pl_outgoing_set_scheduled_enqueue_time(m, bad_times[k]), PL_EINVAL);
        CHECK_STR(pl_error_last()->message, "scheduled_enqueue_time: must be between 1970 and 9999");
    }
    CHECK_EQ(pl_outgoing_set_scheduled_enqueue_time(m, 0.5), PL_OK);
    CHECK_EQ(m->scheduled, 0);
    CHECK_EQ(pl_outgoing_set_scheduled_enqueue_time(m, 253402300799.9), PL_OK);
    CHECK_EQ(m->scheduled, 253402300799LL);
    CHECK_EQ(pl_outgoing_set_scheduled_enqueue_time(m, 1414198608.9), PL_OK);
    CHECK_EQ(pl_outgoing_set_force_persistence(m, 1), PL_OK);
    CHECK_EQ(pl_outgoing_broker_json(&bp, m), PL_OK);
    cJSON *j = cJSON_Parse(bp);
    REQUIRE(j != NULL);
    CHECK_STR(cJSON_GetObjectItem(j, "MessageId")->valuestring, "m-1");
    CHECK_STR(cJSON_GetObjectItem(j, "Label")->valuestring, "lbl \"q\"");
    CHECK_STR(cJSON_GetObjectItem(j, "SessionId")->valuestring, "s");
    CHECK_EQ(cJSON_GetObjectItem(j, "TimeToLive")->valuedouble, 40);
    CHECK_STR(cJSON_GetObjectItem(j, "ScheduledEnqueueTimeUtc")->valuestring,
              "Sat, 25 Oct 2014 00:56:48 GMT");
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(j, "ForcePersistence")));
    cJSON_Delete(j);
    free(bp);
    CHECK_EQ(pl_outgoing_set_broker(m, "SessionId", NULL), PL_OK); /* unset */
    CHECK(m->fields[3] == NULL);

    CHECK_EQ(pl_outgoing_add_string(m, "Customer", "say \"hi\" \\o/"), PL_OK);
    CHECK_STR(m->props[0].raw, "\"say \\\"hi\\\" \\\\o/\"");
    CHECK_EQ(pl_outgoing_add_int(m, "propint", -42), PL_OK);
    CHECK_STR(m->props[1].raw, "-42");
    CHECK_EQ(pl_outgoing_add_double(m, "pi", 3.14), PL_OK);
    CHECK_STR(m->props[2].raw, "3.14");
    CHECK_EQ(pl_outgoing_add_double(m, "three", 3.0), PL_OK);
    CHECK_STR(m->props[3].raw, "3.0");
    CHECK_EQ(pl_outgoing_add_bool(m, "flag", 7), PL_OK);
    CHECK_STR(m->props[4].raw, "true");
    CHECK_EQ(pl_outgoing_add_datetime(m, "when", 1414198608), PL_OK);
    CHECK_STR(m->props[5].raw, "\"Sat, 25 Oct 2014 00:56:48 GMT\"");
    CHECK_EQ(pl_outgoing_add_int(m, "PROPINT", 7), PL_OK); /* replaces, case-insensitively */
    CHECK_EQ(m->nprops, 6);
    CHECK_STR(m->props[1].raw, "7");
    CHECK_EQ(pl_outgoing_add_string(m, "Bad Name", "x"), PL_EINVAL);
    CHECK(strncmp(pl_error_last()->message, "property name: must be an HTTP token", 36) == 0);
    CHECK_EQ(pl_outgoing_add_int(m, "", 1), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "property name: must be a non-empty string");
    CHECK_EQ(pl_outgoing_add_string(m, "Authorization", "x"), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "reserved") != NULL);
    CHECK_EQ(pl_outgoing_add_string(m, "BrokerProperties", "x"), PL_EINVAL);
    CHECK_EQ(pl_outgoing_add_string(m, "x", "a\r\nInjected: 1"), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "control") != NULL);
    CHECK_EQ(pl_outgoing_add_string(m, "x", NULL), PL_EINVAL);
    CHECK_EQ(pl_outgoing_add_double(m, "x", INFINITY), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "property 'x': must be a finite number");
    CHECK_EQ(pl_outgoing_add_datetime(m, "x", -1), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "property 'x': must be between 1970 and 9999");
    /* whole seconds only: the service would drop a fraction, so it is refused, not cut */
    CHECK_EQ(pl_outgoing_add_datetime(m, "x", 1414198608.25), PL_EINVAL);
    CHECK_STR(pl_error_last()->message,
              "property 'x': DateTime keeps whole seconds; round it or send it as a string");
    CHECK_EQ(pl_check_datetime("y", 0.5), PL_EINVAL);
    CHECK_STR(pl_error_last()->message,
              "property 'y': DateTime keeps whole seconds; round it or send it as a string");
    CHECK_EQ(pl_outgoing_add_datetime(m, "x", NAN), PL_EINVAL);
    CHECK_EQ(pl_outgoing_add_datetime(m, "x", INFINITY), PL_EINVAL);
    CHECK_EQ(pl_outgoing_add_datetime(m, "x", 253402300800.0), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "property 'x': must be between 1970 and 9999");
    CHECK_EQ(pl_check_datetime("x", 253402300799.0), PL_OK); /* 9999-12-31T23:59:59Z */
    CHECK_EQ(pl_check_datetime("x", 0), PL_OK);
    CHECK_EQ(m->nprops, 6); /* nothing refused was added */
    CHECK_EQ(pl_outgoing_add_int(NULL, "x", 1), PL_EINVAL);
    CHECK_EQ(pl_outgoing_set_content_type(m, "text/plain"), PL_OK);
    CHECK_EQ(pl_outgoing_set_content_type(m, "a\nb"), PL_EINVAL);
    CHECK_EQ(pl_outgoing_new(NULL, "x", 1), PL_EINVAL);
    pl_outgoing *bad = (pl_outgoing *)1;
    CHECK_EQ(pl_outgoing_new(&bad, NULL, 3), PL_EINVAL);
    CHECK(bad == NULL);

    /* Received property typing, as the service types header forms. */
    struct {
        const char *raw;
        int type;
        const char *text;
        long long i;
        double d;
    } cases[] = {
        {"\"hi there\"", PL_PROP_STRING, "hi there", -1, 0},
        {"\"This \\\"should\\\" work fine\"", PL_PROP_STRING, "This \"should\" work fine", -1, 0},
        {"42", PL_PROP_INT, "42", 42, 42},
        {"-7", PL_PROP_INT, "-7", -7, -7},
        {"3.14", PL_PROP_DOUBLE, "3.14", 3, 3.14},
        {"1e3", PL_PROP_DOUBLE, "1e3", 1000, 1000},
        {"true", PL_PROP_BOOL, "true", 1, 1},
        {"False", PL_PROP_BOOL, "False", 0, 0},
        {"\"Wed, 07 Mar 2012 22:27:00 GMT\"", PL_PROP_DATETIME, "Wed, 07 Mar 2012 22:27:00 GMT", 1331159220,
         0},
        {"\"Wed, 07 Mar 2012 14:27:00 PST\"", PL_PROP_STRING, "Wed, 07 Mar 2012 14:27:00 PST", -1, 0},
        {"bare words", PL_PROP_STRING, "bare words", -1, 0},
        {"\"", PL_PROP_STRING, "\"", -1, 0},
        {"", PL_PROP_STRING, "", -1, 0},
        {"99999999999999999999", PL_PROP_DOUBLE, "99999999999999999999", 0, 1e20},
        {"9223372036854775807", PL_PROP_INT, "9223372036854775807", INT64_MAX, 9223372036854775807.0},
        {"-9223372036854775808", PL_PROP_INT, "-9223372036854775808", INT64_MIN, -9223372036854775808.0},
        {"9223372036854775808", PL_PROP_DOUBLE, "9223372036854775808", 0, 9223372036854775808.0},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        pl_prop p = {0};
        CHECK_EQ(pl_prop_parse_value(&p, cases[k].raw), PL_OK);
        CHECK_EQ(p.type, cases[k].type);
        CHECK_STR(p.text, cases[k].text);
        if (cases[k].type != PL_PROP_DOUBLE || cases[k].i) CHECK_EQ(p.i, cases[k].i);
        CHECK(fabs(p.d - cases[k].d) < 1e-9 * (1 + fabs(cases[k].d)));
        free(p.text);
    }

    /* Batch: JSON array with typed UserProperties; bodies with NUL refused. */
    pl_batch *b = NULL;
    CHECK_EQ(pl_batch_new(&b), PL_OK);
    CHECK_EQ(pl_batch_add(b, m), PL_EINVAL); /* m's body has a NUL */
    CHECK_STR(pl_error_last()->message,
              "message: a batched message body is carried as JSON text and must not contain NUL bytes");
    /* a content type would be dropped by the service: refused, nothing added */
    pl_outgoing *ct = NULL;
    CHECK_EQ(pl_outgoing_new(&ct, "{}", 2), PL_OK);
    CHECK_EQ(pl_outgoing_set_content_type(ct, "application/json"), PL_OK);
    CHECK_EQ(pl_batch_add(b, ct), PL_EINVAL);
    CHECK_STR(pl_error_last()->message,
              "message: a batched message cannot carry a content type (the service marks every message "
              "of a batch \"application/xml; charset=utf-8\"): send messages with a content type one by one");
    CHECK_EQ(pl_batch_count(b), 0);
    CHECK_EQ(pl_outgoing_set_content_type(ct, NULL), PL_OK);
    CHECK_EQ(pl_batch_add(b, ct), PL_OK);
    pl_outgoing_free(ct);
    pl_batch_free(b);
    b = NULL;
    CHECK_EQ(pl_batch_new(&b), PL_OK);
    pl_outgoing *t = NULL;
    CHECK_EQ(pl_outgoing_new(&t, "hello", 5), PL_OK);
    CHECK_EQ(pl_outgoing_set_broker(t, "Label", "L"), PL_OK);
    CHECK_EQ(pl_outgoing_add_string(t, "Priority", "Low"), PL_OK);
    CHECK_EQ(pl_outgoing_add_int(t, "n", 5), PL_OK);
    CHECK_EQ(pl_outgoing_add_bool(t, "ok", 0), PL_OK);
    CHECK_EQ(pl_outgoing_add_datetime(t, "at", 0), PL_OK);
    CHECK_EQ(pl_batch_add(b, t), PL_OK);
    CHECK_EQ(pl_batch_add(b, t), PL_OK);
    pl_outgoing_free(t); /* the batch holds copies */
    CHECK_EQ(pl_batch_count(b), 2);
    char *json = NULL;
    size_t len = 0;
    CHECK_EQ(pl_batch_json(&json, &len, b), PL_OK);
    j = cJSON_Parse(json);
    REQUIRE(cJSON_IsArray(j) && cJSON_GetArraySize(j) == 2);
    cJSON *e0 = cJSON_GetArrayItem(j, 0);
    CHECK_STR(cJSON_GetObjectItem(e0, "Body")->valuestring, "hello");
    CHECK_STR(cJSON_GetObjectItem(cJSON_GetObjectItem(e0, "BrokerProperties"), "Label")->valuestring, "L");
    cJSON *up = cJSON_GetObjectItem(e0, "UserProperties");
    CHECK_STR(cJSON_GetObjectItem(up, "Priority")->valuestring, "Low");
    CHECK_EQ(cJSON_GetObjectItem(up, "n")->valuedouble, 5);
    CHECK(cJSON_IsFalse(cJSON_GetObjectItem(up, "ok")));
    CHECK_STR(cJSON_GetObjectItem(up, "at")->valuestring, "Thu, 01 Jan 1970 00:00:00 GMT");
    cJSON_Delete(j);
    free(json);
    pl_batch_free(b);
    pl_batch_free(NULL);
    pl_outgoing_free(m);
    pl_outgoing_free(NULL);

    /* BrokerProperties parsing of received messages. */
    pl_message *r = pl_message_alloc();
    const char *bpj =
        "{\"DeliveryCount\":2,\"EnqueuedSequenceNumber\":0,\"EnqueuedTimeUtc\":\"Sat, 25 Oct 2014 "
        "00:56:48 GMT\",\"LockToken\":\"acccce0e-7596-4e0c-b216-2d18638ac0dd\",\"LockedUntilUtc\":"
        "\"Sat, 25 Oct 2014 00:57:48 GMT\",\"MessageId\":\"aa68\",\"SequenceNumber\":7,"
        "\"State\":\"Active\",\"TimeToLive\":922337203685.47754,\"Unknown\":[1,2]}";
    CHECK_EQ(pl_message_parse_broker(r, bpj, strlen(bpj)), PL_OK);
    CHECK_EQ(pl_message_delivery_count(r), 2);
    CHECK_EQ(pl_message_sequence_number(r), 7);
    CHECK_EQ(pl_message_enqueued_sequence_number(r), 0);
    CHECK_EQ(pl_message_enqueued_time(r), 1414198608);
    CHECK_EQ(pl_message_locked_until(r), 1414198668);
    CHECK_STR(pl_message_id(r), "aa68");
    CHECK_STR(pl_message_broker(r, "State"), "Active");
    CHECK(pl_message_broker(r, "LockToken") == NULL);
    CHECK_STR(pl_message_lock_token(r), "acccce0e-7596-4e0c-b216-2d18638ac0dd");
    CHECK(pl_message_time_to_live(r) == -1); /* TimeSpan.MaxValue: no time to live */
    const char *bads[] = {"{",
                          "[]",
                          "{\"SequenceNumber\":\"x\"}",
                          "{\"SequenceNumber\":1.5}",
                          "{\"DeliveryCount\":-1}",
                          "{\"LockToken\":5}",
                          "{\"LockToken\":\"a b\"}",
                          "{\"LockedUntilUtc\":\"tomorrow\"}",
                          "{\"TimeToLive\":\"x\"}",
                          "{\"MessageId\":3}",
                          "{} trailing",
                          ""};
    for (size_t k = 0; k < sizeof bads / sizeof bads[0]; k++) {
        pl_message *x = pl_message_alloc();
        CHECK_EQ(pl_message_parse_broker(x, bads[k], strlen(bads[k])), PL_EPROTOCOL);
        CHECK(strstr(pl_error_last()->message, "BrokerProperties") != NULL);
        pl_message_free(x);
    }
    /* A time to live below TimeSpan.MaxValue is kept, as a number or a string. */
    const struct {
        const char *json;
        double want;
    } ttls[] = {{"{\"TimeToLive\":40}", 40},
                {"{\"TimeToLive\":\"40.5\"}", 40.5},
                {"{\"TimeToLive\":922337203684}", 922337203684.0},
                {"{\"TimeToLive\":\"922337203685.47754\"}", -1},
                {"{}", -1}};
    for (size_t k = 0; k < sizeof ttls / sizeof ttls[0]; k++) {
        pl_message *t = pl_message_alloc();
        CHECK_EQ(pl_message_parse_broker(t, ttls[k].json, strlen(ttls[k].json)), PL_OK);
        CHECK(pl_message_time_to_live(t) == ttls[k].want);
        pl_message_free(t);
    }
    /* Not NUL-terminated input is read only within its length. */
    char nonterm[2] = {'{', '}'};
    pl_message *x = pl_message_alloc();
    CHECK_EQ(pl_message_parse_broker(x, nonterm, 2), PL_OK);
    pl_message_free(x);
    pl_message_free(r);
    pl_message_free(NULL);
    return pl_test_done("test_message");
}
