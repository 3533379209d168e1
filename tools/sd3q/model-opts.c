/*
 * model-opts.c — the options shared by every command that loads a model.
 */
#include <stdio.h>
#include <string.h>

#include "commands.h"

void model_opts_add(struct model_opts * mo, struct opt * o) {
    memset(mo, 0, sizeof *mo);
    mo->device = "auto";
    struct opt t[MODEL_OPTS_N] = {
        {"--model", OPT_STR, &mo->model, "checkpoint: a single .safetensors file or a diffusers folder", 0, 0, 0, 0},
        {"--mmdit", OPT_STR, &mo->mmdit, "MMDiT weights from a separate file or folder (overrides --model)", 0, 0, 0, 0},
        {"--clip-l", OPT_STR, &mo->clip_l, "CLIP-L weights from a separate file", 0, 0, 0, 0},
        {"--clip-g", OPT_STR, &mo->clip_g, "CLIP-G weights from a separate file", 0, 0, 0, 0},
        {"--t5xxl", OPT_STR, &mo->t5xxl, "T5-XXL weights from a separate file", 0, 0, 0, 0},
        {"--vae", OPT_STR, &mo->vae, "VAE weights from a separate file", 0, 0, 0, 0},
        {"--tokenizer-dir", OPT_STR, &mo->tokenizer_dir, "tokenizer vocabularies for single-file checkpoints", 0, 0, 0, 0},
        {"--allow-extra", OPT_FLAG, &mo->allow_extra, "warn about unknown tensors instead of failing", 0, 0, 0, 0},
        {"--threads", OPT_INT, &mo->threads, "CPU threads (default: all)", 0, 1024, 0, 0},
        {"--device", OPT_STR, &mo->device, "cpu, cuda or auto (default)", 0, 0, 0, 0},
        {"--low-memory", OPT_FLAG, &mo->low_memory, "(cuda) keep only the running component's weights on the GPU", 0, 0, 0, 0},
    };
    memcpy(o, t, sizeof t);
}

struct sd3q_model * model_opts_load(const struct model_opts * mo, const char * cmd) {
    if (!mo->model && !mo->mmdit && !mo->clip_l && !mo->clip_g && !mo->t5xxl && !mo->vae) {
        fprintf(stderr, "sd3q %s: --model (or a split file option) is required\n", cmd);
        return NULL;
    }
    struct sd3q_model_params p = sd3q_model_default_params();
    p.path          = mo->model;
    p.mmdit_path    = mo->mmdit;
    p.clip_l_path   = mo->clip_l;
    p.clip_g_path   = mo->clip_g;
    p.t5xxl_path    = mo->t5xxl;
    p.vae_path      = mo->vae;
    p.tokenizer_dir = mo->tokenizer_dir;
    p.allow_extra   = mo->allow_extra;
    struct sd3q_model * m = NULL;
    char err[1024];
    enum sd3q_status st = sd3q_model_load(&p, &m, err, sizeof err);
    if (st != SD3Q_OK) {
        fprintf(stderr, "sd3q %s: cannot load the model: %s\n  (%s)\n", cmd, err, sd3q_status_str(st));
        return NULL;
    }
    return m;
}

int model_opts_session(const struct model_opts * mo, const char * cmd, struct sd3q_session_params * sp) {
    *sp = sd3q_session_default_params();
    sp->n_threads  = (int32_t)mo->threads;
    sp->low_memory = mo->low_memory;
    if (strcmp(mo->device, "auto") == 0) sp->device = SD3Q_DEVICE_AUTO;
    else if (strcmp(mo->device, "cpu") == 0) sp->device = SD3Q_DEVICE_CPU;
    else if (strcmp(mo->device, "cuda") == 0) sp->device = SD3Q_DEVICE_CUDA;
    else {
        fprintf(stderr, "sd3q %s: --device must be cpu, cuda or auto (got '%s')\n", cmd, mo->device);
        return 2;
    }
    return 0;
}
