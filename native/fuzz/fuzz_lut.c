/* eg_lut_u8: equals a direct statement of the lookup on every ISA, for any size, channel count
 * (1..EG_PREPROCESS_MAX_CHANNELS + 1, the last refused) and layout; ASan sees every byte read.
 * Input: [flags] [n] [h] [w: 2 bytes] [c] [tables: c * 256 bytes, cycled] [pixels...]. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_bytes in = {data, size};
    const uint8_t flags = fz_u8(&in);
    const size_t n = 1 + fz_u8(&in) % 2, h = 1 + fz_u8(&in) % 8, w = 1 + fz_u16(&in) % 100;
    const size_t c = 1 + fz_u8(&in) % (EG_PREPROCESS_MAX_CHANNELS + 1);
    const eg_layout layout = (flags & 1) ? EG_LAYOUT_NCHW : EG_LAYOUT_NHWC;
    const size_t total = n * h * w * c;
    uint8_t *tables = fz_alloc(c * 256), *src = fz_alloc(total), *out = fz_alloc(total);
    for (size_t i = 0; i < c * 256; i++) tables[i] = in.n ? in.p[(i * 7) % in.n] : (uint8_t)(i * 13);
    for (size_t i = 0; i < total; i++) src[i] = in.n ? in.p[i % in.n] : (uint8_t)(i * 37);
    const eg_isa isas[] = {EG_ISA_SCALAR, EG_ISA_SSE2, EG_ISA_AVX2, EG_ISA_AVX512, EG_ISA_NEON};
    for (size_t k = 0; k < sizeof isas / sizeof isas[0]; k++) {
        if (isas[k] != EG_ISA_SCALAR && !fz_isa_on(isas[k])) continue;
        const eg_status s = eg_lut_u8(src, out, n, h, w, c, layout, tables, isas[k]);
        FZ_REQUIRE(s == (c > EG_PREPROCESS_MAX_CHANNELS ? EG_ERR_INVALID_SIZE : EG_OK), "status %d", (int)s);
        if (s != EG_OK) continue;
        for (size_t im = 0; im < n; im++)
            for (size_t p = 0; p < h * w; p++)
                for (size_t ch = 0; ch < c; ch++) {
                    const size_t o = layout == EG_LAYOUT_NHWC ? (im * h * w + p) * c + ch : (im * c + ch) * h * w + p;
                    FZ_REQUIRE(out[o] == tables[ch * 256 + src[(im * h * w + p) * c + ch]], "lut isa=%s c=%zu",
                               eg_isa_name(isas[k]), c);
                }
    }
    free(tables), free(src), free(out);
    return 0;
}
