/*
 * evalq.h — measuring an activation-quantization scheme: generate the same images (same prompts, seeds, settings)
 * with full-precision activations and with fake-quantized Linear inputs, and compare (PSNR, SSIM, prompt adherence).
 *
 * Schemes: a static config (per-timestep-group entries looked up by the step's σ; a config analysed with one group is
 * "one static scale per layer"), and dynamic per-token quantization (each token row gets its own range at run time:
 * symmetric absmax for ordinary inputs, asymmetric min/max for post-GELU inputs). Weights stay in full precision.
 */
#ifndef SD3Q_QUANT_EVALQ_H
#define SD3Q_QUANT_EVALQ_H

#include <stdint.h>

#include "core/status.h"
#include "quant/actconfig.h"
#include "sd3q.h"

enum evalq_kind { EVALQ_FP = 0, EVALQ_STATIC = 1, EVALQ_DYNAMIC = 2 };

struct evalq_scheme {
    const char *          name;
    enum evalq_kind       kind;
    const struct actcfg * cfg;     // EVALQ_STATIC
    int                   bits;    // EVALQ_DYNAMIC (8)
    // results, averaged over images
    double                psnr, ssim, adherence;
    int                   n_inf;   // images identical to full precision (PSNR = ∞, excluded from the mean)
};

struct evalq_params {
    const char * const * prompts;  // n prompts (captions)
    int                  n;
    int                  steps, width, height, t5_len;
    double               cfg, shift;
    int64_t              seed;     // image i uses seed + i
    const char *         out_dir;  // PNGs per scheme (NULL: none)
    // adherence of an image to its caption (1/0), or NULL when the domain has no checker
    int (*adherent)(const uint8_t * rgb, int w, int h, const char * caption);
    sd3q_progress_fn     progress;
    void *               progress_ud;
};

// Runs every scheme (schemes[0] must be EVALQ_FP: the reference) and fills the results.
enum sd3q_status quant_evaluate(struct sd3q_session * s, const struct evalq_params * p, struct evalq_scheme * schemes, int n_schemes,
                                struct sd3q_errbuf * e);

#endif
