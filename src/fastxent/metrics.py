"""Evaluation metrics from logits, all from one pass over them (issue 16).

``fastxent.metrics`` takes **logits**, always (it never guesses whether an input holds
probabilities), with the class axis -1 by default (``axis=`` moves it, at the cost of a
copy when it is not last). Per item, one pass of the kernel ``kernels/fx_metrics.h``
gives, from ``M = max_j x_j`` and ``S = sum_j exp(x_j - M)``:

* ``nll = log S + (M - x_t)``, the cross-entropy of the item (the same formula as
  ``cross_entropy``);
* ``conf = 1 / S``, the top-1 softmax probability;
* ``argmax``, the first index of the largest logit (the first NaN if the row has one:
  NumPy's and PyTorch's CPU rule);
* ``above``, the number of classes ranked above the target in scikit-learn's
  ``top_k_accuracy_score`` order: a larger logit ranks higher; of **equal** logits the
  **higher class index** ranks higher (scikit-learn sorts with a stable ascending sort and
  reverses it); NaN ranks above every number. The target is in the top k iff
  ``above < k``.

Every metric is then a sum over items of these, kept in :class:`MetricsAccumulator`, whose
state is mergeable partial sums (``update`` / ``merge`` / ``compute``). Sums of floats are
kept exactly (as non-overlapping float64 partials, Shewchuk's algorithm), so merging
accumulators in any order or grouping gives the same bits; a batch's own sum is NumPy's
over that batch, so a metric over batches equals the one-shot metric over the
concatenated data to rounding, and bit for bit when the batches are the same.

The one-shot functions (``log_loss``, ``perplexity``, ``accuracy``, ``calibration_error``,
``evaluate``) are one accumulator updated once.

Targets are class indices ``0..C-1`` of any integer dtype (``ignore_index`` dropped)
except in :func:`log_loss`, which takes scikit-learn's labels.

Logits may be float32, float64, float16 or bfloat16. Half-precision logits are widened to
float32 a block of rows at a time (every half value is exactly a float32 one), so their
metrics are those of the same values in float32, except the log loss's clipping, which
uses the half dtype's epsilon as scikit-learn does for probabilities of that dtype.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, asdict
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from ._checks import (
    as_array,
    check_int,
    check_threads,
    float_input,
    is_half,
    kernel_ready,
    normalize_axis,
    real_param,
)
from ._types import ArrayLike

__all__ = [
    "log_loss",
    "perplexity",
    "accuracy",
    "calibration_error",
    "evaluate",
    "EvalResult",
    "MetricsAccumulator",
]

NORMS = ("l1", "l2", "max")

# the layout of the kernel's sums and counts (kernels/fx_api.h, FX_MS_* and FX_MC_*)
_MS_NLL, _MS_NLL_WEIGHT, _MS_CLIPPED, _MS_HITS, _MS_ITEM_WEIGHT = range(5)
_MS_BINS = _core.METRICS_SUMS_BINS
_MC_KEPT, _MC_HITS, _MC_BAD = range(3)
_MC_BINS = _core.METRICS_COUNTS_BINS
assert (_MS_BINS, _MC_BINS) == (5, 3), "metrics.py's layout differs from fx_api.h's"


_LOG_MAX_FLOAT = math.log(np.finfo(np.float64).max)     # exp above it overflows

# ------------------------------------------------------------------ exact sums
class _ExactSum:
    """An exact running sum of float64 arrays of one shape: ``parts``, float64 arrays
    whose elementwise sum is exactly the sum of everything added (each add is an
    error-free two-sum against every part, Shewchuk's "grow expansion"), so the total
    (``value``, rounded once by ``math.fsum``) does not depend on the order or grouping
    of the adds and merges. Non-finite addends (inf, NaN) are summed apart, in
    ``special``: their sum (inf, -inf or NaN) does not depend on the order either."""

    def __init__(self, shape: Tuple[int, ...] = ()):
        self.shape = shape
        self.parts: List[np.ndarray] = []
        self.special = np.zeros(shape)

    def add(self, v) -> None:
        v = np.array(v, dtype=np.float64).reshape(self.shape)
        finite = np.isfinite(v)
        if not finite.all():
            self.special = self.special + np.where(finite, 0.0, v)
            v = np.where(finite, v, 0.0)
        kept = []
        for p in self.parts:
            hi = p + v
            b = hi - v                           # Knuth's two-sum: p + v == hi + lo exactly
            lo = (p - b) + (v - (hi - b))
            if lo.any():
                kept.append(lo)
            v = hi
        if v.any():
            kept.append(v)
        self.parts = kept

    def merge(self, other: "_ExactSum") -> None:
        for p in other.parts:
            self.add(p)
        self.special = self.special + other.special

    def value(self) -> np.ndarray:
        cols = [np.ravel(p) for p in self.parts]
        n = int(np.prod(self.shape, dtype=np.int64))
        exact = np.array([math.fsum(c[i] for c in cols) for i in range(n)],
                         dtype=np.float64).reshape(self.shape)
        return exact + self.special

    def copy(self) -> "_ExactSum":
        c = _ExactSum(self.shape)
        c.parts = [p.copy() for p in self.parts]
        c.special = self.special.copy()
        return c


# ------------------------------------------------------------------ checks
_MAX_CLASSES = 2**31 - 64       # fx_metrics.h's rank pass: indices in int32 lanes

def _prob_eps(dtype: np.dtype) -> float:
    """scikit-learn's clipping epsilon: the machine epsilon of the probabilities' dtype,
    which is the logits' dtype (softmax keeps it)."""
    try:
        return float(np.finfo(dtype).eps)
    except ValueError:                      # an ml_dtypes type (bfloat16)
        import ml_dtypes

        return float(ml_dtypes.finfo(dtype).eps)


def _clip_of(dtype: np.dtype) -> Tuple[float, float]:
    """scikit-learn's log loss clips p_t to [eps, 1 - eps], eps the probabilities'
    machine epsilon: the nll to [-log(1 - eps), -log(eps)]."""
    eps = _prob_eps(dtype)
    return -math.log1p(-eps), -math.log(eps)


def _bin_edges(n_bins: int) -> np.ndarray:
    """torchmetrics' calibration bins: an item's bin is ``bucketize(conf, edges,
    right=True) - 1`` with ``edges = torch.linspace(0, 1, n_bins + 1)`` in float32 and
    ``conf`` the float32 top-1 probability, so ``conf == 1`` (any probability within
    float32's rounding of 1) has a bin of its own, bin ``n_bins``. The edges are
    PyTorch's float32 linspace values: a float32 step ``1 / n_bins``, ``i * step`` for
    ``i < (n_bins + 1) // 2``, else ``1 - (n_bins - i) * step``, each computed in
    float64 and rounded to float32 (tests/test_metrics.py checks them against torch)."""
    steps = n_bins + 1
    step = float(np.float32(1.0) / np.float32(n_bins))
    i = np.arange(steps, dtype=np.float64)
    edges = np.where(i < steps // 2, i * step, 1.0 - (n_bins - i) * step)
    return edges.astype(np.float32)


def _check_ignore_index(ignore_index) -> int:
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an int, got {ignore_index!r}")
    ignore_index = int(ignore_index)
    if not -2**63 <= ignore_index < 2**63:
        raise ValueError(f"ignore_index must fit in int64, got {ignore_index}")
    return ignore_index


def _check_positive(value, name: str) -> int:
    v = check_int(value, name)
    if v < 1:
        raise ValueError(f"{name} must be a positive int, got {v}")
    return v


def _rows(logits, target, axis, ignore_index: int, fname: str):
    """logits as a C-contiguous (rows, C) float array with the class axis last, the
    targets as (rows,) integers; (x2d, labels, item_shape). The labels' values are not
    checked here: the kernel counts those that are neither a class nor ignore_index
    (FX_MC_BAD) in its pass, and _raise_bad_label names the first one."""
    x = float_input(logits, "logits")
    axis = check_int(axis, "axis")
    t = as_array(target, "target", "class indices")
    x, t = x.view(), t.view()
    if x.ndim == 0:
        raise ValueError(f"{fname}: logits must have at least 1 dimension (the class axis), "
                         "got a scalar")
    ax = normalize_axis(axis, x.ndim)
    C = x.shape[ax]
    if C == 0:
        raise ValueError(f"{fname}: the class axis of logits has length 0")
    if C >= _MAX_CLASSES:
        raise ValueError(f"{fname}: at most {_MAX_CLASSES - 1} classes (the kernel keeps "
                         f"class indices in int32 lanes), got {C}")
    if t.dtype.kind not in "iu":
        raise TypeError(f"{fname}: target must hold integer class indices, got dtype {t.dtype}")
    item_shape = x.shape[:ax] + x.shape[ax + 1:]
    if t.shape != item_shape:
        raise ValueError(f"{fname}: target shape {t.shape} does not match logits shape "
                         f"{x.shape}: targets must have shape {item_shape} (logits without "
                         f"the class axis {ax})")
    moved = np.moveaxis(x, ax, -1) if ax != x.ndim - 1 else x
    # half-precision logits stay as they are: _metrics_blocks widens them block by block
    xk = (np.ascontiguousarray(moved) if is_half(x.dtype) else kernel_ready(moved)).reshape(-1, C)
    labels = kernel_ready(t).reshape(-1)
    return xk, labels, item_shape


# float32 bytes of half-precision logits widened at a time (a block in L2/L3)
_HALF_BLOCK_BYTES = 1 << 22


def _metrics_blocks(xk: np.ndarray, labels: np.ndarray, sample_weight, **kw):
    """``_core.metrics_rows`` over xk (rows, C), as a list of (sums, counts), one per
    call. The metrics kernels read float32 and float64: float16 / bfloat16 logits are
    widened to float32 a block of rows at a time (exactly: every half value is a float32
    one), so their metrics are those of the same values in float32, for an extra copy of
    one block, not of the array."""
    if not is_half(xk.dtype):
        return [_core.metrics_rows(xk, labels, sample_weight=sample_weight, **kw)]
    n, C = xk.shape
    step = max(1, _HALF_BLOCK_BYTES // (4 * max(C, 1)))
    out = []
    for r in range(0, n, step):
        sw = None if sample_weight is None else sample_weight[r:r + step]
        out.append(_core.metrics_rows(xk[r:r + step].astype(np.float32), labels[r:r + step],
                                      sample_weight=sw, **kw))
    return out


def _raise_bad_label(labels: np.ndarray, C: int, ignore_index: int, shape, fname: str):
    """The IndexError for the first label that is neither in [0, C) nor ignore_index
    (called after the kernel counted at least one)."""
    pos, _, _ = _core.check_labels(labels, classes=C, ignore_index=ignore_index, weight64=None)
    where = np.unravel_index(pos, shape) if len(shape) else ()
    raise IndexError(f"{fname}: target {labels[pos]} at position "
                     f"{tuple(int(i) for i in where)} is out of range for {C} classes "
                     f"(valid: 0..{C - 1}, or ignore_index={ignore_index})")


def _item_weights(sample_weight, n: int, shape, fname: str) -> Optional[np.ndarray]:
    if sample_weight is None:
        return None
    w = real_param(sample_weight, "sample_weight").astype(np.float64, copy=False)
    if w.shape != tuple(shape) and not (w.ndim == 1 and w.size == n):
        raise ValueError(f"{fname}: sample_weight must have one weight per item, shape "
                         f"{tuple(shape)}, got {w.shape}")
    return np.ascontiguousarray(w).reshape(-1)


# ------------------------------------------------------------------ the accumulator
@dataclass(frozen=True)
class EvalResult:
    """The metrics of :func:`evaluate` / :meth:`MetricsAccumulator.compute`, over the
    ``n_kept`` items whose target is not ``ignore_index`` (of ``n_items``):

    * ``cross_entropy``: the mean NLL, ``sum_i w_{t_i} nll_i / sum_i w_{t_i}`` (``w`` the
      class weights, 1 without; ``cross_entropy(..., reduction="mean")``);
    * ``perplexity``: ``exp(cross_entropy)``;
    * ``log_loss``: scikit-learn's ``log_loss(t, softmax(x), labels=range(C),
      sample_weight=...)``: the NLL clipped to ``[-log(1 - eps), -log(eps)]``, ``eps`` the
      machine epsilon of the logits' dtype, averaged with the sample weights;
    * ``accuracy``: scikit-learn's ``top_k_accuracy_score`` (``top_k``; ties: see the
      module), averaged with the sample weights;
    * ``ece``, ``rmsce``, ``mce``: the calibration error of the top-1 confidence in norms
      l1, l2 and max, torchmetrics' ``MulticlassCalibrationError`` binning (``n_bins``).
    A mean over no item is NaN.
    """

    n_items: int
    n_kept: int
    cross_entropy: float
    perplexity: float
    log_loss: float
    accuracy: float
    top_k: int
    ece: float
    rmsce: float
    mce: float
    n_bins: int

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def _mean(total, weight) -> float:
    return float(total) / float(weight) if weight != 0 else math.nan


class MetricsAccumulator:
    """Streaming evaluation: ``update(logits, target)`` per batch, ``merge(other)`` to
    combine accumulators (threads, processes, Dask blocks), ``compute()`` for an
    :class:`EvalResult`. The state is partial sums only (counts, exact float sums, the
    calibration bins' counts and sums), so accumulators merge in any order with the same
    bits (see the module's docstring).

    All updates of one accumulator (and all merged ones) must have the same number of
    classes, options and logits dtype (the log-loss clipping depends on it).
    ``weight``: (C,) class weights of the cross-entropy / perplexity (PyTorch's
    ``weight``); per-item ``sample_weight`` of ``update`` weighs the log loss and the
    accuracy (scikit-learn's).
    """

    def __init__(self, *, top_k: int = 1, n_bins: int = 15, ignore_index: int = -100,
                 weight: Optional[ArrayLike] = None, axis: int = -1,
                 n_threads: Optional[int] = None):
        self.top_k = _check_positive(top_k, "top_k")
        self.n_bins = _check_positive(n_bins, "n_bins")
        self.ignore_index = _check_ignore_index(ignore_index)
        self.axis = check_int(axis, "axis")
        self.n_threads = check_threads(n_threads)
        self.weight = None if weight is None else np.ascontiguousarray(
            real_param(weight, "weight"), dtype=np.float64)
        if self.weight is not None and self.weight.ndim != 1:
            raise ValueError(f"weight must be 1-D (one weight per class), got shape "
                             f"{self.weight.shape}")
        self._edges = _bin_edges(self.n_bins)
        self.classes: Optional[int] = None
        self.dtype: Optional[np.dtype] = None
        self.n_items = 0
        nb = self.n_bins + 1
        # the kernel's sums and counts (layout: fx_api.h, FX_MS_* / FX_MC_*), the float
        # sums kept exactly
        self.sums = _ExactSum((_MS_BINS + nb,))
        self.counts = np.zeros(_MC_BINS + 2 * nb, dtype=np.int64)

    # ---------------------------------------------------------- state
    def _options(self):
        w = None if self.weight is None else self.weight.tobytes()
        return (self.top_k, self.n_bins, self.ignore_index, w)

    def _check_compatible(self, classes: int, dtype: np.dtype) -> None:
        if self.classes is not None and classes != self.classes:
            raise ValueError(f"this accumulator holds items of {self.classes} classes, got "
                             f"{classes}")
        if self.dtype is not None and dtype != self.dtype:
            raise ValueError(f"this accumulator holds {self.dtype} logits (its log-loss "
                             f"clipping depends on the dtype), got {dtype}")
        if self.weight is not None and self.weight.shape != (classes,):
            raise ValueError(f"weight has shape {self.weight.shape}, logits have {classes} "
                             "classes")

    def update(self, logits: ArrayLike, target: ArrayLike, *,
               sample_weight: Optional[ArrayLike] = None) -> "MetricsAccumulator":
        """Add a batch: logits (..., C) (class axis ``axis``), target (...) class indices
        of any integer dtype; sample_weight (...) per item or None. Returns self."""
        xk, labels, shape = _rows(logits, target, self.axis, self.ignore_index, "update")
        sw = _item_weights(sample_weight, labels.size, shape, "update")
        n, C = xk.shape
        dtype = np.dtype(xk.dtype)
        self._check_compatible(C, dtype)
        clip_lo, clip_hi = _clip_of(dtype)
        results = _metrics_blocks(
            xk, labels, sw, ignore_index=self.ignore_index, class_weight=self.weight,
            top_k=self.top_k, clip_lo=clip_lo, clip_hi=clip_hi,
            edges=self._edges, n_threads=self.n_threads)
        if any(counts[_MC_BAD] for _, counts in results):
            _raise_bad_label(labels, C, self.ignore_index, shape, "update")
        # nothing above changed the state: a failed update leaves the accumulator as it was
        self.classes, self.dtype = C, dtype
        self.n_items += n
        for sums, counts in results:
            self.sums.add(sums)
            self.counts += counts
        return self

    @property
    def _clip(self) -> Tuple[float, float]:
        """scikit-learn's log loss clips p_t to [eps, 1 - eps], eps the probabilities'
        machine epsilon: the nll to [-log(1 - eps), -log(eps)]."""
        if self.dtype is None:
            raise ValueError("the accumulator has no data yet: its logits dtype is unknown")
        return _clip_of(self.dtype)

    def merge(self, other: "MetricsAccumulator") -> "MetricsAccumulator":
        """Add another accumulator's state (same options); returns self."""
        if not isinstance(other, MetricsAccumulator):
            raise TypeError(f"merge takes a MetricsAccumulator, got {type(other).__name__}")
        if other._options() != self._options():
            raise ValueError("merge: the accumulators have different options (top_k, "
                             "n_bins, ignore_index, weight)")
        if other.classes is not None and other.dtype is not None:
            self._check_compatible(other.classes, other.dtype)
            self.classes, self.dtype = other.classes, other.dtype
        self.n_items += other.n_items
        self.sums.merge(other.sums)
        self.counts += other.counts
        return self

    # ---------------------------------------------------------- results
    def calibration(self) -> Tuple[float, float, float]:
        """(l1, l2, max) calibration errors, torchmetrics' formulas: per bin b with
        n_b items, accuracy a_b and mean confidence c_b, and p_b = n_b / n:
        l1 = sum_b p_b |a_b - c_b|, l2 = sqrt(sum_b p_b (a_b - c_b)^2),
        max = max_b |a_b - c_b| (over all bins; an empty bin counts 0)."""
        nb = self.n_bins + 1
        count = self.counts[_MC_BINS:_MC_BINS + nb].astype(np.float64)
        correct = self.counts[_MC_BINS + nb:]
        total = count.sum()
        if total == 0:
            return math.nan, math.nan, math.nan
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = np.nan_to_num(correct / count)
            conf = np.nan_to_num(self.sums.value()[_MS_BINS:] / count)
        gap = np.abs(acc - conf)
        prop = count / total
        l1 = float(np.sum(gap * prop))
        l2 = float(np.sum(gap**2 * prop))
        return l1, math.sqrt(l2) if l2 > 0 else 0.0, float(np.max(gap))

    @property
    def n_kept(self) -> int:
        return int(self.counts[_MC_KEPT])

    def compute(self) -> EvalResult:
        s = self.sums.value()
        ce = _mean(s[_MS_NLL], s[_MS_NLL_WEIGHT])
        ece, rmsce, mce = self.calibration()
        return EvalResult(
            n_items=self.n_items,
            n_kept=self.n_kept,
            cross_entropy=ce,
            perplexity=math.exp(ce) if ce <= _LOG_MAX_FLOAT else ce * math.inf,  # inf, NaN
            log_loss=_mean(s[_MS_CLIPPED], s[_MS_ITEM_WEIGHT]),
            accuracy=_mean(s[_MS_HITS], s[_MS_ITEM_WEIGHT]),
            top_k=self.top_k,
            ece=ece,
            rmsce=rmsce,
            mce=mce,
            n_bins=self.n_bins,
        )

    def copy(self) -> "MetricsAccumulator":
        c = MetricsAccumulator.__new__(MetricsAccumulator)
        c.__dict__.update(self.__dict__)
        c.sums = self.sums.copy()
        c.counts = self.counts.copy()
        return c


def _encode_labels(y: np.ndarray, labels) -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's label handling of log_loss: the classes, ``np.unique(labels)`` or
    ``np.unique(y)`` (LabelBinarizer's order), at least two, ``y`` holding none outside
    them; and y's class indices into them (int64). Small non-negative integer labels take
    a counting path (a bincount and a table, not a sort of y)."""
    y_int = y.dtype.kind in "iu" and y.size > 0
    lo = int(y.min()) if y_int else 0
    hi = int(y.max()) if y_int else 0
    if labels is not None:
        classes = np.unique(np.asarray(labels))
    if y_int and lo >= 0 and hi < max(4 * y.size, 1 << 16):
        if labels is None:
            classes = np.flatnonzero(np.bincount(y, minlength=hi + 1))
        if (classes.dtype.kind in "iu" and classes.size and classes[0] >= 0
                and classes[-1] < max(4 * y.size, 1 << 16)):
            size = max(hi, int(classes[-1])) + 1
            table = np.full(size, -1, dtype=np.int64)
            table[classes] = np.arange(classes.size)
            identity = np.array_equal(classes, np.arange(size))
            t = y.astype(np.int64, copy=False) if identity else table[y]
            bad = None if identity else t < 0              # y in [0, size) already
            if bad is not None and bad.any():
                raise ValueError(f"log_loss: y_true contains values {np.unique(y[bad]).tolist()} "
                                 f"not in labels {classes.tolist()}")
            return _check_two(classes), t
    if labels is None:
        classes = np.unique(y)
    t = np.searchsorted(classes, y)
    missing = (t >= classes.size) | (classes[np.minimum(t, classes.size - 1)] != y)
    if missing.any():
        raise ValueError(f"log_loss: y_true contains values {np.unique(y[missing]).tolist()} "
                         f"not in labels {classes.tolist()}")
    return _check_two(classes), t.astype(np.int64)


def _check_two(classes: np.ndarray) -> np.ndarray:
    if classes.size < 2:
        raise ValueError(f"log_loss: y_true contains only one label ({classes.tolist()}); "
                         "pass all the labels with labels=")
    return classes


# ------------------------------------------------------------------ one-shot functions
def evaluate(logits: ArrayLike, target: ArrayLike, *, top_k: int = 1, n_bins: int = 15,
             ignore_index: int = -100, weight: Optional[ArrayLike] = None,
             sample_weight: Optional[ArrayLike] = None, axis: int = -1,
             n_threads: Optional[int] = None) -> EvalResult:
    """All the metrics (:class:`EvalResult`) of logits (..., C) (class axis ``axis``)
    against class indices (...), from one pass over the logits."""
    acc = MetricsAccumulator(top_k=top_k, n_bins=n_bins, ignore_index=ignore_index,
                             weight=weight, axis=axis, n_threads=n_threads)
    return acc.update(logits, target, sample_weight=sample_weight).compute()


def perplexity(logits: ArrayLike, target: ArrayLike, *, ignore_index: int = -100,
               weight: Optional[ArrayLike] = None, axis: int = -1,
               n_threads: Optional[int] = None) -> float:
    """``exp(sum_i w_{t_i} nll_i / sum_i w_{t_i})`` over the items whose target is not
    ``ignore_index``: the exponential of ``cross_entropy(..., weight, reduction="mean")``
    (torchmetrics' ``Perplexity`` without weights). logits (..., C), target (...)."""
    return evaluate(logits, target, ignore_index=ignore_index, weight=weight, axis=axis,
                    n_threads=n_threads).perplexity


def accuracy(logits: ArrayLike, target: ArrayLike, *, top_k: int = 1,
             ignore_index: int = -100, sample_weight: Optional[ArrayLike] = None,
             axis: int = -1, n_threads: Optional[int] = None) -> float:
    """Top-k accuracy: the (sample-weighted) fraction of kept items whose target is among
    the k highest logits, scikit-learn's ``top_k_accuracy_score(target, logits, k=top_k,
    labels=range(C))``, ties included: of equal logits the higher class index ranks
    higher (see the module). Note that with ties, top-1 accuracy here is not
    ``argmax == target`` (argmax takes the first index)."""
    return evaluate(logits, target, top_k=top_k, ignore_index=ignore_index,
                    sample_weight=sample_weight, axis=axis, n_threads=n_threads).accuracy


def calibration_error(logits: ArrayLike, target: ArrayLike, *, n_bins: int = 15,
                      norm: str = "l1", ignore_index: int = -100, axis: int = -1,
                      n_threads: Optional[int] = None) -> float:
    """Calibration error of the top-1 confidence (``max softmax``) against whether the
    argmax is the target, torchmetrics' ``MulticlassCalibrationError(n_bins, norm)``:
    ``norm="l1"`` the expected calibration error, ``"l2"`` the root-mean-square one,
    ``"max"`` the maximum one (formulas: :meth:`MetricsAccumulator.calibration`)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(map(repr, NORMS))}, got {norm!r}")
    r = evaluate(logits, target, n_bins=n_bins, ignore_index=ignore_index, axis=axis,
                 n_threads=n_threads)
    return {"l1": r.ece, "l2": r.rmsce, "max": r.mce}[norm]


def log_loss(y_true: ArrayLike, logits: ArrayLike, *, labels: Optional[ArrayLike] = None,
             sample_weight: Optional[ArrayLike] = None, normalize: bool = True,
             n_threads: Optional[int] = None) -> float:
    """scikit-learn's ``log_loss(y_true, softmax(logits), labels=labels,
    sample_weight=sample_weight, normalize=normalize)`` without forming the probabilities.

    * logits (n, C): column j is the logit of the j-th label of ``np.unique(labels)``
      (``labels`` given) or of ``np.unique(y_true)``, as scikit-learn's LabelBinarizer
      orders them; C must equal their number (at least 2).
    * logits (n,) or (n, 1): the positive (greater) label's logit of a binary problem;
      ``p = sigmoid(z)``, ``-log p = -log_sigmoid(z)``.
    * Clipping: p_t clipped to ``[eps, 1 - eps]``, eps the machine epsilon of the
      logits' dtype (scikit-learn's, for the probabilities' dtype), i.e. the per-item loss
      ``-log p_t`` clipped to ``[-log(1 - eps), -log(eps)]``.
    * The mean weighs items by ``sample_weight`` (``normalize=False``: the weighted sum).
    Returns a Python float.
    """
    x = float_input(logits, "logits")
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise ValueError(f"log_loss: y_true must be 1-D, got shape {y.shape}")
    n = y.shape[0]
    if x.ndim not in (1, 2) or x.shape[0] != n:
        raise ValueError(f"log_loss: logits must have shape ({n},) or ({n}, n_classes), got "
                         f"{x.shape}")
    classes, t = _encode_labels(y, labels)
    binary = x.ndim == 1 or x.shape[1] == 1
    C = 2 if binary else x.shape[1]
    if classes.size != C:
        raise ValueError(f"log_loss: {classes.size} labels ({classes.tolist()}) but logits "
                         f"have {C} classes")
    sw = _item_weights(sample_weight, n, (n,), "log_loss")
    clip_lo, clip_hi = _clip_of(np.dtype(x.dtype.type))
    if binary:
        from ._blocks import log_sigmoid

        z = np.asarray(x, dtype=np.float64).reshape(-1)
        nll = -log_sigmoid(np.where(t == 1, z, -z), n_threads=n_threads)
        clipped = np.clip(nll, clip_lo, clip_hi)
        total = float(np.sum(clipped if sw is None else sw * clipped))
        weight = float(n if sw is None else np.sum(sw))
    else:
        # the kernel's loss sums alone (loss_only: no ranks, no bins); t is in [0, C)
        xk, labels, _ = _rows(x, t, -1, -1, "log_loss")
        sums = _ExactSum((2,))
        for s, counts in _metrics_blocks(
                xk, labels, sw, ignore_index=-1, class_weight=None, top_k=1,
                clip_lo=clip_lo, clip_hi=clip_hi, edges=_bin_edges(1),
                loss_only=True, n_threads=check_threads(n_threads)):
            assert counts[_MC_BAD] == 0, "_encode_labels gave a label outside [0, C)"
            sums.add([s[_MS_CLIPPED], s[_MS_ITEM_WEIGHT]])
        total, weight = (float(v) for v in sums.value())
    if not normalize:
        return total
    return _mean(total, weight)
