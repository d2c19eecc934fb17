/* SSE2 variants (x86-64 baseline). Each matches kernels_c.c bit for bit. */
#include "internal.h"

#if defined(EG_HAS_SSE2)
#include <emmintrin.h>
#include <string.h>

/* ---------------------------------------------------------------- bit depth */

/* rint for every float: |v| < 2^23 rounds via (|v| + 2^23) - 2^23 (half to even in
 * the default rounding mode) with v's sign restored; larger values, Inf and NaN
 * are already integral and pass through. */
static inline __m128 rint_ps(__m128 v) {
    const __m128 sign = _mm_set1_ps(-0.0f), two23 = _mm_set1_ps(8388608.0f);
    const __m128 a = _mm_andnot_ps(sign, v);
    const __m128 r = _mm_or_ps(_mm_sub_ps(_mm_add_ps(a, two23), two23), _mm_and_ps(sign, v));
    const __m128 small = _mm_cmplt_ps(a, two23);
    return _mm_or_ps(_mm_and_ps(small, r), _mm_andnot_ps(small, v));
}

static void bit_depth_f32(const float *src, float *dst, size_t count, int bits) {
    const float mf = (float)((1 << bits) - 1);
    const __m128 m = _mm_set1_ps(mf);
    size_t i = 0;
    for (; i + 4 <= count; i += 4)
        _mm_storeu_ps(dst + i, _mm_div_ps(rint_ps(_mm_mul_ps(_mm_loadu_ps(src + i), m)), m));
    for (; i < count; i++) dst[i] = eg__bit_depth_f32_one(src[i], mf);
}

static inline __m128i bit_depth_u16(__m128i x, __m128i a1, __m128i b1, __m128i s1, __m128i a2, __m128i b2) {
    const __m128i j = _mm_srl_epi16(_mm_add_epi16(_mm_mullo_epi16(x, a1), b1), s1);
    return _mm_srli_epi16(_mm_add_epi16(_mm_mullo_epi16(j, a2), b2), 8);
}

static void bit_depth_u8(const uint8_t *src, uint8_t *dst, size_t count, int bits) {
    const __m128i zero = _mm_setzero_si128();
    size_t i = 0;
    if (bits == 1) { /* 255 where x >= 128: the sign bit of the byte */
        for (; i + 16 <= count; i += 16)
            _mm_storeu_si128((__m128i *)(dst + i), _mm_cmpgt_epi8(zero, _mm_loadu_si128((const __m128i *)(src + i))));
    } else {
        const __m128i a1 = _mm_set1_epi16((short)eg__bit_depth_a1[bits]), b1 = _mm_set1_epi16((short)eg__bit_depth_b1[bits]);
        const __m128i a2 = _mm_set1_epi16((short)eg__bit_depth_a2[bits]), b2 = _mm_set1_epi16((short)eg__bit_depth_b2[bits]);
        const __m128i s1 = _mm_cvtsi32_si128(eg__bit_depth_s1[bits]);
        for (; i + 16 <= count; i += 16) {
            const __m128i x = _mm_loadu_si128((const __m128i *)(src + i));
            const __m128i lo = bit_depth_u16(_mm_unpacklo_epi8(x, zero), a1, b1, s1, a2, b2);
            const __m128i hi = bit_depth_u16(_mm_unpackhi_epi8(x, zero), a1, b1, s1, a2, b2);
            _mm_storeu_si128((__m128i *)(dst + i), _mm_packus_epi16(lo, hi));
        }
    }
    for (; i < count; i++) dst[i] = eg__bit_depth_u8_one(src[i], bits);
}

/* ---------------------------------------------------------------- median */

#define EG_T uint8_t
#define EG_V __m128i
#define EG_LANES 16
#define EG_LOAD(p) _mm_loadu_si128((const __m128i *)(p))
#define EG_STORE(p, v) _mm_storeu_si128((__m128i *)(p), (v))
#define EG_MIN _mm_min_epu8
#define EG_MAX _mm_max_epu8
#define EG_FINISH(v) (v)
#define EG_NARROW eg__median_span_u8__c
#define EG_SPAN(k) median_span_u8_##k
#define EG_SHIFT1(a, b) _mm_or_si128(_mm_srli_si128(a, 1), _mm_slli_si128(b, 15))
#define EG_SHIFT2(a, b) _mm_or_si128(_mm_srli_si128(a, 2), _mm_slli_si128(b, 14))
#include "median_span.h"

#define EG_T float
#define EG_V __m128
#define EG_LANES 4
#define EG_LOAD(p) _mm_loadu_ps(p)
#define EG_STORE(p, v) _mm_storeu_ps((p), (v))
#define EG_MIN _mm_min_ps
#define EG_MAX _mm_max_ps
#define EG_FINISH(v) _mm_add_ps((v), _mm_setzero_ps())
#define EG_NARROW eg__median_span_f32__c
#define EG_SPAN(k) median_span_f32_##k
#define EG_SHIFT_PS(a, b, k)                                                            \
    _mm_castsi128_ps(_mm_or_si128(_mm_srli_si128(_mm_castps_si128(a), 4 * (k)),         \
                                  _mm_slli_si128(_mm_castps_si128(b), 16 - 4 * (k))))
#define EG_SHIFT1(a, b) EG_SHIFT_PS(a, b, 1)
#define EG_SHIFT2(a, b) EG_SHIFT_PS(a, b, 2)
#include "median_span.h"

/* ---------------------------------------------------------------- detector math */

static inline __m128 flush_ps(__m128 x) {
    const __m128 tiny = _mm_cmplt_ps(_mm_andnot_ps(_mm_set1_ps(-0.0f), x), _mm_set1_ps(EG_FLT_MIN));
    return _mm_andnot_ps(tiny, x);
}

/* Mirrors eg__exp_ref operation by operation. */
static inline __m128 exp_ps(__m128 x) {
    const __m128 valid = _mm_cmpge_ps(x, _mm_set1_ps(EG_EXP_LO));
    x = _mm_min_ps(x, _mm_set1_ps(EG_EXP_HI));
    const __m128 t = _mm_mul_ps(x, _mm_set1_ps(EG_LOG2E));
    const __m128 magic = _mm_set1_ps(EG_ROUND_MAGIC);
    const __m128 n = _mm_sub_ps(_mm_add_ps(t, magic), magic);
    __m128 r = _mm_sub_ps(x, _mm_mul_ps(n, _mm_set1_ps(EG_LN2_HI)));
    r = _mm_sub_ps(r, _mm_mul_ps(n, _mm_set1_ps(EG_LN2_LO)));
    const __m128 z = _mm_mul_ps(r, r);
    __m128 y = _mm_set1_ps(EG_EXP_P0);
    y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(EG_EXP_P1));
    y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(EG_EXP_P2));
    y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(EG_EXP_P3));
    y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(EG_EXP_P4));
    y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(EG_EXP_P5));
    y = _mm_mul_ps(y, z);
    y = _mm_add_ps(y, r);
    y = _mm_add_ps(y, _mm_set1_ps(1.0f));
    const __m128i e = _mm_slli_epi32(_mm_add_epi32(_mm_cvtps_epi32(n), _mm_set1_epi32(127)), 23);
    return _mm_and_ps(valid, _mm_mul_ps(y, _mm_castsi128_ps(e)));
}

static void softmax_row(const float *x, float *p, size_t n) {
    size_t i = 0;
    __m128 vmax = _mm_set1_ps(-__builtin_inff());
    for (; i + 4 <= n; i += 4) vmax = _mm_max_ps(vmax, flush_ps(_mm_loadu_ps(x + i)));
    float tmp[4];
    _mm_storeu_ps(tmp, vmax);
    float mx = tmp[0];
    for (int l = 1; l < 4; l++) mx = tmp[l] > mx ? tmp[l] : mx;
    for (; i < n; i++) mx = eg_flush(x[i]) > mx ? eg_flush(x[i]) : mx;

    const __m128 vm = _mm_set1_ps(mx);
    __m128 acc0 = _mm_setzero_ps(), acc1 = _mm_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m128 e0 = flush_ps(exp_ps(flush_ps(_mm_sub_ps(flush_ps(_mm_loadu_ps(x + i)), vm))));
        const __m128 e1 = flush_ps(exp_ps(flush_ps(_mm_sub_ps(flush_ps(_mm_loadu_ps(x + i + 4)), vm))));
        _mm_storeu_ps(p + i, e0);
        _mm_storeu_ps(p + i + 4, e1);
        acc0 = _mm_add_ps(acc0, e0);
        acc1 = _mm_add_ps(acc1, e1);
    }
    float acc[8];
    _mm_storeu_ps(acc, acc0);
    _mm_storeu_ps(acc + 4, acc1);
    for (; i < n; i++) {
        const float e = eg_flush(eg__exp_ref(eg_flush(eg_flush(x[i]) - mx)));
        p[i] = e;
        acc[i % 8] += e;
    }
    const float inv = 1.0f / eg_sum8(acc);
    const __m128 vinv = _mm_set1_ps(inv);
    for (i = 0; i + 4 <= n; i += 4) _mm_storeu_ps(p + i, flush_ps(_mm_mul_ps(_mm_loadu_ps(p + i), vinv)));
    for (; i < n; i++) p[i] = eg_flush(p[i] * inv);
}

static inline __m128 absdiff_ps(__m128 a, __m128 b) {
    return flush_ps(_mm_andnot_ps(_mm_set1_ps(-0.0f), _mm_sub_ps(flush_ps(a), flush_ps(b))));
}

static float l1_row(const float *a, const float *b, size_t n) {
    __m128 acc0 = _mm_setzero_ps(), acc1 = _mm_setzero_ps();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        acc0 = _mm_add_ps(acc0, absdiff_ps(_mm_loadu_ps(a + i), _mm_loadu_ps(b + i)));
        acc1 = _mm_add_ps(acc1, absdiff_ps(_mm_loadu_ps(a + i + 4), _mm_loadu_ps(b + i + 4)));
    }
    float acc[8];
    _mm_storeu_ps(acc, acc0);
    _mm_storeu_ps(acc + 4, acc1);
    for (; i < n; i++) {
        const float d = eg_flush(a[i]) - eg_flush(b[i]);
        acc[i % 8] += eg_flush(d < 0 ? -d : d);
    }
    return eg_sum8(acc);
}

/* ---------------------------------------------------------------- preprocessing */

/* Converts `count` interleaved values whose channel pattern starts at channel 0:
 * the per-lane mean/std vectors repeat every lcm(4, c) elements (<= 12). */
static void convert_interleaved(const uint8_t *src, float *dst, size_t count, size_t c, float scale,
                                const float *mean, const float *std) {
    const size_t period = (c == 3) ? 12 : 4;
    __m128 vmean[3], vstd[3];
    for (size_t v = 0; v < period / 4; v++) {
        float mm[4], ss[4];
        for (size_t l = 0; l < 4; l++) {
            mm[l] = mean[(v * 4 + l) % c];
            ss[l] = std[(v * 4 + l) % c];
        }
        vmean[v] = _mm_loadu_ps(mm);
        vstd[v] = _mm_loadu_ps(ss);
    }
    const __m128 vscale = _mm_set1_ps(scale);
    const __m128i zero = _mm_setzero_si128();
    size_t i = 0, phase = 0; /* phase: which of the period's vectors comes next */
    const size_t nv = period / 4;
    for (; i + 16 <= count; i += 16) {
        const __m128i x = _mm_loadu_si128((const __m128i *)(src + i));
        const __m128i lo = _mm_unpacklo_epi8(x, zero), hi = _mm_unpackhi_epi8(x, zero);
        const __m128i q[4] = {_mm_unpacklo_epi16(lo, zero), _mm_unpackhi_epi16(lo, zero),
                              _mm_unpacklo_epi16(hi, zero), _mm_unpackhi_epi16(hi, zero)};
        for (int k = 0; k < 4; k++) {
            const __m128 f = _mm_cvtepi32_ps(q[k]);
            _mm_storeu_ps(dst + i + 4 * k,
                          flush_ps(_mm_div_ps(flush_ps(_mm_sub_ps(_mm_mul_ps(f, vscale), vmean[phase])), vstd[phase])));
            phase = (phase + 1 == nv) ? 0 : phase + 1;
        }
    }
    for (; i < count; i++) dst[i] = eg_preprocess_value(src[i], scale, mean[i % c], std[i % c]);
}

static void preprocess(const uint8_t *src, float *dst, size_t npix, size_t c, size_t plane, int planar,
                       float scale, const float *mean, const float *std) {
    if (!planar || c == 1) {
        convert_interleaved(src, dst, npix * c, c, scale, mean, std);
        return;
    }
    /* Planar output: split a block of pixels into per-channel runs on the stack,
     * then convert each run with the vector code. */
    uint8_t block[EG_PREPROCESS_MAX_CHANNELS][256];
    for (size_t p0 = 0; p0 < npix; p0 += 256) {
        const size_t len = npix - p0 < 256 ? npix - p0 : 256;
        for (size_t p = 0; p < len; p++)
            for (size_t ch = 0; ch < c; ch++) block[ch][p] = src[(p0 + p) * c + ch];
        for (size_t ch = 0; ch < c; ch++)
            convert_interleaved(block[ch], dst + ch * plane + p0, len, 1, scale, mean + ch, std + ch);
    }
}

/* ---------------------------------------------------------------- non-local means */

static inline void nlm_slide4(int32_t *ring, int32_t *v, __m128i d) {
    const __m128i old = _mm_loadu_si128((const __m128i *)ring);
    _mm_storeu_si128((__m128i *)v, _mm_add_epi32(_mm_loadu_si128((const __m128i *)v), _mm_sub_epi32(d, old)));
    _mm_storeu_si128((__m128i *)ring, d);
}

static inline void nlm_distance_impl(const uint8_t *const *a, const uint8_t *const *b, size_t c, size_t n,
                                     int32_t *ring, int32_t *v) {
    const __m128i zero = _mm_setzero_si128();
    size_t x = 0;
    for (; x + 16 <= n; x += 16) {
        __m128i d[4] = {zero, zero, zero, zero};
        for (size_t ch = 0; ch < c; ch++) {
            const __m128i pa = _mm_loadu_si128((const __m128i *)(a[ch] + x));
            const __m128i pb = _mm_loadu_si128((const __m128i *)(b[ch] + x));
            const __m128i ad = _mm_sub_epi8(_mm_max_epu8(pa, pb), _mm_min_epu8(pa, pb));
            const __m128i lo = _mm_unpacklo_epi8(ad, zero), hi = _mm_unpackhi_epi8(ad, zero);
            const __m128i sl = _mm_mullo_epi16(lo, lo), sh = _mm_mullo_epi16(hi, hi); /* 255^2 fits in uint16 */
            d[0] = _mm_add_epi32(d[0], _mm_unpacklo_epi16(sl, zero));
            d[1] = _mm_add_epi32(d[1], _mm_unpackhi_epi16(sl, zero));
            d[2] = _mm_add_epi32(d[2], _mm_unpacklo_epi16(sh, zero));
            d[3] = _mm_add_epi32(d[3], _mm_unpackhi_epi16(sh, zero));
        }
        for (int k = 0; k < 4; k++) nlm_slide4(ring + x + 4 * k, v + x + 4 * k, d[k]);
    }
    for (; x < n; x++) eg_nlm_distance_one(a, b, c, x, ring, v);
}

static void nlm_distance(const uint8_t *const *a, const uint8_t *const *b, size_t c, size_t n, int32_t *ring,
                         int32_t *v) {
    switch (c) { /* constant channel counts let the compiler unroll the channel loop */
    case 1: nlm_distance_impl(a, b, 1, n, ring, v); break;
    case 3: nlm_distance_impl(a, b, 3, n, ring, v); break;
    default: nlm_distance_impl(a, b, c, n, ring, v); break;
    }
}

/* See kernels_avx2.c: vector indices, scalar table lookups, all-far groups at once. */
static void nlm_weights(const int32_t *v, size_t n, int block, int shift, int32_t cut, const int32_t *lut,
                        int32_t *weights) {
    const __m128i count = _mm_cvtsi32_si128(shift);
    const __m128i vcut = _mm_set1_epi32(cut), far = _mm_set1_epi32(lut[cut]);
    size_t x = 0;
    for (; x + 4 <= n; x += 4) {
        __m128i ssd = _mm_loadu_si128((const __m128i *)(v + x));
        for (int k = 1; k < block; k++) ssd = _mm_add_epi32(ssd, _mm_loadu_si128((const __m128i *)(v + x + k)));
        const __m128i idx = _mm_srl_epi32(ssd, count);
        const __m128i beyond = _mm_cmpgt_epi32(idx, vcut); /* min(idx, cut) without SSE4.1 */
        const __m128i clamped = _mm_or_si128(_mm_and_si128(beyond, vcut), _mm_andnot_si128(beyond, idx));
        if (_mm_movemask_epi8(_mm_cmpeq_epi32(clamped, vcut)) == 0xFFFF) {
            _mm_storeu_si128((__m128i *)(weights + x), far);
            continue;
        }
        int32_t i4[4];
        _mm_storeu_si128((__m128i *)i4, clamped);
        for (int l = 0; l < 4; l++) weights[x + (size_t)l] = lut[i4[l]];
    }
    for (; x < n; x++) weights[x] = lut[eg_nlm_index_one(v, x, block, shift, cut)];
}

/* 32-bit products of the low halves (no pmulld before SSE4.1); w * p < 2^31 here. */
static inline __m128i mullo_epi32(__m128i a, __m128i b) {
    const __m128i even = _mm_mul_epu32(a, b);
    const __m128i odd = _mm_mul_epu32(_mm_srli_epi64(a, 32), _mm_srli_epi64(b, 32));
    return _mm_unpacklo_epi32(_mm_shuffle_epi32(even, _MM_SHUFFLE(0, 0, 2, 0)),
                              _mm_shuffle_epi32(odd, _MM_SHUFFLE(0, 0, 2, 0)));
}

static inline void nlm_accumulate_impl(const int32_t *weights, const uint8_t *const *cand, size_t c, size_t n,
                                       int32_t *wsum, int32_t *const *acc) {
    const __m128i zero = _mm_setzero_si128();
    size_t x = 0;
    for (; x + 4 <= n; x += 4) {
        const __m128i w = _mm_loadu_si128((const __m128i *)(weights + x));
        if (_mm_movemask_epi8(_mm_cmpeq_epi32(w, zero)) == 0xFFFF) continue;
        __m128i *ws = (__m128i *)(wsum + x);
        _mm_storeu_si128(ws, _mm_add_epi32(_mm_loadu_si128(ws), w));
        for (size_t ch = 0; ch < c; ch++) {
            int32_t four;
            memcpy(&four, cand[ch] + x, 4);
            const __m128i p = _mm_unpacklo_epi16(_mm_unpacklo_epi8(_mm_cvtsi32_si128(four), zero), zero);
            __m128i *ac = (__m128i *)(acc[ch] + x);
            _mm_storeu_si128(ac, _mm_add_epi32(_mm_loadu_si128(ac), mullo_epi32(w, p)));
        }
    }
    for (; x < n; x++) eg_nlm_accumulate_one(weights[x], cand, c, x, wsum, acc);
}

static void nlm_accumulate(const int32_t *weights, const uint8_t *const *cand, size_t c, size_t n, int32_t *wsum,
                           int32_t *const *acc) {
    switch (c) {
    case 1: nlm_accumulate_impl(weights, cand, 1, n, wsum, acc); break;
    case 3: nlm_accumulate_impl(weights, cand, 3, n, wsum, acc); break;
    default: nlm_accumulate_impl(weights, cand, c, n, wsum, acc); break;
    }
}

/* Division in double, exact as explained in kernels_avx2.c. */
static inline __m128i nlm_divide2(__m128i acc, __m128i half, __m128i ws) {
    const __m128d q = _mm_div_pd(_mm_add_pd(_mm_cvtepi32_pd(acc), _mm_cvtepi32_pd(half)), _mm_cvtepi32_pd(ws));
    return _mm_cvttpd_epi32(q);
}

static void nlm_finish(const int32_t *const *acc, const int32_t *wsum, size_t n, size_t c, uint8_t *dst) {
    size_t x = 0;
    for (; x + 4 <= n; x += 4) {
        const __m128i w = _mm_loadu_si128((const __m128i *)(wsum + x)), half = _mm_srai_epi32(w, 1);
        const __m128i w_hi = _mm_srli_si128(w, 8), half_hi = _mm_srli_si128(half, 8);
        for (size_t ch = 0; ch < c; ch++) {
            const __m128i a = _mm_loadu_si128((const __m128i *)(acc[ch] + x));
            int32_t q[4];
            _mm_storel_epi64((__m128i *)q, nlm_divide2(a, half, w));
            _mm_storel_epi64((__m128i *)(q + 2), nlm_divide2(_mm_srli_si128(a, 8), half_hi, w_hi));
            for (size_t l = 0; l < 4; l++) dst[(x + l) * c + ch] = (uint8_t)q[l];
        }
    }
    for (; x < n; x++)
        for (size_t ch = 0; ch < c; ch++) dst[x * c + ch] = eg_nlm_divide(acc[ch][x], wsum[x]);
}

const eg_kernels eg__kernels_sse2 = {
    EG_ISA_SSE2,
    bit_depth_f32,
    bit_depth_u8,
    {NULL, median_span_u8_1, median_span_u8_2, median_span_u8_3, median_span_u8_4, median_span_u8_5,
     median_span_u8_6, median_span_u8_7},
    {NULL, median_span_f32_1, median_span_f32_2, median_span_f32_3, median_span_f32_4, median_span_f32_5,
     median_span_f32_6, median_span_f32_7},
    softmax_row,
    l1_row,
    preprocess,
    eg__lut__c, /* no byte shuffle wider than 16 entries before AVX-512 VBMI: the scalar lookup */
    nlm_distance,
    nlm_weights,
    nlm_accumulate,
    nlm_finish,
};

#endif /* EG_HAS_SSE2 */
