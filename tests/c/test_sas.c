/* SAS signing: the published vector, the vectors computed in protocol.md §4, and
 * argument errors (which never echo the key). */
#include <math.h>

#include "support.h"

static void vector(const char *sr, const char *key_name, const char *key, long long se, const char *want)
{
    char *tok = NULL;
    CHECK_EQ(pl_sas_token_raw(&tok, sr, key_name, key, se), PL_OK);
    CHECK_STR(tok, want);
    pl_free(tok);
}

int main(void)
{
    /* Published (azure-sdk-for-go sas_test.go). */
    vector("audience", "keyName", "key", 1578099723,
           "SharedAccessSignature sr=audience&sig=8UM0iIfFCfeBSqxSdBMW8pUbhAm7mnjSUaIZTZx8V0g%3D"
           "&se=1578099723&skn=keyName");

    const char *key = "SGVsbG9Xb3JsZEtleVZhbHVlMTIzNDU2Nzg5MGFiY2Q=";
    /* Computed vectors (protocol.md §4): the key is used as text. */
    vector(
        "https%3A%2F%2Fcontoso.servicebus.windows.net%2F", "RootManageSharedAccessKey", key, 1700000000,
        "SharedAccessSignature sr=https%3A%2F%2Fcontoso.servicebus.windows.net%2F"
        "&sig=e7iRjghEhQr1bicFUtjwOr%2BfYU7BMGFyx04SJuOraGA%3D&se=1700000000&skn=RootManageSharedAccessKey");
    vector("https%3a%2f%2fcontoso.servicebus.windows.net%2f", "RootManageSharedAccessKey", key, 1700000000,
           "SharedAccessSignature sr=https%3a%2f%2fcontoso.servicebus.windows.net%2f"
           "&sig=cFbJuErGZiTbiVnfEe39QbiTLW0xxAsmAim%2BICuH8%2FU%3D&se=1700000000&skn="
           "RootManageSharedAccessKey");
    vector("https%3a%2f%2fcontoso.servicebus.windows.net%3a443%2fmyqueue%2fmessages%2fhead%3ftimeout%3d60",
           "RootManageSharedAccessKey", key, 1700000000,
           "SharedAccessSignature sr=https%3a%2f%2fcontoso.servicebus.windows.net%3a443%2fmyqueue%2fmessages"
           "%2fhead%3ftimeout%3d60&sig=vPrpgw1sT%2FpFQ9JbQSOSwgxH9oaDR%2Bk9Z8Z7%2BjEImFo%3D&se=1700000000"
           "&skn=RootManageSharedAccessKey");

    /* pl_sas_token encodes the URI itself (lowercase escapes) and signs that text. */
    char *tok = NULL;
    CHECK_EQ(pl_sas_token(&tok, "https://contoso.servicebus.windows.net/", "RootManageSharedAccessKey", key,
                          1700000000),
             PL_OK);
    CHECK_STR(tok, "SharedAccessSignature sr=https%3a%2f%2fcontoso.servicebus.windows.net%2f"
                   "&sig=cFbJuErGZiTbiVnfEe39QbiTLW0xxAsmAim%2BICuH8%2FU%3D&se=1700000000"
                   "&skn=RootManageSharedAccessKey");
    pl_free(tok);

    /* The wrong way (base64-decoded key) must not be what we produce. */
    CHECK_EQ(pl_sas_token_raw(&tok, "HTTPS%3A%2F%2FCONTOSO.SERVICEBUS.WINDOWS.NET%2F",
                              "RootManageSharedAccessKey", key, 1700000000),
             PL_OK);
    CHECK(tok && !strstr(tok, "DQiqahJi6s"));
    pl_free(tok);

    /* Argument errors name the argument and never echo the key. */
    tok = (char *)1;
    CHECK_EQ(pl_sas_token(&tok, NULL, "n", "secretkey", 2000000000), PL_EINVAL);
    CHECK(tok == NULL);
    CHECK_STR(pl_error_last()->message, "uri: must be a non-empty string");
    CHECK_EQ(pl_sas_token(&tok, "u", NULL, "secretkey", 2000000000), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "key_name") != NULL);
    CHECK_EQ(pl_sas_token(&tok, "u", "n", NULL, 2000000000), PL_EINVAL);
    CHECK(strstr(pl_error_last()->message, "key") != NULL);
    CHECK_EQ(pl_sas_token(&tok, "u", "n", "secretkey", 0), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "expiry: must be positive");
    /* An expiry the bindings take as a number fits an int64_t: its edges. */
    CHECK_EQ(pl_check_expiry("expiry", 9.21e18), PL_OK);
    CHECK_EQ(pl_check_expiry("expiry", 9223372036854774784.0), PL_OK); /* 2^63 - 1024, the last */
    CHECK_EQ(pl_check_expiry("expiry", -9223372036854774784.0), PL_OK);
    CHECK_EQ(pl_check_expiry("expiry", 2000000000.5), PL_OK);
    const double bad_expiry[] = {0x1p63, -0x1p63, 1e300, INFINITY, -INFINITY, NAN};
    for (size_t i = 0; i < sizeof bad_expiry / sizeof bad_expiry[0]; i++) {
        CHECK_EQ(pl_check_expiry("expiry", bad_expiry[i]), PL_EINVAL);
        CHECK(strncmp(pl_error_last()->message, "expiry: must be a 64-bit Unix time (seconds), got ", 50) ==
              0);
    }
    CHECK_EQ(pl_check_expiry("lifetime", 0x1p63), PL_EINVAL);
    CHECK_STR(pl_error_last()->message, "lifetime: must be a 64-bit Unix time (seconds), got 9.22337e+18");
    /* A lifetime passed as the expiry (a date in 1970-2001) is refused, not signed. */
    CHECK_EQ(pl_sas_token(&tok, "u", "n", "secretkey", 3600), PL_EINVAL);
    CHECK(tok == NULL);
    CHECK_STR(pl_error_last()->message,
              "expiry: is an absolute time (Unix seconds) and 3600 is in 1970-2001; "
              "for a token valid 3600 seconds from now pass now + 3600");
    CHECK_EQ(pl_sas_token(&tok, "u", "n", "secretkey", 999999999), PL_EINVAL);
    CHECK_EQ(pl_sas_token(&tok, "u", "n", "secretkey", 1000000000), PL_OK);
    CHECK(tok && strstr(tok, "se=1000000000&") != NULL);
    pl_free(tok);
    CHECK(strstr(pl_error_last()->message, "secretkey") == NULL);
    CHECK_EQ(pl_sas_token(NULL, "u", "n", "k", 1), PL_EINVAL);
    CHECK_EQ(pl_error_last()->code, PL_EINVAL);

    /* Codes have names. */
    CHECK(strstr(pl_strerror(PL_ELOCKLOST), "PL_ELOCKLOST") != NULL);
    CHECK(strstr(pl_strerror(12345), "unknown") != NULL);
    CHECK_STR(pl_version(), PEEKLOCK_VERSION);
    pl_error_clear();
    CHECK_EQ(pl_error_last()->code, PL_OK);
    CHECK_STR(pl_error_last()->message, "");
    return pl_test_done("test_sas");
}
