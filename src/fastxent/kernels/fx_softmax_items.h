/*
 * Softmax cross-entropy over rows of few classes (class axis last, C <= FX_ITEMS_MAX_C),
 * a vector of items at a time: lanes run over VL neighbouring rows, the loops over the
 * C classes.
 *
 * The row path (fx_softmax_rows.h) runs along a row: per row it pays for two passes of
 * partial vectors, two horizontal reductions, a label read and a scalar finish with its
 * own log, about as much as the exps of 30 classes. Here all of that is per vector of
 * VL items: a group of VL rows is read as C vectors, one per class (vload_items: a
 * transpose of the rows' pieces, or for the fewest classes gathers), kept in a tile on
 * the stack; the passes run over the tile as the class-axis
 * kernel's run over its panel (max; exp and the per-class sums; the finish, in float64
 * lanes, item_finish; the gradient), and the gradient goes back with vstore_items.
 * The formulas are fx_softmax_item.h's, as for every path.
 */
#ifndef FX_SOFTMAX_ITEMS_H
#define FX_SOFTMAX_ITEMS_H

#include "fx_vecmath.h"
#include "fx_softmax_item.h"
#include "fx_variants.h"

/* The switch points: rows of C <= these take this file's kernels, longer rows the row
   path. Measured with bench/items_switch.py (both paths side by side, 1 thread, forward
   and forward+backward, or logsumexp and softmax), with 4096 rows (in L2) and with 40000
   (streamed): the largest C where the items path was not slower at both columns in
   either. On an AMD Zen 5 after the rows' transposed loads (vload_items): float32 losses
   72 on AVX-512 (40000 rows: 1.57x / 1.04x faster; at 80 forward+backward 0.97x, at 100
   0.85x, though 1.08x in L2) and 56 on AVX2 (1.38x / 1.16x; 64: 0.97x); float64 losses
   56 (AVX-512: 1.22x / 1.04x) and 24 (AVX2; 32 in L2: 0.99x); the blocks 72 and 52
   (float32; AVX-512 at 80 softmax 0.82x), 48 and 24 (float64). The baseline ISA's were
   measured on a Zen 4. At most FX_ITEMS_MAX_C (the tile). Half-precision inputs use
   float32's switch points (their groups go through a float32 block, FX_HALF_TILE), so
   their results are float32's on the widened values, rounded once, at every C. */
#define FX_ITEMS_SWITCH_LOSS   (FX_VBYTES == 64 ? (FX_F32 ? 72 : 56) \
                              : FX_VBYTES == 32 ? (FX_F32 ? 56 : 24) : (FX_F32 ? 8 : 2))
#define FX_ITEMS_SWITCH_BLOCKS (FX_VBYTES == 64 ? (FX_F32 ? 72 : 48) \
                              : FX_VBYTES == 32 ? (FX_F32 ? 52 : 24) : (FX_F32 ? 8 : 2))
_Static_assert(FX_ITEMS_SWITCH_LOSS <= FX_ITEMS_MAX_C && FX_ITEMS_SWITCH_BLOCKS <= FX_ITEMS_MAX_C,
               "the tile holds FX_ITEMS_MAX_C classes");
_Static_assert(FX_ITEMS_MAX_C % VL == 0, "the tile is read and written VL classes at a time");

/* How many groups ahead items_group prefetches. */
#define FX_ITEMS_AHEAD 4

/* The loads of a group wait on VL rows' lines at once, which the hardware
   prefetchers, following one stream, do not fetch ahead: the group FX_ITEMS_AHEAD groups
   on is fetched now, from x, y (soft targets) and g (written), each optional but x. */
FN void items_prefetch(const T *x, const T *y, const T *g, int64_t C)
{
    const size_t span = (size_t)(VL * C) * sizeof(T), ahead = FX_ITEMS_AHEAD * span;
    for (size_t b = 0; b < span; b += 64) {
        __builtin_prefetch((const char *)x + ahead + b, 0, 3);
        if (y) __builtin_prefetch((const char *)y + ahead + b, 0, 3);
        if (g) __builtin_prefetch((const char *)g + ahead + b, 1, 3);
    }
}

/* The hard labels of the group FX_ITEMS_AHEAD groups on from row r. */
FN void labels_prefetch(const fx_softmax_args *A, int64_t r)
{
    __builtin_prefetch((const char *)A->labels + (size_t)(r + FX_ITEMS_AHEAD * VL)
                       * fx_label_bytes(A->label_type), 0, 3);
}

/* Half inputs and outputs: the tile's loads and stores read and write 32-bit lanes, so a
   half group's rows go through a float32 block on the stack, FX_HALF_TILE (of one
   element in the other instances, where x and out are read and written in place):
   items_rows_r widens the rows, items_store_rows rounds the tile's results once on the
   way out. */
#define FX_HALF_TILE(name) R name[FX_HALF ? VL * FX_ITEMS_MAX_C : 1] __attribute__((aligned(64)))

/* Rows [0, n) of C of x as float32 for the tile's loads: x itself, or widened into buf. */
FN const R *items_rows_r(const T *x, int64_t n, int64_t C, R *buf)
{
#if FX_HALF
    /* what the caller's switch guarantees, told to GCC, whose bounds check of the tile's
       row loads from buf cannot see it (-Warray-bounds) */
    if (C > FX_ITEMS_MAX_C || n > VL) __builtin_unreachable();
    widen_t(buf, x, n * C);
    return buf;
#else
    (void)n, (void)C, (void)buf;
    return x;
#endif
}

/* The tile t (C classes of n rows) stored as rows at out (vstore_items_as): directly,
   or through buf, rounded once into the half output. */
FN void items_store_rows(T *out, int64_t C, int64_t n, VR *t, int pairs, R *buf)
{
#if FX_HALF
    if (C > FX_ITEMS_MAX_C || n > VL) __builtin_unreachable();
    vstore_items_as(buf, C, n, t, pairs);
    stream_copy_t(out, buf, n * C);
#else
    (void)buf;
    vstore_items_as(out, C, n, t, pairs);
#endif
}

/* One group: rows [r, r + n), n <= VL, between its passes. items_range runs the passes
   of two groups one after the other (pass 1 of both, then pass 2 of both, ...): a
   group's passes are one long chain of dependent steps (the loads, the max, the exps,
   their float64 sums, the log, the finish), which with few classes leaves most of the
   core idle; two independent chains side by side fill it. */
typedef struct {
    int64_t r, n;
    VR t[FX_ITEMS_MAX_C];                   /* x, then e, then the gradient, per class */
    VI live, lab, keep;
    VR m, sh, xt;
    VD s_acc[FX_HALVES], bd_acc[FX_HALVES], bsum_acc[FX_HALVES];
    double spill[VL];
} items_group;

/* How many groups items_range interleaves: 4 up to FX_ITEMS_INTERLEAVE_4_C classes, 2
   above. Measured against one group at a time (1 thread, Zen 5): C = 2 forward 1.27x
   faster with 4 groups (AVX-512; 1.24x AVX2), 1.20x with 2; C = 10 1.19x with either;
   C = 64 forward+backward 0.97x with 4, 0.98x with 2; C = 37 1.09x / 1.00x with either. */
#define FX_ITEMS_INTERLEAVE 4
#define FX_ITEMS_INTERLEAVE_4_C 16

/* The hard labels, the tile, the max and the target logit per lane (a NaN, if any,
   reaches s in pass 2). */
FN void items_pass1(const fx_softmax_args *A, items_group *G, int pairs)
{
    const int64_t C = A->C, r = G->r, n = G->n;
    const T *xin = (const T *)A->x + r * C;
    FX_HALF_TILE(wide);
    const R *x = items_rows_r(xin, n, C, wide);
    const T *y = A->soft ? (const T *)A->soft + r * C : NULL;
    T *g = A->grad ? (T *)A->grad + r * C : NULL;
    const int soft = A->soft != NULL;
    const VR zero = {0};
    G->live = vlive(n);
    /* a class per lane (soft targets: 0), FX_LABEL_IGNORED past n */
    G->lab = soft ? ~G->live & visplat(FX_LABEL_IGNORED) : items_labels(A, r, n);
    G->keep = G->lab >= 0;

    items_prefetch(xin, y, g, C);
    if (!soft) labels_prefetch(A, r);

    VR m = vsplat(-INFINITY), xt = zero;
    vload_items_as(x, C, n, -INFINITY, G->t, pairs);
    for (int64_t j = 0; j < C; j++) {
        VR v = G->t[j];
        m = vmax_fast(m, v);
        if (!soft) xt = vselect(G->lab == visplat(j), v, xt);
    }
    G->m = m;
    G->xt = xt;
    G->sh = vselect(m == vsplat(-INFINITY), zero, m);
}

/* e = exp(x - sh) and the sums of the variant (aux, weighted: constants of the caller's
   switch), added in float64: with few terms per lane, each rounding of a float32 sum
   would be a large part of a small loss (S = 1 + 1e-4 loses 6e-8 per term). */
FN void items_pass2(const fx_softmax_args *A, int aux, int weighted, items_group *G)
{
    const int64_t C = A->C, n = G->n;
    const R *w = (const R *)A->weight;
    const T *y = A->soft ? (const T *)A->soft + G->r * C : NULL;
    const double eps = A->smoothing;
    const R c1 = (R)(1.0 - eps), c0 = (R)(eps / (double)C);
    const VR zero = {0}, sh = G->sh;
    VD s_acc[FX_HALVES], bd_acc[FX_HALVES], bsum_acc[FX_HALVES];
    for (int h = 0; h < FX_HALVES; h++) s_acc[h] = bd_acc[h] = bsum_acc[h] = vdsplat(0);
    if (aux != FX_AUX_NONE)
        for (int i = 0; i < VL; i++) G->spill[i] = 0.0;
    for (int64_t j = 0; j < C; j++) {
        VR v = G->t[j];
        VR e = vexp_nonpos(v - sh);
        for (int h = 0; h < FX_HALVES; h++) s_acc[h] += vd_half(e, h);
        if (aux != FX_AUX_NONE) {
            VR yv = aux == FX_AUX_SOFT ? vgather_t_part(y + j, C, n, 0) : zero;
            VR b = vzero_unless(G->live, target_weights(aux, vsplat(weighted ? w[j] : (R)1), yv, c1, c0));
            VR bdj = bd_terms(b, sh, v, G->spill);
            for (int h = 0; h < FX_HALVES; h++) {
                bsum_acc[h] += vd_half(b, h);
                bd_acc[h] += vd_half(bdj, h);
            }
        }
        G->t[j] = e;
    }
    for (int h = 0; h < FX_HALVES; h++) {
        G->s_acc[h] = s_acc[h];
        G->bd_acc[h] = bd_acc[h];
        G->bsum_acc[h] = bsum_acc[h];
    }
}

/* The finish (dropped lanes: fx_dropped_loss): each live lane's loss added to acc (per
   float64 half); then the gradient alpha e - scale b, the hard label's term
   (items_target_grad) on the target class, dropped lanes 0. */
FN void items_pass3(const fx_softmax_args *A, int aux, int weighted, items_group *G, VD *acc,
                    int pairs)
{
    const int64_t C = A->C, r = G->r, n = G->n;
    const R *w = (const R *)A->weight;
    const T *y = A->soft ? (const T *)A->soft + r * C : NULL;
    T *g = A->grad ? (T *)A->grad + r * C : NULL;
    const int soft = A->soft != NULL;
    const double eps = A->smoothing;
    const R c1 = (R)(1.0 - eps), c0 = (R)(eps / (double)C);
    const VR zero = {0};
    const VI lab = G->lab;
    if (aux != FX_AUX_NONE)
        for (int h = 0; h < FX_HALVES; h++)
            for (int i = 0; i < VLD; i++) G->bd_acc[h][i] += G->spill[h * VLD + i];
    const VR wt = soft ? zero : lane_label_weights(w, lab);
    VD loss[FX_HALVES];
    const VR alpha = items_finish(A, lab, G->m, G->sh, G->xt, wt, G->s_acc, G->bd_acc,
                                  G->bsum_acc, loss);
    for (int h = 0; h < FX_HALVES; h++) acc[h] += loss[h];
    if (A->item_loss) vstore_part((R *)A->item_loss + r, vr_of_halves(loss), n);
    if (!g) return;

    const VR beta = vsplat((R)A->grad_scale);
    VR gt = zero;
    for (int64_t j = 0; j < C; j++) {
        VR e = G->t[j], gv;
        if (aux == FX_AUX_NONE) {
            gv = e * alpha;
        } else {
            VR yv = aux == FX_AUX_SOFT ? vgather_t_part(y + j, C, n, 0) : zero;
            gv = vmul_sub(e, alpha, target_weights(aux, vsplat(weighted ? w[j] : (R)1), yv, c1, c0) * beta);
        }
        if (!soft) gt = vselect(lab == visplat(j), gv, gt);
        G->t[j] = gv;
    }
    if (!soft) gt = items_target_grad(A, gt, wt);
    for (int64_t j = 0; j < C; j++) {
        VR gv = soft ? G->t[j] : vselect(lab == visplat(j), gt, G->t[j]);
        G->t[j] = vzero_unless(G->keep, gv);
    }
    FX_HALF_TILE(narrow);
    items_store_rows(g, C, n, G->t, pairs, narrow);
}

/* Rows [r0, r1) of the call's variant: groups of VL rows, 2 or 4 at a time
   (items_group), their losses added to per-lane sums in the groups' order, the lanes
   added in order at the end. */
FN double items_range(const fx_softmax_args *A, int aux, int weighted, int64_t r0, int64_t r1,
                      int pairs)
{
    VD acc[FX_HALVES];
    items_group G[FX_ITEMS_INTERLEAVE];
    for (int h = 0; h < FX_HALVES; h++) acc[h] = vdsplat(0);
    const int il = A->C <= FX_ITEMS_INTERLEAVE_4_C ? 4 : 2;
    _Static_assert(FX_ITEMS_INTERLEAVE >= 4, "room for 4 groups");
    for (int64_t r = r0; r < r1; r += il * VL) {
        int ng = 0;
        for (int k = 0; k < il && r + k * VL < r1; k++, ng++) {
            G[k].r = r + k * VL;
            G[k].n = r1 - G[k].r < VL ? r1 - G[k].r : VL;
            items_pass1(A, &G[k], pairs);
        }
        for (int k = 0; k < ng; k++) items_pass2(A, aux, weighted, &G[k]);
        for (int k = 0; k < ng; k++) items_pass3(A, aux, weighted, &G[k], acc, pairs);
    }
    return lanes_total(acc);
}

/* nll_loss on log-probabilities (fx_nll_loss) over rows [r0, r1): the gradient rows
   zeroed at once, then per row its target's term. */
FN double nll_items(const fx_softmax_args *A, int64_t r0, int64_t r1)
{
    const int64_t C = A->C;
    const T *x = (const T *)A->x;
    T *g = (T *)A->grad;
    double total = 0.0;
    for (int64_t r = r0; r < r1; r += VL) {
        int64_t n = r1 - r < VL ? r1 - r : VL, lab[VL];
        double wt[VL], loss[VL];
        fx_labels(A->labels, A->label_type, r, n, C, A->ignore_index, lab);
        for (int64_t i = 0; i < n; i++) {      /* read before g (maybe x) is zeroed */
            loss[i] = fx_dropped_loss(lab[i]);
            if (lab[i] >= 0) {
                wt[i] = class_weight((const R *)A->weight, lab[i]);
                loss[i] = fx_nll_loss(wt[i], (double)load_t(x + (r + i) * C + lab[i]));
            }
        }
        if (g) {
            memset(g + r * C, 0, (size_t)(n * C) * sizeof(T));
            for (int64_t i = 0; i < n; i++)
                if (lab[i] >= 0) store_t(g + (r + i) * C + lab[i], (R)fx_nll_grad(A, wt[i]));
        }
        for (int64_t i = 0; i < n; i++) {
            if (A->item_loss) ((R *)A->item_loss)[r + i] = (R)loss[i];
            total += loss[i];
        }
    }
    return total;
}

/* Rows [r0, r1) of (rows, C), C <= FX_ITEMS_MAX_C, through the call's declared variant
   (pairs: the two-class loads, vload_items_as). */
FN double items_rows(const fx_softmax_args *A, int64_t r0, int64_t r1, int pairs)
{
    if (A->logprob_input) return nll_items(A, r0, r1);
    switch (fx_softmax_variant(A)) {
#define FX_CASE(name, AUX, W) \
    case FX_SOFTMAX_##name: return items_range(A, AUX, W, r0, r1, pairs);
    FX_SOFTMAX_VARIANTS(FX_CASE)
#undef FX_CASE
    }
    return NAN;
}

/* Rows of two classes of the plain variant: the k groups of VL rows from row r (the
   last may end at r1) through two_class_items, their two classes as two vectors
   (vload_pairs where the vectors are wide enough), the gradient back the same way. */
FN void two_class_groups(const fx_softmax_args *A, int64_t r, int64_t r1, int k, VD *acc)
{
    enum { K = FX_TWO_CLASS_K };
    const int pairs = FX_VBYTES >= 32;
    VR x0[K], x1[K], wt[K], gr[K][2];
    VI lab[K];
    VD loss[K][FX_HALVES];
    for (int u = 0; u < k; u++) {
        const int64_t ru = r + u * VL, n = r1 - ru < VL ? r1 - ru : VL;
        const T *xin = (const T *)A->x + ru * 2;
        items_prefetch(xin, NULL, A->grad ? (const T *)A->grad + ru * 2 : NULL, 2);
        labels_prefetch(A, ru);
        FX_HALF_TILE(wide);
        /* room for a transpose's VL vectors, whose store reads them all */
        VR t[FX_ROWS_T_MIN_C <= 2 ? VL : 2] = {0};
        vload_items_as(items_rows_r(xin, n, 2, wide), 2, n, 0, t, pairs);
        x0[u] = t[0];
        x1[u] = t[1];
        lab[u] = items_labels(A, ru, n);
        wt[u] = lane_label_weights((const R *)A->weight, lab[u]);
    }
    two_class_items(A, x0, x1, lab, wt, loss, gr, k);
    for (int u = 0; u < k; u++) {
        const int64_t ru = r + u * VL, n = r1 - ru < VL ? r1 - ru : VL;
        for (int h = 0; h < FX_HALVES; h++) acc[h] += loss[u][h];
        if (A->item_loss) vstore_part((R *)A->item_loss + ru, vr_of_halves(loss[u]), n);
        if (!A->grad) continue;
        VR t[FX_ROWS_T_MIN_C <= 2 ? VL : 2] = {gr[u][0], gr[u][1]};
        FX_HALF_TILE(narrow);
        items_store_rows((T *)A->grad + ru * 2, 2, n, t, pairs, narrow);
    }
}

/* Rows [r0, r1) of two classes of the plain variant, FX_TWO_CLASS_K groups at a time. */
FN double two_class_rows(const fx_softmax_args *A, int64_t r0, int64_t r1)
{
    VD acc[FX_HALVES];
    for (int h = 0; h < FX_HALVES; h++) acc[h] = vdsplat(0);
    int64_t r = r0;
    for (; r + FX_TWO_CLASS_K * VL <= r1; r += FX_TWO_CLASS_K * VL)
        two_class_groups(A, r, r1, FX_TWO_CLASS_K, acc);
    for (; r < r1; r += VL) two_class_groups(A, r, r1, 1, acc);
    return lanes_total(acc);
}

/* Rows of two classes (the table's softmax_two_classes, chosen by the caller): the plain
   variant through two_class_rows, the others through the general kernel with the
   two-class loads (vload_pairs), which the ISAs without FX_HAVE_PAIRS leave out of the
   general kernel (see there). A kernel of its own, so that its code does not change the
   general one's. */
KERNEL double softmax_two_classes(const fx_softmax_args *A, int64_t r0, int64_t r1,
                                  const fx_row_scratch *scratch)
{
    (void)scratch;
    if (!A->logprob_input && fx_softmax_variant(A) == FX_SOFTMAX_plain)
        return two_class_rows(A, r0, r1);
    return items_rows(A, r0, r1, FX_VBYTES >= 32);
}

/* The kernel of softmax_rows's signature for few classes. */
KERNEL double softmax_items(const fx_softmax_args *A, int64_t r0, int64_t r1,
                            const fx_row_scratch *scratch)
{
    (void)scratch;
    return items_rows(A, r0, r1, FX_HAVE_PAIRS);
}

/* ------------------------------------------------------------ building blocks */

/* logsumexp, softmax, log_softmax or entropy of a group of rows [r, r + n), n <= VL, of
   few classes, between its passes (softmax_outputs_items interleaves groups, as
   items_range does): the same passes over a tile as the losses', and the formulas of the
   row path (lse_finish; softmax e_j / S; log_softmax (x - M) - log S; entropy
   log S + sum_j e_j (M - x_j) / S, fx_entropy_term of one chunk). */
typedef struct {
    int64_t r, n;
    VR t[FX_ITEMS_MAX_C];                   /* x, then (softmax) e */
    VR m, sh;
    VI nan;
    VD s[FX_HALVES], bd[FX_HALVES], ties[FX_HALVES], rest[FX_HALVES];
    double spill[VL];
} outputs_group;

/* The tile and the max per lane. */
FN void outputs_pass1(const T *x0, T *out, int64_t C, fx_softmax_output what, outputs_group *G)
{
    const T *xin = x0 + G->r * C;
    const int per_class = what == FX_OUT_SOFTMAX || what == FX_OUT_LOG_SOFTMAX;
    const VR zero = {0};
    items_prefetch(xin, NULL, per_class ? out + G->r * C : NULL, C);
    VR m = vsplat(-INFINITY);
    VI nan = {0};
    FX_HALF_TILE(wide);
    vload_items(items_rows_r(xin, G->n, C, wide), C, G->n, -INFINITY, G->t);
    for (int64_t j = 0; j < C; j++) {
        VR v = G->t[j];
        m = vmax_fast(m, v);
        nan |= v != v;
    }
    G->m = m;
    G->nan = nan;
    G->sh = vselect(m == vsplat(-INFINITY), zero, m);
}

/* The exps and the sums of `what` (outputs_terms). */
FN void outputs_pass2(int64_t C, fx_softmax_output what, outputs_group *G)
{
    const VR sh = G->sh;
    VD s[FX_HALVES], bd[FX_HALVES], ties[FX_HALVES], rest[FX_HALVES];
    for (int i = 0; i < VL; i++) G->spill[i] = 0.0;
    for (int h = 0; h < FX_HALVES; h++) s[h] = bd[h] = ties[h] = rest[h] = vdsplat(0);
    for (int64_t j = 0; j < C; j++) {
        VR v = G->t[j], e = vexp_nonpos(v - sh);
        outputs_terms(what, v, sh, e, s, bd, ties, rest, G->spill);
        if (what == FX_OUT_SOFTMAX) G->t[j] = e;
    }
    for (int h = 0; h < FX_HALVES; h++) {
        G->s[h] = s[h];
        G->bd[h] = bd[h];
        G->ties[h] = ties[h];
        G->rest[h] = rest[h];
    }
}

/* The finish and the outputs (outputs_finish, outputs_class). */
FN void outputs_pass3(T *out, int64_t C, fx_softmax_output what, outputs_group *G)
{
    const VR f = outputs_finish(what, G->m, G->nan, G->s, G->bd, G->ties, G->rest, G->spill);
    if (what == FX_OUT_LOGSUMEXP || what == FX_OUT_ENTROPY) {
        vstore_t_part(out + G->r, f, G->n);
        return;
    }
    for (int64_t j = 0; j < C; j++) G->t[j] = outputs_class(what, G->t[j], G->m, f);
    FX_HALF_TILE(narrow);
    items_store_rows(out + G->r * C, C, G->n, G->t, FX_HAVE_PAIRS, narrow);
}

/* Rows [r0, r1) of (rows, C), C <= items_max_c (softmax_outputs_fn): groups of VL rows,
   2 or 4 at a time (items_range's interleave). */
KERNEL void softmax_outputs_items(const void *xv, void *outv, int64_t C, int64_t r0, int64_t r1,
                                  fx_softmax_output what, const fx_row_scratch *scratch)
{
    (void)scratch;
    const T *x = (const T *)xv;
    T *out = (T *)outv;
    outputs_group G[FX_ITEMS_INTERLEAVE];
    const int il = C <= FX_ITEMS_INTERLEAVE_4_C ? 4 : 2;
    for (int64_t r = r0; r < r1; r += il * VL) {
        int ng = 0;
        for (int k = 0; k < il && r + k * VL < r1; k++, ng++) {
            G[k].r = r + k * VL;
            G[k].n = r1 - G[k].r < VL ? r1 - G[k].r : VL;
            outputs_pass1(x, out, C, what, &G[k]);
        }
        for (int k = 0; k < ng; k++) outputs_pass2(C, what, &G[k]);
        for (int k = 0; k < ng; k++) outputs_pass3(out, C, what, &G[k]);
    }
}

#endif /* FX_SOFTMAX_ITEMS_H */
