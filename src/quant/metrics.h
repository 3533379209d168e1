/*
 * metrics.h — image quality metrics for judging quantized models against the full-precision model.
 */
#ifndef SD3Q_QUANT_METRICS_H
#define SD3Q_QUANT_METRICS_H

#include <stdint.h>

// Peak signal-to-noise ratio in dB of 8-bit RGB images [h, w, 3] (+∞ when identical).
double metric_psnr(const uint8_t * a, const uint8_t * b, int w, int h);

// Mean structural similarity (Gaussian 11×11, σ 1.5, K1 0.01, K2 0.03, per channel, valid windows).
double metric_ssim(const uint8_t * a, const uint8_t * b, int w, int h);

#endif
