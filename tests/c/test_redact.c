/*
 * Unit tests of pl_redact (csrc/error.c), the one list of secret forms: each form
 * is replaced and its name kept, in any case; values end where the rule says;
 * text with nothing secret, and text already redacted, comes back unchanged.
 * Pure: links peeklock_pure alone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

/* pl_redact(in) is want. */
static void check_redact(const char *in, const char *want)
{
    char *out = (char *)"untouched";
    CHECK_EQ(pl_redact(&out, in), PL_OK);
    CHECK_STR(out, want);
    if (out && strcmp(out, want) == 0) { /* once redacted, nothing more to take */
        char *again = NULL;
        CHECK_EQ(pl_redact(&again, out), PL_OK);
        CHECK_STR(again, want);
        pl_free(again);
    }
    pl_free(out);
}

int main(void)
{
    /* each secret form */
    check_redact("GET /q?sig=abcdEF%2B&se=1", "GET /q?sig=<redacted>&se=1");
    check_redact("Endpoint=sb://x/;SharedAccessKeyName=Root;SharedAccessKey=zzz+/=;EntityPath=q",
                 "Endpoint=sb://x/;SharedAccessKeyName=Root;SharedAccessKey=<redacted>;EntityPath=q");
    check_redact("SharedAccessSignature sr=http%3a%2f%2fx&sig=s&se=1&skn=Root",
                 "SharedAccessSignature <redacted>");
    check_redact("Endpoint=sb://x/;SharedAccessSignature=SharedAccessSignature sr=a&sig=b;EntityPath=q",
                 "Endpoint=sb://x/;SharedAccessSignature=SharedAccessSignature <redacted>;EntityPath=q");
    check_redact("SharedAccessSignature=sr=abc", "SharedAccessSignature=<redacted>");
    check_redact("issuer SharedSecretValue=hunter22; x", "issuer SharedSecretValue=<redacted>; x");
    check_redact("Authorization: Bearer eyJhbGciOi.eyJzdWIi.c2ln-_~+/= next",
                 "Authorization: Bearer <redacted> next");
    check_redact("lock 0E80AA4D-a5d1-4a99-b09e-d118f8c5972c gone", "lock <guid> gone");
    /* names in any case, values to whitespace or a quote */
    check_redact(
        "SIG=abc SHAREDACCESSKEY=k1\tsharedsecretvalue=\"v\" bearer  abcdefgh",
        "SIG=<redacted> SHAREDACCESSKEY=<redacted>\tsharedsecretvalue=\"<redacted>\" bearer  <redacted>");
    check_redact("'sig=abc' \"SharedAccessKey=def\"", "'sig=<redacted>' \"SharedAccessKey=<redacted>\"");
    check_redact("sig=abc</Detail>", "sig=<redacted>");
    /* a quoted value, to its matching quote (or, with none, to the rule's end) */
    check_redact("SharedAccessKey=\"abc+def=\";EntityPath=q", "SharedAccessKey=\"<redacted>\";EntityPath=q");
    check_redact("sig='xyz' next", "sig='<redacted>' next");
    check_redact("sig='x \"y' SharedSecretValue=\"a b\" z",
                 "sig='<redacted>' SharedSecretValue=\"<redacted>\" z");
    check_redact("SharedAccessKey=\"ab cd;EntityPath=q", "SharedAccessKey=\"<redacted>;EntityPath=q");
    check_redact("sig=\"open to the end", "sig=\"<redacted>");
    /* whitespace around '=', as the connection string parser trims it */
    check_redact("Endpoint=sb://x/; SharedAccessKey = abc ;EntityPath=q",
                 "Endpoint=sb://x/; SharedAccessKey = <redacted> ;EntityPath=q");
    check_redact("sharedsecretvalue\t=\tv1; sig =x& sig= and",
                 "sharedsecretvalue\t=\t<redacted>; sig =<redacted>& sig= <redacted>");
    check_redact("SharedAccessKey = \"k\"", "SharedAccessKey = \"<redacted>\"");
    check_redact("SharedAccessSignature = sr=a&sig=b", "SharedAccessSignature = <redacted>");
    /* Unicode whitespace (UTF-8) after Bearer and around '=' */
    check_redact("Bearer\xc2\xa0"
                 "abcdefgh12 x",
                 "Bearer\xc2\xa0<redacted> x");
    check_redact("Bearer\xe2\x80\x83\xe3\x80\x80"
                 "abcdefgh12",
                 "Bearer\xe2\x80\x83\xe3\x80\x80<redacted>");
    check_redact("SharedAccessKey\xc2\xa0=\xc2\xa0zzz", "SharedAccessKey\xc2\xa0=\xc2\xa0<redacted>");
    /* a TrackingId (the service's id of a request, as it writes one) stays; other GUIDs go */
    check_redact("SubCode=40900. Conflict.TrackingId:0f59709f-6272-433c-9d2c-5a5230a92c81_G7,TimeStamp:x",
                 "SubCode=40900. Conflict.TrackingId:0f59709f-6272-433c-9d2c-5a5230a92c81_G7,TimeStamp:x");
    check_redact(
        "trackingid : BED561F2-ad85-434c-a92e-8a9162c28bdf_G21_B3 lock 0E80AA4D-a5d1-4a99-b09e-d118f8c5972c",
        "trackingid : BED561F2-ad85-434c-a92e-8a9162c28bdf_G21_B3 lock <guid>");
    check_redact(
        "TrackingId 0E80AA4D-a5d1-4a99-b09e-d118f8c5972c TrackingId:x 0E80AA4D-a5d1-4a99-b09e-d118f8c5972c",
        "TrackingId <guid> TrackingId:x <guid>");
    check_redact("Reference:0E80AA4D-a5d1-4a99-b09e-d118f8c5972c", "Reference:<guid>");
    /* near misses stay */
    check_redact("sig=&x sig=", "sig=&x sig=");
    check_redact("sig=\"\" sig=''", "sig=\"\" sig=''");
    check_redact("SharedAccessKey =;x", "SharedAccessKey =;x");
    check_redact("Bearer\xc2\xa1"
                 "abcdefgh12",
                 "Bearer\xc2\xa1"
                 "abcdefgh12");
    check_redact("Bearer short", "Bearer short");
    check_redact("Bearertoken12345", "Bearertoken12345");
    check_redact("SharedAccessKeyName=RootManageSharedAccessKey",
                 "SharedAccessKeyName=RootManageSharedAccessKey");
    check_redact("0E80AA4D-a5d1-4a99-b09e-d118f8c5972", "0E80AA4D-a5d1-4a99-b09e-d118f8c5972");
    check_redact("0E80AA4D-a5d1-4a99-b09e-d118f8c5972g", "0E80AA4D-a5d1-4a99-b09e-d118f8c5972g");
    check_redact("", "");
    check_redact("nothing secret here: queue orders, 404", "nothing secret here: queue orders, 404");

    /* arguments */
    char *out = (char *)"untouched";
    CHECK_EQ(pl_redact(&out, NULL), PL_EINVAL);
    CHECK(out == NULL);
    CHECK_EQ(pl_redact(NULL, "x"), PL_EINVAL);
    /* the thread's last error stays (a binding redacts the one it reports) */
    CHECK_EQ(pl_check_entity(""), PL_EINVAL);
    const char *before = pl_error_last()->message;
    char kept[512];
    snprintf(kept, sizeof kept, "%s", before);
    REQUIRE(pl_redact(&out, "sig=abc") == PL_OK);
    pl_free(out);
    CHECK_EQ(pl_error_last()->code, PL_EINVAL);
    CHECK_STR(pl_error_last()->message, kept);
    return pl_test_done("test_redact");
}
