/*
 * fastxent row kernels: public C interface and run-time ISA dispatch.
 *
 * Goals, in order:
 *   1. Right answers: log-sum-exp shifted by the row max; every loss term written as a
 *      non-negative quantity (m - x_j, log s) so that huge logits do not cancel; IEEE
 *      NaN/inf semantics kept (no -ffast-math anywhere).
 *   2. One place for each piece of math: fx_impl.h holds the vector exp/log1p and the
 *      row kernels once; this header instantiates it per precision and per ISA.
 *   3. Portable and fast: the package is compiled for the baseline ISA and the AVX2 and
 *      AVX-512 instantiations are chosen at run time (fx_select_isa), so an ordinary
 *      `pip install` runs the widest vectors the CPU has.
 *   4. Deterministic: each kernel handles a caller-given range of rows serially and
 *      returns its partial sum in float64; the caller fixes the blocking, so the result
 *      does not depend on the number of threads.
 *
 * Layout: logits are viewed as (rows, C) C-contiguous, the class axis last.
 */
#ifndef FX_KERNELS_H
#define FX_KERNELS_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <float.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* OpenMP queries that also compile without OpenMP (a serial build). */
static int fx_have_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

static int fx_omp_max_threads(void)
{
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

/* The most threads a call may start: the OpenMP default or the processor count,
   whichever is larger. A request beyond it (n_threads=1000) gains nothing, and libgomp
   exits the process when it cannot create the threads. */
static int fx_thread_cap(void)
{
#ifdef _OPENMP
    int a = omp_get_max_threads(), b = omp_get_num_procs();
    return a > b ? a : b;
#else
    return 1;
#endif
}

/* ------------------------------------------------------------------ labels */

/* Integer label dtypes, read in place (no conversion copy). */
enum { FX_I8, FX_I16, FX_I32, FX_I64, FX_U8, FX_U16, FX_U32, FX_U64 };

/* Bytes per label of a label code. */
static inline size_t fx_label_bytes(int code) { return (size_t)1 << (code & 3); }

/* Read label i as stored (uint64 values above INT64_MAX read as INT64_MIN: only for
   reporting; fx_label classifies them). */
static inline int64_t fx_read_label(const void *p, int code, int64_t i)
{
    switch (code) {
    case FX_I8:  return ((const int8_t *)p)[i];
    case FX_I16: return ((const int16_t *)p)[i];
    case FX_I32: return ((const int32_t *)p)[i];
    case FX_I64: return ((const int64_t *)p)[i];
    case FX_U8:  return ((const uint8_t *)p)[i];
    case FX_U16: return ((const uint16_t *)p)[i];
    case FX_U32: return ((const uint32_t *)p)[i];
    default: {
        uint64_t v = ((const uint64_t *)p)[i];
        return v > (uint64_t)INT64_MAX ? INT64_MIN : (int64_t)v;
    }
    }
}

enum { FX_LABEL_IGNORED = -1, FX_LABEL_BAD = -2 };

/* Label i as a class in [0, C), or FX_LABEL_IGNORED (it equals ignore_index), or
   FX_LABEL_BAD (anything else; a uint64 above INT64_MAX never equals an int64
   ignore_index). The validation pass and every kernel classify labels here: the kernels
   again, because the labels are read twice with the GIL released, and a label another
   thread changes in between must not index outside the row. */
static inline int64_t fx_label(const void *p, int code, int64_t i, int64_t C,
                               int64_t ignore_index)
{
    if (code == FX_U64 && ((const uint64_t *)p)[i] > (uint64_t)INT64_MAX) return FX_LABEL_BAD;
    int64_t t = fx_read_label(p, code, i);
    if (t == ignore_index) return FX_LABEL_IGNORED;
    return t >= 0 && t < C ? t : FX_LABEL_BAD;
}

/* fx_label for labels [i0, i0 + n) into out, the type switch outside the loop */
static inline void fx_labels(const void *p, int code, int64_t i0, int64_t n, int64_t C,
                             int64_t ignore_index, int64_t *out)
{
#define FX_LABEL_LOOP(T)                                                                \
    for (int64_t l = 0; l < n; l++) {                                                   \
        int64_t t = (int64_t)((const T *)p)[i0 + l];                                    \
        out[l] = t == ignore_index ? FX_LABEL_IGNORED : t >= 0 && t < C ? t : FX_LABEL_BAD; \
    }                                                                                   \
    return;
    switch (code) {
    case FX_I8:  FX_LABEL_LOOP(int8_t)
    case FX_I16: FX_LABEL_LOOP(int16_t)
    case FX_I32: FX_LABEL_LOOP(int32_t)
    case FX_I64: FX_LABEL_LOOP(int64_t)
    case FX_U8:  FX_LABEL_LOOP(uint8_t)
    case FX_U16: FX_LABEL_LOOP(uint16_t)
    case FX_U32: FX_LABEL_LOOP(uint32_t)
    default:
        for (int64_t l = 0; l < n; l++) out[l] = fx_label(p, code, i0 + l, C, ignore_index);
    }
#undef FX_LABEL_LOOP
}

/* ------------------------------------------------- chunks of a softmax row */

/* Rows are processed in chunks of this many bytes (16 KiB: a chunk's second pass reads
   it from L1). Fixed, so that a row's numerics never depend on the thread count. */
#define FX_CHUNK_BYTES 16384
/* Chunk statistics of a row live on the stack up to this many chunks (a row of 256K
   float32 classes); longer rows allocate. */
#define FX_LOCAL_CHUNKS 64
/* The column kernel's panel: this many vectors of neighbouring items per class row. */
#define FX_COL_VECS 8

/* Statistics of one chunk of a row (float64 whatever the input dtype). */
typedef struct {
    double m;       /* max of the chunk (NaN if it holds a NaN) */
    double sh;      /* shift used: m, or 0 when m == -inf */
    double s;       /* sum_j exp(x_j - sh) */
    double bd;      /* sum_j b_j (sh - x_j), b_j == 0 terms counted 0 */
    double bsum;    /* sum_j b_j */
    double xt;      /* the target logit, if the target class lies in this chunk */
    double alpha;   /* phase 2 -> 3: gradient factor of the chunk's e_j */
} fx_chunk;

/* A row's chunks merged (Milakov & Gimelshein's online normaliser, per chunk):
   M = max m_c, S = sum_c s_c exp(sh_c - M), bdM = sum_j b_j (M - x_j). */
typedef struct { double M, S, bsum, bdM; } fx_merged;

static inline fx_merged fx_merge_chunks(const fx_chunk *st, int64_t nch)
{
    fx_merged r = {-INFINITY, 0.0, 0.0, 0.0};
    int nan = 0;
    if (nch == 1) {             /* one chunk (every row up to 4096 float32 classes) */
        r.M = st->m;
        r.S = st->s;
        r.bsum = st->bsum;
        r.bdM = st->bd + (st->bsum != 0.0 ? (r.M - st->sh) * st->bsum : 0.0);
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
   k p_j. A row whose S is 0 (all -inf) or NaN has no distribution: NaN everywhere. */
static inline void fx_set_alphas(fx_chunk *st, int64_t nch, const fx_merged *mg, double k)
{
    int undefined = !(mg->S > 0.0);
    if (nch == 1) {
        st->alpha = undefined ? NAN : k / mg->S;
        return;
    }
    for (int64_t c = 0; c < nch; c++)
        st[c].alpha = undefined ? NAN
                    : st[c].s != 0.0 ? k * exp(st[c].sh - mg->M) / mg->S : 0.0;
}

/* sum_j p_j (M - x_j) from ENTROPY chunk sums (bd_c = sum_j e_j (sh_c - x_j)). */
static inline double fx_entropy_term(const fx_chunk *st, int64_t nch, const fx_merged *mg)
{
    double t = 0.0;
    for (int64_t c = 0; c < nch; c++)
        if (st[c].s != 0.0)
            t += exp(st[c].sh - mg->M) * (st[c].bd + (mg->M - st[c].sh) * st[c].s);
    return t / mg->S;
}

/* ------------------------------------------------------------ argument blocks */

/* Softmax family over rows of length C (cross_entropy, nll_loss). */
typedef struct {
    const void *x;          /* (rows, C) logits, or log-probabilities when logprob_input */
    void *grad;             /* (rows, C) gradient out, may alias x; NULL: no gradient */
    const void *labels;     /* (rows,) hard class labels; NULL when soft targets are given */
    int label_code;         /* FX_I8 ... FX_U64 */
    const void *soft;       /* (rows, C) target probabilities, input dtype; or NULL */
    const void *weight;     /* (C,) class weights, input dtype; or NULL */
    double weight_total;    /* sum of weight (C when weight is NULL) */
    int64_t C;
    int64_t ignore_index;
    double smoothing;       /* label_smoothing eps in [0, 1] */
    double grad_scale;      /* gradient multiplier: 1/denominator for "mean", else 1 */
    void *row_loss;         /* (rows,) per-row loss out, input dtype; or NULL */
    int logprob_input;      /* nll_loss: x already holds log-probabilities */
    int stream_grad;        /* write the gradient with non-temporal stores where a row is
                               one chunk (the caller sets it for gradients far bigger than
                               the caches, not in place) */
} fx_ce_args;

/* The loss of one item from its chunks (see fx_impl.h for the notation):
       loss = a log S + sum_j b_j (M - x_j)
   hard label t (wt = w_t, xt = x_t):  a = (1-eps) wt + (eps/C) W,
       sum_j b_j (M - x_j) = (1-eps) wt (M - xt) + (eps/C) sum_j w_j (M - x_j)
   soft targets:  a = sum_j b_j.
   Also sets each chunk's gradient factor (scale * a * p_j / e_j). The one place where
   the formula lives: the row, chunk-parallel and column paths all call it. log_s, when
   not NULL, is log S computed by the caller (the column kernel takes the logs of a
   whole tile of items with one vector log). */
static inline double fx_item_loss(const fx_ce_args *A, fx_chunk *st, int64_t nch,
                                  double wt, double xt, const double *log_s)
{
    const double eps = A->smoothing, C = (double)A->C;
    fx_merged mg = fx_merge_chunks(st, nch);
    double a, bd;
    if (A->soft) {
        a = mg.bsum;
        bd = mg.bdM;
    } else {
        double b_t = (1.0 - eps) * wt;
        a = b_t + eps / C * A->weight_total;
        bd = b_t != 0.0 ? b_t * (mg.M - xt) : 0.0;
        if (eps > 0.0) bd += mg.bdM;       /* the chunks' b_j already hold eps/C */
    }
    if (A->grad) fx_set_alphas(st, nch, &mg, A->grad_scale * a);   /* only phase 3 reads them */
    return a * (log_s ? *log_s : log(mg.S)) + bd;
}

/* Elementwise losses over a flat (rows, cols) array, cols = the last axis. */
enum { FX_PW_BCE_LOGITS = 0, FX_PW_BCE_PROBS = 1, FX_PW_KL = 2, FX_PW_KL_LOGT = 3 };
/* PyTorch's binary_cross_entropy gradient clamp, EPSILON = 1e-12 declared as float */
#define FX_BCE_GRAD_EPS 9.999999960041972e-13

typedef struct {
    int kind;               /* FX_PW_* */
    const void *x;          /* input (logits, probabilities or log-probabilities) */
    void *grad;             /* gradient out, may alias x; or NULL */
    const void *target;     /* same shape; input dtype, or uint8 (bool) when target_u8 */
    int target_u8;
    const void *weight;     /* NULL, (cols,) when weight_per_col, else full (rows, cols) */
    int weight_per_col;
    const void *pos_weight; /* likewise (BCE with logits only) */
    int pos_weight_per_col;
    int64_t cols;
    double grad_scale;
    void *elem_loss;        /* per-element loss out, input dtype; or NULL */
} fx_elem_args;

/* First position in [0, n) whose value is not in [0, 1] (NaN included), or -1. */
static int64_t fx_find_outside_unit(const void *x, int is_f32, int64_t n)
{
    if (is_f32) {
        const float *p = (const float *)x;
        for (int64_t i = 0; i < n; i++) if (!(p[i] >= 0.0f && p[i] <= 1.0f)) return i;
    } else {
        const double *p = (const double *)x;
        for (int64_t i = 0; i < n; i++) if (!(p[i] >= 0.0 && p[i] <= 1.0)) return i;
    }
    return -1;
}

/* Building-block outputs of fx_norm_rows. */
enum { FX_OUT_LSE = 0, FX_OUT_SOFTMAX = 1, FX_OUT_LOG_SOFTMAX = 2, FX_OUT_ENTROPY = 3 };
enum { FX_OUT_SIGMOID = 0, FX_OUT_LOG_SIGMOID = 1 };

/* Which per-element sums the exp pass of fx_impl.h also gathers. */
enum { FX_AUX_NONE = 0, FX_AUX_SMOOTH = 1, FX_AUX_SOFT = 2, FX_AUX_ENTROPY = 3 };

/* One table of kernels per precision and ISA. */
/* cross-entropy family over rows [r0, r1): returns the sum of the row losses */
typedef double (*ce_rows_fn)(const fx_ce_args *a, int64_t r0, int64_t r1);
/* logsumexp / softmax / log_softmax / entropy over rows [r0, r1) of x (rows, C);
   out is (rows,) for LSE and ENTROPY, (rows, C) otherwise, input dtype */
typedef void (*norm_rows_fn)(const void *x, void *out, int64_t C, int64_t r0, int64_t r1,
                             int what);
/* elementwise losses over flat elements [i0, i1): returns the sum of the losses */
typedef double (*pointwise_range_fn)(const fx_elem_args *a, int64_t i0, int64_t i1);
/* sigmoid / log_sigmoid elementwise over [i0, i1) */
typedef void (*sigmoid_range_fn)(const void *x, void *out, int64_t i0, int64_t i1, int what);
/* test hook: exp_nonpos (what 0), log1p_unit (1) or log (2) elementwise over n values */
typedef void (*vecmath_fn)(const void *x, void *out, int64_t n, int what);

/* the three phases of ce_rows, for the chunk-parallel path over few long rows */
typedef void (*ce_phase1_fn)(const fx_ce_args *a, int64_t row, int64_t chunk, fx_chunk *st);
typedef double (*ce_phase2_fn)(const fx_ce_args *a, int64_t row, fx_chunk *row_chunks);
typedef void (*ce_phase3_fn)(const fx_ce_args *a, int64_t row, int64_t chunk, const fx_chunk *row_chunks);

/* cross-entropy family with the class axis not last: tiles [k0, k1) of (outer, C, inner) */
typedef double (*ce_cols_fn)(const fx_ce_args *a, int64_t inner, int64_t k0, int64_t k1);

typedef struct {
    const char *isa;
    int lanes;              /* items per panel of ce_cols (FX_COL_VECS vectors) */
    ce_rows_fn ce_rows;
    ce_phase1_fn ce_phase1;
    ce_phase2_fn ce_phase2;
    ce_phase3_fn ce_phase3;
    ce_cols_fn ce_cols;
    norm_rows_fn norm_rows;
    pointwise_range_fn pointwise_range;
    sigmoid_range_fn sigmoid_range;
    vecmath_fn vecmath;
} fx_table;

/* ------------------------------------------------------ instantiations */

#define FX_CAT2(a, b) a##_##b
#define FX_CAT(a, b) FX_CAT2(a, b)
#define FX_STR2(x) #x
#define FX_STR(x) FX_STR2(x)

#if defined(__SSE2__)
#include <emmintrin.h>      /* the baseline's non-temporal stores */
#endif

/* baseline: whatever the compiler targets by default (SSE2 on x86-64) */
#define FX_ISA baseline
#define FX_VBYTES 16
#define FX_TARGET_ATTR
#include "fx_precisions.h"
#undef FX_ISA
#undef FX_VBYTES
#undef FX_TARGET_ATTR

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(_M_X64))
#define FX_HAVE_X86_DISPATCH 1
#include <immintrin.h>

#define FX_ISA avx2
#define FX_VBYTES 32
#define FX_TARGET_ATTR __attribute__((target("avx2,fma,bmi,bmi2,f16c,lzcnt,movbe,popcnt")))
#include "fx_precisions.h"
#undef FX_ISA
#undef FX_VBYTES
#undef FX_TARGET_ATTR

#define FX_ISA avx512
#define FX_VBYTES 64
#define FX_TARGET_ATTR __attribute__((target("avx512f,avx512bw,avx512cd,avx512dq,avx512vl,avx2,fma,bmi,bmi2,f16c,lzcnt,movbe,popcnt")))
#include "fx_precisions.h"
#undef FX_ISA
#undef FX_VBYTES
#undef FX_TARGET_ATTR
#else
#define FX_HAVE_X86_DISPATCH 0
#endif

/* ------------------------------------------------------------ dispatch */

static const fx_table *fx_table_f32 = &fx_tab_f32_baseline;
static const fx_table *fx_table_f64 = &fx_tab_f64_baseline;

/* Can this CPU run the named variant? */
static int fx_isa_supported(const char *name)
{
    if (strcmp(name, "baseline") == 0) return 1;
#if FX_HAVE_X86_DISPATCH
    __builtin_cpu_init();
    int v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
             && __builtin_cpu_supports("bmi2");
    if (strcmp(name, "avx2") == 0) return v3;
    if (strcmp(name, "avx512") == 0)
        return v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw")
               && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
#endif
    return 0;
}

/* Select a variant by name ("best" picks the widest supported). Returns 0 on success. */
static int fx_select_isa(const char *name)
{
    if (strcmp(name, "best") == 0) {
        if (fx_isa_supported("avx512")) name = "avx512";
        else if (fx_isa_supported("avx2")) name = "avx2";
        else name = "baseline";
    }
    if (!fx_isa_supported(name)) return -1;
    if (strcmp(name, "baseline") == 0) {
        fx_table_f32 = &fx_tab_f32_baseline; fx_table_f64 = &fx_tab_f64_baseline;
    }
#if FX_HAVE_X86_DISPATCH
    else if (strcmp(name, "avx2") == 0) {
        fx_table_f32 = &fx_tab_f32_avx2; fx_table_f64 = &fx_tab_f64_avx2;
    } else {
        fx_table_f32 = &fx_tab_f32_avx512; fx_table_f64 = &fx_tab_f64_avx512;
    }
#endif
    return 0;
}

static const char *fx_current_isa(void) { return fx_table_f32->isa; }

/* -------------------------------------------------- label validation pass */

/* One pass over the labels, before anything is written: returns the position of the
   first label outside [0, C) that is not ignore_index (or -1), and through *wsum the
   mean's denominator: the summed class weight of the non-ignored labels. */
static int64_t fx_check_labels(const void *labels, int code, int64_t n, int64_t C,
                               int64_t ignore_index, const double *weight, double *wsum,
                               int64_t *bad_value)
{
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) {
        int64_t t = fx_label(labels, code, i, C, ignore_index);
        if (t == FX_LABEL_IGNORED) continue;
        if (t == FX_LABEL_BAD) {
            *bad_value = fx_read_label(labels, code, i);
            return i;
        }
        s += weight ? weight[t] : 1.0;
    }
    *wsum = s;
    return -1;
}

#endif /* FX_KERNELS_H */
