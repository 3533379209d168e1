/*
 * scheduler.c — the flow-matching sigma schedule of diffusers' FlowMatchEulerDiscreteScheduler (shift, no dynamic
 * shifting), reproduced with the same float32/float64 roundings so that sigmas match its float32 values exactly.
 * (../shared/research/sd3_arch_spec.md §3.1: the shift is applied to the training sigmas and again here.)
 */
#include "model/scheduler.h"

#include <math.h>

// shift(s) = shift·s / (1 + (shift − 1)·s), in float32 as the scheduler's constructor computes it on tensors.
static float shift_f32(float s, float shift) { return shift * s / (1.0f + (shift - 1.0f) * s); }

enum sd3q_status sd3q_schedule(int steps, float shift, float * sigmas) {
    if (steps < 1 || steps > SCHED_MAX_STEPS || !(shift > 0.0f) || !isfinite(shift) || !sigmas) return SD3Q_ERR_INVALID_ARG;
    // constructor: training sigmas (k/1000, k = 1000…1) shifted in float32; sigma_max = first, sigma_min = last
    double sigma_max = (double)shift_f32(1000.0f / 1000.0f, shift);
    double sigma_min = (double)shift_f32(1.0f / 1000.0f, shift);
    // set_timesteps: numpy linspace in float64 over t = 1000·σ, σ = t/1000, shifted again in float64, cast to float32
    double start = sigma_max * 1000.0, stop = sigma_min * 1000.0;
    double step = steps > 1 ? (stop - start) / (double)(steps - 1) : 0.0;
    for (int i = 0; i < steps; i++) {
        double t = (steps > 1 && i == steps - 1) ? stop : (double)i * step + start;
        double s = t / 1000.0;
        s = (double)shift * s / (1.0 + ((double)shift - 1.0) * s);
        sigmas[i] = (float)s;
    }
    sigmas[steps] = 0.0f;
    return SD3Q_OK;
}

float sched_timestep(float sigma) { return sigma * 1000.0f; }
