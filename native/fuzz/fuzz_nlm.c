/* eg_nlm_u8: every ISA equals the scalar reference byte for byte, with the same status, for any
 * image size (1x1 and images smaller than the search window included), channel count 1..4,
 * odd windows and strength (0, subnormal, huge and non-finite ones included: refused alike).
 * Input: [n] [h] [w] [c] [search] [block] [strength: float] [pixels...]. */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_bytes in = {data, size};
    const size_t n = 1 + fz_u8(&in) % 2, h = 1 + fz_u8(&in) % 16, w = 1 + fz_u8(&in) % 40;
    const size_t c = 1 + fz_u8(&in) % 4;
    const int search = 1 + 2 * (fz_u8(&in) % 8), block = 1 + 2 * (fz_u8(&in) % 4);
    const float strength = fz_f32(&in);
    const size_t total = n * h * w * c;
    uint8_t *src = fz_alloc(total), *ref = fz_alloc(total), *out = fz_alloc(total);
    for (size_t i = 0; i < total; i++) src[i] = in.n ? in.p[i % in.n] : (uint8_t)(i * 37);
    size_t bytes = 0;
    const eg_status sized = eg_nlm_scratch_size(h, w, c, search, block, strength, &bytes);
    uint8_t *scratch = sized == EG_OK && bytes ? fz_alloc(bytes) : NULL;
    const eg_status want = eg_nlm_u8(src, ref, n, h, w, c, search, block, strength, scratch, bytes, EG_ISA_SCALAR);
    FZ_REQUIRE(sized == EG_OK || want != EG_OK, "nlm ran although its scratch size was refused (%d)", (int)sized);
    for (size_t k = 0; k < FZ_N_SIMD; k++) {
        const eg_isa isa = fz_simd_isas[k];
        if (!fz_isa_on(isa)) continue;
        FZ_REQUIRE(eg_nlm_u8(src, out, n, h, w, c, search, block, strength, scratch, bytes, isa) == want,
                   "status isa=%s", eg_isa_name(isa));
        if (want != EG_OK) continue;
        for (size_t i = 0; i < total; i++)
            FZ_REQUIRE(out[i] == ref[i], "nlm isa=%s n=%zu h=%zu w=%zu c=%zu %d-%d-%a i=%zu got %u want %u",
                       eg_isa_name(isa), n, h, w, c, search, block, strength, i, out[i], ref[i]);
    }
    free(src), free(ref), free(out), free(scratch);
    return 0;
}
