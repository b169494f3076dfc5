/* SAS signing (protocol.md §4). Pure: the expiry is passed in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "error_int.h"

#define SAS_MIN_EXPIRY 1000000000LL /* 2001-09-09 */

int pl_sas_token_raw(char **out, const char *encoded_sr, const char *key_name, const char *key,
                     int64_t expiry_unix)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (!encoded_sr || !*encoded_sr) return pl_error_inval("encoded_sr", "must be a non-empty string");
    if (!key_name || !*key_name) return pl_error_inval("key_name", "must be a non-empty string");
    if (!key || !*key) return pl_error_inval("key", "must be a non-empty string");
    if (expiry_unix <= 0) return pl_error_inval("expiry", "must be positive");

    char se[32];
    snprintf(se, sizeof se, "%lld", (long long)expiry_unix);
    size_t srlen = strlen(encoded_sr), selen = strlen(se);
    char *to_sign = malloc(srlen + 1 + selen + 1);
    if (!to_sign) return pl_error_nomem();
    memcpy(to_sign, encoded_sr, srlen);
    to_sign[srlen] = '\n';
    memcpy(to_sign + srlen + 1, se, selen + 1);

    unsigned char mac[EVP_MAX_MD_SIZE];
    unsigned int maclen = 0;
    /* The key is used as its UTF-8 text, never base64-decoded. */
    unsigned char *r = HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)to_sign,
                            srlen + 1 + selen, mac, &maclen);
    free(to_sign);
    if (!r) return pl_error_set(PL_EINTERNAL, 0, 0, "HMAC-SHA256 failed");

    unsigned char b64[EVP_MAX_MD_SIZE * 2];
    int b64len = EVP_EncodeBlock(b64, mac, (int)maclen);
    char *sig = pl_pct_encode((const char *)b64, (size_t)b64len, NULL, 1);
    char *kn = pl_pct_encode(key_name, strlen(key_name), NULL, 1);
    if (!sig || !kn) {
        free(sig);
        free(kn);
        return pl_error_nomem();
    }
    pl_buf b = PL_BUF_INIT;
    pl_buf_printf(&b, "SharedAccessSignature sr=%s&sig=%s&se=%s&skn=%s", encoded_sr, sig, se, kn);
    free(sig);
    free(kn);
    *out = pl_buf_detach(&b);
    if (!*out) return pl_error_nomem();
    pl_error_ok();
    return PL_OK;
}

int pl_check_expiry(const char *name, double unix_seconds)
{
    /* -2^63 < t < 2^63: the doubles whose whole seconds an int64_t holds (NaN fails both) */
    if (!(unix_seconds > -0x1p63 && unix_seconds < 0x1p63))
        return pl_error_set(PL_EINVAL, 0, 0, "%s: must be a 64-bit Unix time (seconds), got %g",
                            name ? name : "expiry", unix_seconds);
    pl_error_ok();
    return PL_OK;
}

int pl_sas_token(char **out, const char *resource_uri, const char *key_name, const char *key,
                 int64_t expiry_unix)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (!resource_uri || !*resource_uri) return pl_error_inval("uri", "must be a non-empty string");
    /* An expiry before 2001-09-09 is a lifetime passed where the absolute end was meant. */
    if (expiry_unix > 0 && expiry_unix < SAS_MIN_EXPIRY)
        return pl_error_set(PL_EINVAL, 0, 0,
                            "expiry: is an absolute time (Unix seconds) and %lld is in 1970-2001; for a "
                            "token valid %lld seconds from now pass now + %lld",
                            (long long)expiry_unix, (long long)expiry_unix, (long long)expiry_unix);
    char *sr = pl_pct_encode(resource_uri, strlen(resource_uri), NULL, 0);
    if (!sr) return pl_error_nomem();
    int rc = pl_sas_token_raw(out, sr, key_name, key, expiry_unix);
    free(sr);
    return rc;
}
