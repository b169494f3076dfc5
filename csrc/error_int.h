/* Private: error reporting and small helpers shared by every peeklock source file.
 * Not installed; not part of the public API. */
#ifndef PEEKLOCK_ERROR_INT_H
#define PEEKLOCK_ERROR_INT_H

#include <stddef.h>
#include <stdint.h>
#include "peeklock.h"

#if defined(__GNUC__)
#define PL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define PL_PRINTF(a, b)
#endif

/* Sets the calling thread's last error and returns code (so callers can write
 * `return pl_error_set(PL_EINVAL, 0, 0, "key_name is NULL");`). The message is
 * truncated to 511 bytes. Never pass a secret in the message. */
int pl_error_set(int code, int http_status, int retryable, const char *fmt, ...) PL_PRINTF(4, 5);
/* Prefixes the current last-error message with "<prefix>: " (keeps code/status). */
void pl_error_prefix(const char *prefix);
/* Records success on this thread (code PL_OK, empty message). */
void pl_error_ok(void);
/* PL_ENOMEM with a fixed message. */
int pl_error_nomem(void);
/* Shorthand for PL_EINVAL naming the argument: "<arg>: <what>". */
int pl_error_inval(const char *arg, const char *what);

/* Growable byte buffer (always NUL-terminated when data != NULL). */
typedef struct pl_buf {
    char *data;
    size_t len;
    size_t cap;
    int oom; /* set once an allocation failed; later appends are no-ops */
} pl_buf;

#define PL_BUF_INIT                                                                                          \
    {                                                                                                        \
        NULL, 0, 0, 0                                                                                        \
    }
int pl_buf_append(pl_buf *b, const void *p, size_t n); /* 0 or PL_ENOMEM */
int pl_buf_puts(pl_buf *b, const char *s);
int pl_buf_printf(pl_buf *b, const char *fmt, ...) PL_PRINTF(2, 3);
/* Detaches the data (caller frees with free()); returns NULL (and sets PL_ENOMEM)
 * if any append failed. An empty buffer detaches as "". */
char *pl_buf_detach(pl_buf *b);
void pl_buf_free(pl_buf *b);

char *pl_strdup(const char *s); /* NULL-safe, NULL on OOM */
char *pl_strndup(const char *s, size_t n);
int pl_strcaseeq(const char *a, const char *b); /* ASCII case-insensitive equality */
int pl_strncaseeq(const char *a, const char *b, size_t n);
/* Appends text (n bytes) to b with pl_redact's rules: 0 or PL_ENOMEM. */
int pl_redact_append(pl_buf *b, const char *text, size_t n);
/* 1 when text names a secret pl_redact's rules know by name: one of its keyed names
 * ("sig" only with its '=', whitespace allowed before it) or the SAS scheme. */
int pl_names_secret(const char *text);

/* Percent-encodes src (n bytes): unreserved characters (A-Z a-z 0-9 - _ . ~) and
 * those in `keep` stay, everything else becomes %XX (uppercase hex when upper,
 * else lowercase). NULL on OOM. */
char *pl_pct_encode(const char *src, size_t n, const char *keep, int upper);

/* RFC 1123 dates ("Sat, 25 Oct 2014 00:56:48 GMT"): parse to Unix seconds
 * (-1 when malformed), format into buf (at least 30 bytes). Pure. */
int64_t pl_http_date_parse(const char *s);
void pl_http_date_format(char *buf, size_t buflen, int64_t unix_seconds);

#endif
