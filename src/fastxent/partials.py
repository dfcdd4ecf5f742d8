"""Softmax partials: exact softmax losses over rows whose classes are split across workers.

For engines that hold a row's logits in pieces (Dask, Ray, Spark, MPI, or a loop over
memory-mapped blocks): each worker reduces its block of logits to one small record per
row, records merge exactly, and the merged record of a row gives its loss and, block by
block, its gradient and its softmax. Nothing here needs the whole row in one place.

A *block* is a C-contiguous ``(rows, width)`` float32/float64 array holding the classes
``[offset, offset + width)`` of rows of ``classes`` classes. Per row a block gives a
:data:`PARTIALS_DTYPE` record (float64 fields), in the notation of the loss
(:func:`fastxent.cross_entropy`: ``loss = a log S + sum_j b_j (M - x_j)`` with
``M = max_j x_j``, ``S = sum_j exp(x_j - M)``, ``b_j`` the target weight of class ``j``,
``a = sum_j b_j``)::

    max     m = max of the block's logits (NaN if one is NaN)
    sumexp  s = sum_j exp(x_j - m)                 (m taken as 0 when m = -inf)
    mass    a = sum_j b_j
    gap     g = sum_j b_j (m - x_j)
    weight  the item's weight in the mean: w_t from the block holding the hard label t,
            1 from the block holding class 0 for a soft target, else 0
    kept    1; 0 for an item whose label is ignore_index

with ``b_j = (1-eps) w_t [j == t] + (eps/C) w_j`` (hard label ``t``) or
``b_j = w_j ((1-eps) y_j + eps/C)`` (soft target ``y``), PyTorch's definitions.

Two records of the same row merge as (:func:`merge`)::

    M = max(m1, m2),  S = s1 e^(m1-M) + s2 e^(m2-M),  a = a1 + a2,
    g = g1 + (M - m1) a1 + g2 + (M - m2) a2,  weight = w1 + w2

which is exact in real arithmetic, and in floating point deterministic for a fixed
order of merges (it is not associative bit for bit: merge in a fixed tree, as
``fastxent.dask`` does, for reproducible bits). The merged record of all of a row's
blocks gives ``loss = a log S + g`` (:func:`row_losses`, :func:`finish`), and the
gradient of each block (:func:`block_grad`):
``grad_j = scale (a exp(x_j - M) / S - b_j)`` with ``scale = 1/denominator`` for
``"mean"`` (the summed ``weight`` of all rows, PyTorch's weighted mean) and 1 otherwise.

Typical use across workers (any engine)::

    # on each worker, for its block of rows r0:r1 and classes c0:c1
    p = partials.softmax_partials(x_blk, labels[r0:r1], weight[c0:c1],
                                  offset=c0, classes=C)
    # reduce the records of a row range over its class blocks, in a fixed order
    m = partials.merge(p_block0, p_block1)          # (and so on)
    # the loss: per row, then any reduction over all rows
    loss = partials.finish(m_all_rows, "mean")
    # the gradient, back on each worker, from the merged records of its rows
    g_blk = partials.block_grad(x_blk, m[r0:r1], labels[r0:r1], weight[c0:c1],
                                offset=c0, classes=C,
                                scale=partials.grad_scale(m_all_rows, "mean"))

The per-element work (max, sum of exponentials, gradient, softmax) runs in the same C
kernels as :func:`fastxent.cross_entropy`; the record formulas are theirs.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import numpy as np

from . import _core
from ._checks import as_array, check_reduction, check_threads, float_input, kernel_ready, real_param
from ._losses import _divide, _labels

__all__ = [
    "PARTIALS_DTYPE",
    "softmax_partials",
    "merge",
    "merge_all",
    "row_losses",
    "denominator",
    "finish",
    "grad_scale",
    "block_grad",
    "block_softmax",
    "logsumexp",
]

#: The record of one row (float64 fields; the layout of ``fx_partial``, kernels/fx_api.h).
PARTIALS_DTYPE = np.dtype([("max", "f8"), ("sumexp", "f8"), ("mass", "f8"), ("gap", "f8"),
                           ("weight", "f8"), ("kept", "f8")])
assert PARTIALS_DTYPE.itemsize == _core.partials_itemsize()

_OUT = _core.fx_partials_output


def _block_args(block, target, weight, offset, classes, ignore_index, label_smoothing,
                what: str):
    """Checked kernel arguments: (x, labels, soft, weight, offset, classes, ignore_index,
    eps)."""
    x = float_input(block, "block")
    if x.ndim != 2:
        raise ValueError(f"{what}: block must be 2-D (rows, width), got shape {x.shape}")
    rows, width = x.shape
    if x.dtype.type not in (np.float32, np.float64):
        # the partials kernels read float32/float64 only (float16 and bfloat16, which the
        # losses take since issue 14, would be misread): refused, not guessed
        raise TypeError(f"{what}: block must be float32 or float64, got {x.dtype} (cast "
                        f"half-precision logits with .astype(np.float32))")
    dt = np.dtype(x.dtype.type)
    offset = _index(offset, "offset")
    if classes is None:
        classes = offset + width
    classes = _index(classes, "classes")
    if offset < 0 or offset + width > classes:
        raise ValueError(f"{what}: the block's classes [{offset}, {offset + width}) do not lie "
                         f"in [0, {classes})")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    labels = soft = None
    if target is not None:
        t = as_array(target, "target", "class indices or probabilities")
        if t.dtype.kind == "f":
            if t.shape != x.shape:
                raise ValueError(f"target shape {t.shape} does not match block shape {x.shape}: "
                                 f"probability targets must have the block's shape")
            soft = kernel_ready(t, dt)
        elif t.dtype.kind in "iu":
            labels, _ = _labels(t, (rows,), x.shape, classes, int(ignore_index), None)
        else:
            raise TypeError(f"{what}: target must hold integer class indices or float "
                            f"probabilities, got dtype {t.dtype}")
    wk = None
    if weight is not None:
        w = real_param(weight, "weight")
        if w.shape != (width,):
            raise ValueError(f"weight must have shape ({width},): the block's {width} classes "
                             f"[{offset}, {offset + width}), got {w.shape}")
        wk = kernel_ready(w, dt)
    return kernel_ready(x), labels, soft, wk, offset, classes, int(ignore_index), eps


def _index(v, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {v!r}")
    return int(v)


def _records(p, name: str = "partials") -> np.ndarray:
    a = np.asarray(p)
    if a.dtype != PARTIALS_DTYPE:
        raise TypeError(f"{name} must be an array of fastxent.partials.PARTIALS_DTYPE, got "
                        f"dtype {a.dtype}")
    return np.ascontiguousarray(a)


def softmax_partials(block, target=None, weight=None, *, offset: int = 0,
                     classes: Optional[int] = None, ignore_index: int = -100,
                     label_smoothing: float = 0.0, n_threads: Optional[int] = None) -> np.ndarray:
    """The per-row records of one block of logits (see the module docstring).

    ``block``: ``(rows, width)`` float32/float64 logits of the classes
    ``[offset, offset + width)`` of ``classes`` (default ``offset + width``).
    ``target``: ``None`` (no loss: for :func:`logsumexp`, :func:`block_softmax`), hard
    labels ``(rows,)`` of any integer dtype holding *global* class indices in
    ``[0, classes)`` or ``ignore_index`` (IndexError otherwise, as
    :func:`fastxent.cross_entropy`), or the block's slice ``(rows, width)`` of
    probability targets. ``weight``: the block's slice ``(width,)`` of the class weights.
    Returns ``(rows,)`` records of :data:`PARTIALS_DTYPE`.
    """
    x, labels, soft, wk, offset, classes, ii, eps = _block_args(
        block, target, weight, offset, classes, ignore_index, label_smoothing, "softmax_partials")
    n_threads = check_threads(n_threads)
    out = np.empty(x.shape[0], dtype=PARTIALS_DTYPE)
    if x.shape[0]:
        _core.softmax_block_partials(x, out, labels=labels, soft=soft, weight=wk, offset=offset,
                                     classes=classes, ignore_index=ii, smoothing=eps,
                                     n_threads=n_threads)
    return out


def merge(a, b) -> np.ndarray:
    """Records of the same rows from two blocks merged, row by row (exact, deterministic).

    ``a`` and ``b``: :data:`PARTIALS_DTYPE` arrays of one shape. Returns a new array."""
    a, b = _records(a, "a"), _records(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"cannot merge partials of shapes {a.shape} and {b.shape}: one record "
                         f"per row of the same rows")
    out = np.empty(a.shape, dtype=PARTIALS_DTYPE)
    _core.softmax_partials_merge(a, b, out)
    return out


def merge_all(parts: Sequence) -> np.ndarray:
    """Records of the same rows from any number of blocks merged left to right."""
    if len(parts) == 0:
        raise ValueError("merge_all needs at least one array of partials")
    acc = _records(parts[0]).copy()
    for p in parts[1:]:
        p = _records(p)
        if p.shape != acc.shape:
            raise ValueError(f"cannot merge partials of shapes {acc.shape} and {p.shape}")
        _core.softmax_partials_merge(acc, p, acc)
    return acc


def row_losses(merged) -> np.ndarray:
    """Each row's loss (float64) from its fully merged record: ``a log S + g`` (0 for an
    ignored item)."""
    m = _records(merged, "merged")
    out = np.empty(m.shape, dtype=np.float64)
    _core.softmax_partials_loss(m, out)
    return out


def denominator(merged) -> float:
    """The denominator of ``"mean"``: the summed item weights (kept hard labels' ``w_t``,
    or the number of rows with soft targets)."""
    return float(_records(merged, "merged")["weight"].sum())


def finish(merged, reduction: str = "mean", dtype=np.float64):
    """The loss from the fully merged records of all rows: ``"none"`` (per row, in
    ``dtype``), ``"sum"`` or ``"mean"`` (sum / :func:`denominator`; NaN over nothing, as
    PyTorch) as a NumPy scalar of ``dtype``."""
    check_reduction(reduction)
    dt = np.dtype(dtype)
    losses = row_losses(merged)
    if reduction == "none":
        return losses.astype(dt)
    total = float(losses.sum())
    if reduction == "sum":
        return dt.type(total)
    return dt.type(_divide(total, denominator(merged)))


def grad_scale(merged_or_denominator: Union[np.ndarray, float], reduction: str = "mean") -> float:
    """The gradient's scale: ``1 / denominator`` for ``"mean"`` (inf for 0), else 1.
    Takes all rows' merged records, or their :func:`denominator`."""
    check_reduction(reduction)
    if reduction != "mean":
        return 1.0
    d = merged_or_denominator
    if not isinstance(d, (float, int, np.floating, np.integer)):
        d = denominator(d)
    return 1.0 / float(d) if d != 0 else math.inf


def block_grad(block, merged, target=None, weight=None, *, offset: int = 0,
               classes: Optional[int] = None, ignore_index: int = -100,
               label_smoothing: float = 0.0, scale: float = 1.0,
               n_threads: Optional[int] = None) -> np.ndarray:
    """The gradient of the loss with respect to one block: ``(rows, width)``, the block's
    dtype. ``merged``: the ``(rows,)`` fully merged records of the block's rows; the
    other arguments as given to :func:`softmax_partials` for this block; ``scale`` from
    :func:`grad_scale`. ``grad_j = scale (a exp(x_j - M) / S - b_j)``, 0 for an ignored
    item."""
    x, labels, soft, wk, offset, classes, ii, eps = _block_args(
        block, target, weight, offset, classes, ignore_index, label_smoothing, "block_grad")
    return _apply(x, merged, _OUT.FX_PART_GRAD, labels, soft, wk, offset, classes, ii, eps,
                  float(scale), n_threads)


def block_softmax(block, merged, *, log: bool = False,
                  n_threads: Optional[int] = None) -> np.ndarray:
    """softmax (or log_softmax with ``log=True``) of one block of logits from the fully
    merged records of its rows (made with ``target=None`` or any target: only max and
    sumexp are read)."""
    x, *_ = _block_args(block, None, None, 0, None, -100, 0.0, "block_softmax")
    what = _OUT.FX_PART_LOG_SOFTMAX if log else _OUT.FX_PART_SOFTMAX
    return _apply(x, merged, what, None, None, None, 0, x.shape[1], -100, 0.0, 1.0, n_threads)


def _apply(x, merged, what, labels, soft, wk, offset, classes, ii, eps, scale, n_threads):
    m = _records(merged, "merged")
    if m.shape != (x.shape[0],):
        raise ValueError(f"merged must hold one record per row of the block: shape "
                         f"({x.shape[0]},), got {m.shape}")
    n_threads = check_threads(n_threads)
    out = np.empty(x.shape, dtype=x.dtype)
    if x.size:
        _core.softmax_block_apply(x, m, out, output=what, labels=labels, soft=soft, weight=wk,
                                  offset=offset, classes=classes, ignore_index=ii,
                                  smoothing=eps, grad_scale=scale, n_threads=n_threads)
    return out


def logsumexp(merged) -> np.ndarray:
    """Each row's ``log(sum_j exp(x_j)) = M + log S`` (float64) from its fully merged
    record. (fastxent.logsumexp refines rows dominated by one logit near 0 with a second
    pass, log1p; this one does not: it is exact to float64 rounding of M + log S.)"""
    m = _records(merged, "merged")
    with np.errstate(divide="ignore", invalid="ignore"):
        return m["max"] + np.log(m["sumexp"])
