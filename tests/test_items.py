"""The item-lane kernels (kernels/fx_softmax_items.h): softmax rows of few classes, a
vector of rows at a time, and the class-axis kernel's vectorised finish.

Rows of C classes take the items path where C is at most the kernel table's measured
switch point (FX_ITEMS_SWITCH_*), the row path above it; ``_core._set_items_max_c`` forces
either, so that both run on the same data here:

* every softmax-family case of the registry (hard labels with weights, ignored items and
  smoothing, soft targets, nll_loss, axis=-1), at class counts around every switch point
  and a row count that leaves a partial last vector, on every ISA: both paths agree with
  the float64 reference for every reduction, loss and gradient;
* the building blocks likewise, with the rows of special values test_ieee.py checks
  through the public functions (NaN, +-inf, all -inf, a max that dominates);
* every label dtype, and an ignore_index outside the label dtype's range;
* the switch points themselves are what the kernels use (C at and above them).
(test_concurrency.py's "few_classes" shape checks identical bits for any thread count.)
"""
import numpy as np
import pytest

import fastxent as fx
from fastxent import _core
import reference as ref
from conftest import INT_DTYPES, assert_same_bits, close_ieee
from registry import BLOCKS, CASES

# around the switch points of every ISA and precision (2, 8, 24, 48, 52, 56, 72),
# the gathers' and the transposed loads' switch (FX_ROWS_T_MIN_C: 2 to 6), whole and
# partial tiles of 4, 8 and 16 lanes, and the largest tile (ITEMS_MAX_C)
CLASS_COUNTS = (1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 17, 24, 25, 32, 33, 40, 41, 48, 49, 53, 57, 64,
                65, 72, 73, 100, _core.ITEMS_MAX_C)
ROWS = 37                               # a partial last vector for every width
SOFTMAX_CASES = [c.id for c in CASES.values() if c.loss.class_axis]


def _both_paths(call):
    """call() with the row path forced, then with the items path forced."""
    out = {}
    for mode, switch in (("rows", 0), ("items", _core.ITEMS_MAX_C)):
        prev = _core._set_items_max_c(switch)
        try:
            out[mode] = call()
        finally:
            _core._set_items_max_c(prev)
    return out


@pytest.mark.parametrize("C", CLASS_COUNTS)
@pytest.mark.parametrize("case_id", SOFTMAX_CASES)
def test_losses_on_both_paths_match_the_reference(isa, rng, dtype, case_id, C):
    case = CASES[case_id]
    shape = (5, 7, C) if case.axis == -1 else (ROWS, C)
    x, t, kw = case.make(rng, dtype, shape)
    for reduction in case.reductions:
        loss_ref, grad_ref = case.ref(x, t, kw, reduction=reduction)
        got = _both_paths(lambda: case.fx(x, t, kw, reduction=reduction, return_grad=True))
        for mode, (loss, grad) in got.items():
            what = f"{case_id} C={C} {reduction} {mode}"
            close_ieee(loss, loss_ref, dtype, f"{what} loss")
            close_ieee(grad, grad_ref, dtype, f"{what} grad",
                       unit=1.0 / t.size if reduction == "mean" else 1.0)


def _special_rows(C, dtype):
    """Rows of special values (with C >= 2): a NaN, a +inf, +inf and NaN, all -inf, some
    -inf, a dominating max, huge and tiny logits; then ordinary rows."""
    rng = np.random.default_rng(C)
    x = rng.standard_normal((ROWS, C)) * 3
    x[0, C // 2] = np.nan
    x[1, 0] = np.inf
    x[2, 0], x[2, -1] = np.inf, np.nan
    x[3] = -np.inf
    x[4, ::2] = -np.inf
    x[5] = -12.0        # (-40 is test_ieee's: the float64 reference rounds it away)
    x[5, 0] = 0.0
    x[6] = np.linspace(-1e30, 1e30, C) if dtype == np.float32 else np.linspace(-1e300, 1e300, C)
    x[7] = 1e-30
    return x.astype(dtype)


@pytest.mark.parametrize("C", [c for c in CLASS_COUNTS if c >= 2])
@pytest.mark.parametrize("name", ["logsumexp", "softmax", "log_softmax", "entropy"])
def test_blocks_on_both_paths_match_the_reference(isa, dtype, name, C):
    block = BLOCKS[name]
    x = _special_rows(C, dtype)
    with np.errstate(all="ignore"):
        expected = block.ref(x.astype(np.float64))
    # a row holding +inf has no distribution (test_ieee: PyTorch's semantics): NaN, and
    # its logsumexp +inf (NaN where the row also holds a NaN)
    expected[1:3] = np.nan
    if name == "logsumexp":
        expected[1] = np.inf
    if name == "entropy":               # (the reference's sum skips 0 * log 0 terms)
        expected[[0, 3]] = np.nan       # a NaN propagates; all -inf has no distribution
    for mode, got in _both_paths(lambda: block.fx(x)).items():
        # The items path: relative to each entry (its sums are float64). The row path
        # adds a row's terms in float32 lanes before float64 (fx_softmax_rows.h), so where
        # a lane adds small terms to the max's 1 (C > lanes), S = 1 + 1e-4 keeps an error
        # of float32's eps relative to 1: -log S, log_softmax at the max, is then accurate
        # to eps absolute, not relative (as PyTorch's float32 log_softmax).
        close_ieee(got, expected, dtype, f"{name} C={C} {mode}",
                   scale=0.0 if mode == "items" else 1.0)


@pytest.mark.parametrize("C", [2, 3, 17, 40, 64, 300])
@pytest.mark.parametrize("name", ["logsumexp", "softmax", "log_softmax", "entropy"])
def test_blocks_with_the_class_axis_not_last(isa, dtype, name, C):
    """The building blocks with the class axis not last read x in place (the class-axis
    kernel, fx_softmax_cols.h, where the positions after the axis fill a vector, _blocks):
    the special rows as positions of (2, C, 3 * ROWS + 20) maps (a full panel and a
    partial one; C = 300: beyond the panel buffer on the stack), against the float64
    reference, equal for 1 and 2 threads, and in place (out=x) the same bits. Fewer
    positions after the axis (inner 3) take the transposing copy: the same values."""
    block = BLOCKS[name]
    rows = _special_rows(C, dtype)                      # (ROWS, C)
    rows = np.concatenate([rows, rows[::-1], rows, rows[:20]])        # 131 positions
    x = np.ascontiguousarray(np.stack([rows.T, rows[::-1].T]))        # (2, C, 131)
    with np.errstate(all="ignore"):
        e = block.ref(_special_rows(C, dtype).astype(np.float64))
    e[1:3] = np.nan                                  # as in the test above
    if name == "logsumexp":
        e[1] = np.inf
    if name == "entropy":
        e[[0, 3]] = np.nan
    e = np.concatenate([e, e[::-1], e, e[:20]])
    expected = np.stack([e, e[::-1]])
    if not block.reduces:                            # (2, ROWS, C) -> (2, C, ROWS)
        expected = np.moveaxis(expected, -1, 1)
    got = block.fx(x, axis=1, n_threads=1)
    close_ieee(got, expected, dtype, f"{name} C={C} axis=1", scale=0.0)
    assert np.array_equal(block.fx(x, axis=1, n_threads=2).view(np.uint8), got.view(np.uint8))
    if not block.reduces:
        y = x.copy()
        block.fx(y, axis=1, out=y)
        assert np.array_equal(y.view(np.uint8), got.view(np.uint8))
    short = np.ascontiguousarray(x[:, :, :3])           # inner 3: the copy
    close_ieee(block.fx(short, axis=1), got[..., :3] if got.ndim == 2 else got[:, :, :3],
               dtype, f"{name} C={C} inner 3", scale=0.0)


def _two_class_case(dtype):
    """Rows of two classes and their labels: special rows (a NaN, a +inf, both +inf, both
    -inf, one -inf with either label, logits at opposite ends of the range, a tie, margins
    of 100 and 20, an ignored row), then ordinary ones (37 in all: a partial vector)."""
    big = 3e38 if dtype == np.float32 else 1.7e308
    special = [(np.nan, 0.0, 1), (0.0, np.inf, 0), (np.inf, np.inf, 1), (-np.inf, -np.inf, 0),
               (-np.inf, 2.0, 1), (-np.inf, 2.0, 0), (big, -big, 1), (1.0, 1.0, 0),
               (0.0, -100.0, 0), (0.0, -100.0, 1), (-20.0, 0.0, 0), (0.5, 0.25, -100)]
    rng = np.random.default_rng(2)
    n = ROWS - len(special)
    x = np.concatenate([np.array([r[:2] for r in special]), rng.standard_normal((n, 2)) * 3])
    t = np.concatenate([[r[2] for r in special], rng.integers(0, 2, n)]).astype(np.int64)
    return x.astype(dtype), t


@pytest.mark.parametrize("weighted", [False, True], ids=["plain", "weights"])
def test_two_classes(isa, dtype, weighted):
    """Rows of two classes take their own finish (two_class_items, fx_softmax_item.h: S =
    1 + e, log S = log1p(e), g_t = -g_o) on the items path and in the class-axis kernel.
    Against a float64 reference derived here (logaddexp): the loss of each item, and each
    gradient entry relative to itself (no cancellation in g_t = -k p_o); NaN where an
    item has no distribution (a NaN, a +inf, all -inf), as on the row path."""
    x, t = _two_class_case(dtype)
    w = np.array([0.5, 2.0], dtype) if weighted else None
    x64, kept = x.astype(np.float64), t >= 0
    tk = np.where(kept, t, 0)
    wt = np.where(kept, (w.astype(np.float64) if weighted else np.ones(2))[tk], 0.0)
    with np.errstate(all="ignore"):
        lse = np.logaddexp(x64[:, 0], x64[:, 1])
        loss = wt * (lse - x64[np.arange(ROWS), tk])
        p = np.exp(x64 - lse[:, None])
        # p_t - 1 as -p_o: 1 - p_t rounds to 0 where p_o is below float64's eps
        p_o = p[np.arange(ROWS), 1 - tk]
        grad = wt[:, None] * np.where(np.eye(2)[tk] == 1, -p_o[:, None], p)
    loss[~kept] = 0.0
    loss[1] = grad[1] = np.nan                          # a +inf: no distribution
    grad[~kept] = 0.0

    kw = dict(weight=w, ignore_index=-100)
    for mode, (lossn, (_, g)) in _both_paths(lambda: (
            fx.cross_entropy(x, t, reduction="none", **kw),
            fx.cross_entropy(x, t, reduction="sum", return_grad=True, **kw))).items():
        what = f"C=2 {'weights' if weighted else 'plain'} {mode}"
        # the row path: log S of S = 1 + e rounded, and the target's entry k p_t - k,
        # accurate to eps absolute (times the weight) rather than relative
        close_ieee(lossn, loss, dtype, f"{what} loss", scale=0.0 if mode == "items" else 1.0)
        close_ieee(g, grad, dtype, f"{what} grad", scale=0.0 if mode == "items" else 2.0)
    # the class axis first: positions of a (2, 2, ROWS) map, in the class-axis kernel
    xm = np.ascontiguousarray(np.stack([x.T, x.T]))
    tm = np.stack([t, t])
    lossm = fx.cross_entropy(xm, tm, reduction="none", axis=1, **kw)
    _, gm = fx.cross_entropy(xm, tm, reduction="sum", axis=1, return_grad=True, **kw)
    close_ieee(lossm, np.stack([loss, loss]), dtype, "C=2 map loss", scale=0.0)
    close_ieee(gm, np.stack([grad.T, grad.T]), dtype, "C=2 map grad", scale=0.0)
    # the same finish, the same bits: rows and map, 1 and 2 threads
    rows_loss = fx.cross_entropy(x, t, reduction="none", **kw)
    assert_same_bits(lossm[0], rows_loss, "map and rows")
    for nt in (1, 2):
        assert_same_bits(fx.cross_entropy(xm, tm, reduction="none", axis=1, n_threads=nt, **kw),
                         lossm, f"{nt} threads")


@pytest.mark.parametrize("label_dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
def test_every_label_dtype_and_ignore_index(isa, rng, label_dtype):
    C = 5
    x = rng.standard_normal((ROWS, C)).astype(np.float32)
    t = rng.integers(0, C, ROWS).astype(label_dtype)
    t[::4] = 3                          # ignored, as a value of every label dtype
    loss_ref, grad_ref = ref.cross_entropy(x, t, ignore_index=3, reduction="sum")
    for mode, (loss, grad) in _both_paths(
            lambda: fx.cross_entropy(x, t, ignore_index=3, reduction="sum", return_grad=True)).items():
        close_ieee(loss, loss_ref, np.float32, f"{mode} loss")
        close_ieee(grad, grad_ref, np.float32, f"{mode} grad")
    # an ignore_index no label of this dtype can hold ignores nothing
    loss_ref, grad_ref = ref.cross_entropy(x, t.astype(np.int64), ignore_index=-(2 ** 40), reduction="sum")
    loss, grad = fx.cross_entropy(x, t, ignore_index=-(2 ** 40), reduction="sum", return_grad=True)
    close_ieee(loss, loss_ref, np.float32, "ignore_index out of the dtype's range")


def test_switch_points_are_the_kernels(isa, rng):
    """At the measured switch point both paths are used as the tables say: the forced
    items path gives the same bits as the default at C = switch, the forced row path
    the same bits at C = switch + 1."""
    for dtype in (np.float32, np.float64):
        for C in (2, 3, 8, 9, 24, 25, 48, 49, 52, 53, 56, 57, 72, 73):
            x = rng.standard_normal((ROWS, C)).astype(dtype)
            t = rng.integers(0, C, ROWS)
            default = fx.cross_entropy(x, t, reduction="none")
            paths = _both_paths(lambda: fx.cross_entropy(x, t, reduction="none"))
            same = [m for m, v in paths.items() if np.array_equal(v.view(np.uint8), default.view(np.uint8))]
            assert same, f"C={C} {np.dtype(dtype).name}: neither path gives the default's bits"


@pytest.mark.parametrize("C", [5, 100, 128])
def test_the_hook_moves_half_inputs_with_float32(isa, rng, C):
    """Half inputs take the items path where float32 does (their groups go through a
    float32 block: kernels/fx_softmax_items.h), up to the tile's ITEMS_MAX_C classes when
    forced: on each path the half result is float32's on the widened values (the loss
    bit for bit, the gradient rounded once). (The hook once sent 16-bit data to
    float32-reading kernels.)"""
    x = rng.standard_normal((37, C)).astype(np.float16)
    t = rng.integers(0, C, 37)

    def both():
        return (fx.cross_entropy(x, t, reduction="none", return_grad=True),
                fx.cross_entropy(x.astype(np.float32), t, reduction="none", return_grad=True))
    for mode, ((loss, grad), (l32, g32)) in _both_paths(both).items():
        assert_same_bits(loss, l32, mode)
        assert_same_bits(grad, g32.astype(np.float16), mode)


def test_items_of_no_classes_have_loss_zero():
    """(N, 0) logits: every item is ignored (no class exists) or a soft target over no
    classes, so each loss is 0 (it was uninitialised memory)."""
    for shape, tshape in (((3, 0), (3,)), ((3, 0, 4), (3, 4))):
        x = np.zeros(shape, np.float32)
        for t in (np.full(tshape, -100), np.zeros(shape, np.float32)):
            np.testing.assert_array_equal(fx.cross_entropy(x, t, reduction="none"), 0.0)
        np.testing.assert_array_equal(fx.nll_loss(x, np.full(tshape, -100), reduction="none"), 0.0)
