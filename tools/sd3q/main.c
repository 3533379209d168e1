/*
 * main.c — the sd3q command-line tool: dispatches to subcommands (tools/sd3q/cmd-*.c).
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"

struct command {
    const char * name;
    int (*fn)(int, char **);
    const char * summary;
};

static const struct command commands[] = {
    {"inspect", cmd_inspect, "list what a checkpoint holds: components, hyper-parameters, tensors"},
    {"mmdit", cmd_mmdit, "run one MMDiT forward pass on tensors from a safetensors file"},
    {"schedule", cmd_schedule, "print the flow-matching sigma schedule as JSON"},
};

static void usage(FILE * f) {
    fprintf(f, "sd3q %s — Stable Diffusion 3 in C, with W4A8 quantization\n\nusage: sd3q COMMAND [options]   (sd3q COMMAND --help for details)\n\ncommands:\n",
            sd3q_version());
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++) fprintf(f, "  %-20s %s\n", commands[i].name, commands[i].summary);
}

int main(int argc, char ** argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("sd3q %s\n", sd3q_version());
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0) return commands[i].fn(argc, argv);
    fprintf(stderr, "sd3q: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
