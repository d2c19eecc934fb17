/* Per-channel 256-entry table lookup: uint8 NHWC images to bytes in NHWC or NCHW.
 *
 * The guard's fused path for models with quantised input: one table per channel folds
 * normalisation, the model's input quantisation and a bit-depth squeezer, so an image
 * goes to the model's integer input in one pass. The row kernels: eg__lut__c (the
 * reference), AVX-512 VBMI byte permutes, AArch64 TBL/TBX; the other ISAs use the
 * reference. */
#include "internal.h"

#include <string.h>

eg_status eg_lut_u8(const uint8_t *src, uint8_t *dst, size_t n, size_t h, size_t w, size_t c,
                    eg_layout dst_layout, const uint8_t *tables, eg_isa isa) {
    const eg_kernels *k = eg__kernels(isa);
    if (k == NULL) return EG_ERR_UNSUPPORTED_ISA;
    if (dst_layout != EG_LAYOUT_NHWC && dst_layout != EG_LAYOUT_NCHW) return EG_ERR_INVALID_LAYOUT;
    if (c == 0 || c > EG_PREPROCESS_MAX_CHANNELS) return EG_ERR_INVALID_SIZE;
    size_t hw, image, total;
    if (!eg_mul_ok(h, w, &hw) || !eg_mul_ok(hw, c, &image) || !eg_mul_ok(image, n, &total)) return EG_ERR_OVERFLOW;
    if (tables == NULL) return EG_ERR_NULL_POINTER;
    if (total == 0) return EG_OK;
    if (src == NULL || dst == NULL) return EG_ERR_NULL_POINTER;
    if (eg_overlaps(src, total, dst, total) || eg_overlaps(tables, c * 256, dst, total)) return EG_ERR_ALIASING;
    const int planar = dst_layout == EG_LAYOUT_NCHW && c > 1;
    for (size_t i = 0; i < n; i++) k->lut(src + i * image, dst + i * image, hw, c, hw, planar, tables);
    return EG_OK;
}
