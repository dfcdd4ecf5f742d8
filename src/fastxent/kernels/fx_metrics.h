/*
 * Evaluation metrics from logits (fastxent.metrics, issue 16): per row of x (rows, C),
 * class axis last, what every metric needs, from one read of the row:
 *   lse     = M + log S                (M = max_j x_j, S = sum_j exp(x_j - M))
 *   nll     = log S + (M - x_t)        (the cross-entropy of the row, as fx_item_loss)
 *   conf    = 1 / S = exp(M - lse)     (the top-1 softmax probability)
 *   argmax  = the first j with x_j == M; with a NaN in the row, the first NaN (NumPy's
 *             and PyTorch's CPU argmax)
 *   above   = how many classes rank above the target in scikit-learn's
 *             top_k_accuracy_score order: its argsort(kind="mergesort")[:, ::-1] puts the
 *             larger logit first, of equal logits the HIGHER index first, and NaN above
 *             every number. So, for a target t with x_t not NaN:
 *                 above = #{j: x_j > x_t or x_j is NaN} + #{j > t: x_j == x_t}
 *             and for x_t NaN: above = #{j > t: x_j is NaN}. The target is in the top k
 *             iff above < k.
 * The per-row math is fx_metrics_item (one row, given its chunk statistics); the row
 * loop metrics_rows only walks rows and writes the outputs, so a kernel that handles
 * many small rows at once (issue 11) can call the same item function.
 */
#ifndef FX_METRICS_H
#define FX_METRICS_H

#include "fx_softmax_rows.h"

/* One row's metrics (see the top of this file). above: FX_LABEL_IGNORED or
   FX_LABEL_BAD when the row has no class target (then nll is 0 or NaN). */
typedef struct {
    double nll, conf;
    int64_t argmax, above;
} fx_metrics_item_out;

/* A running count vector plus the set lanes of a comparison mask (set lanes are -1). */
FN VI vcount(VI acc, VI mask) { return acc - mask; }

/* Horizontal sum of an integer count vector. */
FN int64_t vhsum_i(VI v)
{
    int64_t s = 0;
    for (int i = 0; i < VL; i++) s += (int64_t)v[i];
    return s;
}

/* The first index of x[0, C) holding a NaN (nan = 1) or equal to m (nan = 0); -1 if
   none. */
FN int64_t row_find(const R *x, int64_t C, R m, int nan)
{
    VR mv = vsplat(m);
    for (int64_t j = 0; j < C; j += VL) {
        int full = j + VL <= C;
        int64_t n = full ? VL : C - j;
        VR v = full ? vload(x + j) : vload_part(x + j, n, 0);
        VI hit = (nan ? (VI)(v != v) : (VI)(v == mv)) & vlive(n);
        if (vany(hit))
            for (int i = 0; i < n; i++)
                if (hit[i]) return j + i;
    }
    return -1;
}

/* argmax of a row whose merged statistics are mg: the first NaN if the row holds one,
   else the first j with x_j == M. The max pass may drop a NaN (vmax_fast), but then S
   is NaN; S is NaN also for a +inf logit without NaN (inf - inf), hence the search. */
FN int64_t row_argmax(const R *x, int64_t C, const fx_merged *mg)
{
    int64_t j = -1;
    if (isnan(mg->S) || isnan(mg->M)) j = row_find(x, C, 0, 1);
    if (j < 0) j = row_find(x, C, (R)mg->M, 0);
    return j < 0 ? 0 : j;
}

/* #{j in [j0, C): x_j ranks above xt by value} (see the top: greater, or NaN over a
   number) when `after` is 0; #{j in [j0, C): x_j ties with xt} (equal, or both NaN)
   when `after` is 1. */
FN int64_t row_count(const R *x, int64_t j0, int64_t C, R xt, int after)
{
    const int t_nan = xt != xt;
    VR tv = vsplat(xt);
    VI cnt = {0};
    for (int64_t j = j0; j < C; j += VL) {
        int full = j + VL <= C;
        int64_t n = full ? VL : C - j;
        VR v = full ? vload(x + j) : vload_part(x + j, n, 0);
        VI isnan_v = (VI)(v != v), m;
        if (after) m = t_nan ? isnan_v : (VI)(v == tv);
        else m = t_nan ? (VI){0} : ((VI)(v > tv) | isnan_v);
        cnt = vcount(cnt, m & vlive(n));
    }
    return vhsum_i(cnt);
}

/* The metrics of one row x[0, C) with target class t (>= 0) or a negative
   FX_LABEL_* code, from the row's merged chunk statistics mg. */
FN fx_metrics_item_out fx_metrics_item(const R *x, int64_t C, int64_t t, const fx_merged *mg)
{
    fx_metrics_item_out o;
    /* S == 0: every logit -inf, S NaN: a NaN; neither has a distribution */
    o.conf = mg->S > 0.0 ? 1.0 / mg->S : NAN;
    o.argmax = row_argmax(x, C, mg);
    if (t < 0) {
        o.nll = fx_dropped_loss(t);
        o.above = t;
        return o;
    }
    double xt = (double)x[t];
    o.nll = log(mg->S) + (mg->M - xt);            /* fx_item_loss's a log S + b_t (M - x_t) */
    o.above = row_count(x, 0, C, x[t], 0) + row_count(x, t + 1, C, x[t], 1);
    return o;
}

/* Rows [r0, r1) of a->x: the chunk statistics of each row (the same passes as the
   losses' rows), then fx_metrics_item, written to the per-row outputs. */
KERNEL void metrics_rows(const fx_metrics_args *a, int64_t r0, int64_t r1, fx_chunk *row_chunks)
{
    const int64_t C = a->C, nch = (C + CHUNK - 1) / CHUNK;
    fx_chunk local[FX_LOCAL_CHUNKS];
    fx_chunk *st = nch <= FX_LOCAL_CHUNKS ? local : row_chunks;   /* see fx_api.h */
    for (int64_t r = r0; r < r1; r++) {
        const R *x = (const R *)a->x + r * C;
        for (int64_t c = 0; c < nch; c++) {
            int64_t j0 = c * CHUNK, n = C - j0 < CHUNK ? C - j0 : CHUNK;
            chunk_stats(x + j0, NULL, n, FX_AUX_NONE, 0, NULL, NULL, 0, 0, st + c);
        }
        fx_merged mg = fx_merge_chunks(st, nch);
        int64_t t = a->labels ? fx_label(a->labels, a->label_type, r, C, a->ignore_index)
                              : FX_LABEL_IGNORED;
        fx_metrics_item_out o = fx_metrics_item(x, C, t, &mg);
        a->nll[r] = o.nll;
        a->conf[r] = o.conf;
        a->argmax[r] = o.argmax;
        a->above[r] = o.above;
    }
}

#endif /* FX_METRICS_H */
