/* Public entry points of the median filter and the plane driver that splits an
 * image into SIMD spans (windows fully inside) and reflected border pixels. */
#include "internal.h"
#include "median_networks.h"

#define EG_SMIN(a, b) ((b) < (a) ? (b) : (a))
#define EG_SMAX(a, b) ((b) < (a) ? (a) : (b))
#define EG_NET_CASE(K)                                   \
    case K:                                              \
        EG_MEDIAN_NET_##K(v, T_, EG_SMIN, EG_SMAX);      \
        return v[EG_MEDIAN_RANK_##K];

/* Median of the k*k gathered values with the same selection networks as the
 * SIMD spans, one pixel at a time: the border pixels of the SIMD path. */
#define EG_DEFINE_SELECT(T, SUFFIX)                                       \
    static T select_##SUFFIX(T *v, int k) {                               \
        typedef T T_;                                                     \
        switch (k) {                                                      \
            EG_NET_CASE(1)                                                \
            EG_NET_CASE(2)                                                \
            EG_NET_CASE(3)                                                \
            EG_NET_CASE(4)                                                \
            EG_NET_CASE(5)                                                \
            EG_NET_CASE(6)                                                \
            EG_NET_CASE(7)                                                \
        }                                                                 \
        return v[0];                                                      \
    }
EG_DEFINE_SELECT(uint8_t, u8)
EG_DEFINE_SELECT(float, f32)
#define EG_FINISH_u8(x) (x)
#define EG_FINISH_f32(x) ((x) + 0.0f) /* -0.0 -> +0.0, as the reference */

/* Border columns through the SIMD spans: the columns a block of output
 * columns [x0, x1) needs are gathered (reflected both ways) into a small
 * transposed strip, where image rows run along the strip; a k x k median is the
 * same on the transposed window, so one span call yields a whole column. */
#define EG_STRIP_ROWS 64
#define EG_STRIP_MAX_CHANNELS 4
#define EG_STRIP_MAX_COLS (2 * EG_MEDIAN_MAX_WINDOW - 2)

#define EG_DEFINE_MEDIAN(T, SUFFIX)                                                                         \
    static void border_scalar_##SUFFIX(const T *src, T *dst, size_t h, size_t w, size_t cs, int k, size_t y, \
                                       size_t x0, size_t x1) {                                              \
        const size_t rowlen = w * cs, before = (size_t)k / 2;                                               \
        const T *prow[EG_MEDIAN_MAX_WINDOW];                                                                \
        for (int dy = 0; dy < k; dy++)                                                                      \
            prow[dy] = src + eg_reflect_index((ptrdiff_t)y + dy - (ptrdiff_t)before, h) * rowlen;           \
        for (size_t x = x0; x < x1; x++) {                                                                  \
            size_t col[EG_MEDIAN_MAX_WINDOW];                                                               \
            for (int dx = 0; dx < k; dx++)                                                                  \
                col[dx] = eg_reflect_index((ptrdiff_t)x + dx - (ptrdiff_t)before, w) * cs;                  \
            for (size_t ch = 0; ch < cs; ch++) {                                                            \
                T v[EG_MEDIAN_MAX_WINDOW * EG_MEDIAN_MAX_WINDOW];                                           \
                for (int dy = 0; dy < k; dy++)                                                              \
                    for (int dx = 0; dx < k; dx++) v[dy * k + dx] = prow[dy][col[dx] + ch];                 \
                dst[(y * w + x) * cs + ch] = EG_FINISH_##SUFFIX(select_##SUFFIX(v, k));                     \
            }                                                                                               \
        }                                                                                                   \
    }                                                                                                       \
                                                                                                            \
    /* Output columns [x0, x1) (x1 - x0 <= k - 1) of every row. */                                          \
    static void border_columns_##SUFFIX(const T *src, T *dst, size_t h, size_t w, size_t cs, int k,         \
                                        size_t x0, size_t x1, eg_median_span_##SUFFIX##_fn span) {          \
        if (x0 >= x1) return;                                                                               \
        if (cs > EG_STRIP_MAX_CHANNELS) {                                                                   \
            for (size_t y = 0; y < h; y++) border_scalar_##SUFFIX(src, dst, h, w, cs, k, y, x0, x1);        \
            return;                                                                                         \
        }                                                                                                   \
        T strip[EG_STRIP_MAX_COLS][(EG_STRIP_ROWS + EG_MEDIAN_MAX_WINDOW - 1) * EG_STRIP_MAX_CHANNELS];     \
        T out[EG_STRIP_ROWS * EG_STRIP_MAX_CHANNELS];                                                       \
        const size_t before = (size_t)k / 2, ncols = (x1 - x0) + (size_t)k - 1, rowlen = w * cs;            \
        size_t col[EG_STRIP_MAX_COLS];                                                                      \
        for (size_t r = 0; r < ncols; r++)                                                                  \
            col[r] = eg_reflect_index((ptrdiff_t)(x0 + r) - (ptrdiff_t)before, w) * cs;                     \
        for (size_t y0 = 0; y0 < h; y0 += EG_STRIP_ROWS) {                                                  \
            const size_t len = h - y0 < EG_STRIP_ROWS ? h - y0 : EG_STRIP_ROWS;                             \
            for (size_t j = 0; j < len + (size_t)k - 1; j++) {                                              \
                const T *row = src + eg_reflect_index((ptrdiff_t)(y0 + j) - (ptrdiff_t)before, h) * rowlen; \
                if (cs == 1) /* the common gray case, spelled out so no memcpy call is made per value */    \
                    for (size_t r = 0; r < ncols; r++) strip[r][j] = row[col[r]];                           \
                else                                                                                        \
                    for (size_t r = 0; r < ncols; r++)                                                      \
                        for (size_t ch = 0; ch < cs; ch++) strip[r][j * cs + ch] = row[col[r] + ch];        \
            }                                                                                               \
            for (size_t x = x0; x < x1; x++) {                                                              \
                const T *rows[EG_MEDIAN_MAX_WINDOW];                                                        \
                for (int dy = 0; dy < k; dy++) rows[dy] = strip[(x - x0) + (size_t)dy] + before * cs;       \
                span(rows, len * cs, cs, out);                                                              \
                T *d = dst + (y0 * w + x) * cs;                                                             \
                if (cs == 1)                                                                                \
                    for (size_t j = 0; j < len; j++) d[j * w] = out[j];                                     \
                else                                                                                        \
                    for (size_t j = 0; j < len; j++)                                                        \
                        for (size_t ch = 0; ch < cs; ch++) d[j * rowlen + ch] = out[j * cs + ch];           \
            }                                                                                               \
        }                                                                                                   \
    }                                                                                                       \
                                                                                                            \
    static void median_plane_##SUFFIX(const T *src, T *dst, size_t h, size_t w, size_t cs, int k,          \
                                      const eg_kernels *kt) {                                               \
        if (kt->isa == EG_ISA_SCALAR) { /* the reference: every pixel on its own */                         \
            for (size_t y = 0; y < h; y++)                                                                  \
                for (size_t x = 0; x < w; x++)                                                              \
                    for (size_t ch = 0; ch < cs; ch++)                                                      \
                        dst[(y * w + x) * cs + ch] = eg__median_pixel_##SUFFIX(src + ch, h, w, cs, y, x, k); \
            return;                                                                                         \
        }                                                                                                   \
        const eg_median_span_##SUFFIX##_fn span = kt->median_span_##SUFFIX[k];                              \
        const size_t rowlen = w * cs, before = (size_t)k / 2, after = (size_t)k - 1 - before;              \
        if (w < (size_t)k) { /* no column has its whole window inside: all border */                        \
            border_columns_##SUFFIX(src, dst, h, w, cs, k, 0, w, span);                                     \
            return;                                                                                         \
        }                                                                                                   \
        const int flat = h >= (size_t)k;                                                                    \
        const T *rows[EG_MEDIAN_MAX_WINDOW];                                                                \
        if (flat) {                                                                                         \
            /* All rows whose windows fit, as one long span: rows are contiguous, so                        \
             * row-crossing windows are in bounds; their outputs are the border                             \
             * columns, recomputed below. */                                                                \
            const size_t start = ((before * w) + before) * cs;                                              \
            const size_t end = ((h - 1 - after) * w + (w - 1 - after)) * cs + cs;                           \
            for (int dy = 0; dy < k; dy++) rows[dy] = src + (start - before * rowlen) + (size_t)dy * rowlen; \
            span(rows, end - start, cs, dst + start);                                                       \
        }                                                                                                   \
        for (size_t y = 0; y < h; y++) { /* rows whose windows cross the top or bottom edge */              \
            if (flat && y >= before && y + after < h) continue;                                             \
            for (int dy = 0; dy < k; dy++)                                                                  \
                rows[dy] = src + eg_reflect_index((ptrdiff_t)y + dy - (ptrdiff_t)before, h) * rowlen +      \
                           before * cs;                                                                     \
            span(rows, (w - (size_t)k + 1) * cs, cs, dst + y * rowlen + before * cs);                       \
        }                                                                                                   \
        border_columns_##SUFFIX(src, dst, h, w, cs, k, 0, before, span);                                    \
        border_columns_##SUFFIX(src, dst, h, w, cs, k, w - after, w, span);                                 \
    }                                                                                                       \
                                                                                                            \
    eg_status eg_median_##SUFFIX(const T *src, T *dst, size_t n, size_t h, size_t w, size_t c,             \
                                 eg_layout layout, int window, eg_isa isa) {                                \
        if (window < 1 || window > EG_MEDIAN_MAX_WINDOW) return EG_ERR_INVALID_WINDOW;                     \
        if (layout != EG_LAYOUT_NHWC && layout != EG_LAYOUT_NCHW) return EG_ERR_INVALID_LAYOUT;            \
        const eg_kernels *kt = eg__kernels(isa);                                                            \
        if (kt == NULL) return EG_ERR_UNSUPPORTED_ISA;                                                      \
        size_t hw, plane, total, bytes;                                                                     \
        if (!eg_mul_ok(h, w, &hw) || !eg_mul_ok(hw, c, &plane) || !eg_mul_ok(plane, n, &total) ||          \
            !eg_mul_ok(total, sizeof(T), &bytes) || total > (size_t)PTRDIFF_MAX / sizeof(T))                \
            return EG_ERR_OVERFLOW;                                                                         \
        if (total == 0) return EG_OK;                                                                       \
        if (src == NULL || dst == NULL) return EG_ERR_NULL_POINTER;                                         \
        if (eg_overlaps(src, bytes, dst, bytes)) return EG_ERR_ALIASING;                                    \
        if (layout == EG_LAYOUT_NHWC) {                                                                     \
            for (size_t i = 0; i < n; i++)                                                                  \
                median_plane_##SUFFIX(src + i * plane, dst + i * plane, h, w, c, window, kt);               \
        } else {                                                                                            \
            for (size_t i = 0; i < n * c; i++)                                                              \
                median_plane_##SUFFIX(src + i * hw, dst + i * hw, h, w, 1, window, kt);                     \
        }                                                                                                   \
        return EG_OK;                                                                                       \
    }

EG_DEFINE_MEDIAN(uint8_t, u8)
EG_DEFINE_MEDIAN(float, f32)
