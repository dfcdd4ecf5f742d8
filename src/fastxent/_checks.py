"""Argument checking and buffer preparation shared by every public function.

Everything that can be wrong with an argument is found here, before a kernel runs and
before any output is written; the kernels in _core trust what they are given.
"""
from __future__ import annotations

import operator
from typing import Optional, Tuple

import numpy as np

FLOAT_TYPES = (np.float32, np.float64)
REDUCTIONS = ("none", "mean", "sum")
INPUT_DTYPES = "float32, float64, float16 or bfloat16"


def is_bfloat16(dt: np.dtype) -> bool:
    """``dt`` is ml_dtypes' bfloat16 (the NumPy bfloat16 of JAX and ONNX), recognised by its
    dtype object. ml_dtypes (optional) is imported only for a dtype NumPy does not define
    itself (``isbuiltin == 2``), never by ``import fastxent``; the type number of such a
    dtype is assigned at run time, so it is never compared."""
    if dt.isbuiltin != 2:
        return False
    try:
        import ml_dtypes
    except ImportError:
        return False
    return dt == np.dtype(ml_dtypes.bfloat16)


def is_half(dt: np.dtype) -> bool:
    """float16 or bfloat16: read by the half-precision kernels (computed in float32)."""
    return dt.type is np.float16 or is_bfloat16(dt)


def is_float_dtype(dt: np.dtype) -> bool:
    """A dtype the kernels take as input: float32, float64, float16 or bfloat16."""
    return dt.type in FLOAT_TYPES or is_half(dt)


def loss_dtype(dt: np.dtype) -> np.dtype:
    """The dtype of a loss (and of the class / BCE weights the kernels read) for input
    dtype ``dt``: float32 for a half input (computed in float32), else ``dt``."""
    return np.dtype(np.float32) if is_half(dt) else dt


def kernel_view(a):
    """``a`` as the compiled core takes it: a bfloat16 array as a uint16 view of the same
    memory (what _core recognises bfloat16 by), anything else unchanged."""
    if isinstance(a, np.ndarray) and is_bfloat16(a.dtype):
        return a.view(np.uint16)
    return a


def widened_for_float32_out(x: np.ndarray, out) -> bool:
    """A half input whose caller gave a float32 output (``grad_out=`` / ``out=``): the
    unrounded result, from the float32 kernels on the widened input (the values the half
    kernels compute on: the same float32 arithmetic, without the final rounding)."""
    return (is_half(x.dtype) and isinstance(out, np.ndarray)
            and out.dtype.type is np.float32)


def type_name(x) -> str:
    """The type of ``x`` as its user would write it: 'list', 'numpy.ndarray', 'torch.Tensor'."""
    t = type(x)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


def is_torch_tensor(x) -> bool:
    """``x`` is a torch tensor (or a subclass, e.g. ``nn.Parameter``): recognised by its
    type's module, so that torch is never imported here."""
    return type(x).__module__.partition(".")[0] == "torch" and hasattr(x, "detach")


def torch_advice(x, name: str, to_float: bool = False) -> str:
    """What the torch tensor ``x``, passed as ``name``, is, and the expression that makes it
    a NumPy array fastxent takes (``to_float``: a float32/float64/float16 one; a bfloat16
    tensor's numpy() fails in torch, so it is told float())."""
    steps, traits = [], []
    requires_grad = bool(getattr(x, "requires_grad", False))
    if requires_grad:
        steps.append("detach()")
        traits.append("that requires grad")
    device = getattr(x, "device", None)
    if device is not None and getattr(device, "type", "cpu") != "cpu":
        steps.append("cpu()")
        traits.append(f"on {device}")
    dtype = str(getattr(x, "dtype", ""))
    if to_float and dtype not in ("torch.float32", "torch.float64", "torch.float16"):
        steps.append("float()")
        traits.append(f"of dtype {dtype}")
    steps.append("numpy()")
    msg = (f"{name} is a {type_name(x)}{' ' + ', '.join(traits) if traits else ''}; fastxent "
           f"computes on NumPy arrays: pass {name}.{'.'.join(steps)}")
    if "cpu()" not in steps and "float()" not in steps:
        msg += " (a view of the tensor's memory, no copy)"
    if requires_grad and name == "input":  # the logits of a loss
        msg += (", and take the gradient from return_grad=True (or use fastxent.torch, whose "
                "losses take tensors and carry autograd)")
    return msg


def as_array(x, name: str, what: str, to_float: bool = False) -> np.ndarray:
    """``x`` as an ndarray (``np.asarray``); a TypeError naming ``x``'s type and the fix
    when that fails (a torch tensor that requires grad or is not on the CPU, a ragged
    list). ``what``: what the argument must hold, for the message; ``to_float``: the
    argument must be float32/float64 (the fix for a torch tensor then casts it too)."""
    if isinstance(x, np.ndarray):
        return x
    try:
        return np.asarray(x)
    except Exception as exc:  # e.g. ragged lists, torch tensors that require grad
        if is_torch_tensor(x):
            msg = torch_advice(x, name, to_float)
        else:
            msg = f"{name} must be an array of {what}, got {type_name(x)} ({exc})"
        raise TypeError(msg) from exc


def cast_hint(x: np.ndarray, original, name: str) -> str:
    """How to make ``original`` (which became the array ``x``, of a dtype fastxent does not
    compute in) float: suited to what it is (a torch tensor, an ndarray, a list ...)."""
    if x.dtype.kind not in "biuf":
        return ""
    if is_torch_tensor(original):
        return f"; {torch_advice(original, name, to_float=True)}"
    want = "np.float64" if x.dtype.kind == "f" and x.dtype.itemsize > 8 else "np.float32"
    if isinstance(original, np.ndarray):
        return f" (cast it: {name}.astype({want}))"
    return f" (from a {type_name(original)}; convert it: np.asarray({name}, dtype={want}))"


def float_input(x, name: str = "input") -> np.ndarray:
    """x as a float32/float64/float16/bfloat16 ndarray (not yet contiguous); TypeError
    otherwise, naming x's type and the fix for it."""
    a = as_array(x, name, INPUT_DTYPES, to_float=True)
    if not is_float_dtype(a.dtype):
        raise TypeError(f"{name} must be {INPUT_DTYPES}, got dtype {a.dtype}"
                        + cast_hint(a, x, name))
    return a


def kernel_ready(a: np.ndarray, dtype=None) -> np.ndarray:
    """C-contiguous, aligned, native byte order (a copy only when needed)."""
    if dtype is None:
        dt = a.dtype
        if not dt.isnative:
            dt = dt.newbyteorder("=")
    else:
        dt = np.dtype(dtype)
    f = a.flags
    if a.dtype == dt and f.c_contiguous and f.aligned:
        return a
    return np.require(a, dtype=dt, requirements=["C", "A"])


def check_reduction(reduction: str, allowed=REDUCTIONS) -> str:
    if not isinstance(reduction, str) or reduction not in allowed:
        raise ValueError(f"reduction must be one of {', '.join(map(repr, allowed))}, got {reduction!r}")
    return reduction


def check_threads(n_threads) -> Optional[int]:
    if n_threads is None:
        return None
    try:
        n = operator.index(n_threads)
    except TypeError:
        raise TypeError(f"n_threads must be None or a positive int, got {n_threads!r}") from None
    if not 1 <= n <= 2**31 - 1:
        raise ValueError(f"n_threads must be None or a positive int (at most 2**31 - 1), got {n}")
    return n


def check_int(value, name: str) -> int:
    """``value`` as a Python int (``operator.index``: an int or NumPy integer, not a float
    or bool-like string); TypeError otherwise."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {value!r}") from None


def snapshot(a):
    """An array object of our own viewing the same memory as the ndarray ``a`` (anything
    else is returned as it is). The caller's code can change its own array object in place
    (``a.dtype = np.float64``, ``a.shape = ...``) while fastxent converts another argument
    (an ``__array__``, ``__index__`` or ``__float__`` of theirs); it cannot change this one.
    So every public function converts all its arguments first, then takes snapshots, and
    reads every dtype, shape, stride and pointer the kernel uses from the snapshots only."""
    return a.view() if isinstance(a, np.ndarray) else a


def normalize_axis(axis, ndim: int, name: str = "axis") -> int:
    a = check_int(axis, name)
    if not -ndim <= a < ndim:
        raise ValueError(f"{name}={a} is out of range for an input with {ndim} dimension(s)")
    return a % ndim


def output_array(out, shape: Tuple[int, ...], dtype, name: str) -> Optional[np.ndarray]:
    """Validate a caller-supplied output buffer; ValueError before anything is written."""
    if out is None:
        return None
    if not isinstance(out, np.ndarray):
        hint = f"; {torch_advice(out, name)}" if is_torch_tensor(out) else ""
        raise ValueError(f"{name} must be a numpy.ndarray, got {type_name(out)}{hint}")
    if out.shape != tuple(shape):
        raise ValueError(f"{name} has shape {out.shape}, expected {tuple(shape)}")
    if out.dtype.type is not np.dtype(dtype).type:  # either byte order is fine
        raise ValueError(f"{name} has dtype {out.dtype}, expected {np.dtype(dtype)}")
    if not out.flags.writeable:
        raise ValueError(f"{name} is not writable")
    if not out.flags.c_contiguous and not out.flags.f_contiguous and overlaps_itself(out):
        raise ValueError(
            f"{name} has elements that share memory (strides {out.strides} for shape "
            f"{out.shape}): every element of an output needs its own memory"
        )
    return out


def overlaps_itself(a: np.ndarray) -> bool:
    """Whether two elements of `a` may share memory: True when its axes, ordered by
    |stride|, do not each step past everything the smaller ones span (a zero stride, a
    sliding window). Exact for every layout NumPy's slicing and transposing make; an
    interleaving crafted with as_strided that never collides also counts as overlapping
    (refused rather than risked)."""
    span = a.itemsize          # bytes covered by the axes with smaller strides
    for size, stride in sorted(((n, abs(s)) for n, s in zip(a.shape, a.strides) if n > 1),
                               key=lambda p: p[1]):
        if stride < span:
            return True
        span = stride * (size - 1) + span
    return False


def same_buffer(a: np.ndarray, b: np.ndarray) -> bool:
    """a and b view exactly the same elements in the same layout."""
    return (
        a.shape == b.shape
        and a.dtype == b.dtype
        and a.strides == b.strides
        and a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
    )


def write_target(out: Optional[np.ndarray], shape, dtype, input: np.ndarray, *reads):
    """Where a kernel should write an output, and the caller's buffer to copy it to after.

    Returns (buffer, copy_to): the kernel writes `buffer` (C-contiguous, native); when
    the caller's `out` cannot be written directly (non-contiguous, misaligned, byte-
    swapped, partly overlapping `input`, or overlapping any of the other arrays the
    kernel reads: targets, weights), `buffer` is a fresh array and `copy_to` is `out`.
    Writing over `input` itself, the exact same buffer, is allowed: the kernels read
    each input element before they write its output."""
    if out is None:
        return np.empty(shape, dtype=dtype), None
    direct = out.flags.c_contiguous and out.flags.aligned and out.dtype.isnative
    if direct and np.may_share_memory(out, input) and not same_buffer(out, input):
        direct = False
    if direct:
        for r in reads:
            if isinstance(r, np.ndarray) and np.may_share_memory(out, r):
                direct = False
                break
    if direct:
        return out, None
    return np.empty(shape, dtype=dtype), out


def copy_back(buffer: np.ndarray, copy_to: Optional[np.ndarray], caller_out=None) -> np.ndarray:
    """The array a call returns: `buffer` (copied first into `copy_to`, from write_target,
    when that is where it belongs), or the caller's own output object `caller_out` when
    one was given: the kernel wrote through a snapshot of it (see snapshot)."""
    if copy_to is not None:
        np.copyto(copy_to, buffer)
        buffer = copy_to
    return buffer if caller_out is None else caller_out


def real_param(p, name: str) -> np.ndarray:
    """A weight-like argument as an ndarray of real numbers (bool, int or float; any
    sequence or scalar); TypeError for complex, object or string values."""
    a = as_array(p, name, "real numbers")
    if a.dtype.kind not in "biuf":
        raise TypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    return a


def class_weight(weight, C: int, dtype) -> Tuple[Optional[np.ndarray], Optional[np.ndarray], float]:
    """(weight in the input dtype, the same as float64, its sum) for a (C,) weight."""
    if weight is None:
        return None, None, float(C)
    w = real_param(weight, "weight")
    if w.shape != (C,):
        raise ValueError(f"weight must have shape ({C},) for {C} classes, got {w.shape}")
    wk = kernel_ready(w, dtype)
    w64 = wk.astype(np.float64)
    return wk, w64, float(w64.sum())
