"""The cross-entropy family of losses (torch.nn.functional names and semantics)."""
from __future__ import annotations

import math
from typing import Literal, Optional, Tuple, Union, overload

import numpy as np

from . import _core
from ._checks import (
    as_array,
    check_int,
    check_reduction,
    check_threads,
    class_weight,
    copy_back,
    float_input,
    is_bfloat16,
    is_float_dtype,
    is_half,
    kernel_ready,
    kernel_view,
    loss_dtype,
    normalize_axis,
    output_array,
    real_param,
    snapshot,
    widened_for_float32_out,
    write_target,
)

from ._types import ArrayLike, FloatArray, Loss, LossAndGrad

_LOSS = _core.fx_elementwise_loss   # the elementwise kernels' losses (kernels/fx_api.h)

# Each loss has three signatures for type checkers (typing.overload; one implementation):
# without return_grad (or return_grad=False) it returns the loss, with return_grad=True the
# tuple (loss, grad), with a bool known only at run time either.


def _finish(loss_sum: float, denom: float, reduction: str, per_item, dtype,
            grad, return_grad: bool):
    if reduction == "none":
        loss = per_item
    elif reduction == "sum":
        loss = dtype.type(loss_sum)
    else:
        loss = dtype.type(_divide(loss_sum, denom))
    return (loss, grad) if return_grad else loss


def _divide(x: float, d: float) -> float:
    """x / d with IEEE's answers at d == 0 (as PyTorch divides): +-inf for x != 0, NaN for
    0 / 0 (a mean over nothing, or over weights that sum to 0 with nothing to weigh)."""
    if d != 0:
        return x / d
    if x == 0 or x != x:
        return math.nan
    return math.copysign(math.inf, x) * math.copysign(1.0, d)


def _labels(target: np.ndarray, expected_shape, x_shape, C: int, ignore_index: int, w64,
            n_threads=1):
    """Validate hard labels in one pass over them (in n_threads threads: None, all);
    returns (labels, weight sum)."""
    if target.shape != tuple(expected_shape):
        raise ValueError(
            f"target shape {target.shape} does not match input shape {x_shape}: class-index "
            f"targets must have shape {tuple(expected_shape)}"
        )
    labels = kernel_ready(target)
    pos, bad, wsum = _core.check_labels(labels, classes=C, ignore_index=int(ignore_index),
                                        weight64=w64, n_threads=n_threads)
    if pos >= 0:
        where = np.unravel_index(pos, labels.shape) if labels.ndim else ()
        raw = labels.reshape(-1)[pos]
        raise IndexError(
            f"target {raw} at position {tuple(int(i) for i in where)} is out of range for "
            f"{C} classes (valid: 0..{C - 1}, or ignore_index={ignore_index})"
        )
    return labels, wsum


def _softmax_loss(input, target, weight, ignore_index, reduction, label_smoothing, axis,
                  return_grad, grad_out, n_threads, logprob_input: bool, fname: str):
    # 1. every conversion that can run the caller's code (__array__, __index__, __float__)
    x = float_input(input)                               # a bad input is the first error
    check_reduction(reduction)
    n_threads = check_threads(n_threads)
    axis = check_int(axis, "axis")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    ignore_index = int(ignore_index)
    if not -2**63 <= ignore_index < 2**63:
        raise ValueError(f"ignore_index must fit in int64, got {ignore_index}")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    t = as_array(target, "target", "class indices or probabilities")
    w = None if weight is None else real_param(weight, "weight")
    # 2. from here on only snapshots (see _checks.snapshot): no code of the caller runs
    x, t, g_user = x.view(), t.view(), snapshot(grad_out)
    if w is not None:
        w = w.view()
    if not is_float_dtype(x.dtype):             # changed by the caller's code meanwhile
        x = float_input(x)
    dt = np.dtype(x.dtype.type)  # native byte order: what the kernels write
    if return_grad and widened_for_float32_out(x, g_user):
        # the unrounded float32 gradient of a half input: the targets rounded to the
        # input's dtype first, as the half kernels would read them
        if t.dtype.kind == "f" or is_bfloat16(t.dtype):
            t = kernel_ready(t, dt).astype(np.float32)
        x, dt = x.astype(np.float32), np.dtype(np.float32)
    ct = loss_dtype(dt)          # the loss's dtype (float32 for a half input)
    if x.ndim == 0:
        raise ValueError(f"{fname}: input must have at least 1 dimension (the class axis), got a scalar")
    # a 1-D input is one unbatched row: its only axis is the class axis (the default
    # axis=1 names it, as PyTorch's class dim 1 does for batched input)
    if x.ndim == 1:
        if axis not in (0, -1, 1):
            raise ValueError(f"{fname}: axis={axis!r} for a 1-D input, whose only axis is the class axis")
        ax = 0
    else:
        ax = normalize_axis(axis, x.ndim)
    C = x.shape[ax]
    item_shape = x.shape[:ax] + x.shape[ax + 1:]

    soft = t.dtype.kind == "f" or is_bfloat16(t.dtype)
    if t.dtype.kind not in "iu" and not soft or soft and logprob_input:
        kinds = "integer class indices" if logprob_input else "integer class indices or float probabilities"
        raise TypeError(f"{fname}: target must hold {kinds}, got dtype {t.dtype}")

    wk, w64, wtotal = class_weight(w, C, ct)
    # (outer, C, inner) view: the kernels read a class axis that is not last with
    # stride `inner`, so no transposing copy is made
    inner = math.prod(x.shape[ax + 1:])
    xk = kernel_ready(x)

    if soft:
        if t.shape != x.shape:
            raise ValueError(
                f"target shape {t.shape} does not match input shape {x.shape}: probability "
                f"targets must have the input's shape"
            )
        yk = kernel_ready(t, dt)
        labels, denom = None, float(math.prod(item_shape))
    else:
        yk = None
        labels, denom = _labels(t, item_shape, x.shape, C, ignore_index, w64, n_threads)

    gk, copy_to = None, None
    if return_grad:
        out = output_array(g_user, x.shape, dt, "grad_out")
        # grad_out=input: the kernels read each logit before writing its gradient
        gk, copy_to = write_target(out, x.shape, dt, x, t, w)
    elif grad_out is not None:
        raise ValueError("grad_out was given but return_grad is False")
    scale = 1.0
    if reduction == "mean":
        scale = 1.0 / denom if denom != 0 else math.inf
    # (zeros: with no classes the kernels have nothing to compute, and an item's loss is
    # then 0: ignored, or a soft target's sum over no classes)
    per_item = (np.empty if C else np.zeros)(item_shape, dtype=ct) if reduction == "none" else None
    total = 0.0
    gk_kernel = gk
    if x.size and inner != 1 and (C > 2**31 - 1 or is_half(dt)
                                  and not _core.col_buffer_fits(kernel_view(xk), C)):
        # a half input's class-axis kernel needs a float32 panel buffer that this many
        # classes would not fit, and its lanes hold a class in 32 bits
        # (kernels/fx_softmax_cols.h): the class axis moved last, a copy, and the row
        # kernels; the items keep their order, so the labels too
        xk = np.ascontiguousarray(np.moveaxis(xk, ax, -1))
        if yk is not None:
            yk = np.ascontiguousarray(np.moveaxis(yk, ax, -1))
        if gk is not None:
            gk_kernel = np.empty(xk.shape, dtype=dt)
        inner = 1
    if x.size:  # an empty batch (or empty trailing dims) has nothing to compute
        total = _core.softmax_loss(
            kernel_view(xk), classes=C, inner=inner, labels=labels, soft=kernel_view(yk),
            weight=wk, weight_total=wtotal, ignore_index=ignore_index, smoothing=eps,
            grad_scale=scale, grad=kernel_view(gk_kernel), item_loss=per_item,
            logprob_input=logprob_input, n_threads=n_threads)
    if gk_kernel is not gk:
        np.copyto(gk, np.moveaxis(gk_kernel, -1, ax))
    grad = copy_back(gk, copy_to, grad_out) if return_grad else None
    return _finish(total, denom, reduction, per_item, ct, grad, return_grad)



@overload
def cross_entropy(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ..., *,
                  ignore_index: int = ..., reduction: str = ..., label_smoothing: float = ...,
                  axis: int = ..., return_grad: Literal[False] = ...,
                  grad_out: Optional[FloatArray] = ..., n_threads: Optional[int] = ...) -> Loss: ...
@overload
def cross_entropy(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ..., *,
                  ignore_index: int = ..., reduction: str = ..., label_smoothing: float = ...,
                  axis: int = ..., return_grad: Literal[True],
                  grad_out: Optional[FloatArray] = ...,
                  n_threads: Optional[int] = ...) -> LossAndGrad: ...
@overload
def cross_entropy(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ..., *,
                  ignore_index: int = ..., reduction: str = ..., label_smoothing: float = ...,
                  axis: int = ..., return_grad: bool = ..., grad_out: Optional[FloatArray] = ...,
                  n_threads: Optional[int] = ...) -> Union[Loss, LossAndGrad]: ...
def cross_entropy(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = None, *,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0, axis: int = 1, return_grad: bool = False,
                  grad_out: Optional[FloatArray] = None,
                  n_threads: Optional[int] = None) -> Union[Loss, LossAndGrad]:
    """Softmax cross-entropy from logits, as ``torch.nn.functional.cross_entropy``.

    Shapes: ``input`` is ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)`` with the class
    axis ``axis`` (1 by default, as in PyTorch; the only axis for 1-D input; ``axis=-1``
    serves ``(batch, time, vocab)``). ``target`` is either class indices of any integer
    dtype, shaped like ``input`` without the class axis, or class probabilities shaped
    like ``input``.

    Per item, with ``lse = log(sum_c exp(x_c))`` and class weights ``w`` (ones if None),
    ``eps = label_smoothing``::

        indices:       loss = (1-eps) w_t (lse - x_t) + (eps/C) sum_c w_c (lse - x_c)
        probabilities: loss = sum_c w_c ((1-eps) y_c + eps/C) (lse - x_c)

    ``reduction="mean"`` divides the sum by ``sum of w_t`` over the items whose target is
    not ``ignore_index`` (index targets; NaN when that is zero, e.g. every target ignored,
    as in PyTorch) or by the number of items (probability targets). Items whose target
    is ``ignore_index`` have loss 0 and gradient 0.

    With ``return_grad=True`` returns ``(loss, grad)``, ``grad`` being d loss / d input
    (for ``"none"``: of ``loss.sum()``), computed in the same pass as the loss. ``grad_out``
    receives it (``grad_out=input`` overwrites the logits). The loss is a NumPy scalar of
    the input dtype (an array for ``"none"``), accumulated in float64; float32 for a
    float16 or bfloat16 input, whose gradient is in the input dtype (or float32 into a
    float32 ``grad_out``: see ``fastxent``'s module docstring on float16's range).

    NaN and inf follow IEEE arithmetic: a NaN logit makes its item's loss and gradient NaN;
    a ``-inf`` logit on a non-target class is a masked class (finite loss, zero gradient).
    Deviation from PyTorch: with probability targets a class with probability 0 and logit
    ``-inf`` contributes 0 (PyTorch gives NaN).
    """
    return _softmax_loss(input, target, weight, ignore_index, reduction, label_smoothing,
                         axis, return_grad, grad_out, n_threads, False, "cross_entropy")


@overload
def nll_loss(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ..., *,
             ignore_index: int = ..., reduction: str = ..., axis: int = ...,
             return_grad: Literal[False] = ..., grad_out: Optional[FloatArray] = ...,
             n_threads: Optional[int] = ...) -> Loss: ...
@overload
def nll_loss(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ..., *,
             ignore_index: int = ..., reduction: str = ..., axis: int = ...,
             return_grad: Literal[True], grad_out: Optional[FloatArray] = ...,
             n_threads: Optional[int] = ...) -> LossAndGrad: ...
@overload
def nll_loss(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ..., *,
             ignore_index: int = ..., reduction: str = ..., axis: int = ...,
             return_grad: bool = ..., grad_out: Optional[FloatArray] = ...,
             n_threads: Optional[int] = ...) -> Union[Loss, LossAndGrad]: ...
def nll_loss(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = None, *,
             ignore_index: int = -100, reduction: str = "mean", axis: int = 1,
             return_grad: bool = False, grad_out: Optional[FloatArray] = None,
             n_threads: Optional[int] = None) -> Union[Loss, LossAndGrad]:
    """Negative log-likelihood on log-probabilities, as ``torch.nn.functional.nll_loss``.

    ``input`` holds log-probabilities, shaped as for :func:`cross_entropy`; ``target``
    holds class indices. Per item ``loss = -w_t * input[t]``; ``"mean"`` divides by the
    summed weight of the non-ignored targets (NaN over nothing). The gradient is
    ``-w_t`` (times 1/denominator for ``"mean"``) at the target class and 0 elsewhere.
    """
    return _softmax_loss(input, target, weight, ignore_index, reduction, 0.0, axis,
                         return_grad, grad_out, n_threads, True, "nll_loss")


def _broadcast_param(p, shape, dtype, name) -> Tuple[Optional[np.ndarray], bool]:
    """A weight-like parameter for the sigmoid kernel: (array, per_column). Per-column
    means a vector of the last axis's length, shared by every row (no N x C copy)."""
    if p is None:
        return None, False
    a = real_param(p, name)
    try:
        b = np.broadcast_to(a, shape)
    except ValueError:
        raise ValueError(f"{name} of shape {a.shape} cannot be broadcast to the input shape {tuple(shape)}") from None
    cols = shape[-1] if len(shape) else 1
    if a.ndim <= 1 or all(s == 1 for s in a.shape[:-1]):
        vec = np.broadcast_to(a.reshape(-1) if a.ndim else a.reshape(1), (cols,))
        return kernel_ready(vec, dtype), True
    return kernel_ready(b, dtype), False


@overload
def binary_cross_entropy_with_logits(input: ArrayLike, target: ArrayLike,
                                     weight: Optional[ArrayLike] = ..., *,
                                     pos_weight: Optional[ArrayLike] = ...,
                                     reduction: str = ..., return_grad: Literal[False] = ...,
                                     grad_out: Optional[FloatArray] = ...,
                                     n_threads: Optional[int] = ...) -> Loss: ...
@overload
def binary_cross_entropy_with_logits(input: ArrayLike, target: ArrayLike,
                                     weight: Optional[ArrayLike] = ..., *,
                                     pos_weight: Optional[ArrayLike] = ...,
                                     reduction: str = ..., return_grad: Literal[True],
                                     grad_out: Optional[FloatArray] = ...,
                                     n_threads: Optional[int] = ...) -> LossAndGrad: ...
@overload
def binary_cross_entropy_with_logits(input: ArrayLike, target: ArrayLike,
                                     weight: Optional[ArrayLike] = ..., *,
                                     pos_weight: Optional[ArrayLike] = ...,
                                     reduction: str = ..., return_grad: bool = ...,
                                     grad_out: Optional[FloatArray] = ...,
                                     n_threads: Optional[int] = ...) -> Union[Loss, LossAndGrad]: ...
def binary_cross_entropy_with_logits(input: ArrayLike, target: ArrayLike,
                                     weight: Optional[ArrayLike] = None, *,
                                     pos_weight: Optional[ArrayLike] = None,
                                     reduction: str = "mean", return_grad: bool = False,
                                     grad_out: Optional[FloatArray] = None,
                                     n_threads: Optional[int] = None) -> Union[Loss, LossAndGrad]:
    """Sigmoid cross-entropy from logits (multi-label), as
    ``torch.nn.functional.binary_cross_entropy_with_logits``.

    ``input``: logits of any shape; ``target``: same shape, float, bool or uint8.
    Elementwise, with ``pw = pos_weight`` (broadcast over the last axis, as in PyTorch)::

        loss = w * ((1 - t) x + (1 + (pw - 1) t) * softplus(-x)),
        softplus(-x) = max(-x, 0) + log1p(exp(-|x|))       (stable for any x)
        d loss / dx = w * ((1 + (pw - 1) t) sigmoid(x) - pw t)

    ``weight`` and ``pos_weight`` broadcast to the input's shape. ``"mean"`` divides by
    the number of elements (NaN for an empty input).
    """
    return _elementwise_loss(_LOSS.FX_BCE_LOGITS, input, target, weight, pos_weight, reduction,
                             return_grad, grad_out, n_threads)



def _elementwise_loss(loss, input, target, weight, pos_weight, reduction: str,
                      return_grad: bool, grad_out, n_threads, allowed=("none", "mean", "sum")):
    """The elementwise losses: checks, layout and outputs, then one fused kernel pass."""
    # every conversion that can run the caller's code first, then snapshots only (as in
    # _softmax_loss)
    x = float_input(input)
    check_reduction(reduction, allowed)
    n_threads = check_threads(n_threads)
    kl = loss in (_LOSS.FX_KL, _LOSS.FX_KL_LOG_TARGET)
    t = (float_input(target, "target") if kl
         else as_array(target, "target", "float, bool or uint8 values"))
    weight = None if weight is None else real_param(weight, "weight")
    pos_weight = None if pos_weight is None else real_param(pos_weight, "pos_weight")
    x, t, g_user = x.view(), t.view(), snapshot(grad_out)
    weight, pos_weight = snapshot(weight), snapshot(pos_weight)
    if not is_float_dtype(x.dtype):             # changed by the caller's code meanwhile
        x = float_input(x)
    dt = np.dtype(x.dtype.type)  # native byte order: what the kernels write
    if kl:
        t = float_input(t, "target")
    elif t.dtype.kind not in "fbiu" and not is_bfloat16(t.dtype):
        raise TypeError(f"target must be float, bool or uint8, got dtype {t.dtype}")
    if return_grad and widened_for_float32_out(x, g_user):
        # the unrounded float32 gradient of a half input (see _softmax_loss)
        if t.dtype != np.bool_ and t.dtype != np.uint8:
            t = kernel_ready(t, dt).astype(np.float32)
        x, dt = x.astype(np.float32), np.dtype(np.float32)
    ct = loss_dtype(dt)          # the loss's and the weights' dtype
    if t.shape != x.shape:
        raise ValueError(f"target shape {t.shape} must match input shape {x.shape}")
    shape = x.shape if x.ndim else (1,)
    xk = kernel_ready(x).reshape(shape)
    if loss == _LOSS.FX_BCE_PROBS and x.size:
        if is_half(dt):     # (the C check reads float32 and float64 only)
            xf = xk.astype(np.float32).reshape(-1)
            outside = np.flatnonzero(~((xf >= 0) & (xf <= 1)))
            bad = int(outside[0]) if outside.size else -1
        else:
            bad = _core.find_outside_unit(xk)
        if bad >= 0:
            raise ValueError(
                f"binary_cross_entropy: input must lie in [0, 1]; found {xk.reshape(-1)[bad]} "
                f"at position {tuple(int(i) for i in np.unravel_index(bad, x.shape))}"
            )
    if t.dtype == np.bool_ or t.dtype == np.uint8:
        tk = kernel_ready(t.view(np.uint8) if t.dtype == np.bool_ else t).reshape(shape)
    else:
        tk = kernel_ready(t, dt).reshape(shape)
    wk, w_col = _broadcast_param(weight, shape, ct, "weight")
    pk, p_col = _broadcast_param(pos_weight, shape, ct, "pos_weight")
    n = x.size
    denom = float(x.shape[0] if x.ndim else 1) if reduction == "batchmean" else float(n)
    if return_grad:
        out = output_array(g_user, x.shape, dt, "grad_out")
        gbuf, copy_to = write_target(out, x.shape, dt, x, t, weight, pos_weight)
    elif grad_out is not None:
        raise ValueError("grad_out was given but return_grad is False")
    else:
        gbuf = copy_to = None
    scale = 1.0
    if reduction in ("mean", "batchmean"):
        scale = 1.0 / denom if denom else math.inf
    per_item = np.empty(x.shape, dtype=ct) if reduction == "none" else None
    total = _core.elementwise_loss(
        kernel_view(xk), kernel_view(tk), loss=loss, weight=wk, weight_per_col=w_col,
        pos_weight=pk, pos_weight_per_col=p_col, grad_scale=scale,
        grad=None if gbuf is None else kernel_view(gbuf.reshape(shape)),
        item_loss=None if per_item is None else per_item.reshape(shape), n_threads=n_threads)
    grad = copy_back(gbuf, copy_to, grad_out) if return_grad else None
    red = "mean" if reduction == "batchmean" else reduction
    return _finish(total, denom, red, per_item, ct, grad, return_grad)


@overload
def binary_cross_entropy(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ...,
                         *, reduction: str = ..., return_grad: Literal[False] = ...,
                         grad_out: Optional[FloatArray] = ...,
                         n_threads: Optional[int] = ...) -> Loss: ...
@overload
def binary_cross_entropy(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ...,
                         *, reduction: str = ..., return_grad: Literal[True],
                         grad_out: Optional[FloatArray] = ...,
                         n_threads: Optional[int] = ...) -> LossAndGrad: ...
@overload
def binary_cross_entropy(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = ...,
                         *, reduction: str = ..., return_grad: bool = ...,
                         grad_out: Optional[FloatArray] = ...,
                         n_threads: Optional[int] = ...) -> Union[Loss, LossAndGrad]: ...
def binary_cross_entropy(input: ArrayLike, target: ArrayLike, weight: Optional[ArrayLike] = None,
                         *, reduction: str = "mean", return_grad: bool = False,
                         grad_out: Optional[FloatArray] = None,
                         n_threads: Optional[int] = None) -> Union[Loss, LossAndGrad]:
    """Binary cross-entropy on probabilities, as ``torch.nn.functional.binary_cross_entropy``.

    ``loss = -w (t max(log p, -100) + (1 - t) max(log(1 - p), -100))`` elementwise, with
    PyTorch's gradient ``w (p - t) / max(p (1 - p), 1e-12)``. ``input`` must lie in [0, 1]
    (ValueError otherwise, as PyTorch raises). Prefer
    :func:`binary_cross_entropy_with_logits`, which is exact where this one clamps.
    PyTorch's clamp of the gradient's denominator is ``1e-12`` rounded to float32
    (``9.99999996e-13``), which is what a float64 PyTorch computation shows; we match it.
    """
    return _elementwise_loss(_LOSS.FX_BCE_PROBS, input, target, weight, None, reduction,
                             return_grad, grad_out, n_threads)


@overload
def kl_div(input: ArrayLike, target: ArrayLike, *, reduction: str = ..., log_target: bool = ...,
           return_grad: Literal[False] = ..., grad_out: Optional[FloatArray] = ...,
           n_threads: Optional[int] = ...) -> Loss: ...
@overload
def kl_div(input: ArrayLike, target: ArrayLike, *, reduction: str = ..., log_target: bool = ...,
           return_grad: Literal[True], grad_out: Optional[FloatArray] = ...,
           n_threads: Optional[int] = ...) -> LossAndGrad: ...
@overload
def kl_div(input: ArrayLike, target: ArrayLike, *, reduction: str = ..., log_target: bool = ...,
           return_grad: bool = ..., grad_out: Optional[FloatArray] = ...,
           n_threads: Optional[int] = ...) -> Union[Loss, LossAndGrad]: ...
def kl_div(input: ArrayLike, target: ArrayLike, *, reduction: str = "mean",
           log_target: bool = False, return_grad: bool = False,
           grad_out: Optional[FloatArray] = None,
           n_threads: Optional[int] = None) -> Union[Loss, LossAndGrad]:
    """Kullback-Leibler divergence, as ``torch.nn.functional.kl_div``.

    ``input`` holds log-probabilities ``log q``; ``target`` holds probabilities ``p`` (or
    ``log p`` with ``log_target=True``), same shape. Elementwise
    ``loss = p (log p - log q)``, with ``0 log 0 = 0`` and ``0 (log 0 - log q) = 0`` also at
    ``log q = -inf`` (PyTorch gives NaN there). Reductions: ``"none"``, ``"sum"``,
    ``"mean"`` (over all elements, PyTorch's default, which is not the KL divergence of
    the rows) and ``"batchmean"`` (sum / input.shape[0], the true mean KL per row).
    The gradient with respect to ``input`` is ``-p`` times the reduction's scale.
    """
    loss = _LOSS.FX_KL_LOG_TARGET if log_target else _LOSS.FX_KL
    return _elementwise_loss(loss, input, target, None, None, reduction, return_grad,
                             grad_out, n_threads, allowed=("none", "mean", "sum", "batchmean"))
