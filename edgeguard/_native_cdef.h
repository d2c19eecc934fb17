/* cffi declarations: a parsable mirror of native/include/edgeguard/edgeguard.h.
 * Enum values and #defines are "..." so the C compiler fills them in;
 * tests/test_native_binding.py checks that every EG_API function is here. */
#define EG_VERSION_MAJOR ...
#define EG_VERSION_MINOR ...
#define EG_VERSION_PATCH ...
#define EG_MEDIAN_MAX_WINDOW ...
#define EG_PREPROCESS_MAX_CHANNELS ...
#define EG_NLM_MAX_WINDOW ...
#define EG_NLM_MAX_CHANNELS ...

typedef enum {
    EG_OK, EG_ERR_NULL_POINTER, EG_ERR_INVALID_SIZE, EG_ERR_OVERFLOW, EG_ERR_INVALID_BITS,
    EG_ERR_INVALID_WINDOW, EG_ERR_INVALID_LAYOUT, EG_ERR_ALIASING, EG_ERR_UNSUPPORTED_ISA,
    EG_ERR_INVALID_VALUE, EG_ERR_INVALID_NLM_WINDOW, EG_ERR_SCRATCH_TOO_SMALL, ...
} eg_status;

typedef enum { EG_ISA_AUTO, EG_ISA_SCALAR, EG_ISA_SSE2, EG_ISA_AVX2, EG_ISA_NEON, EG_ISA_AVX512, ... } eg_isa;
typedef enum { EG_LAYOUT_NHWC, EG_LAYOUT_NCHW, ... } eg_layout;

const char *eg_status_string(eg_status status);
const char *eg_version_string(void);
uint32_t eg_isa_available(void);
eg_isa eg_isa_best(void);
const char *eg_isa_name(eg_isa isa);

eg_status eg_bit_depth_f32(const float *src, float *dst, size_t count, int bits, eg_isa isa);
eg_status eg_bit_depth_u8(const uint8_t *src, uint8_t *dst, size_t count, int bits, eg_isa isa);
eg_status eg_median_u8(const uint8_t *src, uint8_t *dst, size_t n, size_t h, size_t w, size_t c,
                       eg_layout layout, int window, eg_isa isa);
eg_status eg_median_f32(const float *src, float *dst, size_t n, size_t h, size_t w, size_t c,
                        eg_layout layout, int window, eg_isa isa);
eg_status eg_softmax_f32(const float *logits, float *probs, size_t rows, size_t classes, eg_isa isa);
eg_status eg_l1_distance_f32(const float *a, const float *b, float *out, size_t rows, size_t classes, eg_isa isa);
eg_status eg_squeeze_scores_f32(const float *original, const float *squeezed, size_t squeezers, size_t rows,
                                size_t classes, float *per_squeezer, float *score, eg_isa isa);
eg_status eg_preprocess_u8_f32(const uint8_t *src, float *dst, size_t n, size_t h, size_t w, size_t c,
                               eg_layout dst_layout, float scale, const float *mean, const float *std,
                               eg_isa isa);
eg_status eg_lut_u8(const uint8_t *src, uint8_t *dst, size_t n, size_t h, size_t w, size_t c,
                    eg_layout dst_layout, const uint8_t *tables, eg_isa isa);
eg_status eg_nlm_scratch_size(size_t h, size_t w, size_t c, int search_window, int block_size, float strength,
                              size_t *bytes);
eg_status eg_nlm_u8(const uint8_t *src, uint8_t *dst, size_t n, size_t h, size_t w, size_t c, int search_window,
                    int block_size, float strength, void *scratch, size_t scratch_bytes, eg_isa isa);
