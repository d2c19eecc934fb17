/* Median span kernels written once over a vector "ISA description"; each SIMD
 * file defines the macros below and includes this header once per element type.
 *
 *   EG_T, EG_V               element and vector types
 *   EG_LANES                 elements per vector
 *   EG_LOAD(p), EG_STORE(p,v) unaligned load / store
 *   EG_MIN(a,b), EG_MAX(a,b) lane-wise min / max
 *   EG_FINISH(v)             final fix-up of a result vector (float: -0 -> +0)
 *   EG_NARROW(rows,n,c,k,dst) handles spans shorter than EG_LANES
 *   EG_SPAN(k)               name of the span function for window k
 *   EG_SHIFT1/2(a,b)         optional: lanes 1.. / 2.. of a:b (enables the gray 3x3 register kernel)
 *
 * The header undefines all of these at its end, so the next instantiation
 * starts clean.
 *
 * Spans never read outside the caller's rows: a span shorter than one vector
 * goes to EG_NARROW, and the last vector of a longer span is moved back to end
 * exactly at n (it recomputes a few outputs; they are the same values). */
#include "median_networks.h"

#define EG_DEFINE_SPAN_NET(K)                                                                \
    static void EG_SPAN(K)(const EG_T *const *rows, size_t n, size_t cs, EG_T *dst) {        \
        if (n < EG_LANES) {                                                                  \
            EG_NARROW(rows, n, cs, K, dst);                                                  \
            return;                                                                          \
        }                                                                                    \
        const ptrdiff_t c = (ptrdiff_t)cs, last = (ptrdiff_t)(n - EG_LANES);                 \
        for (ptrdiff_t i = 0;; i += EG_LANES) {                                              \
            if (i > last) i = last;                                                          \
            EG_V v[K * K];                                                                   \
            EG_MEDIAN_LOAD_##K(v, EG_LOAD, rows, i, c);                                      \
            EG_MEDIAN_NET_##K(v, EG_V, EG_MIN, EG_MAX);                                      \
            EG_STORE(dst + i, EG_FINISH(v[EG_MEDIAN_RANK_##K]));                             \
            if (i == last) break;                                                            \
        }                                                                                    \
    }

/* 3x3: sort each column of three, then the median of nine is
 * med3(max of the lows, med3 of the middles, min of the highs): 30 min/max
 * operations instead of the generic network's 40. */
#define EG_SORT3(a, b, c, lo, mid, hi)                      \
    do {                                                    \
        const EG_V s1_ = EG_MIN(a, b), s2_ = EG_MAX(a, b);  \
        const EG_V t_ = EG_MAX(s1_, c);                     \
        lo = EG_MIN(s1_, c);                                \
        mid = EG_MIN(s2_, t_);                              \
        hi = EG_MAX(s2_, t_);                               \
    } while (0)
#define EG_MED3(a, b, c) EG_MAX(EG_MIN(a, b), EG_MIN(EG_MAX(a, b), c))

/* 3x3, blocked: each column of three is sorted once into small stack buffers
 * (low, middle, high); the three horizontal neighbours are then read back at
 * offsets -c, 0, +c: 17 min/max per output vector instead of 30. Channel
 * strides above EG_M3_PAD sort every column three times instead. */
#define EG_M3_BLOCK 512
#ifndef EG_M3_PAD
#define EG_M3_PAD 16
#endif

/* 3x3 on gray rows (channel stride 1), in registers: the column sorts of whole
 * vectors are carried from one step to the next, and the +1 / +2 neighbours come
 * from lane shifts of two neighbouring vectors (EG_SHIFT1/EG_SHIFT2 give lanes
 * 1.. and 2.. of the concatenation a:b). Three loads per output vector and no
 * buffer; a load-port-bound kernel on x86 and one vext each on NEON. */
#define EG_DEFINE_SPAN_3X3_GRAY()                                                                    \
    static ptrdiff_t EG_SPAN(3_gray)(const EG_T *r0, const EG_T *r1, const EG_T *r2, ptrdiff_t n,     \
                                     EG_T *dst) {                                                    \
        /* vector k holds columns k*LANES - 1 ..; output vector k needs vectors k and k+1 */          \
        EG_V lo, mi, hi;                                                                             \
        EG_SORT3(EG_LOAD(r0 - 1), EG_LOAD(r1 - 1), EG_LOAD(r2 - 1), lo, mi, hi);                     \
        ptrdiff_t i = 0;                                                                             \
        for (; i + 2 * EG_LANES <= n + 2 && i + EG_LANES <= n; i += EG_LANES) {                      \
            const ptrdiff_t e = i + EG_LANES - 1;                                                    \
            EG_V lo2, mi2, hi2;                                                                      \
            EG_SORT3(EG_LOAD(r0 + e), EG_LOAD(r1 + e), EG_LOAD(r2 + e), lo2, mi2, hi2);              \
            const EG_V L = EG_MAX(EG_MAX(lo, EG_SHIFT1(lo, lo2)), EG_SHIFT2(lo, lo2));               \
            const EG_V H = EG_MIN(EG_MIN(hi, EG_SHIFT1(hi, hi2)), EG_SHIFT2(hi, hi2));               \
            const EG_V M = EG_MED3(mi, EG_SHIFT1(mi, mi2), EG_SHIFT2(mi, mi2));                      \
            EG_STORE(dst + i, EG_FINISH(EG_MED3(L, M, H)));                                          \
            lo = lo2;                                                                                \
            mi = mi2;                                                                                \
            hi = hi2;                                                                                \
        }                                                                                            \
        return i; /* outputs done; the caller finishes the rest */                                   \
    }

#define EG_DEFINE_SPAN_3X3()                                                                       \
    /* one block [b, b + len) of the span; `c` is a literal for gray images so the                 \
     * compiler folds the buffer offsets */                                                        \
    static inline void EG_SPAN(3_block)(const EG_T *r0, const EG_T *r1, const EG_T *r2, ptrdiff_t b, \
                                        ptrdiff_t len, ptrdiff_t c, EG_T *dst, EG_T *lo, EG_T *mi,   \
                                        EG_T *hi) {                                                \
        /* column sorts of elements b - c .. b + len + c; buffer index 0 is b - c */               \
        const ptrdiff_t m = len + 2 * c, mlast = m - EG_LANES;                                     \
        for (ptrdiff_t j = 0;; j += EG_LANES) {                                                    \
            if (j > mlast) j = mlast;                                                              \
            const ptrdiff_t e = b - c + j;                                                         \
            EG_V l, md, h;                                                                         \
            EG_SORT3(EG_LOAD(r0 + e), EG_LOAD(r1 + e), EG_LOAD(r2 + e), l, md, h);                 \
            EG_STORE(lo + j, l);                                                                   \
            EG_STORE(mi + j, md);                                                                  \
            EG_STORE(hi + j, h);                                                                   \
            if (j == mlast) break;                                                                 \
        }                                                                                          \
        const ptrdiff_t last = len - EG_LANES;                                                     \
        for (ptrdiff_t i = 0;; i += EG_LANES) {                                                    \
            if (i > last) i = last;                                                                \
            const EG_V L = EG_MAX(EG_MAX(EG_LOAD(lo + i), EG_LOAD(lo + i + c)), EG_LOAD(lo + i + 2 * c)); \
            const EG_V H = EG_MIN(EG_MIN(EG_LOAD(hi + i), EG_LOAD(hi + i + c)), EG_LOAD(hi + i + 2 * c)); \
            const EG_V M = EG_MED3(EG_LOAD(mi + i), EG_LOAD(mi + i + c), EG_LOAD(mi + i + 2 * c));  \
            EG_STORE(dst + b + i, EG_FINISH(EG_MED3(L, M, H)));                                    \
            if (i == last) break;                                                                  \
        }                                                                                          \
    }                                                                                              \
    static void EG_SPAN(3)(const EG_T *const *rows, size_t n, size_t cs, EG_T *dst) {              \
        if (n < EG_LANES) {                                                                        \
            EG_NARROW(rows, n, cs, 3, dst);                                                        \
            return;                                                                                \
        }                                                                                          \
        const ptrdiff_t c = (ptrdiff_t)cs;                                                         \
        const EG_T *r0 = rows[0], *r1 = rows[1], *r2 = rows[2];                                    \
        if (cs > EG_M3_PAD) {                                                                      \
            const ptrdiff_t last = (ptrdiff_t)(n - EG_LANES);                                      \
            for (ptrdiff_t i = 0;; i += EG_LANES) {                                                \
                if (i > last) i = last;                                                            \
                EG_V l0, m0, h0, l1, m1, h1, l2, m2, h2;                                           \
                EG_SORT3(EG_LOAD(r0 + i - c), EG_LOAD(r1 + i - c), EG_LOAD(r2 + i - c), l0, m0, h0); \
                EG_SORT3(EG_LOAD(r0 + i), EG_LOAD(r1 + i), EG_LOAD(r2 + i), l1, m1, h1);           \
                EG_SORT3(EG_LOAD(r0 + i + c), EG_LOAD(r1 + i + c), EG_LOAD(r2 + i + c), l2, m2, h2); \
                const EG_V lo = EG_MAX(EG_MAX(l0, l1), l2), hi = EG_MIN(EG_MIN(h0, h1), h2);       \
                EG_STORE(dst + i, EG_FINISH(EG_MED3(lo, EG_MED3(m0, m1, m2), hi)));                \
                if (i == last) break;                                                              \
            }                                                                                      \
            return;                                                                                \
        }                                                                                          \
        EG_GRAY_FIRST                                                                              \
        EG_T lo[EG_M3_BLOCK + 2 * EG_M3_PAD], mi[EG_M3_BLOCK + 2 * EG_M3_PAD],                     \
            hi[EG_M3_BLOCK + 2 * EG_M3_PAD];                                                       \
        for (ptrdiff_t b = 0; b < (ptrdiff_t)n; b += EG_M3_BLOCK) {                                \
            ptrdiff_t len = (ptrdiff_t)n - b < EG_M3_BLOCK ? (ptrdiff_t)n - b : EG_M3_BLOCK;       \
            if (len < EG_LANES) { /* short last block: redo the final vector */                    \
                b = (ptrdiff_t)n - EG_LANES;                                                       \
                len = EG_LANES;                                                                    \
            }                                                                                      \
            if (c == 1)                                                                            \
                EG_SPAN(3_block)(r0, r1, r2, b, len, 1, dst, lo, mi, hi);                          \
            else                                                                                   \
                EG_SPAN(3_block)(r0, r1, r2, b, len, c, dst, lo, mi, hi);                          \
        }                                                                                          \
    }

#if defined(EG_SHIFT1)
EG_DEFINE_SPAN_3X3_GRAY()
/* gray spans: the register kernel, then the blocked code for the last few outputs */
#define EG_GRAY_FIRST                                                                                \
    if (cs == 1) {                                                                                   \
        const ptrdiff_t done = EG_SPAN(3_gray)(r0, r1, r2, (ptrdiff_t)n, dst);                       \
        if (done == (ptrdiff_t)n) return;                                                            \
        const ptrdiff_t from = (ptrdiff_t)n - EG_LANES < done ? (ptrdiff_t)n - EG_LANES : done;      \
        r0 += from, r1 += from, r2 += from, dst += from, n -= (size_t)from;                          \
    }
#else
#define EG_GRAY_FIRST
#endif
EG_DEFINE_SPAN_NET(1)
EG_DEFINE_SPAN_NET(2)
EG_DEFINE_SPAN_3X3()
EG_DEFINE_SPAN_NET(4)
EG_DEFINE_SPAN_NET(5)
EG_DEFINE_SPAN_NET(6)
EG_DEFINE_SPAN_NET(7)

#undef EG_DEFINE_SPAN_NET
#undef EG_DEFINE_SPAN_3X3
#undef EG_DEFINE_SPAN_3X3_GRAY
#undef EG_GRAY_FIRST
#undef EG_SORT3
#undef EG_MED3
#undef EG_M3_BLOCK

/* the instantiation's parameters */
#undef EG_T
#undef EG_V
#undef EG_LANES
#undef EG_LOAD
#undef EG_STORE
#undef EG_MIN
#undef EG_MAX
#undef EG_FINISH
#undef EG_NARROW
#undef EG_SPAN
#undef EG_SHIFT1
#undef EG_SHIFT2
