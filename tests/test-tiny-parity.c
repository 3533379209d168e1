/*
 * test-tiny-parity.c — the embedded tiny model (models/tiny-sd3) through sd3q against the PyTorch pipeline it was
 * trained with (diffusers' StableDiffusion3Pipeline, float32, CPU; fixture by tools/train_tiny/make_parity_fixture.py):
 * same prompt, same injected noise, default settings → final latents within 1e-3 relative error and every 8-bit pixel
 * within 2/255.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "io/json.h"
#include "io/png.h"
#include "io/safetensors.h"
#include "sd3q.h"
#include "testutil.h"

int main(void) {
    cJSON * g;
    struct sd3q_errbuf e;
    SD3Q_ASSERT(json_load(SD3Q_SOURCE_DIR "/tests/golden/tiny/parity.json", &g, &e) == SD3Q_OK);
    struct st_file io;
    SD3Q_ASSERT(st_open(SD3Q_SOURCE_DIR "/tests/golden/tiny/parity.safetensors", &io, &e) == SD3Q_OK);
    struct sd3q_model_params mp = sd3q_model_default_params();
    mp.path = SD3Q_SOURCE_DIR "/models/tiny-sd3";
    struct sd3q_model * m;
    char err[1024];
    SD3Q_ASSERT(sd3q_model_load(&mp, &m, err, sizeof err) == SD3Q_OK);
    int W = (int)cJSON_GetObjectItem(g, "width")->valuedouble, H = (int)cJSON_GetObjectItem(g, "height")->valuedouble;
    int t5 = (int)cJSON_GetObjectItem(g, "max_sequence_length")->valuedouble;
    struct sd3q_session_params sp = sd3q_session_default_params();
    sp.device = SD3Q_DEVICE_CPU, sp.max_batch = 2, sp.max_latent_h = H / 8, sp.max_latent_w = W / 8;
    sp.max_context = sd3q_model_context_len(m, t5);
    struct sd3q_session * s;
    SD3Q_ASSERT(sd3q_session_init(m, &sp, &s, err, sizeof err) == SD3Q_OK);
    const cJSON * cases = cJSON_GetObjectItem(g, "cases");
    int64_t nl = 16LL * (H / 8) * (W / 8), np = 3LL * W * H;
    float * img = malloc(sizeof(float) * (size_t)np), * lat = malloc(sizeof(float) * (size_t)nl);
    uint8_t * a = malloc((size_t)np), * b = malloc((size_t)np);
    for (int i = 0; i < cJSON_GetArraySize(cases); i++) {
        const cJSON * c = cJSON_GetArrayItem(cases, i);
        char nn[32], ln[32], in[32];
        snprintf(nn, sizeof nn, "noise%d", i), snprintf(ln, sizeof ln, "latents%d", i), snprintf(in, sizeof in, "image%d", i);
        int64_t s4[4] = {1, 16, H / 8, W / 8}, l4[4] = {1, 16, H / 8, W / 8}, i4[4] = {1, 3, H, W};
        float * noise = st_read_f32(&io, nn, 4, s4, &e), * lref = st_read_f32(&io, ln, 4, l4, &e), * iref = st_read_f32(&io, in, 4, i4, &e);
        SD3Q_ASSERT(noise && lref && iref);
        struct sd3q_gen_params gp = sd3q_gen_default_params();
        gp.prompt = cJSON_GetObjectItem(c, "prompt")->valuestring;
        gp.negative_prompt = cJSON_GetObjectItem(g, "negative_prompt")->valuestring;
        gp.width = W, gp.height = H, gp.t5_len = t5, gp.steps = (int)cJSON_GetObjectItem(g, "steps")->valuedouble;
        gp.cfg = (float)cJSON_GetObjectItem(g, "guidance")->valuedouble, gp.init_noise = noise;
        enum sd3q_status st = sd3q_session_generate(s, &gp, img, lat, NULL);
        CHECKF(st == SD3Q_OK, "%s", sd3q_session_last_error(s));
        char label[96];
        snprintf(label, sizeof label, "tiny-sd3 case %d latents", i);
        check_tensor(label, lat, lref, nl, 1e-3);
        image_to_rgb8(img, W, H, a);
        image_to_rgb8(iref, W, H, b);
        int worst = 0;
        for (int64_t k = 0; k < np; k++) worst = abs(a[k] - b[k]) > worst ? abs(a[k] - b[k]) : worst;
        printf("tiny-sd3 case %d: largest 8-bit pixel difference %d/255\n", i, worst);
        CHECKF(worst <= 2, "pixel difference %d/255 > 2/255", worst);
        free(noise), free(lref), free(iref);
    }
    free(img), free(lat), free(a), free(b);
    sd3q_session_free(s);
    sd3q_model_free(m);
    st_close(&io);
    cJSON_Delete(g);
    return test_finish("test-tiny-parity");
}
