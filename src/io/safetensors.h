/*
 * safetensors.h — a reader that trusts nothing, and an atomic writer.
 *
 * Format: 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:[begin,end]},
 * "__metadata__": {str: str}}, then the data; offsets are relative to the first byte after the header.
 * The reader memory-maps the file (weights are never copied) and checks: header length within the file and under a
 * hard maximum, valid JSON, known dtypes, non-negative integral shapes, overflow-checked byte sizes equal to
 * end - begin, every range inside the file, no overlapping ranges, no duplicate names.
 */
#ifndef SD3Q_IO_SAFETENSORS_H
#define SD3Q_IO_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"

#define ST_MAX_DIMS       8
#define ST_MAX_HEADER     (100u * 1024u * 1024u)  // the reference implementation's limit
#define ST_MAX_TENSORS    (1 << 20)

struct st_tensor {
    char *          name;                // owned by the file
    enum dtype      type;
    int             ndim;                // 0 for a scalar
    int64_t         shape[ST_MAX_DIMS];
    int64_t         numel;
    uint64_t        begin, end;          // byte range relative to the data section
    const uint8_t * data;                // inside the mapping; any alignment
};

struct st_meta {
    char * key;
    char * value;
};

struct st_file {
    char *             path;       // owned copy, used in messages
    uint8_t *          map;        // whole file
    size_t             size;
    int                mapped;     // 1: munmap on close
    size_t             data_start; // 8 + header length
    int                n;          // tensors, sorted by name
    struct st_tensor * t;
    int                n_meta;
    struct st_meta *   meta;
};

// Opens and validates `path`, mapping it read-only. On failure the message names the file.
enum sd3q_status st_open(const char * path, struct st_file * f, struct sd3q_errbuf * e);

// Validates an in-memory image (not copied; must outlive f). `label` names it in messages.
enum sd3q_status st_parse(const uint8_t * buf, size_t size, const char * label, struct st_file * f, struct sd3q_errbuf * e);

// Releases the mapping and the index.
void st_close(struct st_file * f);

// Finds a tensor by exact name (binary search); NULL when absent.
const struct st_tensor * st_find(const struct st_file * f, const char * name);

// Finds a metadata value; NULL when absent.
const char * st_meta_get(const struct st_file * f, const char * key);

// A tensor to write.
struct st_wtensor {
    const char *    name;
    enum dtype      type;
    int             ndim;
    const int64_t * shape;
    const void *    data;
};

// Writes n tensors (and optional metadata pairs meta[0..2*n_meta)) to `path` atomically: a temporary file in the same
// folder is written, flushed and renamed over `path`; on any failure nothing is left behind.
enum sd3q_status st_write(const char * path, const struct st_wtensor * t, int n, const char * const * meta, int n_meta,
                          struct sd3q_errbuf * e);

// Reads a whole F32 (or F16/BF16, converted) tensor into a new malloc'd float array after checking its rank/shape
// against `want` (entries < 0 are free and are filled in). Returns NULL with a message on mismatch.
float * st_read_f32(const struct st_file * f, const char * name, int ndim, int64_t * want, struct sd3q_errbuf * e);

#endif
