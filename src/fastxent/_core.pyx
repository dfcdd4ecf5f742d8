# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Compiled core of fastxent: OpenMP loops over blocks of items that call the C kernels
(kernels/, interface in kernels/fx_api.h, named for Cython in _core.pxd). Everything
here trusts its arguments: the Python layer (_losses.py, _blocks.py, through
_checks.py) has checked shapes, dtypes, contiguity and labels before calling. Entry
points take their options by keyword.

Determinism: the rows are cut into blocks whose size depends only on the row length,
each block's loss is summed serially, and the block sums are added in block order, so
a result has the same bits whatever the thread count.
"""
from libc.stdint cimport int64_t
from libc.stdlib cimport malloc, free
from cython.parallel cimport prange, threadid
cimport numpy as cnp

cnp.import_array()

# Work per block: big enough to amortise scheduling, small enough to balance 2..16
# threads. Blocks are cut by this constant and the row length only (determinism).
DEF BLOCK_ELEMS = 32768
# Below this many elements a call runs serially: a parallel region costs microseconds.
DEF SERIAL_BELOW = 65536
# Gradients of at least this many bytes are written with non-temporal stores (ce).
DEF STREAM_GRAD_BYTES = 8 * 1024 * 1024
stream_grad_bytes = STREAM_GRAD_BYTES   # for the tests

# GNU libgomp hangs a forked child that enters a parallel region once the parent has
# used OpenMP (its thread pool does not survive fork). The parent may have used it
# through another library on the same runtime (scikit-learn, PyTorch, any extension
# sharing libgomp, as in conda environments), which fastxent cannot see: so every
# forked child runs every kernel serially.
cdef bint _used_parallel = False
cdef bint _forked = False

def _after_fork_in_child():
    global _forked
    _forked = True

fx_select_isa(b"best")

def _built_isas():
    cdef int i = 0
    names = []
    while fx_isa_name(i) != NULL:
        names.append(fx_isa_name(i).decode())
        i += 1
    return tuple(names)


ISAS = _built_isas()   # the instances this build has, widest first


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
    """True in a forked child (which runs serially: see _after_fork_in_child)."""
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
        nt = fx_threads_creatable(nt)   # never ask libgomp for threads it cannot make
    if nt > 1:
        _used_parallel = True
        return nt
    return 1


# Every allocation of the compiled core goes through _alloc, before any parallel region
# (the kernels allocate nothing that can fail): a failure is a MemoryError before
# anything is written. _fail_allocation_after is the test hook for that path.
cdef int64_t _fail_after = -1
cdef int _items_max_c = -1        # test hook: overrides the tables' items_max_c when >= 0


ITEMS_MAX_C = FX_ITEMS_MAX_C     # the most classes a row may have on the items path


def _set_items_max_c(int c):
    """Test and benchmark hook: rows of C <= c classes take the items path (-1: each
    table's measured switch; 0: never; at most ITEMS_MAX_C). Returns the previous
    setting."""
    global _items_max_c
    prev = _items_max_c
    _items_max_c = c
    return prev


cdef inline int _items_switch(int measured) noexcept nogil:
    # (a table without an items path, measured == 0, stays without: every instance has
    # one today, the half ones included)
    return measured if _items_max_c < 0 or measured == 0 else min(_items_max_c, FX_ITEMS_MAX_C)



def _fail_allocation_after(int64_t n):
    """Test hook: after n more successful allocations, the compiled core's next one fails
    as if out of memory (once); n < 0 cancels."""
    global _fail_after
    _fail_after = n


cdef void* _alloc(size_t nbytes) except NULL:
    global _fail_after
    cdef void *p
    if _fail_after == 0:
        _fail_after = -1
        raise MemoryError(f"fastxent could not allocate {nbytes} bytes")
    if _fail_after > 0:
        _fail_after -= 1
    p = malloc(nbytes if nbytes > 0 else 1)
    if p == NULL:
        raise MemoryError(f"fastxent could not allocate {nbytes} bytes")
    return p


cdef fx_chunk* _chunk_tables(int64_t nch, int nt) except? NULL:
    """Per-thread chunk tables for rows of more than FX_LOCAL_CHUNKS chunks (fx_api.h);
    NULL for shorter rows."""
    if nch <= FX_LOCAL_CHUNKS:
        return NULL
    return <fx_chunk*>_alloc(<size_t>nt * <size_t>nch * sizeof(fx_chunk))


# A half input's rows keep their e_j in a float32 row per thread (fx_row_scratch.e) up to
# this many bytes; longer rows make them again. Kept, a row is written and read back
# from the cache; made again, its 2-byte logits are read from memory again and exp-ed
# again. (_set_row_e_max_bytes: the test and benchmark hook.)
cdef int64_t _row_e_max_bytes = 1024 * 1024


def _set_row_e_max_bytes(int64_t n):
    """Test and benchmark hook: the largest float32 row (bytes) a half input's row
    kernels keep their e_j in (0: always make them again). Returns the previous value."""
    global _row_e_max_bytes
    prev = _row_e_max_bytes
    _row_e_max_bytes = n
    return prev


cdef fx_row_scratch* _row_scratch(int64_t nch, int64_t C, int nt, bint keep_e) except NULL:
    """One fx_row_scratch per thread (fx_api.h) in one allocation: nt entries, then each
    thread's chunk table (rows of more than FX_LOCAL_CHUNKS chunks) and float32 row of
    e_j (keep_e: a half input whose row pass writes a gradient or softmax, up to
    _row_e_max_bytes), 64-byte aligned. Freed with free()."""
    cdef size_t head = (<size_t>nt * sizeof(fx_row_scratch) + 63) // 64 * 64
    cdef size_t tab = 0, ebytes = 0
    cdef int i
    if nch > FX_LOCAL_CHUNKS:
        tab = (<size_t>nch * sizeof(fx_chunk) + 63) // 64 * 64
    if keep_e and C * 4 <= _row_e_max_bytes:
        ebytes = (<size_t>C * 4 + 63) // 64 * 64
    cdef char *p = <char*>_alloc(head + <size_t>nt * (tab + ebytes) + 64)
    cdef char *base = p + (64 - <size_t>p % 64) % 64 + head     # head stays a multiple of 64
    cdef fx_row_scratch *scr = <fx_row_scratch*>p
    for i in range(nt):
        scr[i].chunks = <fx_chunk*>(base + i * (tab + ebytes)) if tab else NULL
        scr[i].e = <float*>(base + i * (tab + ebytes) + tab) if ebytes else NULL
    return scr


cdef inline void* _ptr(object a):
    return NULL if a is None else cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline const fx_table* _table(cnp.ndarray x):
    """The kernels for x's dtype: float32, float64, float16, or bfloat16, which the Python
    layer hands over as a uint16 view (_checks.kernel_view; its dtype's type number is
    assigned at run time, so it is never tested here)."""
    cdef int t = cnp.PyArray_TYPE(x)
    if t == cnp.NPY_FLOAT32:
        return fx_table_f32
    if t == cnp.NPY_FLOAT16:
        return fx_table_f16
    if t == cnp.NPY_UINT16:
        return fx_table_bf16
    return fx_table_f64


cdef const fx_table* _float_table(cnp.ndarray x, str what) except NULL:
    """_table for the kernels that read float32/float64 only (metrics, partials): the
    half instances leave them NULL, so half input is refused here."""
    if cnp.PyArray_ITEMSIZE(x) == 2:
        raise TypeError(f"{what}: float32 or float64 input only, got {x.dtype}")
    return _table(x)


cdef inline int64_t _chunk_elems(cnp.ndarray x):
    """Elements per row chunk, as the kernels count them (FX_CHUNK_BYTES of the compute
    type: a half instance computes in float32)."""
    cdef int64_t size = cnp.PyArray_ITEMSIZE(x)
    return FX_CHUNK_BYTES // (4 if size < 4 else size)


def col_buffer_fits(cnp.ndarray x, int64_t classes):
    """Whether the class-axis kernel (softmax_cols) has its panel buffer for `classes`
    classes of x's dtype, as a half instance needs (kernels/fx_softmax_cols.h)."""
    return classes * _table(x).col_lanes * 4 <= 512 * 1024


cdef fx_label_type _label_type(cnp.ndarray labels) except *:
    """The kernels' code for an integer label dtype (log2 of its size in the low bits)."""
    cdef char kind = labels.descr.kind
    cdef int size = cnp.PyArray_ITEMSIZE(labels)
    cdef int log2 = 0 if size == 1 else 1 if size == 2 else 2 if size == 4 else 3
    if (kind != b'i' and kind != b'u') or size > 8 or (1 << log2) != size:
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    return <fx_label_type>((4 if kind == b'u' else 0) + log2)


# What _sum_blocks runs over: softmax rows, softmax column panels, elements, softmax rows
# of few classes with lanes over items.
DEF K_ROWS = 0
DEF K_COLS = 1
DEF K_ELEMENTS = 2
DEF K_ITEMS = 3
DEF K_TWO_CLASSES = 4       # rows of 2 classes, the table's own kernel for them


cdef inline double _block(int kind, void *args, const fx_table *tab, int64_t inner,
                          int64_t i0, int64_t i1, const fx_row_scratch *scratch) noexcept nogil:
    if kind == K_ROWS:
        return tab.softmax_rows(<fx_softmax_args*>args, i0, i1, scratch)
    if kind == K_COLS:
        return tab.softmax_cols(<fx_softmax_args*>args, inner, i0, i1)
    if kind == K_ITEMS:
        return tab.softmax_items(<fx_softmax_args*>args, i0, i1, NULL)
    if kind == K_TWO_CLASSES:
        return tab.softmax_two_classes(<fx_softmax_args*>args, i0, i1, NULL)
    return tab.elementwise_range(<fx_elementwise_args*>args, i0, i1)


cdef double _sum_blocks(int kind, void *args, const fx_table *tab, int64_t inner, int64_t n,
                        int64_t per, int nt, int64_t nch=0, bint keep_e=False) except? -1.0:
    """Items [0, n) in blocks of `per` (fixed by the caller from the shape alone): each
    block summed serially, the block sums added in block order, so the total has the same
    bits whatever `nt`. nch, keep_e: chunks per softmax row and whether a half row keeps
    its e_j (K_ROWS), for the row scratch (_row_scratch)."""
    cdef int64_t nblocks
    cdef double total = 0.0
    cdef int64_t b
    cdef double *part
    cdef fx_row_scratch *scratch = NULL
    if n <= 0 or per <= 0:
        return 0.0
    nblocks = (n - 1) // per + 1          # n > 0: no overflow near INT64_MAX
    part = <double*>_alloc(<size_t>nblocks * sizeof(double))
    try:
        if kind == K_ROWS:
            scratch = _row_scratch(nch, (<fx_softmax_args*>args).C, nt, keep_e)
        with nogil:
            if nt == 1:
                for b in range(nblocks):
                    part[b] = _block(kind, args, tab, inner, b * per, min(n, (b + 1) * per),
                                     scratch)
            else:
                for b in prange(nblocks, schedule="static", num_threads=nt):
                    part[b] = _block(kind, args, tab, inner, b * per, min(n, (b + 1) * per),
                                     scratch + threadid() if scratch != NULL else NULL)
            for b in range(nblocks):
                total += part[b]
    finally:
        free(part)
        free(scratch)
    return total


# Labels checked per block of this many: blocks in parallel where there are several, the
# kept counts (or weight sums) added in block order, the same bits for any thread count.
DEF LABEL_BLOCK = 65536


def check_labels(cnp.ndarray labels, *, int64_t classes, int64_t ignore_index, weight64,
                 n_threads=1):
    """One pass over the labels (any integer dtype, C-contiguous): (position of the first
    label outside [0, classes) that is not ignore_index, or -1; its value; the summed
    float64 weight64 (None: 1 each) of the kept labels)."""
    cdef double wsum = 0.0
    cdef int64_t bad_value = 0, pos = -1, b
    cdef const double *w = <const double*>_ptr(weight64)
    cdef const char *lp = <const char*>cnp.PyArray_DATA(labels)
    cdef int64_t n = cnp.PyArray_SIZE(labels)
    cdef int64_t esize = cnp.PyArray_ITEMSIZE(labels)
    cdef fx_label_type lt = _label_type(labels)
    cdef int64_t nblocks = (n - 1) // LABEL_BLOCK + 1 if n > 0 else 0
    cdef int nt = _threads(n_threads, n, nblocks)
    cdef int64_t *first
    cdef int64_t *value
    cdef double *part
    if nblocks <= 1:
        with nogil:
            pos = fx_check_labels(lp, lt, n, classes, ignore_index, w, &wsum, &bad_value)
        return pos, bad_value, wsum
    first = <int64_t*>_alloc(<size_t>nblocks * sizeof(int64_t))
    value = <int64_t*>_alloc(<size_t>nblocks * sizeof(int64_t))
    part = <double*>_alloc(<size_t>nblocks * sizeof(double))
    try:
        with nogil:
            for b in prange(nblocks, schedule="static", num_threads=nt):
                first[b] = fx_check_labels(lp + b * LABEL_BLOCK * esize, lt,
                                           min(LABEL_BLOCK, n - b * LABEL_BLOCK), classes,
                                           ignore_index, w, &part[b], &value[b])
            for b in range(nblocks):
                if first[b] >= 0:
                    pos = b * LABEL_BLOCK + first[b]
                    bad_value = value[b]
                    break
                wsum += part[b]
        return pos, bad_value, (wsum if pos < 0 else 0.0)
    finally:
        free(first)
        free(value)
        free(part)


def softmax_loss(cnp.ndarray x, *, int64_t classes, int64_t inner, labels, soft, weight,
                 double weight_total, int64_t ignore_index, double smoothing,
                 double grad_scale, grad, item_loss, bint logprob_input, n_threads):
    """Softmax cross-entropy family (cross_entropy; nll_loss when logprob_input) over x
    viewed as (outer, classes, inner), C-contiguous; returns the summed loss. inner == 1
    is the row layout (class axis last). labels (hard class labels, any integer dtype) or
    soft (probabilities, x's shape); weight (classes,) with its float64 sum weight_total;
    grad and item_loss: outputs or None."""
    cdef fx_softmax_args a
    cdef int64_t C = classes
    cdef int64_t rows = cnp.PyArray_SIZE(x) // C if C > 0 else 0
    a.x = cnp.PyArray_DATA(x)
    a.grad = _ptr(grad)
    a.labels = _ptr(labels)
    a.label_type = _label_type(labels) if labels is not None else FX_I64
    a.soft = _ptr(soft)
    a.weight = _ptr(weight)
    a.weight_total = weight_total
    a.C = C
    a.ignore_index = ignore_index
    a.smoothing = smoothing
    a.grad_scale = grad_scale
    a.item_loss = _ptr(item_loss)
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
        return _softmax_cols(&a, tab, rows // inner, inner, n_threads)
    cdef int64_t per = BLOCK_ELEMS // C if C > 0 else 1
    if per < 1:
        per = 1
    cdef int64_t nblocks = (rows + per - 1) // per
    if C <= _items_switch(tab.items_max_c):
        # Few classes: a vector of rows at a time (blocks of whole 64-row groups, so that
        # every group of every vector width is whole).
        per = max(64, per - per % 64)
        nblocks = (rows + per - 1) // per
        return _sum_blocks(K_TWO_CLASSES if C == 2 else K_ITEMS, &a, tab, 1, rows, per,
                           _threads(n_threads, rows * C, nblocks))
    cdef int64_t chunk = _chunk_elems(x)
    cdef int64_t nch = (C + chunk - 1) // chunk
    cdef int nt = _threads(n_threads, rows * C, nblocks * nch)
    # Few long rows (an LLM vocabulary): parallel over the chunks of the rows too.
    if nt > 1 and nch > 1 and rows < 2 * nt and not logprob_input:
        return _softmax_by_chunk(&a, tab, rows, nch, per, nt)
    return _sum_blocks(K_ROWS, &a, tab, 1, rows, per, nt, nch,
                       keep_e=cnp.PyArray_ITEMSIZE(x) == 2 and grad is not None and nch > 1)


cdef double _softmax_by_chunk(fx_softmax_args *a, const fx_table *tab, int64_t rows,
                              int64_t nch, int64_t per, int nt) except? -1.0:
    """The row path's three phases with the chunks of all rows spread over the threads;
    per row the same calls in the same order, and the row losses summed in the same
    blocks, so the same bits as _sum_blocks(K_ROWS, ...)."""
    cdef int64_t nblocks = (rows + per - 1) // per
    cdef double total = 0.0, part
    cdef int64_t b, r, i
    cdef fx_chunk *st = <fx_chunk*>_alloc(<size_t>(rows * nch) * sizeof(fx_chunk))
    with nogil:
        for i in prange(rows * nch, schedule="static", num_threads=nt):
            tab.softmax_chunk_stats(a, i // nch, i % nch, &st[i])
        for b in range(nblocks):
            part = 0.0
            for r in range(b * per, min(rows, (b + 1) * per)):
                part = part + tab.softmax_row_finish(a, r, &st[r * nch])
            total = total + part
        if a.grad != NULL:
            for i in prange(rows * nch, schedule="static", num_threads=nt):
                tab.softmax_chunk_grad(a, i // nch, i % nch, &st[(i // nch) * nch])
    free(st)
    return total


cdef double _softmax_cols(fx_softmax_args *a, const fx_table *tab, int64_t outer,
                          int64_t inner, n_threads) except? -1.0:
    """The class axis not last: parallel over panels of `col_lanes` positions along
    `inner`."""
    cdef int64_t tpo = (inner + tab.col_lanes - 1) // tab.col_lanes
    cdef int64_t npanels = outer * tpo
    cdef int64_t per = BLOCK_ELEMS // (a.C * tab.col_lanes) if a.C * tab.col_lanes < BLOCK_ELEMS else 1
    cdef int nt = _threads(n_threads, outer * inner * a.C, (npanels + per - 1) // per)
    return _sum_blocks(K_COLS, a, tab, inner, npanels, per, nt)


def softmax_outputs_cols(cnp.ndarray x, cnp.ndarray out, *, int64_t classes, int64_t inner,
                         fx_softmax_output output, n_threads):
    """softmax_outputs with the class axis not last: x (float32 or float64) C-contiguous,
    viewed as (outer, classes, inner), classes > 0; out (outer, inner) for logsumexp and
    entropy, x's shape otherwise, x's dtype. Parallel over blocks of the class-axis
    kernel's panels (no sums across items: the blocks only share out the work)."""
    cdef const fx_table *tab = _float_table(x, "softmax_outputs_cols")
    cdef softmax_outputs_cols_fn fn = tab.softmax_outputs_cols
    cdef const void *xp = cnp.PyArray_DATA(x)
    cdef void *op = cnp.PyArray_DATA(out)
    cdef int64_t C = classes
    cdef int64_t outer = cnp.PyArray_SIZE(x) // (C * inner) if C * inner > 0 else 0
    cdef int64_t tpo = (inner + tab.col_lanes - 1) // tab.col_lanes
    cdef int64_t npanels = outer * tpo
    cdef int64_t per = BLOCK_ELEMS // (C * tab.col_lanes) if C * tab.col_lanes < BLOCK_ELEMS else 1
    cdef int64_t nblocks = (npanels + per - 1) // per
    cdef int nt = _threads(n_threads, outer * inner * C, nblocks)
    cdef int64_t b
    if npanels == 0:
        return
    with nogil:
        if nt == 1:
            fn(xp, op, C, inner, 0, npanels, output)
        else:
            for b in prange(nblocks, schedule="static", num_threads=nt):
                fn(xp, op, C, inner, b * per, min(npanels, (b + 1) * per), output)


def softmax_outputs(cnp.ndarray x, cnp.ndarray out, *, fx_softmax_output output, n_threads):
    """logsumexp / softmax / log_softmax / entropy (output: FX_OUT_*) over the last axis
    of x (C-contiguous) into out ((rows,) or x's shape, x's dtype)."""
    cdef int64_t C = x.shape[x.ndim - 1]
    cdef int64_t rows = cnp.PyArray_SIZE(x) // C if C > 0 else 0
    cdef const fx_table *tab = _table(x)
    cdef softmax_outputs_fn fn = tab.softmax_outputs
    cdef const void *xp = cnp.PyArray_DATA(x)
    cdef void *op = cnp.PyArray_DATA(out)
    cdef int64_t per = BLOCK_ELEMS // C if C > 0 else 1
    if per < 1:
        per = 1
    if C <= _items_switch(tab.outputs_items_max_c):        # few classes: see softmax_loss
        fn = tab.softmax_outputs_items
        per = max(64, per - per % 64)
    cdef int64_t nblocks = (rows + per - 1) // per
    cdef int nt = _threads(n_threads, rows * C, nblocks)
    cdef int64_t b
    cdef int64_t nch = (C + _chunk_elems(x) - 1) // _chunk_elems(x)
    cdef fx_row_scratch *scratch = _row_scratch(
        nch, C, nt, cnp.PyArray_ITEMSIZE(x) == 2 and output == FX_OUT_SOFTMAX)
    try:
        with nogil:
            if nt == 1:
                fn(xp, op, C, 0, rows, output, scratch)
            else:
                for b in prange(nblocks, schedule="static", num_threads=nt):
                    fn(xp, op, C, b * per, min(rows, (b + 1) * per), output,
                       scratch + threadid())
    finally:
        free(scratch)


def elementwise_loss(cnp.ndarray x, cnp.ndarray target, *, fx_elementwise_loss loss,
                     weight, bint weight_per_col, pos_weight, bint pos_weight_per_col,
                     double grad_scale, grad, item_loss, n_threads):
    """Elementwise losses (loss: FX_BCE_LOGITS, FX_BCE_PROBS, FX_KL, FX_KL_LOG_TARGET)
    over x viewed as (rows, cols), cols = the last axis; target of x's dtype or uint8;
    weight and pos_weight full-shape or (cols,) when *_per_col. Returns the sum."""
    cdef fx_elementwise_args a
    cdef int64_t n = cnp.PyArray_SIZE(x)
    a.loss = loss
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
    a.item_loss = _ptr(item_loss)
    cdef int64_t nblocks = (n + BLOCK_ELEMS - 1) // BLOCK_ELEMS
    if n == 0 or a.cols == 0:
        return 0.0
    return _sum_blocks(K_ELEMENTS, &a, _table(x), 1, n, BLOCK_ELEMS,
                       _threads(n_threads, n, nblocks))


def find_outside_unit(cnp.ndarray x):
    """Flat position of the first value of x not in [0, 1] (NaN included), or -1."""
    cdef const void *p = cnp.PyArray_DATA(x)
    cdef int f32 = cnp.PyArray_TYPE(x) == cnp.NPY_FLOAT32
    cdef int64_t n = cnp.PyArray_SIZE(x), pos
    with nogil:
        pos = fx_find_outside_unit(p, f32, n)
    return pos


def sigmoid_outputs(cnp.ndarray x, cnp.ndarray out, *, fx_sigmoid_output output, n_threads):
    """sigmoid or log_sigmoid (output: FX_OUT_SIGMOID, FX_OUT_LOG_SIGMOID) elementwise."""
    cdef int64_t n = cnp.PyArray_SIZE(x)
    cdef sigmoid_outputs_fn fn = _table(x).sigmoid_outputs
    cdef const void *xp = cnp.PyArray_DATA(x)
    cdef void *op = cnp.PyArray_DATA(out)
    cdef int64_t per = BLOCK_ELEMS
    cdef int64_t nblocks = (n + per - 1) // per
    cdef int nt = _threads(n_threads, n, nblocks)
    cdef int64_t b
    with nogil:
        if nt == 1:
            fn(xp, op, 0, n, output)
        else:
            for b in prange(nblocks, schedule="static", num_threads=nt):
                fn(xp, op, b * per, min(n, (b + 1) * per), output)


def vecmath(cnp.ndarray x, cnp.ndarray out, fx_vecmath_fn what):
    """Test hook: the kernels' own exp (FX_MATH_EXP_NONPOS = 0, for x <= 0), log1p
    (FX_MATH_LOG1P_UNIT = 1, for x in [0, 1]) or log (FX_MATH_LOG = 2) over a contiguous
    float array, so their error can be measured in ulps."""
    cdef const fx_table *tab = _table(x)
    cdef const void *xp = cnp.PyArray_DATA(x)
    cdef void *op = cnp.PyArray_DATA(out)
    cdef int64_t n = cnp.PyArray_SIZE(x)
    with nogil:     # (the benchmark's exp floor runs it in threads)
        tab.vecmath(xp, op, n, what)


def metrics_rows(cnp.ndarray x, labels, *, int64_t ignore_index, class_weight,
                 sample_weight, int64_t top_k, double clip_lo, double clip_hi,
                 cnp.ndarray edges, nll=None, conf=None, argmax=None, above=None,
                 bint loss_only=False, n_threads):
    """Evaluation metrics (kernels/fx_metrics.h) of x (rows, C), C-contiguous, against
    labels (rows,) of any integer dtype (validated by the caller) or None: returns
    (sums, counts), float64 (FX_MS_BINS + nb,) and int64 (FX_MC_BINS + 2 nb,) with
    nb = edges.size (the layout in fx_api.h). The rows are cut into blocks fixed by C
    alone and the block sums added in block order: the same bits for any thread count.
    class_weight (C,), sample_weight (rows,): float64 or None; edges: float32 (n_bins + 1,).
    nll, conf (float64), argmax, above (int64): per-row outputs (rows,), all or none.
    loss_only: the loss sums and the kept count only (the log loss; no ranks, no bins:
    the hits and the bins stay 0)."""
    import numpy as np
    cdef fx_metrics_args a
    cdef int64_t C = x.shape[x.ndim - 1]
    cdef int64_t rows = cnp.PyArray_SIZE(x) // C if C > 0 else 0
    cdef int64_t nb = cnp.PyArray_SIZE(edges)
    cdef int64_t ns = FX_MS_BINS + nb, nc = FX_MC_BINS + 2 * nb
    cdef int64_t nc_block = nc      # per block: nc, and nb of scratch for the items kernel
    a.x = cnp.PyArray_DATA(x)
    a.labels = _ptr(labels)
    a.label_type = _label_type(labels) if labels is not None else FX_I64
    a.C = C
    a.ignore_index = ignore_index
    a.class_weight = <const double*>_ptr(class_weight)
    a.sample_weight = <const double*>_ptr(sample_weight)
    a.top_k = top_k
    a.clip_lo = clip_lo
    a.clip_hi = clip_hi
    a.n_bins = nb - 1
    a.edges = <const float*>cnp.PyArray_DATA(edges)
    a.loss_only = loss_only
    a.nll = <double*>_ptr(nll)
    a.conf = <double*>_ptr(conf)
    a.argmax = <int64_t*>_ptr(argmax)
    a.above = <int64_t*>_ptr(above)
    cdef const fx_table *tab = _float_table(x, "metrics_rows")
    cdef int64_t per = BLOCK_ELEMS // C if C > 0 else 1
    if per < 1:
        per = 1
    cdef metrics_rows_fn kernel = tab.metrics_rows
    if C <= _items_switch(tab.items_max_c):
        # Few classes: a vector of rows at a time, with softmax_loss's switch (so nll keeps
        # cross_entropy's bits) and its blocks of whole 64-row groups.
        kernel = tab.metrics_items
        per = max(64, per - per % 64)
        nc_block = nc + nb
    cdef int64_t nblocks = (rows + per - 1) // per if rows > 0 else 0
    cdef int nt = _threads(n_threads, rows * C, nblocks)
    cdef int64_t b, i
    cdef int64_t chunk = FX_CHUNK_BYTES // cnp.PyArray_ITEMSIZE(x)
    cdef int64_t nch = (C + chunk - 1) // chunk
    cdef cnp.ndarray block_sums = np.zeros((max(nblocks, 1), ns), dtype=np.float64)
    cdef cnp.ndarray block_counts = np.zeros((max(nblocks, 1), nc_block), dtype=np.int64)
    cdef double *bs = <double*>cnp.PyArray_DATA(block_sums)
    cdef int64_t *bc = <int64_t*>cnp.PyArray_DATA(block_counts)
    cdef fx_chunk *tables = NULL
    if nblocks == 0:
        return block_sums[0], block_counts[0, :nc]
    tables = _chunk_tables(nch, nt)
    try:
        with nogil:
            if nt == 1:
                for b in range(nblocks):
                    kernel(&a, b * per, min(rows, (b + 1) * per), tables,
                                     bs + b * ns, bc + b * nc_block)
            else:
                for b in prange(nblocks, schedule="static", num_threads=nt):
                    kernel(&a, b * per, min(rows, (b + 1) * per),
                                     tables + threadid() * nch if tables != NULL else NULL,
                                     bs + b * ns, bc + b * nc_block)
    finally:
        free(tables)
    # block sums in block order (cumsum adds them in sequence: a fixed order, the same
    # bits for any thread count)
    return (np.cumsum(block_sums[:nblocks], axis=0)[nblocks - 1],
            block_counts[:, :nc].sum(axis=0))


# the layout of metrics_rows' sums and counts (fx_api.h): the bins start here
METRICS_SUMS_BINS = FX_MS_BINS
METRICS_COUNTS_BINS = FX_MC_BINS
# ---------------------------------------------------------------- softmax partials
# (kernels/fx_partials.h; the Python API is fastxent.partials, which checks everything)

def partials_itemsize():
    """sizeof(fx_partial), for the check of fastxent.partials.PARTIALS_DTYPE."""
    return sizeof(fx_partial)


cdef void _partials_args(fx_partials_args *p, cnp.ndarray x, labels, soft, weight,
                         int64_t offset, int64_t classes, int64_t ignore_index,
                         double smoothing) except *:
    p.x = cnp.PyArray_DATA(x)
    p.out = NULL
    p.labels = _ptr(labels)
    p.label_type = _label_type(labels) if labels is not None else FX_I64
    p.soft = _ptr(soft)
    p.weight = _ptr(weight)
    p.width = x.shape[1]
    p.offset = offset
    p.classes = classes
    p.ignore_index = ignore_index
    p.smoothing = smoothing
    p.grad_scale = 1.0
    p.parts = NULL
    p.merged = NULL
    p.what = FX_PART_GRAD


def softmax_block_partials(cnp.ndarray x, cnp.ndarray parts, *, labels, soft, weight,
                           int64_t offset, int64_t classes, int64_t ignore_index,
                           double smoothing, n_threads):
    """Per row of the block x (rows, width), C-contiguous, holding classes [offset,
    offset + width) of `classes`: its fx_partial into parts (rows,). labels (rows,) any
    integer dtype (validated), soft (rows, width) in x's dtype, weight (width,) in x's
    dtype: each or None. Rows are independent: the result does not depend on threads."""
    cdef fx_partials_args p
    _partials_args(&p, x, labels, soft, weight, offset, classes, ignore_index, smoothing)
    p.parts = <fx_partial*>cnp.PyArray_DATA(parts)
    cdef const fx_table *tab = _float_table(x, "softmax_block_partials")
    cdef int64_t rows = x.shape[0], W = p.width
    cdef int64_t per = BLOCK_ELEMS // W if 0 < W < BLOCK_ELEMS else 1
    cdef int64_t nblocks = (rows + per - 1) // per
    cdef int64_t chunk = FX_CHUNK_BYTES // cnp.PyArray_ITEMSIZE(x)
    cdef int64_t nch = (W + chunk - 1) // chunk
    cdef int nt = _threads(n_threads, rows * W, nblocks)
    cdef int64_t b
    cdef fx_chunk *tables = _chunk_tables(nch, nt)
    try:
        with nogil:
            if nt == 1:
                tab.softmax_block_partials(&p, 0, rows, tables)
            else:
                for b in prange(nblocks, schedule="static", num_threads=nt):
                    tab.softmax_block_partials(&p, b * per, min(rows, (b + 1) * per),
                                               tables + threadid() * nch if tables != NULL else NULL)
    finally:
        free(tables)


def softmax_partials_merge(cnp.ndarray a, cnp.ndarray b, cnp.ndarray out):
    """out = a merged with b, row by row (fx_partial arrays of one length; out may be a)."""
    cdef const fx_partial *pa = <const fx_partial*>cnp.PyArray_DATA(a)
    cdef const fx_partial *pb = <const fx_partial*>cnp.PyArray_DATA(b)
    cdef fx_partial *po = <fx_partial*>cnp.PyArray_DATA(out)
    cdef int64_t n = cnp.PyArray_SIZE(a)
    with nogil:
        fx_table_f64.softmax_partials_merge(pa, pb, po, n)


def softmax_partials_loss(cnp.ndarray parts, cnp.ndarray loss):
    """loss[i] (float64) = the loss of the merged partial parts[i]."""
    cdef const fx_partial *pp = <const fx_partial*>cnp.PyArray_DATA(parts)
    cdef double *lp = <double*>cnp.PyArray_DATA(loss)
    cdef int64_t n = cnp.PyArray_SIZE(parts)
    with nogil:
        fx_table_f64.softmax_partials_loss(pp, lp, n)


def softmax_block_apply(cnp.ndarray x, cnp.ndarray merged, cnp.ndarray out, *,
                        fx_partials_output output, labels, soft, weight, int64_t offset,
                        int64_t classes, int64_t ignore_index, double smoothing,
                        double grad_scale, n_threads):
    """From the rows' merged partials (rows,): the block's gradient (FX_PART_GRAD),
    softmax or log_softmax into out (x's shape and dtype). Arguments as for
    softmax_block_partials."""
    cdef fx_partials_args p
    _partials_args(&p, x, labels, soft, weight, offset, classes, ignore_index, smoothing)
    p.out = cnp.PyArray_DATA(out)
    p.merged = <const fx_partial*>cnp.PyArray_DATA(merged)
    p.grad_scale = grad_scale
    p.what = output
    cdef const fx_table *tab = _float_table(x, "softmax_block_apply")
    cdef int64_t rows = x.shape[0], W = p.width
    cdef int64_t per = BLOCK_ELEMS // W if 0 < W < BLOCK_ELEMS else 1
    cdef int64_t nblocks = (rows + per - 1) // per
    cdef int nt = _threads(n_threads, rows * W, nblocks)
    cdef int64_t b
    with nogil:
        if nt == 1:
            tab.softmax_block_apply(&p, 0, rows)
        else:
            for b in prange(nblocks, schedule="static", num_threads=nt):
                tab.softmax_block_apply(&p, b * per, min(rows, (b + 1) * per))
