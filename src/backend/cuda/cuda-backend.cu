/*
 * cuda-backend.cu — the CUDA backend object: device, stream, library handles, the weight table, host↔device
 * transfers, the sticky error, and the op table that dispatches to the kernels of the other .cu files.
 *
 * Parallelisation: ops run in order on the backend's main stream, or on its side stream between the model's lane
 * calls (backend.h: the MMDiT's text stream beside its image stream); the host only enqueues. Transfers
 * go through a pinned host buffer and a device f32 staging buffer in chunks, converted to/from bf16 on the device.
 * Weights are converted to bf16 on the device too: raw file bytes are copied into the staging buffer and a
 * conversion kernel writes the bf16 copy (bf16 files are copied straight into place).
 *
 * Linear + GELU fusion: a Linear is deferred (not launched) until the next op; when that op is a GELU-tanh in place
 * over exactly the Linear's output, both run as one cuBLASLt GEMM with the GELU(+bias) epilogue. Every other op,
 * transfer or sync launches the deferred Linear first, so the order of effects is unchanged.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cuda/cuda-internal.h"

extern "C" {
#include "core/dtype.h"
}

// ---- errors -------------------------------------------------------------------------------------------------------

// Publishes the sticky message into the session's error buffer when one is attached.
static void publish(struct cuda_backend * c) {
    struct sd3q_errbuf * e = c->base.err ? c->base.err : &c->create_err;
    err_set(e, c->st, "%s", c->msg);
}

// Records a failure of our own in the sticky slot (the first failure wins).
void cuda_fail(struct cuda_backend * c, enum sd3q_status st, const char * fmt, ...) {
    if (c->st != SD3Q_OK) return;  // the first failure is the informative one
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof c->msg, fmt, ap);
    va_end(ap);
    c->st = st;
    publish(c);
}

// Checks a CUDA runtime status; records the failing call's text, file and line.
bool cuda_ok(struct cuda_backend * c, cudaError_t e, const char * call, const char * file, int line) {
    if (e == cudaSuccess) return true;
    cudaGetLastError();  // clear a non-sticky error so later launch checks do not report it again
    const char * f = strrchr(file, '/');
    cuda_fail(c, e == cudaErrorMemoryAllocation ? SD3Q_ERR_OOM : SD3Q_ERR_DEVICE, "CUDA call %.200s failed (%s:%d): %s (%s)", call,
              f ? f + 1 : file, line, cudaGetErrorString(e), cudaGetErrorName(e));
    return false;
}

// Checks a cuBLAS status; records the failing call's text, file and line.
bool cublas_ok(struct cuda_backend * c, cublasStatus_t s, const char * call, const char * file, int line) {
    if (s == CUBLAS_STATUS_SUCCESS) return true;
    const char * f = strrchr(file, '/');
    cuda_fail(c, s == CUBLAS_STATUS_ALLOC_FAILED ? SD3Q_ERR_OOM : SD3Q_ERR_DEVICE, "cuBLAS call %.200s failed (%s:%d): %s", call,
              f ? f + 1 : file, line, cublasGetStatusString(s));
    return false;
}

// Checks the last launch (and synchronises first under $SD3Q_CUDA_SYNC).
bool cuda_launched(struct cuda_backend * c, const char * kernel, const char * file, int line) {
    cudaError_t e = cudaGetLastError();
    if (e == cudaSuccess && c->sync_debug) e = cudaStreamSynchronize(c->stream);
    if (e == cudaSuccess) return true;
    const char * f = strrchr(file, '/');
    cuda_fail(c, SD3Q_ERR_DEVICE, "kernel %s failed (%s:%d): %s (%s)", kernel, f ? f + 1 : file, line, cudaGetErrorString(e),
              cudaGetErrorName(e));
    return false;
}

// ---- memory -------------------------------------------------------------------------------------------------------

// cudaMalloc with accounting; the failure message names what the memory was for.
void * cuda_alloc(struct cuda_backend * c, size_t bytes, const char * what) {
    void * p = NULL;
    if (!CU(c, cudaMalloc(&p, bytes ? bytes : 256))) {
        size_t n = strlen(c->msg);
        snprintf(c->msg + n, sizeof c->msg - n, " while allocating %.1f MiB for %s", (double)bytes / (1 << 20), what);
        publish(c);
        return NULL;
    }
    c->bytes_now += bytes;
    if (c->bytes_now > c->bytes_peak) c->bytes_peak = c->bytes_now;
    return p;
}

// cudaFree with accounting.
void cuda_free_mem(struct cuda_backend * c, void * p, size_t bytes) {
    if (!p) return;
    CU(c, cudaFree(p));
    c->bytes_now -= bytes < c->bytes_now ? bytes : c->bytes_now;
}

// Launches a deferred Linear, if any.
static void flush(struct cuda_backend * c) {
    c->op_serial++;
    if (!c->pend.on) return;
    c->pend.on = 0;
    linear_cuda(c, (bf16 *)c->pend.y, (const bf16 *)c->pend.x, c->pend.M, c->pend.w, c->pend.b, 0);
}

// Launches a deferred Linear and, when the side queue was used, waits for both queues: before transfers, syncs,
// frees and releases, which must see (or outlive) everything queued on either.
static void settle(struct cuda_backend * c) {
    flush(c);
    if (!c->side_used) return;
    CU(c, cudaStreamSynchronize(c->s_side));
    CU(c, cudaStreamSynchronize(c->s_main));
    c->side_used = 0;
}

static size_t cu_act_size(const struct backend * bk) { return sizeof(bf16); }

// Arena: one cudaMalloc of the size a planning pass measured (remembered host-side for the accounting).
static void * cu_arena_alloc(struct backend * bk, size_t bytes) {
    struct cuda_backend * c = cuda_of(bk);
    flush(c);
    size_t n = (bytes + 255) & ~(size_t)255;
    void * p = cuda_alloc(c, n, "the activation arena");
    if (!p) return NULL;
    for (int i = 0; i < ARENAS_MAX; i++)
        if (!c->arenas[i].p) {
            c->arenas[i].p = p, c->arenas[i].bytes = n;
            break;
        }
    return p;
}

// Frees an arena after the queued work that may still use it.
static void cu_arena_free(struct backend * bk, void * p) {
    struct cuda_backend * c = cuda_of(bk);
    if (!p) return;
    settle(c);
    CU(c, cudaStreamSynchronize(c->stream));
    size_t n = 0;
    for (int i = 0; i < ARENAS_MAX; i++)
        if (c->arenas[i].p == p) {
            n = c->arenas[i].bytes;
            c->arenas[i].p = NULL;
            break;
        }
    cuda_free_mem(c, p, n);
}

// Copies n f32 values host → device bf16 through the staging buffers.
static enum sd3q_status cu_upload(struct backend * bk, void * dst, const float * src, int64_t n) {
    struct cuda_backend * c = cuda_of(bk);
    settle(c);
    for (int64_t i = 0; i < n && c->st == SD3Q_OK; i += STAGE_FLOATS) {
        int64_t m = n - i < STAGE_FLOATS ? n - i : STAGE_FLOATS;
        CU(c, cudaStreamSynchronize(c->stream));  // the previous chunk has left the pinned buffer
        memcpy(c->stage_h, src + i, (size_t)m * sizeof(float));
        CU(c, cudaMemcpyAsync(c->stage_d, c->stage_h, (size_t)m * sizeof(float), cudaMemcpyHostToDevice, c->stream));
        convert_f32_to_bf16_cuda(c, (bf16 *)dst + i, c->stage_d, m);
    }
    CU(c, cudaStreamSynchronize(c->stream));
    if (c->st != SD3Q_OK) publish(c);
    return c->st;
}

// Copies n bf16 activations device → host f32 (synchronous: the data is on the host on return).
static enum sd3q_status cu_download(struct backend * bk, float * dst, const void * src, int64_t n) {
    struct cuda_backend * c = cuda_of(bk);
    settle(c);
    for (int64_t i = 0; i < n && c->st == SD3Q_OK; i += STAGE_FLOATS) {
        int64_t m = n - i < STAGE_FLOATS ? n - i : STAGE_FLOATS;
        convert_bf16_to_f32_cuda(c, c->stage_d, (const bf16 *)src + i, m);
        CU(c, cudaMemcpyAsync(c->stage_h, c->stage_d, (size_t)m * sizeof(float), cudaMemcpyDeviceToHost, c->stream));
        if (CU(c, cudaStreamSynchronize(c->stream))) memcpy(dst + i, c->stage_h, (size_t)m * sizeof(float));
    }
    CU(c, cudaStreamSynchronize(c->stream));
    if (c->st != SD3Q_OK) publish(c);
    return c->st;
}

// Launches the deferred Linear, then waits for both queues.
static void cu_sync(struct backend * bk) {
    struct cuda_backend * c = cuda_of(bk);
    settle(c);
    CU(c, cudaStreamSynchronize(c->stream));
}

// ---- weights ------------------------------------------------------------------------------------------------------

// Mixes a pointer's bits for the weight table.
static uint64_t hash_ptr(const void * p) {
    uint64_t x = (uint64_t)(uintptr_t)p;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

// Finds the slot of key (or the empty slot where it would go).
static int64_t wslot(const struct cuda_backend * c, const struct wt * key) {
    int64_t i = (int64_t)(hash_ptr(key) & (uint64_t)(c->wcap - 1));
    while (c->wtab[i].key && c->wtab[i].key != key) i = (i + 1) & (c->wcap - 1);
    return i;
}

// Rebuilds the table with capacity cap; dropping: 1 frees group drop_group's entries, 2 frees the first-use copies
// (group -1) not used by the current op.
static bool wtab_rebuild(struct cuda_backend * c, int64_t cap, int drop_group, int dropping) {
    struct cuda_wentry * old = c->wtab;
    int64_t oldcap = c->wcap;
    struct cuda_wentry * t = (struct cuda_wentry *)calloc((size_t)cap, sizeof(*t));
    if (!t) {
        cuda_fail(c, SD3Q_ERR_OOM, "cuda backend: out of host memory for the weight table");
        return false;
    }
    c->wtab = t;
    c->wcap = cap;
    c->wcount = 0;
    for (int64_t i = 0; i < oldcap; i++) {
        struct cuda_wentry * e = &old[i];
        if (!e->key) continue;
        if ((dropping == 1 && e->group == drop_group) || (dropping == 2 && e->group == -1 && e->slab < 0 && e->last_use < c->op_serial)) {
            if (e->slab < 0) cuda_free_mem(c, e->d, (size_t)e->numel * sizeof(bf16));
            c->weight_bytes -= (size_t)e->numel * sizeof(bf16);
            continue;
        }
        c->wtab[wslot(c, e->key)] = *e;
        c->wcount++;
    }
    free(old);
    return true;
}

// Copies weight w (all parts, any stored type) into the bf16 device buffer d.
static bool upload_weight(struct cuda_backend * c, bf16 * d, const struct wt * w) {
    int64_t esz = dtype_size(w->type), off = 0;
    if (!dtype_is_float(w->type)) {
        cuda_fail(c, SD3Q_ERR_UNSUPPORTED, "cuda backend: weight %s has non-float type %s", w->name, dtype_name(w->type));
        return false;
    }
    for (int p = 0; p < w->nparts; p++) {
        int64_t n = w->part[p].rows * w->row_elems;
        const uint8_t * src = w->part[p].data;
        if (w->type == DT_BF16) {
            if (!CU(c, cudaMemcpyAsync(d + off, src, (size_t)n * 2, cudaMemcpyHostToDevice, c->stream))) return false;
        } else {
            int64_t chunk = (int64_t)STAGE_FLOATS * 4 / esz;  // elements per staging load
            for (int64_t i = 0; i < n; i += chunk) {
                int64_t m = n - i < chunk ? n - i : chunk;
                // on the backend's stream: a plain cudaMemcpy from pageable memory may return before its DMA lands,
                // and the legacy stream does not order with our non-blocking stream
                if (!CU(c, cudaStreamSynchronize(c->stream))) return false;  // staging free again
                if (!CU(c, cudaMemcpyAsync(c->stage_d, src + i * esz, (size_t)(m * esz), cudaMemcpyHostToDevice, c->stream))) return false;
                convert_weight_cuda(c, d + off + i, c->stage_d, w->type, m);
            }
        }
        off += n;
    }
    return CU(c, cudaStreamSynchronize(c->stream));
}

// Device memory for a first-use weight copy. When the card is full, the first-use copies that the current op does not
// use are freed first (this is what keeps only the running component resident on a small card) and the
// allocation is tried again; only then is out-of-memory an error.
static bf16 * weight_alloc(struct cuda_backend * c, size_t bytes, const char * name) {
    void * p = NULL;
    if (cudaMalloc(&p, bytes) != cudaSuccess) {
        cudaGetLastError();
        CU(c, cudaStreamSynchronize(c->stream));
        size_t before = c->weight_bytes;
        wtab_rebuild(c, c->wcap, 0, 2);
        if (c->weight_bytes == before || cudaMalloc(&p, bytes) != cudaSuccess) {
            cudaGetLastError();
            return (bf16 *)cuda_alloc(c, bytes, name);  // records the failure with the call's name
        }
    }
    c->bytes_now += bytes;
    if (c->bytes_now > c->bytes_peak) c->bytes_peak = c->bytes_now;
    return (bf16 *)p;
}

// Inserts an entry for w whose copy lives at d (slab >= 0) or gets its own allocation (slab < 0).
static struct cuda_wentry * wtab_insert(struct cuda_backend * c, const struct wt * w, int group, bf16 * d, int slab) {
    int64_t numel = wt_numel(w);
    if (!d) {  // before the slot is chosen: making room may rebuild the table
        d = weight_alloc(c, (size_t)numel * sizeof(bf16), w->name);
        if (!d) return NULL;
        slab = -1;
    }
    if ((c->wcount + 1) * 2 > c->wcap && !wtab_rebuild(c, c->wcap * 2, 0, 0)) return NULL;
    int64_t i = wslot(c, w);
    struct cuda_wentry * e = &c->wtab[i];
    if (e->key) {  // stale copy (same struct, new data): drop it
        if (e->slab < 0) cuda_free_mem(c, e->d, (size_t)e->numel * sizeof(bf16));
        c->weight_bytes -= (size_t)e->numel * sizeof(bf16);
        c->wcount--;
    }
    *e = (struct cuda_wentry){w, w->part[0].data, numel, d, group, slab, c->op_serial};
    c->wcount++;
    c->weight_bytes += (size_t)numel * sizeof(bf16);
    if (!upload_weight(c, d, w)) return NULL;
    return e;
}

// A cached entry is valid when it was made from the same data pointer and element count.
static struct cuda_wentry * wtab_find(struct cuda_backend * c, const struct wt * w) {
    struct cuda_wentry * e = &c->wtab[wslot(c, w)];
    if (!e->key || e->data0 != w->part[0].data || e->numel != wt_numel(w)) return NULL;
    return e;
}

// The bf16 copy of w, copied on first use (group -1) when not prepared.
const bf16 * cuda_weight(struct cuda_backend * c, const struct wt * w) {
    if (!w || !wt_present(w)) return NULL;
    struct cuda_wentry * e = wtab_find(c, w);
    if (!e) e = wtab_insert(c, w, -1, NULL, -1);
    if (e) e->last_use = c->op_serial;
    return e ? e->d : NULL;
}

// Copies the listed weights not yet held into one allocation tagged with `group`.
static enum sd3q_status cu_prepare(struct backend * bk, int group, const struct wt * const * w, int64_t n) {
    struct cuda_backend * c = cuda_of(bk);
    settle(c);
    size_t total = 0;
    for (int64_t i = 0; i < n; i++)
        if (wt_present(w[i]) && !wtab_find(c, w[i])) total += ((size_t)wt_numel(w[i]) * sizeof(bf16) + 255) & ~(size_t)255;
    if (total == 0) return c->st;
    if (c->nslabs == c->slabcap) {
        int cap = c->slabcap ? 2 * c->slabcap : 16;
        struct cuda_slab * s = (struct cuda_slab *)realloc(c->slabs, sizeof(*s) * (size_t)cap);
        if (!s) {
            cuda_fail(c, SD3Q_ERR_OOM, "cuda backend: out of host memory");
            return c->st;
        }
        c->slabs = s, c->slabcap = cap;
    }
    char what[64];
    snprintf(what, sizeof what, "the weights of component %d", group);
    uint8_t * base = (uint8_t *)cuda_alloc(c, total, what);
    if (!base) return c->st;
    int slab = c->nslabs++;
    c->slabs[slab] = (struct cuda_slab){base, total, group};
    size_t off = 0;
    for (int64_t i = 0; i < n && c->st == SD3Q_OK; i++) {
        if (!wt_present(w[i]) || wtab_find(c, w[i])) continue;
        wtab_insert(c, w[i], group, (bf16 *)(base + off), slab);
        off += ((size_t)wt_numel(w[i]) * sizeof(bf16) + 255) & ~(size_t)255;
    }
    return c->st;
}

// Frees the copies of one residency group (after the queued work).
static void cu_release(struct backend * bk, int group) {
    struct cuda_backend * c = cuda_of(bk);
    settle(c);
    CU(c, cudaStreamSynchronize(c->stream));
    wtab_rebuild(c, c->wcap, group, 1);
    for (int s = 0; s < c->nslabs; s++)
        if (c->slabs[s].p && c->slabs[s].group == group) {
            cuda_free_mem(c, c->slabs[s].p, c->slabs[s].bytes);
            c->slabs[s].p = NULL;
        }
}

// ---- ops ----------------------------------------------------------------------------------------------------------

#define C_ (cuda_of(bk))
#define B16(p) ((bf16 *)(p))
#define CB16(p) ((const bf16 *)(p))

// Defers the Linear (see fuse_gelu) or runs it now when fusion is off.
static void cu_linear(struct backend * bk, void * y, const void * x, int64_t M, const struct wt * w, const struct wt * b) {
    struct cuda_backend * c = C_;
    flush(c);
    if (b && !wt_present(b)) b = NULL;
    if (c->fuse) {
        c->pend.on = 1, c->pend.y = y, c->pend.x = x, c->pend.M = M, c->pend.w = w, c->pend.b = b;
        return;
    }
    linear_cuda(c, B16(y), CB16(x), M, w, b, 0);
}

// 1 when an in-place GELU-tanh over n elements at y is exactly the deferred Linear's output (then runs it fused).
static int fuse_gelu(struct cuda_backend * c, void * y, const void * x, int64_t n) {
    if (!c->pend.on || y != x || y != c->pend.y || n != c->pend.M * c->pend.w->shape[0]) return 0;
    c->pend.on = 0;
    linear_cuda(c, B16(y), CB16(c->pend.x), c->pend.M, c->pend.w, c->pend.b, 1);
    return 1;
}

// Activation; an in-place GELU-tanh over the deferred Linear's output fuses into its GEMM.
static void cu_act(struct backend * bk, void * y, const void * x, int64_t n, enum act_kind k) {
    if (k == ACT_GELU_TANH && fuse_gelu(C_, y, x, n)) return;
    flush(C_);
    act_cuda(C_, B16(y), CB16(x), n, (int)k);
}

// In-place GELU-tanh (fused into a deferred Linear when it follows one).
static void cu_gelu_tanh(struct backend * bk, void * x, int64_t n) {
    if (fuse_gelu(C_, x, x, n)) return;
    flush(C_);
    act_cuda(C_, B16(x), CB16(x), n, ACT_GELU_TANH);
}

// SiLU.
static void cu_silu(struct backend * bk, void * y, const void * x, int64_t n) {
    flush(C_);
    act_cuda(C_, B16(y), CB16(x), n, ACT_SILU);
}

// Gated activation (T5).
static void cu_gated_act(struct backend * bk, void * y, const void * x, int64_t rows, int64_t F, enum act_kind k) {
    flush(C_);
    gated_act_cuda(C_, B16(y), CB16(x), rows, F, (int)k);
}

// LayerNorm + adaLN modulation.
static void cu_ln_modulate(struct backend * bk, void * y, const void * x, int64_t B, int64_t T, int64_t D, const void * shift,
                           const void * scale, int64_t mod_stride, float eps) {
    flush(C_);
    ln_modulate_cuda(C_, B16(y), CB16(x), B, T, D, CB16(shift), CB16(scale), mod_stride, eps);
}

// Per-head RMSNorm of q or k inside a fused qkv buffer.
static void cu_rmsnorm_heads(struct backend * bk, void * qkv, int64_t rows, int64_t D, int64_t col_off, int64_t HD,
                             const struct wt * w, float eps) {
    flush(C_);
    rmsnorm_heads_cuda(C_, B16(qkv), rows, D, col_off, HD, cuda_weight(C_, w), eps);
}

// Joint attention over segments (flash kernel or the general path).
static void cu_attention(struct backend * bk, const struct attn_seg * seg, int nseg, int64_t B, int64_t NH, int64_t HD, float scale,
                         const struct attn_opts * opt) {
    flush(C_);
    attention_cuda(C_, seg, nseg, B, NH, HD, scale, opt ? opt->causal : 0, opt ? CB16(opt->bias) : NULL);
}

// x += gate ⊙ y.
static void cu_gate_residual(struct backend * bk, void * x, const void * y, const void * gate, int64_t B, int64_t T, int64_t D,
                             int64_t mod_stride) {
    flush(C_);
    gate_residual_cuda(C_, B16(x), CB16(y), CB16(gate), B, T, D, mod_stride);
}

// x += gate ⊙ y, then h = LN(x) modulated, in one kernel.
static void cu_gate_ln_modulate(struct backend * bk, void * h, void * x, const void * y, const void * gate, int64_t gate_stride, int64_t B,
                                int64_t T, int64_t D, const void * shift, const void * scale, int64_t mod_stride, float eps) {
    flush(C_);
    gate_ln_modulate_cuda(C_, B16(h), B16(x), CB16(y), CB16(gate), gate_stride, B, T, D, CB16(shift), CB16(scale), mod_stride, eps);
}

// y += x (a gate-free gate_residual).
static void cu_add(struct backend * bk, void * y, const void * x, int64_t n) {
    flush(C_);
    gate_residual_cuda(C_, B16(y), CB16(x), NULL, 1, 1, n, 0);
}

// Latent → patch columns.
static void cu_patchify(struct backend * bk, void * cols, const void * x, int64_t B, int64_t C, int64_t H, int64_t W, int64_t p) {
    flush(C_);
    patchify_cuda(C_, B16(cols), CB16(x), B, C, H, W, p);
}

// Adds the centre-cropped position table (copied to the device once).
static void cu_add_pos_embed(struct backend * bk, void * tok, const struct wt * pos, int64_t B, int64_t gh, int64_t gw, int64_t grid,
                             int64_t D) {
    flush(C_);
    const bf16 * p = cuda_weight(C_, pos);
    if (p) add_pos_embed_cuda(C_, B16(tok), p, B, gh, gw, grid, D);
}

// Patch tokens → latent.
static void cu_unpatchify(struct backend * bk, void * y, const void * tok, int64_t B, int64_t C, int64_t gh, int64_t gw, int64_t p) {
    flush(C_);
    unpatchify_cuda(C_, B16(y), CB16(tok), B, C, gh, gw, p);
}

// LayerNorm with optional affine weights.
static void cu_layernorm(struct backend * bk, void * y, const void * x, int64_t rows, int64_t D, const struct wt * w, const struct wt * b,
                         float eps) {
    flush(C_);
    layernorm_cuda(C_, B16(y), CB16(x), rows, D, cuda_weight(C_, w), cuda_weight(C_, b), eps);
}

// RMSNorm (T5).
static void cu_rmsnorm(struct backend * bk, void * y, const void * x, int64_t rows, int64_t D, const struct wt * w, float eps) {
    flush(C_);
    rmsnorm_cuda(C_, B16(y), CB16(x), rows, D, cuda_weight(C_, w), eps);
}

// 2-D convolution.
static void cu_conv2d(struct backend * bk, void * y, const void * x, int64_t B, int64_t Cin, int64_t H, int64_t W, const struct wt * w,
                      const struct wt * b, int stride, int pt, int pl, int pb, int pr) {
    flush(C_);
    conv2d_cuda(C_, B16(y), CB16(x), B, Cin, H, W, w, b && wt_present(b) ? b : NULL, stride, pt, pl, pb, pr);
}

// GroupNorm (+SiLU).
static void cu_group_norm(struct backend * bk, void * y, const void * x, int64_t B, int64_t C, int64_t HW, int64_t groups,
                          const struct wt * w, const struct wt * b, float eps, int silu) {
    flush(C_);
    group_norm_cuda(C_, B16(y), CB16(x), B, C, HW, groups, cuda_weight(C_, w), cuda_weight(C_, b), eps, silu);
}

// Nearest ×2 upsampling.
static void cu_upsample2x(struct backend * bk, void * y, const void * x, int64_t B, int64_t C, int64_t H, int64_t W) {
    flush(C_);
    upsample2x_cuda(C_, B16(y), CB16(x), B, C, H, W);
}

// Batched transpose.
static void cu_transpose(struct backend * bk, void * y, const void * x, int64_t B, int64_t R, int64_t C) {
    flush(C_);
    transpose_cuda(C_, B16(y), CB16(x), B, R, C);
}

// ---- creation -----------------------------------------------------------------------------------------------------

// Two queues (see backend.h): the MMDiT's text stream runs on s_side beside the image stream, whose Linears fill the
// GPU while the text stream's (333 tokens per image: 141–395 TFLOP/s alone on an H100 or H200) do not. Each queue has
// its own cuBLAS(Lt) workspace, so GEMMs on both never share one. A deferred Linear is launched before any switch.
static void cu_lane(struct backend * bk, int op) {
    struct cuda_backend * c = C_;
    flush(c);
    if (c->st != SD3Q_OK || c->lanes_off) return;
    switch (op) {
    case BACKEND_LANE_MAIN:
    case BACKEND_LANE_SIDE:
        c->stream = op == BACKEND_LANE_SIDE ? c->s_side : c->s_main;
        c->lt_ws  = op == BACKEND_LANE_SIDE ? c->lt_ws_side : c->lt_ws_main;
        if (op == BACKEND_LANE_SIDE) c->side_used = 1;
        CUBLAS(c, cublasSetStream(c->blas, c->stream));
        CUBLAS(c, cublasSetWorkspace(c->blas, c->lt_ws, LT_WORKSPACE));
        break;
    case BACKEND_LANE_FORK:
        if (CU(c, cudaEventRecord(c->ev_fork, c->s_main))) CU(c, cudaStreamWaitEvent(c->s_side, c->ev_fork, 0));
        break;
    case BACKEND_LANE_JOIN:
        if (CU(c, cudaEventRecord(c->ev_join, c->s_side))) CU(c, cudaStreamWaitEvent(c->s_main, c->ev_join, 0));
        break;
    default:
        cuda_fail(c, SD3Q_ERR_UNSUPPORTED, "cuda backend: lane operation %d", op);
    }
}

// Frees the backend and everything it owns (device memory, handles, events).
static void cu_free(struct backend * bk) {
    struct cuda_backend * c = C_;
    if (!c) return;
    c->pend.on = 0;
    if (c->s_side) cudaStreamSynchronize(c->s_side);
    if (c->s_main) cudaStreamSynchronize(c->s_main);
    if (c->wtab) {
        for (int64_t i = 0; i < c->wcap; i++)
            if (c->wtab[i].key && c->wtab[i].slab < 0) cudaFree(c->wtab[i].d);
        free(c->wtab);
    }
    for (int s = 0; s < c->nslabs; s++) cudaFree(c->slabs[s].p);
    free(c->slabs);
    lt_plans_free(c);
    cudaFree(c->lt_ws_main);
    cudaFree(c->lt_ws_side);
    cudaFree(c->stage_d);
    cudaFreeHost(c->stage_h);
    cudaFree(c->attn_ws);
    cudaFree(c->conv_ws);
    cudaFree(c->gn_part);
    for (int i = 0; i < CUDA_EVENTS; i++)
        if (c->ev[i]) cudaEventDestroy(c->ev[i]);
    if (c->blas) cublasDestroy(c->blas);
    if (c->lt) cublasLtDestroy(c->lt);
    if (c->ev_fork) cudaEventDestroy(c->ev_fork);
    if (c->ev_join) cudaEventDestroy(c->ev_join);
    if (c->s_main) cudaStreamDestroy(c->s_main);
    if (c->s_side) cudaStreamDestroy(c->s_side);
    free(c);
}

static const struct backend_ops cuda_ops = {
    /* name          */ "cuda",
    /* free          */ cu_free,
    /* act_size      */ cu_act_size,
    /* arena_alloc   */ cu_arena_alloc,
    /* arena_free    */ cu_arena_free,
    /* upload        */ cu_upload,
    /* download      */ cu_download,
    /* linear        */ cu_linear,
    /* ln_modulate   */ cu_ln_modulate,
    /* rmsnorm_heads */ cu_rmsnorm_heads,
    /* attention     */ cu_attention,
    /* gelu_tanh     */ cu_gelu_tanh,
    /* silu          */ cu_silu,
    /* gate_residual */ cu_gate_residual,
    /* add           */ cu_add,
    /* patchify      */ cu_patchify,
    /* add_pos_embed */ cu_add_pos_embed,
    /* unpatchify    */ cu_unpatchify,
    /* act           */ cu_act,
    /* gated_act     */ cu_gated_act,
    /* layernorm     */ cu_layernorm,
    /* rmsnorm       */ cu_rmsnorm,
    /* conv2d        */ cu_conv2d,
    /* group_norm    */ cu_group_norm,
    /* upsample2x    */ cu_upsample2x,
    /* transpose     */ cu_transpose,
    /* sync          */ cu_sync,
    /* prepare       */ cu_prepare,
    /* release       */ cu_release,
    /* lane          */ cu_lane,
    /* gate_ln_mod.  */ cu_gate_ln_modulate,
};

// Picks the device: $SD3Q_CUDA_DEVICE or 0.
static int pick_device(void) {
    const char * s = getenv("SD3Q_CUDA_DEVICE");
    return s ? atoi(s) : 0;
}

// See cuda-backend.h.
extern "C" int backend_cuda_available(void) {
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
        cudaGetLastError();
        return 0;
    }
    int dev = pick_device(), major = 0;
    if (dev < 0 || dev >= n || cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return major >= 8;
}

// See cuda-backend.h: device, stream, handles, workspaces, weight table.
extern "C" enum sd3q_status backend_cuda_create(const struct backend_plan * plan, struct backend ** out, struct sd3q_errbuf * e) {
    *out = NULL;
    struct cuda_backend * c = (struct cuda_backend *)calloc(1, sizeof(*c));
    if (!c) return err_set(e, SD3Q_ERR_OOM, "cuda backend: out of memory");
    c->base.ops = &cuda_ops;
    c->base.err = e;
    c->plan     = *plan;
    c->fuse     = getenv("SD3Q_CUDA_NO_FUSE") == NULL;
    c->lanes_off = getenv("SD3Q_CUDA_NO_LANES") != NULL;
    const char * sd = getenv("SD3Q_CUDA_SYNC");
    c->sync_debug = sd && *sd && *sd != '0';
    c->attn_general = getenv("SD3Q_CUDA_ATTN_GENERAL") != NULL;
    c->tune = getenv("SD3Q_CUDA_NO_TUNE") == NULL;
    const char * lc = getenv("SD3Q_CUDA_LT_CAND");  // a benchmarking knob: out-of-range values keep the default
    c->lt_cand = lc && atoi(lc) >= 1 && atoi(lc) <= LT_CANDIDATES ? atoi(lc) : LT_CAND_DEFAULT;
    c->dev = pick_device();
    cudaDeviceProp prop;
    if (CU(c, cudaSetDevice(c->dev)) && CU(c, cudaGetDeviceProperties(&prop, c->dev))) {
        snprintf(c->name, sizeof c->name, "%s", prop.name);
        c->cc   = prop.major * 10 + prop.minor;
        c->n_sm = prop.multiProcessorCount;
        if (c->cc < 80) cuda_fail(c, SD3Q_ERR_UNSUPPORTED, "cuda backend: %s has compute capability %d.%d; 8.0 or newer is needed", c->name,
                                  prop.major, prop.minor);
    }
    const char * fv = getenv("SD3Q_CUDA_FA");  // a variant this device cannot run falls back to the automatic choice
    c->fa_variant = fv && cuda_attention_variant_ok(c, atoi(fv)) ? atoi(fv) : BACKEND_CUDA_FA_AUTO;
    if (c->st == SD3Q_OK) {
        CU(c, cudaStreamCreateWithFlags(&c->s_main, cudaStreamNonBlocking));
        CU(c, cudaStreamCreateWithFlags(&c->s_side, cudaStreamNonBlocking));
        CU(c, cudaEventCreateWithFlags(&c->ev_fork, cudaEventDisableTiming));
        CU(c, cudaEventCreateWithFlags(&c->ev_join, cudaEventDisableTiming));
        c->stream = c->s_main;
        CUBLAS(c, cublasLtCreate(&c->lt));
        if (CUBLAS(c, cublasCreate(&c->blas))) {
            CUBLAS(c, cublasSetStream(c->blas, c->stream));
            CUBLAS(c, cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));
        }
        for (int i = 0; i < CUDA_EVENTS && c->st == SD3Q_OK; i++) CU(c, cudaEventCreate(&c->ev[i]));
    }
    if (c->st == SD3Q_OK) {
        c->lt_ws_main = c->lt_ws = cuda_alloc(c, LT_WORKSPACE, "the cuBLASLt workspace");
        c->lt_ws_side = cuda_alloc(c, LT_WORKSPACE, "the side queue's cuBLASLt workspace");
        c->stage_d = (float *)cuda_alloc(c, (size_t)STAGE_FLOATS * sizeof(float), "the transfer staging buffer");
        c->gn_part = (double *)cuda_alloc(c, (size_t)GN_PARTIALS * 2 * sizeof(double), "group-norm statistics");
        if (c->st == SD3Q_OK) CU(c, cudaMallocHost((void **)&c->stage_h, (size_t)STAGE_FLOATS * sizeof(float)));
        if (c->st == SD3Q_OK) CUBLAS(c, cublasSetWorkspace(c->blas, c->lt_ws, LT_WORKSPACE));
    }
    if (c->st == SD3Q_OK) {
        c->wcap = 1024;
        c->wtab = (struct cuda_wentry *)calloc((size_t)c->wcap, sizeof(*c->wtab));
        if (!c->wtab) cuda_fail(c, SD3Q_ERR_OOM, "cuda backend: out of memory");
    }
    if (c->st != SD3Q_OK) {
        enum sd3q_status st = c->st;
        err_set(e, st, "%s", c->msg);
        c->base.err = NULL;
        cu_free(&c->base);
        return st;
    }
    c->base.err = NULL;
    *out = &c->base;
    return SD3Q_OK;
}

// See cuda-backend.h.
extern "C" int backend_cuda_is(const struct backend * bk) { return bk && bk->ops == &cuda_ops; }

// See cuda-backend.h.
extern "C" const void * backend_cuda_weight(struct backend * bk, const struct wt * w) {
    if (!backend_cuda_is(bk)) return NULL;
    flush(cuda_of(bk));
    return cuda_weight(cuda_of(bk), w);
}

// See cuda-backend.h.
extern "C" int backend_cuda_set_attention_variant(struct backend * bk, int v) {
    if (!backend_cuda_is(bk)) return -1;
    int old = cuda_of(bk)->fa_variant;
    if (v == BACKEND_CUDA_FA_AUTO || cuda_attention_variant_ok(cuda_of(bk), v)) cuda_of(bk)->fa_variant = v;
    return old;
}

// See cuda-backend.h.
extern "C" int backend_cuda_attention_variant_for(struct backend * bk, int64_t L) {
    return backend_cuda_is(bk) ? cuda_attention_pick(cuda_of(bk), L) : -1;
}

// See cuda-backend.h.
extern "C" int backend_cuda_attention_variants(void) { return FA_VARIANTS; }

// See cuda-backend.h.
extern "C" int backend_cuda_device_name(const struct backend * bk, char * buf, size_t size) {
    if (!backend_cuda_is(bk)) return -1;
    snprintf(buf, size, "%s", ((const struct cuda_backend *)bk)->name);
    return 0;
}

// See cuda-backend.h.
extern "C" int backend_cuda_mem_info(const struct backend * bk, struct cuda_mem_info * mi) {
    if (!backend_cuda_is(bk)) return -1;
    const struct cuda_backend * c = (const struct cuda_backend *)bk;
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) != cudaSuccess) cudaGetLastError();
    mi->weights_now  = c->weight_bytes;
    mi->backend_now  = c->bytes_now;
    mi->backend_peak = c->bytes_peak;
    mi->device_used  = tot - fr;
    mi->device_total = tot;
    return 0;
}

// See cuda-backend.h.
extern "C" int backend_cuda_mark(struct backend * bk, int slot) {
    if (!backend_cuda_is(bk) || slot < 0 || slot >= CUDA_EVENTS - 2) return -1;  // the last two time the GEMM tuning
    struct cuda_backend * c = cuda_of(bk);
    flush(c);
    return CU(c, cudaEventRecord(c->ev[slot], c->stream)) ? 0 : -1;
}

// See cuda-backend.h.
extern "C" double backend_cuda_elapsed_ms(struct backend * bk, int a, int b) {
    if (!backend_cuda_is(bk) || a < 0 || b < 0 || a >= CUDA_EVENTS - 2 || b >= CUDA_EVENTS - 2) return -1;
    struct cuda_backend * c = cuda_of(bk);
    float ms = -1;
    if (!CU(c, cudaEventSynchronize(c->ev[b])) || !CU(c, cudaEventElapsedTime(&ms, c->ev[a], c->ev[b]))) return -1;
    return ms;
}
