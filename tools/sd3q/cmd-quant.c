/*
 * cmd-quant.c — the activation track of W4A8 quantization: `sd3q collect-activations` (statistics of every
 * quantizable Linear's input, replayed from calibration latents) and `sd3q analyze` (the activation config: HTG
 * timestep groups, clip ranges, steps, zero points, post-GELU shifts, outlier divisors; optionally multi-tier).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "model/session.h"
#include "progress.h"
#include "quant/actconfig.h"
#include "quant/calibfile.h"
#include "quant/calibrate.h"
#include "quant/collect.h"
#include "quant/evalq.h"
#include "quant/adherence.h"
#include "io/fileutil.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

int cmd_calibrate(int argc, char ** argv) {
    struct model_opts mo;
    const char * prompts = NULL, * out = NULL, * negative = "";
    int64_t num = 10, steps = 30, size = 512, seed = 42, t5 = 256;
    double cfg = 4.0, shift = 0;  // 0: the model's (sd3q_model_shift)
    int resume = 0, force = 0;
    struct opt opts[MODEL_OPTS_N + 12];
    model_opts_add(&mo, opts);
    struct opt own[] = {
        {"--prompts", OPT_STR, &prompts, "prompt file: .txt (one per line), .tsv (seed<TAB>prompt) or .csv (a prompt column)", 0, 0, 1, 0},
        {"--num-images", OPT_INT, &num, "images to generate (default 10; prompts are reused in order)", 1, 1e6, 0, 0},
        {"--steps", OPT_INT, &steps, "denoising steps (default 30)", 1, 1000, 0, 0},
        {"--cfg", OPT_FLOAT, &cfg, "guidance scale (default 4.0)", 0, 100, 0, 0},
        {"--shift", OPT_FLOAT, &shift, "flow-matching time shift (default: the model's scheduler config, else 3.0)", SD3Q_MIN_SHIFT, SD3Q_MAX_SHIFT, 0, 0},
        {"--size", OPT_INT, &size, "image side in pixels, a multiple of 16 (default 512)", 16, 4096, 0, 0},
        {"--seed", OPT_INT, &seed, "base seed: image i uses seed + i unless the prompt file gives one (default 42)", 0, 9007199254740991.0, 0, 0},
        {"--t5-max-length", OPT_INT, &t5, "T5 tokens (default 256)", 1, 4096, 0, 0},
        {"--negative-prompt", OPT_STR, &negative, "negative prompt (default \"\")", 0, 0, 0, 0},
        {"--out", OPT_STR, &out, "calibration folder", 0, 0, 1, 0},
        {"--resume", OPT_FLAG, &resume, "continue an interrupted calibration (same settings)", 0, 0, 0, 0},
        {"--force", OPT_FLAG, &force, "start over in a folder that holds a calibration", 0, 0, 0, 0},
    };
    memcpy(opts + MODEL_OPTS_N, own, sizeof own);
    int r = args_parse(argc, argv, 2, "calibrate",
                       "Run the full-precision pipeline on calibration prompts and keep, per image, the latent entering every\n"
                       "denoising step (with σ and timestep), the final latent and the PNG; prompt embeddings once per prompt.\n"
                       "manifest.json is updated after every image, so an interrupted run resumes with --resume.",
                       opts, MODEL_OPTS_N + 12, NULL, 0, NULL, NULL);
    if (r) return r == 1 ? 0 : 2;
    if (size % 16) {
        fprintf(stderr, "sd3q calibrate: --size must be a multiple of 16 (got %lld)\n", (long long)size);
        return 2;
    }
    if (resume && force) {
        fprintf(stderr, "sd3q calibrate: --resume and --force exclude each other\n");
        return 2;
    }
    int rc = 1;
    struct sd3q_model * m = model_opts_load(&mo, "calibrate");
    struct sd3q_session * s = NULL;
    if (!m) return 1;
    if (shift == 0) shift = sd3q_model_shift(m);
    struct sd3q_session_params sp;
    if ((rc = model_opts_session(&mo, "calibrate", &sp)) != 0) goto done;
    rc = 1;
    sp.max_batch = 2, sp.max_latent_h = (int)size / 8, sp.max_latent_w = (int)size / 8, sp.max_context = 77 + (int)t5;
    char err[1024];
    if (sd3q_session_init(m, &sp, &s, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "sd3q calibrate: %s\n", err);
        goto done;
    }
    struct progress pr;
    progress_begin(&pr, "calibrate", (int)num, 0, 0);
    pr.unit = "images";
    struct calibrate_params cp = {prompts, out, mo.model ? mo.model : mo.mmdit, negative, (int)num, (int)steps, (int)size, (int)t5,
                                  cfg, shift, seed, resume, force, progress_callback, &pr};
    struct sd3q_errbuf e;
    double t0 = now();
    enum sd3q_status st = quant_calibrate(s, &cp, &e);
    progress_end(&pr);
    if (st != SD3Q_OK) {
        fprintf(stderr, "sd3q calibrate: %s\n", e.msg);
        goto done;
    }
    double dt = now() - t0;
    fprintf(stderr, "sd3q calibrate: %lld images in %s (%.1f s, %.2f images/min)\n", (long long)num, out, dt, dt > 0 ? 60.0 * (double)num / dt : 0);
    rc = 0;
done:
    sd3q_session_free(s);
    sd3q_model_free(m);
    return rc;
}

int cmd_collect(int argc, char ** argv) {
    struct model_opts mo;
    const char * calib = NULL, * out = NULL;
    int64_t num_images = 0, stride = 1;
    int force = 0;
    struct opt opts[MODEL_OPTS_N + 5];
    model_opts_add(&mo, opts);
    struct opt own[] = {
        {"--calib", OPT_STR, &calib, "calibration folder written by sd3q calibrate", 0, 0, 1, 0},
        {"--num-images", OPT_INT, &num_images, "images to replay, evenly spaced (default: all)", 0, 1e7, 0, 0},
        {"--steps-stride", OPT_INT, &stride, "replay every K-th denoising step (default 1)", 1, 10000, 0, 0},
        {"--out", OPT_STR, &out, "statistics folder (default CALIB/activations)", 0, 0, 0, 0},
        {"--force", OPT_FLAG, &force, "overwrite existing statistics", 0, 0, 0, 0},
    };
    memcpy(opts + MODEL_OPTS_N, own, sizeof own);
    int r = args_parse(argc, argv, 2, "collect-activations",
                       "Replay stored calibration latents through the MMDiT (CFG batch of 2, as at inference) and record, per\n"
                       "denoising step (keyed by σ), statistics of the input of every quantizable Linear (docs/QUANT.md).\n"
                       "The model defaults to the one the calibration was made with.",
                       opts, MODEL_OPTS_N + 5, NULL, 0, NULL, NULL);
    if (r) return r == 1 ? 0 : 2;
    struct calib_manifest man;
    struct sd3q_errbuf e;
    if (calib_read(calib, &man, &e) != SD3Q_OK) {
        fprintf(stderr, "sd3q collect-activations: %s\n", e.msg);
        return 1;
    }
    char outbuf[4096];
    if (!out) {
        snprintf(outbuf, sizeof outbuf, "%s/activations", calib);
        out = outbuf;
    }
    if (!mo.model && !mo.mmdit) mo.model = man.set.model;
    int rc = 1;
    struct sd3q_model * m = model_opts_load(&mo, "collect-activations");
    struct sd3q_session * s = NULL;
    if (!m) goto done;
    struct sd3q_session_params sp;
    if ((rc = model_opts_session(&mo, "collect-activations", &sp)) != 0) goto done;
    rc = 1;
    sp.device = SD3Q_DEVICE_CPU;  // the statistics hook reads activations in host memory
    sp.max_batch = 2, sp.max_latent_h = man.set.height / 8, sp.max_latent_w = man.set.width / 8;
    sp.max_context = 77 + man.set.t5_max_length;
    char err[1024];
    if (sd3q_session_init(m, &sp, &s, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "sd3q collect-activations: %s\n", err);
        goto done;
    }
    struct progress pr;
    progress_begin(&pr, "collect", 0, 0, 0);
    pr.unit = "passes";
    struct collect_params cp = {calib, out, (int)num_images, (int)stride, force, progress_callback, &pr};
    double t0 = now();
    enum sd3q_status st = quant_collect(s, &cp, &e);
    progress_end(&pr);
    if (st != SD3Q_OK) {
        fprintf(stderr, "sd3q collect-activations: %s\n", e.msg);
        goto done;
    }
    fprintf(stderr, "sd3q collect-activations: statistics in %s (%.1f s)\n", out, now() - t0);
    rc = 0;
done:
    sd3q_session_free(s);
    sd3q_model_free(m);
    calib_free(&man);
    return rc;
}

int cmd_analyze(int argc, char ** argv) {
    const char * stats = NULL, * out = NULL, * clip = "absmax";
    int64_t groups = 0;
    int multitier = 0;
    double a4 = 6.0, a6 = 10.0, a4g = 5.0, a6g = 8.0;
    struct opt opts[] = {
        {"--stats", OPT_STR, &stats, "statistics folder written by collect-activations", 0, 0, 1, 0},
        {"--output", OPT_STR, &out, "config to write (default STATS/quant_config.json; multitier: quant_config_multitier.json)", 0, 0, 0, 0},
        {"--clip", OPT_STR, &clip, "clipping statistic: absmax (default), p999 or p9999 (percentiles of |x|)", 0, 0, 0, 0},
        {"--time-groups", OPT_INT, &groups, "timestep groups (HTG; default max(1, steps/10))", 1, ACTCFG_MAX_GROUPS, 0, 0},
        {"--multitier", OPT_FLAG, &multitier, "assign A4/A6/A8 per layer and group by the thresholds below", 0, 0, 0, 0},
        {"--a4-threshold", OPT_FLOAT, &a4, "multitier: A4 when the clip magnitude is below this (default 6)", 0, 1e9, 0, 0},
        {"--a6-threshold", OPT_FLOAT, &a6, "multitier: A6 below this, else A8 (default 10)", 0, 1e9, 0, 0},
        {"--a4-threshold-gelu", OPT_FLOAT, &a4g, "multitier, post-GELU (shifted) inputs: A4 below this (default 5)", 0, 1e9, 0, 0},
        {"--a6-threshold-gelu", OPT_FLOAT, &a6g, "multitier, post-GELU inputs: A6 below this (default 8)", 0, 1e9, 0, 0},
    };
    int r = args_parse(argc, argv, 2, "analyze",
                       "Turn activation statistics into a W4A8 activation-quantization config valid at any timestep: HTG\n"
                       "timestep groups keyed by σ intervals; per layer and group the clip range, the quantization step, the\n"
                       "zero point, the post-GELU shift and the outlier-channel divisors (docs/QUANT.md, docs/FORMATS.md).",
                       opts, sizeof opts / sizeof opts[0], NULL, 0, NULL, NULL);
    if (r) return r == 1 ? 0 : 2;
    enum act_clip ck;
    if (!strcmp(clip, "absmax")) ck = CLIP_ABSMAX;
    else if (!strcmp(clip, "p999")) ck = CLIP_P999;
    else if (!strcmp(clip, "p9999")) ck = CLIP_P9999;
    else {
        fprintf(stderr, "sd3q analyze: --clip must be absmax, p999 or p9999 (got '%s')\n", clip);
        return 2;
    }
    if (a4 > a6 || a4g > a6g) {
        fprintf(stderr, "sd3q analyze: the A4 thresholds must not exceed the A6 thresholds\n");
        return 2;
    }
    struct stats_table t;
    struct sd3q_errbuf e;
    if (stats_read(stats, &t, &e) != SD3Q_OK) {
        fprintf(stderr, "sd3q analyze: %s\n", e.msg);
        return 1;
    }
    char outbuf[4096];
    if (!out) {
        snprintf(outbuf, sizeof outbuf, "%s/%s", stats, multitier ? "quant_config_multitier.json" : "quant_config.json");
        out = outbuf;
    }
    int ng = groups ? (int)groups : (t.n_steps / 10 > 1 ? t.n_steps / 10 : 1);
    struct actcfg cfg;
    enum sd3q_status st = actcfg_build(&t, ng, ck, multitier, a4, a6, a4g, a6g, &cfg, &e);
    if (st == SD3Q_OK) st = actcfg_write(&cfg, out, &e);
    if (st != SD3Q_OK) {
        fprintf(stderr, "sd3q analyze: %s\n", e.msg);
        stats_free(&t);
        return 1;
    }
    int outl = 0, bits[9] = {0};
    for (int l = 0; l < cfg.n_layers; l++)
        for (int g = 0; g < cfg.n_groups; g++) {
            outl += actcfg_at(&cfg, l, g)->n_outliers > 0;
            bits[actcfg_at(&cfg, l, g)->bits]++;
        }
    printf("%s: %d layers × %d timestep groups (σ boundaries", out, cfg.n_layers, cfg.n_groups);
    for (int g = 0; g + 1 < cfg.n_groups; g++) printf(" %.4f", cfg.groups[g].sigma_lo);
    printf("), clip %s; %d (layer, group) cells with outlier channels", clip, outl);
    if (multitier) printf("; A4 %d, A6 %d, A8 %d", bits[4], bits[6], bits[8]);
    printf("\n");
    actcfg_free(&cfg);
    stats_free(&t);
    return 0;
}

// Reads up to max non-empty lines of a text file (the captions); returns the count.
static int read_lines(const char * path, char ** text, char *** lines, int max) {
    struct sd3q_errbuf e;
    size_t n;
    if (read_file(path, 16u << 20, text, &n, &e) != SD3Q_OK) {
        fprintf(stderr, "sd3q quant-eval: %s\n", e.msg);
        return -1;
    }
    *lines = malloc(sizeof(char *) * (size_t)(max > 0 ? max : 1));
    int k = 0;
    char * save = NULL;
    for (char * l = strtok_r(*text, "\r\n", &save); l && k < max; l = strtok_r(NULL, "\r\n", &save))
        if (*l && *l != '#') (*lines)[k++] = l;  // '#' starts a comment line
    return k;
}

// Adherence adapter for the coloured-shapes domain: 1/0, or 0 when the caption is outside the grammar.
static int shapes_adherent(const uint8_t * rgb, int w, int h, const char * caption) {
    struct adherence_result r;
    return adherence_check(rgb, w, h, caption, &r) == 0 && r.ok;
}

int cmd_quant_eval(int argc, char ** argv) {
    struct model_opts mo;
    const char * prompts = NULL, * config = NULL, * stats = NULL, * out = NULL, * json = NULL;
    int64_t num = 8, steps = 28, size = 0, seed = 0, t5 = 256, groups = 0;
    double cfg = 7.0, shift = 0;  // 0: the model's (sd3q_model_shift)
    struct opt opts[MODEL_OPTS_N + 13];
    model_opts_add(&mo, opts);
    struct opt own[] = {
        {"--prompts", OPT_STR, &prompts, "captions, one per line (the tiny model's held-out set: tools/train_tiny/captions_heldout.txt)", 0, 0, 1, 0},
        {"--num-images", OPT_INT, &num, "images per scheme (the first N captions; default 8)", 1, 100000, 0, 0},
        {"--config", OPT_STR, &config, "evaluate this activation config (from sd3q analyze)", 0, 0, 0, 0},
        {"--stats", OPT_STR, &stats, "evaluate per-timestep-group and one-scale-per-layer configs built from these statistics", 0, 0, 0, 0},
        {"--time-groups", OPT_INT, &groups, "groups for the --stats config (default: as sd3q analyze)", 1, ACTCFG_MAX_GROUPS, 0, 0},
        {"--steps", OPT_INT, &steps, "denoising steps (default 28)", 1, 1000, 0, 0},
        {"--size", OPT_INT, &size, "image side (default: the model's)", 16, 4096, 0, 0},
        {"--cfg", OPT_FLOAT, &cfg, "guidance scale (default 7.0)", 0, 100, 0, 0},
        {"--shift", OPT_FLOAT, &shift, "flow-matching time shift (default: the model's scheduler config, else 3.0)", SD3Q_MIN_SHIFT, SD3Q_MAX_SHIFT, 0, 0},
        {"--seed", OPT_INT, &seed, "image i uses seed + i (default 0)", 0, 9007199254740991.0, 0, 0},
        {"--t5-max-length", OPT_INT, &t5, "T5 tokens (default 256)", 1, 4096, 0, 0},
        {"--out", OPT_STR, &out, "write every image here (<scheme>_NNNN.png)", 0, 0, 0, 0},
        {"--json", OPT_STR, &json, "write the results table as JSON", 0, 0, 0, 0},
    };
    memcpy(opts + MODEL_OPTS_N, own, sizeof own);
    int nopt = MODEL_OPTS_N + 13;
    int r = args_parse(argc, argv, 2, "quant-eval",
                       "Generate the same images with full-precision activations and with fake-quantized Linear inputs (weights in\n"
                       "full precision), and report PSNR and SSIM against full precision and the prompt-adherence rate: a static\n"
                       "config with timestep groups, one static scale per layer, and dynamic per-token A8.",
                       opts, nopt, NULL, 0, NULL, NULL);
    if (r) return r == 1 ? 0 : 2;
    char * text = NULL, ** lines = NULL;
    int n = read_lines(prompts, &text, &lines, (int)num);
    if (n <= 0) {
        if (n == 0) fprintf(stderr, "sd3q quant-eval: %s holds no captions\n", prompts);
        free(text);
        free(lines);
        return 1;
    }
    int rc = 1, ncfg = 0;
    struct actcfg cfgs[3];
    struct evalq_scheme sch[5];
    int ns = 0;
    struct sd3q_model * m = NULL;
    struct sd3q_session * s = NULL;
    struct sd3q_errbuf e;
    sch[ns++] = (struct evalq_scheme){"fp", EVALQ_FP, NULL, 0, 0, 0, 0, 0};
    if (stats) {
        struct stats_table t;
        if (stats_read(stats, &t, &e) != SD3Q_OK) {
            fprintf(stderr, "sd3q quant-eval: %s\n", e.msg);
            goto done;
        }
        int g = groups ? (int)groups : (t.n_steps / 10 > 1 ? t.n_steps / 10 : 1);
        if (g < 2 && t.n_steps >= 2) g = 2;
        enum sd3q_status st = actcfg_build(&t, g, CLIP_ABSMAX, 0, 6, 10, 5, 8, &cfgs[ncfg], &e);
        if (st == SD3Q_OK) {
            sch[ns++] = (struct evalq_scheme){"a8-static-groups", EVALQ_STATIC, &cfgs[ncfg++], 8, 0, 0, 0, 0};
            st = actcfg_build(&t, 1, CLIP_ABSMAX, 0, 6, 10, 5, 8, &cfgs[ncfg], &e);
            if (st == SD3Q_OK) sch[ns++] = (struct evalq_scheme){"a8-static-layer", EVALQ_STATIC, &cfgs[ncfg++], 8, 0, 0, 0, 0};
        }
        stats_free(&t);
        if (st != SD3Q_OK) {
            fprintf(stderr, "sd3q quant-eval: %s\n", e.msg);
            goto done;
        }
    }
    if (config) {
        if (actcfg_read(config, &cfgs[ncfg], &e) != SD3Q_OK) {
            fprintf(stderr, "sd3q quant-eval: %s\n", e.msg);
            goto done;
        }
        sch[ns++] = (struct evalq_scheme){"config", EVALQ_STATIC, &cfgs[ncfg++], 8, 0, 0, 0, 0};
    }
    sch[ns++] = (struct evalq_scheme){"a8-dynamic-token", EVALQ_DYNAMIC, NULL, 8, 0, 0, 0, 0};
    if (!(m = model_opts_load(&mo, "quant-eval"))) goto done;
    if (shift == 0) shift = sd3q_model_shift(m);
    struct sd3q_mmdit_info info;
    if (sd3q_model_mmdit_info(m, &info) != SD3Q_OK) {
        fprintf(stderr, "sd3q quant-eval: the model has no MMDiT\n");
        goto done;
    }
    if (!size) size = info.sample_size > 0 ? info.sample_size * 8 : 1024;
    if (size % 16) {
        fprintf(stderr, "sd3q quant-eval: --size must be a multiple of 16\n");
        rc = 2;
        goto done;
    }
    struct sd3q_session_params sp;
    if ((rc = model_opts_session(&mo, "quant-eval", &sp)) != 0) goto done;
    rc = 1;
    sp.device = SD3Q_DEVICE_CPU;  // fake quantization edits activations in host memory
    sp.max_batch = 2, sp.max_latent_h = (int)size / 8, sp.max_latent_w = (int)size / 8, sp.max_context = 77 + (int)t5;
    char err[1024];
    if (sd3q_session_init(m, &sp, &s, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "sd3q quant-eval: %s\n", err);
        goto done;
    }
    struct adherence_result probe;
    int domain = adherence_parse_caption(lines[0], &probe) == 0;
    struct progress pr;
    progress_begin(&pr, "quant-eval", n * ns, 0, 0);
    pr.unit = "images";
    struct evalq_params ep = {(const char * const *)lines, n, (int)steps, (int)size, (int)size, (int)t5, cfg, shift, seed, out,
                              domain ? shapes_adherent : NULL, progress_callback, &pr};
    double t0 = now();
    enum sd3q_status st = quant_evaluate(s, &ep, sch, ns, &e);
    progress_end(&pr);
    if (st != SD3Q_OK) {
        fprintf(stderr, "sd3q quant-eval: %s\n", e.msg);
        goto done;
    }
    printf("| scheme | PSNR vs FP (dB) | SSIM vs FP | prompt adherence |\n|---|---|---|---|\n");
    for (int k = 0; k < ns; k++) {
        char ps[32], ad[32];
        if (isinf(sch[k].psnr)) snprintf(ps, sizeof ps, "∞");
        else snprintf(ps, sizeof ps, "%.2f", sch[k].psnr);
        if (isnan(sch[k].adherence)) snprintf(ad, sizeof ad, "n/a");
        else snprintf(ad, sizeof ad, "%.1f %%", 100 * sch[k].adherence);
        printf("| %s | %s | %.4f | %s |\n", sch[k].name, ps, sch[k].ssim, ad);
    }
    printf("(%d images of %lldx%lld, %lld steps, CFG %g, seeds %lld…; %.0f s)\n", n, (long long)size, (long long)size, (long long)steps, cfg,
           (long long)seed, now() - t0);
    if (json) {
        FILE * f = fopen(json, "w");
        if (!f) {
            fprintf(stderr, "sd3q quant-eval: cannot write %s\n", json);
            goto done;
        }
        fprintf(f, "{\"images\": %d, \"steps\": %lld, \"size\": %lld, \"schemes\": [", n, (long long)steps, (long long)size);
        for (int k = 0; k < ns; k++)
            fprintf(f, "%s{\"name\": \"%s\", \"psnr\": %.4f, \"ssim\": %.6f, \"adherence\": %.4f}", k ? ", " : "", sch[k].name,
                    isinf(sch[k].psnr) ? -1.0 : sch[k].psnr, sch[k].ssim, isnan(sch[k].adherence) ? -1.0 : sch[k].adherence);
        fprintf(f, "]}\n");
        fclose(f);
    }
    rc = 0;
done:
    for (int k = 0; k < ncfg; k++) actcfg_free(&cfgs[k]);
    sd3q_session_free(s);
    sd3q_model_free(m);
    free(text);
    free(lines);
    return rc;
}
