"""Maximum likelihood is minimum cross-entropy: examples/logistic_regression.py, which fits a
logistic regression by L-BFGS on fastxent's fused loss and gradient, reaches the optimum of
scikit-learn's LogisticRegression (the same objective, evaluated by one NumPy function for both
parameter sets) within 1e-5 relative, multinomial and binary; and without a penalty, on data
that is not separable, the fit is scikit-learn's maximum likelihood."""

import importlib.util
import os
import sys

import numpy as np
import pytest

import fastxent as fx
from conftest import close_ieee, require_scipy, require_sklearn

# fail on CI (CI=true), skip the module elsewhere
require_scipy()
require_sklearn()
import scipy.optimize  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402

EXAMPLE = os.path.join(os.path.dirname(__file__), os.pardir, "examples", "logistic_regression.py")


@pytest.fixture(scope="module")
def lr():
    spec = importlib.util.spec_from_file_location("fastxent_example_logreg", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up in sys.modules
    spec.loader.exec_module(mod)
    return mod


CASES = [("iris", "multinomial"), ("breast_cancer", "binary")]


@pytest.mark.parametrize("C", [1.0, 0.1])
@pytest.mark.parametrize("dataset,kind", CASES)
def test_reaches_sklearn_optimum(lr, dataset, kind, C):
    X, y = lr.load_dataset(dataset)
    ours = lr.fit(X, y, C=C, kind=kind)
    sk = lr.sklearn_fit(X, y, C=C)
    assert ours.kind == kind
    # one objective function, in plain NumPy, for both parameter sets
    f_ours = lr.reference_objective(ours.coef, ours.intercept, X, y, C)
    f_sk = lr.reference_objective(sk.coef_, sk.intercept_, X, y, C)
    assert abs(f_ours - f_sk) <= 1e-5 * abs(f_sk), (f_ours, f_sk)
    # and the objective fastxent computed during the fit is that objective
    assert ours.objective == pytest.approx(f_ours, rel=1e-10)
    # the fitted model predicts like scikit-learn's
    if kind == "multinomial":
        pred = ours.classes[np.argmax(X @ ours.coef.T + ours.intercept, axis=1)]
    else:
        pred = ours.classes[(X @ ours.coef + ours.intercept > 0).astype(int)]
    assert np.mean(pred == sk.predict(X)) >= 0.99


@pytest.mark.parametrize("dataset,kind", CASES)
def test_gradient_matches_central_differences(lr, dataset, kind):
    X, y = lr.load_dataset(dataset)
    X = X[:60]
    classes, yi = np.unique(y[:60], return_inverse=True)
    K = len(classes) if kind == "multinomial" else 2
    target = yi.astype(np.int64) if kind == "multinomial" else yi.astype(np.float64)
    n_params = K * (X.shape[1] + 1) if kind == "multinomial" else X.shape[1] + 1
    rng = np.random.default_rng(0)
    p = 0.5 * rng.standard_normal(n_params)
    C = 0.7
    f, g = lr.objective_and_grad(p, X, target, C, kind, K)
    h = 1e-6
    num = np.empty_like(p)
    for i in range(n_params):
        e = np.zeros_like(p)
        e[i] = h
        num[i] = (lr.objective_and_grad(p + e, X, target, C, kind, K)[0]
                  - lr.objective_and_grad(p - e, X, target, C, kind, K)[0]) / (2 * h)
    np.testing.assert_allclose(g, num, rtol=1e-5, atol=1e-8)
    # the objective is the NumPy reference objective
    W = p[: K * X.shape[1]].reshape(K, -1) if kind == "multinomial" else p[:-1]
    b = p[K * X.shape[1]:] if kind == "multinomial" else p[-1]
    assert f == pytest.approx(lr.reference_objective(W, b, X, y[:60], C), rel=1e-10)


def test_unpenalised_fit_is_sklearns_maximum_likelihood():
    """Fit a multinomial logistic regression by minimising fx.cross_entropy with
    its own gradient; reach scikit-learn's (unpenalised) maximum likelihood."""
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
    assert abs(ours - theirs) <= 1e-6 * theirs, (ours, theirs)
    # and our loss at sklearn's parameters is sklearn's log-likelihood
    W_sk = np.vstack([clf.coef_.T, clf.intercept_[None, :]])
    close_ieee(fx.cross_entropy(Xb @ W_sk, y), theirs, np.float64, rtol=1e-12)
