/*
 * Vector math over the SIMD layer (fx_simd.h): exp for x <= 0, log, log1p on [0, 1],
 * each to a bound measured in tests/test_vecmath.py. No intrinsics here: what differs
 * by ISA (the reciprocal, AVX-512's round and scale) comes from the SIMD layer.
 */
#ifndef FX_VECMATH_H
#define FX_VECMATH_H

#include "fx_simd.h"


/* exp(x) for x <= 0 (NaN passes through; exp(-inf) == 0 exactly). With N = 2^TB table
   entries: x = (N m + j) ln2/N + r, |r| <= ln2/(2N), and
       exp(x) = 2^m 2^(j/N) (1 + r q(r)),
   2^m 2^(j/N) built in the exponent bits from a table entry (vlookup16) and the low
   bits of the rounding constant. float32 where a lookup is one or two permutes
   (FX_HAS_LOOKUP16): N = 16 and q of degree 2 (tools/fit_exp_poly.py: 1.7e-9
   relative); elsewhere N = 1: q of degree 5 in float32 (1.7e-8), the degree-12 Taylor
   polynomial in float64 (truncation < 5e-18). The table saves 3 of the float32
   polynomial's 6 multiply-adds for a lookup, which runs beside them on other ports:
   1.26x (AVX-512) and 1.32x (AVX2) the exps per second, in L1 on a Zen 5. The ulp bound
   is tested in tests/test_vecmath.py; over every float32 in [log(2^-126), 0] the error
   is at most 1.00 ulp (tools/check_exp_ulp.py). */
#if FX_F32 && FX_HAS_LOOKUP16
#define FX_EXP_TABLE_BITS 4
#else
#define FX_EXP_TABLE_BITS 0
#endif

/* The exp functions work on k <= FX_EXP_MAX_K vectors at once, each step applied to all k
   before the next: one exp is a chain of about 10 dependent operations, and k independent
   chains side by side keep the floating-point pipes busy (one at a time, latency rather
   than arithmetic bounds the loops). The compiler keeps the written order. */
#define FX_EXP_MAX_K 4
#define EACH for (int u = 0; u < k; u++)

/* q(r) with exp(r) = 1 + r q(r) on |r| <= ln2/(2N) */
FN void vexp_poly_k(const VR *r, VR *q, int k)
{
#if FX_F32 && FX_EXP_TABLE_BITS == 4
    EACH q[u] = r[u] * 0.16666722297668457f + 0.5000168085098267f;
#elif FX_F32
    EACH q[u] = vsplat(0.0013843636261299253f);
    EACH q[u] = q[u] * r[u] + 0.008374153636395931f;
    EACH q[u] = q[u] * r[u] + 0.04166800156235695f;
    EACH q[u] = q[u] * r[u] + 0.16666431725025177f;
    EACH q[u] = q[u] * r[u] + 0.4999999403953552f;
#else
    EACH q[u] = vsplat(1.0 / 6227020800.0);   /* 1/13! */
    EACH q[u] = q[u] * r[u] + 1.0 / 479001600.0;
    EACH q[u] = q[u] * r[u] + 1.0 / 39916800.0;
    EACH q[u] = q[u] * r[u] + 1.0 / 3628800.0;
    EACH q[u] = q[u] * r[u] + 1.0 / 362880.0;
    EACH q[u] = q[u] * r[u] + 1.0 / 40320.0;
    EACH q[u] = q[u] * r[u] + 1.0 / 5040.0;
    EACH q[u] = q[u] * r[u] + 1.0 / 720.0;
    EACH q[u] = q[u] * r[u] + 1.0 / 120.0;
    EACH q[u] = q[u] * r[u] + 1.0 / 24.0;
    EACH q[u] = q[u] * r[u] + 1.0 / 6.0;
    EACH q[u] = q[u] * r[u] + 0.5;
#endif
    EACH q[u] = q[u] * r[u] + (R)1;
}

#if FX_F32
#define FX_LOG2E 1.44269504088896341f
#define FX_LN2HI 0.693359375f              /* ln2 in 9 bits: n * FX_LN2HI is exact */
#define FX_LN2LO -2.12194440e-4f
#else
#define FX_LOG2E 1.4426950408889634
#define FX_LN2HI 6.93147180369123816490e-01
#define FX_LN2LO 1.90821492927058770002e-10
#endif

#if FX_EXP_TABLE_BITS == 4
/* the bits of 2^(j/16) rounded to float32, less j << 19 (what the low bits of n add
   when they are shifted into place: vexp_scaled_k) */
#define FX_EXP_T(j, bits) ((int32_t)(bits) - ((j) << 19))
static const int32_t fx_exp_table[16] __attribute__((aligned(64))) = {
    FX_EXP_T(0, 0x3f800000), FX_EXP_T(1, 0x3f85aac3), FX_EXP_T(2, 0x3f8b95c2),
    FX_EXP_T(3, 0x3f91c3d3), FX_EXP_T(4, 0x3f9837f0), FX_EXP_T(5, 0x3f9ef532),
    FX_EXP_T(6, 0x3fa5fed7), FX_EXP_T(7, 0x3fad583f), FX_EXP_T(8, 0x3fb504f3),
    FX_EXP_T(9, 0x3fbd08a4), FX_EXP_T(10, 0x3fc5672a), FX_EXP_T(11, 0x3fce248c),
    FX_EXP_T(12, 0x3fd744fd), FX_EXP_T(13, 0x3fe0ccdf), FX_EXP_T(14, 0x3feac0c7),
    FX_EXP_T(15, 0x3ff5257d),
};
#undef FX_EXP_T
#endif

/* x[u] <- exp(x[u]) 2^up, for x where that is a normal number (or NaN). */
FN void vexp_scaled_k(VR *x, int k, int up)
{
    enum { TB = FX_EXP_TABLE_BITS };
#if FX_F32
    const R shifter = 12582912.0f;              /* 1.5 * 2^23 */
    const int mbits = 23;
#else
    const R shifter = 6755399441055744.0;       /* 1.5 * 2^52 */
    const int mbits = 52;
#endif
    VR t[FX_EXP_MAX_K], n[FX_EXP_MAX_K], r[FX_EXP_MAX_K], q[FX_EXP_MAX_K];
    EACH t[u] = x[u] * (FX_LOG2E * (1 << TB)) + shifter;   /* n = round(x N/ln2) sits in t's low bits */
    EACH n[u] = t[u] - shifter;
    EACH r[u] = x[u] - n[u] * (FX_LN2HI / (1 << TB));
    EACH r[u] = r[u] - n[u] * (FX_LN2LO / (1 << TB));
    vexp_poly_k(r, q, k);
    EACH {
        /* n = N m + j shifted so that m lands in the exponent: 2^m 2^(j/N) 2^up */
        VI bits = (VI)(((VU)t[u] << (mbits - TB)) + ((VU){0} + ((__typeof__(bits[0]))up << mbits)));
#if FX_EXP_TABLE_BITS
        bits += vlookup16(fx_exp_table, (VI)t[u]);     /* its entries hold 1.0's bits */
#else
        bits += (VI)((VU){0} + (__typeof__(((VU){0})[0]))(FX_F32 ? 0x3f800000ull
                                                                 : 0x3ff0000000000000ull));
#endif
        VR s = (VR)bits;
#if FX_EXP_TABLE_BITS
        x[u] = s * (r[u] * q[u]) + s;      /* s r alone could be subnormal (x near lo) */
#else
        x[u] = s * (r[u] * q[u] + (R)1);   /* s = 2^m: the one rounding is 1 + r q's */
#endif
    }
}

/* Lanes below lo have results under the smallest normal number, which the exponent
   bits cannot hold: where some lane of the k vectors is that small, they are made as
   exp(x) 2^64, then scaled by 2^-64, rounded into the subnormal range (or to 0: x is
   clamped at lo0, where that rounds to 0; -inf too), or, where no lane lies in the
   subnormal range itself (lo0 <= x < lo), set to 0 by a mask: a -inf pad of a row's last
   vector, a masked class, without the multiplies whose results under the smallest normal
   cost a microcode assist each on some CPUs (AMD Zen). */
FN void vexp_nonpos_k(VR *x, int k)
{
#if FX_F32
    const R lo = -87.33654475f;                 /* log(2^-126): the smallest normal */
    const R lo0 = -104.0f;                      /* exp rounds to 0 below this */
    const R down = 5.42101086e-20f;             /* 2^-64 */
#else
    const R lo = -708.3964185322641;            /* log(2^-1022) */
    const R lo0 = -745.2;                       /* exp rounds to 0 below this */
    const R down = 5.421010862427522e-20;       /* 2^-64 */
#endif
    if (__builtin_expect(!vany_lt_k(x, k, lo), 1)) {
        vexp_scaled_k(x, k, 0);
        return;
    }
    VI under[FX_EXP_MAX_K], any_subnormal = {0};
    EACH under[u] = x[u] < lo;
    EACH any_subnormal |= under[u] & (x[u] >= lo0);
    EACH x[u] = vselect(x[u] < lo0, vsplat(lo0), x[u]);
    if (!vany(any_subnormal)) {
        vexp_scaled_k(x, k, 0);
        EACH x[u] = vzero_unless(~under[u], x[u]);
    } else {
        /* the normal lanes as in the other paths, so that a lane's bits never depend on
           its neighbours' */
        VR tiny[FX_EXP_MAX_K];
        EACH tiny[u] = x[u];
        vexp_scaled_k(tiny, k, 64);
        vexp_scaled_k(x, k, 0);
        EACH x[u] = vselect(under[u], tiny[u] * down, x[u]);
    }
}
#undef EACH

FN VR vexp_nonpos(VR x)
{
    vexp_nonpos_k(&x, 1);
    return x;
}
#undef FX_LOG2E
#undef FX_LN2HI
#undef FX_LN2LO

/* log(f) for f in [1/sqrt2, sqrt2]: 2 atanh(z), z = (f-1)/(f+1), |z| <= 0.1716, by the
   odd series 2z (1 + z^2/3 + z^4/5 + ...), truncated after z^10/11 in float32
   (< 3e-9 relative) and z^20/21 in float64 (< 1e-18). */
FN VR vlog_reduced(VR f)
{
    const R one = 1;
    VR z = (f - one) * vrecip(f + one);
    VR z2 = z * z;
#if FX_F32
    VR q = vsplat((R)(1.0 / 11));
    q = q * z2 + (R)(1.0 / 9);
    q = q * z2 + (R)(1.0 / 7);
#else
    VR q = vsplat(1.0 / 21);
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

/* log(1 + e) for e in [0, 1] (or NaN) of k <= FX_EXP_MAX_K vectors at once (as the exps:
   the polynomial is one long chain); also returns 1/(1+e) through recip, which the
   sigmoid needs anyway. u = fl(1+e) = 2^k (1 + f) with k in {0, 1}, so f = u - 1 or
   u/2 - 1 (both exact) lies in [sqrt(1/2) - 1, sqrt(2) - 1], and
       log1p(e) = k ln2 + log1p(f) + (e - (u-1))/u,
   the last term putting back what rounding u lost (e - (u-1) is exact: Fast2Sum).
   float32: log1p(f) = f + f^2 q(f), q a degree-8 fit (tools/fit_log1p_poly.py: 5e-9
   relative), no division. float64: 2 atanh(f / (2 + f)) through vlog_reduced. */
#define EACH for (int i = 0; i < k; i++)
FN void vlog1p_unit_k(const VR *e, VR *recip, VR *out, int k)
{
    const R one = 1;
    VR u[FX_EXP_MAX_K], inv[FX_EXP_MAX_K], err[FX_EXP_MAX_K], kln2[FX_EXP_MAX_K];
    VI big[FX_EXP_MAX_K];
    EACH u[i] = e[i] + one;
    EACH inv[i] = vrecip(u[i]);
    EACH err[i] = e[i] - (u[i] - one);
    EACH big[i] = u[i] > FX_SQRT2;
    EACH kln2[i] = vzero_unless(big[i], vsplat(FX_LN2));
    EACH recip[i] = inv[i];
#if FX_F32
    /* f = u/2 - 1 = um1 - u/2 where big (exact, one rounding), else um1 */
    VR f[FX_EXP_MAX_K], q[FX_EXP_MAX_K];
    EACH f[i] = vfma_neg(u[i], vzero_unless(big[i], vsplat(0.5f)), u[i] - one);
    EACH q[i] = vsplat(-0.076218381524086f);
    EACH q[i] = q[i] * f[i] + 0.12904483079910278f;
    EACH q[i] = q[i] * f[i] - 0.13242988288402557f;
    EACH q[i] = q[i] * f[i] + 0.14181816577911377f;
    EACH q[i] = q[i] * f[i] - 0.16609081625938416f;
    EACH q[i] = q[i] * f[i] + 0.2000197470188141f;
    EACH q[i] = q[i] * f[i] - 0.25001582503318787f;
    EACH q[i] = q[i] * f[i] + 0.33333325386047363f;
    EACH q[i] = q[i] * f[i] - 0.49999988079071045f;
    EACH out[i] = (f[i] + (f[i] * f[i]) * q[i]) + (kln2[i] + err[i] * inv[i]);
#else
    EACH out[i] = kln2[i] + vlog_reduced(vselect(big[i], u[i] * 0.5, u[i])) + err[i] * inv[i];
#endif
}
#undef EACH

FN VR vlog1p_unit(VR e, VR *recip)
{
    VR out;
    vlog1p_unit_k(&e, recip, &out, 1);
    return out;
}

/* log(x) for any x: x = 2^k f with f in [1/sqrt2, sqrt2) from the exponent bits
   (subnormals scaled up first); log(0) = -inf, log(inf) = inf, log(<0) = log(NaN) = NaN.
   k ln2 is added in two parts so that it stays exact. */
FN VR vlog(VR x)
{
#if FX_F32
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
    VR xs = vselect(sub, x * up, x);
    VI bits = (VI)xs;
    VI k = ((bits >> mbits) & (VI)((VI){0} + 0x7ff)) - ebias;
    k = k - (sub & ((VI){0} + mbits));
    VR f = (VR)((bits & mant) | onebits);                  /* [1, 2) */
    VI big = f > FX_SQRT2;
    f = vselect(big, f * (R)0.5, f);
    k = k - big;                                           /* big is -1 where set */
    VR kr = __builtin_convertvector(k, VR);
    VR r = kr * ln2hi + (kr * ln2lo + vlog_reduced(f));
    r = vselect(x == zero, vsplat(-INFINITY), r);
    r = vselect(x == vsplat(INFINITY), x, r);
    return vselect((x < zero) | (x != x), vsplat(NAN), r);
}

/* log S for the float64 halves S[h] of a vector of sums, through one vlog in R: log of
   S rounded to R, plus the first-order term of what that rounding lost, log(S / s) ~
   (S - s) / s. Where S is near 1 (a confident item: S = 1 + 1e-4), S rounded to float32
   alone would cost log S a relative 1e-3; with the term it keeps R's accuracy. */
FN void vlog_halves(const VD *S, VD *log_s)
{
    VR s = vr_of_halves(S), ls = vlog(s);
    for (int h = 0; h < FX_HALVES; h++) {
        VD sd = vd_half(s, h);
        log_s[h] = vd_half(ls, h) + vdzero_unless(S[h] != sd, (S[h] - sd) / sd);
    }
}

/* exp(x) for any x: the vector exp below 0, libm for the (rare) positive lanes. */
FN VR vexp_any(VR x)
{
    VI pos = x > (R)0;
    VR r = vexp_nonpos(vselect(pos, (VR){0}, x));
    for (int i = 0; i < VL; i++)
        if (pos[i]) r[i] = (R)exp((double)x[i]);
    return r;
}

#endif /* FX_VECMATH_H */
