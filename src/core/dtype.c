/*
 * dtype.c — dtype names and bulk conversion to float32 (the scalar reference).
 */
#include "core/dtype.h"

#include <string.h>

static const char * const dtype_names[DT_COUNT] = {"F32", "F16", "BF16", "F8_E4M3", "I8", "U8", "I32", "I64"};

const char * dtype_name(enum dtype t) { return (t >= 0 && t < DT_COUNT) ? dtype_names[t] : "?"; }

int dtype_parse(const char * s, enum dtype * t) {
    for (int i = 0; i < DT_COUNT; i++) {
        if (strcmp(s, dtype_names[i]) == 0) {
            *t = (enum dtype)i;
            return 0;
        }
    }
    return -1;
}

void dtype_to_f32(enum dtype t, const void * src, float * dst, int64_t n) {
    const uint8_t * p = (const uint8_t *)src;
    switch (t) {
        case DT_F32:
            memcpy(dst, src, (size_t)n * 4);
            break;
        case DT_F16:
            for (int64_t i = 0; i < n; i++) {
                uint16_t h;
                memcpy(&h, p + 2 * i, 2);
                dst[i] = f16_to_f32(h);
            }
            break;
        case DT_BF16:
            for (int64_t i = 0; i < n; i++) {
                uint16_t h;
                memcpy(&h, p + 2 * i, 2);
                dst[i] = bf16_to_f32(h);
            }
            break;
        case DT_F8_E4M3:
            for (int64_t i = 0; i < n; i++) dst[i] = f8e4m3_to_f32(p[i]);
            break;
        case DT_I8:
            for (int64_t i = 0; i < n; i++) dst[i] = (float)(int8_t)p[i];
            break;
        case DT_U8:
            for (int64_t i = 0; i < n; i++) dst[i] = (float)p[i];
            break;
        case DT_I32:
            for (int64_t i = 0; i < n; i++) {
                int32_t v;
                memcpy(&v, p + 4 * i, 4);
                dst[i] = (float)v;
            }
            break;
        case DT_I64:
            for (int64_t i = 0; i < n; i++) {
                int64_t v;
                memcpy(&v, p + 8 * i, 8);
                dst[i] = (float)v;
            }
            break;
        case DT_COUNT:
            break;
    }
}
