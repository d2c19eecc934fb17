/* AVX-512 variants (x86-64, compiled with -mavx512f -mavx512bw -mavx512vbmi and
 * checked at run time): the median and bit-depth squeezers, which are wide and
 * elementwise, and the byte-table lookup (VBMI's 128-entry byte permutes); the
 * detector math and preprocessing reuse the AVX2 code.
 * Each matches kernels_c.c bit for bit. */
#include "internal.h"

#if defined(EG_HAS_AVX512)
#include <immintrin.h>

/* ---------------------------------------------------------------- bit depth */

static inline __m512 rint_ps(__m512 v) { /* see kernels_sse2.c */
    const __m512 two23 = _mm512_set1_ps(8388608.0f);
    const __m512i sign = _mm512_set1_epi32((int)0x80000000u);
    const __m512 a = _mm512_abs_ps(v);
    const __m512 r0 = _mm512_sub_ps(_mm512_add_ps(a, two23), two23);
    const __m512 r = _mm512_castsi512_ps(
        _mm512_or_si512(_mm512_castps_si512(r0), _mm512_and_si512(sign, _mm512_castps_si512(v))));
    return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(a, two23, _CMP_LT_OQ), v, r);
}

static void bit_depth_f32(const float *src, float *dst, size_t count, int bits) {
    const __m512 m = _mm512_set1_ps((float)((1 << bits) - 1));
    size_t i = 0;
    for (; i + 16 <= count; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_div_ps(rint_ps(_mm512_mul_ps(_mm512_loadu_ps(src + i), m)), m));
    if (i < count) eg__kernels_avx2.bit_depth_f32(src + i, dst + i, count - i, bits);
}

/* The whole 256-entry table in four registers: vpermi2b looks up 128 entries
 * by the low seven bits; the top bit picks the half. Four operations per 64 bytes. */
static void bit_depth_u8(const uint8_t *src, uint8_t *dst, size_t count, int bits) {
    const uint8_t *lut = eg__bit_depth_lut[bits];
    const __m512i t0 = _mm512_loadu_si512((const void *)lut), t1 = _mm512_loadu_si512((const void *)(lut + 64));
    const __m512i t2 = _mm512_loadu_si512((const void *)(lut + 128)), t3 = _mm512_loadu_si512((const void *)(lut + 192));
    size_t i = 0;
    if (bits == 1) { /* 255 where x >= 128: the sign bit of the byte */
        for (; i + 64 <= count; i += 64)
            _mm512_storeu_si512((void *)(dst + i),
                                _mm512_movm_epi8(_mm512_movepi8_mask(_mm512_loadu_si512((const void *)(src + i)))));
    }
    for (; i + 64 <= count; i += 64) {
        const __m512i x = _mm512_loadu_si512((const void *)(src + i));
        const __m512i low = _mm512_permutex2var_epi8(t0, x, t1), high = _mm512_permutex2var_epi8(t2, x, t3);
        _mm512_storeu_si512((void *)(dst + i), _mm512_mask_blend_epi8(_mm512_movepi8_mask(x), low, high));
    }
    if (i < count) eg__kernels_avx2.bit_depth_u8(src + i, dst + i, count - i, bits);
}

/* ---------------------------------------------------------------- median */

static void narrow_u8(const uint8_t *const *rows, size_t n, size_t cs, int k, uint8_t *dst) {
    eg__kernels_avx2.median_span_u8[k](rows, n, cs, dst);
}
static void narrow_f32(const float *const *rows, size_t n, size_t cs, int k, float *dst) {
    eg__kernels_avx2.median_span_f32[k](rows, n, cs, dst);
}

#define EG_T uint8_t
#define EG_V __m512i
#define EG_LANES 64
#define EG_LOAD(p) _mm512_loadu_si512((const void *)(p))
#define EG_STORE(p, v) _mm512_storeu_si512((void *)(p), (v))
#define EG_MIN _mm512_min_epu8
#define EG_MAX _mm512_max_epu8
#define EG_FINISH(v) (v)
#define EG_NARROW narrow_u8
#define EG_SPAN(k) median_span_u8_##k
/* lanes k.. of a:b: alignr works inside 128-bit lanes, so first build [a.l1, a.l2, a.l3, b.l0] */
#define EG_SHIFT_EPI8(a, b, k) _mm512_alignr_epi8(_mm512_alignr_epi64(b, a, 2), a, k)
#define EG_SHIFT1(a, b) EG_SHIFT_EPI8(a, b, 1)
#define EG_SHIFT2(a, b) EG_SHIFT_EPI8(a, b, 2)
#include "median_span.h"

#define EG_T float
#define EG_V __m512
#define EG_LANES 16
#define EG_LOAD(p) _mm512_loadu_ps(p)
#define EG_STORE(p, v) _mm512_storeu_ps((p), (v))
#define EG_MIN _mm512_min_ps
#define EG_MAX _mm512_max_ps
#define EG_FINISH(v) _mm512_add_ps((v), _mm512_setzero_ps())
#define EG_NARROW narrow_f32
#define EG_SPAN(k) median_span_f32_##k
#define EG_SHIFT1(a, b) _mm512_castsi512_ps(EG_SHIFT_EPI8(_mm512_castps_si512(a), _mm512_castps_si512(b), 4))
#define EG_SHIFT2(a, b) _mm512_castsi512_ps(EG_SHIFT_EPI8(_mm512_castps_si512(a), _mm512_castps_si512(b), 8))
#include "median_span.h"

/* ---------------------------------------------------------------- table lookup */

/* 64 bytes looked up in a 256-byte table held in four registers: each 128-entry
 * half by one two-register permute (index bits 0-6), the half chosen by bit 7. */
static inline __m512i lookup64(__m512i idx, const __m512i t[4]) {
    const __m512i lo = _mm512_permutex2var_epi8(t[0], idx, t[1]);
    const __m512i hi = _mm512_permutex2var_epi8(t[2], idx, t[3]);
    return _mm512_mask_blend_epi8(_mm512_movepi8_mask(idx), lo, hi);
}

static void lut(const uint8_t *src, uint8_t *dst, size_t npix, size_t c, size_t plane, int planar,
                const uint8_t *tables) {
    __m512i t[EG_PREPROCESS_MAX_CHANNELS][4];
    for (size_t ch = 0; ch < c; ch++)
        for (int q = 0; q < 4; q++) t[ch][q] = _mm512_loadu_si512(tables + ch * 256 + q * 64);
    size_t p = 0;
    if (c == 1) {
        for (; p + 64 <= npix; p += 64)
            _mm512_storeu_si512(dst + p, lookup64(_mm512_loadu_si512(src + p), t[0]));
    } else if (planar) {
        /* 64 pixels = c registers; channel ch's bytes gathered from them by the same
         * lookup (index c*j + ch in the 64*c loaded bytes), then looked up in its table */
        uint8_t gather[EG_PREPROCESS_MAX_CHANNELS][64];
        for (size_t ch = 0; ch < c; ch++)
            for (size_t j = 0; j < 64; j++) gather[ch][j] = (uint8_t)(c * j + ch);
        __m512i idx[EG_PREPROCESS_MAX_CHANNELS];
        for (size_t ch = 0; ch < c; ch++) idx[ch] = _mm512_loadu_si512(gather[ch]);
        for (; p + 64 <= npix; p += 64) {
            __m512i v[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                            _mm512_setzero_si512()};
            for (size_t q = 0; q < c; q++) v[q] = _mm512_loadu_si512(src + p * c + q * 64);
            for (size_t ch = 0; ch < c; ch++)
                _mm512_storeu_si512(dst + ch * plane + p, lookup64(lookup64(idx[ch], v), t[ch]));
        }
    } else {
        /* interleaved: every byte looked up in each channel's table, kept where the byte
         * belongs to that channel; with 3 channels the phase advances by one per register */
        __mmask64 keep[3][EG_PREPROCESS_MAX_CHANNELS];
        for (size_t ph = 0; ph < 3; ph++)
            for (size_t ch = 0; ch < c; ch++) {
                __mmask64 m = 0;
                for (size_t j = 0; j < 64; j++)
                    if ((ph + j) % c == ch) m |= (__mmask64)1 << j;
                keep[ph][ch] = m;
            }
        const size_t total = npix * c;
        size_t o = 0, ph = 0;
        for (; o + 64 <= total; o += 64, ph = (ph + 64) % c) {
            const __m512i x = _mm512_loadu_si512(src + o);
            __m512i r = lookup64(x, t[0]);
            for (size_t ch = 1; ch < c; ch++) r = _mm512_mask_mov_epi8(r, keep[ph][ch], lookup64(x, t[ch]));
            _mm512_storeu_si512(dst + o, r);
        }
        p = o / c; /* the first pixel not wholly written (rewriting part of it is harmless) */
    }
    if (p < npix) eg__lut__c(src + p * c, planar ? dst + p : dst + p * c, npix - p, c, plane, planar, tables);
}

const eg_kernels eg__kernels_avx512 = {
    EG_ISA_AVX512,
    bit_depth_f32,
    bit_depth_u8,
    {NULL, median_span_u8_1, median_span_u8_2, median_span_u8_3, median_span_u8_4, median_span_u8_5,
     median_span_u8_6, median_span_u8_7},
    {NULL, median_span_f32_1, median_span_f32_2, median_span_f32_3, median_span_f32_4, median_span_f32_5,
     median_span_f32_6, median_span_f32_7},
    eg__softmax_row__avx2,
    eg__l1_row__avx2,
    eg__preprocess__avx2,
    lut,
    eg__nlm_distance__avx2,
    eg__nlm_weights__avx2,
    eg__nlm_accumulate__avx2,
    eg__nlm_finish__avx2,
};

#endif /* EG_HAS_AVX512 */
