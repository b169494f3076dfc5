/* Integration: the fault matrix (tests/faults/matrix.json) against the C client and the C
 * renewer, with the emulator's fault rules (run under with_emulator.py). Every operation meets
 * every fault the emulator can make once; the call must report what the table says (ok and
 * done exactly once, PL_EUNKNOWN and done at most once, or the named error). The rows that
 * need the cutting proxy (tests/faults/proxy.py) run in the Python, Lua and nginx suites;
 * test_badserver covers cut answers over this client's own libcurl path. The renewer meets
 * every fault of the renew row and must keep the lock (no lost event). */
#include <cjson/cJSON.h>

#include "support.h"

#ifndef PL_FIXTURES_DIR
#define PL_FIXTURES_DIR "tests/fixtures"
#endif

static pl_client *setup_client;

static int expect_code(const char *outcome)
{
    if (!strcmp(outcome, "ok")) return PL_OK;
    if (!strcmp(outcome, "unknown")) return PL_EUNKNOWN;
    if (!strcmp(outcome, "protocol")) return PL_EPROTOCOL;
    if (!strcmp(outcome, "connection")) return PL_ECONNECT;
    fprintf(stderr, "matrix: unknown outcome %s\n", outcome);
    exit(1);
}

/* Adds spec's fault rule for op on entity, once. */
static void arm(const cJSON *rule, const char *op, const char *entity)
{
    cJSON *r = cJSON_Duplicate(rule, 1);
    REQUIRE(r);
    cJSON_AddStringToObject(r, "operation", !strcmp(op, "send_batch") ? "send" : op);
    cJSON_AddStringToObject(r, "entity", entity);
    cJSON_AddNumberToObject(r, "count", 1);
    char *j = cJSON_PrintUnformatted(r);
    REQUIRE(j && pl_test_fault(j) == 201);
    free(j);
    cJSON_Delete(r);
}

static pl_client *new_client(int refused)
{
    pl_client_options o = PL_CLIENT_OPTIONS_INIT;
    if (refused)
        o.endpoint = "http://127.0.0.1:1"; /* nothing listens there */
    else
        o.connection_string = pl_test_connection_string();
    o.request_timeout_ms = 1000;
    pl_client *c = NULL;
    REQUIRE(pl_client_new(&c, &o) == PL_OK);
    return c;
}

static int run_case(int n, const char *op, const char *fault, const cJSON *spec, const char *want)
{
    const cJSON *rule = cJSON_GetObjectItem(spec, "rule");
    const cJSON *endpoint = cJSON_GetObjectItem(spec, "endpoint");
    const cJSON *conn = cJSON_GetObjectItem(spec, "connection");
    int refused = cJSON_IsString(endpoint) && !strcmp(endpoint->valuestring, "refused");
    if (!rule && !refused) return 0; /* needs the proxy */
    int failures = pl_test_failures;
    char q[64], warm[80];
    snprintf(q, sizeof q, "cf-%d", n);
    snprintf(warm, sizeof warm, "cf-%d-warm", n);
    REQUIRE(pl_test_entity(q, "queue", 5, 10) / 100 == 2);
    pl_client *c = new_client(refused);
    int settle = !strcmp(op, "renew") || !strcmp(op, "unlock") || !strcmp(op, "complete");
    pl_message *m = NULL, *got = NULL;
    if (strcmp(op, "send") && strcmp(op, "send_batch")) pl_test_send_id(setup_client, q, "m1");
    if (!strcmp(op, "peek_lock")) pl_test_send_id(setup_client, q, "m2");
    if (settle) {
        REQUIRE(pl_peek_lock(&m, c, q, 5) == PL_OK); /* the connection the settle reuses */
    } else if (cJSON_IsString(conn) && !strcmp(conn->valuestring, "reused")) {
        REQUIRE(pl_test_entity(warm, "queue", 5, 10) / 100 == 2);
        REQUIRE(pl_peek_lock(&got, c, warm, 0) == PL_EMPTY);
    }
    if (rule) arm(rule, op, q);

    char outcome[32] = "", extra[32] = "";
    sscanf(want, "%31s %31s", outcome, extra);
    int rc;
    if (!strcmp(op, "send") || !strcmp(op, "send_batch")) {
        pl_outgoing *o = NULL;
        REQUIRE(pl_outgoing_new(&o, "s", 1) == PL_OK);
        REQUIRE(pl_outgoing_set_broker(o, "MessageId", "s1") == PL_OK);
        if (!strcmp(op, "send")) {
            rc = pl_send(c, q, o);
        } else {
            pl_batch *b = NULL;
            REQUIRE(pl_batch_new(&b) == PL_OK);
            REQUIRE(pl_batch_add(b, o) == PL_OK);
            REQUIRE(pl_outgoing_set_broker(o, "MessageId", "s2") == PL_OK);
            REQUIRE(pl_batch_add(b, o) == PL_OK);
            rc = pl_send_batch(c, q, b);
            pl_batch_free(b);
        }
        pl_outgoing_free(o);
    } else if (!strcmp(op, "receive_and_delete")) {
        rc = pl_receive_and_delete(&got, c, q, 0);
    } else if (!strcmp(op, "peek_lock")) {
        rc = pl_peek_lock(&got, c, q, 0);
    } else if (!strcmp(op, "renew")) {
        rc = pl_renew_lock(c, m);
    } else if (!strcmp(op, "unlock")) {
        rc = pl_unlock(c, m);
    } else {
        rc = pl_complete(c, m);
    }
    int want_rc = expect_code(outcome);
    if (rc != want_rc)
        fprintf(stderr, "matrix: %s meets %s: got %s, want %s (%s)\n", op, fault, pl_strerror(rc), want,
                pl_error_last()->message);
    CHECK_EQ(rc, want_rc);
    if (rc == PL_EUNKNOWN) CHECK(strstr(pl_error_last()->message, "outcome unknown") != NULL);
    pl_client_stats st;
    pl_client_stats_get(c, &st);
    if (!strcmp(extra, "orphaned")) CHECK(st.orphaned_locks >= 1);
    if (!strcmp(fault, "stall")) pl_test_clear_faults();

    int stored = pl_test_message_count(q);
    if (!strcmp(op, "send") || !strcmp(op, "send_batch")) {
        int n_sent = !strcmp(op, "send") ? 1 : 2;
        if (want_rc == PL_OK)
            CHECK_EQ(stored, n_sent);
        else if (strcmp(fault, "stall") != 0)
            CHECK(stored <= n_sent); /* never a second copy */
    } else if (!strcmp(op, "receive_and_delete")) {
        if (want_rc == PL_OK) {
            CHECK(got && pl_message_id(got) && !strcmp(pl_message_id(got), "m1"));
            CHECK_EQ(stored, 0);
        }
    } else if (!strcmp(op, "peek_lock") && want_rc == PL_OK) {
        /* after a lost answer the retry locks the next message; m1's orphaned lock expires */
        const char *id = got ? pl_message_id(got) : NULL;
        const cJSON *after = rule ? cJSON_GetObjectItem(rule, "after") : NULL;
        int acted = cJSON_IsTrue(after); /* the server locked m1 before the answer was lost */
        CHECK(id &&
              (!strcmp(fault, "stall") || !strcmp(id, !strcmp(extra, "orphaned") && acted ? "m2" : "m1")));
        if (got) CHECK_EQ(pl_complete(c, got), PL_OK);
    } else if (!strcmp(op, "renew")) {
        CHECK_EQ(pl_message_lock_state(m), PL_LOCK_HELD);
    } else if (!strcmp(op, "unlock") || !strcmp(op, "complete")) {
        CHECK_EQ(pl_message_lock_state(m), want_rc == PL_OK ? PL_LOCK_SETTLED : PL_LOCK_UNKNOWN);
        int done = pl_test_completed_count(q, "m1");
        if (!strcmp(op, "complete")) {
            if (want_rc == PL_OK)
                CHECK_EQ(done, 1);
            else
                CHECK(done <= 1);
        }
        if (want_rc == PL_EUNKNOWN) CHECK_EQ(pl_complete(c, m), PL_EUNKNOWN); /* remembered */
    }
    pl_test_clear_faults();
    pl_message_free(got);
    pl_message_free(m);
    pl_client_free(c);
    return pl_test_failures == failures ? 1 : 0;
}

/* The renewer meets each fault of the renew row: it must keep the lock (renewals go on,
 * no lost event) and the message is then completed once. */
static void renewer_case(int n, const char *fault, const cJSON *spec)
{
    const cJSON *rule = cJSON_GetObjectItem(spec, "rule");
    if (!rule) return;
    char q[64];
    snprintf(q, sizeof q, "rf-%d", n);
    REQUIRE(pl_test_entity(q, "queue", 3, 10) / 100 == 2);
    pl_test_send_id(setup_client, q, "r1");
    pl_message *m = NULL;
    REQUIRE(pl_peek_lock(&m, setup_client, q, 5) == PL_OK);
    pl_renewer_options ro = PL_RENEWER_OPTIONS_INIT;
    ro.request_timeout_ms = 1000;
    pl_renewer *r = NULL;
    REQUIRE(pl_renewer_new(&r, setup_client, &ro) == PL_OK);
    arm(rule, "renew", q);
    REQUIRE(pl_renewer_add(r, m, 60000) == PL_OK);
    int renewed = 0, lost = 0;
    for (int i = 0; i < 40 && renewed < 2 && !lost; i++) {
        pl_event *ev = NULL;
        if (pl_renewer_wait_event(&ev, r, 500) != PL_OK) continue;
        if (pl_event_type(ev) == PL_EVENT_RENEWED) renewed++;
        if (pl_event_type(ev) == PL_EVENT_LOST) {
            lost = 1;
            fprintf(stderr, "renewer: %s: lost (%s)\n", fault, pl_event_reason(ev));
        }
        pl_event_free(ev);
    }
    CHECK_EQ(lost, 0);
    CHECK_EQ(renewed, 2);
    pl_renewer_stats rs;
    pl_renewer_stats_get(r, &rs);
    CHECK(rs.failures >= 1); /* the fault was met */
    pl_renewer_remove(r, m);
    CHECK_EQ(pl_complete(setup_client, m), PL_OK);
    CHECK_EQ(pl_test_completed_count(q, "r1"), 1);
    pl_test_clear_faults();
    pl_renewer_free(r);
    pl_message_free(m);
}

int main(void)
{
    size_t len = 0;
    char *text = pl_test_read_file(PL_FIXTURES_DIR "/../faults/matrix.json", &len);
    REQUIRE(text);
    cJSON *matrix = cJSON_Parse(text);
    REQUIRE(matrix);
    free(text);
    REQUIRE(pl_client_new_from_connection_string(&setup_client, pl_test_connection_string()) == PL_OK);
    const cJSON *faults = cJSON_GetObjectItem(matrix, "faults");
    const cJSON *expect = cJSON_GetObjectItem(matrix, "expect");
    const cJSON *row, *cell;
    int n = 0, ran = 0;
    cJSON_ArrayForEach(row, expect)
    {
        cJSON_ArrayForEach(cell, row)
        {
            if (!strcmp(cell->valuestring, "n/a")) continue;
            n++;
            int failures = pl_test_failures;
            ran += run_case(n, row->string, cell->string, cJSON_GetObjectItem(faults, cell->string),
                            cell->valuestring) ||
                   pl_test_failures != failures;
        }
    }
    CHECK(ran >= 60);
    printf("fault matrix: %d cases run against the C client\n", ran);
    /* the renewer, over the renew row */
    const cJSON *renew = cJSON_GetObjectItem(expect, "renew");
    n = 0;
    cJSON_ArrayForEach(cell, renew)
    {
        if (!strcmp(cell->valuestring, "ok"))
            renewer_case(++n, cell->string, cJSON_GetObjectItem(faults, cell->string));
    }
    pl_client_free(setup_client);
    cJSON_Delete(matrix);
    return pl_test_done("test_int_faults");
}
