/*
 * tokfixture.c — see tokfixture.h.
 */
#include "tokfixture.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/fileutil.h"
#include "testutil.h"

// Reads a fixture file as JSON (aborts the test on failure: nothing can be checked without it).
cJSON * load_json(const char * path) {
    char *             buf = NULL;
    size_t             n   = 0;
    struct sd3q_errbuf e   = {{0}};
    if (read_file(path, (size_t)64 << 20, &buf, &n, &e) != SD3Q_OK) {
        fprintf(stderr, "FAIL cannot read %s: %s\n", path, e.msg);
        exit(1);
    }
    cJSON * j = cJSON_ParseWithLength(buf, n);
    free(buf);
    if (!j) {
        fprintf(stderr, "FAIL %s is not valid JSON\n", path);
        exit(1);
    }
    return j;
}

// The case's prompt bytes (hex in the fixture, so invalid UTF-8 survives JSON) as a malloc'd C string.
char * case_text(const cJSON * c) {
    const char * hex = cJSON_GetObjectItem(c, "hex")->valuestring;
    size_t       n   = strlen(hex) / 2;
    char *       s   = malloc(n + 1);
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        sscanf(hex + 2 * i, "%2x", &v);
        s[i] = (char)v;
    }
    s[n] = '\0';
    return s;
}

// Compares ids with a JSON array; prints the first difference. Returns 1 when equal.
int same_ids(const char * what, const char * name, const int32_t * got, int n, const cJSON * want) {
    int wn = cJSON_GetArraySize(want);
    int ok = n == wn;
    for (int i = 0; ok && i < n; i++) ok = got[i] == (int32_t)cJSON_GetArrayItem(want, i)->valuedouble;
    if (!ok) {
        fprintf(stderr, "FAIL %s [%s]: got %d ids, want %d\n  got :", what, name, n, wn);
        for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", got[i]);
        fprintf(stderr, "\n  want:");
        for (int i = 0; i < wn && i < 40; i++) fprintf(stderr, " %d", (int)cJSON_GetArrayItem(want, i)->valuedouble);
        fprintf(stderr, "\n");
        g_failures++;
    }
    return ok;
}
