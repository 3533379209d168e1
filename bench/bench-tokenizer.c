/*
 * bench-tokenizer.c — prompts per second of the CLIP BPE and T5 unigram tokenizers on one core, for a fixed set of
 * typical 10–30-word prompts (77 ids for CLIP, 256 for T5 as diffusers' SD3 pipeline asks), plus load times.
 *
 * Usage: bench-tokenizer [clip vocabulary] [t5 model] [seconds per measurement, default 2]
 * Defaults: ../shared/tokenizers/clip_bpe_simple_vocab_16e6.txt.gz beside the repository (else the small committed
 * CLIP vocabulary) and tests/golden/tokenizers/t5_tiny/spiece.model (a 1,000-piece model: the real T5 vocabulary
 * has 32,000 pieces and is not in the repository, so its Viterbi explores more candidates per position).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "model/tokenizer.h"

static const char * prompts[] = {
    "a photograph of an astronaut riding a horse on the surface of the moon, highly detailed, 8k",
    "portrait of an old fisherman with a grey beard, dramatic lighting, 85mm lens, bokeh, film grain",
    "a cozy library with tall bookshelves, leather armchairs and a crackling fireplace, warm light",
    "cyberpunk city street at night, rain, neon signs reflected in puddles, cinematic, volumetric fog",
    "an oil painting of a lighthouse during a violent storm, crashing waves, by a romantic era master",
    "a bowl of ramen with a soft-boiled egg, green onions and sesame seeds, food photography",
    "isometric illustration of a tiny island with a cabin, a windmill and a rowing boat, pastel colors",
    "a red fox sleeping under a pine tree in the snow, golden hour, shallow depth of field",
    "Studio Ghibli style landscape with rolling hills, a small village and fluffy white clouds",
    "macro shot of a dew drop on a spider web in the early morning, extremely detailed, 4K",
    "A medieval castle on a hill surrounded by fog and autumn forests, matte painting, trending on artstation",
    "two cats playing with a ball of yarn on a wooden floor, soft natural light, photo",
    "a futuristic car parked in front of a neon-lit noodle shop, blade runner aesthetic",
    "watercolor sketch of a Parisian café with people sitting outside, loose brush strokes",
    "a knight in shining armor facing a giant dragon in a burning village, epic fantasy art",
    "aerial view of a winding river through a green valley at sunrise, drone photography",
    "a steaming cup of coffee next to a laptop and a notebook on a rainy day, cozy mood",
    "low poly 3D render of a mountain landscape with a lake, minimalistic, soft shadows",
    "a children's book illustration of a bear having a picnic with rabbits in a meadow",
    "ukiyo-e woodblock print of a great wave with Mount Fuji in the background",
    "a stained glass window depicting a phoenix rising from flames, vibrant colors, intricate",
    "close-up of a hummingbird drinking nectar from a purple flower, high speed photography",
    "a robot reading a newspaper in a crowded train station, retro-futurism, 1950s style",
    "snow-covered mountains under a starry sky with the Milky Way, long exposure, ultra wide",
};
#define N_PROMPTS ((int)(sizeof(prompts) / sizeof(prompts[0])))

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

// Encodes the prompt set repeatedly for about `secs` seconds (padded to max_len); returns prompts per second.
static double rate(const struct bpe_tokenizer * b, const struct unigram_tokenizer * u, int max_len, double secs) {
    int32_t ids[512];
    long    done = 0;
    double  t0   = now_s(), t1 = t0;
    while (t1 - t0 < secs) {
        for (int i = 0; i < N_PROMPTS; i++) {
            int n = b ? bpe_tokenizer_encode(b, prompts[i], max_len, 1, ids)
                      : unigram_tokenizer_encode(u, prompts[i], max_len, 1, ids);
            if (n != max_len) {
                fprintf(stderr, "encode failed\n");
                exit(1);
            }
        }
        done += N_PROMPTS;
        t1 = now_s();
    }
    return (double)done / (t1 - t0);
}

int main(int argc, char ** argv) {
    char         root[4096];
    const char * f   = __FILE__;
    const char * cut = strstr(f, "bench/bench-tokenizer.c");
    snprintf(root, sizeof(root), "%.*s", cut ? (int)(cut - f) : 0, f);
    char clip_path[4200], t5_path[4200];
    snprintf(clip_path, sizeof(clip_path), "%s../shared/tokenizers/clip_bpe_simple_vocab_16e6.txt.gz", root);
    if (access(clip_path, R_OK) != 0)
        snprintf(clip_path, sizeof(clip_path), "%stests/golden/tokenizers/clip_tiny", root);
    snprintf(t5_path, sizeof(t5_path), "%stests/golden/tokenizers/t5_tiny/spiece.model", root);
    const char * clip = argc > 1 ? argv[1] : clip_path;
    const char * t5   = argc > 2 ? argv[2] : t5_path;
    double       secs = argc > 3 ? atof(argv[3]) : 2.0;

    struct sd3q_errbuf         e = {{0}};
    struct bpe_tokenizer *     b = NULL;
    struct unigram_tokenizer * u = NULL;
    double                     t0 = now_s();
    if (bpe_tokenizer_load(clip, &b, &e) != SD3Q_OK) {
        fprintf(stderr, "%s\n", e.msg);
        return 1;
    }
    double clip_load = now_s() - t0;
    t0               = now_s();
    if (unigram_tokenizer_load(t5, &u, &e) != SD3Q_OK) {
        fprintf(stderr, "%s\n", e.msg);
        bpe_tokenizer_free(b);
        return 1;
    }
    double t5_load = now_s() - t0;
    long   clip_ids = 0, t5_ids = 0;
    for (int i = 0; i < N_PROMPTS; i++) {
        clip_ids += bpe_tokenizer_count(b, prompts[i]);
        t5_ids += unigram_tokenizer_count(u, prompts[i]);
    }
    rate(b, NULL, SD3Q_CLIP_MAX_LEN, 0.2);  // warm-up
    double clip_rate = rate(b, NULL, SD3Q_CLIP_MAX_LEN, secs);
    double t5_rate   = rate(NULL, u, 256, secs);
    printf("bench-tokenizer: %d prompts of 10-30 words, one thread, %.1f s per measurement\n", N_PROMPTS, secs);
    printf("  CLIP BPE    load %7.1f ms  %9.0f prompts/s  %6.1f us/prompt  %4.1f ids/prompt  (%s, 77 ids padded)\n",
           clip_load * 1e3, clip_rate, 1e6 / clip_rate, (double)clip_ids / N_PROMPTS, clip);
    printf("  T5 unigram  load %7.1f ms  %9.0f prompts/s  %6.1f us/prompt  %4.1f ids/prompt  (%s, 256 ids padded)\n",
           t5_load * 1e3, t5_rate, 1e6 / t5_rate, (double)t5_ids / N_PROMPTS, t5);
    bpe_tokenizer_free(b);
    unigram_tokenizer_free(u);
    return 0;
}
