/*
 * metrics.c — image quality metrics between a reference and a test image (8-bit RGB, [H, W, 3]).
 *
 * PSNR over all pixels and channels (peak 255). SSIM as Wang et al. 2004 with the usual constants (K1 0.01, K2 0.03,
 * L 255) and an 11×11 Gaussian window (σ 1.5), per channel over every window that lies inside the image ("valid"),
 * averaged over windows and channels — the definition scikit-image's structural_similarity(gaussian_weights=True,
 * use_sample_covariance=False, channel_axis=-1) computes, up to its border handling.
 */
#include "quant/metrics.h"

#include <math.h>
#include <stdlib.h>

double metric_psnr(const uint8_t * a, const uint8_t * b, int w, int h) {
    double se = 0;
    int64_t n = (int64_t)w * h * 3;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        se += d * d;
    }
    if (se == 0) return INFINITY;
    return 10.0 * log10(255.0 * 255.0 / (se / (double)n));
}

double metric_ssim(const uint8_t * a, const uint8_t * b, int w, int h) {
    const int R = 5;  // 11×11 window
    double g[11], gs = 0;
    for (int i = -R; i <= R; i++) gs += (g[i + R] = exp(-(double)(i * i) / (2 * 1.5 * 1.5)));
    for (int i = 0; i < 11; i++) g[i] /= gs;
    if (w < 11 || h < 11) return metric_psnr(a, b, w, h) == INFINITY ? 1.0 : 0.0;
    const double c1 = (0.01 * 255) * (0.01 * 255), c2 = (0.03 * 255) * (0.03 * 255);
    double total = 0;
    int64_t nwin = 0;
    for (int ch = 0; ch < 3; ch++)
        for (int y = R; y < h - R; y++)
            for (int x = R; x < w - R; x++) {
                double ma = 0, mb = 0, saa = 0, sbb = 0, sab = 0;
                for (int dy = -R; dy <= R; dy++)
                    for (int dx = -R; dx <= R; dx++) {
                        double wt = g[dy + R] * g[dx + R];
                        double va = a[((int64_t)(y + dy) * w + (x + dx)) * 3 + ch], vb = b[((int64_t)(y + dy) * w + (x + dx)) * 3 + ch];
                        ma += wt * va, mb += wt * vb, saa += wt * va * va, sbb += wt * vb * vb, sab += wt * va * vb;
                    }
                double va = saa - ma * ma, vb = sbb - mb * mb, cov = sab - ma * mb;
                total += ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (va + vb + c2));
                nwin++;
            }
    return total / (double)nwin;
}
