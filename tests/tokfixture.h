/*
 * tokfixture.h — readers for the tokenizer fixtures in tests/golden/tokenizers (JSON made by
 * tools/reference/tokenizers/make_fixtures.py), shared by the CLIP and T5 tokenizer tests.
 */
#ifndef SD3Q_TESTS_TOKFIXTURE_H
#define SD3Q_TESTS_TOKFIXTURE_H

#include <cjson/cJSON.h>
#include <stdint.h>

// Reads a fixture file as JSON (exits the test on failure: nothing can be checked without it).
cJSON * load_json(const char * path);

// The case's prompt bytes (hex in the fixture, so invalid UTF-8 survives JSON) as a malloc'd C string.
char * case_text(const cJSON * c);

// Compares ids with a JSON array, printing the first ids of both on a difference (a counted failure). Returns 1
// when equal.
int same_ids(const char * what, const char * name, const int32_t * got, int n, const cJSON * want);

#endif
