/*
 * checkpoint.h — finding the components of an SD3 checkpoint in any of its layouts.
 *
 * Layouts: (a) one original single file (`model.diffusion_model.*`, `text_encoders.{clip_l,clip_g,t5xxl}.transformer.*`,
 * `first_stage_model.*`, any subset); (b) a diffusers folder (`model_index.json`, `transformer/`, `vae/`,
 * `text_encoder{,_2,_3}/`, `tokenizer{,_2,_3}/`, shards through `*.safetensors.index.json`); (c) split files given
 * per component, which override (a)/(b). The result is, per component, the list of its tensors with the component
 * prefix stripped and the naming scheme (original or diffusers) it uses; model code maps names and validates shapes.
 */
#ifndef SD3Q_IO_CHECKPOINT_H
#define SD3Q_IO_CHECKPOINT_H

#include "core/status.h"
#include "io/safetensors.h"
#include "sd3q.h"

enum naming {
    NAMING_ORIGINAL  = 0,  // Stability's key names (MMDiT, VAE); Hugging Face names for CLIP/T5
    NAMING_DIFFUSERS = 1,  // diffusers' key names (MMDiT, VAE)
};

struct comp_tensor {
    const char *             name;  // prefix stripped; points into the st_file's name
    const struct st_tensor * t;
};

struct ckpt_component {
    int                  present;
    enum naming          naming;
    char *               origin;       // where it came from, for messages and `sd3q inspect`
    char *               config_path;  // config.json next to the weights, or NULL
    int                  n;            // tensors, sorted by name
    struct comp_tensor * t;
};

struct ckpt {
    int                   n_files;
    struct st_file **     files;
    struct ckpt_component comp[SD3Q_COMP_COUNT];
    char *                root;           // the diffusers folder, or NULL
    char *                tokenizer[3];   // tokenizer folders for CLIP-L, CLIP-G, T5 (diffusers layout), or NULL
    char *                scheduler;      // scheduler/scheduler_config.json of a diffusers folder, or NULL
    double                shift;          // its flow-matching shift (SD3Q_DEFAULT_SHIFT without a scheduler config)
    int                   n_unknown;      // tensors of a single file (or a prefixed split file) that belong to no component
    char *                first_unknown;  // the first such name
    char *                unknown_file;   // the file it is in
};

// Opens every file the parameters name and sorts their tensors into components.
enum sd3q_status ckpt_open(const struct sd3q_model_params * p, struct ckpt * c, struct sd3q_errbuf * e);

// Unmaps the files and frees the index.
void ckpt_close(struct ckpt * c);

// Finds a tensor of a component by its stripped name; NULL when absent.
const struct st_tensor * comp_find(const struct ckpt_component * c, const char * name);

// Component names for messages: "mmdit", "clip_l", "clip_g", "t5xxl", "vae".
const char * comp_name(enum sd3q_component c);

#endif
