/* Clients made from connection strings and options: what pl_client_new refuses
 * (credentials in clear, ACS, missing or doubled credentials, unknown versions), and
 * the options-init functions. No network; links the full library (the parsing alone:
 * test_connstr). */
#include "support.h"

/* Credentials in clear: an http:// endpoint is refused unless its host is loopback or the
 * connection string names it (AllowPlaintextHost=). */
static void test_plaintext_refused(void)
{
    pl_client *c = NULL;
    const char *refused[] = {
        "Endpoint=sb://emu.example:5300;SharedAccessKeyName=a;SharedAccessKey=b;UseDevelopmentEmulator=true",
        "Endpoint=sb://10.1.2.3;SharedAccessKeyName=a;SharedAccessKey=b;UseDevelopmentEmulator=true",
        "Endpoint=sb://emu.example;SharedAccessKeyName=a;SharedAccessKey=b;UseDevelopmentEmulator=true;"
        "AllowPlaintextHost=other.example",
        "Endpoint=sb://"
        "127.0.0.1.evil.example;SharedAccessKeyName=a;SharedAccessKey=b;UseDevelopmentEmulator=true",
    };
    for (size_t i = 0; i < sizeof refused / sizeof *refused; i++) {
        CHECK_EQ(pl_client_new_from_connection_string(&c, refused[i]), PL_EINVAL);
        CHECK(c == NULL);
        CHECK(strstr(pl_error_last()->message, "in clear") != NULL);
        CHECK(strstr(pl_error_last()->message, "AllowPlaintextHost") != NULL);
        CHECK(strstr(pl_error_last()->message, "=b") == NULL); /* never the key */
    }
    const char *allowed[] = {
        "Endpoint=sb://127.0.0.1:5300;SharedAccessKeyName=a;SharedAccessKey=b;UseDevelopmentEmulator=true",
        "Endpoint=sb://localhost;SharedAccessKeyName=a;SharedAccessKey=b;UseDevelopmentEmulator=true",
        "Endpoint=sb://emu.example:5300;SharedAccessKeyName=a;SharedAccessKey=b;UseDevelopmentEmulator=true;"
        "AllowPlaintextHost=EMU.example",
        "Endpoint=sb://emu.example;SharedAccessKeyName=a;SharedAccessKey=b", /* https */
    };
    for (size_t i = 0; i < sizeof allowed / sizeof *allowed; i++) {
        CHECK_EQ(pl_client_new_from_connection_string(&c, allowed[i]), PL_OK);
        pl_client_free(c);
        c = NULL;
    }
    pl_client_options o = PL_CLIENT_OPTIONS_INIT;
    o.endpoint = "http://emu.example:5300";
    o.key_name = "a";
    o.key = "b";
    CHECK_EQ(pl_client_new(&c, &o), PL_EINVAL);
    o.endpoint = "http://127.0.0.1:5300";
    CHECK_EQ(pl_client_new(&c, &o), PL_OK);
    pl_client_free(c);
}

/* The init functions give exactly the macros' defaults, for callers without the macros. */
static void test_options_init(void)
{
    const pl_client_options want = PL_CLIENT_OPTIONS_INIT;
    pl_client_options o;
    memset(&o, 0x5a, sizeof o);
    CHECK_EQ(pl_client_options_init(&o, PL_CLIENT_OPTIONS_VERSION), PL_OK);
    CHECK(o.version == want.version && o.endpoint == NULL && o.key == NULL && o.token_cb == NULL);
    CHECK(o.max_retries == -1 && o.connect_timeout_ms == 0 && o.pool_size == 0 && o.log_fn == NULL);
    CHECK_EQ(pl_client_options_init(&o, 1), PL_OK);
    CHECK(o.version == 1);
    CHECK_EQ(pl_client_options_init(&o, PL_CLIENT_OPTIONS_VERSION + 1), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "version") != NULL);
    CHECK_EQ(pl_client_options_init(NULL, PL_CLIENT_OPTIONS_VERSION), PL_EINVAL);

    pl_renewer_options r;
    memset(&r, 0x5a, sizeof r);
    CHECK_EQ(pl_renewer_options_init(&r, PL_RENEWER_OPTIONS_VERSION), PL_OK);
    CHECK(r.version == PL_RENEWER_OPTIONS_VERSION && r.max_connections == 0 && r.jitter < 0);
    CHECK_EQ(pl_renewer_options_init(&r, 0), PL_EINVAL);
}

/* The legacy ACS form parses (test_connstr); the client refuses it clearly. */
static void test_acs_refused(void)
{
    pl_client *c = (pl_client *)1;
    CHECK_EQ(pl_client_new_from_connection_string(&c,
                                                  "Endpoint=https://ns.servicebus.windows.net/;"
                                                  "SharedSecretIssuer=owner;SharedSecretValue=TopSecretKey"),
             PL_EINVAL);
    CHECK(c == NULL);
    CHECK(strstr(pl_error_last()->message, "ACS") != NULL);
    CHECK(strstr(pl_error_last()->message, "TopSecretKey") == NULL);
}

static void test_client_options(void)
{
    pl_client *c = NULL;
    pl_client_options o = PL_CLIENT_OPTIONS_INIT;
    CHECK_EQ(pl_client_new(&c, &o), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "connection_string") != NULL);
    o.endpoint = "http://127.0.0.1:1";
    o.key = "TopSecretKey";
    CHECK_EQ(pl_client_new(&c, &o), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "key_name") != NULL);
    o.key_name = "K";
    o.version = 99;
    CHECK_EQ(pl_client_new(&c, &o), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "version") != NULL);
    o.version = PL_CLIENT_OPTIONS_VERSION;
    o.ca_file = ""; /* not "no file": NULL is the default bundle */
    CHECK_EQ(pl_client_new(&c, &o), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "ca_file: must not be empty (NULL: the default CA bundle)");
    o.max_retries = 101; /* messages name the option as the bindings do */
    CHECK_EQ(pl_client_new(&c, &o), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "max_retries: must be -1..100");
    o.max_retries = 3;
    o.pool_size = -1;
    CHECK_EQ(pl_client_new(&c, &o), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "pool_size: must be 0..1024");
    o.pool_size = 0;
    o.ca_file = NULL;
    CHECK_EQ(pl_client_new(&c, &o), PL_OK);
    CHECK_STR(pl_client_endpoint(c), "http://127.0.0.1:1");
    CHECK(pl_client_entity_path(c) == NULL);
    pl_client_free(c);
    CHECK_EQ(pl_client_new_from_connection_string(&c,
                                                  "Endpoint=sb://ns.servicebus.windows.net/;"
                                                  "SharedAccessKeyName=K;SharedAccessKey=V;EntityPath=q1"),
             PL_OK);
    CHECK_STR(pl_client_endpoint(c), "https://ns.servicebus.windows.net");
    CHECK_STR(pl_client_entity_path(c), "q1");
    pl_client_free(c);
    pl_client_free(NULL);
}

int main(void)
{
    test_plaintext_refused();
    test_options_init();
    test_acs_refused();
    test_client_options();
    return pl_test_done("test_client_options");
}
