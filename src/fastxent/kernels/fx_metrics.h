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
#include "fx_softmax_items.h"

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

/* #{j: x_j == m} over a row without NaN (the tail padded with NaN, equal to nothing). */
FN int64_t row_count_equal(const R *x, int64_t C, R m)
{
    const VR mv = vsplat(m);
    int64_t c0 = 0, c1 = 0;
    int64_t j = 0;
    for (; j + 2 * VL <= C; j += 2 * VL) {
        c0 += vcount_eq(vload(x + j), mv);
        c1 += vcount_eq(vload(x + j + VL), mv);
    }
    for (; j < C; j += VL)
        c0 += vcount_eq(j + VL <= C ? vload(x + j) : vload_part(x + j, C - j, NAN), mv);
    return c0 + c1;
}

/* The metrics of one row x[0, C) with target class t (>= 0) or a negative
   FX_LABEL_* code, from the row's merged chunk statistics mg. With `exact`, argmax and
   above are exact; without, only what the sums read is: whether argmax == t and
   whether above < top_k, which for top_k == 1 and a row without NaN follow from
   x_t < M (neither; no pass), or x_t == M and no other x_j == M (both; one compare per
   vector; `ties`, that count where the caller has it, else -1). Ties at the max, NaN
   rows and top_k > 1 take the rank pass. top_k == 0: nll and conf only (argmax -1,
   above t). */
FN fx_metrics_item_out fx_metrics_item(const R *x, int64_t C, int64_t t, const fx_merged *mg,
                                       VI lane, int exact, int64_t top_k, int64_t ties)
{
    fx_metrics_item_out o;
    /* S == 0: every logit -inf, S NaN: a NaN (or inf - inf); no distribution */
    o.conf = one_chunk_alpha(vdsplat(1.0), vdsplat(mg->S))[0];   /* 1/S, NaN unless S > 0 */
    o.nll = t < 0 ? fx_dropped_loss(t)
                  : log(mg->S) + (mg->M - (double)x[t]);  /* fx_item_loss's a log S + b_t (M - x_t) */
    /* a row with a NaN has S NaN (the max pass may drop the NaN, vmax_fast, the exp pass
       does not); so has a row with +inf (inf - inf): both take the general pass */
    if (top_k == 0) {                         /* the caller wants the loss only */
        o.argmax = -1;
        o.above = t;
        return o;
    }
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
        /* the only max: with M finite (S >= 1) a second one would add another
           exp(0) = 1 to S, so S < 2 settles it without the pass (the exp gives exactly 1
           at 0 on every ISA, test_vecmath.py::test_exp_special_values; S sums
           non-negative terms). A row of -inf only has S = 0 and every class tied. */
        if (ties < 0 && mg->S >= 1.0 && mg->S < 2.0) ties = 1;
        if ((ties < 0 ? row_count_equal(x, C, (R)mg->M) : ties) == 1) {
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
   (where NumPy's searchsorted puts it). The edges are torch.linspace(0, 1, nb), so
   conf * n_bins is the bin but for rounding: guessed from it, then walked to the last
   edge <= conf (exact for any sorted edges; a step or none for these). */
static inline int64_t fx_conf_bin_guess(float c, int64_t nb)
{
    int64_t b = c >= 1.0f ? nb - 1 : (int64_t)(c * (float)(nb - 1));
    return b > nb - 1 ? nb - 1 : b;
}

/* The bin from a guess b in [0, nb): walked to the last edge <= c (c >= 0, not NaN). */
static inline int64_t fx_conf_bin_walk(float c, int64_t b, const float *edges, int64_t nb)
{
    while (b > 0 && edges[b] > c) b--;
    while (b + 1 < nb && edges[b + 1] <= c) b++;
    return b;
}

static inline int64_t fx_conf_bin(double conf, const float *edges, int64_t nb)
{
    float c = (float)conf;
    if (!(c >= 0.0f)) return c != c ? nb - 1 : 0;
    return fx_conf_bin_walk(c, fx_conf_bin_guess(c, nb), edges, nb);
}

/* One row's metrics added to the block's sums (layout: FX_MS_* in fx_api.h): the one
   home of each metric's per-item term. */
static inline void fx_metrics_add(const fx_metrics_args *a, int64_t r, int64_t t,
                                  const fx_metrics_item_out *o, double *sums, int64_t *counts)
{
    if (t < 0) {                                          /* ignored, or a bad label */
        counts[FX_MC_BAD] += t == FX_LABEL_BAD;
        return;
    }
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
    counts[FX_MC_KEPT]++;
    if (a->loss_only) return;
    if (o->above < a->top_k) {
        sums[FX_MS_HITS] += s;
        counts[FX_MC_HITS]++;
    }
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
    const int top1 = !a->nll && !a->loss_only && a->top_k == 1;   /* fx_metrics_item's shortcut */
    for (int64_t i = 0; i < FX_MS_BINS + nb; i++) sums[i] = 0.0;
    for (int64_t i = 0; i < FX_MC_BINS + 2 * nb; i++) counts[i] = 0;
    for (int64_t r = r0; r < r1; r++) {
        const R *x = (const R *)a->x + r * C;
        const int64_t t = a->labels ? fx_label(a->labels, a->label_type, r, C, a->ignore_index)
                                    : FX_LABEL_IGNORED;
        int64_t ties = -1;
        if (nch == 1) {
            /* a row of one chunk whose target is its max: its ties counted right after the
               max pass, while the row is in L1 (after the exp pass the same count took
               twice as long, measured) */
            const R m = row_max(x, C);
            if (top1 && t >= 0 && x[t] == m) ties = row_count_equal(x, C, m);
            chunk_stats_at(x, NULL, C, m, FX_AUX_NONE, 0, NULL, NULL, 0, 0, st);
        } else {
            for (int64_t c = 0; c < nch; c++) {
                int64_t j0 = c * CHUNK, n = C - j0 < CHUNK ? C - j0 : CHUNK;
                chunk_stats(x + j0, NULL, n, FX_AUX_NONE, 0, NULL, NULL, 0, 0, st + c);
            }
        }
        fx_merged mg = fx_merge_chunks(st, nch);
        fx_metrics_item_out o = fx_metrics_item(x, C, t, &mg, lane, a->nll != NULL,
                                                a->loss_only ? 0 : a->top_k, ties);
        fx_metrics_add(a, r, t, &o, sums, counts);
        if (a->nll) {
            a->nll[r] = o.nll;
            a->conf[r] = o.conf;
            a->argmax[r] = o.argmax;
            a->above[r] = o.above;
        }
    }
}

/* ------------------------------------------------------------ rows of few classes */

/* The items variant (issue 11's items path, fx_softmax_items.h): rows of C <= the
   table's items_max_c, a vector of VL rows at a time (lanes over rows, loops over the
   classes of a tile loaded as items_group loads it). Per lane the definitions of
   fx_metrics_item: nll from items_finish (so it has the bits of cross_entropy's items
   path), conf = one_chunk_alpha(1, S), argmax and above from a loop over the tile
   (rank_pass's rules, its NaN terms only for a group with a NaN; always exact). Each metric's per-item term is fx_metrics_add's,
   here over a vector of rows: summed in float64 lanes, the lanes added in order at the
   block's end, so a block's sums depend on the block alone. (The float sums agree with
   the row path's to rounding, the counts exactly.)

   The calibration bins' sums of float32 confidences are exact here: the top-1
   confidence of C <= FX_ITEMS_MAX_C classes is >= 1/C >= 2^-7, so as a float32 a
   multiple of 2^-30, added as the integer conf * 2^30. The row path's float64 sums of
   such values are exact too (multiples of 2^-30 below 2^23): the two paths' bin sums
   differ only where their confidences do (S is summed in float64 lanes here, in R along
   the row there). */
_Static_assert(FX_ITEMS_MAX_C <= 128, "metrics_items: confidences of at least 2^-7");
#define FX_CONF_FIXED 0x1p30

FN VI viselect(VI mask, VI a, VI b) { return (mask & a) | (~mask & b); }

/* float64 lanes [h VLD, (h + 1) VLD) of p[0, n), 0 past n; `absent` everywhere when p is
   NULL. */
FN VD vdload_part(const double *p, int h, int64_t n, double absent)
{
    VD v;
    if (!p) return vdsplat(absent);
    if (n == VL) { memcpy(&v, p + h * VLD, sizeof v); return v; }
    for (int i = 0; i < VLD; i++) v[i] = h * VLD + i < n ? p[h * VLD + i] : 0.0;
    return v;
}

/* A block's running sums FX_MS_NLL .. FX_MS_ITEM_WEIGHT in float64 lanes, and its
   counts FX_MC_KEPT, FX_MC_HITS, FX_MC_BAD in integer lanes (set lanes of a mask are -1: they are
   subtracted). */
typedef struct { VD s[FX_MS_BINS][FX_HALVES]; VDI kept[FX_HALVES], hits[FX_HALVES], bad[FX_HALVES]; } fx_metrics_lanes;

/* The lanes' half h of an integer vector of VL lanes, as float64-lane integers. */
FN VDI vdi_half(VI v, int h)
{
#if FX_F32
    typedef int32_t VIh __attribute__((vector_size(FX_VBYTES / 2)));
    VIh part;
    memcpy(&part, (const char *)&v + h * sizeof part, sizeof part);
    return __builtin_convertvector(part, VDI);
#else
    (void)h;
    return (VDI)v;
#endif
}

/* The calibration bins of a group, in lanes. Where the edges are torch.linspace's (each
   within 2^-23 of b / n_bins, the first 0 and the last 1; checked once per block by
   fx_bins_of), the bin of a float32 confidence c in [0, 1) is trunc(c * n_bins) with the
   product in float32, unless that product lies within `near` = 4 n_bins 2^-24 of an
   integer: its rounding (at most n_bins 2^-24) and the edges' offsets (2^-23 before
   scaling) cannot then carry it across an edge. Those lanes, and all lanes for other
   edges, take fx_conf_bin_walk; c == 1 is bin n_bins (its own, as in torchmetrics). */
typedef struct { int uniform; float near; } fx_bins;

static inline fx_bins fx_bins_of(const fx_metrics_args *a)
{
    fx_bins b;
    const int64_t n = a->n_bins;
    b.uniform = n < (1 << 20) && a->edges[0] == 0.0f && a->edges[n] == 1.0f;
    for (int64_t i = 1; b.uniform && i < n; i++)
        b.uniform = fabs((double)a->edges[i] - (double)i / (double)n) <= 0x1p-23;
    b.near = (float)(4.0 * (double)n * 0x1p-24);
    return b;
}

/* The group's kept lanes added to the bins (fx_metrics_add's calibration terms), one add
   per row: an int64 of hist packs the bin's sum of conf * 2^30 (bits 0-40), its count of
   right argmaxes (41-51) and its count (52-62), which cannot carry into each other
   within FX_BIN_FLUSH_ROWS rows (conf <= 1: 1024 * 2^30 = 2^40); bins_flush unpacks
   them. Lane i adds to copy i % copies (hist + copy * nb), so that rows falling in one
   bin do not wait on each other's adds. A NaN confidence goes to the last bin and makes
   its sum NaN (*nan_conf). */
#define FX_BIN_FLUSH_ROWS 1024
#define FX_BIN_RIGHT_SHIFT 41
#define FX_BIN_KEPT_SHIFT 52
#define FX_BIN_RIGHT_ONE ((int64_t)1 << FX_BIN_RIGHT_SHIFT)
#define FX_BIN_KEPT_ONE ((int64_t)1 << FX_BIN_KEPT_SHIFT)
_Static_assert((int64_t)FX_BIN_FLUSH_ROWS * (int64_t)FX_CONF_FIXED < FX_BIN_RIGHT_ONE
               && FX_BIN_FLUSH_ROWS * FX_BIN_RIGHT_ONE < FX_BIN_KEPT_ONE
               && FX_BIN_KEPT_SHIFT + 11 < 64, "calibration_bins: the packed fields overflow");

/* The packed copies of hist (zeroed) added to the bins' counts (counts[0, nb): items,
   [nb, 2 nb): right ones) and to their sums of conf * 2^30 in qsum[0, nb) (integers below
   2^53 for blocks of fewer than 2^23 rows: exact in float64, in any order). */
static inline void bins_flush(int64_t *hist, int copies, int64_t nb, int64_t *counts,
                              double *qsum)
{
    for (int k = 0; k < copies; k++)
        for (int64_t b = 0; b < nb; b++) {
            const int64_t v = hist[k * nb + b];
            hist[k * nb + b] = 0;
            counts[b] += v >> FX_BIN_KEPT_SHIFT;
            counts[nb + b] += (v >> FX_BIN_RIGHT_SHIFT) & (FX_BIN_FLUSH_ROWS * 2 - 1);
            qsum[b] += (double)(v & (FX_BIN_RIGHT_ONE - 1));
        }
}

FN void calibration_bins(const fx_metrics_args *a, const fx_bins *bins, const VD *conf,
                         VI keep, VI right, int64_t n, int64_t *hist, int copies,
                         int *nan_conf)
{
    typedef float VF __attribute__((vector_size(VL * sizeof(float))));
    typedef int32_t VFI __attribute__((vector_size(VL * sizeof(float))));
    const int64_t nb = a->n_bins + 1;
    const VF c = __builtin_convertvector(vr_of_halves(conf), VF);   /* torchmetrics' float32 */
    const VFI live = __builtin_convertvector(keep, VFI), nan = (c != c) & live;
    const VFI ok = live & ~nan;                     /* kept and a number: 0 < c <= 1 */
    const VF cs = (VF)(ok & (VFI)c);                /* 0 elsewhere: bin 0, adding nothing */
    const VF cn = cs * (float)a->n_bins;
    VFI bin = __builtin_convertvector(cn, VFI);
    const VF frac = cn - __builtin_convertvector(bin, VF);
    const VFI last = (cs >= 1.0f) | nan;
    bin = (last & ((VFI){0} + (int32_t)(nb - 1))) | (~last & bin);
    const VFI near = bins->uniform ? ok & ~last & ((frac < bins->near) | (frac > 1.0f - bins->near))
                                   : ok;
    const VFI q = __builtin_convertvector(cs * (float)FX_CONF_FIXED, VFI);    /* exact, <= 2^30 */
    typedef int64_t VQ __attribute__((vector_size(VL * sizeof(int64_t))));
    const VQ packed = __builtin_convertvector(q, VQ)
                      | (__builtin_convertvector(right, VQ) & FX_BIN_RIGHT_ONE)
                      | (__builtin_convertvector(live, VQ) & FX_BIN_KEPT_ONE);
    int32_t bs[VL];
    int64_t ps[VL];
    memcpy(bs, &bin, sizeof bs);
    memcpy(ps, &packed, sizeof ps);
    if (__builtin_expect(vany(__builtin_convertvector(nan, VI)), 0)) *nan_conf = 1;
    if (__builtin_expect(vany(__builtin_convertvector(near, VI)), 0))
        for (int i = 0; i < n; i++)
            if (near[i]) bs[i] = (int32_t)fx_conf_bin_walk(c[i], fx_conf_bin_guess(c[i], nb),
                                                           a->edges, nb);
    for (int i = 0; i < n; i++) hist[(i & (copies - 1)) * nb + bs[i]] += ps[i];
}

/* What a metrics_group computes (a constant at each call): the loss sums only (the
   log loss); everything, for top-1 and no per-row outputs, where only whether the
   target is the argmax and in the top 1 is read (fx_metrics_item's `exact` == 0); or
   everything exactly. */
typedef enum { FX_METRICS_LOSS, FX_METRICS_TOP1, FX_METRICS_ALL } fx_metrics_parts;

/* One group: rows [r, r + n), n <= VL. A is a's view as the loss's arguments (labels,
   C, ignore_index; hard labels, no weights, no smoothing: item_finish's a = 1). */
FN void metrics_group(const fx_metrics_args *a, const fx_softmax_args *A, int64_t r, int64_t n,
                      fx_metrics_lanes *acc, const fx_bins *bins, int64_t *hist, int copies,
                      int *nan_conf, const fx_metrics_parts parts)
{
    const int64_t C = a->C;
    const R *x = (const R *)a->x + r * C;
    const VR zero = {0};
    VR t[FX_ITEMS_MAX_C];
    const VI lab = a->labels ? items_labels(A, r, n) : visplat(FX_LABEL_IGNORED);
    const VI keep = lab >= 0;
    items_prefetch(x, NULL, NULL, C);
    if (a->labels)
        __builtin_prefetch((const char *)a->labels + (size_t)(r + FX_ITEMS_AHEAD * VL)
                           * fx_label_bytes(a->label_type), 0, 3);

    /* the tile, the max and the target logit per lane (items_group's pass 1) */
    VR m = vsplat(-INFINITY), xt = zero;
    vload_items(x, C, n, -INFINITY, t);
    for (int64_t j = 0; j < C; j++) {
        VR v = t[j];
        m = vmax_fast(m, v);
        xt = vselect(lab == visplat(j), v, xt);
    }
    const VR sh = vselect(m == vsplat(-INFINITY), zero, m);

    /* the exps' sums (items_group's pass 2) */
    VD s[FX_HALVES];
    for (int h = 0; h < FX_HALVES; h++) s[h] = vdsplat(0);
    for (int64_t j = 0; j < C; j++) {
        VR e = vexp_nonpos(t[j] - sh);
        for (int h = 0; h < FX_HALVES; h++) s[h] += vd_half(e, h);
    }

    /* rank_pass for every lane at once: the first max, the classes above the target; a
       group with a NaN (S NaN: a NaN, or inf - inf; m may have dropped the NaN,
       vmax_fast) takes the pass with the NaN terms, as rank_pass's may_nan */
    VDI nan_d = {0};
    for (int h = 0; h < FX_HALVES; h++) nan_d |= s[h] != s[h];
    const int may_nan = vany((VI)nan_d);
    VI argmax = visplat(-1), cnt = {0};
    int general = parts == FX_METRICS_ALL;
    if (parts == FX_METRICS_TOP1 && !may_nan) {
        /* fx_metrics_item's shortcut, in lanes: a target logit below the max is neither
           the argmax nor in the top 1; the max, and no other class equal to it, both.
           A group with a tie at a target's max takes the general loop. */
        VI ties = {0};
        for (int64_t j = 0; j < C; j++) ties -= t[j] == m;
        const VI at_max = keep & (xt == m), only = at_max & (ties == visplat(1));
        if (!vany(at_max & ~only)) {
            cnt = ~only & visplat(1);
            argmax = viselect(only, lab, argmax);
        } else {
            general = 1;
        }
    } else if (parts == FX_METRICS_TOP1) {
        general = 1;
    }
    if (general && !may_nan) {
        argmax = (VI){0};
        for (int64_t j = C - 1; j >= 0; j--) {      /* downwards: the last write is the first max */
            VR v = t[j];
            VI jv = visplat(j);
            argmax = viselect(v == m, jv, argmax);
            cnt -= (v > xt) | ((v == xt) & (jv > lab));      /* set lanes are -1 */
        }
    } else if (general) {
        const VI none = visplat(INT32_MAX), t_nan = xt != xt;
        VI first_max = none, first_nan = none;
        for (int64_t j = 0; j < C; j++) {
            VR v = t[j];
            VI jv = visplat(j), is_nan = v != v, after = jv > lab;
            first_max = vimin(first_max, viselect(v == m, jv, none));
            first_nan = vimin(first_nan, viselect(is_nan, jv, none));
            cnt -= viselect(t_nan, is_nan & after, (v > xt) | is_nan | ((v == xt) & after));
        }
        argmax = viselect(first_nan != none, first_nan,
                          viselect(first_max != none, first_max, (VI){0}));
    }
    const int ranked = parts != FX_METRICS_LOSS;
    const VI above = viselect(keep, ranked ? cnt : lab, lab);  /* rank_pass: a dropped row's code */
    const VI hit = ranked ? keep & (above < visplat(a->top_k < INT32_MAX ? a->top_k : INT32_MAX))
                          : (VI){0};
    const VI right = keep & (argmax == lab);

    /* nll (cross_entropy's loss with a = 1, on its path: items_finish, or at C = 2
       two_class_items) and conf = 1 / S */
    VD nll[FX_HALVES], conf[FX_HALVES], none_d[FX_HALVES];
    for (int h = 0; h < FX_HALVES; h++) none_d[h] = vdsplat(0);
    const VR ones = vzero_unless(keep, vsplat(1));
    if (C == 2) {
        VD loss2[1][FX_HALVES];
        VR unused[1][2];
        two_class_items(A, &t[0], &t[1], &lab, &ones, loss2, unused, 1);
        for (int h = 0; h < FX_HALVES; h++) nll[h] = loss2[0][h];
    } else {
        (void)items_finish(A, lab, m, sh, xt, ones, s, none_d, none_d, nll);
    }
    for (int h = 0; h < FX_HALVES; h++) conf[h] = one_chunk_alpha(vdsplat(1.0), s[h]);

    /* the sums (fx_metrics_add's terms, per lane) */
    const double *sw = a->sample_weight ? a->sample_weight + r : NULL;
    for (int h = 0; h < FX_HALVES; h++) {
        VDI kp = vdi_half(keep, h) != 0, ht = vdi_half(hit, h) != 0;
        VD w = vdzero_unless(kp, vdsplat(1.0)), l = nll[h];   /* the class weight, 0 if dropped */
        VD sv = vdzero_unless(kp, vdload_part(sw, h, n, 1.0));
        if (a->class_weight)
            for (int i = 0; i < VLD; i++)
                w[i] = lab[h * VLD + i] < 0 ? 0.0 : a->class_weight[lab[h * VLD + i]];
        acc->s[FX_MS_NLL][h] += vdzero_unless(w != 0.0, w * l);    /* 0 * inf: dropped */
        acc->s[FX_MS_NLL_WEIGHT][h] += w;
        VD c = vdselect(l < a->clip_lo, vdsplat(a->clip_lo),
                        vdselect(l > a->clip_hi, vdsplat(a->clip_hi), l));
        acc->s[FX_MS_CLIPPED][h] += vdzero_unless(kp, sv * c);
        acc->s[FX_MS_HITS][h] += vdzero_unless(ht, sv);
        acc->s[FX_MS_ITEM_WEIGHT][h] += sv;
        acc->kept[h] += kp;
        acc->hits[h] += ht;
        acc->bad[h] += vdi_half(lab, h) == FX_LABEL_BAD;
    }

    if (ranked) calibration_bins(a, bins, conf, keep, right, n, hist, copies, nan_conf);

    if (a->nll)
        for (int i = 0; i < n; i++) {
            a->nll[r + i] = nll[i / VLD][i % VLD];
            a->conf[r + i] = conf[i / VLD][i % VLD];
            a->argmax[r + i] = argmax[i];
            a->above[r + i] = above[i];
        }
}

/* Calibration bins up to this many keep FX_BIN_COPIES packed copies on the stack
   (metrics_group); more bins, one copy in the scratch part of `counts`. */
#define FX_LOCAL_BINS 64
#define FX_BIN_COPIES 4

/* Rows [r0, r1) of a->x, C <= FX_ITEMS_MAX_C: metrics_rows's signature and results. */
KERNEL void metrics_items(const fx_metrics_args *a, int64_t r0, int64_t r1, fx_chunk *row_chunks,
                          double *sums, int64_t *counts)
{
    (void)row_chunks;
    const int64_t nb = a->n_bins + 1;
    fx_softmax_args A;
    memset(&A, 0, sizeof A);
    A.x = a->x;
    A.labels = a->labels;
    A.label_type = a->label_type;
    A.C = a->C;
    A.ignore_index = a->ignore_index;
    A.weight_total = (double)a->C;
    A.grad_scale = 1.0;
    fx_metrics_lanes acc;
    memset(&acc, 0, sizeof acc);
    int nan_conf = 0;
    int64_t local[FX_BIN_COPIES * FX_LOCAL_BINS];
    const int copies = nb <= FX_LOCAL_BINS ? FX_BIN_COPIES : 1;
    int64_t *hist = nb <= FX_LOCAL_BINS ? local : counts + FX_MC_BINS + 2 * nb;
    for (int64_t i = 0; i < FX_MS_BINS + nb; i++) sums[i] = 0.0;
    for (int64_t i = 0; i < FX_MC_BINS + 2 * nb; i++) counts[i] = 0;
    for (int64_t i = 0; i < copies * nb; i++) hist[i] = 0;
    const fx_bins bins = fx_bins_of(a);
    /* `parts` a constant in each loop: the log loss's loop has no rank or bin code */
    if (a->loss_only)
        for (int64_t r = r0; r < r1; r += VL)
            metrics_group(a, &A, r, r1 - r < VL ? r1 - r : VL, &acc, &bins, hist, copies,
                          &nan_conf, FX_METRICS_LOSS);
    else
        for (int64_t r = r0; r < r1; r += FX_BIN_FLUSH_ROWS) {
            const int64_t end = r1 - r < FX_BIN_FLUSH_ROWS ? r1 : r + FX_BIN_FLUSH_ROWS;
            if (a->top_k == 1 && !a->nll)
                for (int64_t g = r; g < end; g += VL)
                    metrics_group(a, &A, g, end - g < VL ? end - g : VL, &acc, &bins, hist,
                                  copies, &nan_conf, FX_METRICS_TOP1);
            else
                for (int64_t g = r; g < end; g += VL)
                    metrics_group(a, &A, g, end - g < VL ? end - g : VL, &acc, &bins, hist,
                                  copies, &nan_conf, FX_METRICS_ALL);
            bins_flush(hist, copies, nb, counts + FX_MC_BINS, sums + FX_MS_BINS);
        }
    for (int k = 0; k < FX_MS_BINS; k++)
        for (int h = 0; h < FX_HALVES; h++)
            for (int i = 0; i < VLD; i++) sums[k] += acc.s[k][h][i];
    for (int h = 0; h < FX_HALVES; h++)
        for (int i = 0; i < VLD; i++) {
            counts[FX_MC_KEPT] -= acc.kept[h][i];
            counts[FX_MC_HITS] -= acc.hits[h][i];
            counts[FX_MC_BAD] -= acc.bad[h][i];
        }
    for (int64_t b = 0; b < nb; b++) sums[FX_MS_BINS + b] /= FX_CONF_FIXED;     /* exact */
    if (nan_conf) sums[FX_MS_BINS + nb - 1] = NAN;      /* where fx_conf_bin puts a NaN */
}

#endif /* FX_METRICS_H */
