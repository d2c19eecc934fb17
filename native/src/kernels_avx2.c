/* AVX2 variants (x86-64, compiled with -mavx2 and checked at run time).
 * Each matches kernels_c.c bit for bit. */
#include "internal.h"

#if defined(EG_HAS_AVX2)
#include <immintrin.h>

/* ---------------------------------------------------------------- bit depth */

static inline __m256 rint_ps(__m256 v) { /* see kernels_sse2.c */
    const __m256 sign = _mm256_set1_ps(-0.0f), two23 = _mm256_set1_ps(8388608.0f);
    const __m256 a = _mm256_andnot_ps(sign, v);
    const __m256 r = _mm256_or_ps(_mm256_sub_ps(_mm256_add_ps(a, two23), two23), _mm256_and_ps(sign, v));
    return _mm256_blendv_ps(v, r, _mm256_cmp_ps(a, two23, _CMP_LT_OQ));
}

static void bit_depth_f32(const float *src, float *dst, size_t count, int bits) {
    const float mf = (float)((1 << bits) - 1);
    const __m256 m = _mm256_set1_ps(mf);
    size_t i = 0;
    for (; i + 8 <= count; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_div_ps(rint_ps(_mm256_mul_ps(_mm256_loadu_ps(src + i), m)), m));
    if (i < count) eg__kernels_sse2.bit_depth_f32(src + i, dst + i, count - i, bits);
}

static inline __m256i bit_depth_u16(__m256i x, __m256i a1, __m256i b1, __m128i s1, __m256i a2, __m256i b2) {
    const __m256i j = _mm256_srl_epi16(_mm256_add_epi16(_mm256_mullo_epi16(x, a1), b1), s1);
    return _mm256_srli_epi16(_mm256_add_epi16(_mm256_mullo_epi16(j, a2), b2), 8);
}

static void bit_depth_u8(const uint8_t *src, uint8_t *dst, size_t count, int bits) {
    const __m256i zero = _mm256_setzero_si256();
    size_t i = 0;
    if (bits == 1) { /* 255 where x >= 128: the sign bit of the byte */
        for (; i + 32 <= count; i += 32)
            _mm256_storeu_si256((__m256i *)(dst + i),
                                _mm256_cmpgt_epi8(zero, _mm256_loadu_si256((const __m256i *)(src + i))));
    } else {
        const __m256i a1 = _mm256_set1_epi16((short)eg__bit_depth_a1[bits]);
        const __m256i b1 = _mm256_set1_epi16((short)eg__bit_depth_b1[bits]);
        const __m256i a2 = _mm256_set1_epi16((short)eg__bit_depth_a2[bits]);
        const __m256i b2 = _mm256_set1_epi16((short)eg__bit_depth_b2[bits]);
        const __m128i s1 = _mm_cvtsi32_si128(eg__bit_depth_s1[bits]);
        for (; i + 32 <= count; i += 32) {
            const __m256i x = _mm256_loadu_si256((const __m256i *)(src + i));
            /* unpack and pack both work within 128-bit lanes, so the order survives */
            const __m256i lo = bit_depth_u16(_mm256_unpacklo_epi8(x, zero), a1, b1, s1, a2, b2);
            const __m256i hi = bit_depth_u16(_mm256_unpackhi_epi8(x, zero), a1, b1, s1, a2, b2);
            _mm256_storeu_si256((__m256i *)(dst + i), _mm256_packus_epi16(lo, hi));
        }
    }
    if (i < count) eg__kernels_sse2.bit_depth_u8(src + i, dst + i, count - i, bits);
}

/* ---------------------------------------------------------------- median */

static void narrow_u8(const uint8_t *const *rows, size_t n, size_t cs, int k, uint8_t *dst) {
    eg__kernels_sse2.median_span_u8[k](rows, n, cs, dst);
}
static void narrow_f32(const float *const *rows, size_t n, size_t cs, int k, float *dst) {
    eg__kernels_sse2.median_span_f32[k](rows, n, cs, dst);
}

#define EG_T uint8_t
#define EG_V __m256i
#define EG_LANES 32
#define EG_LOAD(p) _mm256_loadu_si256((const __m256i *)(p))
#define EG_STORE(p, v) _mm256_storeu_si256((__m256i *)(p), (v))
#define EG_MIN _mm256_min_epu8
#define EG_MAX _mm256_max_epu8
#define EG_FINISH(v) (v)
#define EG_NARROW narrow_u8
#define EG_SPAN(k) median_span_u8_##k
/* lanes k.. of a:b: alignr works inside 128-bit halves, so first build [a.hi, b.lo] */
#define EG_SHIFT_EPI8(a, b, k) _mm256_alignr_epi8(_mm256_permute2x128_si256(a, b, 0x21), a, k)
#define EG_SHIFT1(a, b) EG_SHIFT_EPI8(a, b, 1)
#define EG_SHIFT2(a, b) EG_SHIFT_EPI8(a, b, 2)
#include "median_span.h"

#define EG_T float
#define EG_V __m256
#define EG_LANES 8
#define EG_LOAD(p) _mm256_loadu_ps(p)
#define EG_STORE(p, v) _mm256_storeu_ps((p), (v))
#define EG_MIN _mm256_min_ps
#define EG_MAX _mm256_max_ps
#define EG_FINISH(v) _mm256_add_ps((v), _mm256_setzero_ps())
#define EG_NARROW narrow_f32
#define EG_SPAN(k) median_span_f32_##k
#define EG_SHIFT1(a, b) _mm256_castsi256_ps(EG_SHIFT_EPI8(_mm256_castps_si256(a), _mm256_castps_si256(b), 4))
#define EG_SHIFT2(a, b) _mm256_castsi256_ps(EG_SHIFT_EPI8(_mm256_castps_si256(a), _mm256_castps_si256(b), 8))
#include "median_span.h"

/* ---------------------------------------------------------------- detector math */

static inline __m256 flush_ps(__m256 x) {
    const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x);
    return _mm256_andnot_ps(_mm256_cmp_ps(a, _mm256_set1_ps(EG_FLT_MIN), _CMP_LT_OQ), x);
}

/* Mirrors eg__exp_ref operation by operation (no FMA: -mavx2 only). */
static inline __m256 exp_ps(__m256 x) {
    const __m256 valid = _mm256_cmp_ps(x, _mm256_set1_ps(EG_EXP_LO), _CMP_GE_OQ);
    x = _mm256_min_ps(x, _mm256_set1_ps(EG_EXP_HI));
    const __m256 t = _mm256_mul_ps(x, _mm256_set1_ps(EG_LOG2E));
    const __m256 magic = _mm256_set1_ps(EG_ROUND_MAGIC);
    const __m256 n = _mm256_sub_ps(_mm256_add_ps(t, magic), magic);
    __m256 r = _mm256_sub_ps(x, _mm256_mul_ps(n, _mm256_set1_ps(EG_LN2_HI)));
    r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(EG_LN2_LO)));
    const __m256 z = _mm256_mul_ps(r, r);
    __m256 y = _mm256_set1_ps(EG_EXP_P0);
    y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(EG_EXP_P1));
    y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(EG_EXP_P2));
    y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(EG_EXP_P3));
    y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(EG_EXP_P4));
    y = _mm256_add_ps(_mm256_mul_ps(y, r), _mm256_set1_ps(EG_EXP_P5));
    y = _mm256_mul_ps(y, z);
    y = _mm256_add_ps(y, r);
    y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
    const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_and_ps(valid, _mm256_mul_ps(y, _mm256_castsi256_ps(e)));
}

void eg__softmax_row__avx2(const float *x, float *p, size_t n) {
    size_t i = 0;
    __m256 vmax = _mm256_set1_ps(-__builtin_inff());
    for (; i + 8 <= n; i += 8) vmax = _mm256_max_ps(vmax, flush_ps(_mm256_loadu_ps(x + i)));
    float acc[8];
    _mm256_storeu_ps(acc, vmax);
    float mx = acc[0];
    for (int l = 1; l < 8; l++) mx = acc[l] > mx ? acc[l] : mx;
    for (; i < n; i++) mx = eg_flush(x[i]) > mx ? eg_flush(x[i]) : mx;

    const __m256 vm = _mm256_set1_ps(mx);
    __m256 vacc = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 e = flush_ps(exp_ps(flush_ps(_mm256_sub_ps(flush_ps(_mm256_loadu_ps(x + i)), vm))));
        _mm256_storeu_ps(p + i, e);
        vacc = _mm256_add_ps(vacc, e);
    }
    _mm256_storeu_ps(acc, vacc);
    for (; i < n; i++) {
        const float e = eg_flush(eg__exp_ref(eg_flush(eg_flush(x[i]) - mx)));
        p[i] = e;
        acc[i % 8] += e;
    }
    const float inv = 1.0f / eg_sum8(acc);
    const __m256 vinv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(p + i, flush_ps(_mm256_mul_ps(_mm256_loadu_ps(p + i), vinv)));
    for (; i < n; i++) p[i] = eg_flush(p[i] * inv);
}

float eg__l1_row__avx2(const float *a, const float *b, size_t n) {
    __m256 vacc = _mm256_setzero_ps();
    const __m256 sign = _mm256_set1_ps(-0.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 d = _mm256_sub_ps(flush_ps(_mm256_loadu_ps(a + i)), flush_ps(_mm256_loadu_ps(b + i)));
        vacc = _mm256_add_ps(vacc, flush_ps(_mm256_andnot_ps(sign, d)));
    }
    float acc[8];
    _mm256_storeu_ps(acc, vacc);
    for (; i < n; i++) {
        const float d = eg_flush(a[i]) - eg_flush(b[i]);
        acc[i % 8] += eg_flush(d < 0 ? -d : d);
    }
    return eg_sum8(acc);
}

/* ---------------------------------------------------------------- preprocessing */

/* eg_preprocess_value on 8 lanes */
static inline __m256 convert8(__m256 x, __m256 scale, __m256 mean, __m256 std) {
    return flush_ps(_mm256_div_ps(flush_ps(_mm256_sub_ps(_mm256_mul_ps(x, scale), mean)), std));
}

/* Interleaved values starting at channel 0; the per-lane mean/std pattern
 * repeats every lcm(8, c) elements (8 or 24). */
static void convert_interleaved(const uint8_t *src, float *dst, size_t count, size_t c, float scale,
                                const float *mean, const float *std) {
    const size_t nv = (c == 3) ? 3 : 1;
    __m256 vmean[3], vstd[3];
    for (size_t v = 0; v < nv; v++) {
        float mm[8], ss[8];
        for (size_t l = 0; l < 8; l++) {
            mm[l] = mean[(v * 8 + l) % c];
            ss[l] = std[(v * 8 + l) % c];
        }
        vmean[v] = _mm256_loadu_ps(mm);
        vstd[v] = _mm256_loadu_ps(ss);
    }
    const __m256 vscale = _mm256_set1_ps(scale);
    size_t i = 0, phase = 0;
    for (; i + 8 <= count; i += 8) {
        const __m256 f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(src + i))));
        _mm256_storeu_ps(dst + i, convert8(f, vscale, vmean[phase], vstd[phase]));
        phase = (phase + 1 == nv) ? 0 : phase + 1;
    }
    for (; i < count; i++) dst[i] = eg_preprocess_value(src[i], scale, mean[i % c], std[i % c]);
}

void eg__preprocess__avx2(const uint8_t *src, float *dst, size_t npix, size_t c, size_t plane, int planar,
                       float scale, const float *mean, const float *std) {
    if (!planar || c == 1) {
        convert_interleaved(src, dst, npix * c, c, scale, mean, std);
        return;
    }
    /* Planar output: split 16 pixels (16*c bytes in c registers) into one register
     * per channel with pshufb (mask byte 0x80 yields zero, so the c shuffles of a
     * channel can be OR-ed), then convert each channel's 16 values. */
    __m128i mask[EG_PREPROCESS_MAX_CHANNELS][EG_PREPROCESS_MAX_CHANNELS];
    for (size_t ch = 0; ch < c; ch++)
        for (size_t s = 0; s < c; s++) {
            uint8_t m[16];
            for (size_t i = 0; i < 16; i++) {
                const size_t byte = i * c + ch;
                m[i] = byte / 16 == s ? (uint8_t)(byte % 16) : 0x80;
            }
            mask[ch][s] = _mm_loadu_si128((const __m128i *)m);
        }
    const __m256 vscale = _mm256_set1_ps(scale);
    __m256 vmean[EG_PREPROCESS_MAX_CHANNELS], vstd[EG_PREPROCESS_MAX_CHANNELS];
    for (size_t ch = 0; ch < c; ch++) {
        vmean[ch] = _mm256_set1_ps(mean[ch]);
        vstd[ch] = _mm256_set1_ps(std[ch]);
    }
    size_t p = 0;
    for (; p + 16 <= npix; p += 16) {
        __m128i in[EG_PREPROCESS_MAX_CHANNELS];
        for (size_t s = 0; s < c; s++) in[s] = _mm_loadu_si128((const __m128i *)(src + p * c + 16 * s));
        for (size_t ch = 0; ch < c; ch++) {
            __m128i x = _mm_shuffle_epi8(in[0], mask[ch][0]);
            for (size_t s = 1; s < c; s++) x = _mm_or_si128(x, _mm_shuffle_epi8(in[s], mask[ch][s]));
            float *d = dst + ch * plane + p;
            const __m256 lo = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(x));
            const __m256 hi = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(x, 8)));
            _mm256_storeu_ps(d, convert8(lo, vscale, vmean[ch], vstd[ch]));
            _mm256_storeu_ps(d + 8, convert8(hi, vscale, vmean[ch], vstd[ch]));
        }
    }
    if (p < npix) eg__preprocess__c(src + p * c, dst + p, npix - p, c, plane, 1, scale, mean, std);
}

/* ---------------------------------------------------------------- non-local means */

/* Squared differences of 16 pixels of one channel as two vectors of 8 int32:
 * |a - b| in bytes, squared in 16-bit lanes (255^2 fits in uint16), widened. */
static inline void nlm_sq16(const uint8_t *a, const uint8_t *b, __m256i *lo, __m256i *hi) {
    const __m128i pa = _mm_loadu_si128((const __m128i *)a), pb = _mm_loadu_si128((const __m128i *)b);
    const __m256i d = _mm256_cvtepu8_epi16(_mm_sub_epi8(_mm_max_epu8(pa, pb), _mm_min_epu8(pa, pb)));
    const __m256i sq = _mm256_mullo_epi16(d, d);
    *lo = _mm256_add_epi32(*lo, _mm256_cvtepu16_epi32(_mm256_castsi256_si128(sq)));
    *hi = _mm256_add_epi32(*hi, _mm256_cvtepu16_epi32(_mm256_extracti128_si256(sq, 1)));
}

static inline void nlm_slide8(int32_t *ring, int32_t *v, __m256i d) {
    const __m256i old = _mm256_loadu_si256((const __m256i *)ring), sum = _mm256_loadu_si256((const __m256i *)v);
    _mm256_storeu_si256((__m256i *)v, _mm256_add_epi32(sum, _mm256_sub_epi32(d, old)));
    _mm256_storeu_si256((__m256i *)ring, d);
}

static inline void nlm_distance_impl(const uint8_t *const *a, const uint8_t *const *b, size_t c, size_t n,
                                     int32_t *ring, int32_t *v) {
    size_t x = 0;
    for (; x + 16 <= n; x += 16) {
        __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
        for (size_t ch = 0; ch < c; ch++) nlm_sq16(a[ch] + x, b[ch] + x, &lo, &hi);
        nlm_slide8(ring + x, v + x, lo);
        nlm_slide8(ring + x + 8, v + x + 8, hi);
    }
    for (; x < n; x++) eg_nlm_distance_one(a, b, c, x, ring, v);
}

void eg__nlm_distance__avx2(const uint8_t *const *a, const uint8_t *const *b, size_t c, size_t n, int32_t *ring,
                            int32_t *v) {
    switch (c) { /* constant channel counts let the compiler unroll the channel loop */
    case 1: nlm_distance_impl(a, b, 1, n, ring, v); break;
    case 3: nlm_distance_impl(a, b, 3, n, ring, v); break;
    default: nlm_distance_impl(a, b, c, n, ring, v); break;
    }
}

/* Block distances and table indices in vectors, then the table lookups one by
 * one: gathers are slow on many x86 cores (microcode mitigations), and eight
 * pixels whose blocks are all too different get their (zero) weight at once. */
static inline void nlm_weights_impl(const int32_t *v, size_t n, int block, int shift, int32_t cut,
                                    const int32_t *lut, int32_t *weights) {
    const __m128i count = _mm_cvtsi32_si128(shift);
    const __m256i vcut = _mm256_set1_epi32(cut), far = _mm256_set1_epi32(lut[cut]);
    size_t x = 0;
    for (; x + 8 <= n; x += 8) {
        __m256i ssd = _mm256_loadu_si256((const __m256i *)(v + x));
        for (int k = 1; k < block; k++) ssd = _mm256_add_epi32(ssd, _mm256_loadu_si256((const __m256i *)(v + x + k)));
        const __m256i idx = _mm256_min_epi32(_mm256_srl_epi32(ssd, count), vcut);
        if (_mm256_movemask_epi8(_mm256_cmpeq_epi32(idx, vcut)) == -1) { /* all beyond the cut: common */
            _mm256_storeu_si256((__m256i *)(weights + x), far);
            continue;
        }
        int32_t i8[8];
        _mm256_storeu_si256((__m256i *)i8, idx);
        for (int l = 0; l < 8; l++) weights[x + (size_t)l] = lut[i8[l]];
    }
    for (; x < n; x++) weights[x] = lut[eg_nlm_index_one(v, x, block, shift, cut)];
}

void eg__nlm_weights__avx2(const int32_t *v, size_t n, int block, int shift, int32_t cut, const int32_t *lut,
                           int32_t *weights) {
    if (block == 3)
        nlm_weights_impl(v, n, 3, shift, cut, lut, weights);
    else
        nlm_weights_impl(v, n, block, shift, cut, lut, weights);
}

static inline void nlm_accumulate_impl(const int32_t *weights, const uint8_t *const *cand, size_t c, size_t n,
                                       int32_t *wsum, int32_t *const *acc) {
    size_t x = 0;
    for (; x + 8 <= n; x += 8) {
        const __m256i w = _mm256_loadu_si256((const __m256i *)(weights + x));
        if (_mm256_testz_si256(w, w)) continue; /* no similar block here: nothing to add */
        __m256i *ws = (__m256i *)(wsum + x);
        _mm256_storeu_si256(ws, _mm256_add_epi32(_mm256_loadu_si256(ws), w));
        for (size_t ch = 0; ch < c; ch++) {
            const __m256i p = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(cand[ch] + x)));
            __m256i *ac = (__m256i *)(acc[ch] + x);
            _mm256_storeu_si256(ac, _mm256_add_epi32(_mm256_loadu_si256(ac), _mm256_mullo_epi32(w, p)));
        }
    }
    for (; x < n; x++) eg_nlm_accumulate_one(weights[x], cand, c, x, wsum, acc);
}

void eg__nlm_accumulate__avx2(const int32_t *weights, const uint8_t *const *cand, size_t c, size_t n, int32_t *wsum,
                              int32_t *const *acc) {
    switch (c) {
    case 1: nlm_accumulate_impl(weights, cand, 1, n, wsum, acc); break;
    case 3: nlm_accumulate_impl(weights, cand, 3, n, wsum, acc); break;
    default: nlm_accumulate_impl(weights, cand, c, n, wsum, acc); break;
    }
}

/* (acc + wsum/2) / wsum in double: both are exact below 2^53, the quotient is
 * correctly rounded and lies at least 1/wsum (> 2^-31) from the next integer
 * above unless it is that integer, so truncation gives the integer quotient. */
static inline __m128i nlm_divide4(__m128i acc, __m256d half, __m256d ws) {
    const __m256d q = _mm256_div_pd(_mm256_add_pd(_mm256_cvtepi32_pd(acc), half), ws);
    return _mm256_cvttpd_epi32(q);
}

void eg__nlm_finish__avx2(const int32_t *const *acc, const int32_t *wsum, size_t n, size_t c, uint8_t *dst) {
    size_t x = 0;
    for (; x + 4 <= n; x += 4) {
        const __m128i w = _mm_loadu_si128((const __m128i *)(wsum + x));
        const __m256d ws = _mm256_cvtepi32_pd(w), half = _mm256_cvtepi32_pd(_mm_srai_epi32(w, 1));
        for (size_t ch = 0; ch < c; ch++) {
            int32_t q[4];
            _mm_storeu_si128((__m128i *)q, nlm_divide4(_mm_loadu_si128((const __m128i *)(acc[ch] + x)), half, ws));
            for (size_t l = 0; l < 4; l++) dst[(x + l) * c + ch] = (uint8_t)q[l];
        }
    }
    for (; x < n; x++)
        for (size_t ch = 0; ch < c; ch++) dst[x * c + ch] = eg_nlm_divide(acc[ch][x], wsum[x]);
}

const eg_kernels eg__kernels_avx2 = {
    EG_ISA_AVX2,
    bit_depth_f32,
    bit_depth_u8,
    {NULL, median_span_u8_1, median_span_u8_2, median_span_u8_3, median_span_u8_4, median_span_u8_5,
     median_span_u8_6, median_span_u8_7},
    {NULL, median_span_f32_1, median_span_f32_2, median_span_f32_3, median_span_f32_4, median_span_f32_5,
     median_span_f32_6, median_span_f32_7},
    eg__softmax_row__avx2,
    eg__l1_row__avx2,
    eg__preprocess__avx2,
    eg__lut__c, /* a 256-entry byte lookup needs AVX-512 VBMI; AVX2 gathers were no faster */
    eg__nlm_distance__avx2,
    eg__nlm_weights__avx2,
    eg__nlm_accumulate__avx2,
    eg__nlm_finish__avx2,
};

#endif /* EG_HAS_AVX2 */
