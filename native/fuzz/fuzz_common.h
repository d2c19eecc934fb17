/* Shared helpers of the libFuzzer harnesses (native/fuzz/README.md).
 *
 * Every harness decodes the fuzzer's bytes into one call of a public kernel,
 * runs it with EG_ISA_SCALAR (the reference) and with every other ISA this CPU
 * has, and aborts -- a finding -- when a status or an output bit differs. The
 * library is built with AddressSanitizer and UndefinedBehaviorSanitizer, and
 * buffers are allocated at their exact size, so an over-read is a finding too. */
#ifndef EG_FUZZ_COMMON_H
#define EG_FUZZ_COMMON_H

#include "edgeguard/edgeguard.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The fuzzer's bytes, consumed front to back; reads past the end give zeros. */
typedef struct {
    const uint8_t *p;
    size_t n;
} fz_bytes;

static inline uint8_t fz_u8(fz_bytes *in) {
    if (in->n == 0) return 0;
    in->n--;
    return *in->p++;
}

static inline uint16_t fz_u16(fz_bytes *in) {
    const uint16_t lo = fz_u8(in);
    return (uint16_t)(lo | (uint16_t)fz_u8(in) << 8);
}

/* Any float, from its bits: NaNs, infinities, subnormals and signed zeros included. */
static inline float fz_raw_f32(fz_bytes *in) {
    uint32_t bits = 0;
    for (int i = 0; i < 4; i++) bits |= (uint32_t)fz_u8(in) << (8 * i);
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

/* Mostly ordinary values (multiples of 1/256 in [-128, 128)), sometimes any float:
 * raw bits alone would almost never give the values kernels meet in practice. */
static inline float fz_f32(fz_bytes *in) {
    const uint8_t mode = fz_u8(in);
    if (mode % 8 == 0) return fz_raw_f32(in);
    return (float)(int16_t)fz_u16(in) / 256.0f;
}

static inline void *fz_alloc(size_t bytes) { /* exact size: ASan sees any byte past the end */
    void *p = malloc(bytes ? bytes : 1);
    if (!p) abort();
    return p;
}

static const eg_isa fz_simd_isas[] = {EG_ISA_SSE2, EG_ISA_AVX2, EG_ISA_AVX512, EG_ISA_NEON};
#define FZ_N_SIMD (sizeof fz_simd_isas / sizeof fz_simd_isas[0])

static inline int fz_isa_on(eg_isa isa) { return (eg_isa_available() & (uint32_t)isa) != 0; }

static inline int fz_same_float(float a, float b) { /* bit for bit; any NaN equals any NaN */
    if (isnan(a) && isnan(b)) return 1;
    return memcmp(&a, &b, sizeof a) == 0;
}

static inline size_t fz_first_float_difference(const float *a, const float *b, size_t count) {
    for (size_t i = 0; i < count; i++)
        if (!fz_same_float(a[i], b[i])) return i;
    return count;
}

#define FZ_FAIL(...)                                   \
    do {                                               \
        fprintf(stderr, "FUZZ FINDING %s:%d: ", __FILE__, __LINE__); \
        fprintf(stderr, __VA_ARGS__);                  \
        fprintf(stderr, "\n");                         \
        abort();                                       \
    } while (0)

#define FZ_REQUIRE(cond, ...)         \
    do {                              \
        if (!(cond)) FZ_FAIL(__VA_ARGS__); \
    } while (0)

#endif /* EG_FUZZ_COMMON_H */
