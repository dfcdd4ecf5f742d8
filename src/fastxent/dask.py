"""fastxent's losses over Dask arrays chunked along rows and classes, exact, without
gathering a row on one worker.

``import fastxent.dask`` needs ``dask[array]`` (an optional dependency; ``import
fastxent`` never imports it). Each function takes fastxent's arguments and returns lazy
Dask arrays: a 0-d array for ``"mean"``/``"sum"``, an array for ``"none"``, and with
``return_grad=True`` a ``(loss, grad)`` pair whose gradient is chunked like the input.

How (the softmax family, :mod:`fastxent.partials`): each block of logits gives one
small record per row (max, sum of exponentials, target sums); the records of a row's
class blocks are merged by a tree reduction (``split_every``) into one record per row,
which gives the row's loss; the gradient is one more blockwise pass over the logits that
reads each row's merged record. No shuffle, no row ever on one worker, and the result is
deterministic: for a given chunking and ``split_every`` the merges happen in a fixed
order, so the same bits whatever the number of workers and where each task runs (on
workers whose kernels use the same ISA, ``fastxent.show_config()['isa']``). The
elementwise losses (BCE, KL) are blockwise fastxent calls whose per-block sums are added
in a tree.

Inputs: ``input`` a Dask array (a NumPy array is wrapped in one chunk), shaped as for
fastxent (the softmax family: ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)`` with any class
axis; a class axis that is not last is moved there lazily, which copies each block);
targets and weights Dask or NumPy arrays, rechunked to match ``input``. Labels are
validated when the blocks run: an out-of-range label raises ``IndexError`` at
``compute()``, as :func:`fastxent.cross_entropy` raises at its call.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

try:
    import dask.array as da
except ImportError as e:        # pragma: no cover - exercised without dask installed
    raise ImportError("fastxent.dask needs Dask: pip install 'dask[array]' "
                      "(and 'distributed' for a cluster)") from e

import fastxent as _fx

from . import partials as _p
from ._checks import check_reduction, check_threads, normalize_axis
from ._losses import _divide, _labels

__all__ = [
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy",
    "kl_div",
    "logsumexp",
    "log_softmax",
    "softmax",
]

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


# ------------------------------------------------------------------ input checks

def _as_dask(a, name: str):
    if isinstance(a, da.Array):
        return a
    arr = np.asarray(a)
    return da.from_array(arr, chunks=arr.shape or ())


def _float_input(input, name: str = "input"):
    x = _as_dask(input, name)
    if x.dtype.type not in (np.float32, np.float64):
        raise TypeError(f"{name} must be float32 or float64, got dtype {x.dtype}")
    if any(math.isnan(c) for cs in x.chunks for c in cs):
        raise ValueError(f"{name} has unknown chunk sizes: call {name}.compute_chunk_sizes() first")
    return x


class _Rows:
    """The input viewed as rows: (R, C) with the class axis last (moved there and the
    other axes flattened, lazily), and the way back to the input's shapes."""

    def __init__(self, input, axis, fname: str):
        x = _float_input(input)
        if x.ndim == 0:
            raise ValueError(f"{fname}: input must have at least 1 dimension (the class axis), "
                             f"got a scalar")
        if x.ndim == 1:     # one unbatched row, as fastxent
            if axis not in (0, -1, 1):
                raise ValueError(f"{fname}: axis={axis!r} for a 1-D input, whose only axis is "
                                 f"the class axis")
            ax = 0
        else:
            ax = normalize_axis(axis, x.ndim)
        self.x, self.ax = x, ax
        self.moved = x if ax == x.ndim - 1 else da.moveaxis(x, ax, -1)
        self.items = self.moved.shape[:-1]
        self.C = x.shape[ax]
        self.rows = self.moved if self.moved.ndim == 2 else self.moved.reshape(-1, self.C)

    def target(self, target, allow_soft: bool, fname: str):
        """The target as rows: (R,) labels chunked like the rows, or (R, C) probabilities
        chunked like them."""
        t = _as_dask(target, "target")
        x, rows = self.x, self.rows
        soft = t.dtype.kind == "f"
        if t.dtype.kind not in "iuf" or (soft and not allow_soft):
            kinds = ("integer class indices or float probabilities" if allow_soft
                     else "integer class indices")
            raise TypeError(f"{fname}: target must hold {kinds}, got dtype {t.dtype}")
        if soft:
            if t.shape != x.shape:
                raise ValueError(f"target shape {t.shape} does not match input shape {x.shape}: "
                                 f"probability targets must have the input's shape")
            t = t if self.ax == x.ndim - 1 else da.moveaxis(t, self.ax, -1)
            t = t if t.ndim == 2 else t.reshape(-1, self.C)
            return t.rechunk(rows.chunks)
        if t.shape != self.items:
            raise ValueError(f"target shape {t.shape} does not match input shape {x.shape}: "
                             f"class-index targets must have shape {self.items}")
        return (t if t.ndim == 1 else t.reshape(-1)).rechunk((rows.chunks[0],))

    def items_back(self, r):
        """(R,) per row -> the input's item shape."""
        return r if self.moved.ndim == 2 else r.reshape(self.items)

    def back(self, g):
        """(R, C) -> the input's shape and chunks."""
        if self.moved.ndim != 2:
            g = g.reshape(self.moved.shape)
        if self.ax != self.x.ndim - 1:
            g = da.moveaxis(g, -1, self.ax)
        return g if g.chunks == self.x.chunks else g.rechunk(self.x.chunks)


def _offsets(x):
    """The class indices, chunked like x's classes: a block's first one is its offset."""
    return da.arange(x.shape[1], chunks=(x.chunks[1],), dtype=np.int64)


def _offset(ob) -> int:
    return int(ob[0]) if len(ob) else 0     # an empty class block: any offset will do


def _class_weight(weight, x):
    if weight is None:
        return None
    w = _as_dask(weight, "weight")
    C = x.shape[1]
    if w.shape != (C,):
        raise ValueError(f"weight must have shape ({C},) for {C} classes, got {w.shape}")
    return w.rechunk((x.chunks[1],))


def _check_ignore_index(ignore_index):
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    return int(ignore_index)


def _split(split_every):
    if split_every is not None and (isinstance(split_every, bool)
                                    or not isinstance(split_every, (int, np.integer))
                                    or split_every < 2):
        raise ValueError(f"split_every must be an int >= 2 or None, got {split_every!r}")
    return split_every


# ------------------------------------------------------------------ the partials graph
# Block functions are module-level (a worker process unpickles them by name).

def _block_partials(xb, tb, wb, ob, *, classes, ignore_index, smoothing, n_threads):
    off = _offset(ob)
    p = _p.softmax_partials(xb, tb, wb, offset=off, classes=classes, ignore_index=ignore_index,
                            label_smoothing=smoothing, n_threads=n_threads)
    return p.reshape(-1, 1)


def _chunk_identity(b, axis=None, keepdims=None):
    return b


def _merge_columns(b, axis=None, keepdims=False):
    """The records of one row range from several class blocks (columns of b), merged left
    to right: the fixed order that makes the tree deterministic."""
    b = np.asarray(b)
    acc = _p.merge_all([b[:, k] for k in range(b.shape[1])]) if b.shape[1] else \
        np.zeros(b.shape[0], dtype=_p.PARTIALS_DTYPE)
    return acc.reshape(-1, 1) if keepdims else acc


def _merged_partials(x, t, w, *, ignore_index, smoothing, split_every, n_threads):
    """(N,) merged records, chunked like x's rows."""
    t_ind = None if t is None else ("ij" if t.ndim == 2 else "i")
    parts = da.blockwise(
        _block_partials, "ij", x, "ij", t, t_ind, w, None if w is None else "j",
        _offsets(x), "j", classes=x.shape[1], ignore_index=ignore_index, smoothing=smoothing,
        n_threads=n_threads, dtype=_p.PARTIALS_DTYPE, adjust_chunks={"j": 1},
        meta=np.empty((0, 0), dtype=_p.PARTIALS_DTYPE))
    return da.reduction(parts, _chunk_identity, _merge_columns, combine=_merge_columns, axis=1,
                        keepdims=False, dtype=_p.PARTIALS_DTYPE, split_every=split_every,
                        concatenate=True, meta=np.empty((0,), dtype=_p.PARTIALS_DTYPE))


def _rows_loss(mb):
    return _p.row_losses(mb)


def _mean(total, denom, *, dtype):
    return np.asarray(dtype.type(_divide(float(total), float(denom))))


def _as_dtype(total, *, dtype):
    return np.asarray(dtype.type(float(total)))


def _inverse(denom):
    d = float(denom)
    return np.asarray(1.0 / d if d != 0 else math.inf)


def _reduce_rows(losses, denom, reduction, dt, split_every):
    """A loss over rows from per-row float64 losses and the mean's denominator (0-d)."""
    if reduction == "none":
        return losses.astype(dt)
    total = losses.sum(split_every=split_every)
    if reduction == "sum":
        return _scalar(_as_dtype, total, dtype=dt)
    return _scalar(_mean, total, denom, dtype=dt)


def _label_weights(tb, wb, *, classes, ignore_index, dtype):
    """Each item's weight in the mean, w_t (float64 of the weight in the input dtype, as
    fastxent sums it), 0 for an ignored item; a bad label raises IndexError."""
    tb = np.asarray(tb)
    labels, _ = _labels(tb, tb.shape, tb.shape + (classes,), classes, ignore_index, None)
    kept = labels != ignore_index
    if wb is None:
        return kept.astype(np.float64)
    w64 = np.asarray(wb).astype(dtype).astype(np.float64)
    return np.where(kept, w64[np.where(kept, labels, 0).astype(np.intp)], 0.0)


def _denominator(t, w, soft, *, classes, ignore_index, dtype, split_every):
    """The mean's denominator from the targets alone (never from the logits, so that the
    gradient of a row band waits for that band's records only, not for every row): the
    number of rows (probability targets) or the summed w_t of the kept labels."""
    if soft:
        return _const(float(t.shape[0]))
    w1 = None if w is None else w.rechunk(-1)       # (C,): one block, read by every task
    per_row = da.blockwise(_label_weights_call, "i", t, "i", w1, None if w is None else "j",
                           classes=classes, ignore_index=ignore_index,
                           out_dtype=np.dtype(dtype), concatenate=True, dtype=np.float64,
                           meta=np.empty((0,), np.float64))
    return per_row.sum(split_every=split_every)


def _label_weights_call(tb, wb, *, classes, ignore_index, out_dtype):
    return _label_weights(tb, wb, classes=classes, ignore_index=ignore_index, dtype=out_dtype)


def _scalar(func, *args, dtype):
    """A 0-d Dask array: func(*values of the 0-d arrays args, dtype=dtype)."""
    pairs = []
    for a in args:
        pairs += [a, ""]
    return da.blockwise(_call_with_dtype, "", *pairs, fn=func, out_dtype=np.dtype(dtype),
                        dtype=dtype, meta=np.empty((), dtype=dtype))


def _call_with_dtype(*args, fn, out_dtype):
    return fn(*args, dtype=out_dtype)


def _grad_scale(denom, reduction):
    """1/denominator (0-d, lazy) for "mean", else the number 1.0."""
    if reduction != "mean":
        return 1.0
    return da.blockwise(_inverse, "", denom, "", dtype=np.float64,
                        meta=np.empty((), dtype=np.float64))


def _block_grad(xb, mb, tb, wb, ob, scale, *, classes, ignore_index, smoothing, n_threads):
    return _p.block_grad(xb, mb, tb, wb, offset=_offset(ob), classes=classes,
                         ignore_index=ignore_index, label_smoothing=smoothing,
                         scale=float(scale), n_threads=n_threads)


def _scale_arg(scale):
    return (scale, "") if isinstance(scale, da.Array) else (scale, None)


# ------------------------------------------------------------------ softmax family

def cross_entropy(input, target, weight=None, *, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0, axis: int = 1,
                  return_grad: bool = False, n_threads: Optional[int] = None,
                  split_every: Optional[int] = None) -> Any:
    """:func:`fastxent.cross_entropy` over a Dask array ``input`` chunked in any way,
    along the items and along the classes.

    Shapes as fastxent's: ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)`` with the class axis
    ``axis`` (any axis; a class axis that is not last is moved there lazily, which copies
    each block). ``target``: integer class indices shaped like ``input`` without the class
    axis, or probabilities shaped like ``input``; ``weight``: ``(C,)`` class weights. Each
    as a Dask or NumPy array, rechunked to match. Same formulas and reductions
    (``"mean"``: PyTorch's weighted mean over all items). Returns a lazy 0-d Dask array
    (``"mean"``, ``"sum"``) or one of the item shape (``"none"``); with
    ``return_grad=True`` ``(loss, grad)``, ``grad`` lazy and chunked like ``input``.
    ``n_threads``: fastxent's threads inside each task (OpenMP's default when None);
    ``split_every``: the fan-in of the merge and sum trees (Dask's default when None).

    Equal to ``fastxent.cross_entropy`` on the computed array up to the order of float64
    additions; the same bits on every run for a given chunking and ``split_every``."""
    rv = _Rows(input, axis, "cross_entropy")
    check_reduction(reduction)
    ii = _check_ignore_index(ignore_index)
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    n_threads = check_threads(n_threads)
    split_every = _split(split_every)
    t = rv.target(target, True, "cross_entropy")
    x = rv.rows
    w = _class_weight(weight, x)
    dt = np.dtype(x.dtype)
    merged = _merged_partials(x, t, w, ignore_index=ii, smoothing=eps, split_every=split_every,
                              n_threads=n_threads)
    losses = merged.map_blocks(_rows_loss, dtype=np.float64, meta=np.empty((0,), np.float64))
    denom = _denominator(t, w, t.ndim == 2, classes=x.shape[1], ignore_index=ii, dtype=dt,
                         split_every=split_every)
    loss = _reduce_rows(losses, denom, reduction, dt, split_every)
    if reduction == "none":
        loss = rv.items_back(loss)
    if not return_grad:
        return loss
    scale = _grad_scale(denom, reduction)
    grad = da.blockwise(
        _block_grad, "ij", x, "ij", merged, "i", t, "ij" if t.ndim == 2 else "i",
        w, None if w is None else "j", _offsets(x), "j", *_scale_arg(scale),
        classes=x.shape[1], ignore_index=ii, smoothing=eps, n_threads=n_threads, dtype=dt,
        meta=np.empty((0, 0), dtype=dt))
    return loss, rv.back(grad)


def _nll_block(xb, tb, wb, ob, *, classes, ignore_index, n_threads):
    """Per row of one block, (rows, 1) float64: the loss -w_t x_t of the rows whose label
    lies in the block, 0 for the others."""
    off, width = _offset(ob), xb.shape[1]
    local, _ = _local_labels(tb, off, width, classes, ignore_index, xb.shape)
    out = np.zeros((xb.shape[0], 1))
    if width:       # (fastxent.nll_loss leaves "none" unwritten for 0 classes)
        out[:, 0] = _fx.nll_loss(xb, local, wb, ignore_index=-1, reduction="none", axis=1,
                                 n_threads=n_threads)
    return out


def _local_labels(tb, off, width, classes, ignore_index, shape):
    """The block's labels: t - offset where t lies in the block, -1 elsewhere; labels
    outside [0, classes) that are not ignore_index raise IndexError (as nll_loss)."""
    tb = np.asarray(tb)
    _labels(tb, (shape[0],), shape, classes, ignore_index, None)
    t = tb.astype(np.int64) if tb.dtype.kind == "i" else tb.astype(np.uint64).astype(np.int64)
    inside = (tb != ignore_index) & (t >= off) & (t < off + width)
    return np.where(inside, t - off, -1), inside


def _nll_grad_block(xb, tb, wb, ob, scale, *, classes, ignore_index, n_threads):
    off, width = _offset(ob), xb.shape[1]
    local, _ = _local_labels(tb, off, width, classes, ignore_index, xb.shape)
    _, g = _fx.nll_loss(xb, local, wb, ignore_index=-1, reduction="sum", axis=1,
                        return_grad=True, n_threads=n_threads)
    s = float(scale)
    if s != 1.0:
        g *= g.dtype.type(s)
    return g


def nll_loss(input, target, weight=None, *, ignore_index: int = -100, reduction: str = "mean",
             axis: int = 1, return_grad: bool = False, n_threads: Optional[int] = None,
             split_every: Optional[int] = None) -> Any:
    """:func:`fastxent.nll_loss` (``input`` holds log-probabilities, ``target`` class
    indices; shapes and axes as :func:`cross_entropy`) over a Dask array chunked along
    items and classes: the block holding an item's label gives its loss ``-w_t x_t``, the
    others exact zeros. Returns as :func:`cross_entropy`."""
    rv = _Rows(input, axis, "nll_loss")
    check_reduction(reduction)
    ii = _check_ignore_index(ignore_index)
    n_threads = check_threads(n_threads)
    split_every = _split(split_every)
    t = rv.target(target, False, "nll_loss")
    x = rv.rows
    w = _class_weight(weight, x)
    dt = np.dtype(x.dtype)
    per_block = da.blockwise(
        _nll_block, "ij", x, "ij", t, "i", w, None if w is None else "j", _offsets(x), "j",
        adjust_chunks={"j": 1}, classes=x.shape[1], ignore_index=ii,
        n_threads=n_threads, dtype=np.float64, meta=np.empty((0, 0), np.float64))
    # one block per row holds its label, the others give exact zeros: the sum is exact
    rows = per_block.sum(axis=1, split_every=split_every)
    denom = _denominator(t, w, False, classes=x.shape[1], ignore_index=ii, dtype=dt,
                         split_every=split_every)
    loss = _reduce_rows(rows, denom, reduction, dt, split_every)
    if reduction == "none":
        loss = rv.items_back(loss)
    if not return_grad:
        return loss
    scale = _grad_scale(denom, reduction)
    grad = da.blockwise(
        _nll_grad_block, "ij", x, "ij", t, "i", w, None if w is None else "j", _offsets(x), "j",
        *_scale_arg(scale), classes=x.shape[1], ignore_index=ii, n_threads=n_threads, dtype=dt,
        meta=np.empty((0, 0), dtype=dt))
    return loss, rv.back(grad)


# ------------------------------------------------------------------ building blocks

def _no_target_merged(x, split_every, n_threads):
    return _merged_partials(x, None, None, ignore_index=-100, smoothing=0.0,
                            split_every=split_every, n_threads=n_threads)


def logsumexp(x, axis: int = -1, *, n_threads: Optional[int] = None,
              split_every: Optional[int] = None) -> Any:
    """``log(sum(exp(x), axis))`` of a Dask array chunked in any way (also along ``axis``):
    ``M + log S`` from each row's merged records, in x's dtype, shaped like ``x`` without
    ``axis``. (fastxent.logsumexp's second pass for rows dominated by one logit near 0,
    ``logsumexp([0, -40]) = 4.25e-18``, is not made: here that is 0.)"""
    rv = _Rows(x, axis, "logsumexp")
    dt = np.dtype(rv.rows.dtype)
    m = _no_target_merged(rv.rows, _split(split_every), check_threads(n_threads))
    lse = m.map_blocks(_call_with_dtype, fn=_lse_rows, out_dtype=dt, dtype=dt,
                       meta=np.empty((0,), dt))
    return rv.items_back(lse)


def _lse_rows(mb, *, dtype):
    return _p.logsumexp(mb).astype(dtype)


def _block_softmax(xb, mb, *, log, n_threads):
    return _p.block_softmax(xb, mb, log=log, n_threads=n_threads)


def _softmax(x, axis, split_every, n_threads, log, name):
    rv = _Rows(x, axis, name)
    n_threads = check_threads(n_threads)
    xd = rv.rows
    m = _no_target_merged(xd, _split(split_every), n_threads)
    out = da.blockwise(_block_softmax, "ij", xd, "ij", m, "i", log=log, n_threads=n_threads,
                       dtype=xd.dtype, meta=np.empty((0, 0), xd.dtype))
    return rv.back(out)


def softmax(x, axis: int = -1, *, n_threads: Optional[int] = None,
            split_every: Optional[int] = None) -> Any:
    """softmax along ``axis`` of a Dask array chunked in any way, chunked like ``x``:
    ``exp(x_j - M) / S`` from each row's merged records."""
    return _softmax(x, axis, split_every, n_threads, False, "softmax")


def log_softmax(x, axis: int = -1, *, n_threads: Optional[int] = None,
                split_every: Optional[int] = None) -> Any:
    """log_softmax along ``axis`` of a Dask array chunked in any way:
    ``(x_j - M) - log S``."""
    return _softmax(x, axis, split_every, n_threads, True, "log_softmax")


# ------------------------------------------------------------------ elementwise losses

def _elementwise_params(x, p, name):
    """(dask array, index) of a weight-like parameter broadcast to x: a last-axis vector
    stays one (chunked like x's last axis), anything else is broadcast to x's shape."""
    if p is None:
        return None, None
    a = _as_dask(p, name)
    try:
        np.broadcast_shapes(a.shape, x.shape)
    except ValueError:
        raise ValueError(f"{name} of shape {a.shape} cannot be broadcast to the input shape "
                         f"{tuple(x.shape)}") from None
    if np.broadcast_shapes(a.shape, x.shape) != x.shape:
        raise ValueError(f"{name} of shape {a.shape} cannot be broadcast to the input shape "
                         f"{tuple(x.shape)}")
    ind = _LETTERS[:x.ndim]
    if x.ndim >= 1 and (a.ndim <= 1 or all(s == 1 for s in a.shape[:-1])):
        vec = da.broadcast_to(a.reshape(-1) if a.ndim else a.reshape(1), (x.shape[-1],))
        return vec.rechunk((x.chunks[-1],)), ind[-1]
    return da.broadcast_to(a, x.shape).rechunk(x.chunks), ind


def _ew_call(kind, xb, tb, wb, pb, **kw):
    if kind == "bce_logits":
        return _fx.binary_cross_entropy_with_logits(xb, tb, wb, pos_weight=pb, **kw)
    if kind == "bce":
        return _fx.binary_cross_entropy(xb, tb, wb, **kw)
    return _fx.kl_div(xb, tb, log_target=kind == "kl_log", **kw)


def _ew_sum_block(xb, tb, wb, pb, *, kind, n_threads):
    s = _ew_call(kind, xb, tb, wb, pb, reduction="sum", n_threads=n_threads)
    return np.full((1,) * xb.ndim, float(s))


def _ew_none_block(xb, tb, wb, pb, *, kind, n_threads):
    return _ew_call(kind, xb, tb, wb, pb, reduction="none", n_threads=n_threads)


def _ew_grad_block(xb, tb, wb, pb, *, kind, scale, n_threads):
    _, g = _ew_call(kind, xb, tb, wb, pb, reduction="sum", return_grad=True, n_threads=n_threads)
    if scale != 1.0:
        g *= g.dtype.type(scale)
    return g


def _elementwise(kind, input, target, weight, pos_weight, reduction, return_grad,
                 n_threads, split_every, allowed=("none", "mean", "sum")):
    x = _float_input(input)
    check_reduction(reduction, allowed)
    n_threads = check_threads(n_threads)
    split_every = _split(split_every)
    t = _float_input(target, "target") if kind.startswith("kl") else _as_dask(target, "target")
    if not kind.startswith("kl") and t.dtype.kind not in "fbiu":
        raise TypeError(f"target must be float, bool or uint8, got dtype {t.dtype}")
    if t.shape != x.shape:
        raise ValueError(f"target shape {t.shape} must match input shape {x.shape}")
    scalar_input = x.ndim == 0
    if scalar_input:
        x, t = x.reshape(1), t.reshape(1)
    t = t.rechunk(x.chunks)
    w, wi = _elementwise_params(x, weight, "weight")
    pw, pi = _elementwise_params(x, pos_weight, "pos_weight")
    ind = _LETTERS[:x.ndim]
    dt = np.dtype(x.dtype)
    args = (x, ind, t, ind, w, wi, pw, pi)
    n = x.size
    denom = float(x.shape[0] if x.ndim else 1) if reduction == "batchmean" else float(n)
    if reduction == "none":
        loss = da.blockwise(_ew_none_block, ind, *args, kind=kind, n_threads=n_threads, dtype=dt,
                            meta=np.empty((0,) * x.ndim, dt))
        if scalar_input:
            loss = loss.reshape(())
    else:
        sums = da.blockwise(_ew_sum_block, ind, *args, kind=kind, n_threads=n_threads,
                            dtype=np.float64,
                            adjust_chunks={c: 1 for c in ind},
                            meta=np.empty((0,) * x.ndim, np.float64))
        total = sums.sum(split_every=split_every)
        if reduction == "sum":
            loss = _scalar(_as_dtype, total, dtype=dt)
        else:
            loss = _scalar(_mean, total, _const(denom), dtype=dt)
    if not return_grad:
        return loss
    scale = 1.0
    if reduction in ("mean", "batchmean"):
        scale = 1.0 / denom if denom else math.inf
    grad = da.blockwise(_ew_grad_block, ind, *args, kind=kind, scale=scale,
                        n_threads=n_threads, dtype=dt,
                        meta=np.empty((0,) * x.ndim, dt))
    if scalar_input:
        grad = grad.reshape(())
    return loss, grad


def _const(v):
    return da.from_array(np.asarray(v, dtype=np.float64), chunks=())


def binary_cross_entropy_with_logits(input, target, weight=None, *, pos_weight=None,
                                     reduction: str = "mean", return_grad: bool = False,
                                     n_threads: Optional[int] = None,
                                     split_every: Optional[int] = None) -> Any:
    """:func:`fastxent.binary_cross_entropy_with_logits` over Dask arrays of any shape and
    chunking (``weight``/``pos_weight`` broadcast to the input, as there); the per-block
    sums are added in a tree. The gradient is a second blockwise pass (scaled by
    1/N for ``"mean"``)."""
    return _elementwise("bce_logits", input, target, weight, pos_weight, reduction,
                        return_grad, n_threads, split_every)


def binary_cross_entropy(input, target, weight=None, *, reduction: str = "mean",
                         return_grad: bool = False, n_threads: Optional[int] = None,
                         split_every: Optional[int] = None) -> Any:
    """:func:`fastxent.binary_cross_entropy` (probabilities in [0, 1]; ValueError at
    ``compute()`` otherwise) over Dask arrays; as
    :func:`binary_cross_entropy_with_logits`."""
    return _elementwise("bce", input, target, weight, None, reduction, return_grad,
                        n_threads, split_every)


def kl_div(input, target, *, reduction: str = "mean", log_target: bool = False,
           return_grad: bool = False, n_threads: Optional[int] = None,
           split_every: Optional[int] = None) -> Any:
    """:func:`fastxent.kl_div` over Dask arrays (reductions ``"none"``, ``"sum"``,
    ``"mean"``, ``"batchmean"``)."""
    return _elementwise("kl_log" if log_target else "kl", input, target, None, None,
                        reduction, return_grad, n_threads, split_every,
                        allowed=("none", "mean", "sum", "batchmean"))
