/*
 * One (precision, ISA) instance of every kernel: included by fx_<prec>_<isa>.c, which
 * defines FX_F32 and FX_ISA_<ISA> first (and FX_HALF_F16 or FX_HALF_BF16 for the half
 * instances, whose storage type T is 16 bits and compute type R float32: fx_simd.h); defines that instance's table of kernels,
 * fx_table_<prec>_<isa> (fx_api.h). Each instance is its own translation unit, so a
 * build compiles them in parallel.
 */
#include "fx_api.h"

#if defined(FX_ISA_BASELINE) || FX_HAVE_X86_DISPATCH

#include "fx_simd.h"
#include "fx_vecmath.h"
#include "fx_softmax_rows.h"
#include "fx_softmax_cols.h"
#include "fx_softmax_items.h"
#include "fx_elementwise.h"
#if !FX_HALF
/* the metrics and the partials read float32/float64 only (Python refuses half input
   there): the half instances leave those table entries NULL */
#include "fx_metrics.h"
#include "fx_partials.h"
#endif

/* Test hook: the raw point functions over an array, so that tests can bound their
   error in ulps against float64. */
KERNEL void vecmath_range(const void *xv, void *outv, int64_t n, fx_vecmath_fn what)
{
    int64_t i = 0;
    if (what == FX_MATH_EXP_NONPOS)      /* the exp passes' four chains at once (same bits):
                                            the benchmarks' compute floor */
        for (; i + FX_EXP_MAX_K * VL <= n; i += FX_EXP_MAX_K * VL) {
            VR v[FX_EXP_MAX_K];
            for (int u = 0; u < FX_EXP_MAX_K; u++) v[u] = vload((const R *)xv + i + u * VL);
            vexp_nonpos_k(v, FX_EXP_MAX_K);
            for (int u = 0; u < FX_EXP_MAX_K; u++) vstore((R *)outv + i + u * VL, v[u]);
        }
    for (; i < n; i += VL) {
        int full = i + VL <= n;
        int64_t k = full ? VL : n - i;
        VR x = full ? vload((const R *)xv + i) : vload_part((const R *)xv + i, k, 0);
        VR o, inv;
        o = what == FX_MATH_EXP_NONPOS ? vexp_nonpos(x)
          : what == FX_MATH_LOG1P_UNIT ? vlog1p_unit(x, &inv) : vlog(x);
        if (full) vstore((R *)outv + i, o);
        else vstore_part((R *)outv + i, o, k);
    }
}

#define FX_CAT3_(a, b, c) a##_##b##_##c
#define FX_CAT3(a, b, c) FX_CAT3_(a, b, c)
#define FX_STR_(x) #x
#define FX_STR(x) FX_STR_(x)
#if defined(FX_HALF_F16)
#define FX_PREC f16
#elif defined(FX_HALF_BF16)
#define FX_PREC bf16
#elif FX_F32
#define FX_PREC f32
#else
#define FX_PREC f64
#endif

const fx_table FX_CAT3(fx_table, FX_PREC, FX_ISA) = {
    .isa = FX_STR(FX_ISA),
    .col_lanes = FX_COL_VECS * VL,
    .softmax_rows = softmax_rows,
    .softmax_items = softmax_items,
    .softmax_two_classes = softmax_two_classes,
    .items_max_c = FX_ITEMS_SWITCH_LOSS,
    .outputs_items_max_c = FX_ITEMS_SWITCH_BLOCKS,
    .softmax_chunk_stats = softmax_chunk_stats,
    .softmax_row_finish = softmax_row_finish,
    .softmax_chunk_grad = softmax_chunk_grad,
    .softmax_cols = softmax_cols,
    .softmax_outputs = softmax_outputs_rows,
    .softmax_outputs_items = softmax_outputs_items,
    .elementwise_range = elementwise_range,
    .sigmoid_outputs = sigmoid_outputs_range,
    .vecmath = vecmath_range,
#if !FX_HALF
    .softmax_outputs_cols = softmax_outputs_cols,
    .metrics_rows = metrics_rows,
    .metrics_items = metrics_items,
    .softmax_block_partials = softmax_block_partials,
    .softmax_partials_merge = softmax_partials_merge,
    .softmax_partials_loss = softmax_partials_loss,
    .softmax_block_apply = softmax_block_apply,
#endif
};

#endif
