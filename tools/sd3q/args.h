/*
 * args.h — command-line option parsing for the sd3q tool: a table of typed options per command, range-checked
 * numbers, unknown options rejected with a message, `--help` generated from the table.
 */
#ifndef SD3Q_TOOLS_ARGS_H
#define SD3Q_TOOLS_ARGS_H

#include <stdint.h>

enum opt_type { OPT_STR, OPT_INT, OPT_FLOAT, OPT_FLAG };

struct opt {
    const char *  name;      // "--steps"
    enum opt_type type;
    void *        dst;       // const char **, int64_t *, double *, int *
    const char *  help;
    double        lo, hi;    // inclusive range for numbers
    int           required;
    int           seen;      // set by the parser
};

// Parses argv[first..argc) against opts. Positional arguments go to pos[0..*npos) (at most max_pos). Returns 0 on
// success, 1 after printing help (--help), 2 after printing an error to stderr.
int args_parse(int argc, char ** argv, int first, const char * cmd, const char * summary, struct opt * opts, int nopts,
               const char ** pos, int max_pos, int * npos, const char * pos_help);

// Prints the help of a command.
void args_help(const char * cmd, const char * summary, const struct opt * opts, int nopts, const char * pos_help);

#endif
