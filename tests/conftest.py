"""Shared fixtures and assertion helpers for the fastxent test suite."""

import os
import zlib

import numpy as np
import pytest

FLOAT_DTYPES = (np.float32, np.float64)
INT_DTYPES = (np.int8, np.int16, np.int32, np.int64,
              np.uint8, np.uint16, np.uint32, np.uint64)
REDUCTIONS = ("none", "mean", "sum")

# Tolerances against the float64 reference (tests/reference.py).
#  float32: the kernels compute each row in float32 (unit roundoff 6e-8) and
#    accumulate the loss in float64; a softmax row of a few dozen classes with
#    logits of magnitude ~5 loses a few ulps in exp/log and in x - logsumexp, i.e.
#    ~1e-6 relative to the largest term -> 2e-5 leaves an order of magnitude margin.
#  float64: the same chain in double precision is good to ~1e-14 relative; 1e-11
#    leaves room for a vectorised polynomial exp/log of a few ulps and for
#    summation order, while still catching any formula error.
TOL = {np.dtype(np.float32): 2e-5, np.dtype(np.float64): 1e-11}


def tol(dtype):
    return TOL[np.dtype(dtype)]


def _env_is_ci():
    return os.environ.get("CI") == "true"


def _require(modname, pipname):
    try:
        return __import__(modname)
    except ImportError:
        msg = f"{pipname} is not installed"
        if _env_is_ci():
            pytest.fail(f"{msg}, but the CI must run these tests (CI=true)")
        pytest.skip(msg)


def require_torch():
    """Import torch; fail on CI (CI=true) when missing, skip elsewhere."""
    torch = _require("torch", "torch")
    return torch


def require_hypothesis():
    return _require("hypothesis", "hypothesis")


def require_sklearn():
    return _require("sklearn", "scikit-learn")


def require_scipy():
    _require("scipy", "scipy")
    import scipy.special
    return scipy


def assert_close(actual, expected, rtol, *, scale=None, what=""):
    """Compare ``actual`` with the float64 ``expected``.

    Arrays: |a - e| <= rtol * |e| + rtol * S, with S = max|e| over finite entries
    (or ``scale`` when given).  Relative-to-max is the right yardstick for
    gradients and per-item losses: their small entries come out of a cancellation
    (p - 1, logsumexp - x_t) whose absolute error is set by the largest terms,
    not by the entry itself.  Scalars: pure relative error, unless ``scale`` is
    given (for losses that are sums of mixed-sign terms, such as kl_div).
    Non-finite entries must match exactly (same inf sign, NaN where NaN).
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}"
    fin = np.isfinite(e)
    # exact agreement on non-finite entries
    np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=f"{what}: NaN pattern")
    np.testing.assert_array_equal(a[np.isinf(e)], e[np.isinf(e)], err_msg=f"{what}: inf entries")
    if scale is None:
        scale = np.max(np.abs(e[fin])) if (e.ndim > 0 and fin.any()) else 0.0
    np.testing.assert_allclose(a[fin], e[fin], rtol=rtol, atol=rtol * float(scale),
                               err_msg=what)


def close_ieee(actual, expected, dtype, what="", unit=0.0):
    """actual agrees with the float64 `expected`: the NaN pattern and the infinities of
    `expected` rounded to `dtype` (a true 6e38 is inf in float32) match exactly; finite
    entries within tol(dtype) relative to the largest finite entry (or `unit`, the size of
    the terms that cancel), plus the dtype's smallest normal (subnormals may flush)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    with np.errstate(over="ignore"):
        er = e.astype(dtype).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(er), err_msg=f"{what}: NaN pattern")
    isinf = np.isinf(er)
    np.testing.assert_array_equal(a[isinf], er[isinf], err_msg=f"{what}: infinities")
    fin = np.isfinite(er)
    scale = max(float(np.abs(e[fin]).max()) if fin.any() and e.ndim else 0.0, unit)
    np.testing.assert_allclose(a[fin], e[fin], rtol=tol(dtype),
                               atol=tol(dtype) * scale + float(np.finfo(dtype).tiny), err_msg=what)


def check_loss_type(loss, dtype, reduction, item_shape):
    """Loss is a NumPy scalar of the input dtype for mean/sum, an array for none."""
    if reduction == "none":
        assert isinstance(loss, np.ndarray), type(loss)
        assert loss.dtype == np.dtype(dtype), loss.dtype
        assert loss.shape == tuple(item_shape), (loss.shape, item_shape)
    else:
        assert isinstance(loss, np.floating), type(loss)
        assert loss.dtype == np.dtype(dtype), loss.dtype


def check_grad_type(grad, x):
    assert isinstance(grad, np.ndarray), type(grad)
    assert grad.dtype == x.dtype, (grad.dtype, x.dtype)
    assert grad.shape == x.shape, (grad.shape, x.shape)


# ---------------------------------------------------------------- ISA parametrisation
def available_isas():
    try:
        import fastxent
        isas = list(fastxent.show_config()["isa_available"])
        return isas or ["<none>"]
    except Exception:  # package not importable: the fixture below reports it
        return ["<unavailable>"]


def pytest_generate_tests(metafunc):
    if "isa" in metafunc.fixturenames:
        metafunc.parametrize("isa", available_isas(), indirect=True)


@pytest.fixture
def isa(request):
    """Switch fastxent's kernel variant for one test, restore it afterwards."""
    import fastxent
    from fastxent import _core
    name = request.param
    prev = _core.select_isa(name)
    try:
        assert fastxent.show_config()["isa"] == name
        yield name
    finally:
        _core.select_isa(prev)


# ------------------------------------------------------------------------- fixtures
@pytest.fixture
def rng(request):
    # deterministic per test (hash() is salted per process; crc32 is not)
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def torch():
    return require_torch()


def make_logits(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def make_probs(rng, shape, axis, dtype=np.float64):
    z = rng.standard_normal(shape) * 1.5
    z = z - z.max(axis=axis, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(axis=axis, keepdims=True)).astype(dtype)
