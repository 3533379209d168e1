/*
 * collect.h — activation statistics from stored calibration latents (`sd3q collect-activations`).
 */
#ifndef SD3Q_QUANT_COLLECT_H
#define SD3Q_QUANT_COLLECT_H

#include "core/status.h"
#include "model/mmdit.h"
#include "sd3q.h"

struct collect_params {
    const char *     calib_dir;   // written by sd3q calibrate
    const char *     out_dir;     // statistics folder (created)
    int              num_images;  // evenly spaced images to replay (0: all)
    int              stride;      // every stride-th denoising step (1: all)
    int              force;       // overwrite existing statistics
    sd3q_progress_fn progress;    // called after each forward pass
    void *           progress_ud;
};

// The accumulators of one replayed step: an MMDiT hook that adds every Linear input to its layer's statistics.
struct act_collector;
struct act_collector * act_collector_new(void);
void act_collector_free(struct act_collector * c);
struct mmdit_hook act_collector_hook(struct act_collector * c);

// Replays and collects; the session must be planned for batch 2 at the calibration's latent size and context length.
enum sd3q_status quant_collect(struct sd3q_session * s, const struct collect_params * p, struct sd3q_errbuf * e);

#endif
