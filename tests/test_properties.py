"""Property-based tests (hypothesis): random shapes, dtypes, memory layouts and values
against the float64 reference.

Drawn per example: the shape (0 to 4 dimensions, including empty batches), the dtype,
the class axis, the layout of every array argument (contiguous, Fortran order, strided
slice, negative strides, a transposed view), and the values from one of several regimes
(unit normal, wide, huge spread ~1e30 / 1e300, huge offset, tiny ~1e-30, ties, extremes
+-3e38 / +-1.7e308) with a fraction of -inf (masked classes). Options: class weights,
ignore_index, label smoothing, every reduction; probability targets; BCE weight and
pos_weight broadcasting.

Tolerances (the conftest yardstick, made explicit where it needs a scale):
  * every result within tol(dtype) relative to its largest finite entry, plus the
    dtype's smallest normal (kernels flush subnormal results to zero);
  * softmax cross-entropy computes loss_i = a_i log(s_i) + sum_j b_j d_j and the gradient
    scale (a_i p_j - b_j) in the input precision, with a_i = (1-eps) w_t + eps/C sum(w)
    (or sum_j b_j for probability targets): an absolute error of tol(dtype) times a_i
    (times the reduction's scale) is inherent to that form -- and to PyTorch's -- so it
    is allowed on top; likewise w max(1, pos_weight) for BCE's sigmoid(x) - t. Relative
    accuracy of the BCE loss itself is held to an exact, cancellation-free expectation.
  * +inf logits are left to test_ieee (PyTorch gives NaN for such rows, the reference
    +inf); NaN/inf patterns otherwise match exactly.
"""

import numpy as np
import pytest

import fastxent as fx
import reference as ref
from conftest import FLOAT_DTYPES, INT_DTYPES, assert_same_bits, close_ieee, require_hypothesis
from registry import BLOCKS

require_hypothesis()   # fail on CI (CI=true), skip this module elsewhere
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

# the other settings (deadline=None, derandomize, ...): conftest's "fastxent" profile
EXAMPLES = {"ce_index": 250, "ce_prob": 150, "bce": 250, "blocks": 250}
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

REGIMES = ["unit", "wide", "huge_spread", "huge_offset", "tiny", "ties", "extreme"]
LAYOUTS = ["contig", "fortran", "strided", "negative", "transposed_view"]


# ---------------------------------------------------------------------------- helpers
def values(rng, shape, dtype, regime, mask_frac=0.0):
    """Logit-like values of `shape` in the given regime, a fraction -inf."""
    f32 = np.dtype(dtype) == np.float32
    z = rng.standard_normal(shape)
    if regime == "unit":
        v = z
    elif regime == "wide":
        v = z * 30
    elif regime == "huge_spread":
        v = z * (1e30 if f32 else 1e300)
    elif regime == "huge_offset":
        v = z * 3 + rng.choice([-1, 1]) * (1e6 if f32 else 1e12)
    elif regime == "tiny":
        v = z * 1e-30
    elif regime == "ties":
        v = np.round(z) * 2
    else:  # extreme
        B = float(np.finfo(dtype).max) * (0.88 if f32 else 0.94)   # 3e38 / 1.69e308
        v = rng.choice([-B, -1.0, 0.0, 1.0, B], size=shape)
    v = np.asarray(v, dtype=np.float64)
    if mask_frac:
        v = np.where(rng.random(shape) < mask_frac, -np.inf, v)
    return v.astype(dtype)


def in_layout(a, how):
    """The same values in another memory layout (a view where possible)."""
    a = np.asarray(a)
    if a.ndim == 0 or how == "contig":
        return a
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "strided":
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if how == "negative":
        return np.flip(np.flip(a).copy())
    # transposed_view: stored with the axes reversed, viewed in the original order
    return np.ascontiguousarray(a.transpose()).transpose()


def _finite_max(a):
    a = np.asarray(a, np.float64)
    a = a[np.isfinite(a)]
    return float(np.abs(a).max()) if a.size else 0.0


shapes_nd = st.integers(1, 4).flatmap(
    lambda nd: st.tuples(*[st.integers(0 if i == 0 and nd > 1 else 1, 5 if i != 1 else 12)
                           for i in range(nd)]))


# ------------------------------------------------------------ cross_entropy: indices
@settings(max_examples=EXAMPLES["ce_index"])
@given(data=st.data(), shape=shapes_nd, dtype=st.sampled_from(FLOAT_DTYPES),
       regime=st.sampled_from(REGIMES), mask=st.sampled_from([0.0, 0.0, 0.3, 0.9]),
       reduction=st.sampled_from(["none", "mean", "sum"]), seed=st.integers(0, 2**32 - 1))
def test_cross_entropy_index_targets(data, shape, dtype, regime, mask, reduction, seed):
    rng = np.random.default_rng(seed)
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1), label="axis") if nd > 1 else 0
    ax = axis % nd
    C = shape[ax]
    if C == 0:
        return
    item = shape[:ax] + shape[ax + 1:] if nd > 1 else ()
    x = values(rng, shape, dtype, regime, mask)
    label_dtype = data.draw(st.sampled_from(INT_DTYPES), label="label dtype")
    ignore_index = data.draw(st.sampled_from([-100, 0, C - 1, 255]), label="ignore_index")
    info = np.iinfo(label_dtype)
    if not info.min <= ignore_index <= info.max:
        ignore_index = min(int(info.max), 2**63 - 1)   # 255 for uint8, 127 for int8, ...
        # (2**64-1 with uint64 labels: test_errors.test_out_of_range_integer_arguments_are_clean)
    t = np.asarray(rng.integers(0, C, item))
    if t.size and data.draw(st.booleans(), label="some ignored"):
        t.reshape(-1)[rng.random(t.size) < 0.3] = ignore_index
    t = t.astype(label_dtype)
    weight = rng.uniform(0.1, 3.0, C).astype(dtype) if data.draw(st.booleans(), label="weighted") else None
    # label smoothing: not with +-3e38 logits (test_ieee.test_extreme_finite_logits_with_
    # label_smoothing), and eps = 1 not with masks: the reference forms 0 * inf = NaN for a
    # masked target's vanished term, where the loss is +inf
    eps = 0.0 if regime == "extreme" else data.draw(
        st.sampled_from([0.0, 0.0, 0.1] + ([1.0] if mask == 0 else [])), label="smoothing")
    xl = in_layout(x, data.draw(st.sampled_from(LAYOUTS), label="x layout"))
    tl = in_layout(t, data.draw(st.sampled_from(LAYOUTS), label="t layout"))
    x0 = x.copy()

    rl, rg = ref.cross_entropy(x, t, weight, ignore_index=ignore_index, reduction=reduction,
                               label_smoothing=eps, axis=axis)
    loss, grad = fx.cross_entropy(xl, tl, weight, ignore_index=ignore_index, reduction=reduction,
                                  label_smoothing=eps, axis=axis, return_grad=True)
    loss_only = fx.cross_entropy(xl, tl, weight, ignore_index=ignore_index, reduction=reduction,
                                 label_smoothing=eps, axis=axis)
    np.testing.assert_array_equal(xl, x0)

    # the size of the terms (see the module docstring)
    w = np.ones(C) if weight is None else weight.astype(np.float64)
    tf = np.asarray(t).reshape(-1).astype(np.int64)
    valid = tf != ignore_index
    a_items = np.where(valid, (1 - eps) * w[np.where(valid, tf, 0)] + eps / C * w.sum(), 0.0)
    W = float(w[tf[valid]].sum())
    den = W if reduction == "mean" and W > 0 else 1.0
    loss_unit = {"none": a_items.max(initial=0.0), "sum": a_items.sum(),
                 "mean": a_items.sum() / den}[reduction]
    grad_unit = a_items.max(initial=0.0) / den

    assert np.asarray(loss).dtype == np.dtype(dtype) and grad.dtype == np.dtype(dtype)
    close_ieee(loss, rl, dtype, "loss", unit=loss_unit)
    close_ieee(grad, rg, dtype, "grad", unit=grad_unit)
    assert_same_bits(loss_only, loss, "the loss alone")
    if eps == 0:
        # a masked (-inf) class other than the target gets exactly zero gradient, unless
        # its whole slice is masked (no distribution: NaN); smoothing puts eps/C there
        xm = np.moveaxis(x.astype(np.float64), ax, -1)
        target = np.arange(C) == np.asarray(t).astype(np.int64)[..., None]
        live = ~np.all(np.isneginf(xm), axis=-1, keepdims=True)
        masked = np.isneginf(xm) & live & ~target
        assert (np.moveaxis(grad, ax, -1)[masked] == 0).all(), "masked classes must get 0 gradient"


# ------------------------------------------------------ cross_entropy: probabilities
@settings(max_examples=EXAMPLES["ce_prob"])
@given(data=st.data(), shape=shapes_nd, dtype=st.sampled_from(FLOAT_DTYPES),
       regime=st.sampled_from(REGIMES[:-1]), mask=st.sampled_from([0.0, 0.0, 0.3]),
       reduction=st.sampled_from(["none", "mean", "sum"]), seed=st.integers(0, 2**32 - 1))
def test_cross_entropy_probability_targets(data, shape, dtype, regime, mask, reduction, seed):
    # (+-3e38 logits with probability targets: test_ieee.test_extreme_finite_logits_probability_targets)
    rng = np.random.default_rng(seed)
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1), label="axis") if nd > 1 else 0
    ax = axis % nd
    C = shape[ax]
    x = values(rng, shape, dtype, regime, mask)
    y = rng.random(shape) ** 3
    if data.draw(st.booleans(), label="no mass on masked classes"):
        # (a slice masked everywhere keeps its mass: no distribution, NaN in both)
        live = ~np.all(np.isinf(x), axis=ax, keepdims=True)
        y = np.where(np.isinf(x) & live, 0.0, y)
    y = y / np.maximum(y.sum(axis=ax, keepdims=True), 1e-300)
    y = y.astype(data.draw(st.sampled_from(FLOAT_DTYPES), label="target dtype"))
    weight = rng.uniform(0.1, 3.0, C).astype(dtype) if data.draw(st.booleans(), label="weighted") else None
    eps = data.draw(st.sampled_from([0.0, 0.0, 0.2]), label="smoothing")
    xl = in_layout(x, data.draw(st.sampled_from(LAYOUTS), label="x layout"))
    yl = in_layout(y, data.draw(st.sampled_from(LAYOUTS), label="y layout"))

    loss, grad = fx.cross_entropy(xl, yl, weight, reduction=reduction, label_smoothing=eps,
                                  axis=axis, return_grad=True)
    assert grad.shape == shape
    if C == 0:        # no classes: a degenerate case outside this test
        return
    if x.size == 0:   # the reference does not take empty arrays here; test_ieee has the rules
        assert {"none": lambda: loss.size == 0, "sum": lambda: loss == 0,
                "mean": lambda: np.isnan(loss)}[reduction]()
        return
    rl, rg = ref.cross_entropy(x, y.astype(dtype), weight, reduction=reduction,
                               label_smoothing=eps, axis=axis)

    w = np.ones(C) if weight is None else weight.astype(np.float64)
    ym = np.moveaxis(y.astype(dtype).astype(np.float64), ax, -1).reshape(-1, C) if C else np.zeros((0, 1))
    a_items = (ym * (1 - eps) + eps / max(C, 1)) @ w if C else np.zeros(0)
    M = ym.shape[0]
    den = M if reduction == "mean" and M else 1
    loss_unit = {"none": a_items.max(initial=0.0), "sum": a_items.sum(),
                 "mean": a_items.sum() / den}[reduction]
    close_ieee(loss, rl, dtype, "loss", unit=loss_unit)
    close_ieee(grad, rg, dtype, "grad", unit=a_items.max(initial=0.0) / den)


# --------------------------------------------------------------------- BCE with logits
def bce_expected(x, t, weight, pos_weight, reduction):
    """BCE with logits in float64 without cancellation: with lw = 1 + (pw - 1) t and
    L = log1p(exp(-|x|)), loss = -pw t x + lw L for x < 0 and (1 - t) x + lw L for
    x >= 0 (both sums of non-negative terms for t in [0, 1]); the gradient from the
    reference. A weight multiplies both."""
    x = np.asarray(x, np.float64)
    t = np.asarray(t, np.float64)
    pw = 1.0 if pos_weight is None else np.asarray(pos_weight, np.float64)
    lw = 1.0 + (pw - 1.0) * t
    with np.errstate(over="ignore", invalid="ignore"):
        L = np.log1p(np.exp(-np.abs(x)))
        items = np.where(x < 0, -pw * t * x, (1.0 - t) * x) + lw * L
    if weight is not None:
        items = items * np.asarray(weight, np.float64)
    items = np.broadcast_to(items, x.shape)
    loss = {"none": items, "sum": items.sum(), "mean": items.sum() / x.size if x.size else np.nan}[reduction]
    grad = ref.binary_cross_entropy_with_logits(x, t, weight, pos_weight, reduction)[1]
    return loss, grad


def test_bce_expected_matches_the_reference_where_the_reference_is_exact():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 7)) * 4
    t = rng.random((50, 7))
    w = rng.uniform(0.5, 2, 7)
    pw = rng.uniform(0.5, 3, 7)
    for reduction in ("none", "mean", "sum"):
        np.testing.assert_allclose(bce_expected(x, t, w, pw, reduction)[0],
                                   ref.binary_cross_entropy_with_logits(x, t, w, pw, reduction)[0],
                                   rtol=1e-12)


def _bce_case(data, shape, dtype, regime, seed):
    rng = np.random.default_rng(seed)
    x = values(rng, shape, dtype, regime)
    kind = data.draw(st.sampled_from(["float", "bool", "uint8", "hard-float"]), label="target kind")
    tf = rng.random(shape)
    t = {"float": tf.astype(dtype), "bool": tf < 0.5, "uint8": (tf < 0.5).astype(np.uint8),
         "hard-float": (tf < 0.5).astype(dtype)}[kind]
    cols = shape[-1] if shape else 1
    # with +-3e38 logits, weights <= 1 keep every element's loss <= 3e38 (one element
    # beyond the dtype with a finite mean: test_ieee.test_bce_mean_finite_when_an_
    # element_loss_exceeds_float32)
    wmax = 1.0 if regime == "extreme" else 3.0
    wkind = data.draw(st.sampled_from(["none", "col", "full", "scalar"]), label="weight")
    weight = {"none": None, "col": rng.uniform(0.1, wmax, cols if shape else ()).astype(dtype),
              "full": rng.uniform(0.1, wmax, shape).astype(dtype), "scalar": np.asarray(wmax / 2, dtype)}[wkind]
    pw = (rng.uniform(0.2, 4 if wmax > 1 else 1, cols).astype(dtype)
          if data.draw(st.booleans(), label="pos_weight") else None)
    if pw is not None and not shape:
        pw = pw.reshape(())
    xl = in_layout(x, data.draw(st.sampled_from(LAYOUTS), label="x layout"))
    tl = in_layout(t, data.draw(st.sampled_from(LAYOUTS), label="t layout"))
    wl = None if weight is None else in_layout(weight, data.draw(st.sampled_from(LAYOUTS), label="w layout"))
    return x, t, weight, pw, xl, tl, wl


bce_given = given(data=st.data(), shape=st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple),
                  dtype=st.sampled_from(FLOAT_DTYPES), regime=st.sampled_from(REGIMES),
                  reduction=st.sampled_from(["none", "mean", "sum"]), seed=st.integers(0, 2**32 - 1))


@settings(max_examples=EXAMPLES["bce"])
@bce_given
def test_bce_with_logits_loss(data, shape, dtype, regime, reduction, seed):
    """The loss to full relative accuracy (the expectation has no cancellation)."""
    x, t, weight, pw, xl, tl, wl = _bce_case(data, shape, dtype, regime, seed)
    el, _ = bce_expected(x, t, weight, pw, reduction)
    loss = fx.binary_cross_entropy_with_logits(xl, tl, wl, pos_weight=pw, reduction=reduction)
    assert np.asarray(loss).dtype == np.dtype(dtype)
    close_ieee(loss, el, dtype, "loss")


@settings(max_examples=EXAMPLES["bce"])
@bce_given
def test_bce_with_logits_gradient(data, shape, dtype, regime, reduction, seed):
    """The gradient (and that the loss of the fused call is the loss alone)."""
    x, t, weight, pw, xl, tl, wl = _bce_case(data, shape, dtype, regime, seed)
    _, eg = bce_expected(x, t, weight, pw, reduction)
    loss, grad = fx.binary_cross_entropy_with_logits(xl, tl, wl, pos_weight=pw, reduction=reduction,
                                                     return_grad=True)
    wmax = 1.0 if weight is None else _finite_max(weight)
    pmax = 1.0 if pw is None else max(1.0, _finite_max(pw))
    n = max(int(np.prod(shape)), 1)
    assert grad.dtype == np.dtype(dtype) and grad.shape == x.shape
    close_ieee(grad, eg, dtype, "grad", unit=wmax * pmax / (n if reduction == "mean" else 1))
    alone = fx.binary_cross_entropy_with_logits(xl, tl, wl, pos_weight=pw, reduction=reduction)
    assert_same_bits(alone, loss, "the loss alone")


# ----------------------------------------------------------------- building blocks
@settings(max_examples=EXAMPLES["blocks"])
@given(data=st.data(), shape=shapes_nd, dtype=st.sampled_from(FLOAT_DTYPES),
       regime=st.sampled_from(REGIMES), mask=st.sampled_from([0.0, 0.0, 0.5, 1.0]),
       seed=st.integers(0, 2**32 - 1))
def test_building_blocks(data, shape, dtype, regime, mask, seed):
    rng = np.random.default_rng(seed)
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1), label="axis")
    if shape[axis] == 0:
        return
    x = values(rng, shape, dtype, regime, mask)
    if mask == 1.0 and x.size:
        x.reshape(-1)[0] = 0.0              # some slices all -inf, one not
    xl = in_layout(x, data.draw(st.sampled_from(LAYOUTS), label="layout"))
    use_out = data.draw(st.booleans(), label="out=")
    all_masked = np.all(np.isneginf(x.astype(np.float64)), axis=axis)
    for name, block in BLOCKS.items():        # sigmoid and log_sigmoid: elementwise
        kw = block.call_kw(axis)
        expected = block.ref(x, **kw)
        if name == "entropy":
            # no distribution in an all -inf slice: NaN, as softmax (the reference says 0)
            expected = np.where(all_masked, np.nan, expected)
        if use_out:
            kw["out"] = np.empty(np.shape(expected), dtype)
        got = block.fx(xl, **kw)
        if use_out:
            assert got is kw["out"]
        assert got.dtype == np.dtype(dtype) and got.shape == np.shape(expected)
        close_ieee(got, expected, dtype, name, unit=1.0 if name == "entropy" else 0.0)
