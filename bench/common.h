/*
 * common.h — what the benchmarks share. Random weights of SD3-Medium's shapes for the benchmarks, written as safetensors under the original
 * single-file names (so the normal loader memory-maps them, exactly as a real checkpoint).
 *
 * Values are uniform in ±scale per tensor (norm weights are 1), streamed from a few precomputed pools so that a
 * 15 GB file is written at disk speed; the numbers are not meaningful, only their magnitudes, which keep activations
 * in a realistic range.
 */
#ifndef SD3Q_BENCH_COMMON_H
#define SD3Q_BENCH_COMMON_H

#include <stdint.h>

#include "core/dtype.h"

struct bw_file;

// An empty tensor list.
struct bw_file * bw_new(void);

// Frees it.
void bw_free(struct bw_file * f);

// Adds a tensor of up to 4 dims (unused dims 0) with values uniform in ±scale; scale 0 means "all ones".
void bw_add(struct bw_file * f, const char * name, enum dtype t, float scale, int64_t d0, int64_t d1, int64_t d2, int64_t d3);

// SD3-Medium's MMDiT (24 blocks, 1536 wide, 192² position table) under "model.diffusion_model.".
void bw_add_mmdit(struct bw_file * f, enum dtype t);

// A CLIP text tower under `prefix` ("text_encoders.clip_l.transformer."): width, layers, MLP width; with a projection
// (CLIP-G) when projection != 0.
void bw_add_clip(struct bw_file * f, const char * prefix, int width, int layers, int mlp, int projection);

// T5-XXL's encoder under "text_encoders.t5xxl.transformer."; Linear weights in `lin` (F16 or F8_E4M3).
void bw_add_t5(struct bw_file * f, enum dtype lin);

// SD3's VAE (encoder and decoder, 128/256/512/512 channels, 16 latent channels) under "first_stage_model.".
void bw_add_vae(struct bw_file * f);

// Writes the file (temporary name, then rename); returns 0 on success. Prints the time taken.
int bw_write(const struct bw_file * f, const char * path);

// Seconds on the monotonic clock.
double bench_now(void);

// Parses "a,b,c" into up to max ints; returns how many.
int bench_parse_list(const char * s, int * out, int max);

struct backend;

// Prints one line of a CUDA backend's memory (weight copies, backend allocations and their peak, device use), labelled
// `when`; prints nothing for another backend or in a build without CUDA.
void bench_cuda_mem(const char * when, struct backend * bk);

#endif
