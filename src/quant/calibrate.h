/*
 * calibrate.h — calibration data for activation statistics (`sd3q calibrate`); format in calibfile.h.
 */
#ifndef SD3Q_QUANT_CALIBRATE_H
#define SD3Q_QUANT_CALIBRATE_H

#include <stdint.h>

#include "core/status.h"
#include "sd3q.h"

struct calibrate_params {
    const char *     prompts_file;  // .txt (one per line), .tsv (seed<TAB>prompt) or .csv (a "prompt" column)
    const char *     out_dir;
    const char *     model_label;   // recorded in the manifest (the --model path)
    const char *     negative;      // negative prompt ("" by default)
    int              num_images, steps, size, t5_len;
    double           cfg, shift;
    int64_t          seed;          // image i uses seed + i unless the prompt file gives one
    int              resume, force;
    sd3q_progress_fn progress;      // called after each completed image (done, total)
    void *           progress_ud;
};

// Runs (or resumes) a calibration; the session must be planned for batch 2, latent size/8 and 77 + t5_len tokens.
enum sd3q_status quant_calibrate(struct sd3q_session * s, const struct calibrate_params * p, struct sd3q_errbuf * e);

#endif
