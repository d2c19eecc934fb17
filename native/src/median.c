/* Public entry points of the median filter and the plane driver that splits an
 * image into SIMD spans (windows fully inside) and reflected border pixels. */
#include "internal.h"

#define EG_DEFINE_MEDIAN(T, SUFFIX)                                                                         \
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
        const int have_cols = w >= (size_t)k, flat = have_cols && h >= (size_t)k;                           \
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
        for (size_t y = 0; y < h; y++) {                                                                    \
            const int interior_row = flat && y >= before && y + after < h;                                  \
            if (have_cols && !interior_row) {                                                               \
                for (int dy = 0; dy < k; dy++)                                                              \
                    rows[dy] = src + eg_reflect_index((ptrdiff_t)y + dy - (ptrdiff_t)before, h) * rowlen +  \
                               before * cs;                                                                 \
                span(rows, (w - (size_t)k + 1) * cs, cs, dst + y * rowlen + before * cs);                   \
            }                                                                                               \
            for (size_t x = 0; x < w; x++) {                                                                \
                if (have_cols && x == before) x = w - after; /* skip the span */                            \
                if (x >= w) break;                                                                          \
                for (size_t ch = 0; ch < cs; ch++)                                                          \
                    dst[(y * w + x) * cs + ch] = eg__median_pixel_##SUFFIX(src + ch, h, w, cs, y, x, k);    \
            }                                                                                               \
        }                                                                                                   \
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
