/* Public entry point of the fused uint8 -> float32 preprocessing. */
#include "internal.h"

#include <math.h>

eg_status eg_preprocess_u8_f32(const uint8_t *src, float *dst, size_t n, size_t h, size_t w, size_t c,
                               eg_layout dst_layout, float scale, const float *mean, const float *std,
                               eg_isa isa) {
    const eg_kernels *k = eg__kernels(isa);
    if (k == NULL) return EG_ERR_UNSUPPORTED_ISA;
    if (dst_layout != EG_LAYOUT_NHWC && dst_layout != EG_LAYOUT_NCHW) return EG_ERR_INVALID_LAYOUT;
    if (c == 0 || c > EG_PREPROCESS_MAX_CHANNELS) return EG_ERR_INVALID_SIZE;
    size_t hw, image, total, bytes;
    if (!eg_mul_ok(h, w, &hw) || !eg_mul_ok(hw, c, &image) || !eg_mul_ok(image, n, &total) ||
        !eg_mul_ok(total, sizeof(float), &bytes))
        return EG_ERR_OVERFLOW;
    if (mean == NULL || std == NULL) return EG_ERR_NULL_POINTER;
    if (!isfinite(scale)) return EG_ERR_INVALID_VALUE;
    /* the flushing rule of eg_preprocess_value (internal.h): kernels get flushed scale and means */
    float flushed_mean[EG_PREPROCESS_MAX_CHANNELS];
    for (size_t ch = 0; ch < c; ch++) {
        if (!isfinite(mean[ch]) || !isfinite(std[ch]) || !(fabsf(std[ch]) >= EG_FLT_MIN)) return EG_ERR_INVALID_VALUE;
        flushed_mean[ch] = eg_flush(mean[ch]);
    }
    scale = eg_flush(scale);
    if (total == 0) return EG_OK;
    if (src == NULL || dst == NULL) return EG_ERR_NULL_POINTER;
    if (eg_overlaps(src, total, dst, bytes)) return EG_ERR_ALIASING;
    const int planar = dst_layout == EG_LAYOUT_NCHW;
    for (size_t i = 0; i < n; i++) k->preprocess(src + i * image, dst + i * image, hw, c, hw, planar, scale, flushed_mean, std);
    return EG_OK;
}
