/*
 * cmd-text.c — `sd3q tokenize` and `sd3q encode-prompt`: the text contract of the CLI (documented in README.md and
 * docs/TEXT.md; tests/cli-text.sh relies on it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "commands.h"
#include "io/fileutil.h"
#include "io/safetensors.h"

// ---- tokenize -------------------------------------------------------------------------------------------------------

int cmd_tokenize(int argc, char ** argv) {
    struct model_opts mo;
    const char * enc_name = NULL, * prompt = NULL;
    int64_t max_len = 0;
    int no_pad = 0;
    struct opt opts[MODEL_OPTS_N + 4];
    model_opts_add(&mo, opts);
    opts[MODEL_OPTS_N]     = (struct opt){"--encoder", OPT_STR, &enc_name, "clip_l, clip_g or t5", 0, 0, 1, 0};
    opts[MODEL_OPTS_N + 1] = (struct opt){"--prompt", OPT_STR, &prompt, "the text (UTF-8)", 0, 0, 1, 0};
    opts[MODEL_OPTS_N + 2] = (struct opt){"--max-length", OPT_INT, &max_len, "sequence length (default 77 for CLIP, 256 for T5)", 1, 1 << 20, 0, 0};
    opts[MODEL_OPTS_N + 3] = (struct opt){"--no-pad", OPT_FLAG, &no_pad, "print only the real tokens (no padding to --max-length)", 0, 0, 0, 0};
    int r = args_parse(argc, argv, 2, "tokenize", "Print the token ids of a prompt as a JSON array, exactly as the pipeline feeds them to the encoder:\n"
                                                  "CLIP: BOS, at most max-length − 2 tokens, EOS, padded with the tokenizer's pad id; T5: the pieces\n"
                                                  "truncated to max-length − 1, </s>, padded with <pad>.",
                       opts, MODEL_OPTS_N + 4, NULL, 0, NULL, NULL);
    if (r) return r == 1 ? 0 : 2;
    enum sd3q_component enc;
    if (strcmp(enc_name, "clip_l") == 0) enc = SD3Q_COMP_CLIP_L;
    else if (strcmp(enc_name, "clip_g") == 0) enc = SD3Q_COMP_CLIP_G;
    else if (strcmp(enc_name, "t5") == 0 || strcmp(enc_name, "t5xxl") == 0) enc = SD3Q_COMP_T5;
    else {
        fprintf(stderr, "sd3q tokenize: --encoder must be clip_l, clip_g or t5 (got '%s')\n", enc_name);
        return 2;
    }
    if (!max_len) max_len = enc == SD3Q_COMP_T5 ? 256 : 77;
    if (max_len < 2 && enc != SD3Q_COMP_T5) {
        fprintf(stderr, "sd3q tokenize: --max-length must be at least 2 for CLIP (BOS and EOS)\n");
        return 2;
    }
    struct sd3q_model * m = model_opts_load(&mo, "tokenize");
    if (!m) return 1;
    int32_t * ids = malloc(sizeof(int32_t) * (size_t)max_len);
    int n = 0, rc = 1;
    char err[1024];
    if (!ids) {
        fprintf(stderr, "sd3q tokenize: out of memory\n");
    } else if (sd3q_model_tokenize(m, enc, prompt, (int)max_len, !no_pad, ids, &n, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "sd3q tokenize: %s\n", err);
    } else {
        putchar('[');
        for (int i = 0; i < n; i++) printf(i ? ", %d" : "%d", (int)ids[i]);
        printf("]\n");
        rc = 0;
    }
    free(ids);
    sd3q_model_free(m);
    return rc;
}

// ---- encode-prompt --------------------------------------------------------------------------------------------------

int cmd_encode_prompt(int argc, char ** argv) {
    struct model_opts mo;
    const char * prompt = NULL, * negative = NULL, * out_path = NULL;
    int64_t t5_len = 256;
    int release = 0;
    struct opt opts[MODEL_OPTS_N + 5];
    model_opts_add(&mo, opts);
    opts[MODEL_OPTS_N]     = (struct opt){"--prompt", OPT_STR, &prompt, "the prompt (UTF-8)", 0, 0, 1, 0};
    opts[MODEL_OPTS_N + 1] = (struct opt){"--negative-prompt", OPT_STR, &negative, "also encode this negative prompt (\"\" is valid)", 0, 0, 0, 0};
    opts[MODEL_OPTS_N + 2] = (struct opt){"--t5-max-length", OPT_INT, &t5_len, "T5 tokens (default 256 as diffusers; 77 as the Stability reference)", 1, 65536 - 77, 0, 0};
    opts[MODEL_OPTS_N + 3] = (struct opt){"--output", OPT_STR, &out_path, "safetensors to write (F32)", 0, 0, 1, 0};
    opts[MODEL_OPTS_N + 4] = (struct opt){"--release-pages", OPT_FLAG, &release, "drop the text encoders' weight pages afterwards and report RSS", 0, 0, 0, 0};
    int r = args_parse(argc, argv, 2, "encode-prompt",
                       "Encode a prompt as diffusers' StableDiffusion3Pipeline.encode_prompt does and write prompt_embeds [1,L,D] and\n"
                       "pooled_prompt_embeds [1,P] (plus negative_prompt_embeds and negative_pooled_prompt_embeds with --negative-prompt).\n"
                       "L = 77 + T5 length (77 + 77 zero rows when the model has no T5, as diffusers).",
                       opts, MODEL_OPTS_N + 5, NULL, 0, NULL, NULL);
    if (r) return r == 1 ? 0 : 2;
    struct sd3q_model * m = model_opts_load(&mo, "encode-prompt");
    if (!m) return 1;
    int rc = 1;
    struct sd3q_session * s = NULL;
    float * buf = NULL;
    const int D = sd3q_model_context_dim(m), P = sd3q_model_pooled_dim(m), L = sd3q_model_context_len(m, (int)t5_len);
    if (!D || !P || !L) {
        fprintf(stderr, "sd3q encode-prompt: the model lacks text encoders (needs CLIP-L and CLIP-G, and T5-XXL or an MMDiT for the "
                        "context width); see sd3q inspect\n");
        goto done;
    }
    struct sd3q_session_params sp;
    if ((rc = model_opts_session(&mo, "encode-prompt", &sp)) != 0) goto done;
    rc = 1;
    sp.max_batch    = 1;  // only the text encoders run: keep the MMDiT's share of the arena minimal
    sp.max_latent_h = 2;
    sp.max_latent_w = 2;
    sp.max_context  = L;
    char err[1024];
    if (sd3q_session_init(m, &sp, &s, err, sizeof err) != SD3Q_OK) {
        fprintf(stderr, "sd3q encode-prompt: %s\n", err);
        goto done;
    }
    const int n_sets = negative ? 2 : 1;
    const size_t per = (size_t)L * D + (size_t)P;
    buf = malloc(sizeof(float) * per * (size_t)n_sets);
    if (!buf) {
        fprintf(stderr, "sd3q encode-prompt: out of memory\n");
        goto done;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int k = 0; k < n_sets; k++) {
        float * ctx = buf + per * (size_t)k;
        if (sd3q_session_encode_prompt(s, k ? negative : prompt, (int)t5_len, ctx, ctx + (size_t)L * D) != SD3Q_OK) {
            fprintf(stderr, "sd3q encode-prompt: %s\n", sd3q_session_last_error(s));
            goto done;
        }
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (release) {
        double before = proc_status_mib("RssFile");
        for (int c = SD3Q_COMP_CLIP_L; c <= SD3Q_COMP_T5; c++)
            if (sd3q_model_has(m, (enum sd3q_component)c)) sd3q_model_release_pages(m, (enum sd3q_component)c);
        fprintf(stderr, "sd3q encode-prompt: released the text encoders' pages: RssFile %.1f → %.1f MiB\n", before, proc_status_mib("RssFile"));
    }
    int64_t cs[3] = {1, L, D}, ps[2] = {1, P};
    struct st_wtensor wt[4] = {
        {"prompt_embeds", DT_F32, 3, cs, buf},
        {"pooled_prompt_embeds", DT_F32, 2, ps, buf + (size_t)L * D},
        {"negative_prompt_embeds", DT_F32, 3, cs, buf + per},
        {"negative_pooled_prompt_embeds", DT_F32, 2, ps, buf + per + (size_t)L * D},
    };
    char t5s[32];
    snprintf(t5s, sizeof t5s, "%lld", (long long)t5_len);
    const char * meta[6] = {"prompt", prompt, "t5_max_length", t5s, "negative_prompt", negative ? negative : ""};
    struct sd3q_errbuf e = {{0}};
    if (st_write(out_path, wt, 2 * n_sets, meta, negative ? 3 : 2, &e) != SD3Q_OK) {
        fprintf(stderr, "sd3q encode-prompt: %s\n", e.msg);
        goto done;
    }
    fprintf(stderr, "sd3q encode-prompt: %d prompt(s), context [1, %d, %d], pooled [1, %d]: %.3f s\n", n_sets, L, D, P,
            (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec));
    rc = 0;
done:
    free(buf);
    sd3q_session_free(s);
    sd3q_model_free(m);
    return rc;
}
