/*
 * Softmax cross-entropy with the class axis not last: x viewed as (outer, C, inner),
 * e.g. (N, C, H, W) with axis=1, read in place with stride `inner` (no transposing
 * copy).
 *
 * A panel is up to NV vectors (NV * VL neighbouring positions) along `inner`, each
 * position an item with its own softmax over the C classes that lie `inner` elements
 * apart. Vectors run along `inner` (contiguous), the loops run over classes. The first
 * pass copies the panel (NV * VL contiguous elements of each class row) into buf,
 * C x NV * VL contiguous, where the later passes work: the class rows lie `inner`
 * elements apart, and with `inner` a power of two they all map to the same few cache
 * sets, so re-reading them in place would miss. Without buf (a C too big for it, or a
 * loss of at most FX_PANEL_IN_PLACE_C classes) the passes work in x and g in place.
 * Each lane is an item with one chunk; its loss, its
 * gradient factor and its hard label's gradient term come from fx_softmax_item.h, as
 * for rows.
 */
#ifndef FX_SOFTMAX_COLS_H
#define FX_SOFTMAX_COLS_H

#include <stdlib.h>
#include "fx_vecmath.h"
#include "fx_softmax_item.h"
#include "fx_variants.h"

#define NV FX_COL_VECS

/* The shape of a panel: n items in nv vectors, the last with nlast live lanes. Passed by
   value, so that it stays in registers (vector stores could alias it in memory). */
typedef struct { int nv; int64_t nlast; } panel_shape;

FN panel_shape panel_shape_of(int64_t n)
{
    panel_shape S;
    S.nv = (int)((n + VL - 1) / VL);
    S.nlast = n - (int64_t)(S.nv - 1) * VL;
    return S;
}
FN int panel_full(panel_shape S, int q) { return q < S.nv - 1 || S.nlast == VL; }
FN VR panel_load(panel_shape S, int q, const R *p, R pad)
{
    return panel_full(S, q) ? vload(p) : vload_part(p, S.nlast, pad);
}
FN void panel_store(panel_shape S, int q, R *p, VR v)
{
    if (panel_full(S, q)) vstore(p, v);
    else vstore_part(p, v, S.nlast);
}
/* the same for x, y and g, which hold T (fx_simd.h) */
#if FX_HALF
FN VR panel_load_t(panel_shape S, int q, const T *p, R pad)
{
    return panel_full(S, q) ? vload_t(p) : vload_t_part(p, S.nlast, pad);
}
FN void panel_store_t(panel_shape S, int q, T *p, VR v)
{
    if (panel_full(S, q)) vstore_t(p, v);
    else vstore_t_part(p, v, S.nlast);
}
#else
#define panel_load_t panel_load     /* T = R: the same code as before T existed */
#define panel_store_t panel_store
#endif
FN int lane_kept(const VI *keep, int64_t l) { return keep[l / VL][l % VL] != 0; }

/* The panel's lanes: live (within the n items) and keep (live, and a class label where
   labels are hard), and labv, each lane's class (items_labels: FX_LABEL_IGNORED or
   FX_LABEL_BAD where it has none; soft targets: 0; FX_LABEL_IGNORED past n). The labels
   of the panel four ahead are prefetched, as x is in pass 1. */
FN void panel_lanes(const fx_softmax_args *A, panel_shape S, int64_t item0, VI *live, VI *keep,
                    VI *labv)
{
    if (!A->soft) {
        const size_t lb = fx_label_bytes(A->label_type);
        const char *ahead = (const char *)A->labels + (size_t)(item0 + 4 * NV * VL) * lb;
        for (size_t b = 0; b < (size_t)(NV * VL) * lb; b += 64) __builtin_prefetch(ahead + b);
    }
    for (int q = 0; q < S.nv; q++) {
        const int64_t nq = panel_full(S, q) ? VL : S.nlast;
        keep[q] = live[q] = vlive(nq);
        labv[q] = A->soft ? ~live[q] & visplat(FX_LABEL_IGNORED) : items_labels(A, item0 + q * VL, nq);
        if (!A->soft) keep[q] &= labv[q] >= 0;
    }
}
/* Lane l's class (labv: panel_lanes). */
FN int64_t lane_label(const VI *labv, int64_t l) { return labv[l / VL][l % VL]; }

/* Fetch the panel four ahead in class row c now, from x and g (written): C streams of
   NV * VL elements are more than the prefetchers follow (a prefetch never faults). */
FN void panel_prefetch(const fx_softmax_args *A, const T *x, T *g, int64_t inner, int64_t c, int q)
{
    __builtin_prefetch(x + c * inner + (4 * NV + q) * VL, 0, 2);
    if (g && !A->stream_grad) __builtin_prefetch(g + c * inner + (4 * NV + q) * VL, 1, 2);
}

/* nll_loss over a panel (fx_nll_loss). */
FN double panel_nll(const fx_softmax_args *A, panel_shape S, const VI *keep,
                    const VI *labv, int64_t inner, int64_t item0, int64_t n,
                    const T *x, T *g)
{
    double xt[NV * VL], total = 0.0;               /* read before g (maybe x) is zeroed */
    for (int64_t l = 0; l < n; l++)
        xt[l] = lane_kept(keep, l) ? (double)load_t(x + (lane_label(labv, l) * inner + l)) : 0.0;
    if (g)
        for (int64_t c = 0; c < A->C; c++)
            for (int q = 0; q < S.nv; q++) panel_store_t(S, q, g + c * inner + q * VL, (VR){0});
    for (int64_t l = 0; l < n; l++) {
        const int64_t label = lane_label(labv, l);
        double loss = fx_dropped_loss(label);
        if (lane_kept(keep, l)) {
            double wt = class_weight((const R *)A->weight, label);
            loss = fx_nll_loss(wt, xt[l]);
            if (g) store_t(g + (label * inner + l), (R)fx_nll_grad(A, wt));
        }
        if (A->item_loss) ((R *)A->item_loss)[item0 + l] = (R)loss;
        total += loss;
    }
    return total;
}

/* panel_store_t of a gradient vector: a non-temporal store where the call streams its
   gradient (stream_grad; softmax_cols fences) and the vector is whole and aligned. */
FN void panel_store_grad(const fx_softmax_args *A, panel_shape S, int q, T *p, VR v)
{
#if !FX_HALF
    if (A->stream_grad && panel_full(S, q) && (uintptr_t)p % FX_VBYTES == 0) {
        vstream(p, v);
        return;
    }
#endif
    panel_store_t(S, q, p, v);
}

/* A panel of n items of two classes, the plain variant (two_class_items, FX_TWO_CLASS_K
   vectors at a time): each vector's two class rows read and its gradient written in
   place (no buffer: no pass reads them again). Adds each item's loss to acc, per lane. */
FN void two_class_vectors(const fx_softmax_args *A, panel_shape S, const VI *labv, const R *w,
                          int64_t inner, int64_t item0, const T *x, T *g, VD *acc, int q0, int k)
{
    enum { K = FX_TWO_CLASS_K };
    VR x0[K], x1[K], wt[K], gv[K][2];
    VD loss[K][FX_HALVES];
    for (int u = 0; u < k; u++) {
        const int q = q0 + u;
        panel_prefetch(A, x, g, inner, 0, q);
        panel_prefetch(A, x, g, inner, 1, q);
        x0[u] = panel_load_t(S, q, x + q * VL, 0);
        x1[u] = panel_load_t(S, q, x + inner + q * VL, 0);
        wt[u] = lane_label_weights(w, labv[q]);
    }
    two_class_items(A, x0, x1, labv + q0, wt, loss, gv, k);
    for (int u = 0; u < k; u++) {
        const int q = q0 + u;
        for (int h = 0; h < FX_HALVES; h++) acc[h] += loss[u][h];
        if (A->item_loss)
            vstore_part((R *)A->item_loss + item0 + q * VL, vr_of_halves(loss[u]),
                        panel_full(S, q) ? VL : S.nlast);
        if (!g) continue;
        panel_store_grad(A, S, q, g + q * VL, gv[u][0]);
        panel_store_grad(A, S, q, g + inner + q * VL, gv[u][1]);
    }
}
FN void two_class_panel(const fx_softmax_args *A, panel_shape S, const VI *labv, const R *w,
                        int64_t inner, int64_t item0, const T *x, T *g, VD *acc)
{
    int q = 0;
    for (; q + FX_TWO_CLASS_K <= S.nv; q += FX_TWO_CLASS_K)
        two_class_vectors(A, S, labv, w, inner, item0, x, g, acc, q, FX_TWO_CLASS_K);
    for (; q < S.nv; q++) two_class_vectors(A, S, labv, w, inner, item0, x, g, acc, q, 1);
}

/* target_weights of class c for a panel vector: w the class weights (or NULL), y the
   panel's target probabilities (SOFT). */
FN VR panel_target_weights(panel_shape S, int aux, const R *w, const T *y, int64_t c,
                           int64_t inner, int q, R c1, R c0)
{
    VR yv = aux == FX_AUX_SOFT ? panel_load_t(S, q, y + c * inner + q * VL, 0) : (VR){0};
    return target_weights(aux, vsplat(w ? w[c] : (R)1), yv, c1, c0);
}

/* Softmax cross-entropy over a panel of n items from item0: x (and g, y) point at its
   first item; buf is the panel buffer or NULL; aux the call's per-class target weights,
   w its class weights (or NULL). Adds each item's loss to acc, per lane (per float64
   half): lanes past n add 0. */
FN void softmax_panel(const fx_softmax_args *A, int aux, const R *w, int64_t inner,
                      int64_t item0, int64_t n, const T *x, T *g, const T *y, R *buf, VD *acc)
{
    const int64_t C = A->C;
    const int soft = A->soft != NULL;
    const double eps = A->smoothing;
    const R c1 = (R)(1.0 - eps), c0 = (R)(eps / (double)C);
    VR zero = {0};
    const panel_shape S = panel_shape_of(n);
    const int nv = S.nv;
    VI live[NV], keep[NV], labv[NV];
    panel_lanes(A, S, item0, live, keep, labv);
    if (A->logprob_input) {
        acc[0][0] += panel_nll(A, S, keep, labv, inner, item0, n, x, g);
        return;
    }
    if (C == 2 && aux == FX_AUX_NONE) {
        two_class_panel(A, S, labv, w, inner, item0, x, g, acc);
        return;
    }

    /* where passes 2 and 3 read x and keep e, then the gradient: buf, or x and g */
#if FX_HALF
    /* half: e and the gradient need float32 room, so always buf (softmax_cols) */
    const R *xs = buf;
    R *ws = buf;
#else
    const R *xs = buf ? buf : x;
    R *ws = buf ? buf : g;
#endif
    const int64_t stride = buf ? NV * VL : inner;

    /* pass 1: the panel into buf (lanes past n hold -inf), max per lane (NaN, if any,
       reaches s in pass 2), the target logit per lane (0 where no class) */
    VR m[NV], sh[NV], xt[NV];
    for (int q = 0; q < nv; q++) m[q] = vsplat(-INFINITY), xt[q] = zero;
    for (int64_t c = 0; c < C; c++)
        for (int q = 0; q < nv; q++) {
            panel_prefetch(A, x, g, inner, c, q);
            VR v = panel_load_t(S, q, x + c * inner + q * VL, -INFINITY);
            if (buf) vstore(ws + c * stride + q * VL, v);
            m[q] = vmax_fast(m[q], v);
            if (!soft) xt[q] = vselect(labv[q] == visplat(c), v, xt[q]);
        }
    for (int q = 0; q < nv; q++)
        sh[q] = vselect(m[q] == vsplat(-INFINITY), zero, m[q]);

    /* pass 2: e = exp(x - sh) over x in buf; sums per lane, folded to float64 every 16
       classes (bd's overflowing terms into spill, bd_terms) */
    VR s[NV], bd[NV], bsum[NV];
    VD s_acc[NV][FX_HALVES], bd_acc[NV][FX_HALVES], bsum_acc[NV][FX_HALVES];
    double spill[NV * VL];
    for (int q = 0; q < nv; q++) {
        s[q] = bd[q] = bsum[q] = zero;
        for (int h = 0; h < FX_HALVES; h++) s_acc[q][h] = bd_acc[q][h] = bsum_acc[q][h] = vdsplat(0);
    }
    if (aux != FX_AUX_NONE)
        for (int l = 0; l < nv * VL; l++) spill[l] = 0.0;
    for (int64_t c = 0; c < C; c++) {
        for (int q = 0; q < nv; q++) {
            VR v = panel_load(S, q, xs + c * stride + q * VL, -INFINITY);
            VR e = vexp_nonpos(v - sh[q]);
            s[q] += e;
            if (aux != FX_AUX_NONE) {
                VR b = panel_target_weights(S, aux, w, y, c, inner, q, c1, c0);
                b = vzero_unless(live[q], b);
                bsum[q] += b;
                bd[q] += bd_terms(b, sh[q], v, spill + q * VL);
            }
            if (g) panel_store(S, q, ws + c * stride + q * VL, e);
        }
        if ((c & 15) == 15 || c == C - 1) {
            for (int q = 0; q < nv; q++) {
                for (int h = 0; h < FX_HALVES; h++) s_acc[q][h] += vd_half(s[q], h);
                s[q] = zero;
                if (aux == FX_AUX_NONE) continue;
                for (int h = 0; h < FX_HALVES; h++) {
                    bd_acc[q][h] += vd_half(bd[q], h);
                    bsum_acc[q][h] += vd_half(bsum[q], h);
                }
                bd[q] = bsum[q] = zero;
            }
        }
    }

    /* the finish, a vector of items at a time (items_finish) */
    VR alpha[NV];
    for (int q = 0; q < nv; q++) {
        const VI lab = labv[q];  /* soft lanes 0 when live */
        VD loss[FX_HALVES];
        if (aux != FX_AUX_NONE)
            for (int h = 0; h < FX_HALVES; h++) {
                VD sp;
                memcpy(&sp, spill + q * VL + h * VLD, sizeof sp);
                bd_acc[q][h] += sp;
            }
        alpha[q] = items_finish(A, lab, m[q], sh[q], xt[q], soft ? zero : lane_label_weights(w, lab),
                                s_acc[q], bd_acc[q], bsum_acc[q], loss);
        /* lanes past n: FX_LABEL_IGNORED (panel_lanes), loss 0 */
        for (int h = 0; h < FX_HALVES; h++) acc[h] += loss[h];
        if (A->item_loss)
            vstore_part((R *)A->item_loss + item0 + q * VL, vr_of_halves(loss),
                        panel_full(S, q) ? VL : S.nlast);
    }
    if (!g) return;

    /* pass 3: the gradient alpha e - scale b in buf (ignored lanes exactly 0), the hard
       labels' term there too, then out to g */
    const R beta = (R)A->grad_scale;
    for (int64_t c = 0; c < C; c++)
        for (int q = 0; q < nv; q++) {
            R *wq = ws + c * stride + q * VL;
            VR e = panel_load(S, q, wq, 0);
            VR gv = aux == FX_AUX_NONE ? e * alpha[q]
                  : vmul_sub(e, alpha[q], panel_target_weights(S, aux, w, y, c, inner, q, c1, c0) * beta);
            panel_store(S, q, wq, vzero_unless(keep[q], gv));
        }
    if (!soft)
        for (int64_t l = 0; l < n; l++) {
            if (!lane_kept(keep, l)) continue;
            R *gt = ws + lane_label(labv, l) * stride + l;
            *gt = (R)fx_target_grad(A, (double)*gt, class_weight(w, lane_label(labv, l)));
        }
    if (buf && A->stream_grad)      /* see stream_copy; softmax_cols fences */
        for (int64_t c = 0; c < C; c++) stream_copy_t(g + c * inner, ws + c * stride, n);
    else if (buf)
        for (int64_t c = 0; c < C; c++)
            for (int q = 0; q < nv; q++)
                panel_store_t(S, q, g + c * inner + q * VL, panel_load(S, q, ws + c * stride + q * VL, 0));
}

/* The panel buffer, C x NV * VL elements: local (FX_PANEL_LOCAL bytes on the caller's
   stack: 32 classes of a 512-byte AVX-512 panel) where it fits, else allocated up to
   512 KiB (1024 such classes: it still fits L2); beyond that, or if the allocation
   fails, NULL: the passes work in x and the output, slower where the class rows alias
   in the cache, but no big allocation per call. Free it where it is not local. */
#define FX_PANEL_LOCAL 16384
FN R *panel_buffer(int64_t C, R *local)
{
    const int64_t need = C * NV * VL;
    return need <= (int64_t)(FX_PANEL_LOCAL / sizeof(R)) ? local
         : need * (int64_t)sizeof(R) <= (512 << 10) ? (R *)malloc((size_t)need * sizeof(R))
         : NULL;
}

/* The losses' panels of up to this many classes are worked in place, without the panel
   buffer: so few class rows do not crowd a cache set, and the copies in and out cost
   more than they save. Against the buffer (1 thread, forward / forward+backward into
   grad_out, Zen 5): (16, 3, 128, 128), (8, 4, 256, 256), (12, 3, 160, 160) and
   (64, 3, 32, 32) 1.01-1.03x / 1.04-1.11x on AVX2, 1.08-1.13x / 1.01-1.04x on AVX-512;
   gradients beyond stream_grad's size, which the buffer streamed out, (8, 3, 512, 512)
   and (4, 4, 512, 512): forward+backward into grad_out 1.08-1.29x, a fresh gradient
   0.99-2.1x (two runs, both ISAs; memory-bound, noisy). (Two classes take
   two_class_panel, which never copies.) */
#define FX_PANEL_IN_PLACE_C 4

/* Panels [k0, k1) of x viewed as (outer, C, inner): panel k covers outer index
   k / panels_per_outer and inner positions from (k % panels_per_outer) * NV * VL. */
KERNEL double softmax_cols(const fx_softmax_args *A, int64_t inner, int64_t k0, int64_t k1)
{
    const int64_t C = A->C, width = (int64_t)NV * VL, ppo = (inner + width - 1) / width;
    /* the items' losses summed per lane over the panels, the lanes added in order at the
       end: a block's sum depends on its panels alone (the caller's blocks are fixed by
       the shape), and no per-item chain of scalar adds */
    VD acc[FX_HALVES];
    for (int h = 0; h < FX_HALVES; h++) acc[h] = vdsplat(0);
    R local[FX_PANEL_LOCAL / sizeof(R)];
    R *buf = !FX_HALF && C <= FX_PANEL_IN_PLACE_C ? NULL : panel_buffer(C, local);
    /* one copy of the panel code per aux (the weights are a scalar per class row here,
       read as the loop goes: specialising on them gains nothing) */
    const int aux = fx_softmax_aux(A);
    const R *w = (const R *)A->weight;
    /* a half instance needs buf (see softmax_panel): the Python layer sends a C too big
       for it through the row path (_core.col_buffer_fits), so NaN only if its allocation
       failed */
    if (FX_HALF && !buf) return NAN;
    for (int64_t k = k0; k < k1; k++) {
        int64_t o = k / ppo, i0 = (k % ppo) * width;
        int64_t n = inner - i0 < width ? inner - i0 : width;
        int64_t base = o * C * inner + i0;
        const T *x = (const T *)A->x + base, *y = A->soft ? (const T *)A->soft + base : NULL;
        T *g = A->grad ? (T *)A->grad + base : NULL;
        switch (aux) {
        case FX_AUX_SOFT:
            softmax_panel(A, FX_AUX_SOFT, w, inner, o * inner + i0, n, x, g, y, buf, acc);
            break;
        case FX_AUX_SMOOTH:
            softmax_panel(A, FX_AUX_SMOOTH, w, inner, o * inner + i0, n, x, g, y, buf, acc);
            break;
        default:
            softmax_panel(A, FX_AUX_NONE, w, inner, o * inner + i0, n, x, g, y, buf, acc);
        }
    }
    if (buf != local) free(buf);   /* free(NULL) is a no-op */
    if (A->stream_grad) stream_fence();
    return lanes_total(acc);
}
#if !FX_HALF
/* logsumexp, softmax, log_softmax or entropy of a panel of n items (the class axis not
   last): the passes and formulas of the blocks' items path (outputs_pass1-3, fx_softmax_items.h) with lanes along
   `inner`. x and, for the per-class outputs, out point at the panel's first item;
   for logsumexp and entropy out points at the panel's first result. */
FN void outputs_panel(const R *x, R *out, int64_t C, int64_t inner, int64_t n,
                      fx_softmax_output what, R *buf)
{
    const panel_shape S = panel_shape_of(n);
    const int nv = S.nv;
    const VR zero = {0};
    const R *xs = buf ? buf : x;                /* x, in buf after pass 1 */
    R *ws = buf ? buf : out;                    /* softmax's e: buf, or out in place */
    const int64_t stride = buf ? NV * VL : inner;
    VR m[NV], sh[NV];
    VI nan[NV];
    for (int q = 0; q < nv; q++) m[q] = vsplat(-INFINITY), nan[q] = (VI){0};
    for (int64_t c = 0; c < C; c++)
        for (int q = 0; q < nv; q++) {
            __builtin_prefetch(x + c * inner + (4 * NV + q) * VL, 0, 2);
            VR v = panel_load(S, q, x + c * inner + q * VL, -INFINITY);
            if (buf) vstore(buf + c * stride + q * VL, v);
            m[q] = vmax_fast(m[q], v);
            nan[q] |= v != v;
        }
    for (int q = 0; q < nv; q++) sh[q] = vselect(m[q] == vsplat(-INFINITY), zero, m[q]);

    VD s[NV][FX_HALVES], bd[NV][FX_HALVES], ties[NV][FX_HALVES], rest[NV][FX_HALVES];
    double spill[NV * VL];
    for (int q = 0; q < nv; q++)
        for (int h = 0; h < FX_HALVES; h++) s[q][h] = bd[q][h] = ties[q][h] = rest[q][h] = vdsplat(0);
    if (what == FX_OUT_ENTROPY)
        for (int l = 0; l < nv * VL; l++) spill[l] = 0.0;
    for (int64_t c = 0; c < C; c++)
        for (int q = 0; q < nv; q++) {
            VR v = panel_load(S, q, xs + c * stride + q * VL, -INFINITY);
            VR e = vexp_nonpos(v - sh[q]);
            outputs_terms(what, v, sh[q], e, s[q], bd[q], ties[q], rest[q], spill + q * VL);
            if (what == FX_OUT_SOFTMAX) panel_store(S, q, ws + c * stride + q * VL, e);
        }

    VR f[NV];
    for (int q = 0; q < nv; q++) {
        f[q] = outputs_finish(what, m[q], nan[q], s[q], bd[q], ties[q], rest[q], spill + q * VL);
        if (what == FX_OUT_LOGSUMEXP || what == FX_OUT_ENTROPY) panel_store(S, q, out + q * VL, f[q]);
    }
    if (what != FX_OUT_SOFTMAX && what != FX_OUT_LOG_SOFTMAX) return;
    for (int64_t c = 0; c < C; c++)
        for (int q = 0; q < nv; q++) {
            const R *src = what == FX_OUT_SOFTMAX ? ws : xs;
            VR o = outputs_class(what, panel_load(S, q, src + c * stride + q * VL, 0), m[q], f[q]);
            panel_store(S, q, out + c * inner + q * VL, o);
        }
}

/* Panels [k0, k1) of x viewed as (outer, C, inner) (softmax_outputs_cols_fn). */
KERNEL void softmax_outputs_cols(const void *xv, void *outv, int64_t C, int64_t inner,
                                 int64_t k0, int64_t k1, fx_softmax_output what)
{
    const int64_t width = (int64_t)NV * VL, ppo = (inner + width - 1) / width;
    const int per_class = what == FX_OUT_SOFTMAX || what == FX_OUT_LOG_SOFTMAX;
    R local[FX_PANEL_LOCAL / sizeof(R)];
    R *buf = panel_buffer(C, local);
    for (int64_t k = k0; k < k1; k++) {
        int64_t o = k / ppo, i0 = (k % ppo) * width;
        int64_t n = inner - i0 < width ? inner - i0 : width;
        const R *x = (const R *)xv + o * C * inner + i0;
        R *out = (R *)outv + (per_class ? o * C * inner : o * inner) + i0;
        outputs_panel(x, out, C, inner, n, what, buf);
    }
    if (buf != local) free(buf);
}
#endif

#undef NV

#endif /* FX_SOFTMAX_COLS_H */
