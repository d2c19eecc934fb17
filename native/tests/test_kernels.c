/* C unit tests: every ISA variant against the scalar reference, bit for bit,
 * plus the reference against independent formulas and every error path.
 *
 * Buffers are allocated at their exact size so AddressSanitizer (and qemu's
 * page ends) catch any over-read. Environment: EG_TEST_SEED, EG_TEST_ROUNDS. */
#include "edgeguard/edgeguard.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failures = 0, checks = 0;
#define CHECK(cond, ...)                                                  \
    do {                                                                  \
        checks++;                                                         \
        if (!(cond)) {                                                    \
            failures++;                                                   \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);          \
            fprintf(stderr, __VA_ARGS__);                                 \
            fprintf(stderr, "\n");                                        \
            if (failures > 20) exit(1);                                   \
        }                                                                 \
    } while (0)

/* xorshift64*: deterministic, no global state beyond the test's own seed */
static uint64_t rng_state = 88172645463325252ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return rng_state * 2685821657736338717ull;
}
static size_t rnd_range(size_t lo, size_t hi) { return lo + (size_t)(rnd() % (hi - lo + 1)); }
static float rnd_unit(void) { return (float)(rnd() >> 40) / (float)(1 << 24); }

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static const eg_isa all_isas[] = {EG_ISA_SSE2, EG_ISA_AVX2, EG_ISA_AVX512, EG_ISA_NEON};
#define N_ISAS (sizeof all_isas / sizeof all_isas[0])
static int isa_on(eg_isa isa) { return (eg_isa_available() & (uint32_t)isa) != 0; }

/* Floats worth testing: [0,1] values, exact halfway points, signed zeros,
 * subnormals, large and non-finite values. */
static float interesting_float(int bits) {
    const float m = (float)((1 << bits) - 1);
    switch (rnd() % 10) {
    case 0: return ((float)rnd_range(0, (size_t)m * 2) + 0.5f) / m; /* ties after scaling */
    case 1: return (rnd() & 1) ? -0.0f : 0.0f;
    case 2: return FLT_MIN / (float)rnd_range(2, 1000);          /* subnormal */
    case 3: return -rnd_unit();
    case 4: return rnd_unit() * 1e9f;
    case 5: return (rnd() & 1) ? INFINITY : -INFINITY;
    default: return rnd_unit();
    }
}

/* The header's flush(): |v| < FLT_MIN -> +0, written independently of internal.h. */
static float flush_ref(float v) { return fabsf(v) < FLT_MIN ? 0.0f : v; }

static int same_float(float a, float b) {
    if (isnan(a) && isnan(b)) return 1;
    return memcmp(&a, &b, sizeof a) == 0;
}

/* ------------------------------------------------------------------ bit depth */

static void test_bit_depth(int rounds) {
    /* the integer uint8 squeezer equals the float formula on x/255 for all inputs */
    for (int bits = 1; bits <= 8; bits++) {
        uint8_t all[256], ref[256];
        for (int x = 0; x < 256; x++) all[x] = (uint8_t)x;
        CHECK(eg_bit_depth_u8(all, ref, 256, bits, EG_ISA_SCALAR) == EG_OK, "u8 scalar");
        const double m = (double)((1 << bits) - 1);
        for (int x = 0; x < 256; x++) {
            const float f = (float)x / 255.0f;
            const float q = nearbyintf(f * (float)m) / (float)m;
            const int expect = (int)nearbyintf(q * 255.0f);
            CHECK(ref[x] == expect, "u8 bits=%d x=%d got %d want %d", bits, x, ref[x], expect);
            (void)m;
        }
        for (size_t i = 0; i < N_ISAS; i++) {
            if (!isa_on(all_isas[i])) continue;
            uint8_t out[256];
            CHECK(eg_bit_depth_u8(all, out, 256, bits, all_isas[i]) == EG_OK, "u8 simd");
            CHECK(memcmp(out, ref, 256) == 0, "u8 bits=%d isa=%s differs", bits, eg_isa_name(all_isas[i]));
        }
    }
    for (int r = 0; r < rounds; r++) {
        const int bits = (int)rnd_range(1, 8);
        const size_t n = rnd_range(0, 300);
        float *src = xmalloc(n * sizeof(float)), *ref = xmalloc(n * sizeof(float)), *out = xmalloc(n * sizeof(float));
        uint8_t *s8 = xmalloc(n), *r8 = xmalloc(n), *o8 = xmalloc(n);
        for (size_t i = 0; i < n; i++) {
            src[i] = interesting_float(bits);
            s8[i] = (uint8_t)rnd();
        }
        CHECK(eg_bit_depth_f32(src, ref, n, bits, EG_ISA_SCALAR) == EG_OK, "f32 scalar");
        CHECK(eg_bit_depth_u8(s8, r8, n, bits, EG_ISA_SCALAR) == EG_OK, "u8 scalar");
        for (size_t i = 0; i < n; i++) {
            const float m = (float)((1 << bits) - 1);
            CHECK(same_float(ref[i], rintf(src[i] * m) / m), "f32 reference formula at %g", src[i]);
        }
        for (size_t k = 0; k < N_ISAS; k++) {
            if (!isa_on(all_isas[k])) continue;
            CHECK(eg_bit_depth_f32(src, out, n, bits, all_isas[k]) == EG_OK, "f32 simd");
            for (size_t i = 0; i < n; i++)
                CHECK(same_float(out[i], ref[i]), "f32 isa=%s bits=%d x=%a got %a want %a", eg_isa_name(all_isas[k]),
                      bits, src[i], out[i], ref[i]);
            CHECK(eg_bit_depth_u8(s8, o8, n, bits, all_isas[k]) == EG_OK, "u8 simd");
            CHECK(n == 0 || memcmp(o8, r8, n) == 0, "u8 isa=%s n=%zu", eg_isa_name(all_isas[k]), n);
            /* in place gives the same result */
            memcpy(o8, s8, n);
            CHECK(eg_bit_depth_u8(o8, o8, n, bits, all_isas[k]) == EG_OK, "u8 in place");
            CHECK(n == 0 || memcmp(o8, r8, n) == 0, "u8 in place isa=%s", eg_isa_name(all_isas[k]));
        }
        free(src), free(ref), free(out), free(s8), free(r8), free(o8);
    }
}

/* ------------------------------------------------------------------ median */

static size_t reflect(long i, size_t n) { /* independent statement of scipy's rule */
    while (i < 0 || i >= (long)n) i = (i < 0) ? -i - 1 : 2 * (long)n - i - 1;
    return (size_t)i;
}

static int cmp_u8(const void *a, const void *b) { return *(const uint8_t *)a - *(const uint8_t *)b; }

static void test_median(int rounds) {
    for (int r = 0; r < rounds; r++) {
        const size_t n = rnd_range(1, 2), h = rnd_range(1, 24), w = rnd_range(1, 70), c = rnd_range(1, 4);
        const int k = (int)rnd_range(1, 7);
        const eg_layout layout = (rnd() & 1) ? EG_LAYOUT_NCHW : EG_LAYOUT_NHWC;
        const size_t total = n * h * w * c;
        uint8_t *s8 = xmalloc(total), *r8 = xmalloc(total), *o8 = xmalloc(total);
        float *sf = xmalloc(total * sizeof(float)), *rf = xmalloc(total * sizeof(float)),
              *of = xmalloc(total * sizeof(float));
        const int levels = (rnd() & 1) ? 4 : 256; /* few levels: many ties */
        for (size_t i = 0; i < total; i++) {
            s8[i] = (uint8_t)(rnd() % (uint64_t)levels);
            const uint64_t t = rnd() % 8;
            sf[i] = t == 0 ? -0.0f : t == 1 ? FLT_MIN / 3.0f : t == 2 ? -rnd_unit() : (float)s8[i] / 7.0f;
        }
        CHECK(eg_median_u8(s8, r8, n, h, w, c, layout, k, EG_ISA_SCALAR) == EG_OK, "median u8 scalar");
        CHECK(eg_median_f32(sf, rf, n, h, w, c, layout, k, EG_ISA_SCALAR) == EG_OK, "median f32 scalar");
        /* the scalar reference against a direct statement of the definition */
        for (int probe = 0; probe < 8; probe++) {
            const size_t in = rnd_range(0, n - 1), y = rnd_range(0, h - 1), x = rnd_range(0, w - 1),
                         ch = rnd_range(0, c - 1);
            uint8_t win[49];
            int m = 0;
            for (int dy = 0; dy < k; dy++)
                for (int dx = 0; dx < k; dx++) {
                    const size_t yy = reflect((long)y + dy - k / 2, h), xx = reflect((long)x + dx - k / 2, w);
                    const size_t idx = layout == EG_LAYOUT_NHWC ? ((in * h + yy) * w + xx) * c + ch
                                                                 : ((in * c + ch) * h + yy) * w + xx;
                    win[m++] = s8[idx];
                }
            qsort(win, (size_t)m, 1, cmp_u8);
            const size_t idx = layout == EG_LAYOUT_NHWC ? ((in * h + y) * w + x) * c + ch
                                                         : ((in * c + ch) * h + y) * w + x;
            CHECK(r8[idx] == win[m / 2], "median reference k=%d at (%zu,%zu,%zu)", k, y, x, ch);
        }
        for (size_t i = 0; i < N_ISAS; i++) {
            if (!isa_on(all_isas[i])) continue;
            memset(o8, 0xAA, total);
            CHECK(eg_median_u8(s8, o8, n, h, w, c, layout, k, all_isas[i]) == EG_OK, "median u8");
            CHECK(memcmp(o8, r8, total) == 0, "median u8 isa=%s n=%zu h=%zu w=%zu c=%zu k=%d layout=%d",
                  eg_isa_name(all_isas[i]), n, h, w, c, k, layout);
            CHECK(eg_median_f32(sf, of, n, h, w, c, layout, k, all_isas[i]) == EG_OK, "median f32");
            CHECK(memcmp(of, rf, total * sizeof(float)) == 0, "median f32 isa=%s h=%zu w=%zu c=%zu k=%d",
                  eg_isa_name(all_isas[i]), h, w, c, k);
        }
        free(s8), free(r8), free(o8), free(sf), free(rf), free(of);
    }
}

/* ------------------------------------------------------------------ detector math */

static float logit_value(void) {
    switch (rnd() % 12) {
    case 0: return -INFINITY;
    case 1: return FLT_MIN / 5.0f;
    case 2: return (rnd_unit() - 0.5f) * 400.0f; /* spans exp's underflow */
    case 3: return -0.0f;
    default: return (rnd_unit() - 0.5f) * 20.0f;
    }
}

static void test_detector(int rounds) {
    for (int r = 0; r < rounds; r++) {
        const size_t rows = rnd_range(1, 5), classes = rnd_range(1, 40), sq = rnd_range(1, 3);
        const size_t cnt = rows * classes;
        float *x = xmalloc(cnt * sizeof(float)), *ref = xmalloc(cnt * sizeof(float)), *out = xmalloc(cnt * sizeof(float));
        float *sqp = xmalloc(sq * cnt * sizeof(float));
        float *per_ref = xmalloc(sq * rows * sizeof(float)), *per = xmalloc(sq * rows * sizeof(float));
        float *score_ref = xmalloc(rows * sizeof(float)), *score = xmalloc(rows * sizeof(float));
        for (size_t i = 0; i < cnt; i++) x[i] = logit_value();
        if (rnd() % 4 == 0) x[0] = NAN;
        CHECK(eg_softmax_f32(x, ref, rows, classes, EG_ISA_SCALAR) == EG_OK, "softmax scalar");
        for (size_t rr = 0; rr < rows; rr++) { /* against double precision */
            const float *xr = x + rr * classes;
            double mx = -INFINITY, sum = 0;
            int bad = 0;
            for (size_t i = 0; i < classes; i++) {
                if (isnan(xr[i])) bad = 1;
                if (xr[i] > mx) mx = xr[i];
            }
            if (bad || mx == -INFINITY) {
                CHECK(isnan(ref[rr * classes]), "softmax NaN row");
                continue;
            }
            for (size_t i = 0; i < classes; i++) sum += exp((double)xr[i] - mx);
            for (size_t i = 0; i < classes; i++) {
                const double d = (double)xr[i] - mx, want = exp(d) / sum;
                /* float32 rounding of x - max costs |d| * 2^-24 relative; exp and the sum a few ulp */
                const double tol = want == 0 ? 0 : want * (1e-6 + fabs(d) * 1.2e-7) + 2e-38;
                CHECK(fabs(ref[rr * classes + i] - want) <= tol, "softmax accuracy %g vs %g", ref[rr * classes + i], want);
            }
        }
        for (size_t i = 0; i < sq * cnt; i++) sqp[i] = rnd_unit() < 0.1f ? FLT_MIN / 2 : rnd_unit();
        CHECK(eg_squeeze_scores_f32(ref, sqp, sq, rows, classes, per_ref, score_ref, EG_ISA_SCALAR) == EG_OK,
              "scores scalar");
        for (size_t rr = 0; rr < rows; rr++) {
            double best = -1;
            for (size_t q = 0; q < sq; q++) {
                double d = 0;
                for (size_t i = 0; i < classes; i++)
                    d += fabs((double)ref[rr * classes + i] - (double)sqp[(q * rows + rr) * classes + i]);
                if (!isnan(d)) CHECK(fabs(per_ref[q * rows + rr] - d) <= 1e-6 * (d + 1), "l1 accuracy");
                best = (isnan(d) || d > best) ? d : best;
            }
            CHECK(isnan(best) ? isnan(score_ref[rr]) : fabs(score_ref[rr] - best) <= 1e-6 * (best + 1), "score max");
        }
        for (size_t k = 0; k < N_ISAS; k++) {
            if (!isa_on(all_isas[k])) continue;
            CHECK(eg_softmax_f32(x, out, rows, classes, all_isas[k]) == EG_OK, "softmax");
            for (size_t i = 0; i < cnt; i++)
                CHECK(same_float(out[i], ref[i]), "softmax isa=%s classes=%zu i=%zu x=%a got %a want %a",
                      eg_isa_name(all_isas[k]), classes, i, x[i], out[i], ref[i]);
            CHECK(eg_squeeze_scores_f32(ref, sqp, sq, rows, classes, per, score, all_isas[k]) == EG_OK, "scores");
            for (size_t i = 0; i < sq * rows; i++)
                CHECK(same_float(per[i], per_ref[i]), "l1 isa=%s", eg_isa_name(all_isas[k]));
            for (size_t i = 0; i < rows; i++) CHECK(same_float(score[i], score_ref[i]), "score isa=%s", eg_isa_name(all_isas[k]));
            CHECK(eg_l1_distance_f32(ref, sqp, out, rows, classes, all_isas[k]) == EG_OK, "l1");
            for (size_t i = 0; i < rows; i++) CHECK(same_float(out[i], per_ref[i]), "l1 direct");
            /* in-place softmax */
            memcpy(out, x, cnt * sizeof(float));
            CHECK(eg_softmax_f32(out, out, rows, classes, all_isas[k]) == EG_OK, "softmax in place");
            for (size_t i = 0; i < cnt; i++) CHECK(same_float(out[i], ref[i]), "softmax in place isa=%s", eg_isa_name(all_isas[k]));
        }
        free(x), free(ref), free(out), free(sqp), free(per_ref), free(per), free(score_ref), free(score);
    }
}

/* ------------------------------------------------------------------ preprocessing */

static void test_preprocess(int rounds) {
    for (int r = 0; r < rounds; r++) {
        const size_t n = rnd_range(1, 2), h = rnd_range(1, 20), w = rnd_range(1, 40), c = rnd_range(1, 4);
        const eg_layout layout = (rnd() & 1) ? EG_LAYOUT_NCHW : EG_LAYOUT_NHWC;
        const size_t total = n * h * w * c;
        uint8_t *src = xmalloc(total);
        float *ref = xmalloc(total * sizeof(float)), *out = xmalloc(total * sizeof(float));
        float mean[4], std[4];
        /* every fourth round probes the flushing rule: subnormal or tiny scales and
         * means (differences land below FLT_MIN), huge stds (quotients do) */
        const int tiny = r % 4 == 3;
        static const float tiny_scales[] = {1e-40f, FLT_MIN / 3, FLT_MIN, 2 * FLT_MIN, -3 * FLT_MIN, 0.0f, 1.0f / 255.0f};
        const float scale = tiny ? tiny_scales[rnd() % 7] : (rnd() & 1) ? 1.0f / 255.0f : 1.0f;
        for (size_t i = 0; i < 4; i++) {
            mean[i] = tiny ? (float)(rnd() % 8) * FLT_MIN * 0.75f - 2e-39f : rnd_unit();
            std[i] = tiny && (rnd() & 1) ? 1e37f * (0.5f + rnd_unit()) : 0.1f + rnd_unit();
        }
        for (size_t i = 0; i < total; i++) src[i] = (uint8_t)rnd();
        CHECK(eg_preprocess_u8_f32(src, ref, n, h, w, c, layout, scale, mean, std, EG_ISA_SCALAR) == EG_OK, "pre scalar");
        for (size_t in = 0; in < n; in++)
            for (size_t p = 0; p < h * w; p++)
                for (size_t ch = 0; ch < c; ch++) {
                    const float want =
                        flush_ref(flush_ref((float)src[(in * h * w + p) * c + ch] * flush_ref(scale) - flush_ref(mean[ch])) /
                                  std[ch]);
                    const size_t idx = layout == EG_LAYOUT_NHWC ? (in * h * w + p) * c + ch : (in * c + ch) * h * w + p;
                    CHECK(same_float(ref[idx], want), "preprocess reference");
                }
        for (size_t k = 0; k < N_ISAS; k++) {
            if (!isa_on(all_isas[k])) continue;
            CHECK(eg_preprocess_u8_f32(src, out, n, h, w, c, layout, scale, mean, std, all_isas[k]) == EG_OK, "pre");
            CHECK(memcmp(out, ref, total * sizeof(float)) == 0, "preprocess isa=%s c=%zu layout=%d",
                  eg_isa_name(all_isas[k]), c, layout);
        }
        free(src), free(ref), free(out);
    }
}

/* ------------------------------------------------------------------ table lookup */

static void test_lut(int rounds) {
    for (int r = 0; r < rounds; r++) {
        /* odd rounds: rows shorter than one vector (the tails alone); even: several vectors */
        const size_t n = rnd_range(1, 2), h = rnd_range(1, 20), w = rnd_range(1, (r & 1) ? 40 : 300);
        const size_t c = rnd_range(1, 4);
        const eg_layout layout = (rnd() & 1) ? EG_LAYOUT_NCHW : EG_LAYOUT_NHWC;
        const size_t total = n * h * w * c;
        uint8_t *src = xmalloc(total), *out = xmalloc(total), tables[4 * 256];
        for (size_t i = 0; i < sizeof tables; i++) tables[i] = (uint8_t)rnd();
        for (size_t i = 0; i < total; i++) src[i] = (uint8_t)rnd();
        for (size_t k = 0; k < N_ISAS; k++) {
            if (!isa_on(all_isas[k])) continue;
            memset(out, 0, total);
            CHECK(eg_lut_u8(src, out, n, h, w, c, layout, tables, all_isas[k]) == EG_OK, "lut");
            for (size_t in = 0; in < n; in++)
                for (size_t p = 0; p < h * w; p++)
                    for (size_t ch = 0; ch < c; ch++) {
                        const size_t idx = layout == EG_LAYOUT_NHWC ? (in * h * w + p) * c + ch : (in * c + ch) * h * w + p;
                        CHECK(out[idx] == tables[ch * 256 + src[(in * h * w + p) * c + ch]],
                              "lut isa=%s c=%zu layout=%d", eg_isa_name(all_isas[k]), c, layout);
                    }
        }
        free(src), free(out);
    }
}

/* ------------------------------------------------------------------ non-local means */

static long reflect101(long i, long n) { /* independent statement of OpenCV's BORDER_REFLECT_101 */
    if (n == 1) return 0;
    while (i < 0 || i >= n) i = (i < 0) ? -i : 2 * n - 2 - i;
    return i;
}

/* The definition in edgeguard.h for one output value, straight from the formula:
 * no lookup table, no sliding sums, no strips. */
static uint8_t nlm_naive(const uint8_t *img, size_t h, size_t w, size_t c, int search, int block, float strength,
                         size_t y, size_t x, size_t ch) {
    const long s = search / 2, b = block / 2;
    int shift = 0;
    while ((1 << shift) < block * block) shift++;
    const int32_t m = INT32_MAX / (search * search * 255);
    const float hh = strength * strength;
    const float divisor = hh * (float)c;
    uint32_t est = 0, wsum = 0;
#define AT(yy, xx, k) img[((size_t)reflect101((yy), (long)h) * w + (size_t)reflect101((xx), (long)w)) * c + (k)]
    for (long dy = -s; dy <= s; dy++)
        for (long dx = -s; dx <= s; dx++) {
            int32_t dist = 0;
            for (long ty = -b; ty <= b; ty++)
                for (long tx = -b; tx <= b; tx++)
                    for (size_t k = 0; k < c; k++) {
                        const long yy = (long)y + ty, xx = (long)x + tx;
                        const int32_t t = (int32_t)AT(yy, xx, k) - (int32_t)AT(yy + dy, xx + dx, k);
                        dist += t * t;
                    }
            const double avg = (double)(dist >> shift) * ((double)(1 << shift) / (double)(block * block));
            double e = exp(-avg / (double)divisor);
            if (isnan(e)) e = 1.0;
            int32_t weight = (int32_t)lrint((double)m * e);
            if ((double)weight < 0.001 * (double)m) weight = 0;
            est += (uint32_t)weight * AT((long)y + dy, (long)x + dx, ch);
            wsum += (uint32_t)weight;
        }
#undef AT
    return (uint8_t)((est + wsum / 2) / wsum);
}

static uint8_t *nlm_scratch(size_t h, size_t w, size_t c, int search, int block, float strength, size_t *bytes) {
    CHECK(eg_nlm_scratch_size(h, w, c, search, block, strength, bytes) == EG_OK, "nlm scratch size");
    return xmalloc(*bytes); /* exactly that size: ASan catches any overrun */
}

static void test_nlm(int rounds) {
    static const float strengths[] = {0.0f, 0.5f, 2.0f, 4.0f, 10.0f, 30.0f, 1e4f};
    for (int r = 0; r < rounds; r++) {
        const int big = r % 16 == 0; /* several strips */
        const size_t n = rnd_range(1, 2), c = rnd_range(1, 4);
        const size_t h = big ? rnd_range(40, 80) : rnd_range(1, 20), w = big ? rnd_range(200, 330) : rnd_range(1, 45);
        const int search = 2 * (int)rnd_range(0, big ? 4 : 7) + 1, block = 2 * (int)rnd_range(0, 3) + 1;
        const float strength = strengths[rnd() % (sizeof strengths / sizeof strengths[0])];
        const size_t total = n * h * w * c;
        uint8_t *src = xmalloc(total), *ref = xmalloc(total), *out = xmalloc(total);
        const int kind = (int)(rnd() % 3); /* noise, few levels (many similar blocks), noisy gradient */
        for (size_t i = 0; i < total; i++) {
            const size_t x = (i / c) % w, y = (i / c / w) % h;
            src[i] = kind == 0 ? (uint8_t)rnd() : kind == 1 ? (uint8_t)(rnd() % 3 * 100)
                                                             : (uint8_t)(x * 2 + y + rnd() % 5);
        }
        size_t bytes;
        uint8_t *scratch = nlm_scratch(h, w, c, search, block, strength, &bytes);
        CHECK(eg_nlm_u8(src, ref, n, h, w, c, search, block, strength, scratch, bytes, EG_ISA_SCALAR) == EG_OK,
              "nlm scalar");
        for (int probe = 0; probe < 6; probe++) {
            const size_t in = rnd_range(0, n - 1), y = rnd_range(0, h - 1), x = rnd_range(0, w - 1),
                         ch = rnd_range(0, c - 1);
            const uint8_t want = nlm_naive(src + in * h * w * c, h, w, c, search, block, strength, y, x, ch);
            const uint8_t got = ref[((in * h + y) * w + x) * c + ch];
            CHECK(got == want, "nlm reference %d-%d-%g h=%zu w=%zu c=%zu at (%zu,%zu,%zu): got %d want %d", search,
                  block, (double)strength, h, w, c, y, x, ch, got, want);
        }
        for (size_t k = 0; k < N_ISAS; k++) {
            if (!isa_on(all_isas[k])) continue;
            memset(out, 0xAA, total);
            CHECK(eg_nlm_u8(src, out, n, h, w, c, search, block, strength, scratch, bytes, all_isas[k]) == EG_OK,
                  "nlm");
            CHECK(memcmp(out, ref, total) == 0, "nlm isa=%s n=%zu h=%zu w=%zu c=%zu %d-%d-%g",
                  eg_isa_name(all_isas[k]), n, h, w, c, search, block, (double)strength);
        }
        free(src), free(ref), free(out), free(scratch);
    }
    /* strength 0 keeps only identical blocks: the image itself */
    uint8_t img[5 * 7 * 3], res[5 * 7 * 3];
    for (size_t i = 0; i < sizeof img; i++) img[i] = (uint8_t)rnd();
    size_t bytes;
    uint8_t *scratch = nlm_scratch(5, 7, 3, 13, 3, 0.0f, &bytes);
    CHECK(eg_nlm_u8(img, res, 1, 5, 7, 3, 13, 3, 0.0f, scratch, bytes, EG_ISA_AUTO) == EG_OK, "nlm h=0");
    CHECK(memcmp(img, res, sizeof img) == 0, "nlm with strength 0 is the identity on noise");
    free(scratch);
}

static void test_nlm_errors(void) {
    uint8_t b[64] = {0}, o[64];
    uint8_t scratch[4096];
    size_t bytes = 0, need = 0;
    memset(o, 0x5A, sizeof o);
    CHECK(eg_nlm_scratch_size(4, 4, 1, 13, 3, 2.0f, &need) == EG_OK && need > 0 && need <= sizeof scratch,
          "scratch size %zu", need);
    CHECK(eg_nlm_scratch_size(4, 4, 1, 13, 3, 2.0f, NULL) == EG_ERR_NULL_POINTER, "nlm size null");
    const int bad_windows[] = {0, -1, 2, 12, 65, 64};
    for (size_t i = 0; i < sizeof bad_windows / sizeof bad_windows[0]; i++) {
        CHECK(eg_nlm_u8(b, o, 1, 4, 4, 1, bad_windows[i], 3, 2.0f, scratch, sizeof scratch, EG_ISA_AUTO) ==
                  EG_ERR_INVALID_NLM_WINDOW, "nlm search %d", bad_windows[i]);
        CHECK(eg_nlm_u8(b, o, 1, 4, 4, 1, 13, bad_windows[i], 2.0f, scratch, sizeof scratch, EG_ISA_AUTO) ==
                  EG_ERR_INVALID_NLM_WINDOW, "nlm block %d", bad_windows[i]);
        CHECK(eg_nlm_scratch_size(4, 4, 1, bad_windows[i], 3, 2.0f, &bytes) == EG_ERR_INVALID_NLM_WINDOW, "size window");
    }
    CHECK(eg_nlm_scratch_size(4, 4, 1, 63, 63, 2.0f, &bytes) == EG_OK, "largest windows");
    const float bad_strengths[] = {-1.0f, NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 4; i++)
        CHECK(eg_nlm_u8(b, o, 1, 4, 4, 1, 13, 3, bad_strengths[i], scratch, sizeof scratch, EG_ISA_AUTO) ==
                  EG_ERR_INVALID_VALUE, "nlm strength %g", (double)bad_strengths[i]);
    CHECK(eg_nlm_u8(b, o, 1, 4, 4, 0, 13, 3, 2.0f, scratch, sizeof scratch, EG_ISA_AUTO) == EG_ERR_INVALID_SIZE, "c 0");
    CHECK(eg_nlm_u8(b, o, 1, 2, 2, 5, 13, 3, 2.0f, scratch, sizeof scratch, EG_ISA_AUTO) == EG_ERR_INVALID_SIZE, "c 5");
    CHECK(eg_nlm_u8(NULL, o, 1, 4, 4, 1, 13, 3, 2.0f, scratch, sizeof scratch, EG_ISA_AUTO) == EG_ERR_NULL_POINTER, "src");
    CHECK(eg_nlm_u8(b, o, 1, 4, 4, 1, 13, 3, 2.0f, NULL, sizeof scratch, EG_ISA_AUTO) == EG_ERR_NULL_POINTER, "scratch");
    CHECK(eg_nlm_u8(b, o, 1, 4, 4, 1, 13, 3, 2.0f, scratch, need - 1, EG_ISA_AUTO) == EG_ERR_SCRATCH_TOO_SMALL, "small");
    CHECK(eg_nlm_u8(b, b + 8, 1, 4, 4, 1, 13, 3, 2.0f, scratch, sizeof scratch, EG_ISA_AUTO) == EG_ERR_ALIASING, "overlap");
    CHECK(eg_nlm_u8(b, scratch + 100, 1, 4, 4, 1, 13, 3, 2.0f, scratch, sizeof scratch, EG_ISA_AUTO) ==
              EG_ERR_ALIASING, "dst in scratch");
    CHECK(eg_nlm_u8(scratch + 8, o, 1, 4, 4, 1, 13, 3, 2.0f, scratch, sizeof scratch, EG_ISA_AUTO) ==
              EG_ERR_ALIASING, "src in scratch");
    CHECK(o[0] == 0x5A, "nothing written on error");
    CHECK(eg_nlm_u8(b, o, 1, 4, 4, 1, 13, 3, 2.0f, scratch, sizeof scratch, (eg_isa)3) == EG_ERR_UNSUPPORTED_ISA, "isa");
    CHECK(eg_nlm_u8(NULL, NULL, 0, 4, 4, 1, 13, 3, 2.0f, NULL, 0, EG_ISA_AUTO) == EG_OK, "no images");
    CHECK(eg_nlm_scratch_size(0, 4, 3, 13, 3, 2.0f, &bytes) == EG_OK && bytes == 0, "empty image needs no scratch");
    CHECK(eg_nlm_scratch_size(SIZE_MAX - 4, 4, 1, 13, 3, 2.0f, &bytes) == EG_ERR_OVERFLOW, "nlm height overflow");
    CHECK(eg_nlm_scratch_size(SIZE_MAX / 8, SIZE_MAX / 8, 1, 13, 3, 2.0f, &bytes) == EG_ERR_OVERFLOW, "nlm area");
    CHECK(eg_nlm_u8(b, o, SIZE_MAX, 4, 4, 1, 13, 3, 2.0f, scratch, sizeof scratch, EG_ISA_AUTO) == EG_ERR_OVERFLOW,
          "nlm batch overflow");
}

/* ------------------------------------------------------------------ errors */

static void test_errors(void) {
    uint8_t b[16] = {0}, o[16];
    float f[16] = {0}, g[16];
    const float one[4] = {1, 1, 1, 1}, zero[4] = {0, 0, 0, 0};
    memset(o, 0x5A, sizeof o);
    CHECK(eg_bit_depth_u8(b, o, 16, 0, EG_ISA_AUTO) == EG_ERR_INVALID_BITS, "bits 0");
    CHECK(eg_bit_depth_u8(b, o, 16, 9, EG_ISA_AUTO) == EG_ERR_INVALID_BITS, "bits 9");
    CHECK(o[0] == 0x5A, "nothing written on error");
    CHECK(eg_bit_depth_u8(NULL, o, 16, 3, EG_ISA_AUTO) == EG_ERR_NULL_POINTER, "null");
    CHECK(eg_bit_depth_u8(NULL, NULL, 0, 3, EG_ISA_AUTO) == EG_OK, "empty is fine");
    CHECK(eg_bit_depth_u8(b, b + 1, 8, 3, EG_ISA_AUTO) == EG_ERR_ALIASING, "partial overlap");
    CHECK(eg_bit_depth_f32(f, g, SIZE_MAX / 2, 3, EG_ISA_AUTO) == EG_ERR_OVERFLOW, "overflow");
    CHECK(eg_bit_depth_u8(b, o, 16, 3, (eg_isa)3) == EG_ERR_UNSUPPORTED_ISA, "bad isa");
    for (size_t i = 0; i < N_ISAS; i++)
        if (!isa_on(all_isas[i]))
            CHECK(eg_bit_depth_u8(b, o, 16, 3, all_isas[i]) == EG_ERR_UNSUPPORTED_ISA, "unavailable isa");
    CHECK(eg_median_u8(b, o, 1, 4, 4, 1, EG_LAYOUT_NHWC, 0, EG_ISA_AUTO) == EG_ERR_INVALID_WINDOW, "window 0");
    CHECK(eg_median_u8(b, o, 1, 4, 4, 1, EG_LAYOUT_NHWC, 8, EG_ISA_AUTO) == EG_ERR_INVALID_WINDOW, "window 8");
    CHECK(eg_median_u8(b, o, 1, 4, 4, 1, (eg_layout)7, 3, EG_ISA_AUTO) == EG_ERR_INVALID_LAYOUT, "layout");
    CHECK(eg_median_u8(b, b, 1, 4, 4, 1, EG_LAYOUT_NHWC, 3, EG_ISA_AUTO) == EG_ERR_ALIASING, "median in place");
    CHECK(eg_median_f32(f, g, SIZE_MAX, SIZE_MAX, 2, 1, EG_LAYOUT_NHWC, 3, EG_ISA_AUTO) == EG_ERR_OVERFLOW, "median overflow");
    CHECK(eg_median_f32(f, g, 1, 0, 4, 1, EG_LAYOUT_NHWC, 3, EG_ISA_AUTO) == EG_OK, "median empty");
    CHECK(eg_softmax_f32(f, g, 2, 0, EG_ISA_AUTO) == EG_ERR_INVALID_SIZE, "softmax no classes");
    CHECK(eg_softmax_f32(f, f + 1, 2, 4, EG_ISA_AUTO) == EG_ERR_ALIASING, "softmax overlap");
    CHECK(eg_softmax_f32(f, g, SIZE_MAX / 2, 4, EG_ISA_AUTO) == EG_ERR_OVERFLOW, "softmax overflow");
    CHECK(eg_l1_distance_f32(f, f, f, 2, 4, EG_ISA_AUTO) == EG_ERR_ALIASING, "l1 out overlaps");
    CHECK(eg_squeeze_scores_f32(f, f, 0, 2, 4, NULL, g, EG_ISA_AUTO) == EG_ERR_INVALID_SIZE, "no squeezers");
    CHECK(eg_squeeze_scores_f32(f, f, 2, 2, 4, NULL, NULL, EG_ISA_AUTO) == EG_ERR_NULL_POINTER, "no score");
    CHECK(eg_squeeze_scores_f32(f, f, SIZE_MAX, 2, 4, NULL, g, EG_ISA_AUTO) == EG_ERR_OVERFLOW, "scores overflow");
    CHECK(eg_preprocess_u8_f32(b, g, 1, 2, 2, 5, EG_LAYOUT_NCHW, 1.0f, one, one, EG_ISA_AUTO) == EG_ERR_INVALID_SIZE, "5 channels");
    CHECK(eg_preprocess_u8_f32(b, g, 1, 2, 2, 1, EG_LAYOUT_NCHW, 1.0f, one, zero, EG_ISA_AUTO) == EG_ERR_INVALID_VALUE, "std 0");
    {
        const float sub[1] = {FLT_MIN / 2};
        CHECK(eg_preprocess_u8_f32(b, g, 1, 2, 2, 1, EG_LAYOUT_NCHW, 1.0f, one, sub, EG_ISA_AUTO) == EG_ERR_INVALID_VALUE,
              "subnormal std");
    }
    CHECK(eg_preprocess_u8_f32(b, g, 1, 2, 2, 1, EG_LAYOUT_NCHW, NAN, one, one, EG_ISA_AUTO) == EG_ERR_INVALID_VALUE, "scale nan");
    CHECK(eg_preprocess_u8_f32(b, g, 1, 2, 2, 1, EG_LAYOUT_NCHW, 1.0f, NULL, one, EG_ISA_AUTO) == EG_ERR_NULL_POINTER, "mean null");
    uint8_t t[5 * 256] = {0};
    CHECK(eg_lut_u8(b, o, 1, 2, 2, 5, EG_LAYOUT_NCHW, t, EG_ISA_AUTO) == EG_ERR_INVALID_SIZE, "lut 5 channels");
    CHECK(eg_lut_u8(b, o, 1, 2, 2, 1, EG_LAYOUT_NCHW, NULL, EG_ISA_AUTO) == EG_ERR_NULL_POINTER, "lut no tables");
    CHECK(eg_lut_u8(b, b + 1, 1, 2, 2, 1, EG_LAYOUT_NCHW, t, EG_ISA_AUTO) == EG_ERR_ALIASING, "lut overlap");
    CHECK(eg_lut_u8(b, o, 1, 2, 2, 1, (eg_layout)7, t, EG_ISA_AUTO) == EG_ERR_INVALID_LAYOUT, "lut layout");
    CHECK(eg_lut_u8(b, o, SIZE_MAX, SIZE_MAX, 2, 1, EG_LAYOUT_NHWC, t, EG_ISA_AUTO) == EG_ERR_OVERFLOW, "lut overflow");
    CHECK(eg_lut_u8(b, o, 1, 2, 2, 1, EG_LAYOUT_NHWC, t, (eg_isa)3) == EG_ERR_UNSUPPORTED_ISA, "lut bad isa");
    CHECK(strcmp(eg_status_string(EG_ERR_INVALID_BITS), "bit depth must be 1..8") == 0, "status string");
    CHECK(strcmp(eg_status_string((eg_status)99), "unknown status") == 0, "unknown status");
    CHECK((eg_isa_available() & EG_ISA_SCALAR) != 0, "scalar always available");
}

int main(void) {
    const char *seed = getenv("EG_TEST_SEED"), *rounds_env = getenv("EG_TEST_ROUNDS");
    if (seed) rng_state = strtoull(seed, NULL, 10) | 1u;
    const int rounds = rounds_env ? atoi(rounds_env) : 300;
    printf("edgeguard %s, ISAs available: scalar%s%s%s%s (best %s)\n", eg_version_string(),
           isa_on(EG_ISA_SSE2) ? " sse2" : "", isa_on(EG_ISA_AVX2) ? " avx2" : "",
           isa_on(EG_ISA_AVX512) ? " avx512" : "", isa_on(EG_ISA_NEON) ? " neon" : "",
           eg_isa_name(eg_isa_best()));
    test_errors();
    test_bit_depth(rounds);
    test_median(rounds);
    test_detector(rounds);
    test_preprocess(rounds);
    test_lut(rounds);
    test_nlm_errors();
    test_nlm(rounds / 3 + 1);
    printf("%d checks, %d failures\n", checks, failures);
    return failures ? 1 : 0;
}
