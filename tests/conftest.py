"""Shared fixtures and assertion helpers for the fastxent test suite.

The map of tests/:
  conftest.py        fixtures (rng, dtype, isa, torch); the one IEEE-aware comparison with
                     the float64 reference (close_ieee) and the one bit-equality check
                     (assert_same_bits); tolerances; input makers; require_* (an optional
                     dependency missing: a failure when CI=true, a skip elsewhere); the
                     hypothesis settings profile
  registry.py        the one registry: every loss and building block with its fastxent call,
                     its float64 reference and the arguments it takes; CASES, valid calls
                     exercising each loss's options. The generic tests iterate over it.
  reference.py       the float64 NumPy reference (never imports fastxent)
  test_core.py       per ISA: cross_entropy / BCE-with-logits core, grad_out for every call,
                     extreme logits, central differences, building blocks; registry vs API
  test_family.py     every option of every loss against the reference (weights, ignore_index,
                     smoothing, soft targets, class axes, broadcasting, kl_div reductions)
  test_identities.py identities between the functions, on fastxent alone
  test_ieee.py       NaN, +-inf, extreme finite logits, tiny losses, empty / huge sizes
  test_errors.py     bad input (exception type, message, nothing written), labels, the fuzz
  test_buffers.py    memory layouts of every argument, grad_out / out= layouts and aliasing,
                     streamed gradients: bit-identical to contiguous calls
  test_concurrency.py  Python threads, n_threads, threadpoolctl, fork, label races, leaks
  test_properties.py hypothesis: random shapes, layouts and value regimes vs the reference
  test_torch_parity.py  torch.nn.functional + autograd parity over the option grids
  test_torch_autograd.py  fastxent.torch: gradcheck, opcheck, parity with torch.nn.functional,
                     errors, modules, a training trajectory, torch.compile
  test_vecmath.py    the kernels' exp / log1p / log in ulps, per ISA
  test_logistic_regression.py  fits by fastxent reach scikit-learn's optima
  test_half.py       float16 / bfloat16 input: the float32 kernels' result rounded once,
                     float64 accuracy, PyTorch's half precision for comparison
  test_import.py     `import fastxent` pulls in no optional package
  test_build.py      a build without OpenMP
Regression tests sit beside the function they cover.
"""

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
        pytest.skip(msg, allow_module_level=True)


def require_torch():
    """Import torch; fail on CI (CI=true) when missing, skip elsewhere."""
    torch = _require("torch", "torch")
    return torch


def require_ml_dtypes():
    """Import ml_dtypes (NumPy's bfloat16); fail on CI (CI=true) when missing, skip elsewhere."""
    return _require("ml_dtypes", "ml_dtypes")


def require_hypothesis():
    return _require("hypothesis", "hypothesis")


def require_sklearn():
    return _require("sklearn", "scikit-learn")


def require_torchmetrics():
    return _require("torchmetrics", "torchmetrics")


def require_threadpoolctl():
    return _require("threadpoolctl", "threadpoolctl")


def require_scipy():
    return _require("scipy.optimize", "scipy")   # the scipy package, scipy.optimize loaded


def require_dask():
    """Import dask.array and distributed (fastxent.dask's optional dependencies)."""
    _require("dask.array", "dask[array]")
    return _require("distributed", "distributed")


def close_ieee(actual, expected, dtype, what="", unit=0.0, *, scale=None, rtol=None):
    """The one IEEE-aware comparison: `actual` agrees with the float64 `expected`.

    * NaN pattern and infinities: those of `expected` rounded to `dtype` (a true 6e38 is
      inf in float32) must match exactly (same inf sign, NaN where NaN);
    * finite entries: |a - e| <= rtol |e| + rtol S + tiny, with rtol = tol(dtype) unless
      given, tiny the dtype's smallest normal (subnormal results may flush to zero), and S
      the yardstick of the absolute error: `scale` when given, else the largest finite
      |expected| of an array (0 for a scalar, which is then compared relatively), at least
      `unit` (the size of the terms that cancel: gradients and per-item losses come out of
      differences such as p - 1 or lse - x_t whose error is set by the largest terms).
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != expected {e.shape}"
    rtol = tol(dtype) if rtol is None else rtol
    with np.errstate(over="ignore"):
        er = e.astype(dtype).astype(np.float64)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(er), err_msg=f"{what}: NaN pattern")
    isinf = np.isinf(er)
    np.testing.assert_array_equal(a[isinf], er[isinf], err_msg=f"{what}: infinities")
    fin = np.isfinite(er)
    if scale is None:
        scale = max(float(np.abs(e[fin]).max()) if fin.any() and e.ndim else 0.0, unit)
    np.testing.assert_allclose(a[fin], e[fin], rtol=rtol,
                               atol=rtol * float(scale) + float(np.finfo(dtype).tiny), err_msg=what)


def canonical_nan(a):
    """a with every NaN as the positive quiet NaN (its sign and payload dropped: where two
    kernels' instructions take a NaN from different operands, the compiler's choice)."""
    a = np.asarray(a)
    return np.where(np.isnan(a), np.array(np.nan, a.dtype), a)


def assert_same_bits(actual, expected, what=""):
    """The one bit-equality check: the same bits (NaN payloads and the sign of zero
    included), the same shape and the same dtype up to byte order. Takes NumPy scalars,
    arrays, and tuples of them (a (loss, grad) pair)."""
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected), f"{what}: {type(actual)}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_same_bits(a, e, f"{what}[{i}]")
        return
    a, e = np.asarray(actual), np.asarray(expected)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    assert (a.dtype.kind, a.dtype.itemsize) == (e.dtype.kind, e.dtype.itemsize), \
        f"{what}: dtype {a.dtype} != {e.dtype}"
    native = a.dtype.newbyteorder("=")
    a = np.ascontiguousarray(a, dtype=native)
    e = np.ascontiguousarray(e, dtype=native)
    if a.tobytes() != e.tobytes():
        diff = (a.reshape(-1).view(np.uint8).reshape(a.size, -1)
                != e.reshape(-1).view(np.uint8).reshape(e.size, -1)).any(axis=1)
        i = int(np.argmax(diff))
        raise AssertionError(f"{what}: {int(diff.sum())} of {a.size} entries differ in their bits; "
                             f"first at flat index {i}: {a.reshape(-1)[i]!r} != {e.reshape(-1)[i]!r}")


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
@pytest.fixture(params=FLOAT_DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    """The two float dtypes fastxent computes in (np.float32, np.float64)."""
    return request.param


@pytest.fixture
def rng(request):
    # deterministic per test (hash() is salted per process; crc32 is not)
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


@pytest.fixture(scope="session")
def torch():
    return require_torch()


# ------------------------------------------------------------------ hypothesis settings
try:
    from hypothesis import HealthCheck, settings as _hyp_settings
except ImportError:  # test_properties.py reports it (fails on CI)
    pass
else:
    # shared by every property test; each test sets only its max_examples
    _hyp_settings.register_profile(
        "fastxent", deadline=None, derandomize=True, database=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    _hyp_settings.load_profile("fastxent")


# --------------------------------------------------------------------- input makers
def make_logits(rng, shape, dtype, scale=3.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


def make_probs(rng, shape, axis, dtype=np.float64):
    z = rng.standard_normal(shape) * 1.5
    z = z - z.max(axis=axis, keepdims=True)
    p = np.exp(z)
    return (p / p.sum(axis=axis, keepdims=True)).astype(dtype)
