/*
 * commands.h — the sd3q subcommands and what they share (model options, error printing).
 * Each cmd_* returns the process exit code: 0 success, 1 failure (message printed), 2 usage error.
 */
#ifndef SD3Q_TOOLS_COMMANDS_H
#define SD3Q_TOOLS_COMMANDS_H

#include "args.h"
#include "sd3q.h"

int cmd_inspect(int argc, char ** argv);
int cmd_mmdit(int argc, char ** argv);
int cmd_schedule(int argc, char ** argv);
int cmd_generate(int argc, char ** argv);
int cmd_calibrate(int argc, char ** argv);
int cmd_collect(int argc, char ** argv);
int cmd_quant_eval(int argc, char ** argv);
int cmd_adherence(int argc, char ** argv);
int cmd_analyze(int argc, char ** argv);
int cmd_plot(int argc, char ** argv);
int cmd_tokenize(int argc, char ** argv);
int cmd_encode_prompt(int argc, char ** argv);
int cmd_vae_decode(int argc, char ** argv);
int cmd_vae_encode(int argc, char ** argv);

// Options every model-loading command takes.
struct model_opts {
    const char * model, * mmdit, * clip_l, * clip_g, * t5xxl, * vae, * tokenizer_dir, * device;
    int          allow_extra, low_memory;
    int64_t      threads;
};

#define MODEL_OPTS_N 11

// Fills opts[0..MODEL_OPTS_N) with the model options bound to mo (defaults set).
void model_opts_add(struct model_opts * mo, struct opt * opts);

// Loads the model the options name; prints the error and returns NULL on failure.
struct sd3q_model * model_opts_load(const struct model_opts * mo, const char * cmd);

// Session parameters from the options (device, threads).
int model_opts_session(const struct model_opts * mo, const char * cmd, struct sd3q_session_params * sp);

#endif
