/*
 * The formulas of one softmax item, written once and used by every path: the row path
 * and the chunk-parallel path (fx_softmax_rows.h) and the class-axis path
 * (fx_softmax_cols.h).
 *
 * Notation for an item x of C logits: m = max_j x_j, d_j = m - x_j >= 0,
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
 * b_j == 0 contributes 0 even where d_j is +inf (a masked -inf logit). The passes sum
 * the per-class part of b_j (target_weights); the hard label's (1-eps) w_t [j == t] is
 * added in the finish (item_loss) and the gradient (target_grad).
 */
#ifndef FX_SOFTMAX_ITEM_H
#define FX_SOFTMAX_ITEM_H

#include <math.h>
#include "fx_api.h"
#include "fx_labels.h"
#include "fx_simd.h"
#include "fx_vecmath.h"

/* Which per-class sums the exp pass gathers besides s (the "aux" of a variant):
     NONE: none (hard labels without smoothing)
     SMOOTH, SOFT: b_j from target_weights -> bd = sum b_j d_j, bsum = sum b_j
     ENTROPY: b_j = e_j -> bd (the entropy building block)
     LSE_REST: bsum = sum of e_j below the chunk's max, bd = how many reach it (the
       logsumexp building block, where the max dominates: m + log1p(s - 1) keeps what
       m + log(s) rounds away) */
enum { FX_AUX_NONE = 0, FX_AUX_SMOOTH = 1, FX_AUX_SOFT = 2, FX_AUX_ENTROPY = 3,
       FX_AUX_LSE_REST = 4 };

/* ---------------------------------------------------------- per-class terms */

/* b_j for a vector of classes, from their class weights wv (ones without weights) and,
   for SOFT, their target probabilities yv; c1 = 1-eps, c0 = eps/C:
     SMOOTH: b_j = (eps/C) w_j      SOFT: b_j = w_j ((1-eps) y_j + eps/C)
   The one place where the per-class target weights are formed. */
FN VR target_weights(int aux, VR wv, VR yv, R c1, R c0)
{
    if (aux == FX_AUX_SOFT) return wv * (yv * c1 + c0);
    return wv * c0;
}

/* b_j (sh - x_j), 0 where b_j == 0 (a masked -inf class contributes nothing). With
   finite logits sh - x_j can overflow (x_j = -3e38 in float32, sh = 3e38), and so can
   the product with a weight above 1, although the item's loss (a float64 sum, and its
   mean over items) may not: such lanes are summed in float64 into spill[lane] instead,
   so extreme finite logits give the finite loss they should. */
FN VR bd_terms(VR b, VR sh, VR x, double *spill)
{
    VR zero = {0}, inf = vsplat((R)INFINITY);
    VR d = sh - x;
    VR t = vzero_unless(b != zero, b * d);
    /* |t| == inf: d overflowed (b != 0), or the product did; not a +inf logit (sh) or a
       masked class (x = -inf), whose inf is the answer */
    VI over = ((VR)((VI)t & ~vsignbits()) == inf) & (sh != inf) & (x != -inf);
    if (__builtin_expect(vany(over), 0)) {
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

/* ---------------------------------------------------------- chunks of an item */

/* An item's chunks merged (Milakov & Gimelshein's online normaliser, per chunk):
   M = max m_c, S = sum_c s_c exp(sh_c - M), bdM = sum_j b_j (M - x_j). */
typedef struct { double M, S, bsum, bdM; } fx_merged;

/* sum_j b_j (M - x_j) of an item of one chunk, from that chunk's bd = sum_j b_j (sh - x_j)
   (M != sh only for a chunk of -inf only, where sh = 0); lanes are items. */
FN VD one_chunk_bdM(VD M, VD sh, VD bd, VD bsum)
{
    return bd + vdzero_unless(bsum != 0.0, (M - sh) * bsum);
}

/* The gradient factor of an item of one chunk, k / S (k = scale * a: the finish's), NaN
   where the item has no distribution (S == 0: all -inf, or NaN). */
FN VD one_chunk_alpha(VD k, VD S)
{
    return vdselect(S > 0.0, k / S, vdsplat(NAN));
}

FN fx_merged fx_merge_chunks(const fx_chunk *st, int64_t nch)
{
    fx_merged r = {-INFINITY, 0.0, 0.0, 0.0};
    int nan = 0;
    if (nch == 1) {             /* one chunk (every row up to 4096 float32 classes) */
        r.M = st->m;
        r.S = st->s;
        r.bsum = st->bsum;
        r.bdM = one_chunk_bdM(vdsplat(st->m), vdsplat(st->sh), vdsplat(st->bd),
                              vdsplat(st->bsum))[0];
        return r;
    }
    for (int64_t c = 0; c < nch; c++) {
        if (isnan(st[c].m)) nan = 1;
        else if (st[c].m > r.M) r.M = st[c].m;
    }
    if (nan) r.M = NAN;
    for (int64_t c = 0; c < nch; c++) {
        /* a chunk with s == 0 holds only -inf: it adds nothing (and exp(sh - M) could
           overflow there) */
        if (st[c].s != 0.0) r.S += st[c].s * exp(st[c].sh - r.M);
        r.bsum += st[c].bsum;
        r.bdM += st[c].bd + (st[c].bsum != 0.0 ? (r.M - st[c].sh) * st[c].bsum : 0.0);
    }
    return r;
}

/* alpha_c = k exp(sh_c - M) / S: the factor that turns the chunk's stored e_j into
   k p_j. An item whose S is 0 (all -inf) or NaN has no distribution: NaN everywhere. */
FN void fx_set_alphas(fx_chunk *st, int64_t nch, const fx_merged *mg, double k)
{
    int undefined = !(mg->S > 0.0);
    if (nch == 1) {
        st->alpha = one_chunk_alpha(vdsplat(k), vdsplat(mg->S))[0];
        return;
    }
    for (int64_t c = 0; c < nch; c++)
        st[c].alpha = undefined ? NAN
                    : st[c].s != 0.0 ? k * exp(st[c].sh - mg->M) / mg->S : 0.0;
}

/* sum_j p_j (M - x_j) from ENTROPY chunk sums (bd_c = sum_j e_j (sh_c - x_j)). */
FN double fx_entropy_term(const fx_chunk *st, int64_t nch, const fx_merged *mg)
{
    double t = 0.0;
    for (int64_t c = 0; c < nch; c++)
        if (st[c].s != 0.0)
            t += exp(st[c].sh - mg->M) * (st[c].bd + (mg->M - st[c].sh) * st[c].s);
    return t / mg->S;
}

/* ---------------------------------------------------------- the finish */

/* The loss of kept items, lanes in float64, from their merged chunks (M, bsum, bdM: see
   fx_merge_chunks), their hard label's class weight wt and logit xt, and log S:
       loss = a log S + sum_j b_j (M - x_j)
   hard label t (wt = w_t, xt = x_t):  a = (1-eps) wt + (eps/C) W,
       sum_j b_j (M - x_j) = (1-eps) wt (M - xt) + (eps/C) sum_j w_j (M - x_j)
   soft targets:  a = sum_j b_j.
   *k = scale * a, which the gradient factors are made of (fx_set_alphas). The one home
   of the formula: the row paths call it with one item (fx_item_loss), the item-lane
   paths with a vector of them. */
FN VD item_finish(const fx_softmax_args *A, VD M, VD bsum, VD bdM, VD wt, VD xt, VD log_s,
                  VD *k)
{
    const double eps = A->smoothing, C = (double)A->C;
    VD a, bd;
    if (A->soft) {
        a = bsum;
        bd = bdM;
    } else {
        VD b_t = (1.0 - eps) * wt;
        /* the weights of classes no item targets enter only through smoothing: without
           it, an inf weight on an absent class must not make 0 * inf = NaN here */
        a = eps > 0.0 ? b_t + eps / C * A->weight_total : b_t;
        bd = vdzero_unless(b_t != 0.0, b_t * (M - xt));
        if (eps > 0.0) bd += bdM;          /* the chunks' b_j already hold eps/C */
    }
    *k = A->grad_scale * a;
    return a * log_s + bd;
}

/* The loss of one kept item from its chunks (item_finish), and each chunk's gradient
   factor (scale * a * p_j / e_j). log_s, when not NULL, is log S computed by the caller. */
FN double fx_item_loss(const fx_softmax_args *A, fx_chunk *st, int64_t nch, double wt,
                       double xt, const double *log_s)
{
    fx_merged mg = fx_merge_chunks(st, nch);
    VD k, loss = item_finish(A, vdsplat(mg.M), vdsplat(mg.bsum), vdsplat(mg.bdM), vdsplat(wt),
                             vdsplat(xt), vdsplat(log_s ? *log_s : log(mg.S)), &k);
    if (A->grad) fx_set_alphas(st, nch, &mg, k[0]);   /* only the gradient reads them */
    return loss[0];
}

/* The hard label's own term of the gradient, g_t -= scale (1-eps) w_t, applied to the
   target class's a p_t - (per-class b_t) after the gradient pass; lanes are items. */
FN VD item_target_grad(const fx_softmax_args *A, VD g_t, VD wt)
{
    return g_t - A->grad_scale * (1.0 - A->smoothing) * wt;
}

FN double fx_target_grad(const fx_softmax_args *A, double g_t, double wt)
{
    return item_target_grad(A, vdsplat(g_t), vdsplat(wt))[0];
}

/* ---------------------------------------------------------- building blocks */

/* logsumexp of items from their merged M, S and log S (lanes are items):
       M + log S,
   except where the max dominates (S < 2) and the answer is small (|M| < 2): there log S
   has rounded away what the rest adds (logsumexp([0, -40]) = 4.25e-18, not 0), and the
   answer is M + log1p_rest, log1p_rest = log1p((ties - 1) + rest) from the maxima's count
   and the sum of the other terms (a second pass of the row path, FX_AUX_LSE_REST), as
   SciPy computes it. An infinite max is the answer (-inf: all -inf; +inf: a +inf is
   present), unless the item holds a NaN (has_nan: lanes with one). */
FN VD lse_finish(VD M, VD S, VD log_s, VD log1p_rest, VDI has_nan)
{
    VDI rest_path = (S < 2.0) & (M < 2.0) & (M > -2.0);
    VD lse = vdselect(rest_path, M + log1p_rest, M + log_s);
    VDI special = (M == vdsplat(INFINITY)) | (M == vdsplat(-INFINITY)) | (lse != lse);
    return vdselect(special, vdselect(has_nan, vdsplat(NAN), M), lse);
}

/* Does the logsumexp of an item need log1p_rest (lse_finish)? */
static inline int lse_needs_rest(double M, double S) { return S < 2.0 && fabs(M) < 2.0; }

/* ---------------------------------------------------------- a vector of items */

/* The class weight of each kept lane's hard label (lab >= 0; 1 without weights), 0 in
   the other lanes. */
FN VR lane_label_weights(const R *w, VI lab)
{
    if (!w) return vzero_unless(lab >= 0, vsplat(1));
    VR wt = {0};
    for (int i = 0; i < VL; i++)
        if (lab[i] >= 0) wt[i] = w[lab[i]];
    return wt;
}

/* The hard labels of lanes [0, n) from item r as classes, FX_LABEL_IGNORED or
   FX_LABEL_BAD (fx_label; FX_LABEL_IGNORED past n). int64 and int32 labels of a whole
   vector are classified in vectors (int64 ones in 32-bit lanes where VI has them,
   vload_i64_halves: a class is a high half of 0 and a low half in [0, C)); the rest
   through fx_labels. C < 2^31: the lanes of float32 instances hold a class in 32 bits
   (the Python layer sends a class axis of more classes, not last, through the rows). */
FN VI items_labels(const fx_softmax_args *A, int64_t r, int64_t n)
{
    const int64_t C = A->C, ign = A->ignore_index;
#if FX_F32
    if (A->label_type == FX_I64 && n == VL) {
        VI lo, hi;
        vload_i64_halves((const int64_t *)A->labels + r, &lo, &hi);
        const VI ok = (hi == 0) & (lo >= 0) & (lo < (int32_t)C);
        const VI ignored = (lo == (int32_t)ign) & (hi == (int32_t)(ign >> 32));
        const VI t = (ok & lo) | (~ok & FX_LABEL_BAD);
        return (ignored & FX_LABEL_IGNORED) | (~ignored & t);
    }
#endif
#define FX_CLASSIFY(T)                                                                  \
    if (n == VL) {                                                                      \
        typedef T LV __attribute__((vector_size(VL * sizeof(T))));                     \
        LV t, ok, ignored;                                                              \
        memcpy(&t, (const T *)A->labels + r, sizeof t);                                 \
        ok = (t >= 0) & (t < (T)C);                                                     \
        ignored = t == (T)ign;                                                          \
        if ((int64_t)(T)ign != ign) ignored = (LV){0};  /* not a value of T */          \
        t = (ok & t) | (~ok & (T)FX_LABEL_BAD);                                         \
        t = (ignored & (T)FX_LABEL_IGNORED) | (~ignored & t);                           \
        return __builtin_convertvector(t, VI);                                          \
    }
    if (A->label_type == FX_I64) { FX_CLASSIFY(int64_t) }
    else if (A->label_type == FX_I32) { FX_CLASSIFY(int32_t) }
#undef FX_CLASSIFY
    int64_t l64[VL];
    VI lab;
    fx_labels(A->labels, A->label_type, r, n, C, ign, l64);
    for (int i = 0; i < VL; i++) lab[i] = i < n ? l64[i] : FX_LABEL_IGNORED;
    return lab;
}

/* The sum of per-lane loss sums (float64 halves), the lanes added in order: the one
   order every item-lane kernel uses, so that a block's total depends on its items
   alone. */
FN double lanes_total(const VD *acc)
{
    double total = 0.0;
    for (int h = 0; h < FX_HALVES; h++)
        for (int i = 0; i < VLD; i++) total += acc[h][i];
    return total;
}

/* The losses l of a vector of items where their lanes are kept (lab_d, their labels in
   float64 lanes, >= 0), fx_dropped_loss's 0 or NaN where not. */
FN VD items_kept_loss(VD lab_d, VD l)
{
    return vdselect(lab_d >= 0.0, l, vdzero_unless(lab_d == (double)FX_LABEL_BAD, vdsplat(NAN)));
}

/* The finish of a vector of items of one chunk each, for the kernels whose lanes are
   items (fx_softmax_items.h, fx_softmax_cols.h): lab per lane is its class (soft
   targets: 0), FX_LABEL_IGNORED or FX_LABEL_BAD; m, sh, xt and wt its max, shift,
   target logit and the target's class weight; s, bd and bsum the float64 halves of its
   sums (bd with any spill added), log_s the logs of s. Writes each lane's loss
   (item_finish; a dropped lane fx_dropped_loss's 0 or NaN) to loss[h] and returns the
   gradient factors in R. */
FN VR items_finish_log(const fx_softmax_args *A, VI lab, VR m, VR sh, VR xt, VR wt,
                       const VD *s, const VD *bd, const VD *bsum, const VD *log_s, VD *loss)
{
    VD alpha[FX_HALVES];
    const VR lab_r = __builtin_convertvector(lab, VR);
    for (int h = 0; h < FX_HALVES; h++) {
        VD M = vd_half(m, h), lab_d = vd_half(lab_r, h), k;
        VD bdM = one_chunk_bdM(M, vd_half(sh, h), bd[h], bsum[h]);
        VD l = item_finish(A, M, bsum[h], bdM, vd_half(wt, h), vd_half(xt, h), log_s[h], &k);
        alpha[h] = one_chunk_alpha(k, s[h]);
        loss[h] = items_kept_loss(lab_d, l);
    }
    return vr_of_halves(alpha);
}

/* items_finish_log with log S from the vector log (vlog_halves). */
FN VR items_finish(const fx_softmax_args *A, VI lab, VR m, VR sh, VR xt, VR wt, const VD *s,
                   const VD *bd, const VD *bsum, VD *loss)
{
    VD log_s[FX_HALVES];
    vlog_halves(s, log_s);
    return items_finish_log(A, lab, m, sh, xt, wt, s, bd, bsum, log_s, loss);
}

/* Two classes, hard labels without smoothing (the plain variant, weighted or not): the
   binary classifier's and the two-class map's case. Of the two classes the max has
   e = 1 and the other e = exp(-|x0 - x1|), so S = 1 + e and log S = log1p(e)
   (vlog1p_unit, from e itself, which also gives 1/S): the loss is item_finish's with
   that log S, and with p_o the other class's probability (1/S or e/S)
       g_o = k p_o,   g_t = k (p_t - 1) = -k p_o
   (-k p_o: k p_t - k would cancel where the item is confident). One exp instead of two,
   no float64 sums of the exps and no division by S, which the general passes spend per
   item whatever C is. An item with a NaN or a +inf logit, or both -inf, has no
   distribution: NaN loss and gradient, as on the general passes (their S is NaN or 0),
   lane by lane.
   x0, x1: the two classes' logits of k <= FX_TWO_CLASS_K vectors of items, taken a step
   for all k at a time (the exp and the log are long chains, fx_vecmath.h); lab their
   labels (a class, FX_LABEL_IGNORED or FX_LABEL_BAD), wt their class weights
   (lane_label_weights). Writes vector u's losses to loss[u][h] (items_kept_loss) and its
   gradient of class c to g[u][c] (dropped lanes 0). */
#define FX_TWO_CLASS_K 2       /* at most FX_EXP_MAX_K */
FN void two_class_items(const fx_softmax_args *A, const VR *x0, const VR *x1, const VI *lab,
                        const VR *wt, VD (*loss)[FX_HALVES], VR (*g)[2], int k)
{
    const VR inf = vsplat((R)INFINITY);
    VI t1[FX_TWO_CLASS_K], undefined[FX_TWO_CLASS_K];
    VR xt[FX_TWO_CLASS_K], xo[FX_TWO_CLASS_K], m[FX_TWO_CLASS_K], e[FX_TWO_CLASS_K],
       inv[FX_TWO_CLASS_K], log_s[FX_TWO_CLASS_K];
    for (int u = 0; u < k; u++) {
        t1[u] = lab[u] == visplat(1);
        m[u] = vmax_fast(x0[u], x1[u]);
        undefined[u] = ~((x0[u] < inf) & (x1[u] < inf)) | (m[u] == -inf);
        xt[u] = vselect(t1[u], x1[u], x0[u]);
        xo[u] = vselect(t1[u], x0[u], x1[u]);
        e[u] = vneg_abs(xo[u] - xt[u]);
    }
    vexp_nonpos_k(e, k);
    vlog1p_unit_k(e, inv, log_s, k);
    for (int u = 0; u < k; u++) {
        const VR p_o = vselect(xo[u] > xt[u], inv[u], e[u] * inv[u]);
        const VR lab_r = __builtin_convertvector(lab[u], VR);
        const VR undef_r = vzero_unless(undefined[u], vsplat(1));
        VD g_o[FX_HALVES];
        for (int h = 0; h < FX_HALVES; h++) {
            VD kh, zero = vdsplat(0);
            VD l = item_finish(A, vd_half(m[u], h), zero, zero, vd_half(wt[u], h),
                               vd_half(xt[u], h), vd_half(log_s[u], h), &kh);
            VDI undef_d = vd_half(undef_r, h) != 0.0;
            loss[u][h] = items_kept_loss(vd_half(lab_r, h), vdselect(undef_d, vdsplat(NAN), l));
            g_o[h] = kh * vd_half(p_o, h);
        }
        const VI keep = lab[u] >= 0;
        const VR go = vselect(undefined[u], vsplat((R)NAN), vr_of_halves(g_o));
        const VR gt = (R)0 - go;            /* 0 - 0 = +0, as k p_t - k gives */
        g[u][0] = vzero_unless(keep, vselect(t1[u], go, gt));
        g[u][1] = vzero_unless(keep, vselect(t1[u], gt, go));
    }
}

/* The building blocks over a vector of items (the items path, fx_softmax_items.h, and
   the class-axis path, fx_softmax_cols.h). One class's terms: e = exp(v - sh) into s;
   ENTROPY e (sh - v) into bd (bd_terms, spill per lane); LOGSUMEXP FX_AUX_LSE_REST's sums,
   how many reach the max into ties and the e below it into rest (float64 halves). */
FN void outputs_terms(fx_softmax_output what, VR v, VR sh, VR e, VD *s, VD *bd, VD *ties,
                      VD *rest, double *spill)
{
    for (int h = 0; h < FX_HALVES; h++) s[h] += vd_half(e, h);
    if (what == FX_OUT_ENTROPY) {
        VR bdj = bd_terms(e, sh, v, spill);
        for (int h = 0; h < FX_HALVES; h++) bd[h] += vd_half(bdj, h);
    } else if (what == FX_OUT_LOGSUMEXP) {
        VR tie = vzero_unless(v == sh, vsplat(1)), below = vzero_unless(v < sh, e);
        for (int h = 0; h < FX_HALVES; h++) {
            ties[h] += vd_half(tie, h);
            rest[h] += vd_half(below, h);
        }
    }
}

/* Their finish, from the items' max m, whether each holds a NaN, and the sums of
   outputs_terms: logsumexp (lse_finish) or entropy log S + sum_j e_j (M - x_j) / S per
   item, or for the per-class outputs the factor f of outputs_class (softmax 1 / S,
   log_softmax log S). */
FN VR outputs_finish(fx_softmax_output what, VR m, VI nan, const VD *s, const VD *bd,
                     const VD *ties, const VD *rest, const double *spill)
{
    VD log_s[FX_HALVES], o[FX_HALVES];
    vlog_halves(s, log_s);
    if (what == FX_OUT_SOFTMAX) {
        for (int h = 0; h < FX_HALVES; h++) o[h] = one_chunk_alpha(vdsplat(1.0), s[h]);
        return vr_of_halves(o);
    }
    if (what == FX_OUT_LOG_SOFTMAX) return vr_of_halves(log_s);
    VR l1p = {0}, inv;
    if (what == FX_OUT_LOGSUMEXP) {
        VD arg[FX_HALVES];
        for (int h = 0; h < FX_HALVES; h++) arg[h] = (ties[h] - 1.0) + rest[h];
        l1p = vlog1p_unit(vr_of_halves(arg), &inv);    /* used where arg is in [0, 1) */
    }
    const VR nan_r = vzero_unless(nan, vsplat(1));
    for (int h = 0; h < FX_HALVES; h++) {
        if (what == FX_OUT_ENTROPY) {
            VD sp;
            memcpy(&sp, spill + h * VLD, sizeof sp);
            o[h] = log_s[h] + (bd[h] + sp) / s[h];
        } else {
            VD M = vd_half(m, h);
            VDI has_nan = vdselect(M == vdsplat(INFINITY), vd_half(nan_r, h), s[h] != s[h]) != 0.0;
            o[h] = lse_finish(M, s[h], log_s[h], vd_half(l1p, h), has_nan);
        }
    }
    return vr_of_halves(o);
}

/* A per-class output from its e (softmax) or x (log_softmax) and the finish's f:
   e / S, or (x - M) - log S (not x - (M + log S): it would round). */
FN VR outputs_class(fx_softmax_output what, VR e_or_x, VR m, VR f)
{
    return what == FX_OUT_SOFTMAX ? e_or_x * f : (e_or_x - m) - f;
}

/* item_target_grad of a vector of items' target-class gradients gt, in float64 lanes,
   rounded once to R. */
FN VR items_target_grad(const fx_softmax_args *A, VR gt, VR wt)
{
    VD g[FX_HALVES];
    for (int h = 0; h < FX_HALVES; h++) g[h] = item_target_grad(A, vd_half(gt, h), vd_half(wt, h));
    return vr_of_halves(g);
}

/* The class weight of a hard label: w[label], 1 without weights (w NULL). */
FN double class_weight(const R *w, int64_t label) { return w ? (double)w[label] : 1.0; }

/* The loss of an item that is not kept: 0 if its label is ignore_index, NaN if the
   label no longer validates (changed by another thread since the validation pass). */
static inline double fx_dropped_loss(int64_t label)
{
    return label == FX_LABEL_IGNORED ? 0.0 : NAN;
}

/* nll_loss on log-probabilities: loss = -w_t x_t, gradient -w_t * scale at t (0
   elsewhere). */
static inline double fx_nll_loss(double wt, double xt) { return FX_ROUNDED(-wt * xt); }
static inline double fx_nll_grad(const fx_softmax_args *A, double wt) { return -wt * A->grad_scale; }

#endif /* FX_SOFTMAX_ITEM_H */
