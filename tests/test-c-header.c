/*
 * test-c-header.c — the public header on its own: this file includes nothing of the project but "sd3q.h" (and the C
 * standard library), is compiled as C11 without GNU extensions like every test, and with the pragmas below any
 * pedantic-ISO, strict-prototype or missing-prototype diagnostic inside sd3q.h is an error at build time. It then
 * calls the header's simple entry points: sd3q_status_str for every status (and out-of-range values),
 * sd3q_version, the two default-parameter functions, sd3q_schedule, and the NULL-tolerant functions.
 * The append-only enum values are part of the ABI and are pinned with static assertions.
 */
#ifdef _GNU_SOURCE
#undef _GNU_SOURCE  // the header must not depend on the build's feature macros
#endif
#if defined(__GNUC__)
#pragma GCC diagnostic error "-Wpedantic"
#pragma GCC diagnostic error "-Wstrict-prototypes"
#pragma GCC diagnostic error "-Wmissing-prototypes"
#pragma GCC diagnostic error "-Wold-style-definition"
#pragma GCC diagnostic error "-Wshadow"
#endif

#include "sd3q.h"

#include <stdio.h>
#include <string.h>

#if defined(__STDC_VERSION__) && __STDC_VERSION__ < 201112L
#error "this test must be compiled as C11 or later"
#endif

_Static_assert(SD3Q_OK == 0 && SD3Q_ERR_INVALID_ARG == 1 && SD3Q_ERR_IO == 2 && SD3Q_ERR_FORMAT == 3 && SD3Q_ERR_SHAPE == 4 &&
                   SD3Q_ERR_MISSING == 5 && SD3Q_ERR_OOM == 6 && SD3Q_ERR_UNSUPPORTED == 7 && SD3Q_ERR_DEVICE == 8 &&
                   SD3Q_ERR_ABORTED == 9 && SD3Q_STATUS_COUNT == 10,
               "status values are append-only");
_Static_assert(SD3Q_COMP_MMDIT == 0 && SD3Q_COMP_CLIP_L == 1 && SD3Q_COMP_CLIP_G == 2 && SD3Q_COMP_T5 == 3 && SD3Q_COMP_VAE == 4 &&
                   SD3Q_COMP_COUNT == 5,
               "component values are append-only");
_Static_assert(SD3Q_DEVICE_AUTO == 0 && SD3Q_DEVICE_CPU == 1 && SD3Q_DEVICE_CUDA == 2, "device values are append-only");

static int failures;

#define EXPECT(cond)                                                      \
    do {                                                                  \
        if (!(cond)) {                                                    \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond); \
            failures++;                                                   \
        }                                                                 \
    } while (0)

int main(void) {
    for (int s = 0; s < SD3Q_STATUS_COUNT; s++) {
        const char * t = sd3q_status_str((enum sd3q_status)s);
        EXPECT(t != NULL && t[0] != '\0');
        printf("sd3q_status_str(%d) = \"%s\"\n", s, t ? t : "(null)");
    }
    EXPECT(strcmp(sd3q_status_str(SD3Q_OK), "ok") == 0);
    EXPECT(sd3q_status_str(SD3Q_STATUS_COUNT) != NULL);
    EXPECT(sd3q_status_str((enum sd3q_status)12345) != NULL);

    const char * v = sd3q_version();
    int major = -1, minor = -1, patch = -1;
    EXPECT(v != NULL && sscanf(v, "%d.%d.%d", &major, &minor, &patch) == 3 && major >= 0 && minor >= 0 && patch >= 0);
    printf("sd3q_version() = \"%s\"\n", v ? v : "(null)");

    struct sd3q_model_params mp = sd3q_model_default_params();
    EXPECT(mp.path == NULL && mp.mmdit_path == NULL && mp.clip_l_path == NULL && mp.clip_g_path == NULL && mp.t5xxl_path == NULL &&
           mp.vae_path == NULL && mp.tokenizer_dir == NULL && mp.allow_extra == 0);

    struct sd3q_session_params sp = sd3q_session_default_params();
    EXPECT(sp.device == SD3Q_DEVICE_AUTO && sp.n_threads == 0 && sp.max_batch == 2 && sp.max_latent_h == 128 && sp.max_latent_w == 128 &&
           sp.max_context == 333);

    float sigmas[29];
    EXPECT(sd3q_schedule(28, 3.0f, sigmas) == SD3Q_OK);
    EXPECT(sigmas[0] == 1.0f && sigmas[28] == 0.0f && sigmas[1] > 0.987f && sigmas[1] < 0.988f);
    EXPECT(sd3q_schedule(0, 3.0f, sigmas) == SD3Q_ERR_INVALID_ARG);
    EXPECT(sd3q_schedule(28, 0.0f, sigmas) == SD3Q_ERR_INVALID_ARG);
    printf("sd3q_schedule(28, 3): sigma[1] = %.6f, sigma[27] = %.6f\n", sigmas[1], sigmas[27]);

    // entry points documented as NULL-tolerant
    struct sd3q_model * m = NULL;
    char err[256];
    EXPECT(sd3q_model_load(NULL, &m, err, sizeof err) == SD3Q_ERR_INVALID_ARG && m == NULL && err[0] != '\0');
    sd3q_model_free(NULL);
    sd3q_session_free(NULL);
    EXPECT(sd3q_model_has(NULL, SD3Q_COMP_MMDIT) == 0);
    EXPECT(sd3q_session_last_error(NULL) != NULL);
    EXPECT(sd3q_session_arena_bytes(NULL) == 0);

    if (failures) {
        fprintf(stderr, "test-c-header: %d check(s) failed\n", failures);
        return 1;
    }
    printf("test-c-header: all checks passed\n");
    return 0;
}
