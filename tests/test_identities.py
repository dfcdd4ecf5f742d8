"""The identities behind the library, checked on fastxent alone (loss and
gradient), so that they hold independently of tests/reference.py:

* cross-entropy = entropy + KL divergence:  CE(p, q) = H(p) + KL(p || q)
* cross_entropy(x, t) = nll_loss(log_softmax(x), t)
* binary_cross_entropy_with_logits(x, t) = binary_cross_entropy(sigmoid(x), t)
* two-class softmax CE on (x0, x1) = BCE-with-logits on the difference x1 - x0

(Minimising cross-entropy is maximum likelihood, scikit-learn's fit:
test_logistic_regression.py.)
"""

import numpy as np
import pytest

import fastxent as fx
from conftest import REDUCTIONS, close_ieee, make_logits, tol

LAYOUTS = {"NC": ((8, 5), 1), "NCd": ((3, 5, 4), 1), "BTV_axis-1": ((2, 3, 5), -1)}


def _f64(a):
    return np.asarray(a, dtype=np.float64)


def _log_softmax_backward(g_lsm, x, axis):
    """Chain rule through y = log_softmax(x):  dx = dy - softmax(x) * sum(dy)."""
    sm = _f64(fx.softmax(x, axis=axis))
    g = _f64(g_lsm)
    return g - sm * g.sum(axis=axis, keepdims=True)


# ------------------------------------------------------- CE = entropy + KL divergence
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_is_entropy_plus_kl(rng, dtype, reduction, layout):
    shape, axis = LAYOUTS[layout]
    a = make_logits(rng, shape, dtype, scale=2.0)   # p = softmax(a)
    b = make_logits(rng, shape, dtype, scale=2.0)   # q = softmax(b)
    p = fx.softmax(a, axis=axis)
    lq = fx.log_softmax(b, axis=axis)
    M = b.size // shape[axis]                       # number of items

    ce, g_ce = fx.cross_entropy(b, p, axis=axis, reduction=reduction, return_grad=True)
    H = _f64(fx.entropy(a, axis=axis))
    kl_items = _f64(fx.kl_div(lq, p, reduction="none")).sum(axis=axis)
    kl_red = {"none": "none", "sum": "sum", "mean": "sum"}[reduction]
    kl, g_kl = fx.kl_div(lq, p, reduction=kl_red, return_grad=True)
    if reduction == "none":
        expected = H + kl_items
    elif reduction == "sum":
        expected = H.sum() + _f64(kl)
        close_ieee(kl, kl_items.sum(), dtype, scale=1.0)
    else:
        expected = (H.sum() + _f64(kl)) / M
        g_kl = _f64(g_kl) / M
    # H and KL are both O(1) here; 1.0 is the natural absolute scale
    close_ieee(ce, expected, dtype, "CE vs H + KL", scale=1.0)
    # H(p) does not depend on b: the gradient of CE in b is that of KL through
    # the log_softmax
    close_ieee(g_ce, _log_softmax_backward(g_kl, b, axis), dtype, "grad CE vs grad KL")


def test_cross_entropy_of_itself_is_entropy(rng, dtype):
    a = make_logits(rng, (6, 7), dtype)
    p = fx.softmax(a, axis=1)
    ce, g = fx.cross_entropy(a, p, reduction="none", return_grad=True)
    close_ieee(ce, _f64(fx.entropy(a, axis=1)), dtype, scale=1.0)
    # at q = p the gradient softmax(a) - p vanishes
    assert np.max(np.abs(g)) < 10 * np.finfo(dtype).eps
    kl = _f64(fx.kl_div(fx.log_softmax(a, axis=1), p, reduction="none")).sum(1)
    assert np.all(np.abs(kl) < 10 * np.finfo(dtype).eps)


# ------------------------------------------------- cross_entropy = nll(log_softmax)
@pytest.mark.parametrize("options", ["plain", "weight", "ignore", "weight_ignore"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_is_nll_of_log_softmax(rng, dtype, reduction, layout, options):
    shape, axis = LAYOUTS[layout]
    C = shape[axis]
    x = make_logits(rng, shape, dtype)
    cax = axis % len(shape)
    t = rng.integers(0, C, size=shape[:cax] + shape[cax + 1:])
    kw = {"axis": axis, "reduction": reduction}
    if "weight" in options:
        kw["weight"] = rng.uniform(0.2, 2.0, C).astype(dtype)
    if "ignore" in options:
        kw["ignore_index"] = 1
        t.reshape(-1)[::3] = 1
        t.reshape(-1)[1] = 0
    ce, g_ce = fx.cross_entropy(x, t, return_grad=True, **kw)
    lsm = fx.log_softmax(x, axis=axis)
    nll, g_nll = fx.nll_loss(lsm, t, return_grad=True, **kw)
    close_ieee(ce, _f64(nll), dtype, "loss")
    close_ieee(g_ce, _log_softmax_backward(g_nll, x, axis), dtype, "grad")


# --------------------------------------------------- BCE with logits = BCE(sigmoid)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_is_bce_of_sigmoid(rng, dtype, reduction, weighted):
    # |x| <= 6: BCE(sigmoid(x)) forms log(1 - s) from a rounded s, which costs
    # eps / (1 - s) absolute accuracy; with 1 - s >= 2.4e-3 that is <= 2.5e-5 in
    # float32, so the comparison gets 5x the usual tolerance (the two paths round
    # differently, neither is the reference).
    shape = (7, 6)
    x = np.clip(make_logits(rng, shape, dtype, scale=2.0), -6, 6).astype(dtype)
    t = rng.random(shape).astype(dtype)
    t[::2] = np.round(t[::2])
    kw = {"reduction": reduction}
    if weighted:
        kw["weight"] = rng.uniform(0.2, 2.0, (6,)).astype(dtype)
    lw, gw = fx.binary_cross_entropy_with_logits(x, t, return_grad=True, **kw)
    s = fx.sigmoid(x)
    lb, gb = fx.binary_cross_entropy(s, t, return_grad=True, **kw)
    close_ieee(lw, _f64(lb), dtype, "loss", rtol=5 * tol(dtype))
    s64 = _f64(s)
    # chain rule through s = sigmoid(x): ds/dx = s (1 - s)
    close_ieee(gw, _f64(gb) * s64 * (1 - s64), dtype, "grad", rtol=5 * tol(dtype))


# ------------------------------------- two-class softmax CE = BCE-with-logits on x1-x0
@pytest.mark.parametrize("target", ["hard", "soft", "hard_smoothed"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_two_class_softmax_is_sigmoid(rng, dtype, reduction, target):
    N = 9
    x = make_logits(rng, (N, 2), dtype)
    d = (x[:, 1] - x[:, 0]).astype(dtype)
    if target == "soft":
        q = rng.random(N)
        ce_t = np.stack([1 - q, q], axis=1).astype(dtype)
        bce_t = q.astype(dtype)
        ls = 0.0
    else:
        y = rng.integers(0, 2, size=N)
        ce_t = y
        ls = 0.2 if target == "hard_smoothed" else 0.0
        # smoothing moves the one-hot target to (1 - eps) y + eps / 2
        bce_t = ((1 - ls) * y + ls / 2).astype(dtype)
    ce, g_ce = fx.cross_entropy(x, ce_t, reduction=reduction, label_smoothing=ls,
                                return_grad=True)
    bl, g_d = fx.binary_cross_entropy_with_logits(d, bce_t, reduction=reduction,
                                                  return_grad=True)
    # d is rounded to the input dtype, so the float32 losses differ by ~eps * |x|
    close_ieee(ce, _f64(bl), dtype, "loss", scale=1.0)
    expected = np.stack([-_f64(g_d), _f64(g_d)], axis=1)  # d(d)/dx0 = -1, d(d)/dx1 = 1
    close_ieee(g_ce, expected, dtype, "grad")
