/* Public entry points of the bit-depth squeezer. */
#include "internal.h"

static eg_status check(const void *src, void *dst, size_t count, size_t elem, int bits, eg_isa isa,
                       const eg_kernels **k) {
    if (bits < 1 || bits > 8) return EG_ERR_INVALID_BITS;
    *k = eg__kernels(isa);
    if (*k == NULL) return EG_ERR_UNSUPPORTED_ISA;
    if (count == 0) return EG_OK;
    if (src == NULL || dst == NULL) return EG_ERR_NULL_POINTER;
    size_t bytes;
    if (!eg_mul_ok(count, elem, &bytes)) return EG_ERR_OVERFLOW;
    if (src != dst && eg_overlaps(src, bytes, dst, bytes)) return EG_ERR_ALIASING;
    return EG_OK;
}

eg_status eg_bit_depth_f32(const float *src, float *dst, size_t count, int bits, eg_isa isa) {
    const eg_kernels *k = NULL;
    eg_status s = check(src, dst, count, sizeof(float), bits, isa, &k);
    if (s == EG_OK && count) k->bit_depth_f32(src, dst, count, bits);
    return s;
}

eg_status eg_bit_depth_u8(const uint8_t *src, uint8_t *dst, size_t count, int bits, eg_isa isa) {
    const eg_kernels *k = NULL;
    eg_status s = check(src, dst, count, 1, bits, isa, &k);
    if (s == EG_OK && count) k->bit_depth_u8(src, dst, count, bits);
    return s;
}
