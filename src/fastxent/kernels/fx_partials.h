/*
 * Softmax partials: the softmax family over a row whose classes are split into blocks
 * held by different workers (Dask, Ray, Spark, MPI). A block holds the classes
 * [offset, offset + width) of each of its rows; per row it gives an fx_partial (fx_api.h),
 * partials merge exactly, and the merged partial of a row gives its loss and, block by
 * block, its gradient. The formulas are those of one softmax item (fx_softmax_item.h):
 * the passes over a block are the chunk passes of fx_softmax_rows.h, the merge is
 * fx_merge_chunks on two "chunks", the loss is fx_item_loss, the hard label's gradient
 * term fx_target_grad.
 *
 * In the notation of fx_softmax_item.h, a partial holds
 *     m = max_j x_j,  s = sum_j exp(x_j - sh),  a = sum_j b_j,  bd = sum_j b_j (sh - x_j)
 * over the block's classes, with sh = m (0 when m == -inf, as for a chunk), and b_j
 * including the hard label's (1-eps) w_t when t lies in the block; and w, the item's
 * weight in the mean (w_t, from the block holding t; 1 for a soft target, from the block
 * holding class 0), and kept (0 for an ignored item). Then loss = a log S + bd (merged).
 */
#ifndef FX_PARTIALS_H
#define FX_PARTIALS_H

#include "fx_softmax_rows.h"

/* A partial read as a chunk (fx_chunk's fields), and back. */
FN fx_chunk fx_partial_chunk(const fx_partial *p)
{
    fx_chunk c = {0};
    c.m = p->m;
    c.sh = p->m == -INFINITY ? 0.0 : p->m;
    c.s = p->s;
    c.bd = p->bd;
    c.bsum = p->a;
    return c;
}

/* Chunks of a row (all from one block or partials) merged into the partial's m, s, a, bd
   (bd about sh(M), as a chunk's). A row of -inf only keeps sh = 0, where every chunk's
   bd already is. */
FN void fx_partial_from_chunks(const fx_chunk *st, int64_t nch, fx_partial *out)
{
    fx_merged mg = fx_merge_chunks(st, nch);
    out->m = mg.M;
    out->s = mg.S;
    out->a = mg.bsum;
    if (mg.M == -INFINITY) {
        double bd = 0.0;
        for (int64_t c = 0; c < nch; c++) bd += st[c].bd;
        out->bd = bd;
    } else {
        out->bd = mg.bdM;
    }
}

/* The partials of rows [r0, r1) of one block (rows, width) into P->parts. */
KERNEL void softmax_block_partials(const fx_partials_args *P, int64_t r0, int64_t r1,
                                   fx_chunk *row_chunks)
{
    const int64_t W = P->width, nch = (W + CHUNK - 1) / CHUNK;
    const double eps = P->smoothing;
    const R c1 = (R)(1.0 - eps), c0 = (R)(eps / (double)P->classes);
    const int soft = P->soft != NULL, hard = P->labels != NULL;
    const int aux = soft ? FX_AUX_SOFT : (hard && eps > 0.0) ? FX_AUX_SMOOTH : FX_AUX_NONE;
    const int weighted = P->weight != NULL && aux != FX_AUX_NONE;
    const R *wv = (const R *)P->weight;
    fx_chunk local[FX_LOCAL_CHUNKS];
    fx_chunk *st = nch <= FX_LOCAL_CHUNKS ? local : row_chunks;   /* see fx_api.h */
    /* (float32 / float64 only: partials.py refuses half inputs, whose T is not R) */
    for (int64_t r = r0; r < r1; r++) {
        fx_partial *o = P->parts + r;
        const R *x = (const R *)P->x + r * W;
        const R *y = soft ? (const R *)P->soft + r * W : NULL;
        int64_t label = hard ? fx_label(P->labels, P->label_type, r, P->classes, P->ignore_index) : 0;
        o->w = 0.0;
        o->kept = 1.0;
        if (label < 0) {            /* ignored (or no longer valid: NaN, as the row path) */
            o->m = -INFINITY;
            o->s = o->a = o->bd = 0.0;
            o->kept = label == FX_LABEL_IGNORED ? 0.0 : NAN;
            continue;
        }
        for (int64_t c = 0; c < nch; c++) {
            int64_t j0 = c * CHUNK, n = W - j0 < CHUNK ? W - j0 : CHUNK;
            const R *wc = wv ? wv + j0 : NULL, *yc = y ? y + j0 : NULL;
            switch (aux * 2 + weighted) {   /* each declared variant its own loop */
#define FX_CASE(name, AUX, W)                                                              \
            case AUX * 2 + W:                                                                  \
                chunk_stats((const T *)(const void *)(x + j0), NULL, n, AUX, W, wc,            \
                            (const T *)(const void *)yc, c1, c0, st + c);                      \
                break;
            FX_SOFTMAX_VARIANTS(FX_CASE)
#undef FX_CASE
            }
        }
        if (nch == 0) {             /* a block of no classes adds nothing */
            o->m = -INFINITY;
            o->s = o->a = o->bd = 0.0;
        } else {
            fx_partial_from_chunks(st, nch, o);
        }
        if (hard && label >= P->offset && label < P->offset + W) {
            double wt = class_weight(wv, label - P->offset);
            double b_t = (1.0 - eps) * wt;
            o->w = wt;
            if (b_t != 0.0) {       /* b_t (sh - x_t): 0 where b_t == 0, as bd_terms */
                double sh = o->m == -INFINITY ? 0.0 : o->m;
                o->a += b_t;
                o->bd += b_t * (sh - (double)x[label - P->offset]);
            }
        } else if (soft && P->offset == 0 && W > 0) {
            o->w = 1.0;
        }
    }
}

/* out[i] = a[i] merged with b[i], for i in [0, n): max, sum of exp at the new max, the
   target sums shifted to it (fx_merge_chunks), weights added. out may alias a or b. */
KERNEL void softmax_partials_merge(const fx_partial *a, const fx_partial *b, fx_partial *out,
                                   int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        fx_chunk st[2] = {fx_partial_chunk(a + i), fx_partial_chunk(b + i)};
        double w = a[i].w + b[i].w;
        double kept = a[i].kept < b[i].kept ? a[i].kept : b[i].kept;
        if (a[i].kept != a[i].kept || b[i].kept != b[i].kept) kept = NAN;
        fx_partial_from_chunks(st, 2, out + i);
        out[i].w = w;
        out[i].kept = kept;
    }
}

/* The loss of each of n merged partials into loss[i] (float64): a log S + bd for a kept
   item (fx_item_loss), 0 for an ignored one, NaN for an invalid one. */
KERNEL void softmax_partials_loss(const fx_partial *p, double *loss, int64_t n)
{
    fx_softmax_args A = {0};
    A.soft = p;                 /* a = the partial's a, bd its bd: the soft-target finish */
    A.C = 1;
    for (int64_t i = 0; i < n; i++) {
        if (p[i].kept != 1.0) {
            loss[i] = p[i].kept == 0.0 ? 0.0 : NAN;
            continue;
        }
        fx_chunk st = fx_partial_chunk(p + i);
        loss[i] = fx_item_loss(&A, &st, 1, 1.0, 0.0, NULL);
    }
}

/* Per row of rows [r0, r1) of a block, from the row's merged partial P->merged[r]:
     FX_PART_GRAD: the gradient scale (a p_j - b_j), less scale (1-eps) w_t at a hard
       label t in the block, 0 for an ignored item;
     FX_PART_SOFTMAX: p_j;  FX_PART_LOG_SOFTMAX: (x_j - M) - log S.
   p_j = exp(x_j - M) / S, each 16 KiB chunk exponentiated and then scaled while in L1. */
KERNEL void softmax_block_apply(const fx_partials_args *P, int64_t r0, int64_t r1)
{
    const int64_t W = P->width;
    const double eps = P->smoothing;
    const R c1 = (R)(1.0 - eps), c0 = (R)(eps / (double)P->classes);
    const int soft = P->soft != NULL, hard = P->labels != NULL;
    const int grad = P->what == FX_PART_GRAD;
    const int aux = !grad ? FX_AUX_NONE : soft ? FX_AUX_SOFT
                  : (hard && eps > 0.0) ? FX_AUX_SMOOTH : FX_AUX_NONE;
    const int weighted = P->weight != NULL && aux != FX_AUX_NONE;
    const R *wv = (const R *)P->weight;
    fx_softmax_args A = {0};
    A.smoothing = eps;
    A.grad_scale = P->grad_scale;
    for (int64_t r = r0; r < r1; r++) {
        const fx_partial *p = P->merged + r;
        const R *x = (const R *)P->x + r * W;
        const R *y = soft ? (const R *)P->soft + r * W : NULL;
        R *o = (R *)P->out + r * W;
        int64_t label = hard ? fx_label(P->labels, P->label_type, r, P->classes, P->ignore_index) : 0;
        if (label < 0) {
            R fill = label == FX_LABEL_IGNORED ? 0 : (R)NAN;
            for (int64_t j = 0; j < W; j++) o[j] = fill;
            continue;
        }
        if (P->what == FX_PART_LOG_SOFTMAX) {       /* as softmax_outputs_rows */
            log_softmax_row((const T *)(const void *)x, (T *)(void *)o, W, (R)p->m, (R)log(p->s));
            continue;
        }
        fx_merged mg = {p->m, p->s, p->a, 0.0};
        fx_chunk st = {0};
        fx_set_alphas(&st, 1, &mg, grad ? P->grad_scale * p->a : 1.0);
        /* exp(x - M) needs x - M <= 0: with no finite max (M = +-inf or NaN), alpha is
           NaN (S is 0 or NaN) and so is every output, as on one machine */
        int shift_ok = isfinite(p->m);
        for (int64_t j0 = 0; j0 < W; j0 += CHUNK) {
            int64_t n = W - j0 < CHUNK ? W - j0 : CHUNK;
            fx_chunk tmp;
            if (!shift_ok) {
                for (int64_t j = 0; j < n; j++) o[j0 + j] = (R)NAN;
                continue;
            }
            exp_pass(x + j0, o + j0, n, (R)p->m, FX_AUX_NONE, 0, NULL, NULL, c1, c0, &tmp);
            const R *wc = wv ? wv + j0 : NULL, *yc = y ? y + j0 : NULL;
            switch (aux * 2 + weighted) {
#define FX_CASE(name, AUX, W)                                                              \
            case AUX * 2 + W:                                                              \
                grad_pass(o + j0, n, (R)st.alpha, (R)P->grad_scale, AUX, W, wc, yc, c1, c0);  \
                break;
            FX_SOFTMAX_VARIANTS(FX_CASE)
#undef FX_CASE
            }
        }
        if (grad && hard && label >= P->offset && label < P->offset + W) {
            int64_t jt = label - P->offset;
            o[jt] = (R)fx_target_grad(&A, (double)o[jt], class_weight(wv, jt));
        }
    }
}

#endif /* FX_PARTIALS_H */
