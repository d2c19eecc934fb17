/* Public entry points of the non-local means squeezer and the driver of its
 * row kernels.
 *
 * What is computed is OpenCV's per-pixel definition (see edgeguard.h); how is
 * organised for SIMD. The image is copied once into channel planes extended
 * with the reflect-101 border. Output rows go in strips whose accumulators stay
 * in cache. For each strip and each offset o, the rows are walked top to
 * bottom: a sliding vertical sum over block_size rows of the squared
 * differences between the image and the image shifted by o gives every
 * column's block-column sum (one new row of differences per step, so O(1) work
 * per pixel and offset), then a horizontal sum of block_size column sums gives
 * the block distance of each pixel of the row, its weight, and the weighted
 * sums. Block distances are symmetric, D(p, o) = D(p + o, -o), so only half of
 * the offsets are visited: the weight row of p serves p (offset o, "forward")
 * and p + o (offset -o, "backward"). All of it is integer arithmetic, so the
 * order of the sums does not matter and every ISA agrees bit for bit.
 */
#include "internal.h"

#include <math.h>
#include <string.h>

#define NLM_ACC_BUDGET ((size_t)256 * 1024) /* bytes of strip accumulators: a share of a typical L2 */
#define NLM_ALIGN ((size_t)64)

typedef struct nlm_plan {
    size_t h, w, c;
    size_t half_search, half_block, border; /* s, b, s + b */
    size_t pad_h, pad_w, plane;             /* one extended channel plane: pad_h x pad_w */
    size_t dist_w;                          /* w + 2s + 2b: widest row of block-column sums */
    size_t strip;                           /* output rows per strip */
    int search, block, shift;
    int32_t scale, cut; /* M, and the first index whose weight is 0 (or the largest index) */
    double dist_per_index; /* 2^shift / block^2 */
    float divisor;         /* h * h * c, in float as OpenCV computes it */
    size_t lut_off, planes_off, ring_off, v_off, weights_off, acc_off, wsum_off, bytes;
} nlm_plan;

static int32_t nlm_weight(const nlm_plan *p, int32_t index) {
    const double dist = (double)index * p->dist_per_index;
    double w = exp(-dist / (double)p->divisor);
    if (w != w) w = 1.0; /* 0 / 0 when the strength is 0: only identical blocks count */
    int32_t weight = (int32_t)lrint((double)p->scale * w); /* half to even, as cvRound */
    if ((double)weight < 0.001 * (double)p->scale) weight = 0;
    return weight;
}

/* Adds `size` bytes (rounded up to NLM_ALIGN) to the layout; 0 on overflow. */
static int nlm_reserve(size_t *total, size_t size, size_t *offset) {
    const size_t rounded = size + (NLM_ALIGN - 1);
    if (rounded < size || *total > SIZE_MAX - rounded) return 0;
    *offset = *total;
    *total += rounded & ~(NLM_ALIGN - 1);
    return 1;
}

static eg_status nlm_plan_make(size_t h, size_t w, size_t c, int search, int block, float strength, nlm_plan *p) {
    if (search < 1 || search > EG_NLM_MAX_WINDOW || search % 2 == 0 || block < 1 || block > EG_NLM_MAX_WINDOW ||
        block % 2 == 0)
        return EG_ERR_INVALID_NLM_WINDOW;
    if (!isfinite(strength) || strength < 0.0f) return EG_ERR_INVALID_VALUE;
    if (c < 1 || c > EG_NLM_MAX_CHANNELS) return EG_ERR_INVALID_SIZE;
    memset(p, 0, sizeof *p);
    p->h = h, p->w = w, p->c = c, p->search = search, p->block = block;
    if (h == 0 || w == 0) return EG_OK; /* nothing to do, no scratch needed */
    p->half_search = (size_t)search / 2, p->half_block = (size_t)block / 2;
    p->border = p->half_search + p->half_block;
    if (h > SIZE_MAX - 2 * p->border || w > SIZE_MAX - 2 * p->border) return EG_ERR_OVERFLOW;
    p->pad_h = h + 2 * p->border, p->pad_w = w + 2 * p->border;
    p->dist_w = w + 2 * p->border;

    const int block_sq = block * block;
    while ((1 << p->shift) < block_sq) p->shift++;
    p->dist_per_index = (double)(1 << p->shift) / (double)block_sq;
    p->scale = INT32_MAX / (search * search * 255);
    const float hh = strength * strength;
    p->divisor = hh * (float)c;
    /* weights never increase with the distance: the first zero is found by bisection */
    const int32_t max_index = (int32_t)(((int64_t)block_sq * (int64_t)c * 255 * 255) >> p->shift);
    if (nlm_weight(p, max_index) != 0) {
        p->cut = max_index;
    } else {
        int32_t lo = 0, hi = max_index; /* weight(lo) > 0, weight(hi) == 0 */
        while (hi - lo > 1) {
            const int32_t mid = lo + (hi - lo) / 2;
            if (nlm_weight(p, mid) != 0)
                lo = mid;
            else
                hi = mid;
        }
        p->cut = hi;
    }

    const size_t row_acc = (c + 1) * 4; /* accumulator bytes per pixel; w * row_acc checked below */
    size_t strip_row, planes, ring, v_bytes, weights_bytes, acc, wsum;
    if (!eg_mul_ok(w, row_acc, &strip_row)) return EG_ERR_OVERFLOW;
    p->strip = NLM_ACC_BUDGET / strip_row;
    if (p->strip < 1) p->strip = 1;
    if (p->strip > h) p->strip = h;
    if (!eg_mul_ok(p->pad_h, p->pad_w, &p->plane) || !eg_mul_ok(p->plane, c, &planes) ||
        !eg_mul_ok(p->dist_w, (size_t)block * 4, &ring) || !eg_mul_ok(p->strip * w, c * 4, &acc) ||
        !eg_mul_ok(p->strip * w, 4, &wsum) || !eg_mul_ok(p->dist_w, 4, &v_bytes) ||
        !eg_mul_ok(w + 2 * p->half_search, 4, &weights_bytes))
        return EG_ERR_OVERFLOW;
    size_t total = 0;
    if (!nlm_reserve(&total, ((size_t)p->cut + 1) * 4, &p->lut_off) ||
        !nlm_reserve(&total, planes, &p->planes_off) || !nlm_reserve(&total, ring, &p->ring_off) ||
        !nlm_reserve(&total, v_bytes, &p->v_off) || !nlm_reserve(&total, weights_bytes, &p->weights_off) ||
        !nlm_reserve(&total, acc, &p->acc_off) ||
        !nlm_reserve(&total, wsum, &p->wsum_off) || total > SIZE_MAX - NLM_ALIGN ||
        total + NLM_ALIGN > (size_t)PTRDIFF_MAX)
        return EG_ERR_OVERFLOW;
    p->bytes = total + NLM_ALIGN; /* room to align the caller's buffer */
    return EG_OK;
}

eg_status eg_nlm_scratch_size(size_t h, size_t w, size_t c, int search_window, int block_size, float strength,
                              size_t *bytes) {
    if (bytes == NULL) return EG_ERR_NULL_POINTER;
    nlm_plan p;
    const eg_status s = nlm_plan_make(h, w, c, search_window, block_size, strength, &p);
    if (s == EG_OK) *bytes = p.bytes;
    return s;
}

/* OpenCV's BORDER_REFLECT_101 (borderInterpolate), repeated for any distance. */
static size_t reflect101(ptrdiff_t i, size_t n) {
    if (n == 1) return 0;
    const ptrdiff_t period = 2 * (ptrdiff_t)n - 2;
    i %= period;
    if (i < 0) i += period;
    return (size_t)(i < (ptrdiff_t)n ? i : period - i);
}

/* One interleaved image into c extended planes. */
static void nlm_extend(const uint8_t *src, uint8_t *planes, const nlm_plan *p) {
    const size_t w = p->w, c = p->c, r = p->border;
    for (size_t y = 0; y < p->pad_h; y++) {
        const uint8_t *row = src + reflect101((ptrdiff_t)y - (ptrdiff_t)r, p->h) * w * c;
        for (size_t ch = 0; ch < c; ch++) {
            uint8_t *out = planes + ch * p->plane + y * p->pad_w;
            for (size_t x = 0; x < r; x++) {
                out[x] = row[reflect101((ptrdiff_t)x - (ptrdiff_t)r, w) * c + ch];
                out[r + w + x] = row[reflect101((ptrdiff_t)(w + x), w) * c + ch];
            }
            if (c == 1)
                memcpy(out + r, row, w);
            else
                for (size_t x = 0; x < w; x++) out[r + x] = row[x * c + ch];
        }
    }
}

eg_status eg_nlm_u8(const uint8_t *src, uint8_t *dst, size_t n, size_t h, size_t w, size_t c, int search_window,
                    int block_size, float strength, void *scratch, size_t scratch_bytes, eg_isa isa) {
    const eg_kernels *kt = eg__kernels(isa);
    if (kt == NULL) return EG_ERR_UNSUPPORTED_ISA;
    nlm_plan p;
    const eg_status s = nlm_plan_make(h, w, c, search_window, block_size, strength, &p);
    if (s != EG_OK) return s;
    size_t hw, image, total;
    if (!eg_mul_ok(h, w, &hw) || !eg_mul_ok(hw, c, &image) || !eg_mul_ok(image, n, &total)) return EG_ERR_OVERFLOW;
    if (total == 0) return EG_OK;
    if (src == NULL || dst == NULL || scratch == NULL) return EG_ERR_NULL_POINTER;
    if (scratch_bytes < p.bytes) return EG_ERR_SCRATCH_TOO_SMALL;
    if (eg_overlaps(src, total, dst, total) || eg_overlaps(dst, total, scratch, scratch_bytes) ||
        eg_overlaps(src, total, scratch, scratch_bytes))
        return EG_ERR_ALIASING;

    uint8_t *base = (uint8_t *)scratch + ((NLM_ALIGN - (uintptr_t)scratch % NLM_ALIGN) % NLM_ALIGN);
    int32_t *lut = (int32_t *)(void *)(base + p.lut_off);
    uint8_t *planes = base + p.planes_off;
    int32_t *ring = (int32_t *)(void *)(base + p.ring_off), *v = (int32_t *)(void *)(base + p.v_off);
    int32_t *weights = (int32_t *)(void *)(base + p.weights_off);
    int32_t *acc = (int32_t *)(void *)(base + p.acc_off), *wsum = (int32_t *)(void *)(base + p.wsum_off);
    for (int32_t i = 0; i <= p.cut; i++) lut[i] = nlm_weight(&p, i);

    const size_t block = (size_t)p.block, sh = p.half_search, r = p.border, pw = p.pad_w;
    const uint8_t *a[EG_NLM_MAX_CHANNELS], *b[EG_NLM_MAX_CHANNELS], *cand[EG_NLM_MAX_CHANNELS];
    int32_t *acc_row[EG_NLM_MAX_CHANNELS];
    const int32_t *acc_const[EG_NLM_MAX_CHANNELS];
    for (size_t i = 0; i < n; i++) {
        nlm_extend(src + i * image, planes, &p);
        for (size_t y0 = 0; y0 < h; y0 += p.strip) {
            const size_t rows = h - y0 < p.strip ? h - y0 : p.strip;
            memset(acc, 0, c * p.strip * w * sizeof(int32_t));
            memset(wsum, 0, rows * w * sizeof(int32_t));
            for (size_t oy = sh; oy <= 2 * sh; oy++) { /* dy = oy - s >= 0 */
                for (size_t ox = (oy == sh ? sh : 0); ox <= 2 * sh; ox++) { /* dx = ox - s; dy == 0: dx >= 0 */
                    const ptrdiff_t dy = (ptrdiff_t)oy - (ptrdiff_t)sh, dx = (ptrdiff_t)ox - (ptrdiff_t)sh;
                    const int backward = dy != 0 || dx != 0; /* offset 0 is its own mirror */
                    /* weight rows for p in image rows y0 - dy .. y0 + rows - 1, columns x_lo .. x_lo + nw - 1 */
                    const ptrdiff_t x_lo = dx > 0 ? -dx : 0;
                    const size_t nw = w + (size_t)(dx < 0 ? -dx : dx), nd = nw + 2 * p.half_block;
                    const size_t wrows = rows + (size_t)dy;
                    memset(ring, 0, block * nd * sizeof(int32_t));
                    memset(v, 0, nd * sizeof(int32_t));
                    for (size_t j = 0; j < wrows + block - 1; j++) {
                        /* difference row j: image row y0 - dy - b + j, extended row y0 - dy + s + j */
                        const size_t ya = (size_t)((ptrdiff_t)(y0 + sh + j) - dy);
                        const size_t xa = (size_t)(x_lo + (ptrdiff_t)sh);
                        for (size_t ch = 0; ch < c; ch++) {
                            const uint8_t *pl = planes + ch * p.plane;
                            a[ch] = pl + ya * pw + xa;
                            b[ch] = pl + (y0 + sh + j) * pw + (size_t)((ptrdiff_t)xa + dx);
                        }
                        kt->nlm_distance(a, b, c, nd, ring + (j % block) * nd, v);
                        if (j + 1 < block) continue;
                        /* the block sums of image row y = y0 - dy + k are complete */
                        const size_t k = j + 1 - block;
                        const ptrdiff_t y = (ptrdiff_t)(y0 + k) - dy;
                        kt->nlm_weights(v, nw, p.block, p.shift, p.cut, lut, weights);
                        if (y >= (ptrdiff_t)y0) { /* forward: p = (y, x) gains E[p + o] */
                            const size_t row = (size_t)y - y0;
                            for (size_t ch = 0; ch < c; ch++) {
                                cand[ch] = planes + ch * p.plane + ((size_t)y + r + (size_t)dy) * pw +
                                           (size_t)((ptrdiff_t)r + dx);
                                acc_row[ch] = acc + (ch * p.strip + row) * w;
                            }
                            kt->nlm_accumulate(weights - x_lo, cand, c, w, wsum + row * w, acc_row);
                        }
                        if (backward && k < rows) { /* backward: q = p + o, row y0 + k, gains E[q - o] */
                            for (size_t ch = 0; ch < c; ch++) {
                                cand[ch] = planes + ch * p.plane + (size_t)(y + (ptrdiff_t)r) * pw +
                                           (size_t)((ptrdiff_t)r - dx);
                                acc_row[ch] = acc + (ch * p.strip + k) * w;
                            }
                            kt->nlm_accumulate(weights - dx - x_lo, cand, c, w, wsum + k * w, acc_row);
                        }
                    }
                }
            }
            for (size_t row = 0; row < rows; row++) {
                for (size_t ch = 0; ch < c; ch++) acc_const[ch] = acc + (ch * p.strip + row) * w;
                kt->nlm_finish(acc_const, wsum + row * w, w, c, dst + i * image + (y0 + row) * w * c);
            }
        }
    }
    return EG_OK;
}
