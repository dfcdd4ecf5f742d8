"""fastxent for PyTorch: ``torch.nn.functional``'s losses and ``torch.nn``'s loss modules on
CPU tensors, with autograd and ``torch.compile(fullgraph=True)``.

The one-line swap::

    import fastxent.torch as fxt
    loss = fxt.cross_entropy(logits, target)      # was F.cross_entropy(logits, target)
    criterion = fxt.CrossEntropyLoss()            # was nn.CrossEntropyLoss()

How a call runs (imported on demand: ``import fastxent`` never imports torch):

1. The public function (same signature as ``torch.nn.functional``'s) resolves the legacy
   ``size_average``/``reduce`` arguments and refuses a target or weight that requires grad
   (the fused kernel gives the gradient with respect to ``input`` only).
2. The forward reads each tensor's memory as a NumPy array (``Tensor.numpy()``: a view, any
   strides, int32 or int64 targets as they are) and runs fastxent's fused kernel with
   ``return_grad=True``, writing the gradient of the loss straight into a fresh torch tensor.
   Threads: ``torch.get_num_threads()``, so ``torch.set_num_threads`` governs these losses as
   it governs torch's own.
3. Backward takes that gradient and scales it in place by the incoming gradient (no multiply
   when the incoming gradient is a scalar 1, as ``loss.backward()`` gives), then hands it to
   autograd, which keeps it as ``input.grad`` without a copy where it can. That consumes
   the saved gradient: a second backward through the same graph (``retain_graph=True``,
   ``gradcheck``) computes it again from the inputs (the logits by a weak reference: the
   gradient is the only logits-sized tensor kept until backward, as torch's own loss keeps
   only its log-softmax; the caller must then still hold them). Double backward raises a
   RuntimeError saying it is not supported.

Each loss is a ``torch.library`` custom op in the namespace ``fastxent``
(``torch.ops.fastxent.cross_entropy`` etc.) with a fake implementation and a registered
autograd formula, so that ``torch.compile(fullgraph=True)`` and ``torch.export`` trace through
it. In eager mode, on plain tensors, the same forward and backward run through a plain
``torch.autograd.Function`` instead: the custom-op dispatch costs about 20-30 us a call
(measured at 64x10, bench/torch_autograd.py), as much as the loss itself on small batches.
"""
from typing import Any, Callable, Optional, Tuple

import weakref

import numpy as np

try:
    import torch
except ImportError as exc:  # the message names what to install
    raise ImportError("fastxent.torch needs PyTorch: pip install torch") from exc
from torch import Tensor

from . import _losses

__all__ = [
    "cross_entropy",
    "nll_loss",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy",
    "kl_div",
    "CrossEntropyLoss",
    "NLLLoss",
    "BCEWithLogitsLoss",
    "BCELoss",
    "KLDivLoss",
]

# the input dtypes fastxent computes in
_FLOAT_DTYPES = (torch.float32, torch.float64)
_NUMPY_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_PLAIN_TENSORS = (torch.Tensor, torch.nn.Parameter)


# --------------------------------------------------------------------- tensors as arrays
def _array(t: Optional[Tensor], name: str, float_only: bool = False) -> Optional[np.ndarray]:
    """The memory of the CPU tensor ``t`` as a NumPy array (no copy, any strides); None
    for None. ValueError for a tensor on another device; TypeError for a dtype NumPy cannot
    hold, or (``float_only``) one fastxent does not compute in. fastxent's own checks (shapes,
    labels, values) then run on the array."""
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"fastxent.torch: {name} must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_cpu:
        raise ValueError(
            f"fastxent.torch: {name} is on device {t.device}; fastxent computes on the CPU "
            f"only: move it with {name}.cpu(), or use torch.nn.functional on {t.device}")
    if float_only and t.dtype not in _FLOAT_DTYPES:
        raise TypeError(
            f"fastxent.torch: {name} has dtype {t.dtype}; fastxent computes in torch.float32 "
            f"and torch.float64 (cast it: {name}.float())")
    if t.requires_grad:  # the autograd.Function path sees the caller's tensors
        t = t.detach()
    try:
        return t.numpy()
    except TypeError as exc:   # e.g. bfloat16, which NumPy has no dtype for
        raise TypeError(f"fastxent.torch: {name} has dtype {t.dtype}, which fastxent does "
                        f"not take ({exc})") from None


def _tensor(loss) -> Tensor:
    """fastxent's loss (a NumPy scalar, or an array for reduction='none') as a tensor."""
    return torch.from_numpy(np.asarray(loss))


def _grad_buffer(input: Tensor, need_grad: bool) -> Tensor:
    """The tensor the forward writes the gradient into: contiguous whatever input's strides
    (fastxent writes it directly; autograd keeps it as input.grad without a copy when input
    is contiguous too), in memory from NumPy's allocator. torch.empty gives large tensors
    fresh pages, whose first-touch faults cost more than the loss itself (512x50257 float32:
    about 85 ms against 14 ms for the whole write, measured here); NumPy's reuses freed
    memory or asks for huge pages."""
    if need_grad:
        return torch.from_numpy(np.empty(input.shape, _NUMPY_DTYPES[input.dtype]))
    return input.new_empty((0,))


def _no_grad_for(t: Optional[Tensor], name: str, fname: str) -> None:
    if isinstance(t, torch.Tensor) and t.requires_grad:
        raise RuntimeError(
            f"fastxent.torch.{fname}: {name} requires grad, but fastxent's fused kernel gives "
            f"the gradient with respect to input only: pass {name}.detach(), or use "
            f"torch.nn.functional.{fname} to differentiate through {name}")


def _reduction(size_average, reduce, reduction: str) -> str:
    """torch.nn.functional's resolution of the deprecated size_average / reduce."""
    if size_average is not None or reduce is not None:
        from torch.nn import _reduction
        return _reduction.legacy_get_string(size_average, reduce)
    return reduction


def _threads() -> int:
    return torch.get_num_threads()


# ------------------------------------------------------------- forwards (loss and grad)
# Each returns (loss, grad): grad is d loss.sum() / d input when need_grad, else an empty
# tensor. The custom ops and the eager autograd.Function both run these.

def _fused(fn: Callable[..., Any], input: Tensor, target: Tensor, need_grad: bool,
           **options: Any) -> Tuple[Tensor, Tensor]:
    """fastxent's loss ``fn`` on ``input`` and ``target`` (and ``options``, tensors among
    them), with the gradient written into a fresh tensor when ``need_grad``."""
    x = _array(input, "input", float_only=True)
    y = _array(target, "target")
    opts = {k: (_array(v, k) if isinstance(v, torch.Tensor) else v) for k, v in options.items()}
    grad = _grad_buffer(input, need_grad)
    if need_grad:
        loss = fn(x, y, return_grad=True, grad_out=grad.numpy(), n_threads=_threads(), **opts)[0]
    else:
        loss = fn(x, y, n_threads=_threads(), **opts)
    return _tensor(loss), grad


def _softmax_forward(input: Tensor, target: Tensor, weight: Optional[Tensor],
                     ignore_index: int, reduction: str, label_smoothing: float,
                     need_grad: bool, logprob_input: bool) -> Tuple[Tensor, Tensor]:
    if logprob_input:
        return _fused(_losses.nll_loss, input, target, need_grad, weight=weight,
                      ignore_index=ignore_index, reduction=reduction)
    return _fused(_losses.cross_entropy, input, target, need_grad, weight=weight,
                  ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)


# ------------------------------------------------------------------------ the backward
class _SecondOrderError(torch.autograd.Function):
    """Identity whose backward raises: what a gradient computed by fastxent passes through
    when autograd records the backward (create_graph=True), so that differentiating it
    again gives this message rather than a number missing the second-order term."""

    @staticmethod
    def forward(ctx, grad: Tensor, input: Tensor) -> Tensor:  # type: ignore[override]
        return grad.view_as(grad)  # input: what the result is recorded as depending on

    @staticmethod
    def backward(ctx, *_):  # type: ignore[override]
        raise RuntimeError(_NO_DOUBLE_BACKWARD)


_NO_DOUBLE_BACKWARD = (
    "fastxent.torch: double backward is not supported: the loss's gradient comes from "
    "fastxent's fused kernel, not from differentiable torch operations; use "
    "torch.nn.functional for second derivatives")


def _scaled_grad(ctx, grad_loss: Tensor) -> Tensor:
    """The gradient saved by the forward, scaled in place by ``grad_loss`` (the incoming
    gradient of the loss: a scalar, or per item for reduction='none', broadcast along the
    class dimension of softmax losses).

    The first backward consumes the saved gradient (autograd may then keep it as
    ``input.grad`` without a copy); a later one through the same graph (retain_graph=True,
    ``gradcheck``) recomputes it from the saved inputs through the custom op (traceable)."""
    grad = ctx.fx_grad
    ctx.fx_grad = None
    if grad is None or grad.numel() != ctx.fx_numel:  # consumed, or need_grad was False
        args = list(ctx.fx_args)
        for i, t in zip(ctx.fx_tensor_args, ctx.saved_tensors):
            args[i] = t
        args[0] = _saved_input(ctx)
        args[-1] = True  # need_grad
        with torch.no_grad():
            grad = ctx.fx_op(*args)[1]
    g = grad_loss
    if g.dim() and ctx.fx_class_dim is not None and g.dim() < grad.dim():
        g = g.unsqueeze(ctx.fx_class_dim)
    if torch.compiler.is_compiling() or type(g) not in _PLAIN_TENSORS:
        # traced (AOTAutograd's functional tensors): out of place, which the partitioner
        # requires (an in-place multiply of a forward output in backward is refused);
        # the compiler plans the memory
        grad = grad * g
    elif g.dim() or g.item() != 1.0:
        grad.mul_(g)
    if torch.is_grad_enabled():  # create_graph=True
        input = ctx.fx_input_ref[0]() if ctx.fx_input_ref else ctx.saved_tensors[0]
        if input is None:  # nothing left to record the error node against: raise now
            raise RuntimeError(_NO_DOUBLE_BACKWARD + " (backward ran with create_graph=True)")
        grad = _SecondOrderError.apply(grad, input)
    return grad


def _save(ctx, op, args: tuple, grad: Tensor, class_dim: Optional[int],
          input_by_weakref: bool = False) -> None:
    """Keep what backward needs: the gradient, and the call (the custom op ``op`` and its
    ``args``) to compute it again for a second backward. The tensors go through
    save_for_backward, except the input (the logits) with ``input_by_weakref``: the eager
    path holds a weak reference to it and its version, so that the gradient is the only
    logits-sized tensor a loss keeps alive until backward (as torch's loss keeps only its
    log-softmax); a second backward then needs the caller to hold the input."""
    input = args[0]
    ctx.fx_grad = grad
    ctx.fx_numel = input.numel()
    ctx.fx_class_dim = class_dim if input.dim() > 1 else None
    ctx.fx_op = op
    ctx.fx_tensor_args = [i for i, a in enumerate(args)
                          if isinstance(a, torch.Tensor) and not (i == 0 and input_by_weakref)]
    ctx.fx_args = [None if isinstance(a, torch.Tensor) else a for a in args]
    ctx.fx_input_ref = (weakref.ref(input), input._version) if input_by_weakref else None
    ctx.save_for_backward(*(args[i] for i in ctx.fx_tensor_args))


def _saved_input(ctx) -> Tensor:
    """The loss's input, for a second backward (see _save)."""
    if ctx.fx_input_ref is None:
        return ctx.saved_tensors[0]
    ref, version = ctx.fx_input_ref
    input = ref()
    if input is None:
        raise RuntimeError(
            "fastxent.torch: a second backward through this loss (retain_graph=True) "
            "computes its gradient again from the loss's input, which is no longer alive: "
            "keep a reference to the input, or compute the loss again")
    if input._version != version:
        raise RuntimeError(
            "fastxent.torch: the loss's input was modified in place after the forward; a "
            "second backward (retain_graph=True) cannot compute the gradient again")
    return input


# ------------------------------------------------------------------------ custom ops
# need_grad is an argument so that evaluation (no grad) skips the gradient; the ops return
# the gradient as a second, non-differentiable output, kept on the autograd context.

def _softmax_fake(input: Tensor, reduction: str, need_grad: bool) -> Tuple[Tensor, Tensor]:
    items = input.shape[:1] + input.shape[2:] if input.dim() > 1 else ()
    loss = input.new_empty(items if reduction == "none" else ())
    return loss, input.new_empty(input.shape if need_grad else (0,))


def _elementwise_fake(input: Tensor, reduction: str, need_grad: bool) -> Tuple[Tensor, Tensor]:
    loss = input.new_empty(input.shape if reduction == "none" else ())
    return loss, input.new_empty(input.shape if need_grad else (0,))


def _register_autograd(op, class_dim: Optional[int]) -> None:
    def setup_context(ctx, inputs, output) -> None:
        ctx.mark_non_differentiable(output[1])
        _save(ctx, op, inputs, output[1], class_dim)

    def backward(ctx, grad_loss, _grad_of_grad):
        return (_scaled_grad(ctx, grad_loss),) + (None,) * (len(ctx.fx_args) - 1)

    op.register_autograd(backward, setup_context=setup_context)


def _custom_op(name: str, impl: Callable):
    """The custom op fastxent::name defined from the Python function ``impl`` (its type
    hints give the schema); it allocates its outputs and changes none of its inputs."""
    return torch.library.custom_op(f"fastxent::{name}", impl, mutates_args=())


def _cross_entropy_impl(input: Tensor, target: Tensor, weight: Optional[Tensor],
                        ignore_index: int, reduction: str, label_smoothing: float,
                        need_grad: bool) -> Tuple[Tensor, Tensor]:
    return _softmax_forward(input, target, weight, ignore_index, reduction, label_smoothing,
                            need_grad, False)


_cross_entropy_op = _custom_op("cross_entropy", _cross_entropy_impl)


@_cross_entropy_op.register_fake
def _(input, target, weight, ignore_index, reduction, label_smoothing, need_grad):
    return _softmax_fake(input, reduction, need_grad)


def _nll_loss_impl(input: Tensor, target: Tensor, weight: Optional[Tensor],
                   ignore_index: int, reduction: str, need_grad: bool) -> Tuple[Tensor, Tensor]:
    return _softmax_forward(input, target, weight, ignore_index, reduction, 0.0, need_grad,
                            True)


_nll_loss_op = _custom_op("nll_loss", _nll_loss_impl)


@_nll_loss_op.register_fake
def _(input, target, weight, ignore_index, reduction, need_grad):
    return _softmax_fake(input, reduction, need_grad)


def _bce_logits_impl(input: Tensor, target: Tensor, weight: Optional[Tensor],
                     pos_weight: Optional[Tensor], reduction: str,
                     need_grad: bool) -> Tuple[Tensor, Tensor]:
    return _fused(_losses.binary_cross_entropy_with_logits, input, target,
                                need_grad, weight=weight, pos_weight=pos_weight,
                                reduction=reduction)


_bce_logits_op = _custom_op("binary_cross_entropy_with_logits", _bce_logits_impl)


@_bce_logits_op.register_fake
def _(input, target, weight, pos_weight, reduction, need_grad):
    return _elementwise_fake(input, reduction, need_grad)


def _bce_impl(input: Tensor, target: Tensor, weight: Optional[Tensor], reduction: str,
              need_grad: bool) -> Tuple[Tensor, Tensor]:
    return _fused(_losses.binary_cross_entropy, input, target, need_grad,
                                weight=weight, reduction=reduction)


_bce_op = _custom_op("binary_cross_entropy", _bce_impl)


@_bce_op.register_fake
def _(input, target, weight, reduction, need_grad):
    return _elementwise_fake(input, reduction, need_grad)


def _kl_div_impl(input: Tensor, target: Tensor, reduction: str, log_target: bool,
                 need_grad: bool) -> Tuple[Tensor, Tensor]:
    return _fused(_losses.kl_div, input, target, need_grad, reduction=reduction,
                                log_target=log_target)


_kl_div_op = _custom_op("kl_div", _kl_div_impl)


@_kl_div_op.register_fake
def _(input, target, reduction, log_target, need_grad):
    return _elementwise_fake(input, reduction, need_grad)


_register_autograd(_cross_entropy_op, 1)
_register_autograd(_nll_loss_op, 1)
_register_autograd(_bce_logits_op, None)
_register_autograd(_bce_op, None)
_register_autograd(_kl_div_op, None)


# ------------------------------------------------------------------ the eager fast path
class _EagerLoss(torch.autograd.Function):
    """The same forward and backward as the custom ops, without the custom-op dispatch:
    ``forward`` gets the op, the Python function it was defined from, its class dimension
    and its arguments (input first)."""

    @staticmethod
    def forward(ctx, op, impl, class_dim, input, *args):  # type: ignore[override]
        loss, grad = impl(input, *args)
        _save(ctx, op, (input,) + args, grad, class_dim, input_by_weakref=True)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):  # type: ignore[override]
        grad = _scaled_grad(ctx, grad_loss)
        return (None, None, None, grad) + (None,) * (len(ctx.fx_args) - 1)


def _run(op, impl: Callable, class_dim: Optional[int], input: Tensor, *args) -> Tensor:
    """The loss of the custom op ``op`` (defined from the function ``impl``) on
    ``(input, *args)``, ``need_grad`` appended: through the plain autograd.Function calling
    ``impl`` on plain tensors in eager mode, through the custom op otherwise
    (torch.compile, export, fake or functional tensors, dispatch modes)."""
    need_grad = input.requires_grad and torch.is_grad_enabled()
    if (not torch.compiler.is_compiling() and type(input) in _PLAIN_TENSORS
            and not torch._C._len_torch_dispatch_stack()):
        if not need_grad:
            return impl(input, *args, False)[0]
        return _EagerLoss.apply(op, impl, class_dim, input, *args, True)
    return op(input, *args, need_grad)[0]


# ------------------------------------------------------------------ functional API
def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                  size_average: Optional[bool] = None, ignore_index: int = -100,
                  reduce: Optional[bool] = None, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """``torch.nn.functional.cross_entropy`` by fastxent's fused kernel (CPU tensors).

    ``input``: logits ``(C,)``, ``(N, C)`` or ``(N, C, d1, ..., dk)``, float32 or float64;
    ``target``: class indices shaped like ``input`` without dimension 1 (int64 or int32,
    read without a copy; any integer dtype), or class probabilities shaped like ``input``.
    Per item, with ``lse = log(sum_c exp(x_c))``, class weights ``w`` and
    ``eps = label_smoothing``::

        indices:       loss = (1-eps) w_t (lse - x_t) + (eps/C) sum_c w_c (lse - x_c)
        probabilities: loss = sum_c w_c ((1-eps) y_c + eps/C) (lse - x_c)

    ``"mean"`` divides by the summed weight of the non-ignored targets (indices) or by the
    number of items (probabilities); NaN over nothing, as PyTorch. Returns a tensor that
    carries autograd with respect to ``input`` (computed in the forward pass; see the module
    docstring); ``target`` and ``weight`` must not require grad.
    """
    _no_grad_for(target, "target", "cross_entropy")
    _no_grad_for(weight, "weight", "cross_entropy")
    return _run(_cross_entropy_op, _cross_entropy_impl, 1, input, target, weight,
                int(ignore_index), _reduction(size_average, reduce, reduction),
                float(label_smoothing))


def nll_loss(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
             size_average: Optional[bool] = None, ignore_index: int = -100,
             reduce: Optional[bool] = None, reduction: str = "mean") -> Tensor:
    """``torch.nn.functional.nll_loss`` by fastxent (CPU tensors): ``input`` holds
    log-probabilities shaped as for :func:`cross_entropy`, ``target`` class indices. Per item
    ``loss = -w_t input[t]``; ``"mean"`` divides by the summed weight of the non-ignored
    targets. The gradient with respect to ``input`` is ``-w_t`` at the target class."""
    _no_grad_for(target, "target", "nll_loss")
    _no_grad_for(weight, "weight", "nll_loss")
    return _run(_nll_loss_op, _nll_loss_impl, 1, input, target, weight, int(ignore_index),
                _reduction(size_average, reduce, reduction))


def binary_cross_entropy_with_logits(input: Tensor, target: Tensor,
                                     weight: Optional[Tensor] = None,
                                     size_average: Optional[bool] = None,
                                     reduce: Optional[bool] = None, reduction: str = "mean",
                                     pos_weight: Optional[Tensor] = None) -> Tensor:
    """``torch.nn.functional.binary_cross_entropy_with_logits`` by fastxent (CPU tensors).

    ``input``: logits of any shape; ``target``: same shape (float, bool or uint8); ``weight``
    broadcasts to the input's shape, ``pos_weight`` along the last dimension. Elementwise
    ``loss = w ((1 - t) x + (1 + (pw - 1) t) softplus(-x))``, gradient
    ``w ((1 + (pw - 1) t) sigmoid(x) - pw t)``. ``target``, ``weight`` and ``pos_weight``
    must not require grad.
    """
    for t, name in ((target, "target"), (weight, "weight"), (pos_weight, "pos_weight")):
        _no_grad_for(t, name, "binary_cross_entropy_with_logits")
    return _run(_bce_logits_op, _bce_logits_impl, None, input, target, weight, pos_weight,
                _reduction(size_average, reduce, reduction))


def binary_cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                         size_average: Optional[bool] = None, reduce: Optional[bool] = None,
                         reduction: str = "mean") -> Tensor:
    """``torch.nn.functional.binary_cross_entropy`` by fastxent (CPU tensors): ``input``
    holds probabilities in [0, 1] (ValueError otherwise), ``target`` the same shape.
    ``loss = -w (t max(log p, -100) + (1 - t) max(log(1 - p), -100))``, gradient
    ``w (p - t) / max(p (1 - p), 1e-12)``, as PyTorch."""
    _no_grad_for(target, "target", "binary_cross_entropy")
    _no_grad_for(weight, "weight", "binary_cross_entropy")
    return _run(_bce_op, _bce_impl, None, input, target, weight,
                _reduction(size_average, reduce, reduction))


def kl_div(input: Tensor, target: Tensor, size_average: Optional[bool] = None,
           reduce: Optional[bool] = None, reduction: str = "mean",
           log_target: bool = False) -> Tensor:
    """``torch.nn.functional.kl_div`` by fastxent (CPU tensors): ``input`` holds
    log-probabilities ``log q``, ``target`` probabilities ``p`` (``log p`` with
    ``log_target=True``). Elementwise ``loss = p (log p - log q)``; reductions ``"none"``,
    ``"sum"``, ``"mean"`` (over all elements) and ``"batchmean"`` (sum / input.size(0)).
    The gradient with respect to ``input`` is ``-p`` times the reduction's scale."""
    _no_grad_for(target, "target", "kl_div")
    return _run(_kl_div_op, _kl_div_impl, None, input, target,
                _reduction(size_average, reduce, reduction), bool(log_target))


# ------------------------------------------------------------------------ modules
# Subclasses of torch.nn's loss modules: the same constructor arguments, attributes,
# buffers (weight, pos_weight) and state_dict; only forward differs.

class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` computed by :func:`cross_entropy`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cross_entropy(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(torch.nn.NLLLoss):
    """``torch.nn.NLLLoss`` computed by :func:`nll_loss`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                        reduction=self.reduction)


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    """``torch.nn.BCEWithLogitsLoss`` computed by :func:`binary_cross_entropy_with_logits`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(input, target, self.weight,
                                                pos_weight=self.pos_weight,
                                                reduction=self.reduction)


class BCELoss(torch.nn.BCELoss):
    """``torch.nn.BCELoss`` computed by :func:`binary_cross_entropy`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(input, target, weight=self.weight, reduction=self.reduction)


class KLDivLoss(torch.nn.KLDivLoss):
    """``torch.nn.KLDivLoss`` computed by :func:`kl_div`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return kl_div(input, target, reduction=self.reduction, log_target=self.log_target)
