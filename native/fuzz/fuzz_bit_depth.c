/* eg_bit_depth_u8 / eg_bit_depth_f32: every ISA, out of place and in place, equals the scalar
 * reference bit for bit, with the same status (bits outside 1..8 included).
 * Input: [bits: int8] [data...] (the data read as uint8 pixels, then as float32 values). */
#include "fuzz_common.h"

static void check_u8(const uint8_t *data, size_t count, int bits) {
    uint8_t *src = fz_alloc(count), *ref = fz_alloc(count), *out = fz_alloc(count);
    memcpy(src, data, count);
    const eg_status want = eg_bit_depth_u8(src, ref, count, bits, EG_ISA_SCALAR);
    for (size_t k = 0; k < FZ_N_SIMD; k++) {
        const eg_isa isa = fz_simd_isas[k];
        if (!fz_isa_on(isa)) continue;
        FZ_REQUIRE(eg_bit_depth_u8(src, out, count, bits, isa) == want, "u8 status isa=%s bits=%d", eg_isa_name(isa), bits);
        if (want != EG_OK) continue;
        FZ_REQUIRE(memcmp(out, ref, count) == 0, "u8 isa=%s bits=%d count=%zu", eg_isa_name(isa), bits, count);
        memcpy(out, src, count);
        FZ_REQUIRE(eg_bit_depth_u8(out, out, count, bits, isa) == EG_OK, "u8 in place status");
        FZ_REQUIRE(memcmp(out, ref, count) == 0, "u8 in place isa=%s bits=%d", eg_isa_name(isa), bits);
    }
    free(src), free(ref), free(out);
}

static void check_f32(const uint8_t *data, size_t count, int bits) {
    const size_t bytes = count * sizeof(float);
    float *src = fz_alloc(bytes), *ref = fz_alloc(bytes), *out = fz_alloc(bytes);
    memcpy(src, data, bytes);
    const eg_status want = eg_bit_depth_f32(src, ref, count, bits, EG_ISA_SCALAR);
    for (size_t k = 0; k < FZ_N_SIMD; k++) {
        const eg_isa isa = fz_simd_isas[k];
        if (!fz_isa_on(isa)) continue;
        FZ_REQUIRE(eg_bit_depth_f32(src, out, count, bits, isa) == want, "f32 status isa=%s bits=%d", eg_isa_name(isa), bits);
        if (want != EG_OK) continue;
        size_t i = fz_first_float_difference(out, ref, count);
        FZ_REQUIRE(i == count, "f32 isa=%s bits=%d i=%zu x=%a got %a want %a", eg_isa_name(isa), bits, i, src[i], out[i], ref[i]);
        memcpy(out, src, bytes);
        FZ_REQUIRE(eg_bit_depth_f32(out, out, count, bits, isa) == EG_OK, "f32 in place status");
        i = fz_first_float_difference(out, ref, count);
        FZ_REQUIRE(i == count, "f32 in place isa=%s bits=%d i=%zu", eg_isa_name(isa), bits, i);
    }
    free(src), free(ref), free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_bytes in = {data, size};
    const int bits = (int8_t)fz_u8(&in);
    check_u8(in.p, in.n, bits);
    check_f32(in.p, in.n / sizeof(float), bits);
    return 0;
}
