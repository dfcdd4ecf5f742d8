"""The kernels' own exp and log1p, measured in ulps against extended precision.

These are the point functions every kernel leans on (kernels/fx_vecmath.h: vexp_nonpos for
x <= 0, vlog1p_unit for e in [0, 1], vlog for binary_cross_entropy and kl_div); they are
tested directly through the test hook
_core.vecmath, for every ISA variant this CPU can run. Bounds: exp within 1.5 ulp (over
every float32 in its normal range, tools/check_exp_ulp.py measures 1.00 ulp with the
AVX2/AVX-512 table and 1.34 on the baseline ISA, which has no fused multiply-add);
log1p within 2 ulp in float32 (its fitted polynomial: the largest error over every
float32 in [0, 1] is 1.65 ulp) and 4 ulp in float64 (the atanh series); log within 4 ulp.
"""
import numpy as np

from fastxent import _core

EXP_ULP = 1.5
LOG1P_ULP = {np.float32: 2.0, np.float64: 4.0}


# the `isa` fixture (conftest.py) runs each test once per ISA variant this CPU supports,
# the `dtype` fixture once per float dtype


def _ulp_error(got, ref, dtype):
    ref_ld = ref.astype(np.longdouble)
    ulp = np.spacing(np.abs(ref_ld.astype(dtype))).astype(np.longdouble)
    ulp[ulp == 0] = np.spacing(dtype(0))
    return np.abs(got.astype(np.longdouble) - ref_ld) / ulp


def _run(x, what):
    out = np.empty_like(x)
    _core.vecmath(x, out, what)
    return out


def test_exp_ulp_bound(isa, dtype):
    # down to where exp(x) is still a normal number of the dtype
    lo = np.log(np.finfo(dtype).tiny) * (1 - 1e-6)
    x = np.concatenate([np.linspace(lo, 0, 400_001), -np.logspace(-30, np.log10(-lo), 40_001)]).astype(dtype)
    err = _ulp_error(_run(x, 0), np.exp(x.astype(np.longdouble)), dtype)
    assert err.max() <= EXP_ULP, f"max {err.max():.3f} ulp at x={x[err.argmax()]!r}"


def test_exp_subnormal_results(isa, dtype):
    """Below the smallest normal number every ISA returns the subnormal result, rounded
    once, as SciPy and PyTorch do (the AVX2/baseline exp flushed them to 0 before), and
    0 below half the smallest subnormal; mixed in a vector with normal results too."""
    tiny = np.finfo(dtype).tiny
    smallest = np.nextafter(dtype(0), dtype(1))
    lo = np.log(tiny)
    x = np.linspace(np.log(smallest) - 2, lo, 20_001).astype(dtype)
    x = np.stack([x, np.full_like(x, -1.0)], axis=1).reshape(-1)   # normal neighbours
    got = _run(x, 0)
    ref = np.exp(x.astype(np.longdouble))
    err = np.abs(got.astype(np.longdouble) - ref) / np.longdouble(smallest)
    sub = ref < tiny
    assert err[sub].max() <= 1.0, f"max {err[sub].max():.3f} subnormal ulps"
    assert np.all(got[sub] < tiny) and got[np.argmin(np.abs(ref - 3 * smallest))] > 0
    err_normal = _ulp_error(got[~sub], ref[~sub], dtype)
    assert err_normal.max() <= EXP_ULP


def test_exp_special_values(isa, dtype):
    x = np.array([-np.inf, np.nan, 0.0, -0.0, -1e4, np.finfo(dtype).min], dtype=dtype)
    got = _run(x, 0)
    assert got[0] == 0.0 and np.isnan(got[1]) and got[2] == 1.0 and got[3] == 1.0
    assert got[4] == 0.0 and got[5] == 0.0
    # below the normal range the result is 0 or a correctly small subnormal, never more
    tiny = np.array([np.log(np.finfo(dtype).tiny) - 5.0], dtype=dtype)
    assert 0.0 <= _run(tiny, 0)[0] <= np.finfo(dtype).tiny


def test_log1p_ulp_bound(isa, dtype):
    tiny_exp = -36 if dtype == np.float32 else -300
    e = np.concatenate([np.linspace(0, 1, 400_001), np.logspace(tiny_exp, 0, 40_001)]).astype(dtype)
    err = _ulp_error(_run(e, 1), np.log1p(e.astype(np.longdouble)), dtype)
    assert err.max() <= LOG1P_ULP[dtype], f"max {err.max():.3f} ulp at e={e[err.argmax()]!r}"
    assert np.isnan(_run(np.array([np.nan], dtype=dtype), 1)[0])


LOG_ULP = 4.0


def test_log_ulp_bound_and_special_values(isa, dtype):
    fi = np.finfo(dtype)
    x = np.concatenate([
        np.linspace(0.5, 2.0, 200_001),
        np.logspace(np.log10(fi.smallest_subnormal) + 1, np.log10(fi.max) - 1, 200_001),
    ]).astype(dtype)
    err = _ulp_error(_run(x, 2), np.log(x.astype(np.longdouble)), dtype)
    assert err.max() <= LOG_ULP, f"max {err.max():.3f} ulp at x={x[err.argmax()]!r}"
    special = _run(np.array([0.0, -0.0, np.inf, -1.0, -np.inf, np.nan, 1.0], dtype=dtype), 2)
    assert special[0] == -np.inf and special[1] == -np.inf and special[2] == np.inf
    assert np.isnan(special[3:6]).all() and special[6] == 0.0
