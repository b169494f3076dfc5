/* Connection strings in every form protocol.md lists, and their errors. Links the pure
 * core alone (clients made from them: test_client_options). */
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

int main(void)
{
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

    /* Legacy ACS form parses (the client then refuses it clearly: test_client_options). */
    cs = parse_ok("Endpoint=https://ns.servicebus.windows.net/;SharedSecretIssuer=owner;"
                  "SharedSecretValue=TopSecretKey;StsEndpoint=https://ns-sb.accesscontrol.windows.net/");
    CHECK(cs != NULL);
    pl_connstr_free(cs);
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

    return pl_test_done("test_connstr");
}
