/* Public entry points of the detector math: softmax, L1 distance, scores. */
#include "internal.h"

#include <math.h>

static eg_status matrix_size(size_t rows, size_t classes, size_t *bytes) {
    size_t count;
    if (!eg_mul_ok(rows, classes, &count) || !eg_mul_ok(count, sizeof(float), bytes)) return EG_ERR_OVERFLOW;
    if (rows != 0 && classes == 0) return EG_ERR_INVALID_SIZE;
    return EG_OK;
}

eg_status eg_softmax_f32(const float *logits, float *probs, size_t rows, size_t classes, eg_isa isa) {
    const eg_kernels *k = eg__kernels(isa);
    if (k == NULL) return EG_ERR_UNSUPPORTED_ISA;
    size_t bytes;
    eg_status s = matrix_size(rows, classes, &bytes);
    if (s != EG_OK || rows == 0) return s;
    if (logits == NULL || probs == NULL) return EG_ERR_NULL_POINTER;
    if ((const void *)logits != (void *)probs && eg_overlaps(logits, bytes, probs, bytes)) return EG_ERR_ALIASING;
    for (size_t r = 0; r < rows; r++) {
        const float *x = logits + r * classes;
        float *p = probs + r * classes;
        int finite = 1;
        float mx = -INFINITY;
        for (size_t i = 0; i < classes; i++) {
            if (!(x[i] < INFINITY)) finite = 0; /* NaN or +Inf */
            mx = x[i] > mx ? x[i] : mx;
        }
        if (!finite || mx == -INFINITY) { /* undefined softmax: say so with NaN */
            for (size_t i = 0; i < classes; i++) p[i] = NAN;
            continue;
        }
        k->softmax_row(x, p, classes);
    }
    return EG_OK;
}

eg_status eg_l1_distance_f32(const float *a, const float *b, float *out, size_t rows, size_t classes,
                             eg_isa isa) {
    const eg_kernels *k = eg__kernels(isa);
    if (k == NULL) return EG_ERR_UNSUPPORTED_ISA;
    size_t bytes;
    eg_status s = matrix_size(rows, classes, &bytes);
    if (s != EG_OK || rows == 0) return s;
    if (a == NULL || b == NULL || out == NULL) return EG_ERR_NULL_POINTER;
    const size_t out_bytes = rows * sizeof(float);
    if (eg_overlaps(out, out_bytes, a, bytes) || eg_overlaps(out, out_bytes, b, bytes)) return EG_ERR_ALIASING;
    for (size_t r = 0; r < rows; r++) out[r] = k->l1_row(a + r * classes, b + r * classes, classes);
    return EG_OK;
}

eg_status eg_squeeze_scores_f32(const float *original, const float *squeezed, size_t squeezers, size_t rows,
                                size_t classes, float *per_squeezer, float *score, eg_isa isa) {
    const eg_kernels *k = eg__kernels(isa);
    if (k == NULL) return EG_ERR_UNSUPPORTED_ISA;
    size_t bytes, sq_rows, sq_bytes;
    eg_status s = matrix_size(rows, classes, &bytes);
    if (s != EG_OK) return s;
    if (!eg_mul_ok(squeezers, rows, &sq_rows)) return EG_ERR_OVERFLOW;
    s = matrix_size(sq_rows, classes, &sq_bytes);
    if (s != EG_OK) return s;
    if (rows == 0) return EG_OK;
    if (squeezers == 0) return EG_ERR_INVALID_SIZE;
    if (original == NULL || squeezed == NULL || score == NULL) return EG_ERR_NULL_POINTER;
    const size_t score_bytes = rows * sizeof(float), per_bytes = sq_rows * sizeof(float);
    if (eg_overlaps(score, score_bytes, original, bytes) || eg_overlaps(score, score_bytes, squeezed, sq_bytes))
        return EG_ERR_ALIASING;
    if (per_squeezer != NULL &&
        (eg_overlaps(per_squeezer, per_bytes, original, bytes) ||
         eg_overlaps(per_squeezer, per_bytes, squeezed, sq_bytes) ||
         eg_overlaps(per_squeezer, per_bytes, score, score_bytes)))
        return EG_ERR_ALIASING;
    for (size_t r = 0; r < rows; r++) {
        float best = 0.0f;
        for (size_t q = 0; q < squeezers; q++) {
            const float d = k->l1_row(original + r * classes, squeezed + (q * rows + r) * classes, classes);
            if (per_squeezer != NULL) per_squeezer[q * rows + r] = d;
            /* NaN wins, so a broken output can never look benign */
            if (q == 0 || d > best || d != d) best = (best != best) ? best : d;
        }
        score[r] = best;
    }
    return EG_OK;
}
