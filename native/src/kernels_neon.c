/* NEON variants for AArch64 and 32-bit ARM (compiled with -mfpu=neon there and
 * checked at run time). Each matches kernels_c.c bit for bit.
 *
 * ARMv7 NEON always flushes subnormal floats to zero and has no vector divide:
 * divisions go lane by lane through the scalar FPU there, and the float median
 * compares integer keys instead of floats so subnormal pixels survive. The
 * detector math and the preprocessing flush subnormals explicitly, as their
 * scalar definitions do (internal.h). */
#include "internal.h"

#if defined(EG_HAS_NEON)
#include <arm_neon.h>

#if defined(__aarch64__)
static inline float32x4_t div_ps(float32x4_t a, float32x4_t b) { return vdivq_f32(a, b); }
#else
static inline float32x4_t div_ps(float32x4_t a, float32x4_t b) {
    float x[4], y[4];
    vst1q_f32(x, a);
    vst1q_f32(y, b);
    for (int l = 0; l < 4; l++) x[l] = x[l] / y[l];
    return vld1q_f32(x);
}
#endif

/* ---------------------------------------------------------------- bit depth */

static inline float32x4_t rint_ps(float32x4_t v) { /* see kernels_sse2.c */
    const float32x4_t two23 = vdupq_n_f32(8388608.0f);
    const uint32x4_t sign = vdupq_n_u32(0x80000000u);
    const float32x4_t a = vabsq_f32(v);
    const float32x4_t r0 = vsubq_f32(vaddq_f32(a, two23), two23);
    const uint32x4_t r = vorrq_u32(vreinterpretq_u32_f32(r0), vandq_u32(sign, vreinterpretq_u32_f32(v)));
    return vbslq_f32(vcltq_f32(a, two23), vreinterpretq_f32_u32(r), v);
}

static void bit_depth_f32(const float *src, float *dst, size_t count, int bits) {
    const float mf = (float)((1 << bits) - 1);
    const float32x4_t m = vdupq_n_f32(mf);
    size_t i = 0;
    for (; i + 4 <= count; i += 4) vst1q_f32(dst + i, div_ps(rint_ps(vmulq_f32(vld1q_f32(src + i), m)), m));
    for (; i < count; i++) dst[i] = eg__bit_depth_f32_one(src[i], mf);
}

static inline uint16x8_t bit_depth_u16(uint16x8_t x, uint16x8_t a1, uint16x8_t b1, int16x8_t shift1, uint16x8_t a2,
                                       uint16x8_t b2) {
    const uint16x8_t j = vshlq_u16(vaddq_u16(vmulq_u16(x, a1), b1), shift1); /* negative count: right shift */
    return vshrq_n_u16(vaddq_u16(vmulq_u16(j, a2), b2), 8);
}

static void bit_depth_u8(const uint8_t *src, uint8_t *dst, size_t count, int bits) {
    size_t i = 0;
    if (bits == 1) { /* 255 where x >= 128 */
        const uint8x16_t half = vdupq_n_u8(128);
        for (; i + 16 <= count; i += 16) vst1q_u8(dst + i, vcgeq_u8(vld1q_u8(src + i), half));
    } else {
        const uint16x8_t a1 = vdupq_n_u16(eg__bit_depth_a1[bits]), b1 = vdupq_n_u16(eg__bit_depth_b1[bits]);
        const uint16x8_t a2 = vdupq_n_u16(eg__bit_depth_a2[bits]), b2 = vdupq_n_u16(eg__bit_depth_b2[bits]);
        const int16x8_t shift1 = vdupq_n_s16((int16_t)-(int)eg__bit_depth_s1[bits]);
        for (; i + 16 <= count; i += 16) {
            const uint8x16_t x = vld1q_u8(src + i);
            const uint16x8_t lo = bit_depth_u16(vmovl_u8(vget_low_u8(x)), a1, b1, shift1, a2, b2);
            const uint16x8_t hi = bit_depth_u16(vmovl_u8(vget_high_u8(x)), a1, b1, shift1, a2, b2);
            vst1q_u8(dst + i, vcombine_u8(vmovn_u16(lo), vmovn_u16(hi)));
        }
    }
    for (; i < count; i++) dst[i] = eg__bit_depth_u8_one(src[i], bits);
}

/* ---------------------------------------------------------------- median */

#define EG_T uint8_t
#define EG_V uint8x16_t
#define EG_LANES 16
#define EG_LOAD(p) vld1q_u8(p)
#define EG_STORE(p, v) vst1q_u8((p), (v))
#define EG_MIN vminq_u8
#define EG_MAX vmaxq_u8
#define EG_FINISH(v) (v)
#define EG_NARROW eg__median_span_u8__c
#define EG_SPAN(k) median_span_u8_##k
#define EG_SHIFT1(a, b) vextq_u8(a, b, 1)
#define EG_SHIFT2(a, b) vextq_u8(a, b, 2)
#include "median_span.h"

#define EG_T float
#define EG_LANES 4
#define EG_NARROW eg__median_span_f32__c
#define EG_SPAN(k) median_span_f32_##k
#if defined(__aarch64__)
#define EG_V float32x4_t
#define EG_LOAD(p) vld1q_f32(p)
#define EG_STORE(p, v) vst1q_f32((p), (v))
#define EG_MIN vminq_f32
#define EG_MAX vmaxq_f32
#define EG_FINISH(v) vaddq_f32((v), vdupq_n_f32(0.0f))
#define EG_SHIFT1(a, b) vextq_f32(a, b, 1)
#define EG_SHIFT2(a, b) vextq_f32(a, b, 2)
#else
/* Order-preserving integer keys: flipping the magnitude bits of negative floats
 * makes signed integer order equal float order (-0 sorts just below +0). */
static inline int32x4_t flip_negative(int32x4_t b) {
    return veorq_s32(b, vandq_s32(vshrq_n_s32(b, 31), vdupq_n_s32(0x7FFFFFFF)));
}
static inline int32x4_t load_key(const float *p) { return flip_negative(vreinterpretq_s32_f32(vld1q_f32(p))); }
static inline void store_key(float *p, int32x4_t k) {
    int32x4_t b = flip_negative(k);
    const uint32x4_t negative_zero = vceqq_s32(b, vdupq_n_s32(INT32_MIN));
    b = vbicq_s32(b, vreinterpretq_s32_u32(negative_zero)); /* -0.0 -> +0.0, as the reference */
    vst1q_f32(p, vreinterpretq_f32_s32(b));
}
#define EG_V int32x4_t
#define EG_LOAD(p) load_key(p)
#define EG_STORE(p, v) store_key((p), (v))
#define EG_MIN vminq_s32
#define EG_MAX vmaxq_s32
#define EG_FINISH(v) (v)
#define EG_SHIFT1(a, b) vextq_s32(a, b, 1)
#define EG_SHIFT2(a, b) vextq_s32(a, b, 2)
#endif
#include "median_span.h"

/* ---------------------------------------------------------------- detector math */

static inline float32x4_t flush_ps(float32x4_t x) {
    const uint32x4_t tiny = vcltq_f32(vabsq_f32(x), vdupq_n_f32(EG_FLT_MIN));
    return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(x), tiny));
}

/* Mirrors eg__exp_ref operation by operation (vmulq + vaddq, never fused). */
static inline float32x4_t exp_ps(float32x4_t x) {
    const uint32x4_t valid = vcgeq_f32(x, vdupq_n_f32(EG_EXP_LO));
    x = vminq_f32(x, vdupq_n_f32(EG_EXP_HI));
    const float32x4_t t = vmulq_f32(x, vdupq_n_f32(EG_LOG2E));
    const float32x4_t magic = vdupq_n_f32(EG_ROUND_MAGIC);
    const float32x4_t n = vsubq_f32(vaddq_f32(t, magic), magic);
    float32x4_t r = vsubq_f32(x, vmulq_f32(n, vdupq_n_f32(EG_LN2_HI)));
    r = vsubq_f32(r, vmulq_f32(n, vdupq_n_f32(EG_LN2_LO)));
    const float32x4_t z = vmulq_f32(r, r);
    float32x4_t y = vdupq_n_f32(EG_EXP_P0);
    y = vaddq_f32(vmulq_f32(y, r), vdupq_n_f32(EG_EXP_P1));
    y = vaddq_f32(vmulq_f32(y, r), vdupq_n_f32(EG_EXP_P2));
    y = vaddq_f32(vmulq_f32(y, r), vdupq_n_f32(EG_EXP_P3));
    y = vaddq_f32(vmulq_f32(y, r), vdupq_n_f32(EG_EXP_P4));
    y = vaddq_f32(vmulq_f32(y, r), vdupq_n_f32(EG_EXP_P5));
    y = vmulq_f32(y, z);
    y = vaddq_f32(y, r);
    y = vaddq_f32(y, vdupq_n_f32(1.0f));
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    const float32x4_t v = vmulq_f32(y, vreinterpretq_f32_s32(e));
    return vreinterpretq_f32_u32(vandq_u32(valid, vreinterpretq_u32_f32(v)));
}

static void softmax_row(const float *x, float *p, size_t n) {
    size_t i = 0;
    float32x4_t vmax = vdupq_n_f32(-__builtin_inff());
    for (; i + 4 <= n; i += 4) vmax = vmaxq_f32(vmax, flush_ps(vld1q_f32(x + i)));
    float acc[8];
    vst1q_f32(acc, vmax);
    float mx = acc[0];
    for (int l = 1; l < 4; l++) mx = acc[l] > mx ? acc[l] : mx;
    for (; i < n; i++) mx = eg_flush(x[i]) > mx ? eg_flush(x[i]) : mx;

    const float32x4_t vm = vdupq_n_f32(mx);
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
    for (i = 0; i + 8 <= n; i += 8) {
        const float32x4_t e0 = flush_ps(exp_ps(flush_ps(vsubq_f32(flush_ps(vld1q_f32(x + i)), vm))));
        const float32x4_t e1 = flush_ps(exp_ps(flush_ps(vsubq_f32(flush_ps(vld1q_f32(x + i + 4)), vm))));
        vst1q_f32(p + i, e0);
        vst1q_f32(p + i + 4, e1);
        acc0 = vaddq_f32(acc0, e0);
        acc1 = vaddq_f32(acc1, e1);
    }
    vst1q_f32(acc, acc0);
    vst1q_f32(acc + 4, acc1);
    for (; i < n; i++) {
        const float e = eg_flush(eg__exp_ref(eg_flush(eg_flush(x[i]) - mx)));
        p[i] = e;
        acc[i % 8] += e;
    }
    const float inv = 1.0f / eg_sum8(acc);
    const float32x4_t vinv = vdupq_n_f32(inv);
    for (i = 0; i + 4 <= n; i += 4) vst1q_f32(p + i, flush_ps(vmulq_f32(vld1q_f32(p + i), vinv)));
    for (; i < n; i++) p[i] = eg_flush(p[i] * inv);
}

static float l1_row(const float *a, const float *b, size_t n) {
    float32x4_t acc0 = vdupq_n_f32(0.0f), acc1 = vdupq_n_f32(0.0f);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const float32x4_t d0 = vsubq_f32(flush_ps(vld1q_f32(a + i)), flush_ps(vld1q_f32(b + i)));
        const float32x4_t d1 = vsubq_f32(flush_ps(vld1q_f32(a + i + 4)), flush_ps(vld1q_f32(b + i + 4)));
        acc0 = vaddq_f32(acc0, flush_ps(vabsq_f32(d0)));
        acc1 = vaddq_f32(acc1, flush_ps(vabsq_f32(d1)));
    }
    float acc[8];
    vst1q_f32(acc, acc0);
    vst1q_f32(acc + 4, acc1);
    for (; i < n; i++) {
        const float d = eg_flush(a[i]) - eg_flush(b[i]);
        acc[i % 8] += eg_flush(d < 0 ? -d : d);
    }
    return eg_sum8(acc);
}

/* ---------------------------------------------------------------- preprocessing */

static inline void convert16(uint8x16_t x, float *dst, float32x4_t scale, float32x4_t mean, float32x4_t std) {
    const uint16x8_t lo = vmovl_u8(vget_low_u8(x)), hi = vmovl_u8(vget_high_u8(x));
    const uint32x4_t q[4] = {vmovl_u16(vget_low_u16(lo)), vmovl_u16(vget_high_u16(lo)),
                             vmovl_u16(vget_low_u16(hi)), vmovl_u16(vget_high_u16(hi))};
    for (int k = 0; k < 4; k++)
        vst1q_f32(dst + 4 * k, flush_ps(div_ps(flush_ps(vsubq_f32(vmulq_f32(vcvtq_f32_u32(q[k]), scale), mean)), std)));
}

static void preprocess(const uint8_t *src, float *dst, size_t npix, size_t c, size_t plane, int planar,
                       float scale, const float *mean, const float *std) {
    const float32x4_t vs = vdupq_n_f32(scale);
    float32x4_t vm[EG_PREPROCESS_MAX_CHANNELS], vd[EG_PREPROCESS_MAX_CHANNELS];
    for (size_t ch = 0; ch < c; ch++) {
        vm[ch] = vdupq_n_f32(mean[ch]);
        vd[ch] = vdupq_n_f32(std[ch]);
    }
    size_t p = 0;
    if (c == 1) {
        for (; p + 16 <= npix; p += 16) convert16(vld1q_u8(src + p), dst + p, vs, vm[0], vd[0]);
    } else if (planar) {
        /* vld2/3/4 split interleaved channels into one register each */
        for (; p + 16 <= npix; p += 16) {
            if (c == 2) {
                const uint8x16x2_t x = vld2q_u8(src + p * 2);
                for (size_t ch = 0; ch < 2; ch++) convert16(x.val[ch], dst + ch * plane + p, vs, vm[ch], vd[ch]);
            } else if (c == 3) {
                const uint8x16x3_t x = vld3q_u8(src + p * 3);
                for (size_t ch = 0; ch < 3; ch++) convert16(x.val[ch], dst + ch * plane + p, vs, vm[ch], vd[ch]);
            } else {
                const uint8x16x4_t x = vld4q_u8(src + p * 4);
                for (size_t ch = 0; ch < 4; ch++) convert16(x.val[ch], dst + ch * plane + p, vs, vm[ch], vd[ch]);
            }
        }
    }
    if (p < npix) /* tail, and interleaved output with several channels */
        eg__preprocess__c(src + p * c, planar ? dst + p : dst + p * c, npix - p, c, plane, planar, scale, mean, std);
}

/* ---------------------------------------------------------------- table lookup */

#if defined(__aarch64__)
/* 16 bytes looked up in a 256-byte table: four 64-entry TBL/TBX steps; an index
 * outside a step's 64 entries leaves the lane as it is (TBX). */
static inline uint8x16_t lookup16(uint8x16_t idx, const uint8x16x4_t t[4]) {
    const uint8x16_t k64 = vdupq_n_u8(64);
    uint8x16_t r = vqtbl4q_u8(t[0], idx);
    idx = vsubq_u8(idx, k64);
    r = vqtbx4q_u8(r, t[1], idx);
    idx = vsubq_u8(idx, k64);
    r = vqtbx4q_u8(r, t[2], idx);
    idx = vsubq_u8(idx, k64);
    return vqtbx4q_u8(r, t[3], idx);
}

static void lut(const uint8_t *src, uint8_t *dst, size_t npix, size_t c, size_t plane, int planar,
                const uint8_t *tables) {
    uint8x16x4_t t[EG_PREPROCESS_MAX_CHANNELS][4];
    for (size_t ch = 0; ch < c; ch++)
        for (size_t q = 0; q < 4; q++)
            for (size_t r = 0; r < 4; r++) t[ch][q].val[r] = vld1q_u8(tables + ch * 256 + q * 64 + r * 16);
    size_t p = 0;
    /* vld2/3/4 split interleaved channels into one register each; vst2/3/4 put them back */
    for (; p + 16 <= npix; p += 16) {
        if (c == 1) {
            vst1q_u8(dst + p, lookup16(vld1q_u8(src + p), t[0]));
        } else if (c == 2) {
            uint8x16x2_t x = vld2q_u8(src + p * 2);
            for (size_t ch = 0; ch < 2; ch++) x.val[ch] = lookup16(x.val[ch], t[ch]);
            if (planar) for (size_t ch = 0; ch < 2; ch++) vst1q_u8(dst + ch * plane + p, x.val[ch]);
            else vst2q_u8(dst + p * 2, x);
        } else if (c == 3) {
            uint8x16x3_t x = vld3q_u8(src + p * 3);
            for (size_t ch = 0; ch < 3; ch++) x.val[ch] = lookup16(x.val[ch], t[ch]);
            if (planar) for (size_t ch = 0; ch < 3; ch++) vst1q_u8(dst + ch * plane + p, x.val[ch]);
            else vst3q_u8(dst + p * 3, x);
        } else {
            uint8x16x4_t x = vld4q_u8(src + p * 4);
            for (size_t ch = 0; ch < 4; ch++) x.val[ch] = lookup16(x.val[ch], t[ch]);
            if (planar) for (size_t ch = 0; ch < 4; ch++) vst1q_u8(dst + ch * plane + p, x.val[ch]);
            else vst4q_u8(dst + p * 4, x);
        }
    }
    if (p < npix) eg__lut__c(src + p * c, planar ? dst + p : dst + p * c, npix - p, c, plane, planar, tables);
}
#else
#define lut eg__lut__c /* ARMv7 VTBL looks up 32 entries per step: no faster than the scalar loop */
#endif

/* ---------------------------------------------------------------- non-local means */

static inline void nlm_slide4(int32_t *ring, int32_t *v, uint32x4_t d) {
    const int32x4_t di = vreinterpretq_s32_u32(d);
    vst1q_s32(v, vaddq_s32(vld1q_s32(v), vsubq_s32(di, vld1q_s32(ring))));
    vst1q_s32(ring, di);
}

static inline void nlm_distance_impl(const uint8_t *const *a, const uint8_t *const *b, size_t c, size_t n,
                                     int32_t *ring, int32_t *v) {
    size_t x = 0;
    for (; x + 16 <= n; x += 16) {
        uint32x4_t d0 = vdupq_n_u32(0), d1 = d0, d2 = d0, d3 = d0;
        for (size_t ch = 0; ch < c; ch++) {
            const uint8x16_t ad = vabdq_u8(vld1q_u8(a[ch] + x), vld1q_u8(b[ch] + x));
            const uint16x8_t sl = vmull_u8(vget_low_u8(ad), vget_low_u8(ad)); /* exact: 255^2 < 2^16 */
            const uint16x8_t sh = vmull_u8(vget_high_u8(ad), vget_high_u8(ad));
            d0 = vaddw_u16(d0, vget_low_u16(sl));
            d1 = vaddw_u16(d1, vget_high_u16(sl));
            d2 = vaddw_u16(d2, vget_low_u16(sh));
            d3 = vaddw_u16(d3, vget_high_u16(sh));
        }
        nlm_slide4(ring + x, v + x, d0);
        nlm_slide4(ring + x + 4, v + x + 4, d1);
        nlm_slide4(ring + x + 8, v + x + 8, d2);
        nlm_slide4(ring + x + 12, v + x + 12, d3);
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

static inline int all_lanes(uint32x4_t m) { /* every lane all ones (AArch64 and ARMv7) */
    const uint32x2_t both = vand_u32(vget_low_u32(m), vget_high_u32(m));
    return vget_lane_u64(vreinterpret_u64_u32(both), 0) == ~(uint64_t)0;
}

/* See kernels_avx2.c: vector indices, scalar table lookups, all-far groups at once. */
static void nlm_weights(const int32_t *v, size_t n, int block, int shift, int32_t cut, const int32_t *lut,
                        int32_t *weights) {
    const int32x4_t right = vdupq_n_s32(-shift), vcut = vdupq_n_s32(cut), far = vdupq_n_s32(lut[cut]);
    size_t x = 0;
    for (; x + 4 <= n; x += 4) {
        int32x4_t ssd = vld1q_s32(v + x);
        for (int k = 1; k < block; k++) ssd = vaddq_s32(ssd, vld1q_s32(v + x + k));
        const int32x4_t idx = vminq_s32(vshlq_s32(ssd, right), vcut); /* ssd >= 0: arithmetic = logical shift */
        if (all_lanes(vceqq_s32(idx, vcut))) {
            vst1q_s32(weights + x, far);
            continue;
        }
        int32_t i4[4];
        vst1q_s32(i4, idx);
        for (int l = 0; l < 4; l++) weights[x + (size_t)l] = lut[i4[l]];
    }
    for (; x < n; x++) weights[x] = lut[eg_nlm_index_one(v, x, block, shift, cut)];
}

static inline void nlm_accumulate_impl(const int32_t *weights, const uint8_t *const *cand, size_t c, size_t n,
                                       int32_t *wsum, int32_t *const *acc) {
    size_t x = 0;
    for (; x + 8 <= n; x += 8) {
        const int32x4_t w0 = vld1q_s32(weights + x), w1 = vld1q_s32(weights + x + 4);
        const int32x4_t any = vorrq_s32(w0, w1);
        if (all_lanes(vceqq_s32(any, vdupq_n_s32(0)))) continue; /* no similar block here */
        vst1q_s32(wsum + x, vaddq_s32(vld1q_s32(wsum + x), w0));
        vst1q_s32(wsum + x + 4, vaddq_s32(vld1q_s32(wsum + x + 4), w1));
        for (size_t ch = 0; ch < c; ch++) {
            const uint16x8_t p = vmovl_u8(vld1_u8(cand[ch] + x));
            const int32x4_t p0 = vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(p)));
            const int32x4_t p1 = vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(p)));
            int32_t *ac = acc[ch] + x;
            vst1q_s32(ac, vmlaq_s32(vld1q_s32(ac), w0, p0));
            vst1q_s32(ac + 4, vmlaq_s32(vld1q_s32(ac + 4), w1, p1));
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

const eg_kernels eg__kernels_neon = {
    EG_ISA_NEON,
    bit_depth_f32,
    bit_depth_u8,
    {NULL, median_span_u8_1, median_span_u8_2, median_span_u8_3, median_span_u8_4, median_span_u8_5,
     median_span_u8_6, median_span_u8_7},
    {NULL, median_span_f32_1, median_span_f32_2, median_span_f32_3, median_span_f32_4, median_span_f32_5,
     median_span_f32_6, median_span_f32_7},
    softmax_row,
    l1_row,
    preprocess,
    lut,
    nlm_distance,
    nlm_weights,
    nlm_accumulate,
    eg__nlm_finish__c, /* once per pixel: the integer division of the reference */
};

#endif /* EG_HAS_NEON */
