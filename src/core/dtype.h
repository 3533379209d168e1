/*
 * dtype.h — element types of stored tensors and conversions to float32.
 *
 * Conversions are exact (f16, bf16 and f8_e4m3 are all representable in f32), written as plain C so they are the
 * scalar reference for any SIMD variant.
 */
#ifndef SD3Q_CORE_DTYPE_H
#define SD3Q_CORE_DTYPE_H

#include <stdint.h>
#include <string.h>

// Append-only; explicit values.
enum dtype {
    DT_F32     = 0,
    DT_F16     = 1,
    DT_BF16    = 2,
    DT_F8_E4M3 = 3,
    DT_I8      = 4,
    DT_U8      = 5,
    DT_I32     = 6,
    DT_I64     = 7,
    DT_COUNT
};

// Bytes per element.
static inline int dtype_size(enum dtype t) {
    static const int sz[DT_COUNT] = {4, 2, 2, 1, 1, 1, 4, 8};
    return (t >= 0 && t < DT_COUNT) ? sz[t] : 0;
}

// The safetensors spelling ("F32", "BF16", ...).
const char * dtype_name(enum dtype t);

// Parses a safetensors dtype string; returns 0 and sets *t on success, -1 for an unknown or unsupported type.
int dtype_parse(const char * s, enum dtype * t);

// 1 for the floating-point types that weights may be stored in.
static inline int dtype_is_float(enum dtype t) { return t == DT_F32 || t == DT_F16 || t == DT_BF16 || t == DT_F8_E4M3; }

// IEEE binary16 → float32, exact (subnormals, infinities and NaN included).
static inline float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp  = (h >> 10) & 0x1fu;
    uint32_t man  = h & 0x3ffu;
    uint32_t bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: normalise
            int e = -1;
            do { man <<= 1; e++; } while ((man & 0x400u) == 0);
            man &= 0x3ffu;
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | (man << 13);
        }
    } else if (exp == 0x1f) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// float32 → IEEE binary16, round to nearest even (overflow to infinity).
static inline uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return (uint16_t)(sign | 0x7c00u | (absx > 0x7f800000u ? 0x200u : 0));
    if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);  // rounds to >= 65520: infinity
    if (absx < 0x38800000u) {                                     // result is subnormal or zero
        if (absx < 0x33000000u) return (uint16_t)sign;
        // value = m · 2^(e-150); in units of the f16 subnormal step 2^-24 that is m >> (126 - e)
        uint32_t e = absx >> 23, m = (absx & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - e;
        uint32_t r = m >> shift;
        uint32_t rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) r++;
        return (uint16_t)(sign | r);
    }
    uint32_t r = absx - 0x38000000u;  // rebias exponent 127 -> 15
    uint32_t out = r >> 13, rem = r & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (out & 1u))) out++;
    return (uint16_t)(sign | out);
}

// bfloat16 → float32 (exact).
static inline float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// float32 → bfloat16, round to nearest even; NaN stays NaN.
static inline uint16_t f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40u);
    x += 0x7fffu + ((x >> 16) & 1u);
    return (uint16_t)(x >> 16);
}

// float8 e4m3fn (bias 7, no infinities, S.1111.111 = NaN) → float32, exact.
static inline float f8e4m3_to_f32(uint8_t v) {
    uint32_t sign = (uint32_t)(v & 0x80u) << 24;
    uint32_t exp  = (v >> 3) & 0xfu;
    uint32_t man  = v & 0x7u;
    uint32_t bits;
    if (exp == 0xf && man == 0x7) {
        bits = sign | 0x7fc00000u;
    } else if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else {  // subnormal: man · 2^-9
            int e = -1;
            do { man <<= 1; e++; } while ((man & 0x8u) == 0);
            man &= 0x7u;
            bits = sign | ((uint32_t)(127 - 7 - e) << 23) | (man << 20);
        }
    } else {
        bits = sign | ((exp + 127 - 7) << 23) | (man << 20);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

// Converts n elements of type `t` at `src` (any alignment) to float32.
void dtype_to_f32(enum dtype t, const void * src, float * dst, int64_t n);

#endif
