/*
 * fastxent's kernel interface: what the compiled core (_core.pyx, through
 * _kernels.pxd) and the kernels share. The one declaration of every enum, argument
 * block and kernel signature; Python reads the enums from _core, never as bare ints.
 *
 * Goals of the kernels, in order:
 *   1. Right answers: log-sum-exp shifted by the row max; every loss term written as a
 *      non-negative quantity (m - x_j, log s) so that huge logits do not cancel; IEEE
 *      NaN/inf semantics kept (no -ffast-math anywhere).
 *   2. One home for each piece of math (src/fastxent/ARCHITECTURE.md maps them).
 *   3. Portable and fast: the package is compiled for the baseline ISA, and each
 *      (precision, ISA) is its own translation unit (fx_<prec>_<isa>.c) whose table of
 *      kernels is chosen at run time (fx_select_isa), so an ordinary `pip install` runs
 *      the widest vectors the CPU has.
 *   4. Deterministic: each kernel handles a caller-given range of items serially and
 *      returns its partial sum in float64; the caller fixes the blocking, so the result
 *      does not depend on the number of threads.
 */
#ifndef FX_API_H
#define FX_API_H

#include <stdint.h>

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(_M_X64)) \
    && !defined(FX_BASELINE_ONLY)
#define FX_HAVE_X86_DISPATCH 1      /* the AVX2 and AVX-512 instances exist */
#else
#define FX_HAVE_X86_DISPATCH 0
#endif

/* ------------------------------------------------------------------ constants */

/* Softmax rows are processed in chunks of this many bytes (16 KiB: a chunk's second pass
   reads it from L1). Fixed, so that a row's numerics never depend on the thread count. */
#define FX_CHUNK_BYTES 16384
/* Chunk statistics of a row live on the stack up to this many chunks (a row of 256K
   float32 classes); longer rows allocate. */
#define FX_LOCAL_CHUNKS 64
/* Rows of up to this many classes may go through softmax_items (lanes over items); the
   table's items_max_c / outputs_items_max_c are each instance's measured switch points,
   at most this. */
#define FX_ITEMS_MAX_C 128
/* The class-axis kernel's panel: this many vectors of neighbouring items per class row. */
#define FX_COL_VECS 8

/* ------------------------------------------------------------------ enums */

/* Integer label dtypes, read in place (no conversion copy); log2 of the size in the
   low two bits. */
typedef enum fx_label_type {
    FX_I8, FX_I16, FX_I32, FX_I64, FX_U8, FX_U16, FX_U32, FX_U64
} fx_label_type;

/* The elementwise (sigmoid-family and KL) losses. */
typedef enum fx_elementwise_loss {
    FX_BCE_LOGITS,          /* binary_cross_entropy_with_logits */
    FX_BCE_PROBS,           /* binary_cross_entropy */
    FX_KL,                  /* kl_div */
    FX_KL_LOG_TARGET        /* kl_div(log_target=True) */
} fx_elementwise_loss;

/* What softmax_outputs_rows writes per row. */
typedef enum fx_softmax_output {
    FX_OUT_LOGSUMEXP, FX_OUT_SOFTMAX, FX_OUT_LOG_SOFTMAX, FX_OUT_ENTROPY
} fx_softmax_output;

/* What sigmoid_outputs_range writes per element. */
typedef enum fx_sigmoid_output { FX_OUT_SIGMOID, FX_OUT_LOG_SIGMOID } fx_sigmoid_output;

/* The point functions the vecmath test hook runs. */
typedef enum fx_vecmath_fn { FX_MATH_EXP_NONPOS, FX_MATH_LOG1P_UNIT, FX_MATH_LOG } fx_vecmath_fn;

/* ------------------------------------------------------------------ argument blocks */

/* Statistics of one chunk of a softmax row (float64 whatever the input dtype). */
typedef struct {
    double m;       /* max of the chunk (NaN if it holds a NaN) */
    double sh;      /* shift used: m, or 0 when m == -inf */
    double s;       /* sum_j exp(x_j - sh) */
    double bd;      /* sum_j b_j (sh - x_j), b_j == 0 terms counted 0 */
    double bsum;    /* sum_j b_j */
    double xt;      /* the target logit, if the target class lies in this chunk */
    double alpha;   /* finish -> gradient pass: gradient factor of the chunk's e_j */
} fx_chunk;

/* Softmax family (cross_entropy, nll_loss) over items of C classes: x viewed as
   (outer, C, inner), the class axis last when inner == 1. */
typedef struct {
    const void *x;          /* logits, or log-probabilities when logprob_input */
    void *grad;             /* gradient out, x's shape, may alias x; NULL: no gradient */
    const void *labels;     /* (items,) hard class labels; NULL when soft targets are given */
    fx_label_type label_type;
    const void *soft;       /* target probabilities, x's shape and dtype; or NULL */
    const void *weight;     /* (C,) class weights, input dtype; or NULL */
    double weight_total;    /* sum of weight (C when weight is NULL) */
    int64_t C;
    int64_t ignore_index;
    double smoothing;       /* label_smoothing eps in [0, 1] */
    double grad_scale;      /* gradient multiplier: 1/denominator for "mean", else 1 */
    void *item_loss;        /* (items,) per-item loss out, input dtype; or NULL */
    int logprob_input;      /* nll_loss: x already holds log-probabilities */
    int stream_grad;        /* write the gradient with non-temporal stores (the caller sets
                               it for gradients far bigger than the caches, not in place) */
} fx_softmax_args;

/* Elementwise losses over a flat (rows, cols) array, cols = the last axis. */
typedef struct {
    fx_elementwise_loss loss;
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
    void *item_loss;        /* per-element loss out, input dtype; or NULL */
} fx_elementwise_args;

/* Evaluation metrics over rows of x (rows, C), class axis last (fx_metrics.h): per row
   nll = log S + (M - x_t), conf = 1/S, argmax, and `above`, the classes ranked above the
   target (negative FX_LABEL_* codes for an ignored or bad label), summed per block of
   rows into sums[FX_MS_BINS + n_bins + 1] and counts[FX_MC_BINS + 2 (n_bins + 1)]:
     sums:   sum w_t nll, sum w_t, sum s clip(nll), sum s [above < k], sum s, then per
             calibration bin the sum of the float32 confidences
     counts: kept items, items with above < k, items whose label is neither a class nor
             ignore_index (FX_LABEL_BAD: the caller raises), then per bin the items,
             then per bin the items whose argmax is the target; metrics_items also
             takes n_bins + 1 entries of scratch after them (not results)
   (w: class weights, s: sample weights, 1 when absent; ignored items add nothing). */
enum { FX_MS_NLL, FX_MS_NLL_WEIGHT, FX_MS_CLIPPED, FX_MS_HITS, FX_MS_ITEM_WEIGHT, FX_MS_BINS };
enum { FX_MC_KEPT, FX_MC_HITS, FX_MC_BAD, FX_MC_BINS };
typedef struct {
    const void *x;
    const void *labels;     /* (rows,) class labels; NULL: no targets (every row ignored) */
    fx_label_type label_type;
    int64_t C;
    int64_t ignore_index;
    const double *class_weight;     /* (C,) or NULL */
    const double *sample_weight;    /* (rows,) or NULL */
    int64_t top_k;
    double clip_lo, clip_hi;        /* the log loss's clipping of nll */
    int64_t n_bins;
    const float *edges;             /* (n_bins + 1,) calibration bin edges, float32 */
    int loss_only;                  /* 1: the loss sums and FX_MC_KEPT only (the log loss):
                                       no ranks, no bins (hits and bins stay 0) */
    double *nll;                    /* per-row outputs (rows,), or all NULL */
    double *conf;
    int64_t *argmax;
    int64_t *above;
} fx_metrics_args;

/* ------------------------------------------------------------------ kernels */

/* Each returns its items' summed loss (float64) where it computes a loss. The kernels
   allocate nothing that can fail: a row of more than FX_LOCAL_CHUNKS chunks keeps its
   chunk statistics in `row_chunks`, nch entries the caller allocated before any parallel
   region (one table per thread; NULL for shorter rows, whose table is on the stack). */

/* What the row kernels (softmax_rows, softmax_outputs_rows) keep of a row between its
   passes, one per thread, allocated by the caller before any parallel region:
     chunks  nch chunk statistics for rows of more than FX_LOCAL_CHUNKS chunks, else
             NULL (the table is on the stack)
     e       a half instance's rows of more than one chunk: C float32, the row's e_j
             from the exp pass kept for the gradient (or softmax) pass, which otherwise
             makes them again (the same bits) because a half output cannot hold them
             unrounded; NULL: made again (the caller bounds the size, _core.pyx)
   The items kernels share the row kernels' signatures and ignore it. */
typedef struct {
    fx_chunk *chunks;
    float *e;
} fx_row_scratch;

/* softmax family over rows [r0, r1) of (rows, C) */
typedef double (*softmax_rows_fn)(const fx_softmax_args *a, int64_t r0, int64_t r1,
                                  const fx_row_scratch *scratch);
/* the three phases of softmax_rows, for the chunk-parallel path over few long rows:
   chunk statistics, the row's finish (its loss), the chunk's gradient */
typedef void (*softmax_chunk_stats_fn)(const fx_softmax_args *a, int64_t row, int64_t chunk,
                                       fx_chunk *st);
typedef double (*softmax_row_finish_fn)(const fx_softmax_args *a, int64_t row,
                                        fx_chunk *row_chunks);
typedef void (*softmax_chunk_grad_fn)(const fx_softmax_args *a, int64_t row, int64_t chunk,
                                      const fx_chunk *row_chunks);
/* softmax family with the class axis not last: panels [k0, k1) of (outer, C, inner) */
typedef double (*softmax_cols_fn)(const fx_softmax_args *a, int64_t inner, int64_t k0,
                                  int64_t k1);
/* logsumexp / softmax / log_softmax / entropy over rows [r0, r1) of x (rows, C); out is
   (rows,) for LOGSUMEXP and ENTROPY, (rows, C) otherwise, input dtype */
typedef void (*softmax_outputs_fn)(const void *x, void *out, int64_t C, int64_t r0,
                                   int64_t r1, fx_softmax_output what,
                                   const fx_row_scratch *scratch);
/* softmax_outputs over panels [k0, k1) of x viewed as (outer, C, inner), the class axis
   not last (softmax_cols's panels); out is (outer, inner) for logsumexp and entropy, x's
   shape otherwise. NULL in the half instances. */
typedef void (*softmax_outputs_cols_fn)(const void *x, void *out, int64_t C, int64_t inner,
                                        int64_t k0, int64_t k1, fx_softmax_output what);
/* elementwise losses over flat elements [i0, i1) */
typedef double (*elementwise_range_fn)(const fx_elementwise_args *a, int64_t i0, int64_t i1);
/* sigmoid / log_sigmoid over elements [i0, i1) */
typedef void (*sigmoid_outputs_fn)(const void *x, void *out, int64_t i0, int64_t i1,
                                   fx_sigmoid_output what);
/* test hook: a point function of fx_vecmath.h over n values */
typedef void (*vecmath_fn)(const void *x, void *out, int64_t n, fx_vecmath_fn what);
/* evaluation metrics over rows [r0, r1) (fx_metrics_args); row_chunks as softmax_rows */
typedef void (*metrics_rows_fn)(const fx_metrics_args *a, int64_t r0, int64_t r1,
                                fx_chunk *row_chunks, double *sums, int64_t *counts);

/* ------------------------------------------------------------------ softmax partials */

/* The softmax family over rows whose classes are split into blocks (fx_partials.h): one
   row's partial, float64 whatever the input dtype. Field order is the NumPy dtype
   fastxent.partials.PARTIALS_DTYPE. */
typedef struct {
    double m;       /* max of the row's logits seen so far (NaN if one is NaN) */
    double s;       /* sum_j exp(x_j - sh), sh = m (0 when m == -inf) */
    double a;       /* sum_j b_j: the target mass (fx_softmax_item.h's notation) */
    double bd;      /* sum_j b_j (sh - x_j) */
    double w;       /* the item's weight in the mean: w_t (hard label), 1 (soft target) */
    double kept;    /* 1, 0 for an ignored item, NaN for a label that no longer validates */
} fx_partial;

/* What softmax_block_apply writes per element. */
typedef enum fx_partials_output { FX_PART_GRAD, FX_PART_SOFTMAX, FX_PART_LOG_SOFTMAX } fx_partials_output;

/* One block (rows, width) of logits holding classes [offset, offset + width) of `classes`. */
typedef struct {
    const void *x;          /* (rows, width) logits, C-contiguous */
    void *out;              /* softmax_block_apply: (rows, width), x's dtype */
    const void *labels;     /* (rows,) hard labels (global class indices), or NULL */
    fx_label_type label_type;
    const void *soft;       /* (rows, width) the block's target probabilities, or NULL */
    const void *weight;     /* (width,) the block's class weights, x's dtype, or NULL */
    int64_t width, offset, classes, ignore_index;
    double smoothing;
    double grad_scale;      /* FX_PART_GRAD: 1/denominator for "mean", else 1 */
    fx_partial *parts;      /* softmax_block_partials: (rows,) out */
    const fx_partial *merged;   /* softmax_block_apply: (rows,) the rows' merged partials */
    fx_partials_output what;
} fx_partials_args;

typedef void (*softmax_block_partials_fn)(const fx_partials_args *p, int64_t r0, int64_t r1,
                                          fx_chunk *row_chunks);
typedef void (*softmax_partials_merge_fn)(const fx_partial *a, const fx_partial *b,
                                          fx_partial *out, int64_t n);
typedef void (*softmax_partials_loss_fn)(const fx_partial *p, double *loss, int64_t n);
typedef void (*softmax_block_apply_fn)(const fx_partials_args *p, int64_t r0, int64_t r1);

/* One table per (precision, ISA), defined by fx_instance.h. */
typedef struct {
    const char *isa;
    int col_lanes;          /* items per panel of softmax_cols (FX_COL_VECS vectors) */
    softmax_rows_fn softmax_rows;
    softmax_rows_fn softmax_items;  /* rows of C <= items_max_c, lanes over items */
    softmax_rows_fn softmax_two_classes;    /* rows of 2 classes (fx_softmax_items.h) */
    int items_max_c;                /* the measured switch points (fx_softmax_items.h) */
    int outputs_items_max_c;
    softmax_chunk_stats_fn softmax_chunk_stats;
    softmax_row_finish_fn softmax_row_finish;
    softmax_chunk_grad_fn softmax_chunk_grad;
    softmax_cols_fn softmax_cols;
    softmax_outputs_fn softmax_outputs;
    softmax_outputs_fn softmax_outputs_items;   /* rows of C <= outputs_items_max_c */
    softmax_outputs_cols_fn softmax_outputs_cols;   /* the class axis not last */
    elementwise_range_fn elementwise_range;
    sigmoid_outputs_fn sigmoid_outputs;
    vecmath_fn vecmath;
    metrics_rows_fn metrics_rows;
    /* softmax partials (fx_partials.h) */
    softmax_block_partials_fn softmax_block_partials;
    softmax_partials_merge_fn softmax_partials_merge;
    softmax_partials_loss_fn softmax_partials_loss;
    softmax_block_apply_fn softmax_block_apply;
    metrics_rows_fn metrics_items;  /* rows of C <= items_max_c, lanes over rows */
} fx_table;

extern const fx_table fx_table_f32_baseline, fx_table_f64_baseline;
#if FX_HAVE_X86_DISPATCH
extern const fx_table fx_table_f32_avx2, fx_table_f64_avx2;
extern const fx_table fx_table_f32_avx512, fx_table_f64_avx512;
#endif
/* The half-precision input instances (float16, bfloat16 in memory; float32 compute). */
extern const fx_table fx_table_f16_baseline, fx_table_bf16_baseline;
#if FX_HAVE_X86_DISPATCH
extern const fx_table fx_table_f16_avx2, fx_table_bf16_avx2;
extern const fx_table fx_table_f16_avx512, fx_table_bf16_avx512;
#endif

/* ------------------------------------------------------------------ fx_dispatch.c */

/* The tables in use (set by fx_select_isa). */
extern const fx_table *fx_table_f32;
extern const fx_table *fx_table_f64;
extern const fx_table *fx_table_f16;
extern const fx_table *fx_table_bf16;
/* The name of built instance i (widest first), NULL past the last. */
const char *fx_isa_name(int i);
/* Can this CPU run the named variant ("baseline", "avx2", "avx512")? */
int fx_isa_supported(const char *name);
/* Select a variant by name ("best": the widest supported); 0 on success. */
int fx_select_isa(const char *name);
const char *fx_current_isa(void);

int fx_have_openmp(void);
int fx_omp_max_threads(void);
/* The most threads a call may start: the OpenMP default or the processor count,
   whichever is larger (a request beyond it gains nothing, and libgomp exits the
   process when it cannot create the threads). */
int fx_thread_cap(void);
/* How many of nt threads (the caller's included) a parallel region can have: nt, or
   fewer where the system cannot create more (see fx_dispatch.c). */
int fx_threads_creatable(int nt);

/* One pass over n labels, before anything is written: the position of the first label
   outside [0, C) that is not ignore_index (its value in *bad_value), or -1; and in
   *wsum the mean's denominator, the summed class weight of the kept labels. */
int64_t fx_check_labels(const void *labels, fx_label_type type, int64_t n, int64_t C,
                        int64_t ignore_index, const double *weight, double *wsum,
                        int64_t *bad_value);
/* First position in [0, n) whose value is not in [0, 1] (NaN included), or -1. */
int64_t fx_find_outside_unit(const void *x, int is_f32, int64_t n);

#endif /* FX_API_H */
