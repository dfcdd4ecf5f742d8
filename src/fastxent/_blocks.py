"""Building blocks: logsumexp, softmax, log_softmax, entropy, sigmoid, log_sigmoid.

Class axis -1 by default, as in NumPy, SciPy and JAX. Each takes ``out=`` (a buffer of
the result's shape and the input's dtype) and ``n_threads=``.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from . import _core
from ._checks import (
    check_int,
    check_threads,
    copy_back,
    float_input,
    kernel_view,
    kernel_ready,
    normalize_axis,
    output_array,
    snapshot,
    widened_for_float32_out,
    write_target,
)
from ._types import ArrayLike, FloatArray

# what the kernels write (kernels/fx_api.h)
_SOFTMAX_OUT = _core.fx_softmax_output
_SIGMOID_OUT = _core.fx_sigmoid_output


def _softmax_outputs(x, axis, out, n_threads, what, name: str) -> FloatArray:
    # every conversion that can run the caller's code first, then snapshots only (see
    # _checks.snapshot); the caller's own `out` object is what is returned
    x = float_input(x, "x")
    n_threads = check_threads(n_threads)
    axis = check_int(axis, "axis")
    out_user = out
    x, out = snapshot(x), snapshot(out)
    x = float_input(x, "x")
    if widened_for_float32_out(x, out):    # the unrounded result of a half input
        x = x.astype(np.float32)
    dt = np.dtype(x.dtype.type)  # native byte order: what the kernels write
    if x.ndim == 0:
        raise ValueError(f"{name}: x must have at least one dimension")
    ax = normalize_axis(axis, x.ndim)
    reduces = what in (_SOFTMAX_OUT.FX_OUT_LOGSUMEXP, _SOFTMAX_OUT.FX_OUT_ENTROPY)
    shape = x.shape[:ax] + x.shape[ax + 1:] if reduces else x.shape
    out = output_array(out, shape, dt, "out")
    moved = ax != x.ndim - 1
    # the class axis not last: float32 and float64 read in place by the class-axis
    # kernel (x as (outer, C, inner)) where `inner` fills a 16-lane vector, and for more
    # than 64 classes a whole panel (128), and the panel buffer fits (else its passes
    # read class rows that alias in the cache). Measured against the transposing copy
    # (1 and 2 threads): float32 at inner 16 and 21 classes 1.2-1.8x faster on AVX-512,
    # 1.3-1.8x on AVX2, 1.6-2.4x on the baseline ISA; at inner 8 0.4-0.8x (AVX-512:
    # half of each vector empty); at inner 16 and 300 classes 0.8-1.6x (the row kernels
    # on long rows win on AVX2 and the baseline); at 4096 2.6-4.8x. Half inputs and the
    # other shapes take the copy and the row kernels.
    inner = int(np.prod(x.shape[ax + 1:], dtype=np.int64))
    in_place_cols = (moved and x.dtype.itemsize != 2 and inner >= 16
                     and (x.shape[ax] <= 64 or inner >= 128)
                     and _core.col_buffer_fits(x, x.shape[ax]))
    xk = kernel_ready(np.moveaxis(x, ax, -1) if moved and not in_place_cols else x)
    if x.shape[ax] == 0:
        if what == _SOFTMAX_OUT.FX_OUT_LOGSUMEXP:   # the log of an empty sum, as SciPy, PyTorch
            res = np.full(shape, -np.inf, dtype=dt)
        elif reduces:  # the entropy of a distribution over no classes has no value
            raise ValueError(f"{name}: the axis being reduced has length 0")
        else:
            res = np.empty(shape, dtype=dt)
        return copy_back(res, out, out_user)
    if in_place_cols:
        buf, copy_to = write_target(out, shape, dt, xk)
        _core.softmax_outputs_cols(xk, buf, classes=x.shape[ax], inner=inner, output=what,
                                   n_threads=n_threads)
        return copy_back(buf, copy_to, out_user)
    if moved and not reduces:
        buf = np.empty(xk.shape, dtype=dt)
        _core.softmax_outputs(kernel_view(xk), kernel_view(buf), output=what, n_threads=n_threads)
        return copy_back(np.moveaxis(buf, -1, ax), out, out_user)
    buf, copy_to = write_target(out, shape, dt, x)
    _core.softmax_outputs(kernel_view(xk), kernel_view(buf), output=what, n_threads=n_threads)
    return copy_back(buf, copy_to, out_user)



def logsumexp(x: ArrayLike, axis: int = -1, *, out: Optional[FloatArray] = None,
              n_threads: Optional[int] = None) -> FloatArray:
    """``log(sum(exp(x), axis))``, shifted by the maximum so it never overflows.

    Shape: ``x`` without ``axis``. A slice of all ``-inf`` gives ``-inf``; a slice holding
    ``+inf`` (and no NaN) gives ``+inf``; NaN propagates.
    """
    return _softmax_outputs(x, axis, out, n_threads, _SOFTMAX_OUT.FX_OUT_LOGSUMEXP, "logsumexp")


def softmax(x: ArrayLike, axis: int = -1, *, out: Optional[FloatArray] = None,
            n_threads: Optional[int] = None) -> FloatArray:
    """``exp(x - logsumexp(x))`` along ``axis``; same shape as ``x``.

    ``-inf`` entries get probability 0. A slice of all ``-inf``, or one holding ``+inf``,
    has no defined distribution and gives NaN (as PyTorch does).
    """
    return _softmax_outputs(x, axis, out, n_threads, _SOFTMAX_OUT.FX_OUT_SOFTMAX, "softmax")


def log_softmax(x: ArrayLike, axis: int = -1, *, out: Optional[FloatArray] = None,
                n_threads: Optional[int] = None) -> FloatArray:
    """``x - logsumexp(x)`` along ``axis``; same shape as ``x``. ``-inf`` entries stay
    ``-inf``; slices of all ``-inf`` or holding ``+inf`` give NaN."""
    return _softmax_outputs(x, axis, out, n_threads, _SOFTMAX_OUT.FX_OUT_LOG_SOFTMAX, "log_softmax")


def entropy(logits: ArrayLike, axis: int = -1, *, out: Optional[FloatArray] = None,
            n_threads: Optional[int] = None) -> FloatArray:
    """Entropy ``H = -sum p log p`` of ``p = softmax(logits)`` along ``axis``, in nats.

    Computed as ``log s + sum_j p_j (m - x_j)`` (m the max, s the shifted exp-sum), so no
    ``0 * log 0`` arises: masked (``-inf``) classes contribute 0. Shape: ``logits``
    without ``axis``.
    """
    return _softmax_outputs(logits, axis, out, n_threads, _SOFTMAX_OUT.FX_OUT_ENTROPY, "entropy")


def _sigmoid_outputs(x, out, n_threads, what) -> FloatArray:
    x = float_input(x, "x")
    n_threads = check_threads(n_threads)
    out_user = out
    x, out = snapshot(x), snapshot(out)     # as in _softmax_outputs
    x = float_input(x, "x")
    if widened_for_float32_out(x, out):    # the unrounded result of a half input
        x = x.astype(np.float32)
    dt = np.dtype(x.dtype.type)  # native byte order: what the kernels write
    out = output_array(out, x.shape, dt, "out")
    xk = kernel_ready(x)
    buf, copy_to = write_target(out, x.shape, dt, x)
    _core.sigmoid_outputs(kernel_view(xk), kernel_view(buf), output=what, n_threads=n_threads)
    return copy_back(buf, copy_to, out_user)


def sigmoid(x: ArrayLike, *, out: Optional[FloatArray] = None,
            n_threads: Optional[int] = None) -> FloatArray:
    """``1 / (1 + exp(-x))`` elementwise, exact in the tails (``e^x / (1 + e^x)`` for x < 0)."""
    return _sigmoid_outputs(x, out, n_threads, _SIGMOID_OUT.FX_OUT_SIGMOID)


def log_sigmoid(x: ArrayLike, *, out: Optional[FloatArray] = None,
                n_threads: Optional[int] = None) -> FloatArray:
    """``log(sigmoid(x)) = -(max(-x, 0) + log1p(exp(-|x|)))`` elementwise, never overflowing."""
    return _sigmoid_outputs(x, out, n_threads, _SIGMOID_OUT.FX_OUT_LOG_SIGMOID)
