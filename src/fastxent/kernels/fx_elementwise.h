/*
 * The elementwise family: the sigmoid losses (binary_cross_entropy_with_logits,
 * binary_cross_entropy), kl_div, and the sigmoid building blocks. Each loss is written
 * once as loss = coef x + rest with its gradient (elementwise_terms); the loop around
 * it (elementwise_loop) sums the losses exactly, and is instantiated per declared
 * variant (fx_variants.h).
 */
#ifndef FX_ELEMENTWISE_H
#define FX_ELEMENTWISE_H

#include "fx_vecmath.h"
#include "fx_variants.h"

/* PyTorch's binary_cross_entropy gradient clamp, EPSILON = 1e-12 declared as float */
#define FX_BCE_GRAD_EPS 9.999999960041972e-13

/* The pieces of the sigmoid family from one exp and one log1p, e = exp(-|x|):
   l1p = log1p(e) = softplus(-|x|); small = e/(1+e) = sigmoid(-|x|), the smaller of
   sigmoid(x) and sigmoid(-x); big = 1/(1+e), the other one (never 1 - small, which
   would lose the tiny values). softplus(-x) = -log(sigmoid(x)) = max(-x, 0) + l1p. */
typedef struct { VI neg; VR l1p, small, big; } sig_parts;

FN sig_parts sigmoid_parts(VR x)
{
    sig_parts P;
    VR e = vexp_nonpos(vneg_abs(x));
    P.neg = x < (VR){0};
    P.l1p = vlog1p_unit(e, &P.big);
    P.small = e * P.big;
    return P;
}

/* The elementwise losses, each as loss = coef x + rest (a zero coef times an infinite x
   counts 0: the loss's limit), with d loss/dx alongside (before weight and scale):
     FX_BCE_LOGITS:    (1-t) x + lw softplus(-x), lw = 1 + (pw-1) t, split by the sign
                       of x so that no term cancels (tiny losses and gradients keep their
                       relative accuracy; PyTorch's single formula does not):
                         x >= 0: coef = 1-t,    rest = lw l1p, grad = (1-t) - lw sigmoid(-x)
                         x <  0: coef = -pw t,  rest = lw l1p, grad = lw sigmoid(x) - pw t
     FX_BCE_PROBS:     rest = -(t max(log x, -100) + (1-t) max(log1p(-x), -100)),
                       grad = (x - t) / max(x (1-x), eps)   (PyTorch's clamps)
     FX_KL:            coef = -t,   rest = t log t (0 where t == 0),  grad = -t
     FX_KL_LOG_TARGET: coef = -e^t, rest = e^t t (0 where e^t == 0),  grad = -e^t      */
FN void elementwise_terms(int kind, VR x, VR t, VR pw, int has_pw, VR *coef, VR *rest,
                          VR *grad)
{
    const R one = 1;
    VR zero = {0};
    if (kind == FX_BCE_LOGITS) {
        sig_parts P = sigmoid_parts(x);
        VR lw = has_pw ? (pw - one) * t + one : vsplat(one);
        VR pwt = has_pw ? pw * t : t;
        /* without pos_weight: coef = [x >= 0] - t, no select needed */
        *coef = has_pw ? vselect(P.neg, -pwt, one - t)
                       : vzero_unless(~P.neg, vsplat(one)) - t;
        *rest = has_pw ? lw * P.l1p : P.l1p;
        /* x < 0: lw sigmoid(x) - pw t = coef + lw small;
           x >= 0: (1-t) - lw sigmoid(-x) = coef - lw small (one FMA) */
        VR ss = vneg_unless(P.neg, P.small);
        *grad = has_pw ? *coef + lw * ss : *coef + ss;
    } else if (kind == FX_BCE_PROBS) {
        const VR floor = vsplat((R)-100);
        VR u = one - x;
        VR err = (one - u) - x;                 /* exact: log1p(-x) = log(u) - err/u */
        VR l0 = vlog(x), l1 = vlog(u) + err / u;
        l1 = vselect(u == zero, vsplat(-INFINITY), l1);
        l0 = vmax(l0, floor);             /* NaN-free here: x was checked in [0, 1] */
        l1 = vmax(l1, floor);
        *coef = zero;
        *rest = -(t * l0 + (one - t) * l1);
        VR den = x * u;
        den = vmax(den, vsplat((R)FX_BCE_GRAD_EPS));
        *grad = (x - t) / den;
    } else if (kind == FX_KL) {
        *coef = -t;                              /* xlogy(t, t) - t x, as PyTorch */
        *rest = t * vlog(vselect(t == zero, vsplat(one), t));
        *grad = -t;
    } else {
        VR et = vexp_any(t);
        *coef = -et;
        /* p = 0 (t = -inf) contributes 0; the product is kept a product (not masked
           after it), so that it still fuses with coef x as before */
        *rest = et * vzero_unless(et != zero, t);
        *grad = -et;
    }
}

/* One vector of elements (n of them when !full): loss = coef x + rest and gradient,
   times the weight. */
FN void elementwise_vec_terms(int kind, int u8, int has_w, int has_pw, const T *xp,
                              const void *tp, const R *w, const R *pw, int full,
                              int64_t n, VR *x_out, VR *loss, VR *grad)
{
#define LOAD(p, pad) (full ? vload(p) : vload_part((p), n, (pad)))
#define LOAD_T(p, pad) (full ? vload_t(p) : vload_t_part((p), n, (pad)))
    VR x = LOAD_T(xp, (R)0.5);
    VR t = u8 ? (full ? vload_u8((const uint8_t *)tp) : vload_u8_part((const uint8_t *)tp, n))
              : LOAD_T((const T *)tp, 0);
    VR pwv = has_pw ? LOAD(pw, 0) : (VR){0};
    VR coef, rest, zero = {0};
    elementwise_terms(kind, x, t, pwv, has_pw, &coef, &rest, grad);
    *loss = vzero_unless(coef != zero, coef * x) + rest;
    if (has_w) {
        VR wv = LOAD(w, 0);
        *loss = *loss * wv;
        *grad = *grad * wv;
    }
#undef LOAD
#undef LOAD_T
    if (!full) *loss = vzero_unless(vlive(n), *loss);
    *x_out = x;
}

/* Cold path: a vector whose loss holds an inf or NaN, summed again in extended
   precision. An element whose own loss overflows the dtype (coef x beyond it, e.g.
   2.3 * -3e38 in float32) is inf in "none", but the float64 sum must see its value. */
static __attribute__((noinline, cold)) FX_TARGET_ATTR double
elementwise_sum_wide(int kind, int u8, int has_w, int has_pw, const T *xp, const void *tp,
                     const R *w, const R *pw, int64_t n)
{
    long double sum = 0;
    for (int64_t i = 0; i < n; i++) {
        /* one element at a time through the same formula (in lane 0): its coef and rest
           are finite where its loss overflowed, so recombine them wider */
        R xs[VL], ts[VL], pws[VL];
        for (int l = 0; l < VL; l++) { xs[l] = 0.5; ts[l] = 0; pws[l] = 1; }
        xs[0] = load_t(xp + i);
        ts[0] = u8 ? (R)((const uint8_t *)tp)[i] : load_t((const T *)tp + i);
        if (has_pw) pws[0] = pw[i];
        VR coef, rest, grad;
        elementwise_terms(kind, vload(xs), vload(ts), vload(pws), has_pw, &coef, &rest, &grad);
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
FN void elementwise_vec(VR *part, acc64 *acc, int checked, int kind, int u8,
                        int has_w, int has_pw, const T *xp, const void *tp, const R *w,
                        const R *pw, T *gp, R *lp, R scale, int full, int64_t n)
{
    VR x, loss, grad;
    elementwise_vec_terms(kind, u8, has_w, has_pw, xp, tp, w, pw, full, n, &x, &loss, &grad);
    const R lim = (FX_F32 ? FLT_MAX : DBL_MAX) / (R)(FX_FOLD_ELEMS / VL);
    VR mag = (VR)((VI)loss & ~vsignbits());
    if (checked && __builtin_expect(vany(~(mag <= lim)), 0))
        acc->spill += elementwise_sum_wide(kind, u8, has_w, has_pw, xp, tp, w, pw, n);
    else
        *part += loss;
    if (lp) {
        if (full) vstore(lp, loss);
        else vstore_part(lp, loss, n);
    }
    if (gp) {   /* after the cold path, which may read xp again: gp may alias it */
        if (full) vstore_t(gp, grad * scale);
        else vstore_t_part(gp, grad * scale, n);
    }
}

/* Elements per segment of the elementwise loop when no per-column weight has to line
   up with the rows: the unit that is summed again, wide, if it holds an inf or NaN. */
#define FX_ELEMENTWISE_SEG 4096

/* Elements [i0, i1) in segments: rows when a weight or pos_weight is per column (so it
   loads as plain vectors), else FX_ELEMENTWISE_SEG elements. Losses are summed in float32 lanes
   for FX_FOLD_ELEMS / VL vectors at a time, then in float64. A segment whose sum is not
   finite (an inf or NaN loss, or a float32 lane sum that overflowed) is summed again
   from its inputs, wide (elementwise_sum_wide): cheaper than testing every vector, but it
   needs the inputs intact, so a gradient written over the input (checked = 1) tests
   each vector instead. */
FN double elementwise_loop(const fx_elementwise_args *A, int64_t i0, int64_t i1, int kind,
                           int u8, int has_w, int has_pw, int checked)
{
    const int64_t cols = A->cols;
    const R scale = (R)A->grad_scale;
    const T *X = (const T *)A->x;
    const char *TG = (const char *)A->target;
    const size_t tsize = u8 ? 1 : sizeof(T);
    T *G = (T *)A->grad;
    R *L = (R *)A->item_loss;
    const int w_col = has_w && A->weight_per_col, pw_col = has_pw && A->pos_weight_per_col;
    double total = 0.0;
    int64_t i = i0;
    while (i < i1) {
        int64_t col = i % cols;
        int64_t end = w_col || pw_col ? i + (cols - col) : i + FX_ELEMENTWISE_SEG;
        if (end > i1) end = i1;
        const R *w = has_w ? (const R *)A->weight + (w_col ? col : i) : NULL;
        const R *pw = has_pw ? (const R *)A->pos_weight + (pw_col ? col : i) : NULL;
        acc64 acc = {{0}, {0}, 0.0};
        VR part = {0};
        int64_t k = 0, len = end - i, nv = 0;
        for (; k + VL <= len; k += VL) {
            elementwise_vec(&part, &acc, checked, kind, u8, has_w, has_pw, X + i + k,
                            TG + (i + k) * tsize, has_w ? w + k : NULL, has_pw ? pw + k : NULL,
                            G ? G + i + k : NULL, L ? L + i + k : NULL, scale, 1, VL);
            if (++nv == FX_FOLD_ELEMS / VL) {
                acc_f64(&acc, part);
                part = (VR){0};
                nv = 0;
            }
        }
        if (k < len)
            elementwise_vec(&part, &acc, checked, kind, u8, has_w, has_pw, X + i + k,
                            TG + (i + k) * tsize, has_w ? w + k : NULL, has_pw ? pw + k : NULL,
                            G ? G + i + k : NULL, L ? L + i + k : NULL, scale, 0, len - k);
        acc_f64(&acc, part);
        double seg = acc_sum(&acc);
        if (!checked && __builtin_expect(!isfinite(seg), 0))
            seg = elementwise_sum_wide(kind, u8, has_w, has_pw, X + i, TG + i * tsize,
                                       w, pw, len);
        total += seg;
        i = end;
    }
    return total;
}

/* The call's declared variant (fx_variants.h), in place or not: each its own loop with
   its options fixed at compile time. */
KERNEL double elementwise_range(const fx_elementwise_args *A, int64_t i0, int64_t i1)
{
    /* a gradient written over the input (or the target) destroys what a redo needs */
    const int checked = A->grad && (A->grad == A->x || A->grad == A->target);
    switch (fx_elementwise_variant(A)) {
#define FX_CASE(name, LOSS, U8, W, PW)                                                  \
    case FX_ELEMENTWISE_##name:                                                         \
        return checked ? elementwise_loop(A, i0, i1, LOSS, U8, W, PW, 1)                \
                       : elementwise_loop(A, i0, i1, LOSS, U8, W, PW, 0);
    FX_ELEMENTWISE_VARIANTS(FX_CASE)
#undef FX_CASE
    }
    return NAN;     /* a combination not declared: the Python layer never asks for one */
}

/* sigmoid or log_sigmoid of elements [i0, i1) */
KERNEL void sigmoid_outputs_range(const void *xv, void *outv, int64_t i0, int64_t i1,
                                  fx_sigmoid_output what)
{
    for (int64_t i = i0; i < i1; i += VL) {
        int full = i + VL <= i1;
        int64_t n = full ? VL : i1 - i;
        VR x = full ? vload_t((const T *)xv + i) : vload_t_part((const T *)xv + i, n, 0);
        sig_parts P = sigmoid_parts(x);
        /* log sigmoid(x) = -(max(-x, 0) + l1p) */
        VR o = what == FX_OUT_SIGMOID ? vselect(P.neg, P.small, P.big)
                                      : -(vzero_unless(P.neg, -x) + P.l1p);
        if (full) vstore_t((T *)outv + i, o);
        else vstore_t_part((T *)outv + i, o, n);
    }
}

#endif /* FX_ELEMENTWISE_H */
