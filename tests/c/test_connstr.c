/* Connection strings in every form protocol.md lists, and their errors. */
#include "support.h"

static pl_connstr *parse_ok(const char *s)
{
    pl_connstr *cs = NULL;
    int rc = pl_connstr_parse(&cs, s);
    CHECK_EQ(rc, PL_OK);
    return cs;
}

static void parse_fails(const char *s, const char *expect_in_message)
{
    pl_connstr *cs = (pl_connstr *)1;
    CHECK_EQ(pl_connstr_parse(&cs, s), PL_EINVAL);
    CHECK(cs == NULL);
    const char *msg = pl_error_last()->message;
    if (!strstr(msg, expect_in_message)) {
        fprintf(stderr, "message \"%s\" lacks \"%s\" (input %s)\n", msg, expect_in_message, s);
        pl_test_failures++;
    }
    CHECK(strstr(msg, "TopSecretKey") == NULL);
}

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

int main(void)
{
    test_plaintext_refused();
    test_options_init();
    pl_connstr *cs = parse_ok("Endpoint=sb://contoso.servicebus.windows.net/;SharedAccessKeyName=Root;"
                              "SharedAccessKey=abc+/=def=;EntityPath=orders");
    CHECK_STR(pl_connstr_endpoint(cs), "https://contoso.servicebus.windows.net");
    CHECK_STR(pl_connstr_key_name(cs), "Root");
    CHECK_STR(pl_connstr_key(cs), "abc+/=def=");
    CHECK_STR(pl_connstr_entity_path(cs), "orders");
    CHECK(pl_connstr_sas_token(cs) == NULL);
    CHECK_EQ(pl_connstr_development_emulator(cs), 0);
    pl_connstr_free(cs);

    /* Keys are case-insensitive; spaces and a trailing ';' are tolerated; port kept. */
    cs = parse_ok(" endpoint = sb://127.0.0.1:5300 ; sharedaccesskeyname=K; sharedaccesskey=V ;"
                  "usedevelopmentemulator=TRUE;");
    CHECK_STR(pl_connstr_endpoint(cs), "http://127.0.0.1:5300");
    CHECK_EQ(pl_connstr_development_emulator(cs), 1);
    pl_connstr_free(cs);

    /* Without the emulator flag, even an http endpoint speaks https. */
    cs = parse_ok("Endpoint=http://Contoso.ServiceBus.Windows.Net;SharedAccessKeyName=K;SharedAccessKey=V;"
                  "UseDevelopmentEmulator=false");
    CHECK_STR(pl_connstr_endpoint(cs), "https://contoso.servicebus.windows.net");
    pl_connstr_free(cs);

    /* Ready-made SAS token. */
    cs = parse_ok("Endpoint=sb://ns.servicebus.windows.net/;SharedAccessSignature=SharedAccessSignature "
                  "sr=https%3a%2f%2fns.servicebus.windows.net%2f&sig=abc%3d&se=1&skn=k");
    CHECK_STR(pl_connstr_sas_token(cs), "SharedAccessSignature sr=https%3a%2f%2fns.servicebus.windows.net%2f"
                                        "&sig=abc%3d&se=1&skn=k");
    CHECK(pl_connstr_key(cs) == NULL);
    pl_connstr_free(cs);

    /* Legacy ACS form parses (the client then refuses it clearly). */
    cs = parse_ok("Endpoint=https://ns.servicebus.windows.net/;SharedSecretIssuer=owner;"
                  "SharedSecretValue=TopSecretKey;StsEndpoint=https://ns-sb.accesscontrol.windows.net/");
    CHECK(cs != NULL);
    pl_connstr_free(cs);
    pl_client *c = (pl_client *)1;
    CHECK_EQ(pl_client_new_from_connection_string(&c,
                                                  "Endpoint=https://ns.servicebus.windows.net/;"
                                                  "SharedSecretIssuer=owner;SharedSecretValue=TopSecretKey"),
             PL_EINVAL);
    CHECK(c == NULL);
    CHECK(strstr(pl_error_last()->message, "ACS") != NULL);
    CHECK(strstr(pl_error_last()->message, "TopSecretKey") == NULL);

    /* Errors say which part is wrong and never echo the key. */
    parse_fails("", "Endpoint is missing");
    parse_fails("SharedAccessKeyName=K;SharedAccessKey=TopSecretKey", "Endpoint is missing");
    parse_fails("Endpoint=sb://ns/;SharedAccessKeyName=K;SharedAccessKey=TopSecretKey;garbage", "part 4");
    parse_fails("Endpoint=ftp://ns/;SharedAccessKeyName=K;SharedAccessKey=TopSecretKey", "scheme");
    parse_fails("Endpoint=ns.servicebus.windows.net;SharedAccessKeyName=K;SharedAccessKey=TopSecretKey",
                "Endpoint");
    parse_fails("Endpoint=sb://ns:99999/;SharedAccessKeyName=K;SharedAccessKey=TopSecretKey", "port");
    parse_fails("Endpoint=sb://ns/path;SharedAccessKeyName=K;SharedAccessKey=TopSecretKey", "path");
    parse_fails("Endpoint=sb://ns/;SharedAccessKey=TopSecretKey", "without SharedAccessKeyName");
    parse_fails("Endpoint=sb://ns/;SharedAccessKeyName=K", "without SharedAccessKey");
    parse_fails("Endpoint=sb://ns/", "no credentials");
    parse_fails(
        "Endpoint=sb://ns/;SharedAccessKeyName=K;SharedAccessKey=TopSecretKey;SharedAccessKey=TopSecretKey",
        "given twice");
    parse_fails(
        "Endpoint=sb://ns/;SharedAccessKeyName=K;SharedAccessKey=TopSecretKey;UseDevelopmentEmulator=yes",
        "UseDevelopmentEmulator");
    parse_fails("Endpoint=sb://ns/;SharedAccessSignature=TopSecretKey", "SharedAccessSignature must start");
    parse_fails("Endpoint=sb://ns/;SharedAccessKeyName=K;SharedAccessKey=TopSecretKey;EntityPath=",
                "EntityPath");
    parse_fails("Endpoint=sb://ns/;SharedAccessKeyName=K;SharedAccessKey=", "SharedAccessKey is empty");
    CHECK_EQ(pl_connstr_parse(NULL, "x"), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "out") != NULL);
    CHECK_EQ(pl_connstr_parse(&cs, NULL), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "connection_string") != NULL);
    pl_connstr_free(NULL);

    /* Client options. */
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
    return pl_test_done("test_connstr");
}
