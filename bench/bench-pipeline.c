/*
 * bench-pipeline.c — memory of the whole SD3-Medium pipeline at full size on the CPU: one single file shaped like
 * sd3_medium_incl_clips_t5xxlfp16.safetensors (MMDiT, CLIP-L, CLIP-G, T5-XXL in F16, VAE; random weights, 15.5 GB),
 * memory-mapped, then one 1024² image (prompt + negative prompt through all three text encoders, whose pages are
 * released afterwards, N denoising steps with CFG, a one-piece VAE decode as diffusers does it). Reports the time of
 * each stage and the resident memory after each (anonymous = our allocations, file = mapped weight pages), and the peak.
 * With --device cuda (a CUDA build) the same image runs on the GPU and the report adds the device memory: the weight
 * copies and backend allocations at session init, at the first denoising step and after the image, and the backend's
 * peak — with --low-memory (only the running component resident) this is the number for a 24 GB card.
 *
 * Tokenizers: the real CLIP vocabulary from ../shared/tokenizers and the small T5 test vocabulary (ids < 1000, which
 * index the 32128-row embedding like any real ids) from tests/golden/tokenizers/t5_tiny; --vocab-dir DIR takes both
 * files (clip_bpe_simple_vocab_16e6.txt.gz, spiece.model) from DIR instead (a GPU machine has no ../shared).
 *
 * Usage: bench-pipeline [--weights FILE] [--steps 1] [--res 1024] [--threads 0] [--vae-tile 0 (one piece)]
 *                       [--device cpu|cuda] [--low-memory] [--vocab-dir DIR]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/fileutil.h"
#include "model/session.h"
#include "sd3q.h"
#include "common.h"



static void mem(const char * when) {
    printf("  %-34s RSS %7.0f MiB (anon %6.0f, file %7.0f), peak %7.0f MiB\n", when, proc_status_mib("VmRSS"), proc_status_mib("RssAnon"),
           proc_status_mib("RssFile"), proc_status_mib("VmHWM"));
}

struct prog {
    double                 t0;
    struct sd3q_session *  s;
};

static int progress(void * ud, int done, int total) {
    struct prog * p = ud;
    printf("  step %d/%d at %.1f s\n", done, total, bench_now() - p->t0);
    if (done == 1) bench_cuda_mem("at the first step", p->s->bk);
    fflush(stdout);
    return 0;
}

int main(int argc, char ** argv) {
    const char * weights = "/tmp/sd3q-bench-sd3m-full-f16.safetensors";
    int steps = 1, res = 1024, threads = 0, tile = 0, low_memory = 0;
    const char * device = "cpu", * vocab_dir = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--weights") && i + 1 < argc) weights = argv[++i];
        else if (!strcmp(argv[i], "--steps") && i + 1 < argc) steps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--res") && i + 1 < argc) res = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--vae-tile") && i + 1 < argc) tile = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--device") && i + 1 < argc) device = argv[++i];
        else if (!strcmp(argv[i], "--low-memory")) low_memory = 1;
        else if (!strcmp(argv[i], "--vocab-dir") && i + 1 < argc) vocab_dir = argv[++i];
        else {
            fprintf(stderr, "usage: bench-pipeline [--weights FILE] [--steps N] [--res N] [--threads N] [--vae-tile N] "
                            "[--device cpu|cuda] [--low-memory] [--vocab-dir DIR]\n");
            return 2;
        }
    }
    if (strcmp(device, "cpu") && strcmp(device, "cuda")) {
        fprintf(stderr, "bench-pipeline: --device must be cpu or cuda (got '%s')\n", device);
        return 2;
    }
    if (!path_is_file(weights)) {
        struct bw_file * f = bw_new();
        bw_add_mmdit(f, DT_F16);
        bw_add_clip(f, "text_encoders.clip_l.transformer.", 768, 12, 3072, 0);
        bw_add_clip(f, "text_encoders.clip_g.transformer.", 1280, 32, 5120, 1);
        bw_add_t5(f, DT_F16);
        bw_add_vae(f);
        int r = bw_write(f, weights);
        bw_free(f);
        if (r) return 1;
    }
    // a tokenizer folder: the real CLIP merges and the small T5 test vocabulary
    char tok[] = "/tmp/sd3q-bench-tok-XXXXXX";
    if (!mkdtemp(tok)) return 1;
    char cwd[4096], a[8192], b[8192];
    if (!getcwd(cwd, sizeof cwd)) return 1;
    char vd[4096 + 8];  // the links live in another folder: a relative DIR is made absolute
    if (vocab_dir) snprintf(vd, sizeof vd, "%s%s%s", vocab_dir[0] == '/' ? "" : cwd, vocab_dir[0] == '/' ? "" : "/", vocab_dir), vocab_dir = vd;
    if (vocab_dir) snprintf(a, sizeof a, "%s/clip_bpe_simple_vocab_16e6.txt.gz", vocab_dir);
    else snprintf(a, sizeof a, "%s/../shared/tokenizers/clip_bpe_simple_vocab_16e6.txt.gz", cwd);
    snprintf(b, sizeof b, "%s/bpe_simple_vocab_16e6.txt.gz", tok);
    if (symlink(a, b) != 0) perror(b);
    if (vocab_dir) snprintf(a, sizeof a, "%s/spiece.model", vocab_dir);
    else snprintf(a, sizeof a, "%s/tests/golden/tokenizers/t5_tiny/spiece.model", cwd);
    snprintf(b, sizeof b, "%s/spiece.model", tok);
    if (symlink(a, b) != 0) perror(b);

    printf("SD3-Medium-shaped pipeline, %d², %d step(s), CFG 7, T5 length 256, %s%s\n", res, steps, device,
           low_memory ? ", low_memory" : "");
    mem("start");
    double t0 = bench_now();
    struct sd3q_model_params mp = sd3q_model_default_params();
    mp.path = weights;
    mp.tokenizer_dir = tok;
    struct sd3q_model * m;
    char err[1024];
    if (sd3q_model_load(&mp, &m, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("loaded in %.2f s\n", bench_now() - t0);
    mem("after loading (mmap)");
    struct sd3q_session_params sp = sd3q_session_default_params();
    sp.device = strcmp(device, "cuda") ? SD3Q_DEVICE_CPU : SD3Q_DEVICE_CUDA, sp.low_memory = low_memory;
    sp.n_threads = threads, sp.max_batch = 2, sp.max_latent_h = sp.max_latent_w = res / 8;
    sp.max_context = sd3q_model_context_len(m, 256), sp.vae_tile = tile ? tile : res / 8;
    struct sd3q_session * s;
    if (sd3q_session_init(m, &sp, &s, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("session arena %.0f MiB (the largest of the MMDiT, text encoder and VAE plans)\n", (double)sd3q_session_arena_bytes(s) / (1 << 20));
    mem("after session init");
    bench_cuda_mem("after session init", s->bk);
    struct prog pr = {bench_now(), s};
    sd3q_session_set_progress(s, progress, &pr);
    struct sd3q_gen_params gp = sd3q_gen_default_params();
    gp.prompt = "a photo of an astronaut riding a horse on the moon", gp.width = gp.height = res, gp.steps = steps, gp.release_text = 1;
    float * img = malloc(sizeof(float) * 3 * (size_t)res * res);
    struct sd3q_gen_timing tm;
    if (sd3q_session_generate(s, &gp, img, NULL, &tm) != SD3Q_OK) {
        fprintf(stderr, "%s\n", sd3q_session_last_error(s));
        return 1;
    }
    printf("text encoding (CLIP-L, CLIP-G, T5-XXL; prompt and negative) %.1f s, denoising %.1f s (%.1f s/step), VAE decode %.1f s\n",
           tm.text, tm.denoise, tm.denoise / steps, tm.decode);
    mem("after the image");
    bench_cuda_mem("after the image", s->bk);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("peak RSS %.0f MiB (%.2f GiB), of which the mapped weight pages are file-backed and reclaimable\n", (double)ru.ru_maxrss / 1024,
           (double)ru.ru_maxrss / (1024.0 * 1024.0));
    free(img);
    sd3q_session_free(s);
    sd3q_model_free(m);
    snprintf(b, sizeof b, "%s/bpe_simple_vocab_16e6.txt.gz", tok), unlink(b);
    snprintf(b, sizeof b, "%s/spiece.model", tok), unlink(b);
    rmdir(tok);
    return 0;
}
