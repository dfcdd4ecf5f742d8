"""The identities behind the library, checked on fastxent alone (loss and
gradient), so that they hold independently of tests/reference.py:

* cross-entropy = entropy + KL divergence:  CE(p, q) = H(p) + KL(p || q)
* cross_entropy(x, t) = nll_loss(log_softmax(x), t)
* binary_cross_entropy_with_logits(x, t) = binary_cross_entropy(sigmoid(x), t)
* two-class softmax CE on (x0, x1) = BCE-with-logits on the difference x1 - x0
* minimising cross-entropy is maximum likelihood (scikit-learn's fit)
"""

import numpy as np
import pytest

import fastxent as fx
from conftest import (FLOAT_DTYPES, REDUCTIONS, assert_close, make_logits,
                      require_scipy, require_sklearn, tol)

DT_IDS = lambda d: np.dtype(d).name  # noqa: E731
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
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DT_IDS)
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
        assert_close(kl, kl_items.sum(), tol(dtype), scale=1.0)
    else:
        expected = (H.sum() + _f64(kl)) / M
        g_kl = _f64(g_kl) / M
    # H and KL are both O(1) here; 1.0 is the natural absolute scale
    assert_close(ce, expected, tol(dtype), scale=1.0, what="CE vs H + KL")
    # H(p) does not depend on b: the gradient of CE in b is that of KL through
    # the log_softmax
    assert_close(g_ce, _log_softmax_backward(g_kl, b, axis), tol(dtype),
                 what="grad CE vs grad KL")


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DT_IDS)
def test_cross_entropy_of_itself_is_entropy(rng, dtype):
    a = make_logits(rng, (6, 7), dtype)
    p = fx.softmax(a, axis=1)
    ce, g = fx.cross_entropy(a, p, reduction="none", return_grad=True)
    assert_close(ce, _f64(fx.entropy(a, axis=1)), tol(dtype), scale=1.0)
    # at q = p the gradient softmax(a) - p vanishes
    assert np.max(np.abs(g)) < 10 * np.finfo(dtype).eps
    kl = _f64(fx.kl_div(fx.log_softmax(a, axis=1), p, reduction="none")).sum(1)
    assert np.all(np.abs(kl) < 10 * np.finfo(dtype).eps)


# ------------------------------------------------- cross_entropy = nll(log_softmax)
@pytest.mark.parametrize("options", ["plain", "weight", "ignore", "weight_ignore"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DT_IDS)
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
    assert_close(ce, _f64(nll), tol(dtype), what="loss")
    assert_close(g_ce, _log_softmax_backward(g_nll, x, axis), tol(dtype), what="grad")


# --------------------------------------------------- BCE with logits = BCE(sigmoid)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DT_IDS)
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
    assert_close(lw, _f64(lb), 5 * tol(dtype), what="loss")
    s64 = _f64(s)
    # chain rule through s = sigmoid(x): ds/dx = s (1 - s)
    assert_close(gw, _f64(gb) * s64 * (1 - s64), 5 * tol(dtype), what="grad")


# ------------------------------------- two-class softmax CE = BCE-with-logits on x1-x0
@pytest.mark.parametrize("target", ["hard", "soft", "hard_smoothed"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=DT_IDS)
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
    assert_close(ce, _f64(bl), tol(dtype), scale=1.0, what="loss")
    expected = np.stack([-_f64(g_d), _f64(g_d)], axis=1)  # d(d)/dx0 = -1, d(d)/dx1 = 1
    assert_close(g_ce, expected, tol(dtype), what="grad")


# ------------------------------------------------ cross-entropy is maximum likelihood
def test_logistic_regression_fit_matches_sklearn():
    """Fit a multinomial logistic regression by minimising fx.cross_entropy with
    its own gradient; reach scikit-learn's (unpenalised) maximum likelihood."""
    scipy = require_scipy()
    import scipy.optimize  # noqa: F401
    sklearn = require_sklearn()
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    N, D, C = 300, 4, 3
    X = rng.standard_normal((N, D))
    W_true = rng.standard_normal((D, C))
    logits = X @ W_true + rng.gumbel(size=(N, C)) * 1.5   # noisy: not separable
    y = logits.argmax(axis=1)
    Xb = np.hstack([X, np.ones((N, 1))])

    def f(theta):
        W = theta.reshape(D + 1, C)
        loss, g = fx.cross_entropy(Xb @ W, y, return_grad=True)
        return float(loss), (Xb.T @ g).ravel()

    res = scipy.optimize.minimize(f, np.zeros((D + 1) * C), jac=True, method="L-BFGS-B",
                                  options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000})
    ours = res.fun
    clf = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(X, y)
    P = clf.predict_proba(X)
    theirs = -np.mean(np.log(P[np.arange(N), y]))
    # the same convex optimum, reached by two different optimisers
    assert abs(ours - theirs) <= 1e-6 * theirs, (ours, theirs, sklearn.__version__)
    # and our loss at sklearn's parameters is sklearn's log-likelihood
    W_sk = np.vstack([clf.coef_.T, clf.intercept_[None, :]])
    assert_close(fx.cross_entropy(Xb @ W_sk, y), theirs, 1e-12)

