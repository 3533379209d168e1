/*
 * json.h — reading small JSON files (configs, indexes, manifests) with cJSON, with field access that reports the
 * file and the field on error.
 */
#ifndef SD3Q_IO_JSON_H
#define SD3Q_IO_JSON_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "core/status.h"

#define JSON_MAX_FILE (64u * 1024u * 1024u)

// Parses a JSON file (at most JSON_MAX_FILE bytes) into *out (free with cJSON_Delete).
enum sd3q_status json_load(const char * path, cJSON ** out, struct sd3q_errbuf * e);

// Reads an integer field in [lo, hi]. Absent: *v = def and SD3Q_OK when def_ok, else an error naming the field.
enum sd3q_status json_get_int(const cJSON * o, const char * key, int def_ok, int64_t def, int64_t lo, int64_t hi,
                              int64_t * v, const char * path, struct sd3q_errbuf * e);

// Reads a number field; absent → def.
enum sd3q_status json_get_num(const cJSON * o, const char * key, double def, double * v, const char * path,
                              struct sd3q_errbuf * e);

// Reads a number field that must be present and finite; the error names `where` and the field.
enum sd3q_status json_need_num(const cJSON * o, const char * key, double * v, const char * where, struct sd3q_errbuf * e);

// Returns the string value of a field or NULL (absent, null or not a string).
const char * json_get_str(const cJSON * o, const char * key);

#endif
