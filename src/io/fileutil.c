/*
 * fileutil.c — see fileutil.h.
 */
#include "io/fileutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum sd3q_status atomic_file_open(struct atomic_file * af, const char * path, struct sd3q_errbuf * e) {
    memset(af, 0, sizeof(*af));
    size_t n = strlen(path);
    af->path = strdup(path);
    af->tmp  = malloc(n + 16);
    if (!af->path || !af->tmp) {
        atomic_file_abort(af);
        return err_set(e, SD3Q_ERR_OOM, "out of memory");
    }
    snprintf(af->tmp, n + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(af->tmp);
    if (fd < 0) {
        enum sd3q_status st = err_set(e, SD3Q_ERR_IO, "%s: cannot create a file there: %s", path, strerror(errno));
        free(af->tmp);
        af->tmp = NULL;
        atomic_file_abort(af);
        return st;
    }
    fchmod(fd, 0644);
    af->fp = fdopen(fd, "wb");
    if (!af->fp) {
        close(fd);
        atomic_file_abort(af);
        return err_set(e, SD3Q_ERR_IO, "%s: cannot open for writing: %s", path, strerror(errno));
    }
    return SD3Q_OK;
}

enum sd3q_status atomic_file_write(struct atomic_file * af, const void * p, size_t n, struct sd3q_errbuf * e) {
    if (n == 0) return SD3Q_OK;
    if (fwrite(p, 1, n, af->fp) != n)
        return err_set(e, SD3Q_ERR_IO, "%s: write failed: %s", af->path, strerror(errno ? errno : EIO));
    return SD3Q_OK;
}

enum sd3q_status atomic_file_commit(struct atomic_file * af, struct sd3q_errbuf * e) {
    int bad = fflush(af->fp) != 0 || fsync(fileno(af->fp)) != 0;
    int err = errno;
    if (fclose(af->fp) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    af->fp = NULL;
    if (bad) return err_set(e, SD3Q_ERR_IO, "%s: write failed: %s", af->path, strerror(err ? err : EIO));
    if (rename(af->tmp, af->path) != 0) return err_set(e, SD3Q_ERR_IO, "%s: rename failed: %s", af->path, strerror(errno));
    free(af->tmp);
    af->tmp = NULL;
    return SD3Q_OK;
}

void atomic_file_abort(struct atomic_file * af) {
    if (af->fp) fclose(af->fp);
    if (af->tmp) unlink(af->tmp);
    free(af->tmp);
    free(af->path);
    memset(af, 0, sizeof(*af));
}

enum sd3q_status write_file_atomic(const char * path, const void * data, size_t n, struct sd3q_errbuf * e) {
    struct atomic_file af;
    enum sd3q_status st = atomic_file_open(&af, path, e);
    if (st == SD3Q_OK) st = atomic_file_write(&af, data, n, e);
    if (st == SD3Q_OK) st = atomic_file_commit(&af, e);
    atomic_file_abort(&af);
    return st;
}

enum sd3q_status read_file(const char * path, size_t max_bytes, char ** out, size_t * n, struct sd3q_errbuf * e) {
    *out = NULL;
    FILE * fp = fopen(path, "rb");
    if (!fp) return err_set(e, errno == ENOENT ? SD3Q_ERR_MISSING : SD3Q_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fileno(fp), &sb) != 0 || !S_ISREG(sb.st_mode)) {
        fclose(fp);
        return err_set(e, SD3Q_ERR_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)sb.st_size > max_bytes) {
        fclose(fp);
        return err_set(e, SD3Q_ERR_FORMAT, "%s: %lld bytes, more than the %zu allowed for this kind of file", path,
                       (long long)sb.st_size, max_bytes);
    }
    size_t sz = (size_t)sb.st_size;
    char * buf = malloc(sz + 1);
    if (!buf) {
        fclose(fp);
        return err_set(e, SD3Q_ERR_OOM, "%s: out of memory", path);
    }
    size_t got = fread(buf, 1, sz, fp);
    fclose(fp);
    if (got != sz) {
        free(buf);
        return err_set(e, SD3Q_ERR_IO, "%s: short read", path);
    }
    buf[sz] = '\0';
    *out = buf;
    if (n) *n = sz;
    return SD3Q_OK;
}

char * path_join(const char * a, const char * b) {
    size_t la = strlen(a), lb = strlen(b);
    char * p = malloc(la + lb + 2);
    if (!p) return NULL;
    memcpy(p, a, la);
    size_t k = la;
    if (la > 0 && a[la - 1] != '/') p[k++] = '/';
    memcpy(p + k, b, lb + 1);
    return p;
}

int path_is_dir(const char * path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

int path_is_file(const char * path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

void shape_str(const int64_t * shape, int ndim, char * buf, size_t size) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, k < size ? size - k : 0, "[");
    for (int i = 0; i < ndim; i++)
        k += (size_t)snprintf(buf + k, k < size ? size - k : 0, i ? ", %lld" : "%lld", (long long)shape[i]);
    snprintf(buf + (k < size ? k : size - 1), k < size ? size - k : 1, "]");
}

double proc_status_mib(const char * field) {
    FILE * f = fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    double v = -1;
    size_t fl = strlen(field);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, field, fl) == 0 && line[fl] == ':') {
            v = atof(line + fl + 1) / 1024.0;
            break;
        }
    fclose(f);
    return v;
}
