/* CPU feature detection and the single dispatch point. */
#include "internal.h"

#include <stdlib.h>
#include <string.h>

#if defined(EG_HAS_SSE2) || defined(EG_HAS_AVX2)
#include <cpuid.h>
#endif
#if defined(EG_HAS_NEON) && !defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#define EG_HWCAP_NEON (1 << 12)
#endif
#if !defined(_WIN32)
#include <pthread.h>
#define EG_HAVE_PTHREAD_ONCE 1
#endif

static int env_disabled(const char *name) {
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

static uint32_t detect(void) {
    uint32_t flags = EG_ISA_SCALAR;
#if defined(EG_HAS_SSE2)
    if (!env_disabled("EDGEGUARD_DISABLE_SSE2")) {
        flags |= EG_ISA_SSE2; /* baseline on x86-64 */
#if defined(EG_HAS_AVX2)
        unsigned a, b, c, d;
        if (__get_cpuid(1, &a, &b, &c, &d) && (c & bit_OSXSAVE) && (c & bit_AVX)) {
            unsigned lo, hi;
            __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
            const int ymm_state = (lo & 6u) == 6u; /* the OS saves XMM and YMM registers */
            if (ymm_state && __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX2) &&
                !env_disabled("EDGEGUARD_DISABLE_AVX2")) {
                flags |= EG_ISA_AVX2;
#if defined(EG_HAS_AVX512)
                /* opmask and both halves of ZMM state enabled by the OS (XCR0 bits 5-7) */
                const int zmm_state = (lo & 0xE6u) == 0xE6u;
                if (zmm_state && (b & bit_AVX512F) && (b & bit_AVX512BW) && (c & bit_AVX512VBMI) &&
                    !env_disabled("EDGEGUARD_DISABLE_AVX512"))
                    flags |= EG_ISA_AVX512;
#endif
            }
        }
#endif
    }
#elif defined(EG_HAS_NEON)
#if defined(__aarch64__)
    const int neon = 1; /* Advanced SIMD is mandatory on AArch64 */
#elif defined(__linux__)
    const int neon = (getauxval(AT_HWCAP) & EG_HWCAP_NEON) != 0;
#else
    const int neon = 1; /* built with NEON enabled for the whole target (iOS, Android armeabi-v7a) */
#endif
    if (neon && !env_disabled("EDGEGUARD_DISABLE_NEON")) flags |= EG_ISA_NEON;
#endif
    return flags;
}

/* The detected flags are the library's only shared data: written once under
 * pthread_once, read-only afterwards. */
#if defined(EG_HAVE_PTHREAD_ONCE)
static pthread_once_t detect_once = PTHREAD_ONCE_INIT;
static uint32_t detected_flags;
static void detect_init(void) { detected_flags = detect(); }
uint32_t eg_isa_available(void) {
    pthread_once(&detect_once, detect_init);
    return detected_flags;
}
#else
uint32_t eg_isa_available(void) { return detect(); }
#endif

eg_isa eg_isa_best(void) {
    const uint32_t f = eg_isa_available();
    if (f & EG_ISA_AVX512) return EG_ISA_AVX512;
    if (f & EG_ISA_AVX2) return EG_ISA_AVX2;
    if (f & EG_ISA_SSE2) return EG_ISA_SSE2;
    if (f & EG_ISA_NEON) return EG_ISA_NEON;
    return EG_ISA_SCALAR;
}

const char *eg_isa_name(eg_isa isa) {
    switch (isa) {
    case EG_ISA_AUTO: return "auto";
    case EG_ISA_SCALAR: return "scalar";
    case EG_ISA_SSE2: return "sse2";
    case EG_ISA_AVX2: return "avx2";
    case EG_ISA_NEON: return "neon";
    case EG_ISA_AVX512: return "avx512";
    }
    return "unknown";
}

const eg_kernels *eg__kernels(eg_isa isa) {
    if (isa == EG_ISA_AUTO) isa = eg_isa_best();
    if (isa != EG_ISA_SCALAR && isa != EG_ISA_SSE2 && isa != EG_ISA_AVX2 && isa != EG_ISA_AVX512 &&
        isa != EG_ISA_NEON)
        return NULL;
    if (!(eg_isa_available() & (uint32_t)isa)) return NULL;
    switch (isa) {
#if defined(EG_HAS_SSE2)
    case EG_ISA_SSE2: return &eg__kernels_sse2;
#endif
#if defined(EG_HAS_AVX2)
    case EG_ISA_AVX2: return &eg__kernels_avx2;
#endif
#if defined(EG_HAS_AVX512)
    case EG_ISA_AVX512: return &eg__kernels_avx512;
#endif
#if defined(EG_HAS_NEON)
    case EG_ISA_NEON: return &eg__kernels_neon;
#endif
    default: return &eg__kernels_scalar;
    }
}

const char *eg_status_string(eg_status status) {
    switch (status) {
    case EG_OK: return "ok";
    case EG_ERR_NULL_POINTER: return "a required pointer is NULL";
    case EG_ERR_INVALID_SIZE: return "a size is zero or inconsistent";
    case EG_ERR_OVERFLOW: return "a size computation overflows";
    case EG_ERR_INVALID_BITS: return "bit depth must be 1..8";
    case EG_ERR_INVALID_WINDOW: return "median window must be 1..7";
    case EG_ERR_INVALID_LAYOUT: return "unknown layout";
    case EG_ERR_ALIASING: return "input and output overlap";
    case EG_ERR_UNSUPPORTED_ISA: return "instruction set not available on this CPU or build";
    case EG_ERR_INVALID_VALUE: return "a parameter value is unusable";
    case EG_ERR_INVALID_NLM_WINDOW: return "non-local means search window and block must be odd, 1..63";
    case EG_ERR_SCRATCH_TOO_SMALL: return "scratch buffer too small";
    }
    return "unknown status";
}

#define EG_STR2(x) #x
#define EG_STR(x) EG_STR2(x)
const char *eg_version_string(void) {
    return EG_STR(EG_VERSION_MAJOR) "." EG_STR(EG_VERSION_MINOR) "." EG_STR(EG_VERSION_PATCH);
}
