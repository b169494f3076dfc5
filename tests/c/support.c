/* Checks and fixtures: links with the pure core alone (support_emulator.c has
 * the emulator helpers, over libcurl). */
#include "support.h"

#include "error_int.h"

int pl_test_failures;

int pl_test_done(const char *name)
{
    if (pl_test_failures) {
        fprintf(stderr, "%s: %d check(s) FAILED\n", name, pl_test_failures);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

char *pl_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    pl_buf b = PL_BUF_INIT;
    char tmp[65536];
    size_t n;
    while ((n = fread(tmp, 1, sizeof tmp, f)) > 0) pl_buf_append(&b, tmp, n);
    fclose(f);
    if (len) *len = b.len;
    return pl_buf_detach(&b);
}
