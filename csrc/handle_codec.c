/* Lock handles as text: a peek-locked message's lock as a string another process
 * can attach to (pl_message_lock_handle, pl_client_attach in handle.c).
 *
 * Over REST a lock is a URL: whoever holds a valid token for the namespace can
 * renew, unlock or complete it from anywhere. A handle carries what that needs,
 * as "plh1." followed by unpadded base64url of a JSON object:
 *   e  entity (as received)            l  the lock URL (Location, verbatim)
 *   s  SAS scope of the receive, or absent
 *   q  SequenceNumber                  i  MessageId, or absent
 *   d  lock duration, ms               x  lock expiry, Unix ms (this host's clock)
 * The lock token is inside l: a handle is a secret, like the token itself.
 * Pure: the expiry is passed in and out; handle.c reads the clocks. */
#include "handle_int.h"

#include <cjson/cJSON.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "error_int.h"
#include "message_int.h"

#define HANDLE_PREFIX "plh1."
#define HANDLE_MAX    16384 /* bytes of a handle string accepted by attach */

/* base64url without padding of n bytes, into a fresh string after prefix. */
static char *b64url(const char *prefix, const unsigned char *in, size_t n)
{
    size_t plen = strlen(prefix);
    char *out = malloc(plen + 4 * ((n + 2) / 3) + 1);
    if (!out) return NULL;
    memcpy(out, prefix, plen);
    int len = EVP_EncodeBlock((unsigned char *)out + plen, in, (int)n);
    char *p = out + plen;
    for (int i = 0; i < len; i++) {
        if (p[i] == '+')
            p[i] = '-';
        else if (p[i] == '/')
            p[i] = '_';
    }
    while (len > 0 && p[len - 1] == '=') len--;
    p[len] = '\0';
    return out;
}

/* Decodes unpadded base64url; NULL when it is not that. *n gets the length. */
static unsigned char *unb64url(const char *s, size_t *n)
{
    size_t len = strlen(s);
    if (len % 4 == 1) return NULL;
    size_t padded = (len + 3) / 4 * 4;
    unsigned char *tmp = malloc(padded + 1);
    unsigned char *out = malloc(padded / 4 * 3 + 1);
    if (!tmp || !out) {
        free(tmp);
        free(out);
        return NULL;
    }
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (c == '-')
            c = '+';
        else if (c == '_')
            c = '/';
        else if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) {
            free(tmp);
            free(out);
            return NULL;
        }
        tmp[i] = (unsigned char)c;
    }
    for (size_t i = len; i < padded; i++) tmp[i] = '=';
    int got = EVP_DecodeBlock(out, tmp, (int)padded);
    free(tmp);
    if (got < 0) {
        free(out);
        return NULL;
    }
    *n = (size_t)got - (padded - len); /* EVP_DecodeBlock counts the padding as zero bytes */
    out[*n] = '\0';
    return out;
}

int pl_handle_encode(char **out, const pl_message *m, int64_t expiry_wall_ms)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (!m) return pl_error_inval("m", "must not be NULL");
    if (!m->location || !m->lock_token)
        return pl_error_set(PL_ESTATE, 0, 0, "the message was not peek-locked: it has no lock to hand over");
    int st = pl_message_state(m);
    if (st != PL_LOCK_HELD)
        return pl_error_set(PL_ESTATE, 0, 0, "the message's lock is not held: nothing to hand over");
    cJSON *o = cJSON_CreateObject();
    if (!o) return pl_error_nomem();
    int ok = cJSON_AddStringToObject(o, "e", m->entity ? m->entity : "") &&
             cJSON_AddStringToObject(o, "l", m->location) &&
             (!m->scope || cJSON_AddStringToObject(o, "s", m->scope)) &&
             cJSON_AddNumberToObject(o, "q", (double)m->seq) &&
             (!pl_message_id(m) || cJSON_AddStringToObject(o, "i", pl_message_id(m))) &&
             cJSON_AddNumberToObject(o, "d", (double)m->lock_duration_ms) &&
             cJSON_AddNumberToObject(o, "x", (double)expiry_wall_ms);
    char *json = ok ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (!json) return pl_error_nomem();
    size_t n = strlen(json);
    *out = b64url(HANDLE_PREFIX, (const unsigned char *)json, n);
    memset(json, 0, n); /* it holds the lock token */
    cJSON_free(json);
    return *out ? PL_OK : pl_error_nomem();
}

/* 2^53: the largest range in which every whole double is exact; sequence numbers
 * and Unix times in ms are far below it. */
#define NUM_MAX 9007199254740992.0

static const char *str_field(const cJSON *o, const char *name)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* A whole number in [lo, hi] (so that it converts to int64_t exactly: a handle is
 * untrusted input, and 1e300 or a fraction must be refused, not cast). */
static int num_field(const cJSON *o, const char *name, double lo, double hi, double *v)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!cJSON_IsNumber(it)) return 0;
    double d = it->valuedouble;
    if (!(d >= lo && d <= hi) || d != (double)(int64_t)d) return 0;
    *v = d;
    return 1;
}

/* The lock token: the last path segment of the lock URL (…/messages/{seq}/{token}). */
static const char *token_of(const char *location)
{
    const char *q = strchr(location, '?');
    size_t end = q ? (size_t)(q - location) : strlen(location);
    size_t i = end;
    while (i > 0 && location[i - 1] != '/') i--;
    return end > i ? location + i : NULL;
}

int pl_handle_decode(pl_message **out, const char *endpoint, const char *handle, int64_t *expiry_wall_ms)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (!handle) return pl_error_inval("handle", "must not be NULL");
    size_t plen = strlen(HANDLE_PREFIX), hlen = strnlen(handle, HANDLE_MAX + 1);
    /* the messages below never quote the handle: it is a secret */
    if (hlen > HANDLE_MAX || strncmp(handle, HANDLE_PREFIX, plen) != 0)
        return pl_error_inval("handle", "is not a peeklock lock handle");
    size_t n = 0;
    unsigned char *json = unb64url(handle + plen, &n);
    if (json && memchr(json, '\0', n)) { /* trailing bits that decode to a NUL byte */
        memset(json, 0, n);
        free(json);
        json = NULL;
    }
    if (!json) return pl_error_inval("handle", "is not a peeklock lock handle (bad encoding)");
    const char *end = NULL;
    cJSON *o = cJSON_ParseWithOpts((const char *)json, &end, 1);
    memset(json, 0, n);
    free(json);
    const char *entity = o ? str_field(o, "e") : NULL, *loc = o ? str_field(o, "l") : NULL;
    const char *scope = o ? str_field(o, "s") : NULL, *mid = o ? str_field(o, "i") : NULL;
    double seq = 0, dur = 0, exp = 0;
    int rc = PL_OK;
    if (!cJSON_IsObject(o) || !entity || !loc || !num_field(o, "q", 0, NUM_MAX, &seq) ||
        !num_field(o, "d", 1, 3600000.0, &dur) || !num_field(o, "x", 0, NUM_MAX, &exp) || !token_of(loc)) {
        rc = pl_error_inval("handle", "is not a peeklock lock handle (missing or bad fields)");
        goto done;
    }
    const char *ep = endpoint;
    size_t eplen = ep ? strlen(ep) : 0;
    if (!ep || strncasecmp(loc, ep, eplen) != 0 || loc[eplen] != '/') {
        rc = pl_error_set(PL_EINVAL, 0, 0,
                          "the lock handle is for another namespace than this client's endpoint");
        goto done;
    }
    pl_message *m = pl_message_alloc();
    if (!m) {
        rc = pl_error_nomem();
        goto done;
    }
    const char *tok = token_of(loc);
    const char *qm = strchr(tok, '?');
    if (!(m->entity = pl_message_strndup(m, entity, strlen(entity))) ||
        !(m->location = pl_message_strndup(m, loc, strlen(loc))) ||
        (scope && !(m->scope = pl_message_strndup(m, scope, strlen(scope)))) ||
        !(m->lock_token = pl_message_strndup(m, tok, qm ? (size_t)(qm - tok) : strlen(tok))) ||
        (mid && !(m->broker_str[0] = pl_message_strndup(m, mid, strlen(mid))))) { /* MessageId */
        pl_message_free(m);
        rc = pl_error_nomem();
        goto done;
    }
    m->seq = (int64_t)seq;
    m->lock_duration_ms = (int64_t)dur;
    pl_message_set_state(m, PL_LOCK_HELD);
    *expiry_wall_ms = (int64_t)exp;
    *out = m;
done:
    cJSON_Delete(o);
    return rc;
}
