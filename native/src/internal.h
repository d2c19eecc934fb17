/* Internal declarations shared by the edgeguard kernel files. Not installed. */
#ifndef EG_INTERNAL_H
#define EG_INTERNAL_H

#include "edgeguard/edgeguard.h"

#include <stddef.h>
#include <stdint.h>

/* What the build compiles in for this target. Kill switches: EG_DISABLE_SIMD,
 * EG_DISABLE_AVX2, EG_DISABLE_AVX512, EG_DISABLE_NEON (for compilers lacking the intrinsics). */
#if !defined(EG_DISABLE_SIMD)
#if defined(__x86_64__) || defined(_M_X64)
#define EG_HAS_SSE2 1
#if !defined(EG_DISABLE_AVX2) && (defined(__GNUC__) || defined(__clang__))
#define EG_HAS_AVX2 1
#if !defined(EG_DISABLE_AVX512)
#define EG_HAS_AVX512 1
#endif
#endif
#elif defined(__aarch64__) && !defined(EG_DISABLE_NEON)
#define EG_HAS_NEON 1
#elif defined(__arm__) && !defined(EG_DISABLE_NEON) && (defined(__ARM_NEON) || defined(EG_BUILD_NEON))
/* 32-bit ARM: the build compiles kernels_neon.c alone with -mfpu=neon and
 * defines EG_BUILD_NEON everywhere; cpu.c checks the CPU at run time. */
#define EG_HAS_NEON 1
#endif
#endif

/* ---- checked size arithmetic ---- */
static inline int eg_mul_ok(size_t a, size_t b, size_t *out) {
    if (a != 0 && b > SIZE_MAX / a) return 0;
    *out = a * b;
    return 1;
}

/* scipy's 'reflect' (half-sample symmetric) index, repeated for any distance. */
static inline size_t eg_reflect_index(ptrdiff_t i, size_t n) {
    if (i >= 0 && i < (ptrdiff_t)n) return (size_t)i; /* common cases first: no division */
    if (i < 0 && -i <= (ptrdiff_t)n) return (size_t)(-i - 1);
    if (i >= (ptrdiff_t)n && i < 2 * (ptrdiff_t)n) return 2 * n - 1 - (size_t)i;
    const ptrdiff_t p = 2 * (ptrdiff_t)n;
    i %= p;
    if (i < 0) i += p;
    return (size_t)(i < (ptrdiff_t)n ? i : p - 1 - i);
}

/* 1 when [a, a+an) and [b, b+bn) overlap (byte ranges). */
static inline int eg_overlaps(const void *a, size_t an, const void *b, size_t bn) {
    uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
    return an && bn && pa < pb + bn && pb < pa + an;
}

/* ---- kernel signatures ---- */
typedef void (*eg_bit_depth_f32_fn)(const float *src, float *dst, size_t count, int bits);
typedef void (*eg_bit_depth_u8_fn)(const uint8_t *src, uint8_t *dst, size_t count, int bits);

/* A median "span": n consecutive outputs whose k x k windows lie entirely inside
 * the image. rows[dy] (dy = 0..k-1) points at the input element in the row at
 * vertical offset dy - k/2 that lines up with dst[0]; horizontal neighbours are
 * `cstride` elements apart. Reads rows[dy][i + (dx - k/2) * cstride]. */
typedef void (*eg_median_span_u8_fn)(const uint8_t *const *rows, size_t n, size_t cstride, uint8_t *dst);
typedef void (*eg_median_span_f32_fn)(const float *const *rows, size_t n, size_t cstride, float *dst);

typedef void (*eg_softmax_row_fn)(const float *logits, float *probs, size_t classes);
typedef float (*eg_l1_row_fn)(const float *a, const float *b, size_t classes);
/* npix pixels of c interleaved uint8 channels -> float. NCHW: channel ch goes to
 * dst + ch * plane (contiguous per channel); NHWC: interleaved (plane unused). */
typedef void (*eg_preprocess_fn)(const uint8_t *src, float *dst, size_t npix, size_t c, size_t plane,
                                 int planar, float scale, const float *mean, const float *std);
/* npix pixels of c interleaved uint8 channels -> tables[ch * 256 + value], laid out as
 * eg_preprocess_fn lays out its floats (NCHW planes `plane` bytes apart, or interleaved). */
typedef void (*eg_lut_fn)(const uint8_t *src, uint8_t *dst, size_t npix, size_t c, size_t plane, int planar,
                          const uint8_t *tables);

/* Non-local means row kernels (nlm.c drives them; see its comment).
 * distance: for x < n, d = sum over the c channels of (a[ch][x] - b[ch][x])^2,
 *   then v[x] += d - ring[x]; ring[x] = d (a sliding vertical block sum).
 * weights: for x < n, D = v[x] + ... + v[x + block - 1], weights[x] = lut[min(D >> shift, cut)].
 * accumulate: for x < n, wsum[x] += weights[x], acc[ch][x] += weights[x] * cand[ch][x].
 * finish: dst[x * c + ch] = ((uint32)acc[ch][x] + wsum[x] / 2) / wsum[x]. */
typedef void (*eg_nlm_distance_fn)(const uint8_t *const *a, const uint8_t *const *b, size_t c, size_t n,
                                   int32_t *ring, int32_t *v);
typedef void (*eg_nlm_weights_fn)(const int32_t *v, size_t n, int block, int shift, int32_t cut, const int32_t *lut,
                                  int32_t *weights);
typedef void (*eg_nlm_accumulate_fn)(const int32_t *weights, const uint8_t *const *cand, size_t c, size_t n,
                                     int32_t *wsum, int32_t *const *acc);
typedef void (*eg_nlm_finish_fn)(const int32_t *const *acc, const int32_t *wsum, size_t n, size_t c, uint8_t *dst);

/* One table per ISA; every entry is non-NULL (an ISA without its own variant of
 * an op points at the best lower one). */
typedef struct eg_kernels {
    eg_isa isa;
    eg_bit_depth_f32_fn bit_depth_f32;
    eg_bit_depth_u8_fn bit_depth_u8;
    eg_median_span_u8_fn median_span_u8[EG_MEDIAN_MAX_WINDOW + 1];  /* index = window; [0] unused */
    eg_median_span_f32_fn median_span_f32[EG_MEDIAN_MAX_WINDOW + 1];
    eg_softmax_row_fn softmax_row;
    eg_l1_row_fn l1_row;
    eg_preprocess_fn preprocess;
    eg_lut_fn lut;
    eg_nlm_distance_fn nlm_distance;
    eg_nlm_weights_fn nlm_weights;
    eg_nlm_accumulate_fn nlm_accumulate;
    eg_nlm_finish_fn nlm_finish;
} eg_kernels;

/* The one dispatch point: the table for `isa` (EG_ISA_AUTO = best available),
 * or NULL when that ISA is unavailable. */
const eg_kernels *eg__kernels(eg_isa isa);

extern const eg_kernels eg__kernels_scalar;
#if defined(EG_HAS_SSE2)
extern const eg_kernels eg__kernels_sse2;
#endif
#if defined(EG_HAS_AVX2)
extern const eg_kernels eg__kernels_avx2;
/* shared with the AVX-512 table, which has no variant of its own for these */
void eg__softmax_row__avx2(const float *logits, float *probs, size_t classes);
float eg__l1_row__avx2(const float *a, const float *b, size_t classes);
void eg__preprocess__avx2(const uint8_t *src, float *dst, size_t npix, size_t c, size_t plane, int planar,
                          float scale, const float *mean, const float *std);
void eg__nlm_distance__avx2(const uint8_t *const *a, const uint8_t *const *b, size_t c, size_t n, int32_t *ring,
                            int32_t *v);
void eg__nlm_weights__avx2(const int32_t *v, size_t n, int block, int shift, int32_t cut, const int32_t *lut,
                           int32_t *weights);
void eg__nlm_accumulate__avx2(const int32_t *weights, const uint8_t *const *cand, size_t c, size_t n, int32_t *wsum,
                              int32_t *const *acc);
void eg__nlm_finish__avx2(const int32_t *const *acc, const int32_t *wsum, size_t n, size_t c, uint8_t *dst);
#endif
#if defined(EG_HAS_AVX512)
extern const eg_kernels eg__kernels_avx512;
#endif
#if defined(EG_HAS_NEON)
extern const eg_kernels eg__kernels_neon;
#endif

/* ---- portable reference kernels (kernels_c.c) ---- */
void eg__bit_depth_f32__c(const float *src, float *dst, size_t count, int bits);
void eg__bit_depth_u8__c(const uint8_t *src, uint8_t *dst, size_t count, int bits);
float eg__bit_depth_f32_one(float x, float m); /* rint(x*m)/m, the scalar definition */
uint8_t eg__bit_depth_u8_one(uint8_t x, int bits);

/* One output pixel (row y, column x, channel ch) of a plane with the full
 * reflect rule; `plane` points at channel 0 of pixel (0, 0); pixels are cstride
 * elements apart and rows w*cstride elements apart. */
uint8_t eg__median_pixel_u8(const uint8_t *plane, size_t h, size_t w, size_t cstride, size_t y, size_t x, int k);
float eg__median_pixel_f32(const float *plane, size_t h, size_t w, size_t cstride, size_t y, size_t x, int k);
void eg__median_span_u8__c(const uint8_t *const *rows, size_t n, size_t cstride, int k, uint8_t *dst);
void eg__median_span_f32__c(const float *const *rows, size_t n, size_t cstride, int k, float *dst);

void eg__softmax_row__c(const float *logits, float *probs, size_t classes);
float eg__l1_row__c(const float *a, const float *b, size_t classes);
void eg__preprocess__c(const uint8_t *src, float *dst, size_t npix, size_t c, size_t plane, int planar,
                       float scale, const float *mean, const float *std);
void eg__lut__c(const uint8_t *src, uint8_t *dst, size_t npix, size_t c, size_t plane, int planar,
                const uint8_t *tables);

void eg__nlm_distance__c(const uint8_t *const *a, const uint8_t *const *b, size_t c, size_t n, int32_t *ring,
                         int32_t *v);
void eg__nlm_weights__c(const int32_t *v, size_t n, int block, int shift, int32_t cut, const int32_t *lut,
                        int32_t *weights);
void eg__nlm_accumulate__c(const int32_t *weights, const uint8_t *const *cand, size_t c, size_t n, int32_t *wsum,
                           int32_t *const *acc);
void eg__nlm_finish__c(const int32_t *const *acc, const int32_t *wsum, size_t n, size_t c, uint8_t *dst);

/* Element x of the non-local means row kernels, as the scalar reference computes
 * it: the SIMD variants use these for their tails. */
static inline void eg_nlm_distance_one(const uint8_t *const *a, const uint8_t *const *b, size_t c, size_t x,
                                       int32_t *ring, int32_t *v) {
    int32_t d = 0;
    for (size_t ch = 0; ch < c; ch++) {
        const int32_t t = (int32_t)a[ch][x] - (int32_t)b[ch][x];
        d += t * t;
    }
    v[x] += d - ring[x];
    ring[x] = d;
}
static inline int32_t eg_nlm_index_one(const int32_t *v, size_t x, int block, int shift, int32_t cut) {
    int32_t ssd = 0;
    for (int k = 0; k < block; k++) ssd += v[x + (size_t)k];
    const int32_t idx = ssd >> shift;
    return idx < cut ? idx : cut;
}
static inline void eg_nlm_accumulate_one(int32_t w, const uint8_t *const *cand, size_t c, size_t x, int32_t *wsum,
                                         int32_t *const *acc) {
    wsum[x] += w;
    for (size_t ch = 0; ch < c; ch++) acc[ch][x] += w * (int32_t)cand[ch][x];
}
static inline uint8_t eg_nlm_divide(int32_t acc, int32_t wsum) {
    return (uint8_t)(((uint32_t)acc + (uint32_t)(wsum / 2)) / (uint32_t)wsum);
}

/* ---- shared float helpers, written op by op so every ISA can mirror them ----
 * FLT_MIN flushing: ARMv7 NEON always flushes subnormals to zero, so every
 * variant flushes the detector's intermediate values the same way. */
#define EG_FLT_MIN 1.17549435e-38f
#define EG_EXP_LO (-87.33654475f) /* below: exp underflows to a subnormal; we return 0 */
#define EG_EXP_HI 88.37626266f
#define EG_LOG2E 1.44269504088896341f
#define EG_LN2_HI 0.693359375f
#define EG_LN2_LO (-2.12194440e-4f)
#define EG_ROUND_MAGIC 12582912.0f /* 1.5 * 2^23: (t + M) - M rounds t to nearest even for |t| < 2^22 */
#define EG_EXP_P0 1.9875691500e-4f
#define EG_EXP_P1 1.3981999507e-3f
#define EG_EXP_P2 8.3334519073e-3f
#define EG_EXP_P3 4.1665795894e-2f
#define EG_EXP_P4 1.6666665459e-1f
#define EG_EXP_P5 5.0000001201e-1f

float eg__exp_ref(float x); /* Cephes-style expf, the definition every SIMD exp mirrors */

/* |x| < FLT_MIN -> +0 (see above; -0 also becomes +0). */
static inline float eg_flush(float x) { return (x < 0 ? -x : x) < EG_FLT_MIN ? 0.0f : x; }

/* Preprocessing, one value, the definition every ISA mirrors. The same flushing
 * rule as the detector, because ARMv7 NEON flushes subnormal operands and results
 * of its multiply and subtract (it has no vector divide: ARMv7 divides lane by
 * lane in the IEEE scalar FPU):
 *   - eg_preprocess_u8_f32 flushes `scale` and every mean before any kernel sees them;
 *   - x * scale needs no flush: x is 0 or an integer >= 1, so with a normal scale the
 *     product is 0, normal or infinite;
 *   - the difference and the quotient are flushed (so the output is never subnormal
 *     and never -0, whatever FTZ/DAZ mode a library left the FPU in);
 *   - std must be normal (|std| >= FLT_MIN): a subnormal std is rejected like 0, since
 *     dividing by it would depend on whether the hardware flushes operands. */
static inline float eg_preprocess_value(uint8_t x, float scale, float mean, float std) {
    return eg_flush(eg_flush((float)x * scale - mean) / std);
}

/* The fixed order in which every variant adds its eight partial sums. */
static inline float eg_sum8(const float *a) {
    const float t0 = a[0] + a[4], t1 = a[1] + a[5], t2 = a[2] + a[6], t3 = a[3] + a[7];
    const float u0 = t0 + t2, u1 = t1 + t3;
    return u0 + u1;
}

/* The uint8 bit-depth squeezer as 16-bit lane arithmetic, index = bits:
 *   j = (x * a1 + b1) >> s1  == round(x * m / 255)
 *   out = (j * a2 + b2) >> 8 == round(j * 255 / m)
 * and as a table, eg__bit_depth_lut[bits][x]. Generated and checked exhaustively
 * by native/tools/gen_bit_depth_tables.py; the C tests check them again. */
extern const uint16_t eg__bit_depth_a1[9], eg__bit_depth_b1[9], eg__bit_depth_s1[9];
extern const uint16_t eg__bit_depth_a2[9], eg__bit_depth_b2[9];
extern const uint8_t eg__bit_depth_lut[9][256];

#endif /* EG_INTERNAL_H */
