"""Logistic regression fitted by L-BFGS on fastxent's fused loss and gradient.

Maximum likelihood is minimum cross-entropy: a multinomial logistic regression minimises the
mean softmax cross-entropy of the logits ``Z = X W^T + b``, and a binary one the mean
BCE-with-logits of ``z = X w + b``. fastxent returns that loss *and* its gradient with respect
to the logits in one pass (``return_grad=True``); the chain rule through the linear layer is a
matrix product, ``dW = G^T X`` and ``db = sum(G)``.

The objective is scikit-learn's ``LogisticRegression`` (L2 penalty, ``fit_intercept=True``, no
sample weights), as its lbfgs solver computes it (``sklearn/linear_model/_logistic.py``:
``l2_reg_strength = 1 / (C * sw_sum)``; ``sklearn/linear_model/_linear_loss.py``: the loss is
the average of the per-sample losses plus ``l2_reg_strength / 2 * ||W||^2``, the intercept
excluded from the penalty)::

    f(W, b) = 1/n sum_i CE(x_i W^T + b, y_i)  +  ||W||_F^2 / (2 C n)

which is the user guide's ``C sum_i CE_i + ||W||^2 / 2`` divided by ``C n``: the same minimiser.
In the multinomial case every class has its own row of ``W`` (scikit-learn's symmetric
parametrisation) and all of them are penalised.

Run it from the repository root to compare the objective reached here with the one reached by
scikit-learn; it needs SciPy (the L-BFGS) and scikit-learn (the data sets and the comparison),
which the ``examples`` extra installs::

    pip install ".[examples]" && python examples/logistic_regression.py

``fit`` is importable (tests/test_logistic_regression.py uses it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

import fastxent as fx


@dataclass
class FitResult:
    coef: np.ndarray  # (K, d) for multinomial, (d,) for binary
    intercept: np.ndarray  # (K,) for multinomial, () for binary
    objective: float  # f(W, b) at the solution, computed with fastxent
    classes: np.ndarray  # the sorted labels; binary: classes[1] is the positive class
    kind: str  # "multinomial" or "binary"
    n_iter: int
    converged: bool
    message: str


def _encode(y):
    classes, yi = np.unique(np.asarray(y), return_inverse=True)
    return classes, yi.astype(np.int64).reshape(-1)


def _unpack(params, kind, n_classes, d):
    if kind == "multinomial":
        W = params[: n_classes * d].reshape(n_classes, d)
        return W, params[n_classes * d :]
    return params[:d], params[d]


def objective_and_grad(params, X, y, C, kind, n_classes, n_threads=None):
    """f(W, b) and its gradient, flattened like ``params``.

    ``y``: int64 class indices for ``"multinomial"``, a float 0/1 array for ``"binary"``.
    """
    n, d = X.shape
    W, b = _unpack(params, kind, n_classes, d)
    penalty = 1.0 / (C * n)  # l2_reg_strength
    if kind == "multinomial":
        Z = X @ W.T
        Z += b
        # mean softmax cross-entropy and G = d(mean loss)/dZ, in one pass, G written over Z
        loss, G = fx.cross_entropy(Z, y, return_grad=True, grad_out=Z, n_threads=n_threads)
        gW = G.T @ X
        gW += penalty * W
        gb = G.sum(axis=0)
    else:
        z = X @ W
        z += b
        loss, g = fx.binary_cross_entropy_with_logits(
            z, y, return_grad=True, grad_out=z, n_threads=n_threads
        )
        gW = X.T @ g
        gW += penalty * W
        gb = np.atleast_1d(g.sum())
    obj = float(loss) + 0.5 * penalty * float(np.vdot(W, W))
    return obj, np.concatenate([gW.ravel(), np.ravel(gb)])


def fit(X, y, C=1.0, kind=None, tol=1e-10, max_iter=10000, n_threads=None):
    """Fit an L2-penalised logistic regression by L-BFGS (scipy.optimize.minimize, jac=True).

    kind: ``"multinomial"`` (softmax cross-entropy, one weight row per class), ``"binary"``
    (BCE with logits, one weight vector; needs exactly two classes), or None: binary for two
    classes, multinomial otherwise -- what scikit-learn's lbfgs solver does.
    Returns a FitResult with the parameters and the objective reached.
    """
    from scipy.optimize import minimize

    X = np.ascontiguousarray(X, dtype=np.float64)
    classes, yi = _encode(y)
    K = len(classes)
    if kind is None:
        kind = "binary" if K == 2 else "multinomial"
    if kind == "binary":
        if K != 2:
            raise ValueError(f"binary logistic regression needs 2 classes, got {K}")
        target = yi.astype(np.float64)
        n_params = X.shape[1] + 1
    elif kind == "multinomial":
        target = yi
        n_params = K * (X.shape[1] + 1)
    else:
        raise ValueError(f"kind must be 'multinomial', 'binary' or None, got {kind!r}")
    res = minimize(
        objective_and_grad,
        np.zeros(n_params),
        args=(X, target, C, kind, K, n_threads),
        jac=True,
        method="L-BFGS-B",
        # scikit-learn's lbfgs settings, with a tighter tolerance by default
        options={"maxiter": max_iter, "maxls": 50, "gtol": tol,
                 "ftol": 64 * np.finfo(float).eps},
    )
    W, b = _unpack(res.x, kind, K, X.shape[1])
    obj, _ = objective_and_grad(res.x, X, target, C, kind, K, n_threads)
    return FitResult(
        coef=W.copy(),
        intercept=np.array(b, copy=True),
        objective=obj,
        classes=classes,
        kind=kind,
        n_iter=int(res.nit),
        converged=bool(res.success),
        message=str(res.message),
    )


def reference_objective(coef, intercept, X, y, C):
    """The same objective in plain NumPy (float64, no fastxent), for any parameter set.

    coef (K, d) with intercept (K,) is multinomial; coef (d,) or (1, d) with intercept () or
    (1,) -- scikit-learn's binary ``coef_`` / ``intercept_`` -- is binary. ``y``: the labels.
    """
    X = np.asarray(X, dtype=np.float64)
    _, yi = _encode(y)
    n = X.shape[0]
    coef = np.asarray(coef, dtype=np.float64)
    intercept = np.asarray(intercept, dtype=np.float64)
    if coef.ndim == 2 and coef.shape[0] > 1:
        Z = X @ coef.T + intercept
        m = Z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(Z - m).sum(axis=1)) + m[:, 0]
        loss = np.mean(lse - Z[np.arange(n), yi])
    else:
        w = coef.reshape(-1)
        z = X @ w + intercept.reshape(-1)[0]
        loss = np.mean(np.logaddexp(0.0, z) - yi * z)
    return float(loss + np.vdot(coef, coef) / (2.0 * C * n))


def load_dataset(name):
    """A dataset that scikit-learn ships, standardised: 'iris' (3 classes) or 'breast_cancer'."""
    from sklearn import datasets
    from sklearn.preprocessing import StandardScaler

    loader = {"iris": datasets.load_iris, "breast_cancer": datasets.load_breast_cancer}[name]
    X, y = loader(return_X_y=True)
    return StandardScaler().fit_transform(X), y


def sklearn_fit(X, y, C=1.0, tol=1e-10, max_iter=10000):
    """scikit-learn's LogisticRegression (lbfgs, default L2 penalty) fitted tightly."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, tol=tol, max_iter=max_iter).fit(X, y)


def main():
    try:
        import scipy.optimize  # noqa: F401
        import sklearn  # noqa: F401
    except ImportError as e:
        raise SystemExit(f"{e}: this example needs SciPy and scikit-learn; from the repository "
                         'root: pip install ".[examples]"') from None
    print(f"fastxent {fx.show_config().get('version')}")
    for name, kind in [("iris", "multinomial"), ("breast_cancer", "binary")]:
        X, y = load_dataset(name)
        for C in (1.0, 0.1):
            t0 = time.perf_counter()
            ours = fit(X, y, C=C, kind=kind)
            t1 = time.perf_counter()
            sk = sklearn_fit(X, y, C=C)
            t2 = time.perf_counter()
            f_ours = reference_objective(ours.coef, ours.intercept, X, y, C)
            f_sk = reference_objective(sk.coef_, sk.intercept_, X, y, C)
            print(
                f"{name:13s} {kind:11s} C={C:<4g} objective: fastxent+L-BFGS {f_ours:.12f} "
                f"({ours.n_iter} it, {1e3 * (t1 - t0):.0f} ms)  sklearn {f_sk:.12f} "
                f"({int(np.max(sk.n_iter_))} it, {1e3 * (t2 - t1):.0f} ms)  "
                f"relative difference {(f_ours - f_sk) / abs(f_sk):+.2e}"
            )


if __name__ == "__main__":
    main()
