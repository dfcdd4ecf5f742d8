/*
 * Softmax over rows (the class axis last): the cross-entropy family (cross_entropy,
 * nll_loss) and the building blocks (logsumexp, softmax, log_softmax, entropy).
 *
 * A row is cut into chunks of FX_CHUNK_BYTES (fixed, so the numerics do not depend on
 * how rows are spread over threads); each chunk's passes run while it sits in L1:
 *   chunk stats (per chunk): the max pass, then the exp pass (e_j into the gradient,
 *       and the sums of fx_softmax_item.h's notation);
 *   row finish (per row): the chunks merged, the item's loss and each chunk's gradient
 *       factor (fx_item_loss);
 *   chunk grad (per chunk): g_j = alpha e_j - scale b_j, and the hard label's term.
 * The row path (softmax_rows) and the chunk-parallel path (few long rows, driven from
 * _core.pyx) call the same three functions in the same order per row: the same bits.
 */
#ifndef FX_SOFTMAX_ROWS_H
#define FX_SOFTMAX_ROWS_H

#include "fx_vecmath.h"
#include "fx_softmax_item.h"
#include "fx_variants.h"

#define CHUNK ((int64_t)(FX_CHUNK_BYTES / sizeof(R)))
#define FX_STREAM_MIN_ROW_BYTES 2048
/* How far ahead of the exp pass the next rows are fetched: at least a chunk, and for
   short rows several of them. One row of 1000 float32 ahead is about 60 ns of exps,
   less than memory's latency: at 10000x1000 (40 MB, streamed) the forward ran 1.37x
   faster with 16 KiB ahead than with one row (AVX-512 and AVX2, 1 and 2 threads, on a
   Zen 5; 8 KiB 1.04x slower, 32 KiB 1.11x slower). */
#define FX_PREFETCH_AHEAD ((int64_t)(16384 / sizeof(T)))

/* ------------------------------------------------------------ passes over a chunk */

/* max of a row (chunk); see vmax_fast for NaN. Half rows: from the bit patterns. */
FN R row_max(const T *x, int64_t C)
{
#if FX_HALF
    return hmax_t(x, C);
#else
    VR m0 = vsplat(-INFINITY), m1 = m0;
    int64_t j = 0;
    for (; j + 2 * VL <= C; j += 2 * VL) {
        m0 = vmax_fast(m0, vload_t(x + j));
        m1 = vmax_fast(m1, vload_t(x + j + VL));
    }
    for (; j < C; j += VL) {
        VR v = j + VL <= C ? vload_t(x + j) : vload_t_part(x + j, C - j, -INFINITY);
        m0 = vmax_fast(m0, v);
    }
    return vhmax_nan(vmax_nan(m0, m1));
#endif
}

/* target_weights for the classes [j, j + n) of a chunk, w and y already offset to the
   chunk; `weighted` (a constant of the variant) says whether w is read. */
FN VR target_weights_at(int aux, int weighted, const R *w, const T *y, int64_t j, int full,
                        int64_t n, R c1, R c0)
{
    VR wv = weighted ? (full ? vload(w + j) : vload_part(w + j, n, 0)) : vsplat(1);
    VR yv = aux == FX_AUX_SOFT ? (full ? vload_t(y + j) : vload_t_part(y + j, n, 0)) : (VR){0};
    return target_weights(aux, wv, yv, c1, c0);
}

/* k vectors of the exp pass from j, the last with n live lanes of VL (the others full):
   e = exp(x - sh) into s[u] (and g), the aux sums into bd[u], bsum[u]; see exp_pass. */
FN void exp_step(const T *x, R *g, int64_t j, int k, int64_t n, R sh, int aux, int weighted,
                 const R *w, const T *y, R c1, R c0, VR *s, VR *bd, VR *bsum, double *spill)
{
    VR v[FX_EXP_MAX_K], e[FX_EXP_MAX_K];
    for (int u = 0; u < k; u++) {
        int full = u < k - 1 || n == VL;
        v[u] = full ? vload_t(x + j + u * VL) : vload_t_part(x + j + u * VL, n, -INFINITY);
        e[u] = v[u] - sh;
    }
    vexp_nonpos_k(e, k);
    for (int u = 0; u < k; u++) {
        int64_t ju = j + u * VL;
        int full = u < k - 1 || n == VL;
        s[u] += e[u];
        if (aux == FX_AUX_LSE_REST) {
            VR shv = vsplat(sh);
            bsum[u] += vzero_unless(v[u] < shv, e[u]);
            bd[u] += vzero_unless(v[u] == shv, vsplat(1));
        } else if (aux != FX_AUX_NONE) {
            VR b;
            if (aux == FX_AUX_ENTROPY) {
                b = e[u];
            } else {
                VI live = full ? ~(VI){0} : vlive(n);
                b = vzero_unless(live, target_weights_at(aux, weighted, w, y, ju, full, n, c1, c0));
                bsum[u] += b;
            }
            bd[u] += bd_terms(b, vsplat(sh), v[u], spill);
        }
        if (g) {
            if (full) vstore(g + ju, e[u]);
            else vstore_part(g + ju, e[u], n);
        }
    }
}

/* The exp pass over one chunk: e_j = exp(x_j - sh), s = sum e_j, e_j stored to g when
   g != NULL, and per aux, with d_j = sh - x_j:
     SMOOTH, SOFT: b_j from target_weights    -> bd = sum b_j d_j, bsum = sum b_j
     ENTROPY: b_j = e_j                        -> bd
   (b_j == 0 terms count 0 even where d_j is inf.) Instantiated per declared variant
   (fx_variants.h), so each is its own loop with no per-element branches. The partial
   sums are folded into float64 every FX_FOLD_ELEMS elements, in an order fixed by C
   alone. */
FN void exp_pass(const T *x, R *g, int64_t C, R sh, int aux, int weighted, const R *w,
                 const T *y, R c1, R c0, fx_chunk *out)
{
    enum { U = FX_EXP_MAX_K };
    _Static_assert(U == 4, "the folds below add four accumulators");
    VR zero = {0}, s[U], bd[U], bsum[U];
    double s_acc = 0.0, bd_acc = 0.0, bsum_acc = 0.0, spill[VL] = {0};
    for (int u = 0; u < U; u++) s[u] = bd[u] = bsum[u] = zero;
    int64_t j = 0, since_fold = 0;
    const int64_t ahead = C > FX_PREFETCH_AHEAD ? C : FX_PREFETCH_AHEAD;
    for (; j + U * VL <= C; j += U * VL) {
        /* what follows this chunk in memory (the next chunks, or the next rows) is read
           next: fetch it into L2 meanwhile, so that its max pass does not wait for memory
           with the core idle (hardware prefetchers stop at page boundaries) */
        for (int b = 0; b < U * VL * (int)sizeof(T); b += 64)
            __builtin_prefetch((const char *)(x + ahead + j) + b, 0, 2);
        if (g)
            for (int b = 0; b < U * VL * (int)sizeof(R); b += 64)
                __builtin_prefetch((const char *)(g + ahead + j) + b, 1, 2);
        exp_step(x, g, j, U, VL, sh, aux, weighted, w, y, c1, c0, s, bd, bsum, spill);
        since_fold += U * VL;
        if (since_fold >= FX_FOLD_ELEMS) {
            s_acc += vhsum((s[0] + s[1]) + (s[2] + s[3]));
            if (aux != FX_AUX_NONE) {
                bd_acc += vhsum((bd[0] + bd[1]) + (bd[2] + bd[3]));
                bsum_acc += vhsum((bsum[0] + bsum[1]) + (bsum[2] + bsum[3]));
            }
            for (int u = 0; u < U; u++) s[u] = bd[u] = bsum[u] = zero;
            since_fold = 0;
        }
    }
    /* the last < U vectors: a lane of s[0] gets at most U more terms */
    for (; j < C; j += VL) {
        int full = j + VL <= C;
        exp_step(x, g, j, 1, full ? VL : C - j, sh, aux, weighted, w, y, c1, c0, s, bd, bsum,
                 spill);
    }
    for (int i = 0; i < VL; i++) bd_acc += spill[i];
    out->s = s_acc + vhsum((s[0] + s[1]) + (s[2] + s[3]));
    out->bd = bd_acc + vhsum((bd[0] + bd[1]) + (bd[2] + bd[3]));
    out->bsum = bsum_acc + vhsum((bsum[0] + bsum[1]) + (bsum[2] + bsum[3]));
}

/* The gradient pass over g, which holds e_j: g_j = alpha e_j - beta b_j, with b_j from
   target_weights (no b term for NONE); alpha e_j unrounded where the ISA has FMA
   (vmul_sub), as in the class-axis kernel. */
FN void grad_pass(R *g, int64_t C, R alpha, R beta, int aux, int weighted, const R *w,
                  const T *y, R c1, R c0)
{
    for (int64_t j = 0; j < C; j += VL) {
        int full = j + VL <= C;
        int64_t n = full ? VL : C - j;
        VR e = full ? vload(g + j) : vload_part(g + j, n, 0);
        VR gv = aux == FX_AUX_SMOOTH || aux == FX_AUX_SOFT
              ? vmul_sub(e, vsplat(alpha), target_weights_at(aux, weighted, w, y, j, full, n, c1, c0) * beta)
              : e * alpha;
        if (full) vstore(g + j, gv);
        else vstore_part(g + j, gv, n);
    }
}

/* Statistics of one chunk whose max m is known: m, the shift sh it used (m, or 0 for a
   chunk of -inf only, whose e_j are then exactly 0), and exp_pass's sums. */
FN void chunk_stats_at(const T *x, R *g, int64_t n, R m, int aux, int weighted, const R *w,
                       const T *y, R c1, R c0, fx_chunk *st)
{
    R sh = m == -INFINITY ? 0 : m;
    exp_pass(x, g, n, sh, aux, weighted, w, y, c1, c0, st);
    st->m = m;
    st->sh = sh;
}

/* Statistics of one chunk (chunk_stats_at after its max pass). */
FN void chunk_stats(const T *x, R *g, int64_t n, int aux, int weighted, const R *w,
                    const T *y, R c1, R c0, fx_chunk *st)
{
    chunk_stats_at(x, g, n, row_max(x, n), aux, weighted, w, y, c1, c0, st);
}

/* ------------------------------------------------------------ cross-entropy family */

/* The class of a row's hard label, FX_LABEL_IGNORED or FX_LABEL_BAD; soft targets: 0. */
FN int64_t row_label(const fx_softmax_args *A, int64_t row)
{
    return A->soft ? 0 : fx_label(A->labels, A->label_type, row, A->C, A->ignore_index);
}

/* Chunk stats with e_j written to g (the chunk's place in the gradient, a buffer, or
   NULL), through the call's declared variant (fx_softmax_variant). */
FN void chunk_stats_to(const fx_softmax_args *A, int variant, int64_t row, int64_t c,
                       fx_chunk *st, R *g)
{
    const int64_t C = A->C, j0 = c * CHUNK;
    const int64_t n = C - j0 < CHUNK ? C - j0 : CHUNK;
    const T *x = (const T *)A->x + row * C + j0;
    const R *w = A->weight ? (const R *)A->weight + j0 : NULL;
    const T *y = A->soft ? (const T *)A->soft + row * C + j0 : NULL;
    const double eps = A->smoothing;
    const R c1 = (R)(1.0 - eps), c0 = (R)(eps / (double)C);
    int64_t label = row_label(A, row);
    st->xt = 0.0;
    if (label < 0) {                    /* ignored (or a label changed since validation) */
        if (g) memset(g, 0, (size_t)n * sizeof(R));
        st->m = st->sh = st->s = st->bd = st->bsum = 0.0;
        return;
    }
    if (!A->soft && label >= j0 && label < j0 + n)
        st->xt = (double)load_t(x + (label - j0));                 /* before g overwrites x */
    switch (variant) {
#define FX_CASE(name, AUX, W)                                                           \
    case FX_SOFTMAX_##name:                                                             \
        if (g) chunk_stats(x, g, n, AUX, W, w, y, c1, c0, st);                          \
        else chunk_stats(x, NULL, n, AUX, W, w, y, c1, c0, st);                         \
        break;
    FX_SOFTMAX_VARIANTS(FX_CASE)
#undef FX_CASE
    }
}

KERNEL void softmax_chunk_stats(const fx_softmax_args *A, int64_t row, int64_t c, fx_chunk *st)
{
#if FX_HALF
    R *g = NULL;    /* a half gradient cannot hold e_j unrounded: softmax_chunk_grad makes them again */
#else
    R *g = A->grad ? (R *)A->grad + row * A->C + c * CHUNK : NULL;
#endif
    chunk_stats_to(A, fx_softmax_variant(A), row, c, st, g);
}

/* The row's loss from its chunks (and each chunk's gradient factor, fx_item_loss). */
KERNEL double softmax_row_finish(const fx_softmax_args *A, int64_t row, fx_chunk *st)
{
    const int64_t nch = (A->C + CHUNK - 1) / CHUNK;
    int64_t label = row_label(A, row);
    double loss = fx_dropped_loss(label);
    if (label >= 0) {
        double wt = A->soft ? 1.0 : class_weight((const R *)A->weight, label);
        loss = fx_item_loss(A, st, nch, wt, A->soft ? 0.0 : st[label / CHUNK].xt, NULL);
    }
    if (A->item_loss) ((R *)A->item_loss)[row] = (R)loss;
    return loss;
}

/* Chunk grad over g, which holds the chunk's e_j from chunk_stats_to */
FN void chunk_grad_to(const fx_softmax_args *A, int variant, int64_t row, int64_t c,
                      const fx_chunk *st, R *g)
{
    const int64_t C = A->C, j0 = c * CHUNK;
    const int64_t n = C - j0 < CHUNK ? C - j0 : CHUNK;
    const R *w = A->weight ? (const R *)A->weight + j0 : NULL;
    const T *y = A->soft ? (const T *)A->soft + row * C + j0 : NULL;
    const double eps = A->smoothing, scale = A->grad_scale;
    const R c1 = (R)(1.0 - eps), c0 = (R)(eps / (double)C);
    const R alpha = (R)st[c].alpha;
    int64_t label = row_label(A, row);
    if (label < 0) return;                                /* zeroed by chunk_stats_to */
    switch (variant) {
#define FX_CASE(name, AUX, W)                                                           \
    case FX_SOFTMAX_##name:                                                             \
        grad_pass(g, n, alpha, (R)scale, AUX, W, w, y, c1, c0);                         \
        break;
    FX_SOFTMAX_VARIANTS(FX_CASE)
#undef FX_CASE
    }
    if (!A->soft && label >= j0 && label < j0 + n)
        g[label - j0] = (R)fx_target_grad(A, (double)g[label - j0], class_weight((const R *)A->weight, label));
}

/* The gradient of chunk c of a row made over e, a float32 buffer holding the chunk's e_j
   (chunk_stats_to), then copied out into the gradient (stream_copy_t: rounded once into
   a half gradient). */
FN void chunk_grad_out(const fx_softmax_args *A, int variant, int64_t row, int64_t c,
                       const fx_chunk *st, R *e)
{
    const int64_t j0 = c * CHUNK, n = A->C - j0 < CHUNK ? A->C - j0 : CHUNK;
    chunk_grad_to(A, variant, row, c, st, e);
    stream_copy_t((T *)A->grad + row * A->C + j0, e, n);
}

KERNEL void softmax_chunk_grad(const fx_softmax_args *A, int64_t row, int64_t c, const fx_chunk *st)
{
#if FX_HALF
    /* the chunk's e_j again (the same bits as in softmax_chunk_stats) into a float32
       buffer, the gradient there, then rounded once into the half gradient; x's chunk
       is read before the gradient's is written, so in place works */
    R buf[CHUNK] __attribute__((aligned(64)));
    fx_chunk again;
    const int variant = fx_softmax_variant(A);
    chunk_stats_to(A, variant, row, c, &again, buf);
    chunk_grad_out(A, variant, row, c, st, buf);
#else
    chunk_grad_to(A, fx_softmax_variant(A), row, c, st, (R *)A->grad + row * A->C + c * CHUNK);
#endif
}

/* nll_loss on log-probabilities (fx_nll_loss): one row. */
FN double nll_row(const fx_softmax_args *A, int64_t row)
{
    const int64_t C = A->C;
    const T *x = (const T *)A->x + row * C;
    T *g = A->grad ? (T *)A->grad + row * C : NULL;
    int64_t label = row_label(A, row);
    double loss = fx_dropped_loss(label), wt = 0.0;
    if (label >= 0) {
        wt = class_weight((const R *)A->weight, label);
        loss = fx_nll_loss(wt, (double)load_t(x + label));     /* read before g (maybe x) is zeroed */
    }
    if (g) {
        memset(g, 0, (size_t)C * sizeof(T));
        if (label >= 0) store_t(g + label, (R)fx_nll_grad(A, wt));
    }
    if (A->item_loss) ((R *)A->item_loss)[row] = (R)loss;
    return loss;
}

/* Rows of one chunk (C <= CHUNK) in groups of up to VL rows, each group's phases in one
   loop per declared variant (a constant `variant` folds chunk_stats_to's and
   chunk_grad_to's switches, and each loop keeps its own registers): each row's chunk
   stats, the group's finish as one vector finish (items_finish_log, lanes are rows; a
   finish per row, fx_item_loss, was a third of the time of a row of 100 float32), then
   each row's gradient. A row's bits do not depend on its group (the finish works lane
   by lane), so the groups may be cut anywhere: a group is as many rows as a chunk holds
   (at most VL), so that their e_j are still in L1 for the gradient pass (16 rows of 1000
   float32 measured 0.88x forward+backward on AVX-512). With `stream` (A->stream_grad, or
   a half-precision gradient), the group's gradients are made in buf and then streamed
   out with non-temporal stores. */
FN double rows_one_chunk(const fx_softmax_args *A, int variant, int stream, int64_t r0,
                         int64_t r1)
{
    R buf[CHUNK] __attribute__((aligned(64)));      /* (used with stream only) */
    const int64_t C = A->C;
    const int64_t group = CHUNK / C < VL ? CHUNK / C : VL;         /* C <= CHUNK: >= 1 */
    fx_chunk st[VL];
    double total = 0.0;
    for (int64_t r = r0; r < r1; r += group) {
        const int64_t n = r1 - r < group ? r1 - r : group;
        /* the finish's lanes; those past n stay an ignored item of loss 0 */
        VI lab = (VI){0} + FX_LABEL_IGNORED;
        VR m = {0}, sh = {0}, xt = {0}, wt = {0};
        double s[VL], bd[VL], bsum[VL];
        for (int64_t i = 0; i < n; i++) {
            R *g = stream ? buf + i * C : A->grad ? (R *)A->grad + (r + i) * C : NULL;
            chunk_stats_to(A, variant, r + i, 0, st + i, g);
            int64_t label = row_label(A, r + i);
            lab[i] = (__typeof__(lab[0]))label;
            m[i] = (R)st[i].m;
            sh[i] = (R)st[i].sh;
            xt[i] = (R)st[i].xt;
            wt[i] = label >= 0 && !A->soft ? (R)class_weight((const R *)A->weight, label) : 1;
            s[i] = st[i].s;
            bd[i] = st[i].bd;
            bsum[i] = st[i].bsum;
        }
        for (int64_t i = n; i < VL; i++) s[i] = 1.0, bd[i] = bsum[i] = 0.0;
        /* log S in float64 by libm, as fx_item_loss has it (the vector log is R's
           accuracy, and at one item per call 1.3x slower) */
        double log_s[VL];
        for (int64_t i = 0; i < VL; i++) log_s[i] = i < n ? log(s[i]) : 0.0;
        VD sv[FX_HALVES], bdv[FX_HALVES], bsumv[FX_HALVES], log_sv[FX_HALVES], loss[FX_HALVES];
        memcpy(sv, s, sizeof sv);
        memcpy(bdv, bd, sizeof bdv);
        memcpy(bsumv, bsum, sizeof bsumv);
        memcpy(log_sv, log_s, sizeof log_sv);
        VR alpha = items_finish_log(A, lab, m, sh, xt, wt, sv, bdv, bsumv, log_sv, loss);
        double l[VL];
        memcpy(l, loss, sizeof l);
        for (int64_t i = 0; i < n; i++) {
            total += l[i];
            if (A->item_loss) ((R *)A->item_loss)[r + i] = (R)l[i];
        }
        if (!A->grad) continue;
        for (int64_t i = 0; i < n; i++) {
            R *g = stream ? buf + i * C : (R *)A->grad + (r + i) * C;
            st[i].alpha = alpha[i];
            chunk_grad_to(A, variant, r + i, 0, st + i, g);
        }
        if (stream) stream_copy_t((T *)A->grad + r * C, buf, n * C);
    }
    if (stream) stream_fence();
    return total;
}

static __attribute__((noinline)) FX_TARGET_ATTR double
softmax_rows_one_chunk(const fx_softmax_args *A, int64_t r0, int64_t r1)
{
    /* (half: the gradient made in buf, as it must be, and rounded once on its way out) */
    /* Non-temporal stores pay off for whole lines: a short row's start and end share
       lines with its neighbours, written by the plain stores of stream_copy's head and
       tail, and mixing the two on a line costs more than streaming saves (AVX2, 37
       classes: 2x slower), so rows under FX_STREAM_MIN_ROW_BYTES are not streamed. */
    int stream = ((A->stream_grad && A->C * (int64_t)sizeof(R) >= FX_STREAM_MIN_ROW_BYTES)
                  || FX_HALF) && A->grad;
    switch (fx_softmax_variant(A)) {
#define FX_CASE(name, AUX, W)                                                           \
    case FX_SOFTMAX_##name:                                                             \
        return stream ? rows_one_chunk(A, FX_SOFTMAX_##name, 1, r0, r1)                 \
                      : rows_one_chunk(A, FX_SOFTMAX_##name, 0, r0, r1);
    FX_SOFTMAX_VARIANTS(FX_CASE)
#undef FX_CASE
    }
    return NAN;
}

/* A half instance's float32 row for a row's e_j (fx_row_scratch), or NULL (none given,
   or not a half instance: the others keep e_j in their own output). */
FN R *half_row_e(const fx_row_scratch *scratch)
{
#if FX_HALF
    return scratch ? scratch->e : NULL;
#else
    (void)scratch;
    return NULL;
#endif
}

KERNEL double softmax_rows(const fx_softmax_args *A, int64_t r0, int64_t r1,
                           const fx_row_scratch *scratch)
{
    const int64_t C = A->C, nch = (C + CHUNK - 1) / CHUNK;
    if (nch == 1 && !A->logprob_input) return softmax_rows_one_chunk(A, r0, r1);
    fx_chunk local[FX_LOCAL_CHUNKS];
    fx_chunk *st = nch <= FX_LOCAL_CHUNKS ? local : scratch->chunks;   /* see fx_api.h */
    /* a half row's e_j kept in float32 for its gradient pass (fx_row_scratch): one exp
       pass, not two, and the x the second pass would read again from memory */
    R *e = A->grad ? half_row_e(scratch) : NULL;
    const int variant = fx_softmax_variant(A);
    double total = 0.0;
    for (int64_t r = r0; r < r1; r++) {
        if (A->logprob_input) { total += nll_row(A, r); continue; }
        for (int64_t c = 0; c < nch; c++)
            if (e) chunk_stats_to(A, variant, r, c, st + c, e + c * CHUNK);
            else softmax_chunk_stats(A, r, c, st + c);
        total += softmax_row_finish(A, r, st);
        if (!A->grad) continue;
        for (int64_t c = 0; c < nch; c++)    /* softmax_chunk_grad's half path, from the kept e_j */
            if (e) chunk_grad_out(A, variant, r, c, st, e + c * CHUNK);
            else softmax_chunk_grad(A, r, c, st);
    }
    return total;
}

/* ------------------------------------------------------------ building blocks */

/* log_softmax of a row of C from its max M and log S: (x - M) - log S (not
   x - (M + log S): that would round). */
FN void log_softmax_row(const T *x, T *o, int64_t C, R M, R ls)
{
    for (int64_t j = 0; j < C; j += VL) {
        int full = j + VL <= C;
        VR v = full ? vload_t(x + j) : vload_t_part(x + j, C - j, 0);
        VR o_v = (v - M) - ls;
        if (full) vstore_t(o + j, o_v);
        else vstore_t_part(o + j, o_v, C - j);
    }
}

/* logsumexp, softmax, log_softmax or entropy of rows [r0, r1), from the same chunk
   stats as the losses. */
KERNEL void softmax_outputs_rows(const void *xv, void *outv, int64_t C, int64_t r0, int64_t r1,
                                 fx_softmax_output what, const fx_row_scratch *scratch)
{
    const int64_t nch = (C + CHUNK - 1) / CHUNK;
    fx_chunk local[FX_LOCAL_CHUNKS];
    fx_chunk *st = nch <= FX_LOCAL_CHUNKS ? local : scratch->chunks;   /* see fx_api.h */
    /* where softmax keeps e_j for its second pass: the output itself, or for a half
       output the float32 scratch (fx_row_scratch; NULL there: made again below) */
    R *kept = what != FX_OUT_SOFTMAX ? NULL : FX_HALF ? half_row_e(scratch) : (R *)outv;
    for (int64_t r = r0; r < r1; r++) {
        const T *x = (const T *)xv + r * C;
        T *o = (T *)outv + r * C;
        R *e = !kept ? NULL : FX_HALF ? kept : kept + r * C;
        for (int64_t c = 0; c < nch; c++) {
            int64_t j0 = c * CHUNK, n = C - j0 < CHUNK ? C - j0 : CHUNK;
            if (what == FX_OUT_ENTROPY)
                chunk_stats(x + j0, NULL, n, FX_AUX_ENTROPY, 0, NULL, NULL, 0, 0, st + c);
            else if (e)
                chunk_stats(x + j0, e + j0, n, FX_AUX_NONE, 0, NULL, NULL, 0, 0, st + c);
            else
                chunk_stats(x + j0, NULL, n, FX_AUX_NONE, 0, NULL, NULL, 0, 0, st + c);
        }
        fx_merged mg = fx_merge_chunks(st, nch);
        if (what == FX_OUT_LOGSUMEXP) {
            double log1p_rest = 0.0;   /* lse_finish; a second pass, where it is needed */
            if (lse_needs_rest(mg.M, mg.S)) {
                double ties = 0.0, rest = 0.0;   /* the maxima; the other terms */
                for (int64_t c = 0; c < nch; c++) {
                    int64_t j0 = c * CHUNK, n = C - j0 < CHUNK ? C - j0 : CHUNK;
                    chunk_stats(x + j0, NULL, n, FX_AUX_LSE_REST, 0, NULL, NULL, 0, 0, st + c);
                    if (st[c].s == 0.0) continue;              /* all -inf */
                    if (st[c].m == mg.M) {
                        ties += st[c].bd;
                        rest += st[c].bsum;
                    } else {
                        rest += st[c].s * exp(st[c].sh - mg.M);
                    }
                }
                log1p_rest = log1p((ties - 1.0) + rest);
            }
            /* A NaN reaches S (the max pass may drop it), but so does inf - inf when
               M = +inf: that rare case looks for a NaN. */
            int has_nan = isnan(mg.S);
            if (mg.M == INFINITY) {
                has_nan = 0;
                for (int64_t j = 0; j < C; j++) has_nan |= load_t(x + j) != load_t(x + j);
            }
            store_t((T *)outv + r, (R)lse_finish(vdsplat(mg.M), vdsplat(mg.S), vdsplat(log(mg.S)),
                                                 vdsplat(log1p_rest), (VDI){0} - has_nan)[0]);
        } else if (what == FX_OUT_ENTROPY) {
            store_t((T *)outv + r, (R)(log(mg.S) + fx_entropy_term(st, nch, &mg)));
        } else if (what == FX_OUT_SOFTMAX) {
            fx_set_alphas(st, nch, &mg, 1.0);
            for (int64_t c = 0; c < nch; c++) {
                int64_t j0 = c * CHUNK, n = C - j0 < CHUNK ? C - j0 : CHUNK;
#if FX_HALF
                R buf[CHUNK] __attribute__((aligned(64)));
                R *ec = e ? e + j0 : buf;
                fx_chunk again;
                if (!e) chunk_stats(x + j0, buf, n, FX_AUX_NONE, 0, NULL, NULL, 0, 0, &again);
                grad_pass(ec, n, (R)st[c].alpha, 0, FX_AUX_NONE, 0, NULL, NULL, 0, 0);
                stream_copy_t(o + j0, ec, n);
#else
                grad_pass(o + j0, n, (R)st[c].alpha, 0, FX_AUX_NONE, 0, NULL, NULL, 0, 0);
#endif
            }
        } else {
            log_softmax_row(x, o, C, (R)mg.M, (R)log(mg.S));
        }
    }
}

#endif /* FX_SOFTMAX_ROWS_H */
