/*
 * Evaluation metrics from logits (fastxent.metrics, issue 16): per row of x (rows, C),
 * class axis last, what every metric needs: the losses' two chunk passes (max, exp),
 * then at most one more read of the row, from L1 (fx_metrics_item says when):
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
 * The per-row math is fx_metrics_item (one row, given its chunk statistics) and each
 * metric's per-item term is in fx_metrics_add (the block sums); the row loop
 * metrics_rows only walks rows, so a kernel that handles many small rows at once
 * (issue 11) can call the same two functions.
 */
#ifndef FX_METRICS_H
#define FX_METRICS_H

#include "fx_softmax_rows.h"

/* One row's metrics (see the top of this file). above: FX_LABEL_IGNORED or
   FX_LABEL_BAD when the row has no class target (then nll is 0 or NaN); argmax and
   above may be inexact where fx_metrics_item says. */
typedef struct {
    double nll, conf;
    int64_t argmax, above;
} fx_metrics_item_out;

/* Lanes [0, n) set, from the lane numbers (0, 1, ..., VL-1): one compare (vlive builds
   its mask lane by lane, too slow for the tail of every short row). */
FN VI vlive_at(VI lane, int64_t n) { return lane < (VI){0} + (n < VL ? (int)n : VL); }

FN VI lane_numbers(void)
{
    VI lane;
    for (int i = 0; i < VL; i++) lane[i] = i;
    return lane;
}

/* Horizontal sum of an integer vector. */
FN int64_t vhsum_i(VI v)
{
    int64_t s = 0;
    for (int i = 0; i < VL; i++) s += (int64_t)v[i];
    return s;
}

/* Lanewise min and horizontal min of integer vectors (the first-index searches). */
FN VI vimin(VI a, VI b) { VI m = a < b; return (m & a) | (~m & b); }
FN int64_t vhmin_i(VI v)
{
    int64_t m = v[0];
    for (int i = 1; i < VL; i++) m = v[i] < m ? v[i] : m;
    return m;
}

/* The rank pass: one read of the row x[0, C) after its max M is known (from L1: the
   chunk passes just read it), with no branch per vector (a test-and-branch search for
   the first max mispredicts once per row, which costs short rows more than the running
   vector min does). Sets
     *argmax = with `may_nan` the first NaN if there is one, else the first j with
               x_j == M;
     *above  = (t >= 0) #{j: x_j > x_t or (x_j NaN and x_t not)}
               + #{j > t: x_j ties x_t (equal, or both NaN)}   (the top of this file).
   `may_nan` is a constant at each call: 0 drops the NaN terms, for the rows known to
   hold no NaN. Indices are kept in the lanes of VI (int32 for float32): C < 2^31 - VL,
   which the Python layer checks. */
FN void rank_pass(const R *x, int64_t C, R M, int may_nan, int64_t t, VI lane,
                  int64_t *argmax, int64_t *above)
{
    const int count = t >= 0;
    const R xt = count ? x[t] : 0;
    const int t_nan = may_nan && xt != xt;
    const VI none = (VI){0} + INT32_MAX, tt = (VI){0} + (int)(count ? t : 0);
    const VR mv = vsplat(M), tv = vsplat(xt);
    VI first_max = none, first_nan = none, cnt = {0};
    for (int64_t j = 0; j < C; j += VL) {
        int full = j + VL <= C;
        VR v = full ? vload(x + j) : vload_part(x + j, C - j, 0);
        VI live = full ? ~(VI){0} : vlive_at(lane, C - j);
        VI idx = lane + (int)j;
        VI isnan_v = may_nan ? (VI)(v != v) & live : (VI){0};
        VI is_max = (VI)(v == mv) & live;
        first_max = vimin(first_max, (is_max & idx) | (~is_max & none));
        if (may_nan) first_nan = vimin(first_nan, (isnan_v & idx) | (~isnan_v & none));
        if (count) {
            VI after = idx > tt;
            VI up = t_nan ? isnan_v & after
                          : (((VI)(v > tv) & live) | isnan_v) | ((VI)(v == tv) & live & after);
            cnt -= up;                                  /* set lanes are -1 */
        }
    }
    int64_t j = may_nan ? vhmin_i(first_nan) : INT32_MAX;
    if (j == INT32_MAX) j = vhmin_i(first_max);
    *argmax = j == INT32_MAX ? 0 : j;
    *above = count ? vhsum_i(cnt) : t;
}

/* #{j: x_j == m} over a row without NaN: one compare per vector, four counts in
   flight. */
FN int64_t row_count_equal(const R *x, int64_t C, R m, VI lane)
{
    const VR mv = vsplat(m);
    VI c0 = {0}, c1 = {0}, c2 = {0}, c3 = {0};
    int64_t j = 0;
    for (; j + 4 * VL <= C; j += 4 * VL) {
        c0 -= (VI)(vload(x + j) == mv);
        c1 -= (VI)(vload(x + j + VL) == mv);
        c2 -= (VI)(vload(x + j + 2 * VL) == mv);
        c3 -= (VI)(vload(x + j + 3 * VL) == mv);
    }
    for (; j < C; j += VL) {
        int full = j + VL <= C;
        VR v = full ? vload(x + j) : vload_part(x + j, C - j, 0);
        VI eq = (VI)(v == mv);
        c0 -= full ? eq : eq & vlive_at(lane, C - j);
    }
    return vhsum_i((c0 + c1) + (c2 + c3));
}

/* The metrics of one row x[0, C) with target class t (>= 0) or a negative
   FX_LABEL_* code, from the row's merged chunk statistics mg. With `exact`, argmax and
   above are exact; without, only what the sums read is: whether argmax == t and
   whether above < top_k, which for top_k == 1 and a row without NaN follow from
   x_t < M (neither; no pass), or x_t == M and no other x_j == M (both; one compare per
   vector). Ties at the max, NaN rows and top_k > 1 take the rank pass. */
FN fx_metrics_item_out fx_metrics_item(const R *x, int64_t C, int64_t t, const fx_merged *mg,
                                       VI lane, int exact, int64_t top_k)
{
    fx_metrics_item_out o;
    /* S == 0: every logit -inf, S NaN: a NaN (or inf - inf); no distribution */
    o.conf = mg->S > 0.0 ? 1.0 / mg->S : NAN;
    o.nll = t < 0 ? fx_dropped_loss(t)
                  : log(mg->S) + (mg->M - (double)x[t]);  /* fx_item_loss's a log S + b_t (M - x_t) */
    /* a row with a NaN has S NaN (the max pass may drop the NaN, vmax_fast, the exp pass
       does not); so has a row with +inf (inf - inf): both take the general pass */
    if (isnan(mg->S) || isnan(mg->M)) {
        rank_pass(x, C, (R)mg->M, 1, t, lane, &o.argmax, &o.above);
        return o;
    }
    if (!exact && t >= 0 && top_k == 1) {
        if (x[t] < (R)mg->M) {                /* not the max: neither argmax nor top 1 */
            o.argmax = -1;
            o.above = 1;
            return o;
        }
        if (row_count_equal(x, C, (R)mg->M, lane) == 1) {   /* the only max */
            o.argmax = t;
            o.above = 0;
            return o;
        }
    }
    rank_pass(x, C, (R)mg->M, 0, t, lane, &o.argmax, &o.above);
    return o;
}

/* The calibration bin of a top-1 confidence: torchmetrics' bucketize(conf, edges,
   right=True) - 1 over the nb = n_bins + 1 float32 edges (0 = edges[0] <= conf <= 1),
   conf rounded to float32 first as torchmetrics holds it; a NaN goes to the last bin
   (where NumPy's searchsorted puts it). A branch-free binary search. */
static inline int64_t fx_conf_bin(double conf, const float *edges, int64_t nb)
{
    float c = (float)conf;
    if (c != c) return nb - 1;
    int64_t lo = 0, n = nb;                       /* the last edge <= c lies in [lo, lo + n) */
    while (n > 1) {
        int64_t half = n / 2;
        lo = edges[lo + half] <= c ? lo + half : lo;
        n -= half;
    }
    return lo;
}

/* One row's metrics added to the block's sums (layout: FX_MS_* in fx_api.h): the one
   home of each metric's per-item term. */
static inline void fx_metrics_add(const fx_metrics_args *a, int64_t r, int64_t t,
                                  const fx_metrics_item_out *o, double *sums, int64_t *counts)
{
    if (t < 0) return;                                    /* ignored */
    const double s = a->sample_weight ? a->sample_weight[r] : 1.0;
    const double w = a->class_weight ? a->class_weight[t] : 1.0;
    /* cross-entropy: sum w_t nll / sum w_t; a zero weight drops the item (0 * inf) */
    if (w != 0.0) sums[FX_MS_NLL] += w * o->nll;
    sums[FX_MS_NLL_WEIGHT] += w;
    /* scikit-learn's log loss: p_t clipped to [eps, 1 - eps], i.e. the nll to
       [clip_lo, clip_hi] = [-log(1 - eps), -log(eps)] (fmin/fmax would drop a NaN) */
    double c = o->nll < a->clip_lo ? a->clip_lo : o->nll > a->clip_hi ? a->clip_hi : o->nll;
    sums[FX_MS_CLIPPED] += s * c;
    sums[FX_MS_ITEM_WEIGHT] += s;
    if (o->above < a->top_k) {
        sums[FX_MS_HITS] += s;
        counts[FX_MC_HITS]++;
    }
    counts[FX_MC_KEPT]++;
    /* calibration (torchmetrics): the top-1 prediction is right when argmax == t */
    const int64_t nb = a->n_bins + 1, bin = fx_conf_bin(o->conf, a->edges, nb);
    counts[FX_MC_BINS + bin]++;
    counts[FX_MC_BINS + nb + bin] += o->argmax == t;
    sums[FX_MS_BINS + bin] += (double)(float)o->conf;
}

/* Rows [r0, r1) of a->x: the chunk statistics of each row (the same passes as the
   losses' rows), then fx_metrics_item; its results added to the block's sums (zeroed
   here) and, where a->nll etc. are not NULL, written per row. */
KERNEL void metrics_rows(const fx_metrics_args *a, int64_t r0, int64_t r1, fx_chunk *row_chunks,
                         double *sums, int64_t *counts)
{
    const int64_t C = a->C, nch = (C + CHUNK - 1) / CHUNK, nb = a->n_bins + 1;
    fx_chunk local[FX_LOCAL_CHUNKS];
    fx_chunk *st = nch <= FX_LOCAL_CHUNKS ? local : row_chunks;   /* see fx_api.h */
    const VI lane = lane_numbers();
    for (int64_t i = 0; i < FX_MS_BINS + nb; i++) sums[i] = 0.0;
    for (int64_t i = 0; i < FX_MC_BINS + 2 * nb; i++) counts[i] = 0;
    for (int64_t r = r0; r < r1; r++) {
        const R *x = (const R *)a->x + r * C;
        for (int64_t c = 0; c < nch; c++) {
            int64_t j0 = c * CHUNK, n = C - j0 < CHUNK ? C - j0 : CHUNK;
            chunk_stats(x + j0, NULL, n, FX_AUX_NONE, 0, NULL, NULL, 0, 0, st + c);
        }
        fx_merged mg = fx_merge_chunks(st, nch);
        int64_t t = a->labels ? fx_label(a->labels, a->label_type, r, C, a->ignore_index)
                              : FX_LABEL_IGNORED;
        fx_metrics_item_out o = fx_metrics_item(x, C, t, &mg, lane, a->nll != NULL, a->top_k);
        fx_metrics_add(a, r, t, &o, sums, counts);
        if (a->nll) {
            a->nll[r] = o.nll;
            a->conf[r] = o.conf;
            a->argmax[r] = o.argmax;
            a->above[r] = o.above;
        }
    }
}

#endif /* FX_METRICS_H */
