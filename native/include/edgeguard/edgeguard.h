/*
 * edgeguard native kernels: input-transform defenses and feature-squeezing
 * detection for image classifiers on edge devices.
 *
 * C99, no dependencies, no Python. Include this header alone from a C or C++
 * application (Android NDK, iOS, Linux).
 *
 * Conventions shared by every function:
 *   - The caller owns every buffer; the library never allocates.
 *   - Every function returns an eg_status; EG_OK (0) is success and
 *     eg_status_string() names the others. Outputs are written only on EG_OK
 *     (argument checks happen before any write).
 *   - Sizes are element counts (not bytes). Every size product is checked for
 *     overflow of size_t before use.
 *   - No global mutable state: the only shared data is the CPU feature word,
 *     detected once and read-only afterwards, so every function may be called
 *     from many threads at once on distinct outputs.
 *   - `isa` selects the implementation: EG_ISA_AUTO picks the best one the CPU
 *     supports; a specific ISA that is not available returns
 *     EG_ERR_UNSUPPORTED_ISA. Every ISA gives bit-identical results.
 */
#ifndef EDGEGUARD_EDGEGUARD_H
#define EDGEGUARD_EDGEGUARD_H

#include <stddef.h>
#include <stdint.h>

#if defined(_WIN32) && defined(EG_BUILDING_SHARED)
#define EG_API __declspec(dllexport)
#elif defined(_WIN32) && defined(EG_USING_SHARED)
#define EG_API __declspec(dllimport)
#elif defined(__GNUC__) || defined(__clang__)
#define EG_API __attribute__((visibility("default")))
#else
#define EG_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

#define EG_VERSION_MAJOR 0
#define EG_VERSION_MINOR 1
#define EG_VERSION_PATCH 0

/* Largest median window side supported (k x k windows for 1 <= k <= 7). */
#define EG_MEDIAN_MAX_WINDOW 7
/* Largest channel count accepted by eg_preprocess_u8_f32. */
#define EG_PREPROCESS_MAX_CHANNELS 4
/* Largest non-local means search window and block side (odd sizes 1..63). */
#define EG_NLM_MAX_WINDOW 63
/* Largest channel count accepted by eg_nlm_u8. */
#define EG_NLM_MAX_CHANNELS 4

typedef enum eg_status {
    EG_OK = 0,
    EG_ERR_NULL_POINTER = 1,    /* a required pointer is NULL */
    EG_ERR_INVALID_SIZE = 2,    /* a dimension is zero where data is required, or inconsistent */
    EG_ERR_OVERFLOW = 3,        /* a size computation would overflow size_t */
    EG_ERR_INVALID_BITS = 4,    /* bit depth outside 1..8 */
    EG_ERR_INVALID_WINDOW = 5,  /* median window outside 1..EG_MEDIAN_MAX_WINDOW */
    EG_ERR_INVALID_LAYOUT = 6,  /* unknown eg_layout value */
    EG_ERR_ALIASING = 7,        /* input and output overlap where the function forbids it */
    EG_ERR_UNSUPPORTED_ISA = 8, /* the requested ISA is not compiled in or not supported by this CPU */
    EG_ERR_INVALID_VALUE = 9,   /* a parameter value is unusable (e.g. std 0 or subnormal, non-finite scale) */
    EG_ERR_INVALID_NLM_WINDOW = 10, /* non-local means search window or block not odd in 1..EG_NLM_MAX_WINDOW */
    EG_ERR_SCRATCH_TOO_SMALL = 11   /* the caller's scratch buffer is smaller than its size function says */
} eg_status;

/* Instruction sets; also used as bit flags in eg_isa_available(). */
typedef enum eg_isa {
    EG_ISA_AUTO = 0,
    EG_ISA_SCALAR = 1, /* the portable reference, always available */
    EG_ISA_SSE2 = 2,   /* x86-64 */
    EG_ISA_AVX2 = 4,   /* x86-64 */
    EG_ISA_NEON = 8,   /* aarch64 and 32-bit ARM with NEON */
    EG_ISA_AVX512 = 16 /* x86-64 with AVX-512 F, BW and VBMI (Ice Lake, Zen 4 and later) */
} eg_isa;

/* Memory layouts of image tensors. N = images, H = rows, W = columns, C = channels.
 * HW, HWC and CHW images are NHWC/NCHW with N = 1 (and C = 1 for HW). */
typedef enum eg_layout {
    EG_LAYOUT_NHWC = 0, /* channels last  (HW, HWC, NHWC) */
    EG_LAYOUT_NCHW = 1  /* channels first (CHW, NCHW) */
} eg_layout;

EG_API const char *eg_status_string(eg_status status);
EG_API const char *eg_version_string(void);

/* Bit mask of eg_isa values usable on this CPU (EG_ISA_SCALAR always set).
 * Setting EDGEGUARD_DISABLE_SSE2 / _AVX2 / _AVX512 / _NEON in the environment
 * before the first call hides that ISA (and for SSE2 or AVX2, those above it). */
EG_API uint32_t eg_isa_available(void);
/* The ISA EG_ISA_AUTO resolves to. */
EG_API eg_isa eg_isa_best(void);
/* "scalar", "sse2", "avx2", "avx512", "neon", "auto" or "unknown". */
EG_API const char *eg_isa_name(eg_isa isa);

/* ---------------------------------------------------------------- bit depth
 * Feature squeezing's bit-depth reduction to `bits` (1..8), m = 2^bits - 1.
 *
 * float32: dst = rint(src * m) / m in float32 arithmetic, rint rounding half to
 *   even (the numpy formula np.rint(x * m) / m on float32 data). Intended for
 *   values in [0, 1]; other values follow the same formula, NaN stays NaN.
 * uint8: the same squeezer applied to src/255 and mapped back to 0..255, done
 *   exactly in integers: j = round(src * m / 255); dst = round(j * 255 / m).
 *   Ties cannot occur (m is odd), so the rounding rule does not matter; this
 *   equals rint(255 * bitdepth_f32(src / 255)) for all 256 inputs and 8 depths.
 *
 * `count` elements; dst may equal src (in place); partial overlap is refused. */
EG_API eg_status eg_bit_depth_f32(const float *src, float *dst, size_t count, int bits, eg_isa isa);
EG_API eg_status eg_bit_depth_u8(const uint8_t *src, uint8_t *dst, size_t count, int bits, eg_isa isa);

/* ---------------------------------------------------------------- median filter
 * Median over a window x window neighbourhood of the two spatial axes, each
 * channel separately, with exactly the semantics of
 *   scipy.ndimage.median_filter(x, size=(1, window, window, 1), mode='reflect')
 * for NHWC (size=(1, 1, window, window) for NCHW):
 *   - the window covers offsets -(window/2) .. window-1-window/2 (integer
 *     division): an even window's centre is its lower-right middle pixel;
 *   - the result is element number window*window/2 of the sorted window (the
 *     upper median for an even count);
 *   - borders reflect about the edge, repeating the edge pixel
 *     (d c b a | a b c d | d c b a), repeatedly for windows wider than the image.
 * float32: a zero result is always +0.0; NaN inputs give unspecified values.
 * dst must not overlap src (EG_ERR_ALIASING). */
EG_API eg_status eg_median_u8(const uint8_t *src, uint8_t *dst, size_t n, size_t h, size_t w, size_t c,
                              eg_layout layout, int window, eg_isa isa);
EG_API eg_status eg_median_f32(const float *src, float *dst, size_t n, size_t h, size_t w, size_t c,
                               eg_layout layout, int window, eg_isa isa);

/* ---------------------------------------------------------------- detector math
 * Softmax of each row of a (rows x classes) matrix, numerically stable:
 *   p_i = exp(x_i - max) / sum_j exp(x_j - max)
 * with edgeguard's own exp (max relative error about 2e-7 on [-87, 0]; inputs
 * below -87.33 after the shift give 0). +Inf logits or NaN give NaN rows.
 * probs may equal logits (in place). */
EG_API eg_status eg_softmax_f32(const float *logits, float *probs, size_t rows, size_t classes, eg_isa isa);

/* L1 distance between matching rows of a and b: out[r] = sum_i |a[r,i] - b[r,i]|.
 * Summed in float in eight interleaved partial sums (so every ISA adds in the
 * same order); for probability vectors the absolute error is below
 * classes * 2^-23 * 2. */
EG_API eg_status eg_l1_distance_f32(const float *a, const float *b, float *out, size_t rows, size_t classes,
                                    eg_isa isa);

/* Feature-squeezing scores for a batch.
 *   original:  (rows x classes) probabilities of the unsqueezed inputs
 *   squeezed:  (squeezers x rows x classes) probabilities of each squeezed copy
 *   per_squeezer (optional, may be NULL): (squeezers x rows) L1 distances
 *   score:     (rows) maximum over squeezers of the L1 distance */
EG_API eg_status eg_squeeze_scores_f32(const float *original, const float *squeezed, size_t squeezers,
                                       size_t rows, size_t classes, float *per_squeezer, float *score,
                                       eg_isa isa);

/* ---------------------------------------------------------------- preprocessing
 * uint8 NHWC images (n x h x w x c, c <= EG_PREPROCESS_MAX_CHANNELS) to float32
 * model input in `dst_layout` (NHWC or NCHW):
 *   dst = flush(flush((float)src * flush(scale) - flush(mean[ch])) / std[ch])
 * in float32 arithmetic, where flush(v) = +0 when |v| < FLT_MIN (subnormals and -0),
 * identically on every ISA (ARMv7 NEON cannot compute subnormals).
 * mean and std hold c values each; std must be finite and normal (|std| >= FLT_MIN). */
EG_API eg_status eg_preprocess_u8_f32(const uint8_t *src, float *dst, size_t n, size_t h, size_t w, size_t c,
                                      eg_layout dst_layout, float scale, const float *mean, const float *std,
                                      eg_isa isa);

/* ---------------------------------------------------------------- table lookup
 * uint8 NHWC images (n x h x w x c, c <= EG_PREPROCESS_MAX_CHANNELS) to bytes in
 * `dst_layout` (NHWC or NCHW) through one 256-entry table per channel:
 *   dst[.., ch, ..] = tables[ch * 256 + src[.., ch]]
 * `tables` holds c * 256 bytes (e.g. int8 model inputs as their bytes). With tables
 * made from eg_preprocess_u8_f32 and the model's input quantisation (and a bit-depth
 * squeezer), this is the fused squeeze + normalise + quantise pass of the guard.
 * One portable kernel: the result is the same on every ISA. */
EG_API eg_status eg_lut_u8(const uint8_t *src, uint8_t *dst, size_t n, size_t h, size_t w, size_t c,
                           eg_layout dst_layout, const uint8_t *tables, eg_isa isa);
/* ---------------------------------------------------------------- non-local means
 * The non-local means denoiser of Buades, Coll and Morel as the feature-squeezing
 * paper uses it ("13-3-2" = search window 13, block 3, strength 2), computed
 * exactly like OpenCV's cv::fastNlMeansDenoising(src, dst, h = strength,
 * templateWindowSize = block_size, searchWindowSize = search_window) on 8-bit
 * images with 1..4 channels (uint8 gray or HWC colour; docs/non-local-means.md
 * compares it with fastNlMeansDenoisingColored, which denoises in Lab instead).
 * For every pixel p, channel ch, with s = search_window/2, b = block_size/2:
 *   - the image is extended by s + b pixels on every side with OpenCV's
 *     BORDER_REFLECT_101 (g f e d c b | a b c d e f g h | g f e d c b), repeated
 *     for borders wider than the image (a 1-pixel side repeats that pixel);
 *   - for each of the search_window^2 offsets o (|dy|, |dx| <= s), the integer
 *     block distance D(o) = sum over the block_size^2 block positions t and the
 *     c channels of (E[p+t] - E[p+o+t])^2 on the extended image E;
 *   - its weight is W(o) = lut[min(D(o) >> k, cut)], k = ceil(log2(block_size^2)),
 *     where lut[i] = rint(M * exp(-i * 2^k / block_size^2 / (h*h*c))) (rint:
 *     half to even; the divisor h*h*c is computed in float, the rest in double),
 *     set to 0 when below 0.001 * M, M = INT32_MAX / (search_window^2 * 255)
 *     (integer division), and cut = the first index whose weight is 0;
 *   - dst[p, ch] = (sum_o W(o) * E[p+o, ch] + S / 2) / S with S = sum_o W(o), in
 *     unsigned 32-bit integer arithmetic (no sum can overflow).
 * strength: finite, >= 0 (0 keeps only identical blocks, so dst = src).
 * Layout NHWC (n images of h x w pixels with c interleaved channels).
 *
 * eg_nlm_u8 needs a caller-provided scratch buffer of at least the size
 * eg_nlm_scratch_size reports for the same (h, w, c, search_window, block_size,
 * strength) (any alignment; n does not matter). It allocates nothing itself.
 * dst must not overlap src or scratch (EG_ERR_ALIASING). */
EG_API eg_status eg_nlm_scratch_size(size_t h, size_t w, size_t c, int search_window, int block_size,
                                     float strength, size_t *bytes);
EG_API eg_status eg_nlm_u8(const uint8_t *src, uint8_t *dst, size_t n, size_t h, size_t w, size_t c,
                           int search_window, int block_size, float strength, void *scratch,
                           size_t scratch_bytes, eg_isa isa);

#ifdef __cplusplus
}
#endif

#endif /* EDGEGUARD_EDGEGUARD_H */
