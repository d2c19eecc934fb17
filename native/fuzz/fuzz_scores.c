/* eg_l1_distance_f32 and eg_squeeze_scores_f32: every ISA equals the scalar reference bit for
 * bit (any NaN equals any NaN), with and without the optional per-squeezer output, and the score
 * is the largest per-squeezer distance.
 * Input: [flags] [squeezers] [rows] [classes: 2 bytes] [values...] (values repeat). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_bytes in = {data, size};
    const uint8_t flags = fz_u8(&in);
    const size_t squeezers = 1 + fz_u8(&in) % 4, rows = 1 + fz_u8(&in) % 4, classes = 1 + fz_u16(&in) % 300;
    const size_t count = rows * classes;
    float *original = fz_alloc(count * sizeof(float)), *squeezed = fz_alloc(squeezers * count * sizeof(float));
    float *l1_ref = fz_alloc(rows * sizeof(float)), *l1 = fz_alloc(rows * sizeof(float));
    float *per_ref = fz_alloc(squeezers * rows * sizeof(float)), *per = fz_alloc(squeezers * rows * sizeof(float));
    float *score_ref = fz_alloc(rows * sizeof(float)), *score = fz_alloc(rows * sizeof(float));
    fz_bytes values = in;
    for (size_t i = 0; i < count + squeezers * count; i++) {
        if (values.n == 0) values = in;
        const float v = fz_f32(&values);
        if (i < count) original[i] = v;
        else squeezed[i - count] = v;
    }
    FZ_REQUIRE(eg_l1_distance_f32(original, squeezed, l1_ref, rows, classes, EG_ISA_SCALAR) == EG_OK, "l1 scalar");
    FZ_REQUIRE(eg_squeeze_scores_f32(original, squeezed, squeezers, rows, classes, per_ref, score_ref,
                                     EG_ISA_SCALAR) == EG_OK, "scores scalar");
    for (size_t r = 0; r < rows; r++) {
        FZ_REQUIRE(fz_same_float(per_ref[r], l1_ref[r]), "squeezer 0's distance is not l1_distance's");
        int any_nan = 0;
        float best = per_ref[r];
        for (size_t q = 0; q < squeezers; q++) {
            const float d = per_ref[q * rows + r];
            any_nan |= isnan(d) != 0;
            if (d > best) best = d;
        }
        if (!any_nan) FZ_REQUIRE(fz_same_float(score_ref[r], best), "score %a is not the largest distance %a", score_ref[r], best);
    }
    for (size_t k = 0; k < FZ_N_SIMD; k++) {
        const eg_isa isa = fz_simd_isas[k];
        if (!fz_isa_on(isa)) continue;
        FZ_REQUIRE(eg_l1_distance_f32(original, squeezed, l1, rows, classes, isa) == EG_OK, "l1 status");
        size_t i = fz_first_float_difference(l1, l1_ref, rows);
        FZ_REQUIRE(i == rows, "l1 isa=%s classes=%zu row=%zu got %a want %a", eg_isa_name(isa), classes, i, l1[i], l1_ref[i]);
        float *per_out = (flags & 1) ? NULL : per;
        FZ_REQUIRE(eg_squeeze_scores_f32(original, squeezed, squeezers, rows, classes, per_out, score, isa) == EG_OK,
                   "scores status");
        i = fz_first_float_difference(score, score_ref, rows);
        FZ_REQUIRE(i == rows, "score isa=%s row=%zu got %a want %a", eg_isa_name(isa), i, score[i], score_ref[i]);
        if (per_out) {
            i = fz_first_float_difference(per, per_ref, squeezers * rows);
            FZ_REQUIRE(i == squeezers * rows, "per-squeezer isa=%s i=%zu", eg_isa_name(isa), i);
        }
    }
    free(original), free(squeezed), free(l1_ref), free(l1), free(per_ref), free(per), free(score_ref), free(score);
    return 0;
}
