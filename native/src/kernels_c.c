/* Portable scalar reference for every kernel. The SIMD files must match these
 * bit for bit; keep them simple enough to be obviously right. */
#include "internal.h"

#include <math.h>
#include <string.h>

/* ---------------------------------------------------------------- bit depth */

#include "bit_depth_tables.inc"

float eg__bit_depth_f32_one(float x, float m) {
    /* nearbyintf rounds half to even in the default rounding mode, like np.rint. */
    return nearbyintf(x * m) / m;
}

void eg__bit_depth_f32__c(const float *src, float *dst, size_t count, int bits) {
    const float m = (float)((1 << bits) - 1);
    for (size_t i = 0; i < count; i++) dst[i] = eg__bit_depth_f32_one(src[i], m);
}

uint8_t eg__bit_depth_u8_one(uint8_t x, int bits) {
    const uint32_t m = (1u << bits) - 1u;
    const uint32_t j = (2u * x * m + 255u) / 510u;    /* round(x * m / 255) */
    return (uint8_t)((2u * j * 255u + m) / (2u * m)); /* round(j * 255 / m) */
}

void eg__bit_depth_u8__c(const uint8_t *src, uint8_t *dst, size_t count, int bits) {
    for (size_t i = 0; i < count; i++) dst[i] = eg__bit_depth_u8_one(src[i], bits);
}

/* ---------------------------------------------------------------- median */

#define EG_DEFINE_MEDIAN_REF(T, SUFFIX, FINISH)                                                              \
    static T select_##SUFFIX(T *v, int n) {                                                                  \
        for (int i = 1; i < n; i++) { /* insertion sort: n <= 49 */                                          \
            T x = v[i];                                                                                      \
            int j = i - 1;                                                                                   \
            while (j >= 0 && v[j] > x) {                                                                     \
                v[j + 1] = v[j];                                                                             \
                j--;                                                                                         \
            }                                                                                                \
            v[j + 1] = x;                                                                                    \
        }                                                                                                    \
        return FINISH(v[n / 2]);                                                                             \
    }                                                                                                        \
    T eg__median_pixel_##SUFFIX(const T *plane, size_t h, size_t w, size_t cstride, size_t y, size_t x,      \
                                int k) {                                                                     \
        T v[EG_MEDIAN_MAX_WINDOW * EG_MEDIAN_MAX_WINDOW];                                                    \
        const ptrdiff_t before = k / 2;                                                                      \
        int n = 0;                                                                                           \
        for (int dy = 0; dy < k; dy++) {                                                                     \
            const size_t yy = eg_reflect_index((ptrdiff_t)y + dy - before, h);                                  \
            for (int dx = 0; dx < k; dx++) {                                                                 \
                const size_t xx = eg_reflect_index((ptrdiff_t)x + dx - before, w);                              \
                v[n++] = plane[(yy * w + xx) * cstride];                                                     \
            }                                                                                                \
        }                                                                                                    \
        return select_##SUFFIX(v, n);                                                                        \
    }                                                                                                        \
    void eg__median_span_##SUFFIX##__c(const T *const *rows, size_t n, size_t cstride, int k, T *dst) {      \
        const ptrdiff_t before = k / 2, cs = (ptrdiff_t)cstride;                                             \
        for (size_t i = 0; i < n; i++) {                                                                     \
            T v[EG_MEDIAN_MAX_WINDOW * EG_MEDIAN_MAX_WINDOW];                                                \
            int m = 0;                                                                                       \
            for (int dy = 0; dy < k; dy++)                                                                   \
                for (int dx = 0; dx < k; dx++) v[m++] = rows[dy][(ptrdiff_t)i + (dx - before) * cs];         \
            dst[i] = select_##SUFFIX(v, m);                                                                  \
        }                                                                                                    \
    }

#define EG_KEEP(x) (x)
#define EG_POSITIVE_ZERO(x) ((x) + 0.0f) /* -0.0 + 0.0 = +0.0; every other value unchanged */
EG_DEFINE_MEDIAN_REF(uint8_t, u8, EG_KEEP)
EG_DEFINE_MEDIAN_REF(float, f32, EG_POSITIVE_ZERO)

/* ---------------------------------------------------------------- detector math */

float eg__exp_ref(float x) {
    if (!(x >= EG_EXP_LO)) return 0.0f;
    if (x > EG_EXP_HI) x = EG_EXP_HI;
    const float t = x * EG_LOG2E;
    const float n = (t + EG_ROUND_MAGIC) - EG_ROUND_MAGIC;
    float r = x - n * EG_LN2_HI;
    r = r - n * EG_LN2_LO;
    const float z = r * r;
    float y = EG_EXP_P0;
    y = y * r + EG_EXP_P1;
    y = y * r + EG_EXP_P2;
    y = y * r + EG_EXP_P3;
    y = y * r + EG_EXP_P4;
    y = y * r + EG_EXP_P5;
    y = y * z;
    y = y + r;
    y = y + 1.0f;
    const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

/* Row with finite values, at least one element (checked by the caller). */
void eg__softmax_row__c(const float *logits, float *probs, size_t classes) {
    float mx = eg_flush(logits[0]);
    for (size_t i = 1; i < classes; i++) {
        const float v = eg_flush(logits[i]);
        mx = v > mx ? v : mx;
    }
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = 0; i < classes; i++) {
        const float e = eg_flush(eg__exp_ref(eg_flush(eg_flush(logits[i]) - mx)));
        probs[i] = e;
        acc[i % 8] += e;
    }
    const float inv = 1.0f / eg_sum8(acc);
    for (size_t i = 0; i < classes; i++) probs[i] = eg_flush(probs[i] * inv);
}

float eg__l1_row__c(const float *a, const float *b, size_t classes) {
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    for (size_t i = 0; i < classes; i++) acc[i % 8] += eg_flush(fabsf(eg_flush(a[i]) - eg_flush(b[i])));
    return eg_sum8(acc);
}

/* ---------------------------------------------------------------- preprocessing */

void eg__preprocess__c(const uint8_t *src, float *dst, size_t npix, size_t c, size_t plane, int planar,
                       float scale, const float *mean, const float *std) {
    for (size_t p = 0; p < npix; p++) {
        for (size_t ch = 0; ch < c; ch++) {
            const float v = eg_preprocess_value(src[p * c + ch], scale, mean[ch], std[ch]);
            if (planar)
                dst[ch * plane + p] = v;
            else
                dst[p * c + ch] = v;
        }
    }
}

/* ---------------------------------------------------------------- table lookup */

/* Split by channel count so the compiler keeps the tables' base pointers in
 * registers for the common gray and RGB cases. */
void eg__lut__c(const uint8_t *src, uint8_t *dst, size_t npix, size_t c, size_t plane, int planar,
                const uint8_t *tables) {
    if (c == 1) {
        for (size_t p = 0; p < npix; p++) dst[p] = tables[src[p]];
        return;
    }
    if (planar && c == 3) {
        const uint8_t *t0 = tables, *t1 = tables + 256, *t2 = tables + 512;
        uint8_t *d0 = dst, *d1 = dst + plane, *d2 = dst + 2 * plane;
        for (size_t p = 0; p < npix; p++) {
            d0[p] = t0[src[3 * p]];
            d1[p] = t1[src[3 * p + 1]];
            d2[p] = t2[src[3 * p + 2]];
        }
        return;
    }
    for (size_t p = 0; p < npix; p++)
        for (size_t ch = 0; ch < c; ch++) {
            const uint8_t v = tables[ch * 256 + src[p * c + ch]];
            if (planar) dst[ch * plane + p] = v;
            else dst[p * c + ch] = v;
        }
}

/* ---------------------------------------------------------------- non-local means */

void eg__nlm_distance__c(const uint8_t *const *a, const uint8_t *const *b, size_t c, size_t n, int32_t *ring,
                         int32_t *v) {
    for (size_t x = 0; x < n; x++) eg_nlm_distance_one(a, b, c, x, ring, v);
}

void eg__nlm_weights__c(const int32_t *v, size_t n, int block, int shift, int32_t cut, const int32_t *lut,
                        int32_t *weights) {
    for (size_t x = 0; x < n; x++) weights[x] = lut[eg_nlm_index_one(v, x, block, shift, cut)];
}

void eg__nlm_accumulate__c(const int32_t *weights, const uint8_t *const *cand, size_t c, size_t n, int32_t *wsum,
                           int32_t *const *acc) {
    for (size_t x = 0; x < n; x++) eg_nlm_accumulate_one(weights[x], cand, c, x, wsum, acc);
}

void eg__nlm_finish__c(const int32_t *const *acc, const int32_t *wsum, size_t n, size_t c, uint8_t *dst) {
    for (size_t x = 0; x < n; x++)
        for (size_t ch = 0; ch < c; ch++) dst[x * c + ch] = eg_nlm_divide(acc[ch][x], wsum[x]);
}

/* ---------------------------------------------------------------- the scalar table */

#define EG_SPAN_C(T, SUFFIX, K)                                                                        \
    static void median_span_##SUFFIX##_##K(const T *const *rows, size_t n, size_t cstride, T *dst) { \
        eg__median_span_##SUFFIX##__c(rows, n, cstride, K, dst);                                      \
    }
EG_SPAN_C(uint8_t, u8, 1)
EG_SPAN_C(uint8_t, u8, 2)
EG_SPAN_C(uint8_t, u8, 3)
EG_SPAN_C(uint8_t, u8, 4)
EG_SPAN_C(uint8_t, u8, 5)
EG_SPAN_C(uint8_t, u8, 6)
EG_SPAN_C(uint8_t, u8, 7)
EG_SPAN_C(float, f32, 1)
EG_SPAN_C(float, f32, 2)
EG_SPAN_C(float, f32, 3)
EG_SPAN_C(float, f32, 4)
EG_SPAN_C(float, f32, 5)
EG_SPAN_C(float, f32, 6)
EG_SPAN_C(float, f32, 7)

const eg_kernels eg__kernels_scalar = {
    EG_ISA_SCALAR,
    eg__bit_depth_f32__c,
    eg__bit_depth_u8__c,
    {NULL, median_span_u8_1, median_span_u8_2, median_span_u8_3, median_span_u8_4, median_span_u8_5,
     median_span_u8_6, median_span_u8_7},
    {NULL, median_span_f32_1, median_span_f32_2, median_span_f32_3, median_span_f32_4, median_span_f32_5,
     median_span_f32_6, median_span_f32_7},
    eg__softmax_row__c,
    eg__l1_row__c,
    eg__preprocess__c,
    eg__lut__c,
    eg__nlm_distance__c,
    eg__nlm_weights__c,
    eg__nlm_accumulate__c,
    eg__nlm_finish__c,
};
