/*
 * fileutil.h — small file helpers shared by the readers and writers: atomic writes (temporary file + rename), whole-
 * file reads with a size cap, path joins and shape formatting for messages.
 */
#ifndef SD3Q_IO_FILEUTIL_H
#define SD3Q_IO_FILEUTIL_H

#include <stdint.h>
#include <stdio.h>

#include "core/status.h"

// A file being written: data goes to `tmp` (same folder as `path`) and appears at `path` only on commit.
struct atomic_file {
    FILE * fp;
    char * path;
    char * tmp;
};

// Creates the temporary file next to `path`.
enum sd3q_status atomic_file_open(struct atomic_file * af, const char * path, struct sd3q_errbuf * e);

// Appends n bytes; a short write (disk full) is an error naming the file.
enum sd3q_status atomic_file_write(struct atomic_file * af, const void * p, size_t n, struct sd3q_errbuf * e);

// Flushes, syncs, closes and renames over `path`.
enum sd3q_status atomic_file_commit(struct atomic_file * af, struct sd3q_errbuf * e);

// Removes the temporary file if it was not committed, and frees (safe to call after commit or on a zeroed struct).
void atomic_file_abort(struct atomic_file * af);

// Writes a whole buffer to `path` atomically.
enum sd3q_status write_file_atomic(const char * path, const void * data, size_t n, struct sd3q_errbuf * e);

// Reads a whole file (at most max_bytes) into a NUL-terminated malloc'd buffer; *n gets the length.
enum sd3q_status read_file(const char * path, size_t max_bytes, char ** out, size_t * n, struct sd3q_errbuf * e);

// "a/b" from "a" and "b" into a malloc'd string (NULL on OOM).
char * path_join(const char * a, const char * b);

// 1 if `path` is an existing directory / regular file.
int path_is_dir(const char * path);
int path_is_file(const char * path);

// A "Name:   123 kB" field of /proc/self/status ("VmRSS", "RssAnon", "RssFile", "VmHWM") in MiB; -1 when unavailable.
double proc_status_mib(const char * field);

// Formats a shape as "[2, 16, 64, 64]".
void shape_str(const int64_t * shape, int ndim, char * buf, size_t size);

#endif
