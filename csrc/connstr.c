/* Connection strings (protocol.md §4). Pure. Error messages name the faulty
 * part and never echo a key or token. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "connstr_int.h"
#include "error_int.h"

void pl_connstr_free(pl_connstr *cs)
{
    if (!cs) return;
    free(cs->endpoint);
    free(cs->host);
    free(cs->key_name);
    if (cs->key) {
        memset(cs->key, 0, strlen(cs->key));
        free(cs->key);
    }
    if (cs->sas_token) {
        memset(cs->sas_token, 0, strlen(cs->sas_token));
        free(cs->sas_token);
    }
    free(cs->entity_path);
    free(cs->issuer);
    free(cs->plaintext_host);
    if (cs->secret) {
        memset(cs->secret, 0, strlen(cs->secret));
        free(cs->secret);
    }
    free(cs);
}

const char *pl_connstr_endpoint(const pl_connstr *cs)
{
    return cs ? cs->endpoint : NULL;
}
const char *pl_connstr_key_name(const pl_connstr *cs)
{
    return cs ? cs->key_name : NULL;
}
const char *pl_connstr_key(const pl_connstr *cs)
{
    return cs ? cs->key : NULL;
}
const char *pl_connstr_sas_token(const pl_connstr *cs)
{
    return cs ? cs->sas_token : NULL;
}
const char *pl_connstr_entity_path(const pl_connstr *cs)
{
    return cs ? cs->entity_path : NULL;
}
int pl_connstr_development_emulator(const pl_connstr *cs)
{
    return cs ? cs->dev : 0;
}

static int is_host_char(unsigned char c)
{
    return isalnum(c) || c == '.' || c == '-' || c == '_';
}

/* Normalises an endpoint into "scheme://host[:port]" (scheme chosen by dev). */
int pl_endpoint_normalize(char **out, char **host_out, const char *ep, int dev, const char *what)
{
    const char *p = strstr(ep, "://");
    if (!p) return pl_error_inval(what, "must look like sb://host[:port]/");
    size_t slen = (size_t)(p - ep);
    int ok_scheme = (slen == 2 && pl_strncaseeq(ep, "sb", 2)) ||
                    (slen == 5 && pl_strncaseeq(ep, "https", 5)) ||
                    (slen == 4 && pl_strncaseeq(ep, "http", 4));
    if (!ok_scheme) return pl_error_inval(what, "scheme must be sb://, https:// or http://");
    const char *h = p + 3, *q = h;
    while (*q && is_host_char((unsigned char)*q)) q++;
    if (q == h) return pl_error_inval(what, "has no host name");
    const char *hend = q;
    if (*q == ':') {
        q++;
        const char *d = q;
        long port = 0;
        while (isdigit((unsigned char)*q) && q - d < 6) port = port * 10 + (*q++ - '0');
        if (q == d || port < 1 || port > 65535) return pl_error_inval(what, "has an invalid port");
    }
    if (*q == '/') {
        q++;
        /* A trailing slash is normal; a path is not meaningful for REST. */
        if (*q) return pl_error_inval(what, "must not contain a path after the host");
    }
    if (*q) return pl_error_inval(what, "has an invalid character in the host");
    int http = dev; /* plain http only for the development emulator */
    pl_buf b = PL_BUF_INIT;
    pl_buf_puts(&b, http ? "http://" : "https://");
    for (const char *c = h; c < q && *c != '/'; c++) {
        char lc = (char)tolower((unsigned char)*c);
        pl_buf_append(&b, &lc, 1);
    }
    *out = pl_buf_detach(&b);
    if (!*out) return pl_error_nomem();
    if (host_out) {
        *host_out = pl_strndup(h, (size_t)(hend - h));
        if (!*host_out) {
            free(*out);
            *out = NULL;
            return pl_error_nomem();
        }
    }
    return PL_OK;
}

static char *trim_dup(const char *s, size_t n)
{
    while (n && isspace((unsigned char)*s)) {
        s++;
        n--;
    }
    while (n && isspace((unsigned char)s[n - 1])) n--;
    return pl_strndup(s, n);
}

static int set_field(char **slot, const char *name, char *value)
{
    if (*slot) {
        free(value);
        return pl_error_set(PL_EINVAL, 0, 0, "connection string: %s is given twice", name);
    }
    *slot = value;
    return PL_OK;
}

int pl_connstr_parse(pl_connstr **out, const char *s)
{
    if (!out) return pl_error_inval("out", "must not be NULL");
    *out = NULL;
    if (!s) return pl_error_inval("connection_string", "must not be NULL");
    pl_connstr *cs = calloc(1, sizeof *cs);
    if (!cs) return pl_error_nomem();
    char *endpoint = NULL, *dev = NULL;
    int rc = PL_OK, index = 0;
    const char *p = s;
    while (*p && rc == PL_OK) {
        const char *end = strchr(p, ';');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        index++;
        const char *eq = memchr(p, '=', n);
        int blank = 1;
        for (size_t i = 0; i < n; i++)
            if (!isspace((unsigned char)p[i])) blank = 0;
        if (blank) {
            /* empty segment (e.g. trailing ';') */
        } else if (!eq) {
            rc = pl_error_set(PL_EINVAL, 0, 0, "connection string: part %d has no '=' (expected Name=Value)",
                              index);
        } else {
            char *k = trim_dup(p, (size_t)(eq - p));
            char *v = trim_dup(eq + 1, n - (size_t)(eq + 1 - p));
            if (!k || !v) {
                free(k);
                free(v);
                rc = pl_error_nomem();
                break;
            }
            if (!*k) {
                free(v);
                rc = pl_error_set(PL_EINVAL, 0, 0, "connection string: part %d has an empty name", index);
            } else if (pl_strcaseeq(k, "Endpoint"))
                rc = set_field(&endpoint, "Endpoint", v);
            else if (pl_strcaseeq(k, "SharedAccessKeyName"))
                rc = set_field(&cs->key_name, "SharedAccessKeyName", v);
            else if (pl_strcaseeq(k, "SharedAccessKey"))
                rc = set_field(&cs->key, "SharedAccessKey", v);
            else if (pl_strcaseeq(k, "SharedAccessSignature"))
                rc = set_field(&cs->sas_token, "SharedAccessSignature", v);
            else if (pl_strcaseeq(k, "EntityPath"))
                rc = set_field(&cs->entity_path, "EntityPath", v);
            else if (pl_strcaseeq(k, "UseDevelopmentEmulator"))
                rc = set_field(&dev, "UseDevelopmentEmulator", v);
            else if (pl_strcaseeq(k, "SharedSecretIssuer"))
                rc = set_field(&cs->issuer, "SharedSecretIssuer", v);
            else if (pl_strcaseeq(k, "SharedSecretValue"))
                rc = set_field(&cs->secret, "SharedSecretValue", v);
            else if (pl_strcaseeq(k, "AllowPlaintextHost"))
                rc = set_field(&cs->plaintext_host, "AllowPlaintextHost", v);
            else
                free(v); /* StsEndpoint, TransportType, ...: not used over REST */
            free(k);
        }
        p = end ? end + 1 : p + n;
    }
    if (rc == PL_OK && dev) {
        if (pl_strcaseeq(dev, "true"))
            cs->dev = 1;
        else if (pl_strcaseeq(dev, "false"))
            cs->dev = 0;
        else
            rc = pl_error_inval("connection string", "UseDevelopmentEmulator must be true or false");
    }
    if (rc == PL_OK && (!endpoint || !*endpoint))
        rc = pl_error_inval("connection string", "Endpoint is missing");
    if (rc == PL_OK)
        rc =
            pl_endpoint_normalize(&cs->endpoint, &cs->host, endpoint, cs->dev, "connection string: Endpoint");
    if (rc == PL_OK) {
        if (cs->key_name && !*cs->key_name)
            rc = pl_error_inval("connection string", "SharedAccessKeyName is empty");
        else if (cs->key && !*cs->key)
            rc = pl_error_inval("connection string", "SharedAccessKey is empty");
        else if (cs->key && !cs->key_name)
            rc = pl_error_inval("connection string", "SharedAccessKey is given without SharedAccessKeyName");
        else if (cs->key_name && !cs->key)
            rc = pl_error_inval("connection string", "SharedAccessKeyName is given without SharedAccessKey");
        else if (cs->sas_token && strncmp(cs->sas_token, "SharedAccessSignature ", 22) != 0)
            rc = pl_error_inval("connection string",
                                "SharedAccessSignature must start with 'SharedAccessSignature sr='");
        else if (cs->sas_token && cs->key)
            rc = pl_error_inval("connection string",
                                "give either SharedAccessKey or SharedAccessSignature, not both");
        else if ((cs->issuer != NULL) != (cs->secret != NULL))
            rc = pl_error_inval("connection string", "SharedSecretIssuer and SharedSecretValue go together");
        else if (!cs->key && !cs->sas_token && !cs->issuer)
            rc = pl_error_inval(
                "connection string",
                "no credentials (SharedAccessKeyName/SharedAccessKey or SharedAccessSignature)");
        else if (cs->entity_path && !*cs->entity_path)
            rc = pl_error_inval("connection string", "EntityPath is empty");
    }
    free(endpoint);
    free(dev);
    if (rc != PL_OK) {
        pl_connstr_free(cs);
        return rc;
    }
    *out = cs;
    pl_error_ok();
    return PL_OK;
}
