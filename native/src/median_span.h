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

#define EG_DEFINE_SPAN_3X3()                                                                   \
    static void EG_SPAN(3)(const EG_T *const *rows, size_t n, size_t cs, EG_T *dst) {          \
        if (n < EG_LANES) {                                                                    \
            EG_NARROW(rows, n, cs, 3, dst);                                                    \
            return;                                                                            \
        }                                                                                      \
        const ptrdiff_t c = (ptrdiff_t)cs, last = (ptrdiff_t)(n - EG_LANES);                   \
        const EG_T *r0 = rows[0], *r1 = rows[1], *r2 = rows[2];                                \
        for (ptrdiff_t i = 0;; i += EG_LANES) {                                                \
            if (i > last) i = last;                                                            \
            EG_V l0, m0, h0, l1, m1, h1, l2, m2, h2;                                           \
            EG_SORT3(EG_LOAD(r0 + i - c), EG_LOAD(r1 + i - c), EG_LOAD(r2 + i - c), l0, m0, h0); \
            EG_SORT3(EG_LOAD(r0 + i), EG_LOAD(r1 + i), EG_LOAD(r2 + i), l1, m1, h1);           \
            EG_SORT3(EG_LOAD(r0 + i + c), EG_LOAD(r1 + i + c), EG_LOAD(r2 + i + c), l2, m2, h2); \
            const EG_V lo = EG_MAX(EG_MAX(l0, l1), l2);                                        \
            const EG_V hi = EG_MIN(EG_MIN(h0, h1), h2);                                        \
            const EG_V mid = EG_MED3(m0, m1, m2);                                              \
            EG_STORE(dst + i, EG_FINISH(EG_MED3(lo, mid, hi)));                                \
            if (i == last) break;                                                              \
        }                                                                                      \
    }

EG_DEFINE_SPAN_NET(1)
EG_DEFINE_SPAN_NET(2)
EG_DEFINE_SPAN_3X3()
EG_DEFINE_SPAN_NET(4)
EG_DEFINE_SPAN_NET(5)
EG_DEFINE_SPAN_NET(6)
EG_DEFINE_SPAN_NET(7)

#undef EG_DEFINE_SPAN_NET
#undef EG_DEFINE_SPAN_3X3
#undef EG_SORT3
#undef EG_MED3
