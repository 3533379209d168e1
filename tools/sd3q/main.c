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
    {"generate", cmd_generate, "text to image: prompt in, PNG out (SD3 pipeline)"},
    {"inspect", cmd_inspect, "list what a checkpoint holds: components, hyper-parameters, tensors"},
    {"tokenize", cmd_tokenize, "print a prompt's token ids (CLIP-L, CLIP-G or T5) as JSON"},
    {"encode-prompt", cmd_encode_prompt, "encode a prompt (and a negative prompt) into SD3's context and pooled vectors"},
    {"mmdit", cmd_mmdit, "run one MMDiT forward pass on tensors from a safetensors file"},
    {"schedule", cmd_schedule, "print the flow-matching sigma schedule as JSON"},
    {"vae-decode", cmd_vae_decode, "decode VAE latents (safetensors) into an image (.png) or a tensor (.safetensors)"},
    {"vae-encode", cmd_vae_encode, "encode an image (.png or .safetensors) into VAE latents"},
    {"calibrate", cmd_calibrate, "calibration data: every step's latent for a set of prompts (resumable)"},
    {"collect-activations", cmd_collect, "statistics of every quantizable Linear's input, replayed from calibration latents"},
    {"analyze", cmd_analyze, "the W4A8 activation config (timestep groups, clip ranges, shifts) from statistics"},
    {"plot", cmd_plot, "figures of activation statistics (PNG, drawn by gnuplot) and an index.html showing them"},
    {"quant-eval", cmd_quant_eval, "PSNR, SSIM and prompt adherence of fake-quantized activations against full precision"},
    {"adherence", cmd_adherence, "prompt adherence of images in the tiny model's coloured-shapes domain"},
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
