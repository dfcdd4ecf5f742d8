"""IEEE semantics and sizes.

* NaN propagates (to its item's loss and gradient row; other items untouched).
* +inf logits: PyTorch's semantics, which the README promises to match: a softmax row
  holding +inf has no defined distribution, so its loss and gradient are NaN (logsumexp is
  +inf); BCE with logits and the sigmoids follow the float64 reference.
* -inf on a non-target class is a masked class: finite loss, exactly zero gradient there;
  a -inf target logit gives +inf; a row of all -inf is NaN.
* Extreme finite logits (+-3e38 in float32, +-1.7e308 in float64) stay finite wherever the
  true answer is finite in the dtype.
* Tiny losses (confident, correct predictions) keep their relative accuracy in BCE with
  logits, whose docstring promises the stable softplus form.
* Sizes: an empty batch for every loss and reduction (mean -> NaN), C = 1, a row of 2**24
  classes, and N x C beyond 2**31 elements (runs when the machine has the memory).
"""

import math
from decimal import Decimal, localcontext

import numpy as np
import pytest

import fastxent as fx
import reference as ref
from conftest import assert_same_bits, close_ieee, make_logits, tol
from registry import BLOCKS, LOSSES

# the float64 reference evaluates IEEE arithmetic on purpose here (inf - inf, ...)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

BIG = {np.float32: float(np.float32(3e38)), np.float64: 1.7e308}
inf, nan = math.inf, math.nan


def exact_ce_items(x, target, smoothing=0.0):
    """Per-row softmax cross-entropy of a 2-D x, in 400-digit decimal arithmetic (no
    overflow of m - x_j even at +-1.7e308): sum_j b_j (logsumexp(x) - x_j), with
    b_j = (1-eps) [j == t] + eps/C (index targets) or (1-eps) y_j + eps/C (probabilities);
    terms with b_j == 0 are 0."""
    out = []
    with localcontext() as ctx:
        ctx.prec = 400   # 1.7e308 has 309 integer digits; keep 90 more
        for r, row in enumerate(np.asarray(x, np.float64)):
            C = len(row)
            xs = [Decimal(float(v)) for v in row]
            m = max(xs)
            lse = m + sum(((v - m).exp() for v in xs), Decimal(0)).ln()
            t = np.asarray(target)
            if t.dtype.kind == "f":
                b = [Decimal(1 - smoothing) * Decimal(float(y)) + Decimal(smoothing) / C for y in t[r]]
            else:
                b = [Decimal(1 - smoothing) * (j == int(t[r])) + Decimal(smoothing) / C for j in range(C)]
            out.append(float(sum((bj * (lse - v) for bj, v in zip(b, xs) if bj != 0), Decimal(0))))
    return np.array(out)


# ------------------------------------------------------------------------------- NaN
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_nan_logit_propagates_to_its_row_only(isa, rng, dtype, smoothing):
    x = make_logits(rng, (6, 7), dtype)
    t = np.array([0, 1, 2, 3, 4, 5])
    x[1, 1] = nan          # at the target
    x[4, 0] = nan          # elsewhere in the row
    w = rng.uniform(0.5, 2, 7).astype(dtype)
    for weight in (None, w):
        rl, rg = ref.cross_entropy(x, t, weight, reduction="none", label_smoothing=smoothing)
        loss, grad = fx.cross_entropy(x, t, weight, reduction="none", label_smoothing=smoothing,
                                      return_grad=True)
        assert np.isnan(loss[[1, 4]]).all() and np.isfinite(loss[[0, 2, 3, 5]]).all()
        assert np.isnan(grad[[1, 4]]).all(), "every gradient entry of a NaN row is NaN"
        close_ieee(loss, rl, dtype, "loss")
        close_ieee(grad[[0, 2, 3, 5]], rg[[0, 2, 3, 5]], dtype, "grad of the other rows")
        for reduction in ("mean", "sum"):
            lr, gr = fx.cross_entropy(x, t, weight, reduction=reduction, label_smoothing=smoothing,
                                      return_grad=True)
            assert np.isnan(lr)
            assert np.isnan(gr[[1, 4]]).all() and np.isfinite(gr[[0, 2, 3, 5]]).all()


def test_nan_in_soft_target_or_logits_propagates(rng, dtype):
    x = make_logits(rng, (4, 5), dtype)
    y = ref.softmax(rng.standard_normal((4, 5))).astype(dtype)
    x[0, 3] = nan
    y[2, 1] = nan
    rl, rg = ref.cross_entropy(x, y, reduction="none")
    loss, grad = fx.cross_entropy(x, y, reduction="none", return_grad=True)
    assert np.isnan(loss[[0, 2]]).all() and np.isfinite(loss[[1, 3]]).all()
    close_ieee(loss, rl, dtype, "loss")
    assert np.isnan(grad[0]).all()
    close_ieee(grad[[1, 3]], rg[[1, 3]], dtype, "grad")


def test_nan_nll_loss_reads_only_the_target(rng, dtype):
    x = ref.log_softmax(make_logits(rng, (3, 4), np.float64)).astype(dtype)
    t = np.array([0, 1, 2])
    x[0, 0] = nan   # target: NaN loss
    x[1, 3] = nan   # not read by nll_loss (as in PyTorch)
    rl, rg = ref.nll_loss(x, t, reduction="none")
    loss, grad = fx.nll_loss(x, t, reduction="none", return_grad=True)
    close_ieee(loss, rl, dtype, "loss")
    close_ieee(grad, rg, dtype, "grad")
    assert np.isnan(loss[0]) and np.isfinite(loss[1:]).all()


def test_nan_propagates_elementwise_losses(rng, dtype):
    x = make_logits(rng, (3, 4), dtype)
    t = (rng.random((3, 4)) < 0.5).astype(dtype)
    x[1, 2] = nan
    for kw in ({}, {"pos_weight": np.full(4, 2.0, dtype)}):
        rl, rg = ref.binary_cross_entropy_with_logits(x, t, reduction="none", **kw)
        loss, grad = fx.binary_cross_entropy_with_logits(x, t, reduction="none", return_grad=True, **kw)
        assert np.isnan(loss[1, 2]) and np.isnan(grad[1, 2])
        assert np.isnan(loss).sum() == 1 and np.isnan(grad).sum() == 1
        close_ieee(loss, rl, dtype, "bce loss")
        close_ieee(grad, rg, dtype, "bce grad")
        assert np.isnan(fx.binary_cross_entropy_with_logits(x, t, **kw))
    lq = ref.log_softmax(make_logits(rng, (3, 4), np.float64)).astype(dtype)
    p = ref.softmax(make_logits(rng, (3, 4), np.float64)).astype(dtype)
    lq[2, 0] = nan
    loss = fx.kl_div(lq, p, reduction="none")
    assert np.isnan(loss[2, 0]) and np.isnan(loss).sum() == 1
    assert np.isnan(fx.kl_div(lq, p, reduction="batchmean"))


def test_nan_propagates_building_blocks(rng, dtype):
    x = make_logits(rng, (4, 6), dtype)
    x[2, 5] = nan
    for name in ("logsumexp", "entropy"):
        v = getattr(fx, name)(x)
        assert np.isnan(v[2]) and np.isfinite(np.delete(v, 2)).all(), name
    for name in ("softmax", "log_softmax"):
        v = getattr(fx, name)(x)
        assert np.isnan(v[2]).all() and np.isfinite(np.delete(v, 2, axis=0)).all(), name
        close_ieee(np.delete(v, 2, axis=0), getattr(ref, name)(np.delete(x, 2, axis=0)), dtype, name)
    for name in ("sigmoid", "log_sigmoid"):
        v = getattr(fx, name)(x)
        assert np.isnan(v[2, 5]) and np.isnan(v).sum() == 1, name


def test_logsumexp_nan_wins_over_infinite_max(isa, dtype):
    """Regression: a slice holding NaN and +inf (or only -inf besides the NaN) is NaN, also
    when they sit in different chunks of a long row; +inf alone is +inf, -inf alone -inf."""
    x = np.zeros(64, dtype); x[0] = np.nan; x[40] = np.inf
    y = np.full(64, -np.inf, dtype); y[0] = np.nan
    z = np.zeros(8192, dtype); z[5] = np.nan; z[5000] = np.inf      # two chunks
    for a in (x, y, z):
        assert np.isnan(fx.logsumexp(a)), a.size
    w = np.zeros(8192, dtype); w[5000] = np.inf
    assert fx.logsumexp(w) == np.inf
    assert fx.logsumexp(np.array([np.inf, 1.0], dtype)) == np.inf
    assert fx.logsumexp(np.array([-np.inf, -np.inf], dtype)) == -np.inf


# ------------------------------------------------------------------------------ +inf
def test_pos_inf_logit_makes_its_row_nan_as_pytorch(rng, dtype):
    """PyTorch: log_softmax of a row holding +inf is NaN (inf - inf), so cross_entropy is
    NaN for that row, whether +inf is on the target or not, and its gradient is NaN."""
    x = make_logits(rng, (5, 4), dtype)
    t = np.array([0, 1, 2, 3, 0])
    x[1, 1] = inf      # on the target
    x[3, 0] = inf      # elsewhere
    for y in (t, ref.softmax(rng.standard_normal((5, 4))).astype(dtype)):
        loss, grad = fx.cross_entropy(x, y, reduction="none", return_grad=True)
        assert np.isnan(loss[[1, 3]]).all(), loss
        assert np.isnan(grad[[1, 3]]).all(), grad
        rl, rg = ref.cross_entropy(x, y, reduction="none")
        close_ieee(loss[[0, 2, 4]], rl[[0, 2, 4]], dtype, "other rows")
        close_ieee(grad[[0, 2, 4]], rg[[0, 2, 4]], dtype, "other rows' grad")
        assert np.isnan(fx.cross_entropy(x, y))
    lse = fx.logsumexp(x)
    assert lse[1] == inf and lse[3] == inf
    close_ieee(np.delete(lse, [1, 3]), ref.logsumexp(np.delete(x, [1, 3], axis=0)), dtype, "lse")
    for name in ("softmax", "log_softmax"):
        v = getattr(fx, name)(x)
        assert np.isnan(v[[1, 3]]).all(), name
        assert np.isfinite(v[[0, 2, 4]]).all(), name
    e = fx.entropy(x)
    assert np.isnan(e[[1, 3]]).all() and np.isfinite(e[[0, 2, 4]]).all()


def test_infinite_logits_in_sigmoid_family(dtype):
    x = np.array([inf, -inf, inf, -inf, inf, -inf, 0.0, 5.0], dtype)
    t = np.array([1, 1, 0, 0, 0.5, 0.5, 1, 0], dtype)
    for kw in ({}, {"pos_weight": np.array(3.0, dtype)}):
        rl, rg = ref.binary_cross_entropy_with_logits(x, t, reduction="none", **kw)
        loss, grad = fx.binary_cross_entropy_with_logits(x, t, reduction="none", return_grad=True, **kw)
        close_ieee(loss, rl, dtype, f"bce loss {kw}")
        close_ieee(grad, rg, dtype, f"bce grad {kw}")
    # sigmoid(+-inf), log_sigmoid(+-inf): test_core.test_sigmoid_family_extremes


# ------------------------------------------------------------------ -inf (masked classes)
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_masked_vocabulary_finite_loss_zero_gradient(rng, dtype, reduction):
    N, C = 16, 50
    x = make_logits(rng, (N, C), dtype)
    t = rng.integers(0, C, N)
    mask = rng.random((N, C)) < 0.7
    mask[np.arange(N), t] = False            # never the target
    mask[3] = True                           # one row masked everywhere but its target
    mask[3, t[3]] = False
    x[mask] = -inf
    w = rng.uniform(0.5, 2.0, C).astype(dtype)
    for weight in (None, w):
        loss, grad = fx.cross_entropy(x, t, weight, reduction=reduction, return_grad=True)
        assert np.isfinite(loss).all(), loss
        assert (grad[mask] == 0).all(), "masked classes must get exactly zero gradient"
        rl, rg = ref.cross_entropy(x, t, weight, reduction=reduction)
        close_ieee(loss, rl, dtype, "loss")
        close_ieee(grad, rg, dtype, "grad", unit=1.0 / N if reduction == "mean" else 1.0)
        if reduction == "none":
            assert loss[3] == 0 and (grad[3] == 0).all()   # one live class: p = 1 exactly
    # probability targets with no mass on the masked classes (documented deviation from
    # PyTorch, which gives NaN there): finite, zero gradient on the mask
    y = np.where(mask, 0.0, rng.random((N, C)))
    y = (y / y.sum(axis=1, keepdims=True)).astype(dtype)
    loss, grad = fx.cross_entropy(x, y, reduction=reduction, return_grad=True)
    assert np.isfinite(loss).all()
    assert (grad[mask] == 0).all()
    rl, rg = ref.cross_entropy(x, y, reduction=reduction)
    close_ieee(loss, rl, dtype, "soft loss")
    close_ieee(grad, rg, dtype, "soft grad", unit=1.0 / N if reduction == "mean" else 1.0)


def test_masked_vocabulary_class_axis_last_and_smoothing(rng, dtype):
    x = make_logits(rng, (2, 5, 9), dtype)
    t = rng.integers(0, 9, (2, 5))
    mask = rng.random(x.shape) < 0.5
    np.put_along_axis(mask, t[..., None], False, axis=-1)
    x[mask] = -inf
    loss, grad = fx.cross_entropy(x, t, axis=-1, return_grad=True)
    assert np.isfinite(loss) and (grad[mask] == 0).all()
    rl, rg = ref.cross_entropy(x, t, axis=-1)
    close_ieee(loss, rl, dtype, "loss")
    close_ieee(grad, rg, dtype, "grad", unit=0.1)
    # label smoothing puts eps/C on every class, masked ones too: the true loss is +inf,
    # while the gradient stays finite (the same as the reference's)
    loss, grad = fx.cross_entropy(x, t, axis=-1, label_smoothing=0.1, return_grad=True)
    rl, rg = ref.cross_entropy(x, t, axis=-1, label_smoothing=0.1)
    assert loss == inf and rl == inf
    close_ieee(grad, rg, dtype, "smoothed grad", unit=0.1)


def test_masked_classes_in_building_blocks(rng, dtype):
    x = make_logits(rng, (5, 30), dtype)
    mask = rng.random(x.shape) < 0.8
    mask[:, 0] = False
    x[mask] = -inf
    sm = fx.softmax(x)
    assert (sm[mask] == 0).all()
    lsm = fx.log_softmax(x)
    assert (lsm[mask] == -inf).all()
    for name in ("logsumexp", "entropy", "softmax", "log_softmax"):
        v = getattr(fx, name)(x)
        close_ieee(v, getattr(ref, name)(x), dtype, name)
    assert np.isfinite(fx.logsumexp(x)).all() and np.isfinite(fx.entropy(x)).all()


def test_neg_inf_target_logit_gives_inf_loss(isa, rng, dtype):
    x = make_logits(rng, (4, 6), dtype)
    t = np.array([2, 0, 5, 1])
    x[1, 0] = -inf
    for reduction in ("none", "mean", "sum"):
        loss, grad = fx.cross_entropy(x, t, reduction=reduction, return_grad=True)
        rl, rg = ref.cross_entropy(x, t, reduction=reduction)
        if reduction == "none":
            assert loss[1] == inf and np.isfinite(np.delete(loss, 1)).all()
        else:
            assert loss == inf
        assert np.isfinite(grad).all()
        close_ieee(grad, rg, dtype, "grad", unit=0.25 if reduction == "mean" else 1.0)
    lp = ref.log_softmax(x.astype(np.float64)).astype(dtype)
    loss = fx.nll_loss(lp, t, reduction="none")
    assert loss[1] == inf and np.isfinite(np.delete(loss, 1)).all()


def test_row_of_all_neg_inf(rng, dtype):
    x = make_logits(rng, (3, 5), dtype)
    x[1] = -inf
    t = np.array([0, 2, 4])
    loss, grad = fx.cross_entropy(x, t, reduction="none", return_grad=True)
    assert np.isnan(loss[1]) and np.isnan(grad[1]).all()     # as PyTorch: no distribution
    rl, rg = ref.cross_entropy(x, t, reduction="none")
    close_ieee(loss, rl, dtype, "loss")
    close_ieee(grad[[0, 2]], rg[[0, 2]], dtype, "grad")
    assert fx.logsumexp(x)[1] == -inf
    assert np.isnan(fx.softmax(x)[1]).all() and np.isnan(fx.log_softmax(x)[1]).all()
    assert np.isnan(fx.entropy(x)[1])
    for name in ("logsumexp", "softmax", "log_softmax", "entropy"):
        v = getattr(fx, name)(x)
        close_ieee(v[[0, 2]], getattr(ref, name)(x[[0, 2]]), dtype, name)


# -------------------------------------------------------------- extreme finite logits
def test_extreme_finite_logits_stay_finite(dtype):
    B = BIG[dtype]
    # rows whose loss is finite in the dtype; the sum stays below the dtype's max
    x = np.array([[B, -B, 0.0],        # target 0: loss 0
                  [B, 0.9 * B, -B],     # target 1: loss 0.1 B
                  [-B, -B, -B],         # uniform: log 3
                  [B, B, B],            # uniform: log 3
                  [-B, 0.8 * B, 0.0]],  # target 2: loss 0.8 B
                 dtype)
    t = np.array([0, 1, 2, 0, 2])
    items = exact_ce_items(x, t)
    for reduction in ("none", "mean", "sum"):
        loss, grad = fx.cross_entropy(x, t, reduction=reduction, return_grad=True)
        rg = ref.cross_entropy(x, t, reduction=reduction)[1]
        exact = {"none": items, "mean": items.mean(), "sum": items.sum()}[reduction]
        assert np.isfinite(exact).all()
        assert np.isfinite(loss).all(), (reduction, loss)
        assert np.isfinite(grad).all(), (reduction, grad)
        close_ieee(loss, exact, dtype, f"loss {reduction}")
        close_ieee(grad, rg, dtype, f"grad {reduction}", unit=0.2 if reduction == "mean" else 1.0)
    # building blocks
    for name in ("logsumexp", "softmax", "log_softmax", "entropy"):
        v = getattr(fx, name)(x)
        close_ieee(v, getattr(ref, name)(x), dtype, name)
    assert np.isfinite(fx.logsumexp(x)).all() and np.isfinite(fx.entropy(x)).all()


def test_extreme_finite_logits_probability_targets(dtype):
    B = BIG[dtype]
    x = np.array([[B, -B, 0.0], [B, 0.9 * B, -B], [-B, -B, -B], [B, B, B], [-B, 0.8 * B, 0.0]], dtype)
    # probability targets: the first row costs 0.5 * 2B = B, the last 0.5 * 1.8 B: finite
    y = np.array([[0.5, 0.5, 0.0]] * 5, dtype)
    loss, grad = fx.cross_entropy(x, y, reduction="none", return_grad=True)
    rg = ref.cross_entropy(x, y, reduction="none")[1]
    exact = exact_ce_items(x, y)
    assert np.isfinite(exact).all()
    close_ieee(loss, exact, dtype, "soft loss")
    close_ieee(grad, rg, dtype, "soft grad", unit=1.0)


def test_extreme_finite_logits_with_label_smoothing(dtype):
    """Smoothing spreads eps/C over the classes: with x = [B, -B, 0] and target 0 the
    true loss is eps/C * (2B + B) = 0.1 B for eps = 0.1, finite in the dtype."""
    B = BIG[dtype]
    x = np.array([[B, -B, 0.0]], dtype)
    t = np.array([0])
    loss, grad = fx.cross_entropy(x, t, label_smoothing=0.1, reduction="none", return_grad=True)
    rg = ref.cross_entropy(x, t, label_smoothing=0.1, reduction="none")[1]
    exact = exact_ce_items(x, t, smoothing=0.1)
    assert np.isfinite(exact).all()
    close_ieee(loss, exact, dtype, "smoothed loss")
    close_ieee(grad, rg, dtype, "smoothed grad", unit=1.0)


def test_extreme_finite_logits_sigmoid_family(dtype):
    B = BIG[dtype]
    x = np.array([B, -B, B, -B, B, -B], dtype)
    # losses: 0, 0, B/2, B/2, B, B (a wrong confident prediction costs B): all finite
    t = np.array([1.0, 0.0, 0.5, 0.5, 0.0, 1.0], dtype)
    for kw in ({}, {"weight": np.full(6, 0.5, dtype)}):
        loss, grad = fx.binary_cross_entropy_with_logits(x, t, reduction="none", return_grad=True, **kw)
        rl, rg = ref.binary_cross_entropy_with_logits(x, t, reduction="none", **kw)
        assert np.isfinite(loss).all() and np.isfinite(grad).all(), (loss, grad)
        close_ieee(loss, rl, dtype, f"bce loss {kw}")
        close_ieee(grad, rg, dtype, f"bce grad {kw}", unit=1.0)
    close_ieee(fx.sigmoid(x), ref.sigmoid(x), dtype, "sigmoid")
    close_ieee(fx.log_sigmoid(x), ref.log_sigmoid(x), dtype, "log_sigmoid")


def test_bce_mean_of_huge_float32_losses_is_finite():
    """Four wrong confident predictions, two per column: the mean, B = 3e38, is finite
    (the sum, 4B, is not, and inf is right for it). The loss is accumulated in float64
    (the documented contract, README), so no float32 partial sum may overflow on the way. (For float64 input the
    accumulator is the input precision itself: nothing to ask there.)"""
    B = BIG[np.float32]
    x = np.array([[B, -B], [B, -B]], np.float32)
    t = np.array([[0.0, 1.0], [0.0, 1.0]], np.float32)
    close_ieee(fx.binary_cross_entropy_with_logits(x, t, reduction="none"), np.full((2, 2), B), np.float32, "items")
    close_ieee(fx.binary_cross_entropy_with_logits(x, t, reduction="mean"), B, np.float32, "mean")
    assert fx.binary_cross_entropy_with_logits(x, t, reduction="sum") == inf


@pytest.mark.parametrize("where", ["fresh", "grad_out", "in_place"])
def test_bce_mean_finite_when_an_element_loss_exceeds_float32(where):
    """x = -2.99e38, t = 0.813, pos_weight = 2.27: that element's loss, pw t |x| = 5.5e38,
    is beyond float32 (inf is right for it alone), but the mean with a second element of
    loss 0.36 is 2.76e38, finite: the float64 accumulation must see the element's true
    value. The elementwise kernel redoes a segment holding an overflowed element in
    extended precision; with the gradient written over the input it must check each vector
    before the write instead: whichever buffer takes the gradient (a fresh one, grad_out,
    the input), the mean is the same bits as the loss alone, and the gradient the same."""
    x = np.array([[-1.0], [-2.9944846e38]], np.float32)
    t = np.array([[0.01652764], [0.8132702]], np.float32)
    pw = np.array([2.265775], np.float32)
    items = fx.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction="none")
    exact, exact_grad = ref.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction="none")
    close_ieee(items, exact, np.float32, "items (the second is inf in float32)")
    alone = fx.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction="mean")
    close_ieee(alone, exact.mean(), np.float32, "mean")
    _, fresh_grad = fx.binary_cross_entropy_with_logits(x, t, pos_weight=pw, reduction="mean",
                                                        return_grad=True)
    close_ieee(fresh_grad, exact_grad / x.size, np.float32, "grad")
    xin = x.copy()
    out = {"fresh": None, "grad_out": np.empty_like(x), "in_place": xin}[where]
    loss, grad = fx.binary_cross_entropy_with_logits(xin, t, pos_weight=pw, reduction="mean",
                                                     return_grad=True, grad_out=out)
    assert_same_bits(loss, alone, "mean")
    assert_same_bits(grad, fresh_grad, "grad")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_tiny_bce_losses_keep_relative_accuracy(dtype, reduction):
    """Confident, correct multi-label predictions: the loss of an element with t = 0 and
    x < 0 is softplus(x) = log1p(exp(x)), with t = 1 and x > 0 it is softplus(-x); e.g.
    3.06e-7 at x = -15 in float32: small, but far from the dtype's limits. Computed as
    max(x, 0) - t x + log1p(exp(-|x|)) it keeps full relative accuracy; the form
    (1 - t) x + softplus(-x) cancels x against -x and returns 0. The expected values are
    computed here directly (tests/reference.py uses the cancelling form as well)."""
    big = 30.0 if dtype == np.float32 else 60.0
    x = np.array([-big, big, -big / 2, big / 2, -big * 0.8], dtype)
    t = np.array([0, 1, 0, 1, 0], dtype)
    x64 = x.astype(np.float64)
    sp = np.log1p(np.exp(-np.abs(x64)))          # softplus(-|x|), exact to 1 ulp here
    for pw in (None, 2.0):
        items = sp * np.where(t == 1, 1.0 if pw is None else pw, 1.0)
        expected = {"none": items, "mean": items.mean(), "sum": items.sum()}[reduction]
        kw = {} if pw is None else {"pos_weight": np.array(pw, dtype)}
        loss = fx.binary_cross_entropy_with_logits(x, t, reduction=reduction, **kw)
        np.testing.assert_allclose(np.asarray(loss, np.float64), expected, rtol=tol(dtype),
                                   err_msg=f"tiny losses, pos_weight={pw}")


# ------------------------------------------------------------------------------- sizes
LOSS_TARGETS = [(loss.name, kind) for loss in LOSSES.values() for kind in loss.targets]


@pytest.mark.parametrize("shape", [(0, 4), (0, 4, 3), (2, 4, 0)], ids=["N0", "N0-spatial", "d0"])
@pytest.mark.parametrize("name,kind", LOSS_TARGETS, ids=[f"{n}-{k}" for n, k in LOSS_TARGETS])
def test_empty_batch(rng, dtype, name, kind, shape):
    loss_fn = LOSSES[name]
    x = loss_fn.make_input(rng, shape, dtype)
    t = loss_fn.make_target(rng, shape, dtype, kind)
    for reduction in loss_fn.reductions:
        loss, grad = loss_fn.fx(x, t, reduction=reduction, return_grad=True)
        assert grad.shape == x.shape and grad.dtype == x.dtype
        if reduction == "none":
            assert isinstance(loss, np.ndarray) and loss.size == 0 and loss.dtype == x.dtype
            expected = (shape[:1] + shape[2:]) if loss_fn.class_axis else shape
            assert loss.shape == expected
            continue
        assert isinstance(loss, np.floating) and loss.dtype == x.dtype
        if reduction == "mean" or (reduction == "batchmean" and shape[0] == 0):
            assert np.isnan(loss), f"{reduction}: a mean over nothing is NaN (PyTorch)"
        else:
            assert loss == 0, reduction


def test_empty_batch_building_blocks(dtype):
    x = np.zeros((0, 5), dtype)
    for block in BLOCKS.values():
        assert block.fx(x).shape == block.out_shape(x.shape), block.name
    assert fx.sigmoid(np.zeros(0, dtype)).shape == (0,)


def test_single_class(rng, dtype):
    x = make_logits(rng, (5, 1), dtype) * 100
    t = np.zeros(5, np.int64)
    for kw in ({}, {"label_smoothing": 0.3}, {"weight": np.array([2.5], dtype)}):
        for reduction in ("none", "mean", "sum"):
            loss, grad = fx.cross_entropy(x, t, reduction=reduction, return_grad=True, **kw)
            rl, rg = ref.cross_entropy(x, t, reduction=reduction, **kw)
            close_ieee(loss, rl, dtype, f"loss {kw}", unit=1.0)
            close_ieee(grad, rg, dtype, f"grad {kw}", unit=1.0)   # 0 up to the rounding of 1/N
            assert (np.asarray(loss) == 0).all(), "one class: log-probability 0 exactly"
    y = np.ones((5, 1), dtype)
    loss, grad = fx.cross_entropy(x, y, reduction="none", return_grad=True)
    assert (loss == 0).all() and (grad == 0).all()
    loss, grad = fx.nll_loss(x, t, reduction="none", return_grad=True)
    close_ieee(loss, -x[:, 0].astype(np.float64), dtype, "nll")
    # building blocks, axis of length 1
    np.testing.assert_array_equal(fx.logsumexp(x), x[:, 0])
    np.testing.assert_array_equal(fx.softmax(x), np.ones_like(x))
    np.testing.assert_array_equal(fx.log_softmax(x), np.zeros_like(x))
    np.testing.assert_array_equal(fx.entropy(x), np.zeros(5, dtype))
    # unbatched single class
    loss = fx.cross_entropy(x[0], np.int64(0))
    assert loss == 0


# ------------------------------------------------------------- a row of 2**24 classes
@pytest.fixture(scope="module")
def huge_row():
    rng = np.random.default_rng(24)
    C = 2**24
    x = (rng.standard_normal((1, C), dtype=np.float32) * 4).astype(np.float32)
    x[0, rng.integers(0, C, 1000)] = -inf                 # a few masked classes
    t = np.array([int(rng.integers(0, C))])
    x[0, t[0]] = np.float32(5.0)
    rl, rg = ref.cross_entropy(x, t)
    rl_s = ref.cross_entropy(x, t, label_smoothing=0.1)[0]
    return x, t, rl, rg, rl_s


def test_row_of_2_pow_24_classes_forward(huge_row):
    x, t, rl, rg, rl_s = huge_row
    loss = fx.cross_entropy(x, t)
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss, rl, rtol=tol(np.float32))
    np.testing.assert_allclose(fx.cross_entropy(x, t, label_smoothing=0.1), rl_s, rtol=tol(np.float32))
    np.testing.assert_allclose(fx.logsumexp(x), ref.logsumexp(x), rtol=tol(np.float32))


def test_row_of_2_pow_24_classes_forward_backward(huge_row):
    x, t, rl, rg, _ = huge_row
    loss, grad = fx.cross_entropy(x, t, return_grad=True)
    np.testing.assert_allclose(loss, rl, rtol=tol(np.float32))
    close_ieee(grad, rg, np.float32, "grad", unit=1.0)
    assert (grad[x == -inf] == 0).all()
    np.testing.assert_allclose(grad.astype(np.float64).sum(), 0.0, atol=1e-5)  # sum_j p_j - 1
    # in place over a copy
    xc = x.copy()
    loss2, g2 = fx.cross_entropy(xc, t, return_grad=True, grad_out=xc)
    assert g2 is xc
    np.testing.assert_array_equal(g2, grad)
    assert loss2 == loss


# ---------------------------------------------------- N x C beyond 2**31 elements
def _mem_available():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


BEYOND_C = 65537                        # odd: rows straddle the 2**31 boundary
BEYOND_N = 2**31 // BEYOND_C + 2        # 32769 rows: 2**31 + 98305 elements
BEYOND_BYTES = BEYOND_N * BEYOND_C * 4  # 8.6 GB of float32


@pytest.mark.skipif(_mem_available() < BEYOND_BYTES + 3 * 2**30,
                    reason=f"needs {BEYOND_BYTES / 2**30 + 3:.1f} GiB available "
                           f"(/proc/meminfo MemAvailable: {_mem_available() / 2**30:.1f} GiB)")
def test_beyond_2_pow_31_elements():
    """64-bit indexing: a float32 (N, C) input of 2**31 + 98305 elements, forward only (a
    gradient would write 8.6 GB more). The input is np.zeros, whose untouched pages the
    kernel reads as zeros, so only the few rows given distinct values cost memory; those
    rows sit at the start, across the 2**31 boundary and at the end, and are checked
    against the reference (a 32-bit index would read them from the wrong place). Every
    other row is uniform: loss log(C)."""
    C, N = BEYOND_C, BEYOND_N
    assert N * C > 2**31
    x = np.zeros((N, C), np.float32)
    rng = np.random.default_rng(31)
    rows = [0, 1, 2**31 // C, N - 1]
    assert rows[2] * C < 2**31 < (rows[2] + 1) * C
    for r in rows:
        x[r] = (rng.standard_normal(C) * 4).astype(np.float32)
    t = np.full(N, 7, np.int64)
    t[rows] = [1, 100, C - 1, 33333]
    t[5] = -100                                               # one ignored row
    saved = x[rows].astype(np.float64)

    loss = fx.cross_entropy(x, t, reduction="none")
    rl = ref.cross_entropy(saved, t[rows], reduction="none")[0]
    np.testing.assert_allclose(loss[rows], rl, rtol=tol(np.float32))
    others = np.ones(N, bool)
    others[rows] = False
    others[5] = False
    np.testing.assert_allclose(loss[others], math.log(C), rtol=tol(np.float32))
    assert loss[5] == 0
    total = fx.cross_entropy(x, t, reduction="sum")
    np.testing.assert_allclose(total, rl.sum() + (N - 5) * math.log(C), rtol=1e-6)

    lse = fx.logsumexp(x)
    np.testing.assert_allclose(lse[rows], ref.logsumexp(saved), rtol=tol(np.float32))
    np.testing.assert_allclose(lse[others], math.log(C), rtol=tol(np.float32))

    # elementwise kernel over the flat 2**31+ range: zeros are log(2) each
    tz = np.zeros((N, C), np.uint8)
    bsum = fx.binary_cross_entropy_with_logits(x, tz, reduction="sum")
    rb = ref.binary_cross_entropy_with_logits(saved, np.zeros_like(saved), reduction="sum")[0]
    np.testing.assert_allclose(bsum, rb + (N - len(rows)) * C * math.log(2.0), rtol=1e-6)


def test_smoothing_term_of_extreme_float32_logits_and_big_weights_is_summed_wide(isa):
    """float32 logits near 3e38 with weights above 1: a term b_j (m - x_j) of the
    smoothing sum overflows float32 (2.5 * 3e38) although the mean over the items fits;
    such terms are summed in float64, so the mean is finite and matches the float64
    reference (it was inf). Rows spanning +-3e38, whose m - x_j itself overflows, too."""
    for x in (np.array([[3e38, 0.0], [1.0, 2.0]] * 50, np.float32),
              np.array([[3e38, -3e38], [1.0, 2.0]] * 50, np.float32)):
        _check_extreme_smoothing(x)


def _check_extreme_smoothing(x):
    y = np.array([0, 1] * 50)
    w = np.array([5.0, 5.0], np.float32)
    for eps in (0.5, 1.0):
        for reduction in ("mean", "sum", "none"):
            loss = fx.cross_entropy(x, y, w, label_smoothing=eps, reduction=reduction)
            expected = ref.cross_entropy(x, y, w, label_smoothing=eps, reduction=reduction)[0]
            close_ieee(loss, expected, np.float32, f"eps={eps} {reduction}")
    assert np.isfinite(fx.cross_entropy(x, y, w, label_smoothing=1.0))
    xc = np.ascontiguousarray(np.moveaxis(x.reshape(2, 50, 2), 2, 1))   # (2, C, 50), axis=1
    yc = y.reshape(2, 50)
    close_ieee(fx.cross_entropy(xc, yc, w, label_smoothing=1.0),
               ref.cross_entropy(xc, yc, w, label_smoothing=1.0)[0], np.float32, "axis=1")


def test_kl_div_of_a_zero_target_is_zero_even_at_minus_inf(dtype):
    """0 log(0 / q) = 0 for every q, also q = 0 (log q = -inf): the divergence's own
    convention, documented as a deliberate difference (PyTorch computes 0 * -inf = NaN)."""
    x = np.array([-np.inf, -1.0, -np.inf], dtype)
    t = np.array([0.0, 0.0, 0.0], dtype)
    loss, grad = fx.kl_div(x, t, reduction="sum", return_grad=True)
    assert loss == 0 and np.all(grad == 0)
    lt = np.array([-np.inf, -np.inf, -np.inf], dtype)       # log_target: p = e^-inf = 0
    assert fx.kl_div(x, lt, reduction="sum", log_target=True) == 0


def test_logsumexp_keeps_what_the_max_does_not_dominate(isa, dtype):
    """logsumexp([0, -40]) = log1p(e^-40) = 4.25e-18, not the 0 that max + log(sum)
    rounds to: the sum without the maximum is kept apart and goes through log1p, as
    SciPy does (it returned 0). Also with ties at the maximum, and rows of many chunks."""
    x = np.array([[0.0, -40.0], [0.0, 0.0], [-1.0, -41.0]], dtype)
    got = fx.logsumexp(x)
    expected = np.array([np.log1p(np.exp(-40.0)), np.log(2.0), -1.0 + np.log1p(np.exp(-40.0))])
    close_ieee(got, expected, dtype, "logsumexp")
    assert got[0] > 0
    C = 3 * 16384 // np.dtype(dtype).itemsize + 5          # 4 chunks
    y = np.full((2, C), -50.0, dtype)
    y[0, 0] = 0.0
    y[1, C - 1] = 0.0
    row = np.log1p((C - 1) * np.exp(np.float64(-50.0)))
    close_ieee(fx.logsumexp(y), np.array([row, row]), dtype, "logsumexp, 4 chunks")
