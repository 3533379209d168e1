/*
 * cmd-generate.c — `sd3q generate`: text to PNG with the whole SD3 pipeline (prompt encoding, flow-matching Euler
 * sampling with classifier-free guidance, VAE decoding), following diffusers' StableDiffusion3Pipeline: the same
 * defaults, the same noise for a seed (torch's CPU generator), the same batch semantics for --count.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "commands.h"
#include "io/fileutil.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "progress.h"

// Expands "%d" in a path template with the image index ("%%" is a literal %); any other '%' is rejected, so user text
// never reaches a printf format. Returns 0 on success.
int path_template_expand(const char * tmpl, int index, char * out, size_t size) {
    size_t k = 0;
    for (const char * p = tmpl; *p; p++) {
        char buf[24];
        const char * ins = NULL;
        if (*p == '%') {
            if (p[1] == 'd') {
                snprintf(buf, sizeof buf, "%d", index);
                ins = buf;
                p++;
            } else if (p[1] == '%') {
                ins = "%";
                p++;
            } else {
                return -1;
            }
        }
        size_t n = ins ? strlen(ins) : 1;
        if (k + n + 1 > size) return -1;
        memcpy(out + k, ins ? ins : p, n);
        k += n;
    }
    out[k] = '\0';
    return 0;
}

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

// Reads the initial latent: tensor `latents`, or the file's only tensor, of shape [1, C, h, w].
static int read_init_noise(const char * path, int C, int h, int w, float * out) {
    struct st_file f;
    struct sd3q_errbuf e;
    if (st_open(path, &f, &e) != SD3Q_OK) {
        fprintf(stderr, "sd3q generate: --init-noise: %s\n", e.msg);
        return -1;
    }
    const char * name = st_find(&f, "latents") ? "latents" : (f.n == 1 ? f.t[0].name : NULL);
    int rc = -1;
    if (!name) {
        fprintf(stderr, "sd3q generate: --init-noise: %s holds %d tensors and none is named 'latents'\n", path, f.n);
    } else {
        int64_t want[4] = {1, C, h, w};
        float * x = st_read_f32(&f, name, 4, want, &e);
        if (!x) {
            fprintf(stderr, "sd3q generate: --init-noise: %s (the size follows --width/--height: latent %d×%d)\n", e.msg, h, w);
        } else {
            memcpy(out, x, sizeof(float) * (size_t)C * h * w);
            free(x);
            rc = 0;
        }
    }
    st_close(&f);
    return rc;
}

int cmd_generate(int argc, char ** argv) {
    struct model_opts mo;
    const char * prompt = NULL, * negative = "", * output = "sd3q-%d.png", * init_noise = NULL, * save_latents = NULL;
    int64_t steps = 28, width = 0, height = 0, seed = 0, count = 1, t5_len = 256;
    double cfg = 7.0, shift = 0;  // 0: the model's (sd3q_model_shift)
    struct opt opts[MODEL_OPTS_N + 13];
    model_opts_add(&mo, opts);
    struct opt own[] = {
        {"--prompt", OPT_STR, &prompt, "what to draw", 0, 0, 1, 0},
        {"--negative-prompt", OPT_STR, &negative, "what to avoid (default \"\")", 0, 0, 0, 0},
        {"--steps", OPT_INT, &steps, "denoising steps (default 28)", 1, 1000, 0, 0},
        {"--cfg", OPT_FLOAT, &cfg, "classifier-free guidance scale (default 7.0; 1 disables the unconditional pass)", 0, 100, 0, 0},
        {"--shift", OPT_FLOAT, &shift, "flow-matching time shift (default: the model's scheduler config, else 3.0)", SD3Q_MIN_SHIFT, SD3Q_MAX_SHIFT, 0, 0},
        {"--width", OPT_INT, &width, "image width, a multiple of 16 (default: the model's sample size × 8, 1024 for SD3)", 16, 16384, 0, 0},
        {"--height", OPT_INT, &height, "image height, a multiple of 16 (default as --width)", 16, 16384, 0, 0},
        {"--seed", OPT_INT, &seed, "noise seed (torch.Generator(\"cpu\").manual_seed; default 0)", 0, 9007199254740991.0, 0, 0},
        {"--count", OPT_INT, &count, "images (one noise tensor [count,16,h,w] from the seed, as diffusers)", 1, 1000, 0, 0},
        {"--t5-max-length", OPT_INT, &t5_len, "T5 tokens (default 256 as diffusers; 77 as the Stability reference)", 1, 4096, 0, 0},
        {"--output", OPT_STR, &output, "PNG path; %d is replaced by the image index (default sd3q-%d.png)", 0, 0, 0, 0},
        {"--init-noise", OPT_STR, &init_noise, "starting latent [1,16,H/8,W/8] (tensor 'latents' or the only tensor)", 0, 0, 0, 0},
        {"--save-latents", OPT_STR, &save_latents, "write the final latent (model space, tensor 'latents'); %d as --output", 0, 0, 0, 0},
    };
    memcpy(opts + MODEL_OPTS_N, own, sizeof own);
    int r = args_parse(argc, argv, 2, "generate",
                       "Generate images from a prompt: SD3 text encoders, flow-matching Euler sampling with classifier-free\n"
                       "guidance, VAE decoding; PNGs carry the parameters in a text chunk.",
                       opts, MODEL_OPTS_N + 13, NULL, 0, NULL, NULL);
    if (r) return r == 1 ? 0 : 2;
    char test[4096];
    if (path_template_expand(output, 0, test, sizeof test) != 0 ||
        (save_latents && path_template_expand(save_latents, 0, test, sizeof test) != 0)) {
        fprintf(stderr, "sd3q generate: output paths may contain %%d (the image index) and %%%% but no other %% sequences\n");
        return 2;
    }
    if (count > 1 && !strstr(output, "%d")) {
        fprintf(stderr, "sd3q generate: --count %" PRId64 " needs %%d in --output to name each image\n", count);
        return 2;
    }
    if (init_noise && count != 1) {
        fprintf(stderr, "sd3q generate: --init-noise gives one latent; use --count 1\n");
        return 2;
    }

    double t_start = now();
    struct sd3q_model * m = model_opts_load(&mo, "generate");
    if (!m) return 1;
    if (shift == 0) shift = sd3q_model_shift(m);
    int rc = 1;
    struct sd3q_session * s = NULL;
    float * noise = NULL, * image = NULL, * latent = NULL;
    uint8_t * rgb = NULL;
    struct sd3q_mmdit_info info;
    if (sd3q_model_mmdit_info(m, &info) != SD3Q_OK) {
        fprintf(stderr, "sd3q generate: the model has no MMDiT (diffusion transformer)\n");
        goto done;
    }
    static const struct {
        enum sd3q_component c;
        const char *        name, * opt;
    } need[] = {{SD3Q_COMP_CLIP_L, "CLIP-L", "clip-l"}, {SD3Q_COMP_CLIP_G, "CLIP-G", "clip-g"}, {SD3Q_COMP_VAE, "VAE", "vae"}};
    for (int i = 0; i < 3; i++)
        if (!sd3q_model_has(m, need[i].c)) {
            fprintf(stderr, "sd3q generate: the model has no %s; give a checkpoint that includes it or pass it with --%s\n", need[i].name,
                    need[i].opt);
            goto done;
        }
    int side = info.sample_size > 0 ? info.sample_size * 8 : 1024;
    if (!width) width = side;
    if (!height) height = width;
    if (width % 16 || height % 16) {
        fprintf(stderr, "sd3q generate: --width and --height must be multiples of 16 (got %" PRId64 "×%" PRId64 ")\n", width, height);
        rc = 2;
        goto done;
    }
    int h = (int)height / 8, w = (int)width / 8, C = info.in_channels, L = sd3q_model_context_len(m, (int)t5_len);
    if (L <= 0) {
        fprintf(stderr, "sd3q generate: the model's text encoders cannot encode prompts (missing tokenizers? see --tokenizer-dir)\n");
        goto done;
    }
    struct sd3q_session_params sp;
    if ((rc = model_opts_session(&mo, "generate", &sp)) != 0) goto done;
    rc = 1;
    sp.max_batch = cfg == 1.0 ? 1 : 2, sp.max_latent_h = h, sp.max_latent_w = w, sp.max_context = L;
    char err[1024];
    if (sd3q_session_init(m, &sp, &s, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "sd3q generate: %s\n", err);
        goto done;
    }
    int64_t nl = (int64_t)C * h * w;
    noise = malloc(sizeof(float) * (size_t)(nl * count));
    image = malloc(sizeof(float) * 3 * (size_t)width * height);
    latent = malloc(sizeof(float) * (size_t)nl);
    rgb = malloc(3 * (size_t)width * height);
    if (!noise || !image || !latent || !rgb) {
        fprintf(stderr, "sd3q generate: out of memory\n");
        goto done;
    }
    // noise: one [count, C, h, w] tensor from the seed, as diffusers draws it for num_images_per_prompt
    if (init_noise) {
        if (read_init_noise(init_noise, C, h, w, noise) != 0) goto done;
    } else {
        sd3q_randn_torch((uint64_t)seed, noise, nl * count);
    }
    struct sd3q_gen_params gp = sd3q_gen_default_params();
    gp.prompt = prompt, gp.negative_prompt = negative, gp.width = (int)width, gp.height = (int)height, gp.steps = (int)steps;
    gp.t5_len = (int)t5_len, gp.cfg = (float)cfg, gp.shift = (float)shift, gp.seed = (uint64_t)seed, gp.release_text = 1;
    double t_text = 0, t_denoise = 0, t_decode = 0;
    for (int64_t i = 0; i < count; i++) {
        struct progress pr;
        progress_begin(&pr, "denoise", (int)steps, count > 1 ? (int)i + 1 : 0, (int)count);
        sd3q_session_set_progress(s, progress_callback, &pr);
        gp.init_noise = noise + i * nl;
        struct sd3q_gen_timing tm;
        enum sd3q_status st = sd3q_session_generate(s, &gp, image, latent, &tm);
        progress_end(&pr);
        if (st != SD3Q_OK) {
            fprintf(stderr, "sd3q generate: %s\n", sd3q_session_last_error(s));
            goto done;
        }
        t_text += tm.text, t_denoise += tm.denoise, t_decode += tm.decode;
        char path[4096];
        struct sd3q_errbuf e;
        if (save_latents) {
            path_template_expand(save_latents, (int)i, path, sizeof path);
            int64_t shp[4] = {1, C, h, w};
            struct st_wtensor t = {"latents", DT_F32, 4, shp, latent};
            if (st_write(path, &t, 1, NULL, 0, &e) != SD3Q_OK) {
                fprintf(stderr, "sd3q generate: %s\n", e.msg);
                goto done;
            }
        }
        path_template_expand(output, (int)i, path, sizeof path);
        image_to_rgb8(image, (int)width, (int)height, rgb);
        struct pngio_params pp = {prompt, negative, (uint64_t)seed, (int)steps, cfg, shift, (int)width, (int)height,
                                  mo.model ? mo.model : mo.mmdit, NULL};
        if (pngio_write_image(path, rgb, (int)width, (int)height, &pp, &e) != SD3Q_OK) {
            fprintf(stderr, "sd3q generate: %s\n", e.msg);
            goto done;
        }
        printf("%s\n", path);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    fprintf(stderr, "sd3q generate: %" PRId64 " image(s) %" PRId64 "×%" PRId64 ", %" PRId64 " steps: text %.2f s, denoise %.2f s (%.2f s/step), "
                    "decode %.2f s, total %.2f s; peak RSS %.0f MiB\n",
            count, width, height, steps, t_text, t_denoise, t_denoise / (double)(steps * count), t_decode, now() - t_start,
            (double)ru.ru_maxrss / 1024.0);
    rc = 0;
done:
    free(latent);
    free(noise);
    free(image);
    free(rgb);
    sd3q_session_free(s);
    sd3q_model_free(m);
    return rc;
}
