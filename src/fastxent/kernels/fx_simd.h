/*
 * The SIMD layer: one vector type and its operations, for the precision and ISA of the
 * translation unit that includes it (fx_instance.h). It is the only file with
 * intrinsics and ISA #ifs; the kernels above it see VR (a vector of VL reals), VI (its
 * lane masks) and the functions below.
 *
 * The includer defines FX_F32 (1: float32, 0: float64) and one of FX_ISA_BASELINE,
 * FX_ISA_AVX2, FX_ISA_AVX512. Adding an ISA: a block in "ISAs" below, the ops that
 * have intrinsics for it (each #if ladder here), two instance files (fx_<prec>_<isa>.c)
 * and a line in fx_dispatch.c.
 */
#ifndef FX_SIMD_H
#define FX_SIMD_H

#include <stdint.h>
#include <string.h>
#include <math.h>
#include <float.h>

/* ------------------------------------------------------------------ ISAs */

#if defined(FX_ISA_BASELINE)
/* whatever the compiler targets by default (SSE2 on x86-64) */
#define FX_ISA baseline
#define FX_VBYTES 16
#define FX_TARGET_ATTR
#if defined(__SSE2__)
#include <emmintrin.h>      /* the baseline's non-temporal stores */
#endif
#elif defined(FX_ISA_AVX2)
#define FX_ISA avx2
#define FX_VBYTES 32
#define FX_TARGET_ATTR __attribute__((target("avx2,fma,bmi,bmi2,f16c,lzcnt,movbe,popcnt")))
#include <immintrin.h>
#elif defined(FX_ISA_AVX512)
#define FX_ISA avx512
#define FX_VBYTES 64
#define FX_TARGET_ATTR __attribute__((target("avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx2,fma,bmi,bmi2,f16c,lzcnt,movbe,popcnt")))
#include <immintrin.h>
#else
#error "define FX_ISA_BASELINE, FX_ISA_AVX2 or FX_ISA_AVX512 before including fx_simd.h"
#endif

/* ------------------------------------------------------------------ types */

#if FX_F32
#define R float
#else
#define R double
#endif
#define VL (FX_VBYTES / (int)sizeof(R))      /* lanes */
typedef R VR __attribute__((vector_size(FX_VBYTES)));
typedef uint8_t VB __attribute__((vector_size(VL)));
#if FX_F32
typedef int32_t VI __attribute__((vector_size(FX_VBYTES)));
typedef uint32_t VU __attribute__((vector_size(FX_VBYTES)));
#else
typedef int64_t VI __attribute__((vector_size(FX_VBYTES)));
typedef uint64_t VU __attribute__((vector_size(FX_VBYTES)));
#endif

/* point functions are always inlined so the vectors stay in registers */
#define FN static inline __attribute__((always_inline)) FX_TARGET_ATTR
#define KERNEL static FX_TARGET_ATTR

/* Float32 sums are folded into a float64 accumulator every this many elements, so a
   lane never adds more than FX_FOLD_ELEMS/VL terms in float32. */
#define FX_FOLD_ELEMS 256

/* ---------------------------------------------------------------- vector basics */

FN VR vsplat(R a) { VR v = {0}; return v + a; }
FN VI visplat(int64_t a) { VI v = {0}; return v + (__typeof__(v[0]))a; }
FN VR vload(const R *p) { VR v; memcpy(&v, p, sizeof v); return v; }
FN void vstore(R *p, VR v) { memcpy(p, &v, sizeof v); }

/* Lanes [0, n) set. */
FN VI vlive(int64_t n)
{
    VI lane;
    for (int i = 0; i < VL; i++) lane[i] = i;
    return lane < visplat(n < VL ? n : VL);    /* a broadcast: lane by lane, GCC inserts */
}

FN VR vselect(VI mask, VR a, VR b) { return (VR)((mask & (VI)a) | (~mask & (VI)b)); }
FN VR vzero_unless(VI mask, VR a) { return (VR)(mask & (VI)a); }
/* Is any lane of a mask set? (the rare-path tests of the overflow guards) */
FN int vany(VI m)
{
#if FX_VBYTES == 64
    return _mm512_test_epi32_mask((__m512i)m, (__m512i)m) != 0;
#elif FX_VBYTES == 32
    return _mm256_movemask_ps((__m256)m) != 0;
#else
    int any = 0;
    for (int i = 0; i < VL; i++) any |= m[i] != 0;
    return any;
#endif
}

/* Is a[u] < b in any lane of the k vectors a[0..k)? (the exp's test for its rare path)
   AVX-512 ORs the compare masks in mask registers: the generic form below would turn
   each into a vector first. */
FN int vany_lt_k(const VR *a, int k, R b)
{
#if FX_VBYTES == 64 && FX_F32
    __mmask16 m = 0;
    for (int u = 0; u < k; u++) m |= _mm512_cmp_ps_mask((__m512)a[u], _mm512_set1_ps(b), _CMP_LT_OQ);
    return m != 0;
#elif FX_VBYTES == 64
    __mmask8 m = 0;
    for (int u = 0; u < k; u++) m |= _mm512_cmp_pd_mask((__m512d)a[u], _mm512_set1_pd(b), _CMP_LT_OQ);
    return m != 0;
#else
    VI m = {0};
    for (int u = 0; u < k; u++) m |= a[u] < b;
    return vany(m);
#endif
}

/* How many lanes of a equal those of b: a compare into a bit mask and a scalar popcount,
   which on Zen 4 runs well ahead of turning the mask back into a vector to add. */
FN int vcount_eq(VR a, VR b)
{
#if FX_VBYTES == 64 && FX_F32
    return __builtin_popcount(_mm512_cmp_ps_mask((__m512)a, (__m512)b, _CMP_EQ_OQ));
#elif FX_VBYTES == 64
    return __builtin_popcount(_mm512_cmp_pd_mask((__m512d)a, (__m512d)b, _CMP_EQ_OQ));
#elif FX_VBYTES == 32 && FX_F32
    return __builtin_popcount(_mm256_movemask_ps(_mm256_cmp_ps((__m256)a, (__m256)b, _CMP_EQ_OQ)));
#elif FX_VBYTES == 32
    return __builtin_popcount(_mm256_movemask_pd(_mm256_cmp_pd((__m256d)a, (__m256d)b, _CMP_EQ_OQ)));
#else
    int n = 0;
    for (int i = 0; i < VL; i++) n += a[i] == b[i];
    return n;
#endif
}

/* max that keeps a when b is NaN */
FN VR vmax(VR a, VR b) { return vselect(b > a, b, a); }
/* max that turns NaN once either holds one (b's NaN enters, a's stays) */
FN VR vmax_nan(VR a, VR b) { return vselect((b > a) | (b != b), b, a); }

/* Load n < VL elements, filling the rest with pad; store the first n lanes. Row tails
   and column tiles go through these, so the ISAs with masked moves use them. */
#if FX_VBYTES == 64
#if FX_F32
#define FX_KMASK(n) ((__mmask16)((1u << (n)) - 1u))
FN VR vload_part(const R *p, int64_t n, R pad)
{ return (VR)_mm512_mask_loadu_ps(_mm512_set1_ps(pad), FX_KMASK(n), p); }
FN void vstore_part(R *p, VR v, int64_t n) { _mm512_mask_storeu_ps(p, FX_KMASK(n), (__m512)v); }
#else
#define FX_KMASK(n) ((__mmask8)((1u << (n)) - 1u))
FN VR vload_part(const R *p, int64_t n, R pad)
{ return (VR)_mm512_mask_loadu_pd(_mm512_set1_pd(pad), FX_KMASK(n), p); }
FN void vstore_part(R *p, VR v, int64_t n) { _mm512_mask_storeu_pd(p, FX_KMASK(n), (__m512d)v); }
#endif
#undef FX_KMASK
#elif FX_VBYTES == 32
#if FX_F32
FN VR vload_part(const R *p, int64_t n, R pad)
{
    VI live = vlive(n);
    return vselect(live, (VR)_mm256_maskload_ps(p, (__m256i)live), vsplat(pad));
}
FN void vstore_part(R *p, VR v, int64_t n) { _mm256_maskstore_ps(p, (__m256i)vlive(n), (__m256)v); }
#else
FN VR vload_part(const R *p, int64_t n, R pad)
{
    VI live = vlive(n);
    return vselect(live, (VR)_mm256_maskload_pd(p, (__m256i)live), vsplat(pad));
}
FN void vstore_part(R *p, VR v, int64_t n) { _mm256_maskstore_pd(p, (__m256i)vlive(n), (__m256d)v); }
#endif
#else
FN VR vload_part(const R *p, int64_t n, R pad)
{
    R b[VL];
    for (int i = 0; i < VL; i++) b[i] = i < n ? p[i] : pad;
    return vload(b);
}
FN void vstore_part(R *p, VR v, int64_t n)
{
    for (int64_t i = 0; i < n; i++) p[i] = v[i];
}
#endif

/* c - a * b and a * b - c, rounded once where the ISA has FMA (exact results stay
   exact). Written out where an expression has two products (a*b - c*d), so that the
   one that is rounded first is chosen here, not by the compiler's contraction. */
FN VR vfma_neg(VR a, VR b, VR c)
{
#if FX_VBYTES == 64 && FX_F32
    return (VR)_mm512_fnmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif FX_VBYTES == 32 && FX_F32
    return (VR)_mm256_fnmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    return c - a * b;
#endif
}

FN VR vmul_sub(VR a, VR b, VR c)
{
#if FX_VBYTES == 64 && FX_F32
    return (VR)_mm512_fmsub_ps((__m512)a, (__m512)b, (__m512)c);
#elif FX_VBYTES == 64
    return (VR)_mm512_fmsub_pd((__m512d)a, (__m512d)b, (__m512d)c);
#elif FX_VBYTES == 32 && FX_F32
    return (VR)_mm256_fmsub_ps((__m256)a, (__m256)b, (__m256)c);
#elif FX_VBYTES == 32
    return (VR)_mm256_fmsub_pd((__m256d)a, (__m256d)b, (__m256d)c);
#else
    return a * b - c;
#endif
}

/* v, rounded to its type before it is used again: the compiler may not fuse a product
   in v into the addition that follows (FMA contraction would make a sum of item losses
   differ from the sum of the items a "none" reduction returns, by the compiler's
   choice). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FX_ROUNDED(v) __extension__({ __typeof__(v) fx_r_ = (v); __asm__("" : "+x"(fx_r_)); fx_r_; })
#else
#define FX_ROUNDED(v) (v)
#endif

/* Horizontal sum in float64 and horizontal max (NaN if any lane is NaN), by fixed
   shuffle trees: short rows pay for these once per pass. */
#if FX_VBYTES == 64 && FX_F32
FN double vhsum(VR v)
{
    __m512 x = (__m512)v;
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
    return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x)),
                                              _mm512_cvtps_pd(hi)));
}
FN R vhmax_nan(VR v)
{
    __m512 x = (__m512)v;
    return _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q) ? NAN : _mm512_reduce_max_ps(x);
}
#elif FX_VBYTES == 64
FN double vhsum(VR v) { return _mm512_reduce_add_pd((__m512d)v); }
FN R vhmax_nan(VR v)
{
    __m512d x = (__m512d)v;
    return _mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q) ? NAN : _mm512_reduce_max_pd(x);
}
#elif FX_VBYTES == 32 && FX_F32
FN double vhsum(VR v)
{
    __m256 x = (__m256)v;
    __m256d d = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)),
                              _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(d), _mm256_extractf128_pd(d, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}
FN R vhmax_nan(VR v)
{
    __m256 x = (__m256)v;
    if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q))) return NAN;
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}
#elif FX_VBYTES == 32
FN double vhsum(VR v)
{
    __m256d d = (__m256d)v;
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(d), _mm256_extractf128_pd(d, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}
FN R vhmax_nan(VR v)
{
    __m256d x = (__m256d)v;
    if (_mm256_movemask_pd(_mm256_cmp_pd(x, x, _CMP_UNORD_Q))) return NAN;
    __m128d m = _mm_max_pd(_mm256_castpd256_pd128(x), _mm256_extractf128_pd(x, 1));
    return _mm_cvtsd_f64(_mm_max_sd(m, _mm_unpackhi_pd(m, m)));
}
#else
FN double vhsum(VR v)
{
    double a[VL];
    for (int i = 0; i < VL; i++) a[i] = (double)v[i];
    for (int w = VL / 2; w >= 1; w /= 2)
        for (int i = 0; i < w; i++) a[i] += a[i + w];
    return a[0];
}
FN R vhmax_nan(VR v)
{
    R m = v[0];
    for (int i = 0; i < VL; i++) {
        if (v[i] != v[i]) return NAN;
        m = v[i] > m ? v[i] : m;
    }
    return m;
}
#endif

/* VL bytes (bool/uint8 targets) widened to VR; GCC turns the generic conversion into
   scalar code, so the x86 variants say what they mean. */
FN VR vload_u8(const uint8_t *p)
{
#if FX_VBYTES == 64 && FX_F32
    return (VR)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)));
#elif FX_VBYTES == 64
    return (VR)_mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)));
#elif FX_VBYTES == 32 && FX_F32
    return (VR)_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)));
#elif FX_VBYTES == 32
    int32_t four;
    memcpy(&four, p, 4);
    return (VR)_mm256_cvtepi32_pd(_mm_cvtepu8_epi32(_mm_cvtsi32_si128(four)));
#else
    VB b;
    memcpy(&b, p, sizeof b);
    return __builtin_convertvector(b, VR);
#endif
}

FN VR vload_u8_part(const uint8_t *p, int64_t n)
{
    uint8_t b[VL];
    for (int i = 0; i < VL; i++) b[i] = i < n ? p[i] : 0;
    return vload_u8(b);
}

/* ------------------------------------------------------------ float64 lanes */

/* VD: float64 lanes of the same width as VR; a VR is VL / VLD of them ("halves": two
   for float32, one for float64). The finish of a vector of items (fx_softmax_item.h)
   runs in these, as the scalar finish runs in double. */
typedef double VD __attribute__((vector_size(FX_VBYTES)));
typedef int64_t VDI __attribute__((vector_size(FX_VBYTES)));
#define VLD (FX_VBYTES / 8)
#define FX_HALVES (VL / VLD)

FN VD vdsplat(double a) { VD v = {0}; return v + a; }
FN VD vdselect(VDI mask, VD a, VD b) { return (VD)((mask & (VDI)a) | (~mask & (VDI)b)); }
FN VD vdzero_unless(VDI mask, VD a) { return (VD)(mask & (VDI)a); }

/* Half h of v widened to float64 (v itself for float64). */
FN VD vd_half(VR v, int h)
{
#if !FX_F32
    (void)h;
    return (VD)v;
#elif FX_VBYTES == 64
    __m512 x = (__m512)v;
    return (VD)_mm512_cvtps_pd(h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1))
                                 : _mm512_castps512_ps256(x));
#elif FX_VBYTES == 32
    __m256 x = (__m256)v;
    return (VD)_mm256_cvtps_pd(h ? _mm256_extractf128_ps(x, 1) : _mm256_castps256_ps128(x));
#else
    typedef float vh __attribute__((vector_size(FX_VBYTES / 2)));
    vh part;                                /* portable: through memory */
    memcpy(&part, (const char *)&v + h * sizeof part, sizeof part);
    return __builtin_convertvector(part, VD);
#endif
}

/* The VR whose halves are d[0 .. FX_HALVES), each rounded once to R. */
FN VR vr_of_halves(const VD *d)
{
#if !FX_F32
    return (VR)d[0];
#elif FX_VBYTES == 64
    return (VR)_mm512_castpd_ps(_mm512_insertf64x4(
        _mm512_castps_pd(_mm512_castps256_ps512(_mm512_cvtpd_ps((__m512d)d[0]))),
        _mm256_castps_pd(_mm512_cvtpd_ps((__m512d)d[1])), 1));
#elif FX_VBYTES == 32
    return (VR)_mm256_set_m128(_mm256_cvtpd_ps((__m256d)d[1]), _mm256_cvtpd_ps((__m256d)d[0]));
#else
    typedef float vh __attribute__((vector_size(FX_VBYTES / 2)));
    vh lo = __builtin_convertvector(d[0], vh), hi = __builtin_convertvector(d[1], vh);
    VR v;
    memcpy(&v, &lo, sizeof lo);
    memcpy((char *)&v + sizeof lo, &hi, sizeof hi);
    return v;
#endif
}

/* A float64 accumulator of VR vectors, for per-element losses that may be huge: a
   float32 sum of a few 3e38-sized losses would overflow where their float64 mean does
   not. */
typedef struct { VD lo, hi; double spill; } acc64;
FN void acc_f64(acc64 *a, VR v)
{
    a->lo += vd_half(v, 0);
    if (FX_HALVES == 2) a->hi += vd_half(v, 1);
}
FN double acc_sum(const acc64 *a)
{
    double s = a->spill;
    for (int i = 0; i < VLD; i++) s += a->lo[i];
    if (FX_HALVES == 2)
        for (int i = 0; i < VLD; i++) s += a->hi[i];
    return s;
}

/* ------------------------------------------------------------ lanes over items */

/* Lanes i < n of p[i * stride] (the rest pad): a vector of items' values of one class,
   for the kernels whose lanes run over items (fx_softmax_items.h). */
FN VR vgather_part(const R *p, int64_t stride, int64_t n, R pad)
{
    VI idx;
    for (int i = 0; i < VL; i++) idx[i] = i;
    idx = idx * visplat(stride);
#if FX_VBYTES == 64 && FX_F32
    __mmask16 k = n >= VL ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
    return (VR)_mm512_mask_i32gather_ps(_mm512_set1_ps(pad), k, (__m512i)idx, p, 4);
#elif FX_VBYTES == 64
    __mmask8 k = n >= VL ? (__mmask8)0xff : (__mmask8)((1u << n) - 1u);
    return (VR)_mm512_mask_i64gather_pd(_mm512_set1_pd(pad), k, (__m512i)idx, p, 8);
#elif FX_VBYTES == 32 && FX_F32
    return (VR)_mm256_mask_i32gather_ps(_mm256_set1_ps(pad), p, (__m256i)idx,
                                        (__m256)vlive(n), 4);
#elif FX_VBYTES == 32
    return (VR)_mm256_mask_i64gather_pd(_mm256_set1_pd(pad), p, (__m256i)idx,
                                        (__m256d)vlive(n), 8);
#else
    VR v;
    for (int i = 0; i < VL; i++) v[i] = i < n ? p[i * stride] : pad;
    return v;
#endif
}

/* The transpose of a VL x VL tile: v[j][i] <- v[i][j]. It swaps bit b of the row index
   with bit b of the lane index, for every b: one stage per bit, each a two-source
   shuffle per vector (one instruction on AVX-512). AVX2 float32 takes the usual
   unpack, shufps, permute2f128 sequence instead, whose every step is one instruction
   (the bit swaps' lowest stage is not). */
#define FX_T_LO(k, j) (((j) & (k)) ? FX_PP_VL + (j) - (k) : (j))
#define FX_T_HI(k, j) (((j) & (k)) ? FX_PP_VL + (j) : (j) + (k))
#define FX_L2(f, k, j) f(k, j), f(k, (j) + 1)
#define FX_L4(f, k, j) FX_L2(f, k, j), FX_L2(f, k, (j) + 2)
#define FX_L8(f, k, j) FX_L4(f, k, j), FX_L4(f, k, (j) + 4)
#define FX_L16(f, k, j) FX_L8(f, k, j), FX_L8(f, k, (j) + 8)
#if FX_VBYTES / (FX_F32 ? 4 : 8) == 16
#define FX_PP_VL 16
#define FX_LANES(f, k) FX_L16(f, k, 0)
#elif FX_VBYTES / (FX_F32 ? 4 : 8) == 8
#define FX_PP_VL 8
#define FX_LANES(f, k) FX_L8(f, k, 0)
#elif FX_VBYTES / (FX_F32 ? 4 : 8) == 4
#define FX_PP_VL 4
#define FX_LANES(f, k) FX_L4(f, k, 0)
#else
#define FX_PP_VL 2
#define FX_LANES(f, k) FX_L2(f, k, 0)
#endif
/* __builtin_shufflevector: clang, and GCC from 12; older GCC has only __builtin_shuffle */
#if defined(__clang__) || __GNUC__ >= 12
#define FX_SHUFFLE2(a, b, f, k) __builtin_shufflevector(a, b, FX_LANES(f, k))
#else
#define FX_SHUFFLE2(a, b, f, k) __builtin_shuffle(a, b, (VI){ FX_LANES(f, k) })
#endif
#define FX_T_STAGE(k)                                                           \
    for (int i = 0; i < VL; i++)                                                \
        if (!(i & (k))) {                                                       \
            VR a = v[i], b = v[i + (k)];                                        \
            v[i] = FX_SHUFFLE2(a, b, FX_T_LO, k);                               \
            v[i + (k)] = FX_SHUFFLE2(a, b, FX_T_HI, k);                         \
        }
FN void vtranspose(VR *v)
{
    _Static_assert(FX_PP_VL == VL, "the preprocessor's lane count");
#if FX_VBYTES == 32 && FX_F32
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps((__m256)v[i], (__m256)v[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps((__m256)v[i], (__m256)v[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int i = 0; i < 4; i++) {
        v[i] = (VR)_mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        v[i + 4] = (VR)_mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
#else
#if FX_PP_VL > 8
    FX_T_STAGE(8)
#endif
#if FX_PP_VL > 4
    FX_T_STAGE(4)
#endif
#if FX_PP_VL > 2
    FX_T_STAGE(2)
#endif
    FX_T_STAGE(1)
#endif
}

/* Rows [0, n) (n <= VL) of row length `stride`, their elements [0, w) (w <= VL), as
   vectors whose lanes run over the rows: t[c][i] = p[i * stride + c] for c < w, i < n;
   pad in lanes i >= n and in t[c] for w <= c < VL. */
FN void vload_rows_t(const R *p, int64_t stride, int64_t w, int64_t n, R pad, VR *t)
{
    for (int i = 0; i < VL; i++)
        t[i] = i >= n ? vsplat(pad) : w >= VL ? vload(p + i * stride)
                                                 : vload_part(p + i * stride, w, pad);
    vtranspose(t);
}

/* The inverse: p[i * stride + c] = t[c][i] for c < w, i < n (t is transposed in place). */
FN void vstore_rows_t(R *p, int64_t stride, int64_t w, int64_t n, VR *t)
{
    vtranspose(t);
    for (int i = 0; i < VL && i < n; i++) {
        if (w >= VL) vstore(p + i * stride, t[i]);
        else vstore_part(p + i * stride, t[i], w);
    }
}

/* p[i * stride] = v[i] for lanes i < n. */
FN void vscatter_part(R *p, int64_t stride, VR v, int64_t n)
{
#if FX_VBYTES == 64
    VI idx;
    for (int i = 0; i < VL; i++) idx[i] = i;
    idx = idx * visplat(stride);
#if FX_F32
    __mmask16 k = n >= VL ? (__mmask16)0xffff : (__mmask16)((1u << n) - 1u);
    _mm512_mask_i32scatter_ps(p, k, (__m512i)idx, (__m512)v, 4);
#else
    __mmask8 k = n >= VL ? (__mmask8)0xff : (__mmask8)((1u << n) - 1u);
    _mm512_mask_i64scatter_pd(p, k, (__m512i)idx, (__m512d)v, 8);
#endif
#else
    for (int i = 0; i < VL && i < n; i++) p[i * stride] = v[i];
#endif
}

/* Rows [0, n) (n <= VL) of C elements as C vectors whose lanes run over the rows:
   t[c][i] = p[i * C + c], pad in lanes i >= n; t is room for C rounded up to VL vectors.
   From FX_ROWS_T_MIN_C classes on, VL-class pieces of the rows and a transpose
   (vload_rows_t); below, one gather per class, which reads fewer lanes than a transpose
   moves. The switch measured per ISA on a Zen 5 (1 thread, cross_entropy forward and
   forward+backward, C = 2 to 24): AVX-512 float32 gathers ahead up to C = 4 (C = 2:
   1.16x forward), transposes from 6 (C = 37: 1.22x forward, 1.51x forward+backward);
   AVX2 float32 even from 4; float64, with half the lanes, from 3 (AVX-512) and 2
   (AVX2). The baseline ISA has no masked loads: its "gather" is a loop of loads,
   never slower there. */
#define FX_ROWS_T_MIN_C (FX_VBYTES == 64 ? (FX_F32 ? 6 : 3) : FX_VBYTES == 32 ? (FX_F32 ? 4 : 2) \
                         : INT32_MAX)
/* Two classes, a whole group (2 VL contiguous values): the even and the odd lanes of
   two vectors, one two-source shuffle each (AVX-512; two on AVX2) where a gather would
   read lane by lane; and back, two interleaves. The binary classifier's case, where
   FX_HAVE_PAIRS: measured at C = 2 against the gathers (1 thread, forward / forward+backward)
   AVX2 float32 1.11x / 1.15x faster, float64 1.05x / 1.09x, AVX-512 float64 1.11x /
   1.24x; AVX-512 float32 0.74x / 0.89x, and its items kernel slower at every C with
   this code present (GCC 12's code for the whole kernel changed), so not inline there:
   the loss kernel takes it in an instance of its own for C = 2 (softmax_two_classes). */
#define FX_HAVE_PAIRS (FX_VBYTES == 32 || (FX_VBYTES == 64 && !FX_F32))
#define FX_EVEN(k, j) (2 * (j))
#define FX_ODD(k, j) (2 * (j) + 1)
#define FX_ZIP(k, j) (((j) % 2 ? FX_PP_VL : 0) + (k) * (FX_PP_VL / 2) + (j) / 2)
FN void vload_pairs(const R *p, VR *t)
{
    VR a = vload(p), b = vload(p + VL);
    t[0] = FX_SHUFFLE2(a, b, FX_EVEN, 0);
    t[1] = FX_SHUFFLE2(a, b, FX_ODD, 0);
}
FN void vstore_pairs(R *p, const VR *t)
{
    vstore(p, FX_SHUFFLE2(t[0], t[1], FX_ZIP, 0));
    vstore(p + VL, FX_SHUFFLE2(t[0], t[1], FX_ZIP, 1));
}

#if FX_F32
/* VL int64 values at p as two vectors of 32-bit lanes, their low and their high halves:
   the even and the odd 32-bit lanes of two vectors. The int64 labels of a group of items
   are classified in these (items_labels): GCC 12 lowers the compares of VL int64 lanes
   (twice a float32 vector's width) to scalar code, a compare, a set and an insert per
   lane, which cost float32 rows of 2 and 10 classes 0.9 ns per row against int32
   labels. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define FX_I64_LO FX_EVEN
#define FX_I64_HI FX_ODD
#else
#define FX_I64_LO FX_ODD
#define FX_I64_HI FX_EVEN
#endif
FN void vload_i64_halves(const int64_t *p, VI *lo, VI *hi)
{
    VI a, b;
    memcpy(&a, p, sizeof a);
    memcpy(&b, (const char *)p + sizeof a, sizeof b);
    *lo = FX_SHUFFLE2(a, b, FX_I64_LO, 0);
    *hi = FX_SHUFFLE2(a, b, FX_I64_HI, 0);
}
#undef FX_I64_LO
#undef FX_I64_HI
#endif

FN void vload_items_as(const R *p, int64_t C, int64_t n, R pad, VR *t, int pairs)
{
    if (pairs && C == 2 && n == VL) vload_pairs(p, t);
    else if (C >= FX_ROWS_T_MIN_C)
        for (int64_t j = 0; j < C; j += VL) vload_rows_t(p + j, C, C - j, n, pad, t + j);
    else
        for (int64_t j = 0; j < C; j++) t[j] = vgather_part(p + j, C, n, pad);
}

/* The inverse of vload_items: p[i * C + c] = t[c][i] for i < n (t is overwritten). */
FN void vstore_items_as(R *p, int64_t C, int64_t n, VR *t, int pairs)
{
    if (pairs && C == 2 && n == VL) vstore_pairs(p, t);
    else if (C >= FX_ROWS_T_MIN_C)
        for (int64_t j = 0; j < C; j += VL) vstore_rows_t(p + j, C, C - j, n, t + j);
    else
        for (int64_t j = 0; j < C; j++) vscatter_part(p + j, C, t[j], n);
}
/* vload_items / vstore_items: with the two-class loads where FX_HAVE_PAIRS; a kernel may
   instead take them (pairs = 1) in an instance of its own (softmax_two_classes). */
FN void vload_items(const R *p, int64_t C, int64_t n, R pad, VR *t)
{
    vload_items_as(p, C, n, pad, t, FX_HAVE_PAIRS);
}
FN void vstore_items(R *p, int64_t C, int64_t n, VR *t) { vstore_items_as(p, C, n, t, FX_HAVE_PAIRS); }
#undef FX_EVEN
#undef FX_ODD
#undef FX_ZIP
#undef FX_T_STAGE
#undef FX_SHUFFLE2
#undef FX_LANES
#undef FX_PP_VL
#undef FX_L16
#undef FX_L8
#undef FX_L4
#undef FX_L2
#undef FX_T_HI
#undef FX_T_LO

/* dst[0, n) = src[0, n), the vector-aligned part of dst with non-temporal stores, which
   write memory without first reading each line into the cache; stream_fence after the
   last one orders them before what follows (the end of the parallel region). */
#if FX_VBYTES == 64 && FX_F32
FN void vstream(R *p, VR v) { _mm512_stream_ps(p, (__m512)v); }
#elif FX_VBYTES == 64
FN void vstream(R *p, VR v) { _mm512_stream_pd(p, (__m512d)v); }
#elif FX_VBYTES == 32 && FX_F32
FN void vstream(R *p, VR v) { _mm256_stream_ps(p, (__m256)v); }
#elif FX_VBYTES == 32
FN void vstream(R *p, VR v) { _mm256_stream_pd(p, (__m256d)v); }
#elif defined(__SSE2__) && FX_VBYTES == 16 && FX_F32
FN void vstream(R *p, VR v) { _mm_stream_ps(p, (__m128)v); }
#elif defined(__SSE2__) && FX_VBYTES == 16
FN void vstream(R *p, VR v) { _mm_stream_pd(p, (__m128d)v); }
#else
FN void vstream(R *p, VR v) { vstore(p, v); }   /* no streaming stores here */
#endif

FN void stream_fence(void)
{
#if defined(__SSE2__) || FX_VBYTES > 16
    _mm_sfence();
#endif
}

FN void stream_copy(R *dst, const R *src, int64_t n)
{
    uintptr_t mis = (uintptr_t)dst % FX_VBYTES;
    int64_t head = mis % sizeof(R) ? n : mis ? (int64_t)((FX_VBYTES - mis) / sizeof(R)) : 0;
    if (head > n) head = n;
    memcpy(dst, src, (size_t)head * sizeof(R));
    int64_t j = head;
    for (; j + VL <= n; j += VL) vstream(dst + j, vload(src + j));
    memcpy(dst + j, src + j, (size_t)(n - j) * sizeof(R));
}

/* ------------------------------------------------------------ ops the math needs */

/* Running max. A NaN need not survive here (the row passes rely on exp(NaN - m) being
   NaN instead). */
#if FX_VBYTES == 64 && FX_F32
FN VR vmax_fast(VR m, VR v) { return (VR)_mm512_max_ps((__m512)m, (__m512)v); }
#elif FX_VBYTES == 64
FN VR vmax_fast(VR m, VR v) { return (VR)_mm512_max_pd((__m512d)m, (__m512d)v); }
#elif FX_VBYTES == 32 && FX_F32
FN VR vmax_fast(VR m, VR v) { return (VR)_mm256_max_ps((__m256)m, (__m256)v); }
#elif FX_VBYTES == 32
FN VR vmax_fast(VR m, VR v) { return (VR)_mm256_max_pd((__m256d)m, (__m256d)v); }
#else
FN VR vmax_fast(VR m, VR v) { return vmax(m, v); }
#endif

/* 1/a. AVX-512 float32: the 14-bit reciprocal estimate and one Newton step (about
   2^-28 relative before rounding), three cheap ops instead of a slow division; the
   ulp tests of log1p and log (tests/test_vecmath.py) cover it. */
FN VR vrecip(VR a)
{
#if FX_VBYTES == 64 && FX_F32
    VR r = (VR)_mm512_rcp14_ps((__m512)a);
    return r * ((R)2 - a * r);
#else
    return (R)1 / a;
#endif
}

/* A 16-entry table lookup in 32-bit lanes: lane i <- tab[idx[i] & 15]. The float32 exp
   (fx_vecmath.h) reads its table of 2^(j/16) through it: one permute on AVX-512, two
   and a blend on AVX2. Where FX_HAS_LOOKUP16 is 0 the exp uses no table. */
#if FX_F32 && FX_VBYTES == 64
#define FX_HAS_LOOKUP16 1
FN VI vlookup16(const int32_t *tab, VI idx)
{ return (VI)_mm512_permutexvar_epi32((__m512i)idx, _mm512_loadu_si512(tab)); }
#elif FX_F32 && FX_VBYTES == 32
#define FX_HAS_LOOKUP16 1
FN VI vlookup16(const int32_t *tab, VI idx)
{
    __m256i lo = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)tab), (__m256i)idx);
    __m256i hi = _mm256_permutevar8x32_epi32(_mm256_loadu_si256((const __m256i *)(tab + 8)), (__m256i)idx);
    return (VI)_mm256_blendv_ps((__m256)lo, (__m256)hi, (__m256)((VU)idx << 28));   /* bit 3 picks */
}
#else
#define FX_HAS_LOOKUP16 0
#endif

/* the sign bit of every lane (vsplat(-0.0) would give +0.0: it adds to a zero vector) */
FN VI vsignbits(void) { return (VI)(((VU){0} + 1) << (8 * sizeof(R) - 1)); }
/* -|x| (the sign bit set; NaN stays NaN) */
FN VR vneg_abs(VR x) { return (VR)((VI)x | vsignbits()); }
/* v where mask is set, -v elsewhere */
FN VR vneg_unless(VI mask, VR v) { return (VR)((VI)v ^ (~mask & vsignbits())); }

/* ------------------------------------------------------------ storage type */

/* T, the element type in memory of the input, its targets, the gradient and the
   elementwise outputs; R is the type the kernels compute in. float32 and float64
   instances: T = R. Half instances (fx_f16_<isa>.c defines FX_HALF_F16, fx_bf16_<isa>.c
   FX_HALF_BF16, both with FX_F32 1): T is the 16-bit pattern (uint16_t), widened to
   float32 exactly on load and rounded once to nearest even on store. Per-item losses and
   class / BCE weights stay R in every instance (the Python layer passes them as float32
   for a half input). Every access to a T array goes through these:
     vload_t(p), vload_t_part(p, n, pad)  VL (or n < VL, the rest pad) elements as a VR
     load_t(p)                            one element as an R
     vstore_t(p, v), vstore_t_part(p, v, n), store_t(p, r)   rounded to T
     stream_copy_t(dst, src, n)           n R values from a float32 buffer out to T
     widen_t(dst, src, n)                 (half only) n T values into a float32 buffer
     vgather_t_part(p, stride, n, pad)    vgather_part of T values
   The kernels keep anything that is read back (the e_j of the softmax passes) in R, so
   a half output is rounded once from the float32 value. */
#if defined(FX_HALF_F16) || defined(FX_HALF_BF16)
#define FX_HALF 1
#if !FX_F32
#error "a half instance computes in float32: define FX_F32 1"
#endif
#define T uint16_t
typedef uint16_t VT __attribute__((vector_size(FX_VBYTES / 2)));   /* VL halves */

#if defined(FX_HALF_BF16)
/* bfloat16 is the top half of a float32: widening is a shift. Narrowing rounds the low
   16 bits to nearest even by an integer add; a NaN is kept NaN (quiet bit set) rather
   than letting the add carry it to inf. */
FN R half_to_r(uint16_t h) { uint32_t u = (uint32_t)h << 16; R f; memcpy(&f, &u, 4); return f; }
FN uint16_t r_to_half(R f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if (f != f) return (uint16_t)((u >> 16) | 0x40);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
/* the rounded bit patterns in the low 16 bits of each 32-bit lane */
FN VU vround_half_bits(VR v)
{
    VU u = (VU)v;
    VU r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
    VU q = (u >> 16) | 0x40u;
    return (VU)vselect(v != v, (VR)q, (VR)r);
}
#else
/* float16 (IEEE binary16), portable: the F16C paths below replace these in the vector
   loads and stores of the x86 instances. */
FN R half_to_r(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, u;
    if (e == 0) {                                /* zero or subnormal: m 2^-24, exact */
        R f = (R)m * 5.9604644775390625e-8f;
        return sign ? -f : f;
    }
    u = e == 0x1f ? sign | 0x7f800000u | (m << 13)           /* inf, NaN (payload kept) */
                  : sign | ((e + 112u) << 23) | (m << 13);    /* rebias 15 -> 127 */
    R f;
    memcpy(&f, &u, 4);
    return f;
}
FN uint16_t r_to_half(R f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  /* NaN */
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u);   /* >= 65520: to inf (even) */
    if (a < 0x38800000u) {                   /* below 2^-14: a subnormal (or 0) of 2^-24 */
        R s;
        memcpy(&s, &a, 4);
        return (uint16_t)(sign | (uint16_t)rintf(s * 16777216.0f));   /* exact product */
    }
    uint32_t r = a - 0x38000000u;            /* rebias 127 -> 15, then 13 bits off, even */
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}
#endif

FN R load_t(const T *p) { return half_to_r(*p); }
FN void store_t(T *p, R r) { *p = r_to_half(r); }

FN VR vload_t(const T *p)
{
#if defined(FX_HALF_BF16) && FX_VBYTES == 64
    return (VR)_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p)), 16);
#elif defined(FX_HALF_BF16) && FX_VBYTES == 32
    return (VR)_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p)), 16);
#elif defined(FX_HALF_BF16)
    VT h;
    memcpy(&h, p, sizeof h);
    return (VR)(__builtin_convertvector(h, VU) << 16);
#elif FX_VBYTES == 64
    return (VR)_mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));      /* F16C */
#elif FX_VBYTES == 32
    return (VR)_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
#else
    /* half_to_r without branches: exponent and mantissa moved into float32's place and
       scaled by 2^112 (127 - 15; exact, subnormals included), inf and NaN set apart */
    VT h;
    memcpy(&h, p, sizeof h);
    VU u = __builtin_convertvector(h, VU);
    VU em = u & 0x7fffu, sign = (u & 0x8000u) << 16;
    VR f = (VR)(em << 13) * vsplat(0x1p112f);
    VR special = (VR)((em << 13) | 0x7f800000u);
    return (VR)((VU)vselect((VI)(em >= 0x7c00u), special, f) | sign);
#endif
}

/* The max of x[0..n), n >= 1, read as bit patterns, VH = 2 VL of them per vector
   instead of VL widened floats: both formats order like sign-magnitude integers, so in
   each lane the signed 16-bit max is the largest non-negative element (where the lane
   has one) and the unsigned min the negative element of least magnitude (the largest,
   where all are negative). Every one of those 2 VH candidates is an element and the
   max is among them: they alone are widened, then reduced as float32. A positive NaN
   ranks above inf, and a negative one is the lane's signed max where all its elements
   are negative: the max is then NaN; otherwise the exp pass makes the row NaN. */
typedef int16_t VHS __attribute__((vector_size(FX_VBYTES)));
enum { VH = FX_VBYTES / 2 };
FN VHS vmax_s16(VHS a, VHS b)
{
#if FX_VBYTES == 64
    return (VHS)_mm512_max_epi16((__m512i)a, (__m512i)b);
#elif FX_VBYTES == 32
    return (VHS)_mm256_max_epi16((__m256i)a, (__m256i)b);
#else
    VHS m = a > b;
    return (a & m) | (b & ~m);
#endif
}
FN VHS vmin_u16(VHS a, VHS b)
{
#if FX_VBYTES == 64
    return (VHS)_mm512_min_epu16((__m512i)a, (__m512i)b);
#elif FX_VBYTES == 32
    return (VHS)_mm256_min_epu16((__m256i)a, (__m256i)b);
#else
    typedef uint16_t VHU __attribute__((vector_size(FX_VBYTES)));
    VHS m = (VHS)((VHU)a < (VHU)b);
    return (a & m) | (b & ~m);
#endif
}
FN R hmax_t(const T *x, int64_t n)
{
    VHS v, hi0, hi1, lo0, lo1;
    int64_t j = VH;
    if (n < VH) {                               /* padded with x[0]: ties change no max */
        T pad[VH];
        for (int i = 0; i < VH; i++) pad[i] = x[i < n ? i : 0];
        memcpy(&v, pad, sizeof v);
        j = n;
    } else {
        memcpy(&v, x, sizeof v);
    }
    hi0 = hi1 = lo0 = lo1 = v;
    for (; j + 2 * VH <= n; j += 2 * VH) {
        VHS a, b;
        memcpy(&a, x + j, sizeof a);
        memcpy(&b, x + j + VH, sizeof b);
        hi0 = vmax_s16(hi0, a);
        lo0 = vmin_u16(lo0, a);
        hi1 = vmax_s16(hi1, b);
        lo1 = vmin_u16(lo1, b);
    }
    for (; j < n; j += VH) {                    /* the last: overlapping the one before */
        memcpy(&v, x + (j + VH <= n ? j : n - VH), sizeof v);
        hi0 = vmax_s16(hi0, v);
        lo0 = vmin_u16(lo0, v);
    }
    T cand[2 * VH];
    VHS hi = vmax_s16(hi0, hi1), lo = vmin_u16(lo0, lo1);
    memcpy(cand, &hi, sizeof hi);
    memcpy(cand + VH, &lo, sizeof lo);
    VR m = vload_t(cand);
    for (int i = VL; i < 2 * VH; i += VL) m = vmax_nan(m, vload_t(cand + i));
    return vhmax_nan(m);
}

FN void vstore_t(T *p, VR v)
{
#if defined(FX_HALF_BF16) && FX_VBYTES == 64
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtepi32_epi16((__m512i)vround_half_bits(v)));
#elif defined(FX_HALF_BF16) && FX_VBYTES == 32
    __m256i r = (__m256i)vround_half_bits(v);      /* each lane <= 0xffff: packus is exact */
    _mm_storeu_si128((__m128i *)p, _mm_packus_epi32(_mm256_castsi256_si128(r),
                                                    _mm256_extracti128_si256(r, 1)));
#elif defined(FX_HALF_BF16)
    VT h = __builtin_convertvector(vround_half_bits(v), VT);
    memcpy(p, &h, sizeof h);
#elif FX_VBYTES == 64
    _mm256_storeu_si256((__m256i *)p, _mm512_cvtps_ph((__m512)v, _MM_FROUND_TO_NEAREST_INT));
#elif FX_VBYTES == 32
    _mm_storeu_si128((__m128i *)p, _mm256_cvtps_ph((__m256)v, _MM_FROUND_TO_NEAREST_INT));
#else
    /* r_to_half without branches: every case formed, the right one selected */
    VU u = (VU)v, sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    VU nan = 0x7e00u | ((a >> 13) & 0x3ffu);
    VU normal = a - 0x38000000u;
    normal = (normal + 0xfffu + ((normal >> 13) & 1u)) >> 13;
    /* below 2^-14: adding 2^-1 (exponent 126) rounds the value to a multiple of 2^-24
       (to nearest even, the FPU's rounding) in the low mantissa bits */
    VU sub = (VU)((VR)a + vsplat(0.5f)) - 0x3f000000u;
    VU r = (VU)vselect((VI)(a < 0x38800000u), (VR)sub, (VR)normal);
    r = (VU)vselect((VI)(a >= 0x477ff000u), (VR)((VU){0} + 0x7c00u), (VR)r);
    r = (VU)vselect((VI)(a > 0x7f800000u), (VR)nan, (VR)r);
    VT h = __builtin_convertvector(r | sign, VT);
    memcpy(p, &h, sizeof h);
#endif
}

/* (Not memcpy of n elements: a call to libc with every vector register spilled around
   it, and its narrow stores then read back as one vector, was a fifth of the time of a
   bfloat16 row of 100 classes. AVX-512 has 16-bit masked loads and stores; AVX2 moves
   the pairs of elements with 32-bit masked ones and an odd last element alone; the
   baseline, an element loop.) */
FN VR vload_t_part(const T *p, int64_t n, R pad)
{
    T b[VL] __attribute__((aligned(FX_VBYTES / 2)));
#if FX_VBYTES == 64
    _mm256_store_si256((__m256i *)b, _mm256_maskz_loadu_epi16((__mmask16)((1u << n) - 1u), p));
#elif FX_VBYTES == 32
    __m128i h = _mm_maskload_epi32((const int *)(const void *)p,
                                   _mm_cmpgt_epi32(_mm_set1_epi32((int)(n / 2)), _mm_setr_epi32(0, 1, 2, 3)));
    if (n & 1)
        h = _mm_blendv_epi8(h, _mm_set1_epi16((short)p[n - 1]),
                            _mm_cmpeq_epi16(_mm_setr_epi16(0, 1, 2, 3, 4, 5, 6, 7),
                                            _mm_set1_epi16((short)(n - 1))));
    _mm_store_si128((__m128i *)b, h);
#else
    for (int i = 0; i < VL; i++) b[i] = i < n ? p[i] : 0;
#endif
    return vselect(vlive(n), vload_t(b), vsplat(pad));
}
FN void vstore_t_part(T *p, VR v, int64_t n)
{
    T b[VL] __attribute__((aligned(FX_VBYTES / 2)));
    vstore_t(b, v);
#if FX_VBYTES == 64
    _mm256_mask_storeu_epi16(p, (__mmask16)((1u << n) - 1u), _mm256_load_si256((const __m256i *)b));
#elif FX_VBYTES == 32
    _mm_maskstore_epi32((int *)(void *)p,
                        _mm_cmpgt_epi32(_mm_set1_epi32((int)(n / 2)), _mm_setr_epi32(0, 1, 2, 3)),
                        _mm_load_si128((const __m128i *)b));
    if (n & 1) p[n - 1] = b[n - 1];
#else
    for (int64_t i = 0; i < n; i++) p[i] = b[i];
#endif
}

/* n values widened into a float32 buffer (the items kernels' tile reads 32-bit lanes). */
FN void widen_t(R *dst, const T *src, int64_t n)
{
    int64_t j = 0;
    for (; j + VL <= n; j += VL) vstore(dst + j, vload_t(src + j));
    if (j < n) vstore_part(dst + j, vload_t_part(src + j, n - j, 0), n - j);
}

/* Lanes [0, n) from p[i stride] (vgather_part of T values: the 16-bit values gathered
   one by one, then widened as a vector; the items kernels' half soft targets). */
FN VR vgather_t_part(const T *p, int64_t stride, int64_t n, R pad)
{
    T b[VL] = {0};
    for (int64_t i = 0; i < n && i < VL; i++) b[i] = p[i * stride];
    return vselect(vlive(n), vload_t(b), vsplat(pad));
}

/* No non-temporal stores for half outputs: a plain rounding copy. */
FN void stream_copy_t(T *dst, const R *src, int64_t n)
{
    int64_t j = 0;
    for (; j + VL <= n; j += VL) vstore_t(dst + j, vload(src + j));
    if (j < n) vstore_t_part(dst + j, vload_part(src + j, n - j, 0), n - j);
}

#else   /* float32, float64: T = R, the accesses are the plain ones */
/* (macros, not functions: the float32 and float64 instances then compile to the code
   they had before T existed, which keeps even the NaN bits GCC's register allocation
   picks between two NaN operands; bench/same_bits.py) */
#define FX_HALF 0
#define T R
#define load_t(p) (*(p))
#define store_t(p, r) ((void)(*(p) = (r)))
#define vload_t(p) vload(p)
#define vstore_t(p, v) vstore((p), (v))
#define vload_t_part(p, n, pad) vload_part((p), (n), (pad))
#define vstore_t_part(p, v, n) vstore_part((p), (v), (n))
#define stream_copy_t(dst, src, n) stream_copy((dst), (src), (n))
#define vgather_t_part(p, stride, n, pad) vgather_part((p), (stride), (n), (pad))
#endif

#endif /* FX_SIMD_H */
