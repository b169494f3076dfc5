/* Test support for the C suite: checks, fixtures, and emulator admin calls
 * (plain libcurl; /$admin/ needs no SAS). */
#ifndef PL_TEST_SUPPORT_H
#define PL_TEST_SUPPORT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "peeklock.h"

extern int pl_test_failures;

#define CHECK(cond)                                                                                          \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s [last error: %s]\n", __FILE__, __LINE__, #cond,         \
                    pl_error_last()->message);                                                               \
            pl_test_failures++;                                                                              \
        }                                                                                                    \
    } while (0)
#define CHECK_EQ(a, b)                                                                                       \
    do {                                                                                                     \
        long long a_ = (long long)(a), b_ = (long long)(b);                                                  \
        if (a_ != b_) {                                                                                      \
            fprintf(stderr, "%s:%d: CHECK_EQ failed: %s = %lld, %s = %lld [last error: %s]\n", __FILE__,     \
                    __LINE__, #a, a_, #b, b_, pl_error_last()->message);                                     \
            pl_test_failures++;                                                                              \
        }                                                                                                    \
    } while (0)
#define CHECK_STR(a, b)                                                                                      \
    do {                                                                                                     \
        const char *a_ = (a), *b_ = (b);                                                                     \
        if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                                             \
            fprintf(stderr, "%s:%d: CHECK_STR failed: %s = \"%s\", expected \"%s\"\n", __FILE__, __LINE__,   \
                    #a, a_ ? a_ : "(null)", b_ ? b_ : "(null)");                                             \
            pl_test_failures++;                                                                              \
        }                                                                                                    \
    } while (0)
#define REQUIRE(cond)                                                                                        \
    do {                                                                                                     \
        if (!(cond)) {                                                                                       \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s [last error: %s]\n", __FILE__, __LINE__, #cond,       \
                    pl_error_last()->message);                                                               \
            exit(1);                                                                                         \
        }                                                                                                    \
    } while (0)

/* Prints a summary and returns the process exit status. */
int pl_test_done(const char *name);

/* Whole file (NUL-terminated), NULL on failure. */
char *pl_test_read_file(const char *path, size_t *len);

/* Emulator helpers: the connection string from PEEKLOCK_CONNECTION_STRING
 * (exported by with_emulator.py); base URL "http://127.0.0.1:PORT". */
const char *pl_test_connection_string(void);
const char *pl_test_base_url(void);
/* Sends an admin request; returns the HTTP status (or -1), *body_out (if not
 * NULL) the response body (free()). */
int pl_test_admin(const char *method, const char *path, const char *json, char **body_out);
/* Creates/replaces an entity with the given lock duration (s) and max delivery count. */
int pl_test_entity(const char *path, const char *kind, int lock_duration_s, int max_delivery);
/* Advances the emulator clock. */
int pl_test_advance(double seconds);
/* Adds a fault rule (JSON body of POST /$admin/faults); returns status. */
int pl_test_fault(const char *json);
int pl_test_clear_faults(void);
/* Number of times message_id was completed on entity per /$admin/state, or -1. */
int pl_test_completed_count(const char *entity, const char *message_id);
/* Number of messages currently stored in entity per /$admin/state, or -1. */
int pl_test_message_count(const char *entity);
/* Sends a one-byte message with that MessageId through c (exits on failure). */
void pl_test_send_id(pl_client *c, const char *entity, const char *id);

#endif
