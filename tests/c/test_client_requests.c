/* The sans-I/O surface through a client (pl_client_new, pl_request_receive,
 * pl_response_result): SAS scope and token cache per entity, bearer tokens from a
 * callback. No network; links the full library (the wire layer alone: test_wire). */
#include <time.h>

#include "error_int.h"
#include "support.h"

static int cb_calls;
static long long cb_expiry;
static int token_cb(void *ud, const char *audience, char *buf, size_t buflen, int64_t *expires)
{
    cb_calls++;
    CHECK(ud == (void *)&cb_calls);
    CHECK(audience && strstr(audience, "servicebus") != NULL);
    snprintf(buf, buflen, "tok%d", cb_calls);
    *expires = cb_expiry;
    return 0;
}

static const char *auth_of(const pl_request *req)
{
    for (size_t i = 0; i < pl_request_header_count(req); i++)
        if (!strcmp(pl_request_header_name(req, i), "Authorization")) return pl_request_header_value(req, i);
    return NULL;
}

/* Bearer tokens from a callback: cached until 5 minutes before expiry. */
static void bearer(void)
{
    pl_client_options o = PL_CLIENT_OPTIONS_INIT;
    o.endpoint = "https://ns.servicebus.windows.net";
    o.token_cb = token_cb;
    o.token_userdata = &cb_calls;
    pl_client *c = NULL;
    REQUIRE(pl_client_new(&c, &o) == PL_OK);
    cb_expiry = (long long)time(NULL) + 3600;
    pl_request *req = NULL;
    REQUIRE(pl_request_receive(&req, c, "q", 0, 1) == PL_OK);
    CHECK_STR(auth_of(req), "Bearer tok1");
    pl_request_free(req);
    REQUIRE(pl_request_receive(&req, c, "q", 0, 1) == PL_OK);
    CHECK_STR(auth_of(req), "Bearer tok1");
    CHECK_EQ(cb_calls, 1);
    pl_request_free(req);
    /* Near expiry: the callback is asked again. */
    CHECK_EQ(pl_client_set_bearer_token(c, "old", (int64_t)time(NULL) + 60), PL_OK);
    REQUIRE(pl_request_receive(&req, c, "q", 0, 1) == PL_OK);
    CHECK_STR(auth_of(req), "Bearer tok2");
    pl_request_free(req);
    pl_client_free(c);
    /* Two credentials at once are refused. */
    o.key_name = "k";
    o.key = "v";
    CHECK_EQ(pl_client_new(&c, &o), PL_EINVAL);
}

/* The public sans-I/O surface through a client: SAS scope per entity. */
static void public_requests(void)
{
    pl_client_options o = PL_CLIENT_OPTIONS_INIT;
    o.endpoint = "https://NS.servicebus.windows.net";
    o.key_name = "Root";
    o.key = "k";
    pl_client *c = NULL;
    REQUIRE(pl_client_new(&c, &o) == PL_OK);
    pl_request *req = NULL;
    REQUIRE(pl_request_receive(&req, c, "Orders", 10, 1) == PL_OK);
    CHECK_STR(pl_request_url(req), "https://ns.servicebus.windows.net/Orders/messages/head?timeout=10");
    CHECK_STR(pl_request_method(req), "POST");
    const char *auth = NULL;
    for (size_t i = 0; i < pl_request_header_count(req); i++)
        if (!strcmp(pl_request_header_name(req, i), "Authorization")) auth = pl_request_header_value(req, i);
    REQUIRE(auth != NULL);
    const char *want = "SharedAccessSignature sr=https%3a%2f%2fns.servicebus.windows.net%2forders&sig=";
    if (strncmp(auth, want, strlen(want)) != 0) {
        fprintf(stderr, "unexpected SAS scope (first 80 chars): %.80s\n", auth);
        pl_test_failures++;
    }
    CHECK(strstr(auth, "&skn=Root") != NULL);
    /* Signed for the default lifetime (1 h); re-signed at half of it. */
    const char *se = strstr(auth, "&se=");
    REQUIRE(se != NULL);
    long long exp = atoll(se + 4), now = (long long)time(NULL);
    CHECK(exp >= now + 3590 && exp <= now + 3601);
    char *first = pl_strdup(auth);
    pl_request_free(req);
    /* Cached per scope: the same token again. */
    REQUIRE(pl_request_receive(&req, c, "Orders", 10, 1) == PL_OK);
    for (size_t i = 0; i < pl_request_header_count(req); i++)
        if (!strcmp(pl_request_header_name(req, i), "Authorization"))
            CHECK_STR(pl_request_header_value(req, i), first);
    free(first);
    /* Feed a response through the public result function. */
    pl_response *r = NULL;
    REQUIRE(pl_response_new(&r, 204) == PL_OK);
    pl_message *m = (pl_message *)1;
    CHECK_EQ(pl_response_result(&m, c, req, NULL, r, 0), PL_EMPTY);
    CHECK(m == NULL);
    pl_response_free(r);
    pl_request_free(req);
    CHECK_EQ(pl_request_receive(NULL, c, "q", 0, 1), PL_EINVAL);
    CHECK_EQ(pl_request_receive(&req, NULL, "q", 0, 1), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "client") != NULL);
    CHECK_EQ(pl_request_settle(&req, c, NULL, PL_SETTLE_RENEW), PL_EINVAL);
    pl_client_stats st;
    CHECK_EQ(pl_client_stats_get(c, &st), PL_OK);
    CHECK_EQ(st.requests, 0);
    pl_client_free(c);
}

int main(void)
{
    public_requests();
    bearer();
    return pl_test_done("test_client_requests");
}
