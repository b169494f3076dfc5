/*
 * Unit tests of the code list (csrc/error.c): every PL_E* code that peeklock.h
 * defines is in it once, with its name and its word, and pl_strerror /
 * pl_code_name / pl_code_word / pl_code_at agree with the header. The bindings build their code tables from
 * this list. Pure: links peeklock_pure alone.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

/* Each "#define PL_OK|PL_E<NAME> <number>" or "(<number>)" of the public header
 * is a code (PL_EOUTCOME_UNKNOWN, an alias by name, is not; PL_EVENT_* are event
 * kinds, named with a second underscore). */
static int check_header_codes(void)
{
    size_t len = 0;
    char *h = pl_test_read_file(PL_PUBLIC_HEADER, &len);
    REQUIRE(h != NULL);
    int found = 0;
    for (char *line = strtok(h, "\n"); line; line = strtok(NULL, "\n")) {
        char name[64];
        int value, n = 0;
        if (sscanf(line, "#define %63s (%d)%n", name, &value, &n) != 2 &&
            sscanf(line, "#define %63s %d%n", name, &value, &n) != 2)
            continue;
        if ((strncmp(name, "PL_E", 4) != 0 && strcmp(name, "PL_OK") != 0) || strchr(name + 3, '_')) continue;
        found++;
        const char *got = pl_code_name(value);
        CHECK_STR(got, name);
        const char *text = pl_strerror(value);
        CHECK(strncmp(text, name, strlen(name)) == 0 && text[strlen(name)] == ':');
    }
    free(h);
    return found;
}

int main(void)
{
    int n = pl_code_count();
    CHECK_EQ(check_header_codes(), n);
    CHECK_EQ(pl_code_at(0), PL_OK);
    CHECK_EQ(pl_code_at(-1), PL_EINTERNAL);
    CHECK_EQ(pl_code_at(n), PL_EINTERNAL);
    for (int i = 0; i < n; i++) {
        int c = pl_code_at(i);
        CHECK(pl_code_name(c) != NULL);
        const char *w = pl_code_word(c);
        REQUIRE(w != NULL);
        CHECK(w[0] != '\0' && strspn(w, "abcdefghijklmnopqrstuvwxyz_") == strlen(w));
        for (int j = 0; j < i; j++) {
            CHECK(pl_code_at(j) != c);
            CHECK(strcmp(pl_code_word(pl_code_at(j)), w) != 0);
        }
    }
    /* public words (Lua's err.code): they never change */
    CHECK_STR(pl_code_word(PL_ELOCKLOST), "lock_lost");
    CHECK_STR(pl_code_word(PL_EOUTCOME_UNKNOWN), "unknown_outcome");
    CHECK_STR(pl_code_word(PL_ENOTFOUND), "entity_not_found");
    CHECK_STR(pl_code_word(PL_ECANCELED), "cancelled");
    CHECK(pl_code_word(2) == NULL);
    CHECK(pl_code_word(-1000) == NULL);
    CHECK_STR(pl_code_name(PL_ELOCKLOST), "PL_ELOCKLOST");
    CHECK_STR(pl_code_name(PL_EOUTCOME_UNKNOWN), "PL_EUNKNOWN");
    CHECK_STR(pl_strerror(PL_ELOCKLOST), "PL_ELOCKLOST: lock lost");
    CHECK(pl_code_name(2) == NULL);
    CHECK(pl_code_name(-1000) == NULL);
    CHECK_STR(pl_strerror(-1000), "PL_E?: unknown code");
    return pl_test_done("test_codes");
}
