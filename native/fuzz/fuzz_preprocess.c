/* eg_preprocess_u8_f32: every ISA equals the scalar reference bit for bit (any NaN equals any
 * NaN) with the same status, for any scale, mean and std (zero, non-finite and subnormal
 * included) and channel counts 1..EG_PREPROCESS_MAX_CHANNELS + 1 (the last one is refused).
 * Input: [flags] [n] [h] [w: 2 bytes] [c] [scale] [mean, std per channel] [pixels...] (repeat). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_bytes in = {data, size};
    const uint8_t flags = fz_u8(&in);
    const size_t n = 1 + fz_u8(&in) % 2, h = 1 + fz_u8(&in) % 8, w = 1 + fz_u16(&in) % 100;
    const size_t c = 1 + fz_u8(&in) % (EG_PREPROCESS_MAX_CHANNELS + 1);
    const eg_layout layout = (flags & 1) ? EG_LAYOUT_NCHW : EG_LAYOUT_NHWC;
    const float scale = (flags & 2) ? fz_f32(&in) : 1.0f / 255.0f;
    float mean[EG_PREPROCESS_MAX_CHANNELS + 1], std[EG_PREPROCESS_MAX_CHANNELS + 1];
    for (size_t ch = 0; ch < c; ch++) {
        mean[ch] = fz_f32(&in);
        std[ch] = fz_f32(&in);
    }
    const size_t total = n * h * w * c;
    uint8_t *src = fz_alloc(total);
    float *ref = fz_alloc(total * sizeof(float)), *out = fz_alloc(total * sizeof(float));
    float *mean_exact = fz_alloc(c * sizeof(float)), *std_exact = fz_alloc(c * sizeof(float));
    memcpy(mean_exact, mean, c * sizeof(float));
    memcpy(std_exact, std, c * sizeof(float));
    for (size_t i = 0; i < total; i++) src[i] = in.n ? in.p[i % in.n] : (uint8_t)(i * 37);
    const eg_status want = eg_preprocess_u8_f32(src, ref, n, h, w, c, layout, scale, mean_exact, std_exact, EG_ISA_SCALAR);
    for (size_t k = 0; k < FZ_N_SIMD; k++) {
        const eg_isa isa = fz_simd_isas[k];
        if (!fz_isa_on(isa)) continue;
        FZ_REQUIRE(eg_preprocess_u8_f32(src, out, n, h, w, c, layout, scale, mean_exact, std_exact, isa) == want,
                   "status isa=%s c=%zu", eg_isa_name(isa), c);
        if (want != EG_OK) continue;
        const size_t i = fz_first_float_difference(out, ref, total);
        FZ_REQUIRE(i == total, "preprocess isa=%s n=%zu h=%zu w=%zu c=%zu layout=%d i=%zu got %a want %a",
                   eg_isa_name(isa), n, h, w, c, layout, i, out[i], ref[i]);
    }
    free(src), free(ref), free(out), free(mean_exact), free(std_exact);
    return 0;
}
