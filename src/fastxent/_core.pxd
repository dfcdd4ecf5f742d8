# The C interface of the kernels (kernels/fx_api.h), for _core.pyx. fx_api.h is the
# one declaration of these enums and structs; this file only names what Cython uses
# (a field or value missing or mistyped here fails the C compile). The cpdef enums are
# also Python enums of fastxent._core, which the Python layer uses by name.
from libc.stdint cimport int64_t

cdef extern from "fx_api.h" nogil:
    int FX_CHUNK_BYTES
    int FX_ITEMS_MAX_C

    ctypedef enum fx_label_type:
        FX_I8, FX_I16, FX_I32, FX_I64, FX_U8, FX_U16, FX_U32, FX_U64

    cpdef enum fx_elementwise_loss:
        FX_BCE_LOGITS, FX_BCE_PROBS, FX_KL, FX_KL_LOG_TARGET

    cpdef enum fx_softmax_output:
        FX_OUT_LOGSUMEXP, FX_OUT_SOFTMAX, FX_OUT_LOG_SOFTMAX, FX_OUT_ENTROPY

    cpdef enum fx_sigmoid_output:
        FX_OUT_SIGMOID, FX_OUT_LOG_SIGMOID

    cpdef enum fx_vecmath_fn:
        FX_MATH_EXP_NONPOS, FX_MATH_LOG1P_UNIT, FX_MATH_LOG

    ctypedef struct fx_chunk:
        pass

    ctypedef struct fx_softmax_args:
        const void *x
        void *grad
        const void *labels
        fx_label_type label_type
        const void *soft
        const void *weight
        double weight_total
        int64_t C
        int64_t ignore_index
        double smoothing
        double grad_scale
        void *item_loss
        int logprob_input
        int stream_grad

    ctypedef struct fx_elementwise_args:
        fx_elementwise_loss loss
        const void *x
        void *grad
        const void *target
        int target_u8
        const void *weight
        int weight_per_col
        const void *pos_weight
        int pos_weight_per_col
        int64_t cols
        double grad_scale
        void *item_loss

    int FX_LOCAL_CHUNKS
    ctypedef struct fx_row_scratch:
        fx_chunk *chunks
        float *e
    ctypedef double (*softmax_rows_fn)(const fx_softmax_args *a, int64_t r0, int64_t r1, const fx_row_scratch *scratch) noexcept nogil
    ctypedef void (*softmax_chunk_stats_fn)(const fx_softmax_args *a, int64_t row, int64_t chunk, fx_chunk *st) noexcept nogil
    ctypedef double (*softmax_row_finish_fn)(const fx_softmax_args *a, int64_t row, fx_chunk *row_chunks) noexcept nogil
    ctypedef void (*softmax_chunk_grad_fn)(const fx_softmax_args *a, int64_t row, int64_t chunk, const fx_chunk *row_chunks) noexcept nogil
    ctypedef double (*softmax_cols_fn)(const fx_softmax_args *a, int64_t inner, int64_t k0, int64_t k1) noexcept nogil
    ctypedef void (*softmax_outputs_fn)(const void *x, void *out, int64_t C, int64_t r0, int64_t r1, fx_softmax_output what, const fx_row_scratch *scratch) noexcept nogil
    ctypedef void (*softmax_outputs_cols_fn)(const void *x, void *out, int64_t C, int64_t inner, int64_t k0, int64_t k1, fx_softmax_output what) noexcept nogil
    ctypedef double (*elementwise_range_fn)(const fx_elementwise_args *a, int64_t i0, int64_t i1) noexcept nogil
    ctypedef void (*sigmoid_outputs_fn)(const void *x, void *out, int64_t i0, int64_t i1, fx_sigmoid_output what) noexcept nogil
    ctypedef void (*vecmath_fn)(const void *x, void *out, int64_t n, fx_vecmath_fn what) noexcept nogil

    int FX_MS_BINS
    int FX_MC_BINS
    ctypedef struct fx_metrics_args:
        const void *x
        const void *labels
        fx_label_type label_type
        int64_t C
        int64_t ignore_index
        const double *class_weight
        const double *sample_weight
        int64_t top_k
        double clip_lo
        double clip_hi
        int64_t n_bins
        const float *edges
        int loss_only
        double *nll
        double *conf
        int64_t *argmax
        int64_t *above
    ctypedef void (*metrics_rows_fn)(const fx_metrics_args *a, int64_t r0, int64_t r1, fx_chunk *row_chunks, double *sums, int64_t *counts) noexcept nogil
    ctypedef struct fx_partial:
        double m
        double s
        double a
        double bd
        double w
        double kept

    cpdef enum fx_partials_output:
        FX_PART_GRAD, FX_PART_SOFTMAX, FX_PART_LOG_SOFTMAX

    ctypedef struct fx_partials_args:
        const void *x
        void *out
        const void *labels
        fx_label_type label_type
        const void *soft
        const void *weight
        int64_t width
        int64_t offset
        int64_t classes
        int64_t ignore_index
        double smoothing
        double grad_scale
        fx_partial *parts
        const fx_partial *merged
        fx_partials_output what

    ctypedef void (*softmax_block_partials_fn)(const fx_partials_args *p, int64_t r0, int64_t r1, fx_chunk *row_chunks) noexcept nogil
    ctypedef void (*softmax_partials_merge_fn)(const fx_partial *a, const fx_partial *b, fx_partial *out, int64_t n) noexcept nogil
    ctypedef void (*softmax_partials_loss_fn)(const fx_partial *p, double *loss, int64_t n) noexcept nogil
    ctypedef void (*softmax_block_apply_fn)(const fx_partials_args *p, int64_t r0, int64_t r1) noexcept nogil

    ctypedef struct fx_table:
        const char *isa
        int col_lanes
        softmax_rows_fn softmax_rows
        softmax_rows_fn softmax_items
        softmax_rows_fn softmax_two_classes
        int items_max_c
        int outputs_items_max_c
        softmax_chunk_stats_fn softmax_chunk_stats
        softmax_row_finish_fn softmax_row_finish
        softmax_chunk_grad_fn softmax_chunk_grad
        softmax_cols_fn softmax_cols
        softmax_outputs_fn softmax_outputs
        softmax_outputs_fn softmax_outputs_items
        softmax_outputs_cols_fn softmax_outputs_cols
        elementwise_range_fn elementwise_range
        sigmoid_outputs_fn sigmoid_outputs
        vecmath_fn vecmath
        metrics_rows_fn metrics_rows
        softmax_block_partials_fn softmax_block_partials
        softmax_partials_merge_fn softmax_partials_merge
        softmax_partials_loss_fn softmax_partials_loss
        softmax_block_apply_fn softmax_block_apply
        metrics_rows_fn metrics_items

    const fx_table *fx_table_f32
    const fx_table *fx_table_f64
    const fx_table *fx_table_f16
    const fx_table *fx_table_bf16
    const char *fx_isa_name(int i)
    int fx_isa_supported(const char *name)
    int fx_select_isa(const char *name)
    const char *fx_current_isa()
    int fx_have_openmp()
    int fx_omp_max_threads()
    int fx_thread_cap()
    int fx_threads_creatable(int nt)
    int64_t fx_check_labels(const void *labels, fx_label_type type, int64_t n, int64_t C,
                            int64_t ignore_index, const double *weight, double *wsum,
                            int64_t *bad_value)
    int64_t fx_find_outside_unit(const void *x, int is_f32, int64_t n)
