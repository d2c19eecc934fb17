/* Per-channel 256-entry table lookup: uint8 NHWC images to bytes in NHWC or NCHW.
 *
 * The guard's fused path for models with quantised input: one table per channel folds
 * normalisation, the model's input quantisation and a bit-depth squeezer, so an image
 * goes to the model's integer input in one pass. A lookup has one answer, so this one
 * portable kernel is bit-exact on every ISA; `isa` is checked like everywhere else. */
#include "internal.h"

#include <string.h>

/* One image; the loops are split by channel count so the compiler keeps the tables'
 * base pointers in registers and unrolls the common gray and RGB cases. */
static void lut_image(const uint8_t *restrict src, uint8_t *restrict dst, size_t hw, size_t c, int planar,
                      const uint8_t *restrict tables) {
    if (c == 1) {
        for (size_t p = 0; p < hw; p++) dst[p] = tables[src[p]];
        return;
    }
    if (planar && c == 3) {
        const uint8_t *t0 = tables, *t1 = tables + 256, *t2 = tables + 512;
        uint8_t *d0 = dst, *d1 = dst + hw, *d2 = dst + 2 * hw;
        for (size_t p = 0; p < hw; p++) {
            d0[p] = t0[src[3 * p]];
            d1[p] = t1[src[3 * p + 1]];
            d2[p] = t2[src[3 * p + 2]];
        }
        return;
    }
    for (size_t p = 0; p < hw; p++)
        for (size_t ch = 0; ch < c; ch++) {
            const uint8_t v = tables[ch * 256 + src[p * c + ch]];
            if (planar) dst[ch * hw + p] = v;
            else dst[p * c + ch] = v;
        }
}

eg_status eg_lut_u8(const uint8_t *src, uint8_t *dst, size_t n, size_t h, size_t w, size_t c,
                    eg_layout dst_layout, const uint8_t *tables, eg_isa isa) {
    if (eg__kernels(isa) == NULL) return EG_ERR_UNSUPPORTED_ISA;
    if (dst_layout != EG_LAYOUT_NHWC && dst_layout != EG_LAYOUT_NCHW) return EG_ERR_INVALID_LAYOUT;
    if (c == 0 || c > EG_PREPROCESS_MAX_CHANNELS) return EG_ERR_INVALID_SIZE;
    size_t hw, image, total;
    if (!eg_mul_ok(h, w, &hw) || !eg_mul_ok(hw, c, &image) || !eg_mul_ok(image, n, &total)) return EG_ERR_OVERFLOW;
    if (tables == NULL) return EG_ERR_NULL_POINTER;
    if (total == 0) return EG_OK;
    if (src == NULL || dst == NULL) return EG_ERR_NULL_POINTER;
    if (eg_overlaps(src, total, dst, total) || eg_overlaps(tables, c * 256, dst, total)) return EG_ERR_ALIASING;
    const int planar = dst_layout == EG_LAYOUT_NCHW && c > 1;
    for (size_t i = 0; i < n; i++) lut_image(src + i * image, dst + i * image, hw, c, planar, tables);
    return EG_OK;
}
