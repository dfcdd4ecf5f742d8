"""Core behaviour on every available kernel variant (ISA): cross_entropy and
binary_cross_entropy_with_logits (loss and gradient, every reduction, dtype, label dtype,
extreme logits), grad_out (preallocated and in place) for every call of the registry, the
gradients against central differences, and the building blocks.

Elsewhere: the options of the whole family in test_family.py, thread counts in
test_concurrency.py, memory layouts in test_buffers.py, NaN/inf in test_ieee.py."""

import inspect

import numpy as np
import pytest

import fastxent as fx
import reference as ref
from conftest import (INT_DTYPES, REDUCTIONS, assert_same_bits, check_grad_type, check_loss_type,
                      close_ieee, make_logits, make_probs)
from registry import BLOCKS, CASES, LOSSES

SHAPES_2D = {"C": (7,), "NC": (9, 7)}


def _labels(rng, shape, C, dtype):
    tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
    return np.asarray(rng.integers(0, C, size=tshape), dtype=dtype)


# ------------------------------------------------------------------------ config / ISA
def test_show_config_reports_isas():
    cfg = fx.show_config()
    assert isinstance(cfg, dict)
    assert cfg["isa"] in cfg["isa_available"]
    assert len(cfg["isa_available"]) >= 1


def test_select_isa_switches_and_restores(isa):
    # the fixture switched to `isa`; a second switch returns it as the previous one
    from fastxent import _core
    other = fx.show_config()["isa_available"][0]
    prev = _core.select_isa(other)
    try:
        assert prev == isa
        assert fx.show_config()["isa"] == other
    finally:
        assert _core.select_isa(prev) == other
    assert fx.show_config()["isa"] == isa


def test_registry_is_the_public_api():
    """tests/registry.py lists every public function with the keyword arguments it takes:
    a function added, removed or given another option must show up in the registry (and
    so in the generic tests that iterate over it)."""
    assert set(fx.__all__) == set(LOSSES) | set(BLOCKS) | {"show_config"}
    for name, loss in LOSSES.items():
        params = list(inspect.signature(loss.fx).parameters)[2:]          # after input, target
        assert set(params) == {*loss.options, "reduction", "return_grad", "grad_out", "n_threads"}, name
    for name, block in BLOCKS.items():
        params = list(inspect.signature(block.fx).parameters)[1:]         # after the input
        assert set(params) == {"out", "n_threads"} | ({"axis"} if block.has_axis else set()), name


# ---------------------------------------------------------------- cross_entropy core
@pytest.mark.parametrize("label_dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", list(SHAPES_2D))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_hard_labels(isa, rng, dtype, reduction, layout, label_dtype):
    shape = SHAPES_2D[layout]
    C = shape[-1]
    x = make_logits(rng, shape, dtype)
    t = _labels(rng, shape, C, label_dtype)
    x0 = x.copy()
    loss_ref, grad_ref = ref.cross_entropy(x, t, reduction=reduction)

    loss, grad = fx.cross_entropy(x, t, reduction=reduction, return_grad=True)
    check_loss_type(loss, dtype, reduction, t.shape)
    check_grad_type(grad, x)
    close_ieee(loss, loss_ref, dtype, "loss")
    # the gradient's entries are differences p - 1 of terms of size 1 (divided by the
    # number of items for the mean): that is the yardstick of their error, even where a
    # confident row makes every entry small
    close_ieee(grad, grad_ref, dtype, "grad", unit=1.0 / max(t.size, 1) if reduction == "mean" else 1.0)
    assert_same_bits(x, x0, "input untouched without grad_out")

    # the loss alone (no gradient) is the same loss
    loss_only = fx.cross_entropy(x, t, reduction=reduction)
    check_loss_type(loss_only, dtype, reduction, t.shape)
    close_ieee(loss_only, loss_ref, dtype, "loss without grad")


@pytest.mark.parametrize("layout", list(SHAPES_2D))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_options_per_isa(isa, rng, dtype, reduction, layout):
    # weight + ignore_index + label_smoothing + soft targets through every ISA
    shape = SHAPES_2D[layout]
    C = shape[-1]
    x = make_logits(rng, shape, dtype)
    w = rng.uniform(0.2, 2.0, C).astype(dtype)
    t = _labels(rng, shape, C, np.int64)
    if t.ndim:
        t[::3] = 4  # ignored rows
    else:
        t = np.asarray(2, dtype=np.int64)
    for kw in ({"weight": w}, {"ignore_index": 4}, {"label_smoothing": 0.15},
               {"weight": w, "ignore_index": 4, "label_smoothing": 0.3}):
        loss_ref, grad_ref = ref.cross_entropy(x, t, reduction=reduction, **kw)
        loss, grad = fx.cross_entropy(x, t, reduction=reduction, return_grad=True, **kw)
        close_ieee(loss, loss_ref, dtype, f"loss {kw}")
        close_ieee(grad, grad_ref, dtype, f"grad {kw}")
    axis = 0 if x.ndim == 1 else 1
    p = make_probs(rng, shape, axis, dtype)
    for kw in ({}, {"weight": w, "label_smoothing": 0.1}):
        loss_ref, grad_ref = ref.cross_entropy(x, p, reduction=reduction, **kw)
        loss, grad = fx.cross_entropy(x, p, reduction=reduction, return_grad=True, **kw)
        check_loss_type(loss, dtype, reduction, shape[:-1])
        close_ieee(loss, loss_ref, dtype, f"soft loss {kw}")
        close_ieee(grad, grad_ref, dtype, f"soft grad {kw}")


# ------------------------------------------------- binary_cross_entropy_with_logits core
@pytest.mark.parametrize("target_kind", ["float", "hard_float", "bool", "uint8"])
@pytest.mark.parametrize("layout", list(SHAPES_2D))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits(isa, rng, dtype, reduction, layout, target_kind):
    shape = SHAPES_2D[layout]
    x = make_logits(rng, shape, dtype)
    bits = rng.random(shape) < 0.5
    t = {"float": rng.random(shape).astype(dtype),
         "hard_float": bits.astype(dtype),
         "bool": bits,
         "uint8": bits.astype(np.uint8)}[target_kind]
    loss_ref, grad_ref = ref.binary_cross_entropy_with_logits(x, t, reduction=reduction)
    loss, grad = fx.binary_cross_entropy_with_logits(x, t, reduction=reduction,
                                                     return_grad=True)
    check_loss_type(loss, dtype, reduction, shape)
    check_grad_type(grad, x)
    close_ieee(loss, loss_ref, dtype, "loss")
    close_ieee(grad, grad_ref, dtype, "grad")
    close_ieee(fx.binary_cross_entropy_with_logits(x, t, reduction=reduction), loss_ref, dtype, "loss without grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_weights_per_isa(isa, rng, dtype, reduction):
    shape = (6, 5)
    x = make_logits(rng, shape, dtype)
    t = rng.random(shape).astype(dtype)
    w = rng.uniform(0.1, 2, (5,)).astype(dtype)
    pw = rng.uniform(0.1, 4, (5,)).astype(dtype)
    for kw in ({"weight": w}, {"pos_weight": pw}, {"weight": w[None, :1], "pos_weight": pw}):
        loss_ref, grad_ref = ref.binary_cross_entropy_with_logits(x, t, reduction=reduction, **kw)
        loss, grad = fx.binary_cross_entropy_with_logits(x, t, reduction=reduction,
                                                         return_grad=True, **kw)
        close_ieee(loss, loss_ref, dtype, f"loss {kw}")
        close_ieee(grad, grad_ref, dtype, f"grad {kw}")


# ----------------------------------------------------------------------------- grad_out
@pytest.mark.parametrize("case", list(CASES))
def test_grad_out_preallocated_and_in_place(isa, rng, dtype, case):
    """grad_out receives the gradient and is the array returned, for a preallocated buffer
    and for the input itself (the loss is computed from the logits before they are
    overwritten); both agree with the reference, for every reduction."""
    case = CASES[case]
    x, t, kw = case.make(rng, dtype)
    for reduction in case.reductions:
        loss_ref, grad_ref = case.ref(x, t, kw, reduction=reduction)
        scale = case.loss_scale(x, t, kw, reduction)
        go = np.full_like(x, np.nan)
        loss, grad = case.fx(x, t, kw, reduction=reduction, return_grad=True, grad_out=go)
        assert grad is go, case.id
        close_ieee(loss, loss_ref, dtype, f"{case.id} {reduction} loss", scale=scale)
        close_ieee(go, grad_ref, dtype, f"{case.id} {reduction} grad_out")
        xi = x.copy()
        loss, grad = case.fx(xi, t, kw, reduction=reduction, return_grad=True, grad_out=xi)
        assert grad is xi, case.id
        close_ieee(loss, loss_ref, dtype, f"{case.id} {reduction} loss (in place)", scale=scale)
        close_ieee(xi, grad_ref, dtype, f"{case.id} {reduction} in-place grad")


# ------------------------------------------------------------------- extreme logits
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_extreme_logits(isa, rng, dtype, reduction):
    C = 6
    x = make_logits(rng, (10, C), np.float64)
    t = rng.integers(0, C, size=10)
    t[:8] = [0, 1, 2, 3, 4, 5, 0, 1]
    x[0] = [1e4, -1e4, 0.5, 1, 2, -3]          # target is the huge logit: loss ~ 0
    x[1] = [1e4, -1e4, 0.5, 1, 2, -3]          # target is -1e4: loss 2e4
    x[2] = [1e30, -1e30, 0, 1, 2, 3]           # target 2 against 1e30: loss 1e30
    x[3] = [-np.inf, 0.5, -np.inf, 1.0, -np.inf, 2.0]     # masked classes
    x[4] = [-np.inf, -np.inf, -np.inf, -np.inf, 3.0, -np.inf]  # only the target left
    x[5] = [-1e30, 1e30, -np.inf, 0, 1, -1e4]  # target 5 = -1e4 vs 1e30
    x[6] = [-1e30, -1e30, -1e30, -1e30, -1e30, -1e30]  # all equal: log(C)
    x[7] = [-1e4, 1e4, 1e4, -np.inf, 0, 0]     # target 1 ties the max: log 2
    x = x.astype(dtype)
    masked = np.isneginf(x)

    loss_ref, grad_ref = ref.cross_entropy(x, t, reduction=reduction)
    loss, grad = fx.cross_entropy(x, t, reduction=reduction, return_grad=True)
    assert np.all(np.isfinite(loss)), loss
    assert np.all(np.isfinite(grad))
    assert np.all(grad[masked] == 0), "a -inf (masked) class must get exactly 0 grad"
    close_ieee(loss, loss_ref, dtype, "loss")
    close_ieee(grad, grad_ref, dtype, "grad")
    if reduction == "none":
        assert loss[4] == 0
        assert np.all(grad[4] == 0)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_extreme_logits(isa, dtype, reduction):
    xs = np.array([1e4, -1e4, 1e30, -1e30, 80.0, -80.0, 0.0])
    ts = np.array([0.0, 1.0, 0.5])
    x = np.repeat(xs[:, None], ts.size, axis=1).astype(dtype)
    t = np.repeat(ts[None, :], xs.size, axis=0).astype(dtype)
    for kw in ({}, {"pos_weight": np.array([2.0, 0.5, 3.0], dtype)}):
        loss_ref, grad_ref = ref.binary_cross_entropy_with_logits(x, t, reduction=reduction, **kw)
        loss, grad = fx.binary_cross_entropy_with_logits(x, t, reduction=reduction,
                                                         return_grad=True, **kw)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        close_ieee(loss, loss_ref, dtype, f"loss {kw}")
        close_ieee(grad, grad_ref, dtype, f"grad {kw}")
        if reduction == "none" and not kw:
            # confident and right (x = +-1e4, +-1e30 on the right side): exactly 0
            rows, cols = [0, 1, 2, 3], [1, 0, 1, 0]
            np.testing.assert_array_equal(loss[rows, cols], 0)
            np.testing.assert_array_equal(grad[rows, cols], 0)
            # confident and wrong by 1e30: loss exactly 1e30, grad exactly +-1
            assert loss[2, 0] == dtype(1e30) and loss[3, 1] == dtype(1e30)
            assert grad[2, 0] == 1 and grad[3, 1] == -1


# -------------------------------------------------------------- central differences
CD_CASES = {
    "ce": lambda t, w: dict(target=t),
    "ce_weight_ignore": lambda t, w: dict(target=t, weight=w, ignore_index=1),
    "ce_smooth_weight": lambda t, w: dict(target=t, weight=w, label_smoothing=0.2),
}


@pytest.mark.parametrize("case", list(CD_CASES))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_grad_central_differences(rng, reduction, case):
    x = rng.standard_normal((4, 5)) * 2
    t = np.array([0, 1, 4, 2])
    w = rng.uniform(0.3, 2.0, 5)
    kw = CD_CASES[case](t, w)
    _, grad = fx.cross_entropy(x, reduction=reduction, return_grad=True, **kw)
    num = ref.numerical_grad(lambda a: fx.cross_entropy(a, reduction=reduction, **kw), x)
    # central differences are good to ~1e-9 (see ref.numerical_grad)
    close_ieee(grad, num, np.float64, "grad vs central differences", rtol=1e-7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_soft_grad_central_differences(rng, reduction):
    x = rng.standard_normal((4, 5)) * 2
    p = make_probs(rng, (4, 5), 1)
    w = rng.uniform(0.3, 2.0, 5)
    for kw in ({}, {"weight": w, "label_smoothing": 0.3}):
        _, grad = fx.cross_entropy(x, p, reduction=reduction, return_grad=True, **kw)
        num = ref.numerical_grad(lambda a: fx.cross_entropy(a, p, reduction=reduction, **kw), x)
        close_ieee(grad, num, np.float64, f"soft grad vs central differences {kw}", rtol=1e-7)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_grad_central_differences(rng, reduction):
    x = rng.standard_normal((4, 3)) * 3
    t = rng.random((4, 3))
    w = rng.uniform(0.2, 2, (3,))
    pw = rng.uniform(0.2, 3, (3,))
    for kw in ({}, {"weight": w}, {"weight": w[:1], "pos_weight": pw}):
        _, grad = fx.binary_cross_entropy_with_logits(x, t, reduction=reduction,
                                                      return_grad=True, **kw)
        num = ref.numerical_grad(
            lambda a: fx.binary_cross_entropy_with_logits(a, t, reduction=reduction, **kw), x)
        close_ieee(grad, num, np.float64, f"grad vs central differences {kw}", rtol=1e-7)


def test_reference_grads_match_central_differences(rng):
    """Check the hand-derived gradients of tests/reference.py themselves."""
    x = rng.standard_normal((3, 4, 2)) * 2
    xl = np.moveaxis(x, 1, -1).copy()          # (3, 2, 4): class axis last
    t = np.array([[0, 3], [1, 1], [2, 0]])
    p = make_probs(rng, (3, 4, 2), 1)
    w = rng.uniform(0.3, 2.0, 4)
    tb = rng.random((3, 4, 2))
    pr = ref.sigmoid(rng.standard_normal((3, 4, 2)))
    q = ref.log_softmax(x, axis=1)
    for red in REDUCTIONS:
        cases = [  # (function of the input -> (loss, grad), point)
            (lambda a: ref.cross_entropy(a, t, w, ignore_index=1, reduction=red,
                                         label_smoothing=0.2), x),
            (lambda a: ref.cross_entropy(a, p, w, reduction=red, label_smoothing=0.2), x),
            (lambda a: ref.cross_entropy(a, t, reduction=red, axis=-1), xl),
            (lambda a: ref.nll_loss(a, t, w, ignore_index=0, reduction=red), x),
            (lambda a: ref.binary_cross_entropy_with_logits(
                a, tb, w[:, None], w[:1, None], reduction=red), x),
            (lambda a: ref.binary_cross_entropy(a, tb, w[:, None], reduction=red), pr),
        ]
        for i, (f, pt) in enumerate(cases):
            num = ref.numerical_grad(lambda a: f(a)[0], pt)
            close_ieee(f(pt)[1], num, np.float64, f"reference case {i} {red}", rtol=1e-7)
    for red in ("none", "mean", "sum", "batchmean"):
        for lt in (False, True):
            tt = np.log(p) if lt else p
            num = ref.numerical_grad(lambda a: ref.kl_div(a, tt, red, lt)[0], q)
            close_ieee(ref.kl_div(q, tt, red, lt)[1], num, np.float64, f"kl {red} {lt}", rtol=1e-7)


# ----------------------------------------------------------------- building blocks
BB_AXES = (0, 1, 2, -1, -2)


@pytest.mark.parametrize("axis", BB_AXES)
def test_softmax_family_axis_out_and_in_place(isa, rng, dtype, axis):
    x = make_logits(rng, (3, 4, 5), dtype)
    for block in (b for b in BLOCKS.values() if b.has_axis):
        f, rf = block.fx, block.ref
        expected = rf(x, axis=axis)
        r = f(x, axis=axis)
        assert isinstance(r, np.ndarray) and r.dtype == x.dtype, block.name
        close_ieee(r, expected, dtype, f"{block.name} axis={axis}")
        out = np.full(expected.shape, np.nan, dtype=dtype)
        r2 = f(x, axis=axis, out=out)
        assert r2 is out, block.name
        close_ieee(out, expected, dtype, f"{block.name} out= axis={axis}")
        # default axis is -1, as in NumPy/SciPy
        close_ieee(f(x), rf(x, axis=-1), dtype, f"{block.name} default axis")
        if not block.reduces:   # out= the input itself
            xi = x.copy()
            assert f(xi, axis=axis, out=xi) is xi
            close_ieee(xi, expected, dtype, f"{block.name} in place axis={axis}")


def test_sigmoid_and_log_sigmoid(isa, rng, dtype):
    # |x| <= 30: sigmoid down to ~1e-13 and log_sigmoid down to ~-1e-13 must keep
    # full relative accuracy (no 1 - sigmoid or log(sigmoid) cancellation)
    x = (rng.uniform(-30, 30, (5, 40))).astype(dtype)
    for f, rf in ((b.fx, b.ref) for b in BLOCKS.values() if not b.has_axis):
        expected = rf(x)
        r = f(x)
        assert isinstance(r, np.ndarray) and r.dtype == x.dtype and r.shape == x.shape
        # relative to each entry (scale=0), not to the largest
        close_ieee(r, expected, dtype, f.__name__, scale=0.0)
        out = np.empty_like(x)
        assert f(x, out=out) is out
        close_ieee(out, expected, dtype, f"{f.__name__} out=", scale=0.0)
        xi = x.copy()
        assert f(xi, out=xi) is xi
        close_ieee(xi, expected, dtype, f"{f.__name__} in place", scale=0.0)
        # non-contiguous input
        close_ieee(f(x[:, ::3]), expected[:, ::3], dtype, f"{f.__name__} strided", scale=0.0)


def test_sigmoid_family_extremes(isa, dtype):
    x = np.array([-np.inf, np.inf, 1e30, -1e30, 1e4, -1e4, 0.0, np.nan], dtype=dtype)
    s = fx.sigmoid(x)
    np.testing.assert_array_equal(s, np.array([0, 1, 1, 0, 1, 0, 0.5, np.nan], dtype))
    ls = fx.log_sigmoid(x)
    np.testing.assert_array_equal(ls, np.array([-np.inf, 0, 0, -1e30, 0, -1e4,
                                                -np.log(2), np.nan], dtype))


def test_softmax_family_extremes(isa, dtype):
    inf = np.inf
    x = np.array([[1e30, 0.0, -1e30],
                  [-inf, 0.0, 0.0],
                  [-inf, -inf, 5.0],
                  [1e4, 1e4, -1e4],
                  [-1e30, -1e30, -1e30],
                  [-1e4, -1e4, -inf]], dtype=dtype)
    exp_lse = ref.logsumexp(x)
    close_ieee(fx.logsumexp(x), exp_lse, dtype, "logsumexp")
    sm = fx.softmax(x)
    np.testing.assert_array_equal(sm[np.isneginf(x)], 0)  # masked entries exactly 0
    close_ieee(sm, ref.softmax(x), dtype, "softmax")
    lsm = fx.log_softmax(x)
    assert np.all(np.isneginf(lsm[np.isneginf(x)]))
    close_ieee(lsm, ref.log_softmax(x), dtype, "log_softmax")
    np.testing.assert_array_equal(sm[2], [0, 0, 1])
    np.testing.assert_array_equal(lsm[2], [-inf, -inf, 0])
    ent = fx.entropy(x)
    assert np.all(np.isfinite(ent))
    assert ent[2] == 0  # a single live class: no uncertainty
    close_ieee(ent, ref.entropy(x), dtype, "entropy", scale=1.0)
    # all -inf, +inf, NaN rows of logsumexp
    y = np.array([[-inf, -inf], [inf, 1.0], [inf, -inf], [np.nan, 0.0]], dtype=dtype)
    r = fx.logsumexp(y)
    assert r[0] == -inf and r[1] == inf and r[2] == inf and np.isnan(r[3])
