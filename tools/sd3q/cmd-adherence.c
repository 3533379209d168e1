/*
 * cmd-adherence.c — `sd3q adherence`: the prompt-adherence rate of the tiny model's coloured-shapes domain, either of
 * existing PNGs (scored against the prompt recorded in their text chunk) or of images generated for a caption file.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <errno.h>

#include "commands.h"
#include "io/fileutil.h"
#include "io/png.h"
#include "progress.h"
#include "quant/adherence.h"

struct tally {
    int n, ok, attr[ADH_ATTRS], skipped;
};

// Scores one image and prints its verdict line.
static void score(struct tally * t, const uint8_t * rgb, int w, int h, const char * caption, const char * label) {
    struct adherence_result r;
    if (adherence_check(rgb, w, h, caption, &r) != 0) {
        printf("%s\tskipped (caption not in the shapes grammar)\t%s\n", label, caption);
        t->skipped++;
        return;
    }
    t->n++;
    t->ok += r.ok;
    char bad[128] = "";
    for (int a = 0; a < ADH_ATTRS; a++) {
        t->attr[a] += r.attr_ok[a];
        if (!r.attr_ok[a]) snprintf(bad + strlen(bad), sizeof bad - strlen(bad), "%s%s", bad[0] ? "," : "", adherence_attr_names[a]);
    }
    printf("%s\t%s%s\t%s\n", label, r.ok ? "ok" : "FAIL ", bad, caption);
}

int cmd_adherence(int argc, char ** argv) {
    struct model_opts mo;
    const char * prompts = NULL, * out = NULL;
    int64_t num = 0, steps = 28, seed = 0;
    double cfg = 7.0, shift = 0;  // 0: the model's (sd3q_model_shift)
    struct opt opts[MODEL_OPTS_N + 7];
    model_opts_add(&mo, opts);
    struct opt own[] = {
        {"--prompts", OPT_STR, &prompts, "generate one image per caption of this file (with --model) and score them", 0, 0, 0, 0},
        {"--num-images", OPT_INT, &num, "only the first N captions", 1, 1000000, 0, 0},
        {"--steps", OPT_INT, &steps, "denoising steps (default 28)", 1, 1000, 0, 0},
        {"--cfg", OPT_FLOAT, &cfg, "guidance scale (default 7.0)", 0, 100, 0, 0},
        {"--shift", OPT_FLOAT, &shift, "flow-matching time shift (default: the model's scheduler config, else 3.0)", SD3Q_MIN_SHIFT,
         SD3Q_MAX_SHIFT, 0, 0},
        {"--seed", OPT_INT, &seed, "caption i uses seed + i (default 0)", 0, 9007199254740991.0, 0, 0},
        {"--out", OPT_STR, &out, "keep the generated images here (NNNN.png)", 0, 0, 0, 0},
    };
    memcpy(opts + MODEL_OPTS_N, own, sizeof own);
    const char * pos[4096];
    int npos = 0;
    int r = args_parse(argc, argv, 2, "adherence",
                       "Prompt adherence in the tiny model's coloured-shapes domain (docs/TINY_MODEL.md): per image whether the\n"
                       "background, count, colour, shape, size and position match the caption, and the rates. Score PNG files\n"
                       "against the prompt in their text chunk (sd3q adherence a.png b.png ...), or generate one image per\n"
                       "caption with --model and --prompts.",
                       opts, MODEL_OPTS_N + 7, pos, 4096, &npos, "[IMAGE.png ...]");
    if (r) return r == 1 ? 0 : 2;
    if ((npos > 0) == (prompts != NULL)) {
        fprintf(stderr, "sd3q adherence: give either PNG files or --prompts with --model\n");
        return 2;
    }
    if (out && mkdir(out, 0755) != 0 && errno != EEXIST) {  // the folder is made, as calibrate and quant-eval do
        fprintf(stderr, "sd3q adherence: --out %s: cannot create the folder: %s\n", out, strerror(errno));
        return 1;
    }
    struct tally t = {0};
    int rc = 1;
    if (npos) {
        for (int i = 0; i < npos; i++) {
            struct rgb_image img;
            struct sd3q_errbuf e;
            if (pngio_read(pos[i], &img, &e) != SD3Q_OK) {
                fprintf(stderr, "sd3q adherence: %s\n", e.msg);
                return 1;
            }
            const char * cap = rgb_image_text(&img, "prompt");
            if (!cap) {
                fprintf(stderr, "sd3q adherence: %s has no \"prompt\" text chunk (images from sd3q generate have one)\n", pos[i]);
                rgb_image_free(&img);
                return 1;
            }
            score(&t, img.rgb, img.width, img.height, cap, pos[i]);
            rgb_image_free(&img);
        }
    } else {
        char * text = NULL;
        size_t len;
        struct sd3q_errbuf e;
        if (read_file(prompts, 16u << 20, &text, &len, &e) != SD3Q_OK) {
            fprintf(stderr, "sd3q adherence: %s\n", e.msg);
            return 1;
        }
        struct sd3q_model * m = model_opts_load(&mo, "adherence");
        struct sd3q_session * s = NULL;
        float * img = NULL;
        uint8_t * rgb = NULL;
        if (!m) goto gen_done;
        if (shift == 0) shift = sd3q_model_shift(m);
        struct sd3q_mmdit_info info;
        if (sd3q_model_mmdit_info(m, &info) != SD3Q_OK) {
            fprintf(stderr, "sd3q adherence: the model has no MMDiT\n");
            goto gen_done;
        }
        int side = info.sample_size > 0 ? info.sample_size * 8 : 1024;
        struct sd3q_session_params sp;
        if (model_opts_session(&mo, "adherence", &sp) != 0) goto gen_done;
        sp.max_batch = 2, sp.max_latent_h = sp.max_latent_w = side / 8, sp.max_context = sd3q_model_context_len(m, 256);
        char err[1024];
        if (sp.max_context <= 0 || sd3q_session_init(m, &sp, &s, err, sizeof err) != SD3Q_OK) {
            fprintf(stderr, "sd3q adherence: %s\n", sp.max_context <= 0 ? "the model cannot encode prompts" : err);
            goto gen_done;
        }
        img = malloc(sizeof(float) * 3 * (size_t)side * side);
        rgb = malloc(3 * (size_t)side * side);
        if (!img || !rgb) goto gen_done;
        struct sd3q_gen_params gp = sd3q_gen_default_params();
        gp.steps = (int)steps, gp.cfg = (float)cfg, gp.shift = (float)shift;
        int i = 0;
        char * save = NULL;
        for (char * line = strtok_r(text, "\r\n", &save); line && (!num || i < num); line = strtok_r(NULL, "\r\n", &save)) {
            if (!*line || *line == '#') continue;
            gp.prompt = line, gp.seed = (uint64_t)(seed + i);
            if (sd3q_session_generate(s, &gp, img, NULL, NULL) != SD3Q_OK) {
                fprintf(stderr, "sd3q adherence: %s\n", sd3q_session_last_error(s));
                goto gen_done;
            }
            image_to_rgb8(img, side, side, rgb);
            char label[64];
            snprintf(label, sizeof label, "%04d", i);
            if (out) {
                char path[4096];
                snprintf(path, sizeof path, "%s/%04d.png", out, i);
                struct pngio_params pp = {line, "", (uint64_t)(seed + i), (int)steps, cfg, shift, side, side, mo.model, NULL};
                if (pngio_write_image(path, rgb, side, side, &pp, &e) != SD3Q_OK) {
                    fprintf(stderr, "sd3q adherence: %s\n", e.msg);
                    goto gen_done;
                }
            }
            score(&t, rgb, side, side, line, label);
            i++;
        }
        rc = 0;
    gen_done:
        free(img);
        free(rgb);
        free(text);
        sd3q_session_free(s);
        sd3q_model_free(m);
        if (rc) return 1;
    }
    if (!t.n) {
        fprintf(stderr, "sd3q adherence: no image had a caption in the shapes grammar\n");
        return 1;
    }
    printf("adherence %.1f %% (%d of %d images satisfy every attribute)", 100.0 * t.ok / t.n, t.ok, t.n);
    for (int a = 0; a < ADH_ATTRS; a++) printf("%s %s %.1f %%", a ? "," : ";", adherence_attr_names[a], 100.0 * t.attr[a] / t.n);
    printf("\n");
    return 0;
}
