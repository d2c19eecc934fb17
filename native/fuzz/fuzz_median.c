/* eg_median_u8 / eg_median_f32: every ISA equals the scalar reference bit for bit, with the same
 * status, for any image size, layout and window (0..8: the invalid 0 and 8 included).
 * Input: [flags] [n] [h] [w: 2 bytes] [c] [window] [pixels...] (pixels repeat to fill the image).
 * float32 pixels are any finite or infinite value; NaN, documented as unspecified, is mapped to 0. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_bytes in = {data, size};
    const uint8_t flags = fz_u8(&in);
    const size_t n = 1 + fz_u8(&in) % 2, h = 1 + fz_u8(&in) % 9, w = 1 + fz_u16(&in) % 136, c = 1 + fz_u8(&in) % 4;
    const int window = fz_u8(&in) % (EG_MEDIAN_MAX_WINDOW + 2);
    const eg_layout layout = (flags & 1) ? EG_LAYOUT_NCHW : EG_LAYOUT_NHWC;
    const size_t total = n * h * w * c;
    if (!(flags & 2)) {
        uint8_t *src = fz_alloc(total), *ref = fz_alloc(total), *out = fz_alloc(total);
        for (size_t i = 0; i < total; i++) src[i] = in.n ? in.p[i % in.n] : (uint8_t)(i * 37);
        const eg_status want = eg_median_u8(src, ref, n, h, w, c, layout, window, EG_ISA_SCALAR);
        for (size_t k = 0; k < FZ_N_SIMD; k++) {
            const eg_isa isa = fz_simd_isas[k];
            if (!fz_isa_on(isa)) continue;
            FZ_REQUIRE(eg_median_u8(src, out, n, h, w, c, layout, window, isa) == want, "u8 status isa=%s", eg_isa_name(isa));
            FZ_REQUIRE(want != EG_OK || memcmp(out, ref, total) == 0, "median u8 isa=%s n=%zu h=%zu w=%zu c=%zu k=%d layout=%d",
                       eg_isa_name(isa), n, h, w, c, window, layout);
        }
        free(src), free(ref), free(out);
    } else {
        const size_t bytes = total * sizeof(float);
        float *src = fz_alloc(bytes), *ref = fz_alloc(bytes), *out = fz_alloc(bytes);
        fz_bytes pixels = in;
        for (size_t i = 0; i < total; i++) {
            if (pixels.n == 0) pixels = in; /* repeat the pixel bytes */
            const float v = fz_f32(&pixels);
            src[i] = isnan(v) ? 0.0f : v;
        }
        const eg_status want = eg_median_f32(src, ref, n, h, w, c, layout, window, EG_ISA_SCALAR);
        for (size_t k = 0; k < FZ_N_SIMD; k++) {
            const eg_isa isa = fz_simd_isas[k];
            if (!fz_isa_on(isa)) continue;
            FZ_REQUIRE(eg_median_f32(src, out, n, h, w, c, layout, window, isa) == want, "f32 status isa=%s", eg_isa_name(isa));
            if (want != EG_OK) continue;
            const size_t i = fz_first_float_difference(out, ref, total);
            FZ_REQUIRE(i == total, "median f32 isa=%s n=%zu h=%zu w=%zu c=%zu k=%d layout=%d i=%zu got %a want %a",
                       eg_isa_name(isa), n, h, w, c, window, layout, i, out[i], ref[i]);
        }
        free(src), free(ref), free(out);
    }
    return 0;
}
