/* eg_softmax_f32: every ISA, out of place and in place, equals the scalar reference bit for bit
 * (NaN rows: any NaN), and the reference's rows are probabilities when the logits are finite.
 * Input: [rows] [classes: 2 bytes] [logits...] (logits repeat to fill the matrix). */
#include "fuzz_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fz_bytes in = {data, size};
    const size_t rows = 1 + fz_u8(&in) % 4, classes = 1 + fz_u16(&in) % 300, count = rows * classes;
    const size_t bytes = count * sizeof(float);
    float *x = fz_alloc(bytes), *ref = fz_alloc(bytes), *out = fz_alloc(bytes);
    fz_bytes values = in;
    for (size_t i = 0; i < count; i++) {
        if (values.n == 0) values = in;
        x[i] = fz_f32(&values);
    }
    FZ_REQUIRE(eg_softmax_f32(x, ref, rows, classes, EG_ISA_SCALAR) == EG_OK, "softmax scalar status");
    for (size_t r = 0; r < rows; r++) {
        int finite = 1;
        double sum = 0;
        for (size_t i = 0; i < classes; i++) finite &= isfinite(x[r * classes + i]) != 0;
        if (!finite) continue;
        for (size_t i = 0; i < classes; i++) {
            const float p = ref[r * classes + i];
            FZ_REQUIRE(p >= 0.0f && p <= 1.0f, "softmax row %zu value %a outside [0, 1]", r, p);
            sum += p;
        }
        FZ_REQUIRE(fabs(sum - 1.0) <= 1e-4, "softmax row %zu sums to %.9g", r, sum);
    }
    for (size_t k = 0; k < FZ_N_SIMD; k++) {
        const eg_isa isa = fz_simd_isas[k];
        if (!fz_isa_on(isa)) continue;
        FZ_REQUIRE(eg_softmax_f32(x, out, rows, classes, isa) == EG_OK, "softmax status isa=%s", eg_isa_name(isa));
        size_t i = fz_first_float_difference(out, ref, count);
        FZ_REQUIRE(i == count, "softmax isa=%s rows=%zu classes=%zu i=%zu x=%a got %a want %a", eg_isa_name(isa), rows,
                   classes, i, x[i], out[i], ref[i]);
        memcpy(out, x, bytes);
        FZ_REQUIRE(eg_softmax_f32(out, out, rows, classes, isa) == EG_OK, "softmax in place status");
        i = fz_first_float_difference(out, ref, count);
        FZ_REQUIRE(i == count, "softmax in place isa=%s i=%zu", eg_isa_name(isa), i);
    }
    free(x), free(ref), free(out);
    return 0;
}
