/* Status codes, messages, the thread-local last error, and small pure helpers. */
#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "error_int.h"

#define PL_ERRMSG_MAX 512

typedef struct pl_tls_error {
    pl_error pub;
    char buf[PL_ERRMSG_MAX];
} pl_tls_error;

static _Thread_local pl_tls_error tls_err = {{PL_OK, 0, 0, ""}, ""};

const char *pl_version(void)
{
    return PEEKLOCK_VERSION;
}

/* Every result code of peeklock.h, once: pl_strerror, pl_code_name, pl_code_word
 * and the bindings' tables (pl_code_count, pl_code_at) read this list. The words
 * are public (Lua's err.code == "lock_lost"): never change one. */
#define PL_CODE(c, word, text) c, #c, word, #c ": " text /* code, name, word, name: text */
static const struct pl_code_entry {
    int code;
    const char *name;
    const char *word;
    const char *text;
} pl_codes[] = {
    {PL_CODE(PL_OK, "ok", "success")},
    {PL_CODE(PL_EMPTY, "empty", "no message arrived within the timeout")},
    {PL_CODE(PL_EINVAL, "invalid_argument", "invalid argument")},
    {PL_CODE(PL_ENOMEM, "no_memory", "out of memory")},
    {PL_CODE(PL_EAUTH, "auth", "not authorized")},
    {PL_CODE(PL_ENOTFOUND, "entity_not_found", "entity not found")},
    {PL_CODE(PL_ELOCKLOST, "lock_lost", "lock lost")},
    {PL_CODE(PL_ETOOLARGE, "too_large", "message too large")},
    {PL_CODE(PL_ETHROTTLED, "throttled", "throttled by the server")},
    {PL_CODE(PL_ESERVER, "server", "server error")},
    {PL_CODE(PL_ETIMEOUT, "timeout", "timed out")},
    {PL_CODE(PL_ECONNECT, "connection", "connection failed")},
    {PL_CODE(PL_EPROTOCOL, "protocol", "malformed or unexpected response")},
    {PL_CODE(PL_EUNKNOWN, "unknown_outcome", "outcome unknown")},
    {PL_CODE(PL_EBADREQUEST, "bad_request", "bad request")},
    {PL_CODE(PL_ECONFLICT, "conflict", "conflict")},
    {PL_CODE(PL_ESTATE, "state", "wrong state for this call")},
    {PL_CODE(PL_ECLOSED, "closed", "closed")},
    {PL_CODE(PL_EHTTP, "http", "unexpected HTTP status")},
    {PL_CODE(PL_EINTERNAL, "internal", "internal error")},
    {PL_CODE(PL_ECANCELED, "cancelled", "cancelled")},
};
#undef PL_CODE
#define PL_NCODES ((int)(sizeof pl_codes / sizeof pl_codes[0]))

static const struct pl_code_entry *code_entry(int code)
{
    for (int i = 0; i < PL_NCODES; i++)
        if (pl_codes[i].code == code) return &pl_codes[i];
    return NULL;
}

const char *pl_strerror(int code)
{
    const struct pl_code_entry *e = code_entry(code);
    return e ? e->text : "PL_E?: unknown code";
}

const char *pl_code_name(int code)
{
    const struct pl_code_entry *e = code_entry(code);
    return e ? e->name : NULL;
}

const char *pl_code_word(int code)
{
    const struct pl_code_entry *e = code_entry(code);
    return e ? e->word : NULL;
}

int pl_code_count(void)
{
    return PL_NCODES;
}

int pl_code_at(int i)
{
    return i >= 0 && i < PL_NCODES ? pl_codes[i].code : PL_EINTERNAL;
}

const pl_error *pl_error_last(void)
{
    tls_err.pub.message = tls_err.buf;
    return &tls_err.pub;
}

void pl_error_clear(void)
{
    pl_error_ok();
}

void pl_error_ok(void)
{
    tls_err.pub.code = PL_OK;
    tls_err.pub.http_status = 0;
    tls_err.pub.retryable = 0;
    tls_err.buf[0] = '\0';
    tls_err.pub.message = tls_err.buf;
}

int pl_error_set(int code, int http_status, int retryable, const char *fmt, ...)
{
    va_list ap;
    char tmp[PL_ERRMSG_MAX];
    va_start(ap, fmt);
    vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    memcpy(tls_err.buf, tmp, sizeof tmp);
    tls_err.pub.code = code;
    tls_err.pub.http_status = http_status;
    tls_err.pub.retryable = retryable;
    tls_err.pub.message = tls_err.buf;
    return code;
}

void pl_error_prefix(const char *prefix)
{
    char tmp[PL_ERRMSG_MAX];
    snprintf(tmp, sizeof tmp, "%.100s: %.400s", prefix, tls_err.buf);
    memcpy(tls_err.buf, tmp, sizeof tmp);
}

int pl_error_nomem(void)
{
    return pl_error_set(PL_ENOMEM, 0, 0, "out of memory");
}

int pl_error_inval(const char *arg, const char *what)
{
    return pl_error_set(PL_EINVAL, 0, 0, "%s: %s", arg, what);
}

void pl_free(void *p)
{
    free(p);
}

/* ---- buffers and strings ------------------------------------------------ */

int pl_buf_append(pl_buf *b, const void *p, size_t n)
{
    if (b->oom) return PL_ENOMEM;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + n + 1) {
            if (cap > ((size_t)-1) / 2) {
                b->oom = 1;
                return PL_ENOMEM;
            }
            cap *= 2;
        }
        char *d = realloc(b->data, cap);
        if (!d) {
            b->oom = 1;
            return PL_ENOMEM;
        }
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return PL_OK;
}

int pl_buf_puts(pl_buf *b, const char *s)
{
    return pl_buf_append(b, s, strlen(s));
}

int pl_buf_printf(pl_buf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return PL_EINTERNAL;
    if ((size_t)n < sizeof tmp) return pl_buf_append(b, tmp, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big) {
        b->oom = 1;
        return PL_ENOMEM;
    }
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = pl_buf_append(b, big, (size_t)n);
    free(big);
    return rc;
}

char *pl_buf_detach(pl_buf *b)
{
    if (b->oom) {
        pl_buf_free(b);
        pl_error_nomem();
        return NULL;
    }
    if (!b->data && pl_buf_append(b, "", 0) != PL_OK) {
        pl_error_nomem();
        return NULL;
    }
    char *d = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return d;
}

void pl_buf_free(pl_buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
    b->oom = 0;
}

char *pl_strdup(const char *s)
{
    if (!s) return NULL;
    return pl_strndup(s, strlen(s));
}

char *pl_strndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d) return NULL;
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

static inline unsigned char ascii_lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c + 32) : c;
}

int pl_strcaseeq(const char *a, const char *b)
{
    for (;; a++, b++) {
        if (*a == *b) {
            if (!*a) return 1;
            continue;
        }
        if (ascii_lower((unsigned char)*a) != ascii_lower((unsigned char)*b)) return 0;
    }
}

int pl_strncaseeq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (a[i] == b[i]) {
            if (!a[i]) return 1;
            continue;
        }
        if (ascii_lower((unsigned char)a[i]) != ascii_lower((unsigned char)b[i])) return 0;
    }
    return 1;
}

char *pl_pct_encode(const char *src, size_t n, const char *keep, int upper)
{
    static const char hex_u[] = "0123456789ABCDEF";
    static const char hex_l[] = "0123456789abcdef";
    const char *hex = upper ? hex_u : hex_l;
    if (n > ((size_t)-1) / 3 - 1) return NULL;
    char *out = malloc(n * 3 + 1), *o = out;
    if (!out) return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' || (keep && c && strchr(keep, c))) {
            *o++ = (char)c;
        } else {
            *o++ = '%';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 15];
        }
    }
    *o = '\0';
    return out;
}

/* ---- RFC 1123 dates ------------------------------------------------------ */

static const char *const month_names[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
static const char *const day_names[7] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};

/* Days since 1970-01-01 of a civil date (proleptic Gregorian). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static int parse_uint(const char **p, int digits, int *out)
{
    int v = 0;
    for (int i = 0; i < digits; i++) {
        if (!isdigit((unsigned char)(*p)[i])) return -1;
        v = v * 10 + ((*p)[i] - '0');
    }
    *p += digits;
    *out = v;
    return 0;
}

int64_t pl_http_date_parse(const char *s)
{
    /* "Sun, 06 Nov 1994 08:49:37 GMT" */
    if (!s) return -1;
    const char *p = s;
    while (*p == ' ') p++;
    int known = 0;
    for (int i = 0; i < 7; i++)
        if (pl_strncaseeq(p, day_names[i], 3)) {
            known = 1;
            break;
        }
    if (!known || p[3] != ',' || p[4] != ' ') return -1;
    p += 5;
    int day, year, hh, mm, ss, mon = -1;
    const char *q = p;
    if (isdigit((unsigned char)q[0]) && isdigit((unsigned char)q[1])) {
        if (parse_uint(&p, 2, &day)) return -1;
    } else if (isdigit((unsigned char)q[0])) {
        if (parse_uint(&p, 1, &day)) return -1;
    } else {
        return -1;
    }
    if (*p++ != ' ') return -1;
    for (int i = 0; i < 12; i++)
        if (strncmp(p, month_names[i], 3) == 0) {
            mon = i + 1;
            break;
        }
    if (mon < 0 || p[3] != ' ') return -1;
    p += 4;
    if (parse_uint(&p, 4, &year) || *p++ != ' ') return -1;
    if (parse_uint(&p, 2, &hh) || *p++ != ':') return -1;
    if (parse_uint(&p, 2, &mm) || *p++ != ':') return -1;
    if (parse_uint(&p, 2, &ss)) return -1;
    if (strcmp(p, " GMT") != 0 && strcmp(p, " UTC") != 0) return -1;
    if (day < 1 || day > 31 || hh > 23 || mm > 59 || ss > 60) return -1;
    return days_from_civil(year, mon, day) * 86400 + hh * 3600 + mm * 60 + ss;
}

void pl_http_date_format(char *buf, size_t buflen, int64_t t)
{
    int64_t days = t >= 0 ? t / 86400 : (t - 86399) / 86400;
    int64_t secs = t - days * 86400;
    /* civil_from_days */
    int64_t z = days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t y = yoe + era * 400;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    int d = (int)(doy - (153 * mp + 2) / 5 + 1);
    int m = (int)(mp < 10 ? mp + 3 : mp - 9);
    y += m <= 2;
    int wd = (int)(((days % 7) + 11) % 7); /* 1970-01-01 was a Thursday */
    snprintf(buf, buflen, "%s, %02d %s %04lld %02d:%02d:%02d GMT", day_names[wd], d, month_names[m - 1],
             (long long)y, (int)(secs / 3600), (int)(secs / 60 % 60), (int)(secs % 60));
}

/* ---- redaction ------------------------------------------------------------ */

static int starts_ci(const char *p, const char *end, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(end - p) >= n && pl_strncaseeq(p, lit, n);
}

static int is_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Bytes of the whitespace character at p (ASCII, or a Unicode space in UTF-8:
 * NEL, NBSP, U+1680, U+2000-U+200A, U+2028/9, U+202F, U+205F, U+3000), else 0. */
static size_t space_len(const char *p, const char *end)
{
    const unsigned char *u = (const unsigned char *)p;
    size_t n = (size_t)(end - p);
    if (n >= 1 && (is_space(u[0]) || (u[0] >= 0x1c && u[0] <= 0x1f))) return 1;
    if (n >= 2 && u[0] == 0xc2 && (u[1] == 0x85 || u[1] == 0xa0)) return 2;
    if (n < 3) return 0;
    if (u[0] == 0xe1 && u[1] == 0x9a && u[2] == 0x80) return 3;
    if (u[0] == 0xe2 && u[1] == 0x80 && (u[2] <= 0x8a || u[2] == 0xa8 || u[2] == 0xa9 || u[2] == 0xaf))
        return 3;
    if (u[0] == 0xe2 && u[1] == 0x81 && u[2] == 0x9f) return 3;
    if (u[0] == 0xe3 && u[1] == 0x80 && u[2] == 0x80) return 3;
    return 0;
}

static const char *skip_spaces(const char *p, const char *end)
{
    size_t n;
    while (p < end && (n = space_len(p, end)) > 0) p += n;
    return p;
}

/* Length of the value at p: up to end, whitespace, a quote or one of stops. */
static size_t value_len(const char *p, const char *end, const char *stops)
{
    const char *q = p;
    while (q < end && *q && !is_space((unsigned char)*q) && *q != '"' && *q != '\'' && !strchr(stops, *q))
        q++;
    return (size_t)(q - p);
}

/* Length of a value after an opening quote: up to the matching quote; with none,
 * up to one of stops or the end, whitespace included. */
static size_t quoted_len(const char *p, const char *end, char quote, const char *stops)
{
    const char *q = p;
    while (q < end && *q && *q != quote) q++;
    if (q < end && *q == quote) return (size_t)(q - p);
    for (q = p; q < end && *q && !strchr(stops, *q);) q++;
    return (size_t)(q - p);
}

static size_t token68_len(const char *p, const char *end) /* A-Z a-z 0-9 . _ ~ + / = - */
{
    const char *q = p;
    while (q < end && *q && (isalnum((unsigned char)*q) || strchr("._~+/=-", *q))) q++;
    return (size_t)(q - p);
}

static int is_guid(const char *p, const char *end)
{
    if (end - p < 36) return 0;
    for (int i = 0; i < 36; i++) {
        int dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? p[i] != '-' : !isxdigit((unsigned char)p[i])) return 0;
    }
    return 1;
}

/* The names whose value is a secret (name=value, the value up to one of stops), and
 * the one that introduces a SAS token ("SharedAccessSignature sr=..."). */
static const struct {
    const char *name, *stops;
} keyed[] = {{"sig", "&"}, {"SharedAccessKey", ";"}, {"SharedSecretValue", ";"}};
#define NKEYED (sizeof keyed / sizeof keyed[0])
static const char sas_scheme[] = "SharedAccessSignature";

int pl_names_secret(const char *text)
{
    const char *end = text + strlen(text);
    for (const char *p = text; p < end; p++) {
        if (starts_ci(p, end, sas_scheme)) return 1;
        for (size_t i = 0; i < NKEYED; i++) {
            if (!starts_ci(p, end, keyed[i].name)) continue;
            const char *q = skip_spaces(p + strlen(keyed[i].name), end);
            if (q < end && *q == '=') return 1;
            if (strlen(keyed[i].name) > 3) return 1; /* long enough to name one without its '=' */
        }
    }
    return 0;
}

/* One secret form at p: *keep bytes are copied, then *skip more are replaced by
 * *with. 0 when no form starts at p. A name may have whitespace around its '='
 * (as the connection string parser allows) and its value may be quoted. */
static int secret_at(const char *p, const char *end, size_t *keep, size_t *skip, const char **with)
{
    *with = "<redacted>";
    for (size_t i = 0; i < NKEYED; i++) {
        if (!starts_ci(p, end, keyed[i].name)) continue;
        const char *q = skip_spaces(p + strlen(keyed[i].name), end);
        if (q >= end || *q != '=') continue;
        q = skip_spaces(q + 1, end);
        if (q < end && (*q == '"' || *q == '\'')) {
            q++;
            *skip = quoted_len(q, end, q[-1], keyed[i].stops);
        } else
            *skip = value_len(q, end, keyed[i].stops);
        if (*skip > 0) {
            *keep = (size_t)(q - p);
            return 1;
        }
    }
    if (starts_ci(p, end, sas_scheme)) { /* "SharedAccessSignature[=] sr=..." */
        const char *q = skip_spaces(p + sizeof sas_scheme - 1, end);
        if (q < end && *q == '=') q = skip_spaces(q + 1, end);
        size_t v = starts_ci(q, end, "sr=") ? value_len(q + 3, end, ";") : 0;
        if (v > 0) {
            *keep = (size_t)(q - p);
            *skip = 3 + v;
            return 1;
        }
    }
    if (starts_ci(p, end, "Bearer") && space_len(p + 6, end) > 0) {
        const char *q = skip_spaces(p + 6, end);
        size_t v = token68_len(q, end);
        if (v >= 8) {
            *keep = (size_t)(q - p);
            *skip = v;
            return 1;
        }
    }
    if (starts_ci(p, end, "TrackingId")) { /* "TrackingId:<guid>_G7": the service's id of a request */
        const char *q = skip_spaces(p + 10, end);
        if (q < end && *q == ':' && is_guid(q = skip_spaces(q + 1, end), end)) {
            *keep = (size_t)(q - p) + 36; /* kept: no secret, and its support asks for it */
            *skip = 0;
            *with = "";
            return 1;
        }
    }
    if (is_guid(p, end)) { /* a lock token (or any other GUID) */
        *keep = 0;
        *skip = 36;
        *with = "<guid>";
        return 1;
    }
    return 0;
}

int pl_redact_append(pl_buf *b, const char *text, size_t n)
{
    const char *p = text, *end = text + n, *copied = text;
    while (p < end) {
        size_t keep, skip;
        const char *with;
        if (!secret_at(p, end, &keep, &skip, &with)) {
            p++;
            continue;
        }
        pl_buf_append(b, copied, (size_t)(p - copied) + keep);
        pl_buf_puts(b, with);
        p += keep + skip;
        copied = p;
    }
    return pl_buf_append(b, copied, (size_t)(end - copied));
}

/* Leaves the thread's last error alone: a binding calls it while reporting one. */
int pl_redact(char **out, const char *text)
{
    if (!out) return PL_EINVAL;
    *out = NULL;
    if (!text) return PL_EINVAL;
    pl_buf b = PL_BUF_INIT;
    if (pl_redact_append(&b, text, strlen(text)) != PL_OK || !b.data) {
        pl_buf_free(&b);
        return PL_ENOMEM;
    }
    *out = b.data;
    return PL_OK;
}
