/*
 * The per-row math, written once with GCC/Clang generic vectors and instantiated by
 * fx_precisions.h for each (precision, ISA): FX_REAL, FX_PREC, FX_IS_F32, FX_ISA,
 * FX_VBYTES, FX_TARGET_ATTR are set by the includer. No include guard on purpose.
 *
 * Notation for a row x of C logits: m = max_j x_j, d_j = m - x_j >= 0,
 * e_j = exp(-d_j), s = sum_j e_j, so logsumexp(x) = m + log s and p_j = e_j / s.
 *
 * Every softmax cross-entropy variant is written as
 *     loss = a * log(s) + sum_j b_j * d_j,      grad_j = scale * (a * p_j - b_j)
 * with sum_j b_j = a (this is what lets the m's cancel, so no term is ever large and
 * negative):
 *     hard label t, smoothing eps, class weights w (W = sum w):
 *         b_j = (1-eps) w_t [j == t] + (eps/C) w_j,   a = (1-eps) w_t + (eps/C) W
 *     soft target y:   b_j = w_j ((1-eps) y_j + eps/C),   a = sum_j b_j
 * (PyTorch's definitions, aten/src/ATen/native/LossNLL.cpp, rearranged.) A term with
 * b_j == 0 contributes 0 even where d_j is +inf (a masked -inf logit).
 */

#define FX_N(name) FX_CAT(FX_CAT(name, FX_PREC), FX_ISA)
#define VL (FX_VBYTES / (int)sizeof(FX_REAL))
#define VR FX_N(vr)
#define VI FX_N(vi)
#define VU FX_N(vu)
#define VB FX_N(vb)
#define R FX_REAL
/* point functions are always inlined so the vectors stay in registers */
#define FN static inline __attribute__((always_inline)) FX_TARGET_ATTR
#define KERNEL static FX_TARGET_ATTR

typedef R VR __attribute__((vector_size(FX_VBYTES)));
typedef uint8_t VB __attribute__((vector_size(VL)));
#if FX_IS_F32
typedef int32_t VI __attribute__((vector_size(FX_VBYTES)));
typedef uint32_t VU __attribute__((vector_size(FX_VBYTES)));
#else
typedef int64_t VI __attribute__((vector_size(FX_VBYTES)));
typedef uint64_t VU __attribute__((vector_size(FX_VBYTES)));
#endif

/* Float32 sums are folded into a float64 accumulator every this many elements, so a
   lane never adds more than 256/VL terms in float32. */
#define FX_FOLD_ELEMS 256

/* ---------------------------------------------------------------- vector basics */

FN VR FX_N(vsplat)(R a) { VR v = {0}; return v + a; }
FN VR FX_N(vload)(const R *p) { VR v; memcpy(&v, p, sizeof v); return v; }
FN void FX_N(vstore)(R *p, VR v) { memcpy(p, &v, sizeof v); }

/* Lanes [0, n) set. */
FN VI FX_N(vlive)(int64_t n)
{
    VI lane, nn;
    for (int i = 0; i < VL; i++) { lane[i] = i; nn[i] = n < VL ? (int)n : VL; }
    return lane < nn;
}

FN VR FX_N(vselect)(VI mask, VR a, VR b) { return (VR)((mask & (VI)a) | (~mask & (VI)b)); }
FN VR FX_N(vzero_unless)(VI mask, VR a) { return (VR)(mask & (VI)a); }
/* Is any lane of a mask set? (the rare-path tests of the overflow guards) */
FN int FX_N(vany)(VI m)
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

/* max that keeps a when b is NaN */
FN VR FX_N(vmax)(VR a, VR b) { return FX_N(vselect)(b > a, b, a); }
/* max that turns NaN once either holds one (b's NaN enters, a's stays) */
FN VR FX_N(vmax_nan)(VR a, VR b) { return FX_N(vselect)((b > a) | (b != b), b, a); }

/* Load n < VL elements, filling the rest with pad; store the first n lanes. Row tails
   and column tiles go through these, so the ISAs with masked moves use them. */
#if FX_VBYTES == 64
#if FX_IS_F32
#define FX_KMASK(n) ((__mmask16)((1u << (n)) - 1u))
FN VR FX_N(vload_part)(const R *p, int64_t n, R pad)
{ return (VR)_mm512_mask_loadu_ps(_mm512_set1_ps(pad), FX_KMASK(n), p); }
FN void FX_N(vstore_part)(R *p, VR v, int64_t n) { _mm512_mask_storeu_ps(p, FX_KMASK(n), (__m512)v); }
#else
#define FX_KMASK(n) ((__mmask8)((1u << (n)) - 1u))
FN VR FX_N(vload_part)(const R *p, int64_t n, R pad)
{ return (VR)_mm512_mask_loadu_pd(_mm512_set1_pd(pad), FX_KMASK(n), p); }
FN void FX_N(vstore_part)(R *p, VR v, int64_t n) { _mm512_mask_storeu_pd(p, FX_KMASK(n), (__m512d)v); }
#endif
#undef FX_KMASK
#elif FX_VBYTES == 32
#if FX_IS_F32
FN VR FX_N(vload_part)(const R *p, int64_t n, R pad)
{
    VI live = FX_N(vlive)(n);
    return FX_N(vselect)(live, (VR)_mm256_maskload_ps(p, (__m256i)live), FX_N(vsplat)(pad));
}
FN void FX_N(vstore_part)(R *p, VR v, int64_t n) { _mm256_maskstore_ps(p, (__m256i)FX_N(vlive)(n), (__m256)v); }
#else
FN VR FX_N(vload_part)(const R *p, int64_t n, R pad)
{
    VI live = FX_N(vlive)(n);
    return FX_N(vselect)(live, (VR)_mm256_maskload_pd(p, (__m256i)live), FX_N(vsplat)(pad));
}
FN void FX_N(vstore_part)(R *p, VR v, int64_t n) { _mm256_maskstore_pd(p, (__m256i)FX_N(vlive)(n), (__m256d)v); }
#endif
#else
FN VR FX_N(vload_part)(const R *p, int64_t n, R pad)
{
    R b[VL];
    for (int i = 0; i < VL; i++) b[i] = i < n ? p[i] : pad;
    return FX_N(vload)(b);
}
FN void FX_N(vstore_part)(R *p, VR v, int64_t n)
{
    for (int64_t i = 0; i < n; i++) p[i] = v[i];
}
#endif

/* c - a * b, rounded once where the ISA has FMA (exact results stay exact) */
FN VR FX_N(vfma_neg)(VR a, VR b, VR c)
{
#if FX_VBYTES == 64 && FX_IS_F32
    return (VR)_mm512_fnmadd_ps((__m512)a, (__m512)b, (__m512)c);
#elif FX_VBYTES == 32 && FX_IS_F32
    return (VR)_mm256_fnmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
    return c - a * b;
#endif
}

/* Horizontal sum in float64 and horizontal max (NaN if any lane is NaN), by fixed
   shuffle trees: short rows pay for these once per pass. */
#if FX_VBYTES == 64 && FX_IS_F32
FN double FX_N(vhsum)(VR v)
{
    __m512 x = (__m512)v;
    __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1));
    return _mm512_reduce_add_pd(_mm512_add_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(x)),
                                              _mm512_cvtps_pd(hi)));
}
FN R FX_N(vhmax_nan)(VR v)
{
    __m512 x = (__m512)v;
    return _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q) ? NAN : _mm512_reduce_max_ps(x);
}
#elif FX_VBYTES == 64
FN double FX_N(vhsum)(VR v) { return _mm512_reduce_add_pd((__m512d)v); }
FN R FX_N(vhmax_nan)(VR v)
{
    __m512d x = (__m512d)v;
    return _mm512_cmp_pd_mask(x, x, _CMP_UNORD_Q) ? NAN : _mm512_reduce_max_pd(x);
}
#elif FX_VBYTES == 32 && FX_IS_F32
FN double FX_N(vhsum)(VR v)
{
    __m256 x = (__m256)v;
    __m256d d = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(x)),
                              _mm256_cvtps_pd(_mm256_extractf128_ps(x, 1)));
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(d), _mm256_extractf128_pd(d, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}
FN R FX_N(vhmax_nan)(VR v)
{
    __m256 x = (__m256)v;
    if (_mm256_movemask_ps(_mm256_cmp_ps(x, x, _CMP_UNORD_Q))) return NAN;
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps(x, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
    return _mm_cvtss_f32(m);
}
#elif FX_VBYTES == 32
FN double FX_N(vhsum)(VR v)
{
    __m256d d = (__m256d)v;
    __m128d h = _mm_add_pd(_mm256_castpd256_pd128(d), _mm256_extractf128_pd(d, 1));
    return _mm_cvtsd_f64(_mm_add_sd(h, _mm_unpackhi_pd(h, h)));
}
FN R FX_N(vhmax_nan)(VR v)
{
    __m256d x = (__m256d)v;
    if (_mm256_movemask_pd(_mm256_cmp_pd(x, x, _CMP_UNORD_Q))) return NAN;
    __m128d m = _mm_max_pd(_mm256_castpd256_pd128(x), _mm256_extractf128_pd(x, 1));
    return _mm_cvtsd_f64(_mm_max_sd(m, _mm_unpackhi_pd(m, m)));
}
#else
FN double FX_N(vhsum)(VR v)
{
    double a[VL];
    for (int i = 0; i < VL; i++) a[i] = (double)v[i];
    for (int w = VL / 2; w >= 1; w /= 2)
        for (int i = 0; i < w; i++) a[i] += a[i + w];
    return a[0];
}
FN R FX_N(vhmax_nan)(VR v)
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
FN VR FX_N(vload_u8)(const uint8_t *p)
{
#if FX_VBYTES == 64 && FX_IS_F32
    return (VR)_mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p)));
#elif FX_VBYTES == 64
    return (VR)_mm512_cvtepi32_pd(_mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p)));
#elif FX_VBYTES == 32 && FX_IS_F32
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

FN VR FX_N(vload_u8_part)(const uint8_t *p, int64_t n)
{
    uint8_t b[VL];
    for (int i = 0; i < VL; i++) b[i] = i < n ? p[i] : 0;
    return FX_N(vload_u8)(b);
}

/* A float64 accumulator of VR vectors (VL lanes as two halves of VL/2 doubles, or one
   for float64), for per-element losses that may be huge: a float32 sum of a few
   3e38-sized losses would overflow where their float64 mean does not. */
#if FX_IS_F32
typedef double FX_N(vd) __attribute__((vector_size(FX_VBYTES)));
typedef float FX_N(vh) __attribute__((vector_size(FX_VBYTES / 2)));
typedef struct { FX_N(vd) lo, hi; double spill; } FX_N(acc64);
FN void FX_N(acc_f64)(FX_N(acc64) *a, VR v)
{
#if FX_VBYTES == 64
    __m512 x = (__m512)v;
    a->lo += (FX_N(vd))_mm512_cvtps_pd(_mm512_castps512_ps256(x));
    a->hi += (FX_N(vd))_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
#elif FX_VBYTES == 32
    __m256 x = (__m256)v;
    a->lo += (FX_N(vd))_mm256_cvtps_pd(_mm256_castps256_ps128(x));
    a->hi += (FX_N(vd))_mm256_cvtps_pd(_mm256_extractf128_ps(x, 1));
#else
    FX_N(vh) lo, hi;   /* portable: through memory */
    memcpy(&lo, &v, sizeof lo);
    memcpy(&hi, (char *)&v + sizeof lo, sizeof hi);
    a->lo += __builtin_convertvector(lo, FX_N(vd));
    a->hi += __builtin_convertvector(hi, FX_N(vd));
#endif
}
FN double FX_N(acc_sum)(const FX_N(acc64) *a)
{
    double s = a->spill;
    for (int i = 0; i < VL / 2; i++) s += a->lo[i];
    for (int i = 0; i < VL / 2; i++) s += a->hi[i];
    return s;
}
#else
typedef struct { VR lo, hi; double spill; } FX_N(acc64);
FN void FX_N(acc_f64)(FX_N(acc64) *a, VR v) { a->lo += v; }
FN double FX_N(acc_sum)(const FX_N(acc64) *a)
{
    double s = a->spill;
    for (int i = 0; i < VL; i++) s += a->lo[i];
    return s;
}
#endif

/* dst[0, n) = src[0, n), the vector-aligned part of dst with non-temporal stores, which
   write memory without first reading each line into the cache; stream_fence after the
   last one orders them before what follows (the end of the parallel region). */
#if FX_VBYTES == 64 && FX_IS_F32
FN void FX_N(vstream)(R *p, VR v) { _mm512_stream_ps(p, (__m512)v); }
#elif FX_VBYTES == 64
FN void FX_N(vstream)(R *p, VR v) { _mm512_stream_pd(p, (__m512d)v); }
#elif FX_VBYTES == 32 && FX_IS_F32
FN void FX_N(vstream)(R *p, VR v) { _mm256_stream_ps(p, (__m256)v); }
#elif FX_VBYTES == 32
FN void FX_N(vstream)(R *p, VR v) { _mm256_stream_pd(p, (__m256d)v); }
#elif defined(__SSE2__) && FX_VBYTES == 16 && FX_IS_F32
FN void FX_N(vstream)(R *p, VR v) { _mm_stream_ps(p, (__m128)v); }
#elif defined(__SSE2__) && FX_VBYTES == 16
FN void FX_N(vstream)(R *p, VR v) { _mm_stream_pd(p, (__m128d)v); }
#else
#define FX_NO_STREAM 1
FN void FX_N(vstream)(R *p, VR v) { FX_N(vstore)(p, v); }
#endif

FN void FX_N(stream_fence)(void)
{
#if defined(__SSE2__) || FX_VBYTES > 16
    _mm_sfence();
#endif
}

FN void FX_N(stream_copy)(R *dst, const R *src, int64_t n)
{
    uintptr_t mis = (uintptr_t)dst % FX_VBYTES;
    int64_t head = mis % sizeof(R) ? n : mis ? (int64_t)((FX_VBYTES - mis) / sizeof(R)) : 0;
    if (head > n) head = n;
    memcpy(dst, src, (size_t)head * sizeof(R));
    int64_t j = head;
    for (; j + VL <= n; j += VL) FX_N(vstream)(dst + j, FX_N(vload)(src + j));
    memcpy(dst + j, src + j, (size_t)(n - j) * sizeof(R));
}
#ifdef FX_NO_STREAM
#undef FX_NO_STREAM
#endif

/* ------------------------------------------------------------ exp and log1p */

/* The exp functions work on k <= FX_EXP_MAX_K vectors at once, each step applied to all k
   before the next: one exp is a chain of about 14 dependent operations, and k independent
   chains side by side keep the floating-point pipes busy (one at a time, latency rather
   than arithmetic bounds the loops). The compiler keeps the written order. */
#define FX_EXP_MAX_K 4
#define EACH for (int u = 0; u < k; u++)

FN void FX_N(vexp_poly_k)(const VR *r, VR *p, int k)
{
#if FX_IS_F32
    EACH p[u] = FX_N(vsplat)(0.0013843636261299253f);
    EACH p[u] = p[u] * r[u] + 0.008374153636395931f;
    EACH p[u] = p[u] * r[u] + 0.04166800156235695f;
    EACH p[u] = p[u] * r[u] + 0.16666431725025177f;
    EACH p[u] = p[u] * r[u] + 0.4999999403953552f;
#else
    EACH p[u] = FX_N(vsplat)(1.0 / 6227020800.0);   /* 1/13! */
    EACH p[u] = p[u] * r[u] + 1.0 / 479001600.0;
    EACH p[u] = p[u] * r[u] + 1.0 / 39916800.0;
    EACH p[u] = p[u] * r[u] + 1.0 / 3628800.0;
    EACH p[u] = p[u] * r[u] + 1.0 / 362880.0;
    EACH p[u] = p[u] * r[u] + 1.0 / 40320.0;
    EACH p[u] = p[u] * r[u] + 1.0 / 5040.0;
    EACH p[u] = p[u] * r[u] + 1.0 / 720.0;
    EACH p[u] = p[u] * r[u] + 1.0 / 120.0;
    EACH p[u] = p[u] * r[u] + 1.0 / 24.0;
    EACH p[u] = p[u] * r[u] + 1.0 / 6.0;
    EACH p[u] = p[u] * r[u] + 0.5;
#endif
    EACH p[u] = p[u] * r[u] + (R)1;
    EACH p[u] = p[u] * r[u] + (R)1;
}

#if FX_IS_F32
#define FX_LOG2E 1.44269504088896341f
#define FX_LN2HI 0.693359375f              /* ln2 in 9 bits: n * FX_LN2HI is exact */
#define FX_LN2LO -2.12194440e-4f
#else
#define FX_LOG2E 1.4426950408889634
#define FX_LN2HI 6.93147180369123816490e-01
#define FX_LN2LO 1.90821492927058770002e-10
#endif

#if FX_VBYTES == 64
/* AVX-512: round with vrndscale and scale by 2^n with vscalef, which underflows to 0
   by itself (so -inf needs only a clamp: x is clamped where 2^n * exp(r) rounds to 0,
   and max(lo, NaN) keeps the NaN). x[u] <- exp(x[u]). */
FN void FX_N(vexp_nonpos_k)(VR *x, int k)
{
    VR n[FX_EXP_MAX_K], p[FX_EXP_MAX_K];
#if FX_IS_F32
    EACH x[u] = (VR)_mm512_max_ps(_mm512_set1_ps(-110.0f), (__m512)x[u]);
    EACH n[u] = (VR)_mm512_roundscale_ps((__m512)(x[u] * FX_LOG2E),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    EACH x[u] = (VR)_mm512_max_pd(_mm512_set1_pd(-760.0), (__m512d)x[u]);
    EACH n[u] = (VR)_mm512_roundscale_pd((__m512d)(x[u] * FX_LOG2E),
                                         _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#endif
    EACH x[u] = x[u] - n[u] * FX_LN2HI;
    EACH x[u] = x[u] - n[u] * FX_LN2LO;
    FX_N(vexp_poly_k)(x, p, k);
#if FX_IS_F32
    EACH x[u] = (VR)_mm512_scalef_ps((__m512)p[u], (__m512)n[u]);
#else
    EACH x[u] = (VR)_mm512_scalef_pd((__m512d)p[u], (__m512d)n[u]);
#endif
}
#else
/* AVX2 and baseline: 2^n is built in the exponent bits from the low mantissa bits of
   the rounding constant; results below the smallest normal are flushed to 0.
   x[u] <- exp(x[u]). */
FN void FX_N(vexp_nonpos_k)(VR *x, int k)
{
#if FX_IS_F32
    const R lo = -87.33654475f;                 /* log(2^-126) */
    const R shifter = 12582912.0f;              /* 1.5 * 2^23 */
    const int mbits = 23;
    const VI bias = (VI){0} + 0x3f800000;
#else
    const R lo = -708.3964185322641;            /* log(2^-1022) */
    const R shifter = 6755399441055744.0;       /* 1.5 * 2^52 */
    const int mbits = 52;
    const VI bias = (VI){0} + 0x3ff0000000000000LL;
#endif
    VI under[FX_EXP_MAX_K];
    VR t[FX_EXP_MAX_K], n[FX_EXP_MAX_K], p[FX_EXP_MAX_K];
    EACH under[u] = x[u] < lo;
    EACH x[u] = FX_N(vselect)(under[u], FX_N(vsplat)(lo), x[u]);
    EACH t[u] = x[u] * FX_LOG2E + shifter;     /* round(x / ln2) sits in t's low bits */
    EACH n[u] = t[u] - shifter;
    EACH x[u] = x[u] - n[u] * FX_LN2HI;
    EACH x[u] = x[u] - n[u] * FX_LN2LO;
    FX_N(vexp_poly_k)(x, p, k);
    EACH x[u] = FX_N(vzero_unless)(~under[u], p[u] * (VR)((VI)(((VU)t[u]) << mbits) + bias));
}
#endif
#undef EACH

/* exp(x) for x <= 0 (NaN passes through; exp(-inf) == 0 exactly). Cody-Waite
   reduction x = n ln2 + r, |r| <= ln2/2, then a polynomial for exp(r): in float32 a
   degree-6 near-minimax fit (tools/fit_exp_poly.py: 1.7e-8 relative, a third of half
   an ulp), in float64 the degree-13 Taylor polynomial (truncation < 5e-18). The
   end-to-end ulp bound is measured in tests/test_vecmath.py. */
FN VR FX_N(vexp_nonpos)(VR x)
{
    FX_N(vexp_nonpos_k)(&x, 1);
    return x;
}
#undef FX_LOG2E
#undef FX_LN2HI
#undef FX_LN2LO

/* 1/a. AVX-512 float32: the 14-bit reciprocal estimate and one Newton step (about
   2^-28 relative before rounding), three cheap ops instead of a slow division; the
   ulp tests of log1p and log (tests/test_vecmath.py) cover it. */
FN VR FX_N(vrecip)(VR a)
{
#if FX_VBYTES == 64 && FX_IS_F32
    VR r = (VR)_mm512_rcp14_ps((__m512)a);
    return r * ((R)2 - a * r);
#else
    return (R)1 / a;
#endif
}

/* log(f) for f in [1/sqrt2, sqrt2]: 2 atanh(z), z = (f-1)/(f+1), |z| <= 0.1716, by the
   odd series 2z (1 + z^2/3 + z^4/5 + ...), truncated after z^10/11 in float32
   (< 3e-9 relative) and z^20/21 in float64 (< 1e-18). */
FN VR FX_N(vlog_reduced)(VR f)
{
    const R one = 1;
    VR z = (f - one) * FX_N(vrecip)(f + one);
    VR z2 = z * z;
#if FX_IS_F32
    VR q = FX_N(vsplat)((R)(1.0 / 11));
    q = q * z2 + (R)(1.0 / 9);
    q = q * z2 + (R)(1.0 / 7);
#else
    VR q = FX_N(vsplat)(1.0 / 21);
    q = q * z2 + 1.0 / 19;
    q = q * z2 + 1.0 / 17;
    q = q * z2 + 1.0 / 15;
    q = q * z2 + 1.0 / 13;
    q = q * z2 + 1.0 / 11;
    q = q * z2 + 1.0 / 9;
    q = q * z2 + 1.0 / 7;
#endif
    q = q * z2 + (R)(1.0 / 5);
    q = q * z2 + (R)(1.0 / 3);
    q = q * z2 + one;
    return (z + z) * q;
}

#define FX_SQRT2 ((R)1.41421356237309504880)
#define FX_LN2 ((R)0.69314718055994530942)

/* log(1 + e) for e in [0, 1] (or NaN); also returns 1/(1+e) through *recip, which the
   sigmoid needs anyway. u = fl(1+e) = 2^k (1 + f) with k in {0, 1}, so f = u - 1 or
   u/2 - 1 (both exact) lies in [sqrt(1/2) - 1, sqrt(2) - 1], and
       log1p(e) = k ln2 + log1p(f) + (e - (u-1))/u,
   the last term putting back what rounding u lost (e - (u-1) is exact: Fast2Sum).
   float32: log1p(f) = f + f^2 q(f), q a degree-8 fit (tools/fit_log1p_poly.py: 5e-9
   relative), no division. float64: 2 atanh(f / (2 + f)) through vlog_reduced. */
FN VR FX_N(vlog1p_unit)(VR e, VR *recip)
{
    const R one = 1;
    VR u = e + one;
    VR inv = FX_N(vrecip)(u);
    VR um1 = u - one;
    VR err = e - um1;
    VI big = u > FX_SQRT2;
    VR kln2 = FX_N(vzero_unless)(big, FX_N(vsplat)(FX_LN2));
    *recip = inv;
#if FX_IS_F32
    /* f = u/2 - 1 = um1 - u/2 where big (exact, one rounding), else um1 */
    VR f = FX_N(vfma_neg)(u, FX_N(vzero_unless)(big, FX_N(vsplat)(0.5f)), um1);
    VR q = FX_N(vsplat)(-0.076218381524086f);
    q = q * f + 0.12904483079910278f;
    q = q * f - 0.13242988288402557f;
    q = q * f + 0.14181816577911377f;
    q = q * f - 0.16609081625938416f;
    q = q * f + 0.2000197470188141f;
    q = q * f - 0.25001582503318787f;
    q = q * f + 0.33333325386047363f;
    q = q * f - 0.49999988079071045f;
    return (f + (f * f) * q) + (kln2 + err * inv);
#else
    VR f = FX_N(vselect)(big, u * 0.5, u);
    return kln2 + FX_N(vlog_reduced)(f) + err * inv;
#endif
}

/* log(x) for any x: x = 2^k f with f in [1/sqrt2, sqrt2) from the exponent bits
   (subnormals scaled up first); log(0) = -inf, log(inf) = inf, log(<0) = log(NaN) = NaN.
   k ln2 is added in two parts so that it stays exact. */
FN VR FX_N(vlog)(VR x)
{
#if FX_IS_F32
    const int mbits = 23, ebias = 127;
    const VI mant = (VI){0} + 0x007fffff, onebits = (VI){0} + 0x3f800000;
    const R tiny = 1.17549435e-38f, up = 8388608.0f;       /* 2^-126, 2^23 */
    const R ln2hi = 0.693359375f, ln2lo = -2.12194440e-4f;
#else
    const int mbits = 52, ebias = 1023;
    const VI mant = (VI){0} + 0x000fffffffffffffLL, onebits = (VI){0} + 0x3ff0000000000000LL;
    const R tiny = 2.2250738585072014e-308, up = 4503599627370496.0;   /* 2^-1022, 2^52 */
    const R ln2hi = 6.93147180369123816490e-01, ln2lo = 1.90821492927058770002e-10;
#endif
    VR zero = {0};
    VI sub = (x < tiny) & (x > zero);
    VR xs = FX_N(vselect)(sub, x * up, x);
    VI bits = (VI)xs;
    VI k = ((bits >> mbits) & (VI)((VI){0} + 0x7ff)) - ebias;
    k = k - (sub & ((VI){0} + mbits));
    VR f = (VR)((bits & mant) | onebits);                  /* [1, 2) */
    VI big = f > FX_SQRT2;
    f = FX_N(vselect)(big, f * (R)0.5, f);
    k = k - big;                                           /* big is -1 where set */
    VR kr = __builtin_convertvector(k, VR);
    VR r = kr * ln2hi + (kr * ln2lo + FX_N(vlog_reduced)(f));
    r = FX_N(vselect)(x == zero, FX_N(vsplat)(-INFINITY), r);
    r = FX_N(vselect)(x == FX_N(vsplat)(INFINITY), x, r);
    return FX_N(vselect)((x < zero) | (x != x), FX_N(vsplat)(NAN), r);
}

/* exp(x) for any x: the vector exp below 0, libm for the (rare) positive lanes. */
FN VR FX_N(vexp_any)(VR x)
{
    VI pos = x > (R)0;
    VR r = FX_N(vexp_nonpos)(FX_N(vselect)(pos, (VR){0}, x));
    for (int i = 0; i < VL; i++)
        if (pos[i]) r[i] = (R)exp((double)x[i]);
    return r;
}

/* ------------------------------------------------------------ row passes */

/* Running max for the max pass. A NaN need not survive here: exp(NaN - m) is NaN, so a
   NaN anywhere in a chunk reaches s, and through s every output of its row. */
#if FX_VBYTES == 64 && FX_IS_F32
FN VR FX_N(vmax_fast)(VR m, VR v) { return (VR)_mm512_max_ps((__m512)m, (__m512)v); }
#elif FX_VBYTES == 64
FN VR FX_N(vmax_fast)(VR m, VR v) { return (VR)_mm512_max_pd((__m512d)m, (__m512d)v); }
#elif FX_VBYTES == 32 && FX_IS_F32
FN VR FX_N(vmax_fast)(VR m, VR v) { return (VR)_mm256_max_ps((__m256)m, (__m256)v); }
#elif FX_VBYTES == 32
FN VR FX_N(vmax_fast)(VR m, VR v) { return (VR)_mm256_max_pd((__m256d)m, (__m256d)v); }
#else
FN VR FX_N(vmax_fast)(VR m, VR v) { return FX_N(vmax)(m, v); }
#endif

/* max of a row (chunk); see vmax_fast for NaN. */
FN R FX_N(row_max)(const R *x, int64_t C)
{
    VR m0 = FX_N(vsplat)(-INFINITY), m1 = m0;
    int64_t j = 0;
    for (; j + 2 * VL <= C; j += 2 * VL) {
        m0 = FX_N(vmax_fast)(m0, FX_N(vload)(x + j));
        m1 = FX_N(vmax_fast)(m1, FX_N(vload)(x + j + VL));
    }
    for (; j < C; j += VL) {
        VR v = j + VL <= C ? FX_N(vload)(x + j) : FX_N(vload_part)(x + j, C - j, -INFINITY);
        m0 = FX_N(vmax_fast)(m0, v);
    }
    return FX_N(vhmax_nan)(FX_N(vmax_nan)(m0, m1));
}

/* b_j (sh - x_j), 0 where b_j == 0 (a masked -inf class contributes nothing). With
   finite logits sh - x_j can overflow (x_j = -3e38 in float32, sh = 3e38) although
   b_j (sh - x_j) may not: such lanes are summed in float64 into spill[lane] instead,
   so extreme finite logits give the finite loss they should. */
FN VR FX_N(bd_terms)(VR b, VR sh, VR x, double *spill)
{
    VR zero = {0}, inf = FX_N(vsplat)((R)INFINITY);
    VR d = sh - x;
    VR t = FX_N(vzero_unless)(b != zero, b * d);
    VI over = (d == inf) & (b != zero) & (sh != inf) & (x != -inf);
    if (__builtin_expect(FX_N(vany)(over), 0)) {
        for (int i = 0; i < VL; i++)
            if (over[i]) {
                /* long double: wider exponent on x86-64, so float64 logits near
                   +-1.8e308 fit too; elsewhere it is double and float32 still fits */
                spill[i] += (double)((long double)b[i] * ((long double)sh[i] - (long double)x[i]));
                t[i] = 0;
            }
    }
    return t;
}

/* b_j of the notation above, for a vector of classes at j (w, y already offset):
     SMOOTH: b_j = (eps/C) w_j      SOFT: b_j = w_j ((1-eps) y_j + eps/C)
   with c1 = 1-eps, c0 = eps/C and w_j = 1 without weights. The one place where the
   per-class target weights are formed; the exp and gradient passes both call it. */
FN VR FX_N(b_of)(int aux, const R *w, const R *y, int64_t j, int full, int64_t n, R c1, R c0)
{
    VR wv = w ? (full ? FX_N(vload)(w + j) : FX_N(vload_part)(w + j, n, 0)) : FX_N(vsplat)(1);
    if (aux == FX_AUX_SOFT) {
        VR yv = full ? FX_N(vload)(y + j) : FX_N(vload_part)(y + j, n, 0);
        return wv * (yv * c1 + c0);
    }
    return wv * c0;
}

/* k vectors of the exp pass from j, the last with n live lanes of VL (the others full):
   e = exp(x - sh) into s[u] (and g), the aux sums into bd[u], bsum[u]; see exp_pass. */
FN void FX_N(exp_step)(const R *x, R *g, int64_t j, int k, int64_t n, R sh, int aux,
                       const R *w, const R *y, R c1, R c0, VR *s, VR *bd, VR *bsum,
                       double *spill)
{
    VR v[FX_EXP_MAX_K], e[FX_EXP_MAX_K];
    for (int u = 0; u < k; u++) {
        int full = u < k - 1 || n == VL;
        v[u] = full ? FX_N(vload)(x + j + u * VL) : FX_N(vload_part)(x + j + u * VL, n, -INFINITY);
        e[u] = v[u] - sh;
    }
    FX_N(vexp_nonpos_k)(e, k);
    for (int u = 0; u < k; u++) {
        int64_t ju = j + u * VL;
        int full = u < k - 1 || n == VL;
        s[u] += e[u];
        if (aux != FX_AUX_NONE) {
            VR b;
            if (aux == FX_AUX_ENTROPY) {
                b = e[u];
            } else {
                VI live = full ? ~(VI){0} : FX_N(vlive)(n);
                b = FX_N(vzero_unless)(live, FX_N(b_of)(aux, w, y, ju, full, n, c1, c0));
                bsum[u] += b;
            }
            bd[u] += FX_N(bd_terms)(b, FX_N(vsplat)(sh), v[u], spill);
        }
        if (g) {
            if (full) FX_N(vstore)(g + ju, e[u]);
            else FX_N(vstore_part)(g + ju, e[u], n);
        }
    }
}

/* The exp pass over one chunk: e_j = exp(x_j - sh), s = sum e_j, e_j stored to g when
   g != NULL, and per aux, with d_j = sh - x_j:
     SMOOTH, SOFT: b_j from b_of                   -> bd = sum b_j d_j, bsum = sum b_j
     ENTROPY: b_j = e_j                            -> bd
   (b_j == 0 terms count 0 even where d_j is inf.) Called with literal aux and
   NULL-ness, so after inlining each call site is its own loop with no per-element
   branches. The partial sums are folded into float64 every FX_FOLD_ELEMS elements, in
   an order fixed by C alone. */
FN void FX_N(exp_pass)(const R *x, R *g, int64_t C, R sh, int aux, const R *w, const R *y,
                       R c1, R c0, fx_chunk *out)
{
    enum { U = FX_EXP_MAX_K };
    _Static_assert(U == 4, "the folds below add four accumulators");
    VR zero = {0}, s[U], bd[U], bsum[U];
    double s_acc = 0.0, bd_acc = 0.0, bsum_acc = 0.0, spill[VL] = {0};
    for (int u = 0; u < U; u++) s[u] = bd[u] = bsum[u] = zero;
    int64_t j = 0, since_fold = 0;
    for (; j + U * VL <= C; j += U * VL) {
        /* what follows this chunk in memory (the next chunk, or the next row) is read
           next: fetch it into L2 meanwhile, so that its max pass does not wait for memory
           with the core idle (hardware prefetchers stop at page boundaries) */
        for (int b = 0; b < U * VL * (int)sizeof(R); b += 64) {
            __builtin_prefetch((const char *)(x + C + j) + b, 0, 2);
            if (g) __builtin_prefetch((const char *)(g + C + j) + b, 1, 2);
        }
        FX_N(exp_step)(x, g, j, U, VL, sh, aux, w, y, c1, c0, s, bd, bsum, spill);
        since_fold += U * VL;
        if (since_fold >= FX_FOLD_ELEMS) {
            s_acc += FX_N(vhsum)((s[0] + s[1]) + (s[2] + s[3]));
            if (aux != FX_AUX_NONE) {
                bd_acc += FX_N(vhsum)((bd[0] + bd[1]) + (bd[2] + bd[3]));
                bsum_acc += FX_N(vhsum)((bsum[0] + bsum[1]) + (bsum[2] + bsum[3]));
            }
            for (int u = 0; u < U; u++) s[u] = bd[u] = bsum[u] = zero;
            since_fold = 0;
        }
    }
    /* the last < U vectors: a lane of s[0] gets at most U more terms */
    for (; j < C; j += VL) {
        int full = j + VL <= C;
        FX_N(exp_step)(x, g, j, 1, full ? VL : C - j, sh, aux, w, y, c1, c0, s, bd, bsum, spill);
    }
    for (int i = 0; i < VL; i++) bd_acc += spill[i];
    out->s = s_acc + FX_N(vhsum)((s[0] + s[1]) + (s[2] + s[3]));
    out->bd = bd_acc + FX_N(vhsum)((bd[0] + bd[1]) + (bd[2] + bd[3]));
    out->bsum = bsum_acc + FX_N(vhsum)((bsum[0] + bsum[1]) + (bsum[2] + bsum[3]));
}

/* The gradient pass over g, which holds e_j: g_j = alpha e_j - beta b_j, with b_j from
   b_of (no b term for NONE). */
FN void FX_N(grad_pass)(R *g, int64_t C, R alpha, R beta, int aux,
                        const R *w, const R *y, R c1, R c0)
{
    for (int64_t j = 0; j < C; j += VL) {
        int full = j + VL <= C;
        int64_t n = full ? VL : C - j;
        VR e = full ? FX_N(vload)(g + j) : FX_N(vload_part)(g + j, n, 0);
        VR gv = e * alpha;
        if (aux == FX_AUX_SMOOTH || aux == FX_AUX_SOFT)
            gv = gv - FX_N(b_of)(aux, w, y, j, full, n, c1, c0) * beta;
        if (full) FX_N(vstore)(g + j, gv);
        else FX_N(vstore_part)(g + j, gv, n);
    }
}

/* Statistics of one chunk: its max m, the shift sh it used (m, or 0 for a chunk of
   -inf only, whose e_j are then exactly 0), and exp_pass's sums. */
FN void FX_N(chunk_stats)(const R *x, R *g, int64_t n, int aux, const R *w, const R *y,
                          R c1, R c0, fx_chunk *st)
{
    R m = FX_N(row_max)(x, n);
    R sh = m == -INFINITY ? 0 : m;
    FX_N(exp_pass)(x, g, n, sh, aux, w, y, c1, c0, st);
    st->m = m;
    st->sh = sh;
}

/* ------------------------------------------------ softmax cross-entropy family */

/* A row is cut into chunks of FX_CHUNK_BYTES (fixed, so the numerics do not depend on
   how rows are spread over threads); each chunk's passes run while it sits in L1.
   Phase 1 per chunk: stats (and e_j into g). Phase 2 per row: merge, loss, and the
   chunk's gradient factor. Phase 3 per chunk: the gradient. The row path (ce_rows)
   and the chunk-parallel path (few long rows, driven from _core.pyx) call the same
   three functions in the same order per row, so they give the same bits. */
#define CHUNK ((int64_t)(FX_CHUNK_BYTES / sizeof(R)))

FN int FX_N(ce_aux)(const fx_ce_args *A)
{
    if (A->soft) return FX_AUX_SOFT;
    return A->smoothing > 0.0 ? FX_AUX_SMOOTH : FX_AUX_NONE;
}

/* The class of a row's hard label, FX_LABEL_IGNORED or FX_LABEL_BAD; soft targets: 0. */
FN int64_t FX_N(row_label)(const fx_ce_args *A, int64_t row)
{
    return A->soft ? 0 : fx_label(A->labels, A->label_code, row, A->C, A->ignore_index);
}

/* Phase 1 with e_j written to g (the chunk's place in the gradient, a buffer, or NULL) */
FN void FX_N(ce_phase1_to)(const fx_ce_args *A, int64_t row, int64_t c, fx_chunk *st, R *g)
{
    const int64_t C = A->C, j0 = c * CHUNK;
    const int64_t n = C - j0 < CHUNK ? C - j0 : CHUNK;
    const R *x = (const R *)A->x + row * C + j0;
    const R *w = A->weight ? (const R *)A->weight + j0 : NULL;
    const R *y = A->soft ? (const R *)A->soft + row * C + j0 : NULL;
    const double eps = A->smoothing;
    const R c1 = (R)(1.0 - eps), c0 = (R)(eps / (double)C);
    int64_t label = FX_N(row_label)(A, row);
    st->xt = 0.0;
    if (label < 0) {                    /* ignored (or a label changed since validation) */
        if (g) memset(g, 0, (size_t)n * sizeof(R));
        st->m = st->sh = st->s = st->bd = st->bsum = 0.0;
        return;
    }
    if (!A->soft && label >= j0 && label < j0 + n)
        st->xt = (double)x[label - j0];                 /* before g overwrites x */
    switch (FX_N(ce_aux)(A)) {
    case FX_AUX_SOFT:
        if (w) FX_N(chunk_stats)(x, g, n, FX_AUX_SOFT, w, y, c1, c0, st);
        else FX_N(chunk_stats)(x, g, n, FX_AUX_SOFT, NULL, y, c1, c0, st);
        break;
    case FX_AUX_SMOOTH:
        if (w) FX_N(chunk_stats)(x, g, n, FX_AUX_SMOOTH, w, NULL, c1, c0, st);
        else FX_N(chunk_stats)(x, g, n, FX_AUX_SMOOTH, NULL, NULL, c1, c0, st);
        break;
    default:
        if (g) FX_N(chunk_stats)(x, g, n, FX_AUX_NONE, NULL, NULL, 0, 0, st);
        else FX_N(chunk_stats)(x, NULL, n, FX_AUX_NONE, NULL, NULL, 0, 0, st);
    }
}

KERNEL void FX_N(ce_phase1)(const fx_ce_args *A, int64_t row, int64_t c, fx_chunk *st)
{
    R *g = A->grad ? (R *)A->grad + row * A->C + c * CHUNK : NULL;
    FX_N(ce_phase1_to)(A, row, c, st, g);
}

/* loss = a log S + sum_j b_j (M - x_j); sets each chunk's gradient factor
   alpha_c = scale * a * exp(sh_c - M) / S (0 for a chunk whose e are all 0). */
KERNEL double FX_N(ce_phase2)(const fx_ce_args *A, int64_t row, fx_chunk *st)
{
    const int64_t nch = (A->C + CHUNK - 1) / CHUNK;
    int64_t label = FX_N(row_label)(A, row);
    /* a label that no longer validates (changed by another thread meanwhile) gives NaN */
    double loss = label == FX_LABEL_IGNORED ? 0.0 : NAN;
    if (label >= 0) {
        double wt = A->weight && !A->soft ? (double)((const R *)A->weight)[label] : 1.0;
        loss = fx_item_loss(A, st, nch, wt, A->soft ? 0.0 : st[label / CHUNK].xt, NULL);
    }
    if (A->row_loss) ((R *)A->row_loss)[row] = (R)loss;
    return loss;
}

/* Phase 3 over g, which holds the chunk's e_j from phase 1 */
FN void FX_N(ce_phase3_to)(const fx_ce_args *A, int64_t row, int64_t c, const fx_chunk *st,
                           R *g)
{
    const int64_t C = A->C, j0 = c * CHUNK;
    const int64_t n = C - j0 < CHUNK ? C - j0 : CHUNK;
    const R *w = A->weight ? (const R *)A->weight + j0 : NULL;
    const R *y = A->soft ? (const R *)A->soft + row * C + j0 : NULL;
    const double eps = A->smoothing, scale = A->grad_scale;
    const R c1 = (R)(1.0 - eps), c0 = (R)(eps / (double)C);
    const R alpha = (R)st[c].alpha;
    int64_t label = FX_N(row_label)(A, row);
    if (label < 0) return;                                /* zeroed in phase 1 */
    switch (FX_N(ce_aux)(A)) {
    case FX_AUX_SOFT:
        if (w) FX_N(grad_pass)(g, n, alpha, (R)scale, FX_AUX_SOFT, w, y, c1, c0);
        else FX_N(grad_pass)(g, n, alpha, (R)scale, FX_AUX_SOFT, NULL, y, c1, c0);
        return;
    case FX_AUX_SMOOTH:
        if (w) FX_N(grad_pass)(g, n, alpha, (R)scale, FX_AUX_SMOOTH, w, NULL, c1, c0);
        else FX_N(grad_pass)(g, n, alpha, (R)scale, FX_AUX_SMOOTH, NULL, NULL, c1, c0);
        break;
    default:
        FX_N(grad_pass)(g, n, alpha, 0, FX_AUX_NONE, NULL, NULL, 0, 0);
    }
    if (!A->soft && label >= j0 && label < j0 + n) {
        double wt = A->weight ? (double)((const R *)A->weight)[label] : 1.0;
        g[label - j0] = (R)((double)g[label - j0] - scale * (1.0 - eps) * wt);
    }
}

KERNEL void FX_N(ce_phase3)(const fx_ce_args *A, int64_t row, int64_t c, const fx_chunk *st)
{
    FX_N(ce_phase3_to)(A, row, c, st, (R *)A->grad + row * A->C + c * CHUNK);
}

/* nll_loss on log-probabilities: loss = -w_t x_t, gradient -w_t * scale at t. */
FN double FX_N(nll_row)(const fx_ce_args *A, int64_t row)
{
    const int64_t C = A->C;
    const R *x = (const R *)A->x + row * C;
    R *g = A->grad ? (R *)A->grad + row * C : NULL;
    int64_t label = FX_N(row_label)(A, row);
    double loss = label == FX_LABEL_IGNORED ? 0.0 : NAN;   /* NaN: see ce_phase2 */
    if (label >= 0) {
        double wt = A->weight ? (double)((const R *)A->weight)[label] : 1.0;
        loss = -wt * (double)x[label];
        if (g) {
            memset(g, 0, (size_t)C * sizeof(R));
            g[label] = (R)(-wt * A->grad_scale);
        }
    } else if (g) {
        memset(g, 0, (size_t)C * sizeof(R));
    }
    if (A->row_loss) ((R *)A->row_loss)[row] = (R)loss;
    return loss;
}

KERNEL double FX_N(ce_rows)(const fx_ce_args *A, int64_t r0, int64_t r1)
{
    const int64_t nch = (A->C + CHUNK - 1) / CHUNK;
    fx_chunk local[FX_LOCAL_CHUNKS];
    fx_chunk *st = nch <= FX_LOCAL_CHUNKS ? local : (fx_chunk *)malloc((size_t)nch * sizeof(fx_chunk));
    double total = 0.0;
    if (!st) return NAN;   /* out of memory for a row of millions of classes: NaN, not a crash */
    if (A->stream_grad && nch == 1 && A->grad && !A->logprob_input) {
        /* the row's gradient is made in buf (in L1) and then streamed out */
        R buf[CHUNK] __attribute__((aligned(64)));
        for (int64_t r = r0; r < r1; r++) {
            FX_N(ce_phase1_to)(A, r, 0, st, buf);
            total += FX_N(ce_phase2)(A, r, st);
            FX_N(ce_phase3_to)(A, r, 0, st, buf);
            FX_N(stream_copy)((R *)A->grad + r * A->C, buf, A->C);
        }
        FX_N(stream_fence)();
        return total;
    }
    for (int64_t r = r0; r < r1; r++) {
        if (A->logprob_input) { total += FX_N(nll_row)(A, r); continue; }
        for (int64_t c = 0; c < nch; c++) FX_N(ce_phase1)(A, r, c, st + c);
        total += FX_N(ce_phase2)(A, r, st);
        if (A->grad)
            for (int64_t c = 0; c < nch; c++) FX_N(ce_phase3)(A, r, c, st);
    }
    if (st != local) free(st);
    return total;
}

/* ------------------------------------- class axis not last: (outer, C, inner) */

/* A panel is up to NV vectors (NV * VL neighbouring positions) along `inner`, each
   position an item with its own softmax over the C classes that lie `inner` elements
   apart. Vectors run along `inner` (contiguous), the loops run over classes, so
   (N, C, H, W) needs no transposing copy. The first pass copies the panel (NV * VL
   contiguous elements of each class row) into buf, C x NV * VL contiguous, where the
   later passes work: the class rows lie `inner` elements apart, and with `inner` a
   power of two they all map to the same few cache sets, so re-reading them in place
   would miss. Without buf (a C too big for it) the passes work in x and g in place.
   Each lane is an item with one chunk; its loss comes from fx_item_loss, as for rows. */
#define NV FX_COL_VECS
FN double FX_N(ce_panel)(const fx_ce_args *A, int aux, int64_t inner, int64_t item0,
                         int64_t n, const R *x, R *g, const R *y, R *buf)
{
    const int64_t C = A->C;
    const R *w = (const R *)A->weight;
    const double eps = A->smoothing, scale = A->grad_scale;
    const R c1 = (R)(1.0 - eps), c0 = (R)(eps / (double)C);
    const int nv = (int)((n + VL - 1) / VL);
    const int64_t nlast = n - (int64_t)(nv - 1) * VL;     /* lanes of the last vector */
    VR zero = {0};
    VI live[NV], keep[NV];                           /* keep: lanes that are not ignored */
    int64_t label[NV * VL];
    fx_chunk st[NV * VL];
    double total = 0.0;
#define FULL(q) ((q) < nv - 1 || nlast == VL)
#define LOAD(q, p, pad) (FULL(q) ? FX_N(vload)(p) : FX_N(vload_part)((p), nlast, (pad)))
#define STORE(q, p, v) do { if (FULL(q)) FX_N(vstore)((p), (v)); else FX_N(vstore_part)((p), (v), nlast); } while (0)
    for (int q = 0; q < nv; q++) keep[q] = live[q] = FULL(q) ? ~(VI){0} : FX_N(vlive)(nlast);
    if (!A->soft) {                 /* the labels of the panel four ahead, like x below */
        const size_t lb = fx_label_bytes(A->label_code);
        const char *ahead = (const char *)A->labels + (size_t)(item0 + 4 * NV * VL) * lb;
        for (size_t b = 0; b < (size_t)n * lb; b += 64) __builtin_prefetch(ahead + b);
        fx_labels(A->labels, A->label_code, item0, n, C, A->ignore_index, label);
        for (int q = 0; q < nv; q++) {
            VI labelled;            /* lanes with a class (not ignored, nor bad) */
            for (int l = 0; l < VL; l++)
                labelled[l] = q * VL + l < n && label[q * VL + l] >= 0 ? -1 : 0;
            keep[q] &= labelled;
        }
    } else {
        for (int64_t l = 0; l < n; l++) label[l] = 0;
    }
#define KEPT(l) (keep[(l) / VL][(l) % VL] != 0)
    /* loss of a lane that is not kept: 0 if ignored, NaN if its label no longer validates */
#define DROPPED_LOSS(l) (label[l] == FX_LABEL_IGNORED ? 0.0 : NAN)

    if (A->logprob_input) {                          /* nll_loss */
        double xt[NV * VL];                          /* read before g (maybe x) is zeroed */
        for (int64_t l = 0; l < n; l++) xt[l] = KEPT(l) ? (double)x[label[l] * inner + l] : 0.0;
        if (g)
            for (int64_t c = 0; c < C; c++)
                for (int q = 0; q < nv; q++) STORE(q, g + c * inner + q * VL, zero);
        for (int64_t l = 0; l < n; l++) {
            double loss = DROPPED_LOSS(l);
            if (KEPT(l)) {
                double wt = w ? (double)w[label[l]] : 1.0;
                loss = -wt * xt[l];
                if (g) g[label[l] * inner + l] = (R)(-wt * scale);
            }
            if (A->row_loss) ((R *)A->row_loss)[item0 + l] = (R)loss;
            total += loss;
        }
        return total;
    }

    /* pass 1: the panel into buf (lanes past n hold -inf), max per lane (NaN, if any,
       reaches s in pass 2) */
    /* where passes 2 and 3 read x and keep e, then the gradient: buf, or x and g */
    const R *xs = buf ? buf : x;
    R *ws = buf ? buf : g;
    const int64_t stride = buf ? NV * VL : inner;
#define XS(c, q) (xs + (c) * stride + (q) * VL)
#define WS(c, q) (ws + (c) * stride + (q) * VL)
    VR m[NV], sh[NV];
    for (int q = 0; q < nv; q++) m[q] = FX_N(vsplat)(-INFINITY);
    for (int64_t c = 0; c < C; c++)
        for (int q = 0; q < nv; q++) {
            /* C streams of NV * VL elements are more than the prefetchers follow: fetch
               four panels ahead in each class row now (a prefetch never faults) */
            __builtin_prefetch(x + c * inner + (4 * NV + q) * VL, 0, 2);
            if (g && !A->stream_grad) __builtin_prefetch(g + c * inner + (4 * NV + q) * VL, 1, 2);
            VR v = LOAD(q, x + c * inner + q * VL, -INFINITY);
            if (buf) FX_N(vstore)(WS(c, q), v);
            m[q] = FX_N(vmax_fast)(m[q], v);
        }
    for (int64_t l = 0; l < n; l++)      /* the target logits, from buf (a gather from x would miss) */
        st[l].xt = !A->soft && KEPT(l) ? (double)xs[label[l] * stride + l] : 0.0;
    for (int q = 0; q < nv; q++)
        sh[q] = FX_N(vselect)(m[q] == FX_N(vsplat)(-INFINITY), zero, m[q]);

    /* pass 2: e = exp(x - sh) over x in buf; sums per lane, folded to float64 every 16
       classes */
    VR s[NV], bd[NV], bsum[NV];
    double s_acc[NV * VL], bd_acc[NV * VL], bsum_acc[NV * VL];
    for (int q = 0; q < nv; q++) s[q] = bd[q] = bsum[q] = zero;
    for (int l = 0; l < nv * VL; l++) s_acc[l] = bd_acc[l] = bsum_acc[l] = 0.0;
    for (int64_t c = 0; c < C; c++) {
        for (int q = 0; q < nv; q++) {
            VR v = LOAD(q, XS(c, q), -INFINITY);
            VR e = FX_N(vexp_nonpos)(v - sh[q]);
            s[q] += e;
            if (aux != FX_AUX_NONE) {
                VR b = FX_N(vsplat)(w ? w[c] : (R)1);
                b = aux == FX_AUX_SOFT ? b * (LOAD(q, y + c * inner + q * VL, 0) * c1 + c0) : b * c0;
                b = FX_N(vzero_unless)(live[q], b);
                bsum[q] += b;
                bd[q] += FX_N(bd_terms)(b, sh[q], v, bd_acc + q * VL);
            }
            if (g) STORE(q, WS(c, q), e);
        }
        if ((c & 15) == 15 || c == C - 1) {
            for (int q = 0; q < nv; q++) {
                for (int l = 0; l < VL; l++) s_acc[q * VL + l] += s[q][l];
                s[q] = zero;
                if (aux == FX_AUX_NONE) continue;
                for (int l = 0; l < VL; l++) {
                    bd_acc[q * VL + l] += bd[q][l];
                    bsum_acc[q * VL + l] += bsum[q][l];
                }
                bd[q] = bsum[q] = zero;
            }
        }
    }

    /* per lane: the loss and the gradient factor; log S one vector at a time */
    R alpha_r[NV * VL];
    for (int q = 0; q < nv; q++) {
        R s_r[VL], log_s[VL];
        for (int l = 0; l < VL; l++) s_r[l] = (R)s_acc[q * VL + l];
        FX_N(vstore)(log_s, FX_N(vlog)(FX_N(vload)(s_r)));
        for (int l = 0; l < VL; l++) {
            int64_t i = (int64_t)q * VL + l;
            alpha_r[i] = 0;
            if (i >= n) continue;
            double loss = DROPPED_LOSS(i);
            if (KEPT(i)) {
                st[i].m = m[q][l]; st[i].sh = sh[q][l];
                st[i].s = s_acc[i]; st[i].bd = bd_acc[i]; st[i].bsum = bsum_acc[i];
                double wt = w && !A->soft ? (double)w[label[i]] : 1.0;
                double ls = log_s[l];
                loss = fx_item_loss(A, st + i, 1, wt, st[i].xt, &ls);
                alpha_r[i] = (R)st[i].alpha;
            }
            if (A->row_loss) ((R *)A->row_loss)[item0 + i] = (R)loss;
            total += loss;
        }
    }
    if (!g) return total;

    /* pass 3: the gradient alpha e - beta b in buf (ignored lanes exactly 0), the hard
       labels' term there too, then out to g */
    VR alpha[NV];
    for (int q = 0; q < nv; q++) alpha[q] = FX_N(vload)(alpha_r + q * VL);
    R beta = (R)scale;
    for (int64_t c = 0; c < C; c++)
        for (int q = 0; q < nv; q++) {
            VR gv = LOAD(q, WS(c, q), 0) * alpha[q];
            if (aux != FX_AUX_NONE) {
                VR b = FX_N(vsplat)(w ? w[c] : (R)1);
                b = aux == FX_AUX_SOFT ? b * (LOAD(q, y + c * inner + q * VL, 0) * c1 + c0) : b * c0;
                gv = gv - b * beta;
            }
            STORE(q, WS(c, q), FX_N(vzero_unless)(keep[q], gv));
        }
    if (!A->soft)
        for (int64_t l = 0; l < n; l++) {
            if (!KEPT(l)) continue;
            double wt = w ? (double)w[label[l]] : 1.0;
            R *gt = ws + label[l] * stride + l;
            *gt = (R)((double)*gt - scale * (1.0 - eps) * wt);
        }
    if (buf && A->stream_grad)      /* see stream_copy; ce_cols fences */
        for (int64_t c = 0; c < C; c++) FX_N(stream_copy)(g + c * inner, WS(c, 0), n);
    else if (buf)
        for (int64_t c = 0; c < C; c++)
            for (int q = 0; q < nv; q++) STORE(q, g + c * inner + q * VL, LOAD(q, WS(c, q), 0));
#undef XS
#undef WS
#undef FULL
#undef LOAD
#undef STORE
#undef KEPT
#undef DROPPED_LOSS
    return total;
}

/* Panels [k0, k1) of x viewed as (outer, C, inner): panel k covers outer index
   k / panels_per_outer and inner positions from (k % panels_per_outer) * NV * VL. */
KERNEL double FX_N(ce_cols)(const fx_ce_args *A, int64_t inner, int64_t k0, int64_t k1)
{
    const int64_t C = A->C, width = (int64_t)NV * VL, ppo = (inner + width - 1) / width;
    double total = 0.0;
    /* The panel buffer, C x width elements: on the stack up to 16 KiB (32 classes of a
       512-byte AVX-512 panel), else allocated up to 512 KiB (1024 such classes: it still
       fits L2); beyond that, or if the allocation fails, the passes work in x and g:
       slower where the class rows alias in the cache, but no big allocation per call. */
    R local[16384 / sizeof(R)];
    const int64_t need = C * width;
    R *buf = need <= (int64_t)(sizeof local / sizeof(R)) ? local
             : need * (int64_t)sizeof(R) <= (512 << 10) ? (R *)malloc((size_t)need * sizeof(R))
             : NULL;
    for (int64_t k = k0; k < k1; k++) {
        int64_t o = k / ppo, i0 = (k % ppo) * width;
        int64_t n = inner - i0 < width ? inner - i0 : width;
        int64_t base = o * C * inner + i0;
        const R *x = (const R *)A->x + base, *y = A->soft ? (const R *)A->soft + base : NULL;
        R *g = A->grad ? (R *)A->grad + base : NULL;
        /* each aux its own copy of the panel code, with no per-element branch on it */
        switch (FX_N(ce_aux)(A)) {
        case FX_AUX_SOFT:
            total += FX_N(ce_panel)(A, FX_AUX_SOFT, inner, o * inner + i0, n, x, g, y, buf);
            break;
        case FX_AUX_SMOOTH:
            total += FX_N(ce_panel)(A, FX_AUX_SMOOTH, inner, o * inner + i0, n, x, g, y, buf);
            break;
        default:
            total += FX_N(ce_panel)(A, FX_AUX_NONE, inner, o * inner + i0, n, x, g, y, buf);
        }
    }
    if (buf != local) free(buf);   /* free(NULL) is a no-op */
    if (A->stream_grad) FX_N(stream_fence)();
    return total;
}
#undef NV

/* ------------------------------------------------ building blocks over rows */

KERNEL void FX_N(norm_rows)(const void *xv, void *outv, int64_t C, int64_t r0, int64_t r1,
                            int what)
{
    const int64_t nch = (C + CHUNK - 1) / CHUNK;
    fx_chunk local[FX_LOCAL_CHUNKS];
    fx_chunk *st = nch <= FX_LOCAL_CHUNKS ? local : (fx_chunk *)malloc((size_t)nch * sizeof(fx_chunk));
    if (!st) return;
    for (int64_t r = r0; r < r1; r++) {
        const R *x = (const R *)xv + r * C;
        R *o = (R *)outv + r * C;
        int store = what == FX_OUT_SOFTMAX;
        for (int64_t c = 0; c < nch; c++) {
            int64_t j0 = c * CHUNK, n = C - j0 < CHUNK ? C - j0 : CHUNK;
            if (what == FX_OUT_ENTROPY)
                FX_N(chunk_stats)(x + j0, NULL, n, FX_AUX_ENTROPY, NULL, NULL, 0, 0, st + c);
            else if (store)
                FX_N(chunk_stats)(x + j0, o + j0, n, FX_AUX_NONE, NULL, NULL, 0, 0, st + c);
            else
                FX_N(chunk_stats)(x + j0, NULL, n, FX_AUX_NONE, NULL, NULL, 0, 0, st + c);
        }
        fx_merged mg = fx_merge_chunks(st, nch);
        if (what == FX_OUT_LSE) {
            /* An infinite max is the answer (-inf: all -inf; +inf: a +inf is present),
               unless the row holds a NaN. A NaN reaches S (the max pass may drop it),
               but so does inf - inf when M = +inf: that rare case looks for a NaN. */
            double lse = mg.M + log(mg.S);
            if (isinf(mg.M) || isnan(lse)) {
                int has_nan = isnan(mg.S);
                if (mg.M == INFINITY) {
                    has_nan = 0;
                    for (int64_t j = 0; j < C; j++) has_nan |= x[j] != x[j];
                }
                lse = has_nan ? NAN : mg.M;
            }
            ((R *)outv)[r] = (R)lse;
        } else if (what == FX_OUT_ENTROPY) {
            ((R *)outv)[r] = (R)(log(mg.S) + fx_entropy_term(st, nch, &mg));
        } else if (what == FX_OUT_SOFTMAX) {
            fx_set_alphas(st, nch, &mg, 1.0);
            for (int64_t c = 0; c < nch; c++) {
                int64_t j0 = c * CHUNK, n = C - j0 < CHUNK ? C - j0 : CHUNK;
                FX_N(grad_pass)(o + j0, n, (R)st[c].alpha, 0, FX_AUX_NONE, NULL, NULL, 0, 0);
            }
        } else {                                    /* log_softmax: (x - M) - log S */
            R M = (R)mg.M, ls = (R)log(mg.S);       /* not M + log S: it would round */
            for (int64_t j = 0; j < C; j += VL) {
                int full = j + VL <= C;
                VR v = full ? FX_N(vload)(x + j) : FX_N(vload_part)(x + j, C - j, 0);
                VR o_v = (v - M) - ls;
                if (full) FX_N(vstore)(o + j, o_v);
                else FX_N(vstore_part)(o + j, o_v, C - j);
            }
        }
    }
    if (st != local) free(st);
}

/* ------------------------------------------------------------ sigmoid family */

/* the sign bit of every lane (vsplat(-0.0) would give +0.0: it adds to a zero vector) */
FN VI FX_N(vsignbits)(void) { return (VI)(((VU){0} + 1) << (8 * sizeof(R) - 1)); }

/* -|x| (the sign bit set; NaN stays NaN) */
FN VR FX_N(vneg_abs)(VR x) { return (VR)((VI)x | FX_N(vsignbits)()); }

/* The pieces of the sigmoid family from one exp and one log1p, e = exp(-|x|):
   l1p = log1p(e) = softplus(-|x|); small = e/(1+e) = sigmoid(-|x|), the smaller of
   sigmoid(x) and sigmoid(-x); big = 1/(1+e), the other one (never 1 - small, which
   would lose the tiny values). softplus(-x) = -log(sigmoid(x)) = max(-x, 0) + l1p. */
typedef struct { VI neg; VR l1p, small, big; } FX_N(sig_parts);

FN FX_N(sig_parts) FX_N(sigmoid_parts)(VR x)
{
    FX_N(sig_parts) P;
    VR e = FX_N(vexp_nonpos)(FX_N(vneg_abs)(x));
    P.neg = x < (VR){0};
    P.l1p = FX_N(vlog1p_unit)(e, &P.big);
    P.small = e * P.big;
    return P;
}

/* v where mask is set, -v elsewhere */
FN VR FX_N(vneg_unless)(VI mask, VR v) { return (VR)((VI)v ^ (~mask & FX_N(vsignbits)())); }

/* The elementwise losses, each as loss = coef x + rest (a zero coef times an infinite x
   counts 0: the loss's limit), with d loss/dx alongside (before weight and scale):
     FX_PW_BCE_LOGITS: (1-t) x + lw softplus(-x), lw = 1 + (pw-1) t, split by the sign
                       of x so that no term cancels (tiny losses and gradients keep their
                       relative accuracy; PyTorch's single formula does not):
                         x >= 0: coef = 1-t,    rest = lw l1p, grad = (1-t) - lw sigmoid(-x)
                         x <  0: coef = -pw t,  rest = lw l1p, grad = lw sigmoid(x) - pw t
     FX_PW_BCE_PROBS:  rest = -(t max(log x, -100) + (1-t) max(log1p(-x), -100)),
                       grad = (x - t) / max(x (1-x), eps)   (PyTorch's clamps)
     FX_PW_KL:         coef = -t,   rest = t log t (0 where t == 0),  grad = -t
     FX_PW_KL_LOGT:    coef = -e^t, rest = e^t t,                    grad = -e^t       */
FN void FX_N(pointwise)(int kind, VR x, VR t, VR pw, int has_pw, VR *coef, VR *rest, VR *grad)
{
    const R one = 1;
    VR zero = {0};
    if (kind == FX_PW_BCE_LOGITS) {
        FX_N(sig_parts) P = FX_N(sigmoid_parts)(x);
        VR lw = has_pw ? (pw - one) * t + one : FX_N(vsplat)(one);
        VR pwt = has_pw ? pw * t : t;
        /* without pos_weight: coef = [x >= 0] - t, no select needed */
        *coef = has_pw ? FX_N(vselect)(P.neg, -pwt, one - t)
                       : FX_N(vzero_unless)(~P.neg, FX_N(vsplat)(one)) - t;
        *rest = has_pw ? lw * P.l1p : P.l1p;
        /* x < 0: lw sigmoid(x) - pw t = coef + lw small;
           x >= 0: (1-t) - lw sigmoid(-x) = coef - lw small (one FMA) */
        VR ss = FX_N(vneg_unless)(P.neg, P.small);
        *grad = has_pw ? *coef + lw * ss : *coef + ss;
    } else if (kind == FX_PW_BCE_PROBS) {
        const VR floor = FX_N(vsplat)((R)-100);
        VR u = one - x;
        VR err = (one - u) - x;                 /* exact: log1p(-x) = log(u) - err/u */
        VR l0 = FX_N(vlog)(x), l1 = FX_N(vlog)(u) + err / u;
        l1 = FX_N(vselect)(u == zero, FX_N(vsplat)(-INFINITY), l1);
        l0 = FX_N(vmax)(l0, floor);             /* NaN-free here: x was checked in [0, 1] */
        l1 = FX_N(vmax)(l1, floor);
        *coef = zero;
        *rest = -(t * l0 + (one - t) * l1);
        VR den = x * u;
        den = FX_N(vmax)(den, FX_N(vsplat)((R)FX_BCE_GRAD_EPS));
        *grad = (x - t) / den;
    } else if (kind == FX_PW_KL) {
        *coef = -t;                              /* xlogy(t, t) - t x, as PyTorch */
        *rest = t * FX_N(vlog)(FX_N(vselect)(t == zero, FX_N(vsplat)(one), t));
        *grad = -t;
    } else {
        VR et = FX_N(vexp_any)(t);
        *coef = -et;
        *rest = et * t;
        *grad = -et;
    }
}

/* One vector of elements (n of them when !full): loss = coef x + rest and gradient,
   times the weight. */
FN void FX_N(pointwise_wvec)(int kind, int u8, int has_w, int has_pw, const R *xp,
                             const void *tp, const R *w, const R *pw, int full, int64_t n,
                             VR *x_out, VR *loss, VR *grad)
{
#define LOAD(p, pad) (full ? FX_N(vload)(p) : FX_N(vload_part)((p), n, (pad)))
    VR x = LOAD(xp, (R)0.5);
    VR t = u8 ? (full ? FX_N(vload_u8)((const uint8_t *)tp) : FX_N(vload_u8_part)((const uint8_t *)tp, n))
              : LOAD((const R *)tp, 0);
    VR pwv = has_pw ? LOAD(pw, 0) : (VR){0};
    VR coef, rest, zero = {0};
    FX_N(pointwise)(kind, x, t, pwv, has_pw, &coef, &rest, grad);
    *loss = FX_N(vzero_unless)(coef != zero, coef * x) + rest;
    if (has_w) {
        VR wv = LOAD(w, 0);
        *loss = *loss * wv;
        *grad = *grad * wv;
    }
#undef LOAD
    if (!full) *loss = FX_N(vzero_unless)(FX_N(vlive)(n), *loss);
    *x_out = x;
}

/* Cold path: a vector whose loss holds an inf or NaN, summed again in extended
   precision. An element whose own loss overflows the dtype (coef x beyond it, e.g.
   2.3 * -3e38 in float32) is inf in "none", but the float64 sum must see its value. */
static __attribute__((noinline, cold)) FX_TARGET_ATTR double
FX_N(pointwise_vec_wide)(int kind, int u8, int has_w, int has_pw, const R *xp, const void *tp,
                         const R *w, const R *pw, int64_t n)
{
    long double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        /* one element at a time through the same formula (in lane 0): its coef and rest
           are finite where its loss overflowed, so recombine them wider */
        R xs[VL], ts[VL], pws[VL];
        for (int l = 0; l < VL; l++) { xs[l] = 0.5; ts[l] = 0; pws[l] = 1; }
        xs[0] = xp[i];
        ts[0] = u8 ? (R)((const uint8_t *)tp)[i] : ((const R *)tp)[i];
        if (has_pw) pws[0] = pw[i];
        VR coef, rest, grad;
        FX_N(pointwise)(kind, FX_N(vload)(xs), FX_N(vload)(ts), FX_N(vload)(pws), has_pw,
                        &coef, &rest, &grad);
        long double lin = coef[0] != 0 ? (long double)coef[0] * xs[0] : 0;
        sum += (lin + rest[0]) * (has_w ? (long double)w[i] : 1);
    }
    return (double)sum;
}

/* One vector: gradient and per-element loss out, the loss added to the lane sums
   *part. `checked` (the gradient overwrites the input, so nothing could be redone
   later): a vector with a loss that is inf or NaN, or so big that FX_FOLD_ELEMS / VL
   of them could overflow a lane sum, is summed wide now, into acc->spill. Otherwise
   the same additions as unchecked, so writing in place gives the same bits unless a
   loss is beyond that bound (1e37 to 2e37 in float32, by ISA), which unchecked sums
   in the lanes. (Testing every vector unchecked too made BCE 25-30% slower: a call
   on the cold path costs the loop its vector constants in registers.) */
FN void FX_N(pointwise_vec)(VR *part, FX_N(acc64) *acc, int checked, int kind, int u8,
                            int has_w, int has_pw, const R *xp, const void *tp, const R *w,
                            const R *pw, R *gp, R *lp, R scale, int full, int64_t n)
{
    VR x, loss, grad;
    FX_N(pointwise_wvec)(kind, u8, has_w, has_pw, xp, tp, w, pw, full, n, &x, &loss, &grad);
    const R lim = (FX_IS_F32 ? FLT_MAX : DBL_MAX) / (R)(FX_FOLD_ELEMS / VL);
    VR mag = (VR)((VI)loss & ~FX_N(vsignbits)());
    if (checked && __builtin_expect(FX_N(vany)(~(mag <= lim)), 0))
        acc->spill += FX_N(pointwise_vec_wide)(kind, u8, has_w, has_pw, xp, tp, w, pw, n);
    else
        *part += loss;
    if (lp) {
        if (full) FX_N(vstore)(lp, loss);
        else FX_N(vstore_part)(lp, loss, n);
    }
    if (gp) {   /* after the cold path, which may read xp again: gp may alias it */
        if (full) FX_N(vstore)(gp, grad * scale);
        else FX_N(vstore_part)(gp, grad * scale, n);
    }
}

/* Elements per segment of the elementwise loop when no per-column weight has to line
   up with the rows: the unit that is summed again, wide, if it holds an inf or NaN. */
#define FX_PW_SEG 4096

/* Elements [i0, i1) in segments: rows when a weight or pos_weight is per column (so it
   loads as plain vectors), else FX_PW_SEG elements. Losses are summed in float32 lanes
   for FX_FOLD_ELEMS / VL vectors at a time, then in float64. A segment whose sum is not
   finite (an inf or NaN loss, or a float32 lane sum that overflowed) is summed again
   from its inputs, wide (pointwise_vec_wide): cheaper than testing every vector, but it
   needs the inputs intact, so a gradient written over the input (checked = 1) tests
   each vector instead. */
FN double FX_N(pointwise_loop)(const fx_elem_args *A, int64_t i0, int64_t i1, int kind,
                               int u8, int has_w, int has_pw, int checked)
{
    const int64_t cols = A->cols;
    const R scale = (R)A->grad_scale;
    const R *X = (const R *)A->x;
    const char *T = (const char *)A->target;
    const size_t tsize = u8 ? 1 : sizeof(R);
    R *G = (R *)A->grad, *L = (R *)A->elem_loss;
    const int w_col = has_w && A->weight_per_col, pw_col = has_pw && A->pos_weight_per_col;
    double total = 0.0;
    int64_t i = i0;
    while (i < i1) {
        int64_t col = i % cols;
        int64_t end = w_col || pw_col ? i + (cols - col) : i + FX_PW_SEG;
        if (end > i1) end = i1;
        const R *w = has_w ? (const R *)A->weight + (w_col ? col : i) : NULL;
        const R *pw = has_pw ? (const R *)A->pos_weight + (pw_col ? col : i) : NULL;
        FX_N(acc64) acc = {{0}, {0}, 0.0};
        VR part = {0};
        int64_t k = 0, len = end - i, nv = 0;
        for (; k + VL <= len; k += VL) {
            FX_N(pointwise_vec)(&part, &acc, checked, kind, u8, has_w, has_pw, X + i + k,
                                T + (i + k) * tsize, has_w ? w + k : NULL, has_pw ? pw + k : NULL,
                                G ? G + i + k : NULL, L ? L + i + k : NULL, scale, 1, VL);
            if (++nv == FX_FOLD_ELEMS / VL) {
                FX_N(acc_f64)(&acc, part);
                part = (VR){0};
                nv = 0;
            }
        }
        if (k < len)
            FX_N(pointwise_vec)(&part, &acc, checked, kind, u8, has_w, has_pw, X + i + k,
                                T + (i + k) * tsize, has_w ? w + k : NULL, has_pw ? pw + k : NULL,
                                G ? G + i + k : NULL, L ? L + i + k : NULL, scale, 0, len - k);
        FX_N(acc_f64)(&acc, part);
        double seg = FX_N(acc_sum)(&acc);
        if (!checked && __builtin_expect(!isfinite(seg), 0))
            seg = FX_N(pointwise_vec_wide)(kind, u8, has_w, has_pw, X + i, T + i * tsize,
                                           w, pw, len);
        total += seg;
        i = end;
    }
    return total;
}

/* One loop per (kind, target type, weight, pos_weight, in place) combination, each
   with its options fixed at compile time. */
FN double FX_N(pointwise_kinds)(const fx_elem_args *A, int64_t i0, int64_t i1, int checked)
{
    const int u8 = A->target_u8, w = A->weight != NULL, pw = A->pos_weight != NULL;
#define FX_PW_CASE(KIND)                                                                     \
    if (u8) return w ? FX_N(pointwise_loop)(A, i0, i1, KIND, 1, 1, 0, checked)               \
                     : FX_N(pointwise_loop)(A, i0, i1, KIND, 1, 0, 0, checked);              \
    return w ? FX_N(pointwise_loop)(A, i0, i1, KIND, 0, 1, 0, checked)                       \
             : FX_N(pointwise_loop)(A, i0, i1, KIND, 0, 0, 0, checked);
    switch (A->kind) {
    case FX_PW_BCE_LOGITS:
        if (pw) {
            if (u8) return w ? FX_N(pointwise_loop)(A, i0, i1, FX_PW_BCE_LOGITS, 1, 1, 1, checked)
                             : FX_N(pointwise_loop)(A, i0, i1, FX_PW_BCE_LOGITS, 1, 0, 1, checked);
            return w ? FX_N(pointwise_loop)(A, i0, i1, FX_PW_BCE_LOGITS, 0, 1, 1, checked)
                     : FX_N(pointwise_loop)(A, i0, i1, FX_PW_BCE_LOGITS, 0, 0, 1, checked);
        }
        FX_PW_CASE(FX_PW_BCE_LOGITS)
    case FX_PW_BCE_PROBS:
        FX_PW_CASE(FX_PW_BCE_PROBS)
    case FX_PW_KL:
        return w ? FX_N(pointwise_loop)(A, i0, i1, FX_PW_KL, 0, 1, 0, checked)
                 : FX_N(pointwise_loop)(A, i0, i1, FX_PW_KL, 0, 0, 0, checked);
    default:
        return w ? FX_N(pointwise_loop)(A, i0, i1, FX_PW_KL_LOGT, 0, 1, 0, checked)
                 : FX_N(pointwise_loop)(A, i0, i1, FX_PW_KL_LOGT, 0, 0, 0, checked);
    }
#undef FX_PW_CASE
}

KERNEL double FX_N(pointwise_range)(const fx_elem_args *A, int64_t i0, int64_t i1)
{
    /* a gradient written over the input (or the target) destroys what a redo needs */
    int in_place = A->grad && (A->grad == A->x || A->grad == A->target);
    return in_place ? FX_N(pointwise_kinds)(A, i0, i1, 1) : FX_N(pointwise_kinds)(A, i0, i1, 0);
}

KERNEL void FX_N(sigmoid_range)(const void *xv, void *outv, int64_t i0, int64_t i1, int what)
{
    for (int64_t i = i0; i < i1; i += VL) {
        int full = i + VL <= i1;
        int64_t n = full ? VL : i1 - i;
        VR x = full ? FX_N(vload)((const R *)xv + i) : FX_N(vload_part)((const R *)xv + i, n, 0);
        FX_N(sig_parts) P = FX_N(sigmoid_parts)(x);
        /* log sigmoid(x) = -(max(-x, 0) + l1p) */
        VR o = what == FX_OUT_SIGMOID ? FX_N(vselect)(P.neg, P.small, P.big)
                                      : -(FX_N(vzero_unless)(P.neg, -x) + P.l1p);
        if (full) FX_N(vstore)((R *)outv + i, o);
        else FX_N(vstore_part)((R *)outv + i, o, n);
    }
}

/* Test hook: the raw point functions over an array (what: 0 exp_nonpos, 1 log1p_unit),
   so that tests can bound their error in ulps against float64. */
KERNEL void FX_N(vecmath_range)(const void *xv, void *outv, int64_t n, int what)
{
    for (int64_t i = 0; i < n; i += VL) {
        int full = i + VL <= n;
        int64_t k = full ? VL : n - i;
        VR x = full ? FX_N(vload)((const R *)xv + i) : FX_N(vload_part)((const R *)xv + i, k, 0);
        VR o, inv;
        o = what == 0 ? FX_N(vexp_nonpos)(x) : what == 1 ? FX_N(vlog1p_unit)(x, &inv) : FX_N(vlog)(x);
        if (full) FX_N(vstore)((R *)outv + i, o);
        else FX_N(vstore_part)((R *)outv + i, o, k);
    }
}

static const fx_table FX_CAT(FX_CAT(fx_tab, FX_PREC), FX_ISA) = {
    FX_STR(FX_ISA),
    FX_COL_VECS * VL,
    FX_N(ce_rows), FX_N(ce_phase1), FX_N(ce_phase2), FX_N(ce_phase3), FX_N(ce_cols),
    FX_N(norm_rows), FX_N(pointwise_range), FX_N(sigmoid_range),
    FX_N(vecmath_range),
};

#undef FX_N
#undef VL
#undef VR
#undef VI
#undef VU
#undef VB
#undef R
#undef FN
#undef KERNEL
#undef FX_FOLD_ELEMS
#undef CHUNK
#undef FX_SQRT2
#undef FX_LN2
