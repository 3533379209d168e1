/*
 * args.c — see args.h.
 */
#include "args.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void args_help(const char * cmd, const char * summary, const struct opt * opts, int nopts, const char * pos_help) {
    printf("usage: sd3q %s%s%s [options]\n\n%s\n\noptions:\n", cmd, pos_help ? " " : "", pos_help ? pos_help : "", summary);
    for (int i = 0; i < nopts; i++) {
        const char * arg = opts[i].type == OPT_STR ? " TEXT" : opts[i].type == OPT_INT ? " N" : opts[i].type == OPT_FLOAT ? " X" : "";
        char left[64];
        snprintf(left, sizeof left, "%s%s", opts[i].name, arg);
        printf("  %-26s %s%s\n", left, opts[i].help, opts[i].required ? " (required)" : "");
    }
    printf("  %-26s %s\n", "--help", "show this help");
}

// Parses a whole-number option value in [lo, hi].
static int parse_int(const char * s, double lo, double hi, int64_t * out) {
    char * end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || (double)v < lo || (double)v > hi) return -1;
    *out = v;
    return 0;
}

// Parses a finite number in [lo, hi].
static int parse_float(const char * s, double lo, double hi, double * out) {
    char * end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v) || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

int args_parse(int argc, char ** argv, int first, const char * cmd, const char * summary, struct opt * opts, int nopts,
               const char ** pos, int max_pos, int * npos, const char * pos_help) {
    if (npos) *npos = 0;
    for (int i = first; i < argc; i++) {
        const char * a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            args_help(cmd, summary, opts, nopts, pos_help);
            return 1;
        }
        if (strncmp(a, "--", 2) != 0 || strcmp(a, "--") == 0) {
            if (!npos || *npos >= max_pos) {
                fprintf(stderr, "sd3q %s: unexpected argument '%s' (see sd3q %s --help)\n", cmd, a, cmd);
                return 2;
            }
            pos[(*npos)++] = a;
            continue;
        }
        struct opt * o = NULL;
        for (int k = 0; k < nopts && !o; k++)
            if (strcmp(opts[k].name, a) == 0) o = &opts[k];
        if (!o) {
            fprintf(stderr, "sd3q %s: unknown option '%s' (see sd3q %s --help)\n", cmd, a, cmd);
            return 2;
        }
        o->seen = 1;
        if (o->type == OPT_FLAG) {
            *(int *)o->dst = 1;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "sd3q %s: option %s needs a value\n", cmd, a);
            return 2;
        }
        const char * v = argv[++i];
        if (o->type == OPT_STR) {
            *(const char **)o->dst = v;
        } else if (o->type == OPT_INT) {
            if (parse_int(v, o->lo, o->hi, (int64_t *)o->dst) != 0) {
                fprintf(stderr, "sd3q %s: %s expects a whole number in [%.0f, %.0f], got '%s'\n", cmd, a, o->lo, o->hi, v);
                return 2;
            }
        } else if (parse_float(v, o->lo, o->hi, (double *)o->dst) != 0) {
            fprintf(stderr, "sd3q %s: %s expects a number in [%g, %g], got '%s'\n", cmd, a, o->lo, o->hi, v);
            return 2;
        }
    }
    for (int k = 0; k < nopts; k++)
        if (opts[k].required && !opts[k].seen) {
            fprintf(stderr, "sd3q %s: %s is required (see sd3q %s --help)\n", cmd, opts[k].name, cmd);
            return 2;
        }
    return 0;
}
