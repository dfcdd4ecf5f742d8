# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled core of fastxent: OpenMP loops over blocks of rows that call the C row
kernels of fx_kernels.h. Everything here trusts its arguments: the Python layer
(fastxent._api) has checked shapes, dtypes, contiguity and labels before calling.

Determinism: the rows are cut into blocks whose size depends only on the row length,
each block's loss is summed serially, and the block sums are added in block order, so
a result has the same bits whatever the thread count.
"""
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from cython.parallel cimport prange
cimport numpy as cnp

cnp.import_array()

cdef extern from "fx_kernels.h" nogil:
    ctypedef struct fx_ce_args:
        const void *x
        void *grad
        const void *labels
        int label_code
        const void *soft
        const void *weight
        double weight_total
        int64_t C
        int64_t ignore_index
        double smoothing
        double grad_scale
        void *row_loss
        int logprob_input
        int stream_grad

    ctypedef struct fx_elem_args:
        int kind
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
        void *elem_loss

    ctypedef struct fx_chunk:
        double alpha

    ctypedef double (*ce_rows_fn)(const fx_ce_args *a, int64_t r0, int64_t r1) noexcept nogil
    ctypedef void (*ce_phase1_fn)(const fx_ce_args *a, int64_t row, int64_t chunk, fx_chunk *st) noexcept nogil
    ctypedef double (*ce_phase2_fn)(const fx_ce_args *a, int64_t row, fx_chunk *row_chunks) noexcept nogil
    ctypedef void (*ce_phase3_fn)(const fx_ce_args *a, int64_t row, int64_t chunk, const fx_chunk *row_chunks) noexcept nogil
    ctypedef double (*ce_cols_fn)(const fx_ce_args *a, int64_t inner, int64_t k0, int64_t k1) noexcept nogil
    ctypedef void (*norm_rows_fn)(const void *x, void *out, int64_t C, int64_t r0, int64_t r1, int what) noexcept nogil
    ctypedef double (*pointwise_range_fn)(const fx_elem_args *a, int64_t i0, int64_t i1) noexcept nogil
    ctypedef void (*sigmoid_range_fn)(const void *x, void *out, int64_t i0, int64_t i1, int what) noexcept nogil
    ctypedef void (*vecmath_fn)(const void *x, void *out, int64_t n, int what) noexcept nogil

    ctypedef struct fx_table:
        const char *isa
        int lanes
        ce_rows_fn ce_rows
        ce_phase1_fn ce_phase1
        ce_phase2_fn ce_phase2
        ce_phase3_fn ce_phase3
        ce_cols_fn ce_cols
        norm_rows_fn norm_rows
        pointwise_range_fn pointwise_range
        sigmoid_range_fn sigmoid_range
        vecmath_fn vecmath

    const fx_table *fx_table_f32
    const fx_table *fx_table_f64
    int fx_isa_supported(const char *name)
    int fx_select_isa(const char *name)
    const char *fx_current_isa()
    int fx_have_openmp()
    int fx_omp_max_threads()
    int fx_thread_cap()
    int FX_CHUNK_BYTES
    int64_t fx_find_outside_unit(const void *x, int is_f32, int64_t n)
    int64_t fx_check_labels(const void *labels, int code, int64_t n, int64_t C,
                            int64_t ignore_index, const double *weight, double *wsum,
                            int64_t *bad_value)

# Work per block: big enough to amortise scheduling, small enough to balance 2..16
# threads. Blocks are cut by this constant and the row length only (determinism).
DEF BLOCK_ELEMS = 32768
# Below this many elements a call runs serially: a parallel region costs microseconds.
DEF SERIAL_BELOW = 65536
# Gradients of at least this many bytes are written with non-temporal stores (ce).
DEF STREAM_GRAD_BYTES = 8 * 1024 * 1024
stream_grad_bytes = STREAM_GRAD_BYTES   # for the tests

# GNU libgomp hangs a forked child that enters a parallel region once the parent has
# used OpenMP (its thread pool does not survive fork). So a child forked after this
# process ran a parallel kernel runs every kernel serially.
cdef bint _used_parallel = False
cdef bint _forked = False

def _after_fork_in_child():
    global _forked
    if _used_parallel:
        _forked = True

fx_select_isa(b"best")

ISAS = ("avx512", "avx2", "baseline")


def isa_available():
    """The kernel variants this CPU can run, widest first."""
    return [name for name in ISAS if fx_isa_supported(name.encode())]


def current_isa():
    return fx_current_isa().decode()


def select_isa(name):
    """Switch kernel variant ('avx512', 'avx2', 'baseline' or 'best'); returns the
    previous one. Raises ValueError if the CPU cannot run it."""
    prev = current_isa()
    if fx_select_isa(str(name).encode()) != 0:
        raise ValueError(f"ISA {name!r} is not supported on this CPU; available: {isa_available()}")
    return prev


def have_openmp():
    return bool(fx_have_openmp())


def default_threads():
    """Threads a call with n_threads=None uses: OpenMP's current default."""
    return 1 if _forked else fx_omp_max_threads()


def forked_serial():
    """True in a child forked after the parent ran a parallel kernel (runs serially)."""
    return bool(_forked)


cdef inline int _threads(object n_threads, int64_t work, int64_t nblocks):
    global _used_parallel
    cdef int nt
    if _forked or work < SERIAL_BELOW or nblocks < 2:
        return 1
    nt = fx_omp_max_threads() if n_threads is None else <int>n_threads
    if nt > fx_thread_cap():
        nt = fx_thread_cap()
    if nt > nblocks:
        nt = <int>nblocks
    if nt > 1:
        _used_parallel = True
        return nt
    return 1


cdef inline void* _ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline const fx_table* _table(cnp.ndarray x):
    return fx_table_f32 if cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32 else fx_table_f64


# What _sum_blocks runs over: rows of the softmax family, column panels of it, elements.
DEF K_ROWS = 0
DEF K_COLS = 1
DEF K_ELEMS = 2


cdef inline double _block(int kind, void *args, const fx_table *tab, int64_t inner,
                          int64_t i0, int64_t i1) noexcept nogil:
    if kind == K_ROWS:
        return tab.ce_rows(<fx_ce_args*>args, i0, i1)
    if kind == K_COLS:
        return tab.ce_cols(<fx_ce_args*>args, inner, i0, i1)
    return tab.pointwise_range(<fx_elem_args*>args, i0, i1)


cdef double _sum_blocks(int kind, void *args, const fx_table *tab, int64_t inner, int64_t n,
                        int64_t per, int nt) except? -1.0:
    """Items [0, n) in blocks of `per` (fixed by the caller from the shape alone): each
    block summed serially, the block sums added in block order, so the total has the same
    bits whatever `nt`."""
    cdef int64_t nblocks
    cdef double total = 0.0
    cdef int64_t b
    cdef double *part
    if n <= 0 or per <= 0:
        return 0.0
    nblocks = (n - 1) // per + 1          # n > 0: no overflow near INT64_MAX
    part = <double*>malloc(<size_t>nblocks * sizeof(double))
    if part == NULL:
        raise MemoryError()
    with nogil:
        if nt == 1:
            for b in range(nblocks):
                part[b] = _block(kind, args, tab, inner, b * per, min(n, (b + 1) * per))
        else:
            for b in prange(nblocks, schedule="static", num_threads=nt):
                part[b] = _block(kind, args, tab, inner, b * per, min(n, (b + 1) * per))
        for b in range(nblocks):
            total += part[b]
    free(part)
    return total


def check_labels(cnp.ndarray labels, int code, int64_t C, int64_t ignore_index, weight64):
    """One pass over the labels: (position of the first bad label or -1, its value,
    summed weight of the non-ignored labels)."""
    cdef double wsum = 0.0
    cdef int64_t bad_value = 0, pos
    cdef const double *w = <const double*>_ptr(weight64)
    cdef const void *lp = cnp.PyArray_DATA(labels)
    cdef int64_t n = cnp.PyArray_SIZE(labels)
    with nogil:
        pos = fx_check_labels(lp, code, n, C, ignore_index, w, &wsum, &bad_value)
    return pos, bad_value, wsum


def ce(cnp.ndarray x, int64_t C, int64_t inner, labels, int label_code, soft, weight,
       double weight_total, int64_t ignore_index, double smoothing, double grad_scale, grad,
       row_loss, bint logprob_input, n_threads):
    """Softmax cross-entropy family over x viewed as (outer, C, inner), C-contiguous;
    returns the summed loss. inner == 1 is the row layout (class axis last)."""
    cdef fx_ce_args a
    cdef int64_t rows = cnp.PyArray_SIZE(x) // C if C > 0 else 0
    a.x = cnp.PyArray_DATA(x)
    a.grad = _ptr(grad)
    a.labels = _ptr(labels)
    a.label_code = label_code
    a.soft = _ptr(soft)
    a.weight = _ptr(weight)
    a.weight_total = weight_total
    a.C = C
    a.ignore_index = ignore_index
    a.smoothing = smoothing
    a.grad_scale = grad_scale
    a.row_loss = _ptr(row_loss)
    a.logprob_input = logprob_input
    # A gradient this big leaves the caches anyway: writing it with non-temporal stores
    # saves reading each of its lines from memory before overwriting it. (In place the
    # lines were just read as logits, so there is nothing to save.)
    a.stream_grad = (grad is not None and a.grad != a.x
                     and cnp.PyArray_NBYTES(<cnp.ndarray>grad) >= STREAM_GRAD_BYTES)
    cdef const fx_table *tab = _table(x)
    if rows == 0 or inner <= 0:
        return 0.0
    if inner != 1:
        return _ce_cols(&a, tab, rows // inner, inner, n_threads)
    cdef int64_t per = BLOCK_ELEMS // C if C > 0 else 1
    if per < 1:
        per = 1
    cdef int64_t nblocks = (rows + per - 1) // per
    cdef int64_t chunk = FX_CHUNK_BYTES // cnp.PyArray_ITEMSIZE(x)
    cdef int64_t nch = (C + chunk - 1) // chunk
    cdef int nt = _threads(n_threads, rows * C, nblocks * nch)
    # Few long rows (an LLM vocabulary): parallel over the chunks of the rows too.
    if nt > 1 and nch > 1 and rows < 2 * nt and not logprob_input:
        return _ce_by_chunk(&a, tab, rows, nch, per, nt)
    return _sum_blocks(K_ROWS, &a, tab, 1, rows, per, nt)


cdef double _ce_by_chunk(fx_ce_args *a, const fx_table *tab, int64_t rows, int64_t nch,
                         int64_t per, int nt) except? -1.0:
    """The row path's three phases with the chunks of all rows spread over the threads;
    per row the same calls in the same order, and the row losses summed in the same
    blocks, so the same bits as _sum_blocks(K_ROWS, ...)."""
    cdef int64_t nblocks = (rows + per - 1) // per
    cdef double total = 0.0, part
    cdef int64_t b, r, i
    cdef fx_chunk *st = <fx_chunk*>malloc(rows * nch * sizeof(fx_chunk))
    if st == NULL:
        raise MemoryError()
    with nogil:
        for i in prange(rows * nch, schedule="static", num_threads=nt):
            tab.ce_phase1(a, i // nch, i % nch, &st[i])
        for b in range(nblocks):
            part = 0.0
            for r in range(b * per, min(rows, (b + 1) * per)):
                part = part + tab.ce_phase2(a, r, &st[r * nch])
            total = total + part
        if a.grad != NULL:
            for i in prange(rows * nch, schedule="static", num_threads=nt):
                tab.ce_phase3(a, i // nch, i % nch, &st[(i // nch) * nch])
    free(st)
    return total


cdef double _ce_cols(fx_ce_args *a, const fx_table *tab, int64_t outer, int64_t inner,
                     n_threads) except? -1.0:
    """The column layout: parallel over panels of `lanes` positions along `inner`."""
    cdef int64_t tpo = (inner + tab.lanes - 1) // tab.lanes
    cdef int64_t ntiles = outer * tpo
    cdef int64_t per = BLOCK_ELEMS // (a.C * tab.lanes) if a.C * tab.lanes < BLOCK_ELEMS else 1
    cdef int nt = _threads(n_threads, outer * inner * a.C, (ntiles + per - 1) // per)
    return _sum_blocks(K_COLS, a, tab, inner, ntiles, per, nt)


def norm(cnp.ndarray x, cnp.ndarray out, int what, n_threads):
    """logsumexp / softmax / log_softmax / entropy over the last axis of x."""
    cdef int64_t C = x.shape[x.ndim - 1]
    cdef int64_t rows = cnp.PyArray_SIZE(x) // C if C > 0 else 0
    cdef norm_rows_fn fn = _table(x).norm_rows
    cdef const void *xp = cnp.PyArray_DATA(x)
    cdef void *op = cnp.PyArray_DATA(out)
    cdef int64_t per = BLOCK_ELEMS // C if C > 0 else 1
    if per < 1:
        per = 1
    cdef int64_t nblocks = (rows + per - 1) // per
    cdef int nt = _threads(n_threads, rows * C, nblocks)
    cdef int64_t b
    with nogil:
        if nt == 1:
            fn(xp, op, C, 0, rows, what)
        else:
            for b in prange(nblocks, schedule="static", num_threads=nt):
                fn(xp, op, C, b * per, min(rows, (b + 1) * per), what)


def pointwise(int kind, cnp.ndarray x, cnp.ndarray target, weight, bint weight_per_col,
              pos_weight, bint pos_weight_per_col, double grad_scale, grad, elem_loss,
              n_threads):
    """Elementwise losses (kind: 0 BCE with logits, 1 BCE on probabilities, 2 KL, 3 KL
    with log-target) over x viewed as (rows, cols), cols = last axis; returns the sum."""
    cdef fx_elem_args a
    cdef int64_t n = cnp.PyArray_SIZE(x)
    a.kind = kind
    a.x = cnp.PyArray_DATA(x)
    a.grad = _ptr(grad)
    a.target = cnp.PyArray_DATA(target)
    a.target_u8 = cnp.PyArray_ITEMSIZE(target) == 1
    a.weight = _ptr(weight)
    a.weight_per_col = weight_per_col
    a.pos_weight = _ptr(pos_weight)
    a.pos_weight_per_col = pos_weight_per_col
    a.cols = x.shape[x.ndim - 1] if x.ndim > 0 else 1
    a.grad_scale = grad_scale
    a.elem_loss = _ptr(elem_loss)
    cdef int64_t nblocks = (n + BLOCK_ELEMS - 1) // BLOCK_ELEMS
    if n == 0 or a.cols == 0:
        return 0.0
    return _sum_blocks(K_ELEMS, &a, _table(x), 1, n, BLOCK_ELEMS,
                       _threads(n_threads, n, nblocks))


def find_outside_unit(cnp.ndarray x):
    """Flat position of the first value of x not in [0, 1] (NaN included), or -1."""
    cdef const void *p = cnp.PyArray_DATA(x)
    cdef int f32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    cdef int64_t n = cnp.PyArray_SIZE(x), pos
    with nogil:
        pos = fx_find_outside_unit(p, f32, n)
    return pos


def sigmoid(cnp.ndarray x, cnp.ndarray out, int what, n_threads):
    """sigmoid (what=0) or log_sigmoid (what=1), elementwise."""
    cdef int64_t n = cnp.PyArray_SIZE(x)
    cdef sigmoid_range_fn fn = _table(x).sigmoid_range
    cdef const void *xp = cnp.PyArray_DATA(x)
    cdef void *op = cnp.PyArray_DATA(out)
    cdef int64_t per = BLOCK_ELEMS
    cdef int64_t nblocks = (n + per - 1) // per
    cdef int nt = _threads(n_threads, n, nblocks)
    cdef int64_t b
    with nogil:
        if nt == 1:
            fn(xp, op, 0, n, what)
        else:
            for b in prange(nblocks, schedule="static", num_threads=nt):
                fn(xp, op, b * per, min(n, (b + 1) * per), what)


def vecmath(cnp.ndarray x, cnp.ndarray out, int what):
    """Test hook: the kernels' own exp (what=0, for x <= 0), log1p (what=1, for x in
    [0, 1]) or log (what=2) over a contiguous float array, so their error can be
    measured in ulps."""
    _table(x).vecmath(cnp.PyArray_DATA(x), cnp.PyArray_DATA(out), cnp.PyArray_SIZE(x), what)
