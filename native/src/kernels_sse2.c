/* SSE2 variants (x86-64 baseline). Each matches kernels_c.c bit for bit. */
#include "internal.h"

#if defined(EG_HAS_SSE2)
#include <emmintrin.h>

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
};

#endif /* EG_HAS_SSE2 */
