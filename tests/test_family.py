"""The options of the whole family against tests/reference.py: weight,
ignore_index, label_smoothing, soft targets, K-dim inputs and class axes,
nll_loss, BCE-with-logits weight/pos_weight broadcasting, binary_cross_entropy,
kl_div."""

import itertools

import numpy as np
import pytest

import fastxent as fx
import reference as ref
from conftest import (INT_DTYPES, REDUCTIONS, check_grad_type, check_loss_type, close_ieee,
                      make_logits, make_probs)

DT_IDS = lambda d: np.dtype(d).name  # noqa: E731


def _both(fx_fn, ref_fn, x, *args, reduction, dtype, what="", scale=None, **kw):
    """Run fx (loss only and loss+grad) and the reference; compare both (`scale`: the
    loss's yardstick, see close_ieee)."""
    loss_ref, grad_ref = ref_fn(x, *args, reduction=reduction, **kw)
    loss, grad = fx_fn(x, *args, reduction=reduction, return_grad=True, **kw)
    check_grad_type(grad, x)
    if reduction == "none":
        check_loss_type(loss, dtype, reduction, np.shape(loss_ref))
    else:
        check_loss_type(loss, dtype, reduction, ())
    close_ieee(loss, loss_ref, dtype, f"{what} loss", scale=scale)
    close_ieee(grad, grad_ref, dtype, f"{what} grad")
    loss_only = fx_fn(x, *args, reduction=reduction, **kw)
    close_ieee(loss_only, loss_ref, dtype, f"{what} loss only", scale=scale)
    return loss, grad


# ---------------------------------------------------------------- cross_entropy options
CE_LAYOUTS = {  # name: (input shape, axis)
    "C": ((6,), 1),
    "NC": ((10, 6), 1),
    "NCd": ((4, 6, 3), 1),
    "NCdd": ((3, 6, 2, 3), 1),
    "NCddd": ((2, 6, 2, 2, 2), 1),
    "BTV_axis-1": ((3, 4, 6), -1),
    "CN_axis0": ((6, 5), 0),
    "BTV_axis2": ((2, 3, 6), 2),
}


def _target_shape(shape, axis):
    if len(shape) == 1:
        return ()
    ax = axis % len(shape)
    return shape[:ax] + shape[ax + 1:]


@pytest.mark.parametrize("label_smoothing", [0.0, 0.2, 1.0])
@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("layout", list(CE_LAYOUTS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_hard_options(rng, dtype, reduction, layout, weighted, ignore,
                                    label_smoothing):
    shape, axis = CE_LAYOUTS[layout]
    C = 6
    x = make_logits(rng, shape, dtype)
    tshape = _target_shape(shape, axis)
    t = rng.integers(0, C, size=tshape)
    kw = {"axis": axis, "label_smoothing": label_smoothing}
    if ignore:
        kw["ignore_index"] = 3
        if t.ndim:
            t.reshape(-1)[::3] = 3          # some, not all, items ignored
            t.reshape(-1)[1] = 0
        else:
            t = np.asarray(1)
    if weighted:
        kw["weight"] = rng.uniform(0.2, 2.0, C).astype(dtype)
    _both(fx.cross_entropy, ref.cross_entropy, x, t, reduction=reduction, dtype=dtype,
          what=f"{layout} {kw}", **kw)


@pytest.mark.parametrize("label_dtype", INT_DTYPES, ids=DT_IDS)
def test_cross_entropy_ignore_index_with_label_dtypes(rng, label_dtype):
    # ignore_index expressed in the label's own range (255 for uint8, -1 for int8...)
    info = np.iinfo(label_dtype)
    for ii in {min(int(info.max), 2**40), 5, 0} | ({-1} if info.min < 0 else set()):
        x = make_logits(rng, (9, 5), np.float64)
        t = rng.integers(0, 5, size=9).astype(label_dtype)
        t[[1, 4]] = np.array(ii).astype(label_dtype)
        for reduction in REDUCTIONS:
            _both(fx.cross_entropy, ref.cross_entropy, x, t, reduction=reduction,
                  dtype=np.float64, ignore_index=ii, what=f"ignore {ii}")


@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_mean_over_nothing_is_nan(rng, dtype, weighted, label_smoothing):
    x = make_logits(rng, (5, 4), dtype)
    t = np.full(5, -100)
    w = rng.uniform(0.5, 1.5, 4).astype(dtype) if weighted else None
    kw = dict(weight=w, label_smoothing=label_smoothing)
    loss, grad = fx.cross_entropy(x, t, return_grad=True, **kw)
    assert np.isnan(loss) and loss.dtype == dtype
    # nothing contributes: zero gradient, as PyTorch's autograd gives
    np.testing.assert_array_equal(grad, 0)
    loss, grad = fx.cross_entropy(x, t, reduction="sum", return_grad=True, **kw)
    assert loss == 0
    np.testing.assert_array_equal(grad, 0)
    loss = fx.cross_entropy(x, t, reduction="none", **kw)
    np.testing.assert_array_equal(loss, np.zeros(5, dtype))
    # an empty batch is a mean over nothing too
    assert np.isnan(fx.cross_entropy(x[:0], t[:0], **kw))
    # nll_loss as well
    assert np.isnan(fx.nll_loss(x, t, weight=w))
    if weighted:
        # all present classes have weight 0: total weight 0 -> 0/0 -> NaN
        w0 = np.ones(4, dtype)
        w0[[1, 2]] = 0
        t2 = np.array([1, 2, 1, 2, 2])
        assert np.isnan(fx.cross_entropy(x, t2, weight=w0))
        assert np.isnan(ref.cross_entropy(x, t2, weight=w0)[0])


@pytest.mark.parametrize("layout", ["rows", "axis1"])
def test_cross_entropy_inf_weight_on_an_absent_class(rng, dtype, layout):
    """A class weight enters only through the items that target it (and, with label
    smoothing, through the smoothing term): an inf weight on a class that no item
    targets, as balanced weights N / (C * bincount) give for a class absent from a
    batch, leaves every loss and gradient finite, as in PyTorch. (It was 0 * inf = NaN
    for every item.)"""
    C = 6
    shape, tshape = ((9, C), (9,)) if layout == "rows" else ((2, C, 3, 4), (2, 3, 4))
    x = make_logits(rng, shape, dtype)
    t = rng.integers(0, C - 1, tshape)              # class C-1 is never a target
    w = rng.uniform(0.5, 2.0, C).astype(dtype)
    w[C - 1] = np.inf
    for reduction in REDUCTIONS:
        _both(fx.cross_entropy, ref.cross_entropy, x, t, reduction=reduction, dtype=dtype,
              weight=w, what=f"{layout} {reduction}")
        loss, grad = fx.cross_entropy(x, t, weight=w, reduction=reduction, return_grad=True)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))


def test_cross_entropy_mean_over_weights_summing_to_zero(rng, dtype):
    """Weights that sum to 0 over the kept items, with a nonzero weighted sum of losses:
    the mean is x / 0 = +-inf, as PyTorch divides and the README's formula says; only
    0 / 0 is NaN. (It was NaN.)"""
    x = make_logits(rng, (4, 3), dtype)
    t = np.array([0, 1, 0, 1])
    w = np.array([1.0, -1.0, 0.5], dtype)
    for fn in (fx.cross_entropy, fx.nll_loss):
        xin = x if fn is fx.cross_entropy else fx.log_softmax(x)
        expected = getattr(ref, fn.__name__)(xin, t, weight=w)[0]
        assert np.isinf(expected)
        loss = fn(xin, t, weight=w)
        assert loss.dtype == dtype and loss == expected, (fn.__name__, loss, expected)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("layout", list(CE_LAYOUTS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_soft_targets(rng, dtype, reduction, layout, weighted, label_smoothing):
    shape, axis = CE_LAYOUTS[layout]
    C = 6
    x = make_logits(rng, shape, dtype)
    cax = 0 if len(shape) == 1 else axis % len(shape)
    p = make_probs(rng, shape, cax, dtype)
    kw = {"axis": axis, "label_smoothing": label_smoothing}
    if weighted:
        kw["weight"] = rng.uniform(0.2, 2.0, C).astype(dtype)
    _both(fx.cross_entropy, ref.cross_entropy, x, p, reduction=reduction, dtype=dtype,
          what=f"soft {layout} {kw}", **kw)


def test_cross_entropy_soft_targets_unnormalised_and_float64_target(rng, dtype):
    # probabilities need not sum to 1 (PyTorch does not check); hard one-hot targets
    # as probabilities equal the index form
    x = make_logits(rng, (7, 5), dtype)
    q = rng.random((7, 5)).astype(dtype)
    for reduction in REDUCTIONS:
        _both(fx.cross_entropy, ref.cross_entropy, x, q, reduction=reduction, dtype=dtype)
    t = rng.integers(0, 5, size=7)
    onehot = np.eye(5, dtype=dtype)[t]
    for reduction in ("sum", "none"):
        rl, rg = ref.cross_entropy(x, t, reduction=reduction)     # the index form
        for tgt in (onehot, t):
            loss, grad = fx.cross_entropy(x, tgt, reduction=reduction, return_grad=True)
            close_ieee(loss, rl, dtype, f"{tgt.dtype} target {reduction}")
            close_ieee(grad, rg, dtype, f"{tgt.dtype} target {reduction} grad")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_soft_targets_masked_classes(rng, dtype, reduction):
    """Documented deviation from PyTorch: target probability 0 on a -inf logit
    contributes 0 (PyTorch: 0 * -inf = NaN).  Our answer must be finite and equal
    to the cross-entropy over the live classes, with exactly 0 gradient there."""
    x = make_logits(rng, (6, 5), dtype)
    p = make_probs(rng, (6, 5), 1, np.float64)
    mask = np.zeros((6, 5), bool)
    mask[0, 1] = mask[2, [0, 4]] = mask[5, :4] = True
    x[mask] = -np.inf
    p[mask] = 0
    p /= p.sum(axis=1, keepdims=True)
    p = p.astype(dtype)
    loss, grad = fx.cross_entropy(x, p, reduction=reduction, return_grad=True)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    assert np.all(grad[mask] == 0)
    loss_ref, grad_ref = ref.cross_entropy(x, p, reduction=reduction)
    close_ieee(loss, loss_ref, dtype)
    close_ieee(grad, grad_ref, dtype)
    # row 5 has one live class holding all the probability: zero loss, zero grad
    if reduction == "none":
        assert loss[5] == 0
        np.testing.assert_array_equal(grad[5], 0)
    # independent check on the live classes only, row by row
    for i in range(6):
        live = ~mask[i]
        li = ref.cross_entropy(x[i, live], p[i, live], reduction="sum")[0]
        li_fx = fx.cross_entropy(x[i:i + 1], p[i:i + 1], reduction="sum")
        close_ieee(li_fx, li, dtype)


def test_axis_minus_one_equals_transposed_axis_one(rng, dtype):
    # (B, T, V) with axis=-1 must equal the PyTorch layout (B, V, T) with axis=1
    B, T, V = 3, 5, 11
    x = make_logits(rng, (B, T, V), dtype)
    t = rng.integers(0, V, size=(B, T))
    t[0, 1] = -100
    w = rng.uniform(0.5, 2, V).astype(dtype)
    xt = np.ascontiguousarray(np.moveaxis(x, -1, 1))
    p = make_probs(rng, (B, T, V), -1, dtype)
    pt = np.ascontiguousarray(np.moveaxis(p, -1, 1))
    for reduction in REDUCTIONS:
        for tgt, tgt_t in ((t, t), (p, pt)):
            kw = dict(weight=w, label_smoothing=0.1, reduction=reduction, return_grad=True)
            # the reference on PyTorch's layout
            rl, rg = ref.cross_entropy(xt, tgt_t, w, reduction=reduction, label_smoothing=0.1)
            l1, g1 = fx.cross_entropy(x, tgt, axis=-1, **kw)
            l2, g2 = fx.cross_entropy(xt, tgt_t, **kw)
            close_ieee(l1, rl, dtype, "axis=-1 loss")
            close_ieee(g1, np.moveaxis(rg, 1, -1), dtype, "axis=-1 grad")
            close_ieee(l2, rl, dtype, "axis=1 loss")
            close_ieee(g2, rg, dtype, "axis=1 grad")
            # and grad_out=input in place on the (B, T, V) layout
            xi = x.copy()
            l3, g3 = fx.cross_entropy(xi, tgt, axis=-1, grad_out=xi, **kw)
            assert g3 is xi
            close_ieee(l3, rl, dtype, "in-place loss")
            close_ieee(xi, np.moveaxis(rg, 1, -1), dtype, "in-place grad")


def test_weight_from_any_real_sequence(rng, dtype):
    """Regression: a weight given as a Python list (of ints) is the same weight as an array;
    a Python number is a pos_weight like any broadcastable one; the class axis of a 1-D
    input may be named -1."""
    x = make_logits(rng, (4, 3), dtype)
    y = np.array([0, 2, 1, 2])
    w = np.array([1.0, 2.0, 3.0])
    rl, rg = ref.cross_entropy(x, y, w)
    for weight in ([1, 2, 3], [1.0, 2.0, 3.0], (1, 2, 3), w.astype(dtype)):
        loss, grad = fx.cross_entropy(x, y, weight=weight, return_grad=True)
        close_ieee(loss, rl, dtype, f"weight={weight!r}")
        close_ieee(grad, rg, dtype, f"weight={weight!r} grad")
    t = (rng.random((4, 3)) < 0.5).astype(dtype)
    for pw in (3, 3.0, np.float32(3)):
        close_ieee(fx.binary_cross_entropy_with_logits(x, t, pos_weight=pw),
                   ref.binary_cross_entropy_with_logits(x, t, pos_weight=np.float64(3))[0], dtype,
                   f"pos_weight={pw!r}")
    assert fx.cross_entropy(np.zeros(3, dtype), np.array(1), axis=-1) == dtype(np.log(3))


# -------------------------------------------------------------------------- nll_loss
NLL_LAYOUTS = {"C": ((5,), 1), "NC": ((8, 5), 1), "NCdd": ((2, 5, 3, 2), 1),
               "BTV_axis-1": ((2, 3, 5), -1)}


@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("layout", list(NLL_LAYOUTS))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nll_loss(rng, dtype, reduction, layout, weighted, ignore):
    shape, axis = NLL_LAYOUTS[layout]
    C = 5
    cax = 0 if len(shape) == 1 else axis % len(shape)
    lp = ref.log_softmax(rng.standard_normal(shape) * 2, axis=cax).astype(dtype)
    t = rng.integers(0, C, size=_target_shape(shape, axis))
    kw = {"axis": axis}
    if ignore:
        kw["ignore_index"] = 2
        if t.ndim:
            t.reshape(-1)[::2] = 2
            t.reshape(-1)[1] = 0
    if weighted:
        kw["weight"] = rng.uniform(0.2, 2.0, C).astype(dtype)
    _both(fx.nll_loss, ref.nll_loss, lp, t, reduction=reduction, dtype=dtype,
          what=f"nll {layout} {kw}", **kw)


@pytest.mark.parametrize("label_dtype", INT_DTYPES, ids=DT_IDS)
def test_nll_loss_label_dtypes_and_any_input(rng, label_dtype):
    # nll_loss takes any float input (not only log-probabilities): it picks -x[t]
    x = rng.standard_normal((7, 4)) * 5
    t = rng.integers(0, 4, size=7).astype(label_dtype)
    for reduction in REDUCTIONS:
        _both(fx.nll_loss, ref.nll_loss, x, t, reduction=reduction, dtype=np.float64)
    loss = fx.nll_loss(x, t, reduction="none")
    np.testing.assert_array_equal(loss, -x[np.arange(7), t.astype(np.int64)])


# ----------------------------------------------------- BCE with logits: broadcasting
BCE_LAYOUTS = {"N": (7,), "NC": (6, 4), "NCHW": (2, 3, 4, 2)}


def _bcast_shapes(shape):
    """weight / pos_weight shapes that broadcast to `shape`, PyTorch style."""
    out = {"none": None, "full": shape, "last": shape[-1:], "one": (1,)}
    if len(shape) >= 2:
        out["rows"] = (shape[0],) + (1,) * (len(shape) - 1)
    if len(shape) == 4:
        out["chan"] = (shape[1], 1, 1)
    return out


def _bce_cases():
    for layout, shape in BCE_LAYOUTS.items():
        shapes = _bcast_shapes(shape)
        for wname, pname in itertools.product(shapes, shapes):
            yield layout, wname, pname


@pytest.mark.parametrize("layout,wname,pname", list(_bce_cases()))
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_broadcasting(rng, dtype, reduction, layout, wname, pname):
    shape = BCE_LAYOUTS[layout]
    shapes = _bcast_shapes(shape)
    x = make_logits(rng, shape, dtype)
    t = rng.random(shape).astype(dtype)
    t.reshape(-1)[::3] = np.round(t.reshape(-1)[::3])
    kw = {}
    if shapes[wname] is not None:
        kw["weight"] = rng.uniform(0.0, 2.0, shapes[wname]).astype(dtype)
    if shapes[pname] is not None:
        kw["pos_weight"] = rng.uniform(0.1, 5.0, shapes[pname]).astype(dtype)
    _both(fx.binary_cross_entropy_with_logits, ref.binary_cross_entropy_with_logits,
          x, t, reduction=reduction, dtype=dtype, what=f"{layout} w={wname} pw={pname}", **kw)


def test_bce_with_logits_target_dtypes_agree(rng, dtype):
    x = make_logits(rng, (5, 6), dtype)
    bits = rng.random((5, 6)) < 0.4
    pw = rng.uniform(0.5, 3, 6).astype(dtype)
    results = []
    for t in (bits, bits.astype(np.uint8), bits.astype(dtype)):
        results.append(fx.binary_cross_entropy_with_logits(
            x, t, pos_weight=pw, reduction="none", return_grad=True))
    loss_ref, grad_ref = ref.binary_cross_entropy_with_logits(x, bits.astype(np.float64),
                                                              pos_weight=pw, reduction="none")
    for loss, grad in results:
        close_ieee(loss, loss_ref, dtype)
        close_ieee(grad, grad_ref, dtype)


# ------------------------------------------------------------- binary_cross_entropy
@pytest.mark.parametrize("wname", ["none", "full", "last", "rows"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy(rng, dtype, reduction, wname):
    shape = (6, 5)
    x = ref.sigmoid(rng.standard_normal(shape) * 3).astype(dtype)
    t = rng.random(shape).astype(dtype)
    t[::2] = np.round(t[::2])
    w = {"none": None, "full": shape, "last": (5,), "rows": (6, 1)}[wname]
    kw = {} if w is None else {"weight": rng.uniform(0, 2, w).astype(dtype)}
    _both(fx.binary_cross_entropy, ref.binary_cross_entropy, x, t, reduction=reduction,
          dtype=dtype, what=f"bce w={wname}", **kw)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_clamps_at_the_edges(dtype, reduction):
    # x in {0, 1}: logs clamp at -100; the gradient divides by max(x(1-x), 1e-12)
    x = np.array([0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1e-30, 1 - 2 ** -20], dtype=dtype)
    t = np.array([0.0, 1.0, 0.25, 0.0, 1.0, 0.75, 1.0, 0.0], dtype=dtype)
    loss, grad = fx.binary_cross_entropy(x, t, reduction=reduction, return_grad=True)
    loss_ref, grad_ref = ref.binary_cross_entropy(x, t, reduction=reduction)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    close_ieee(loss, loss_ref, dtype)
    close_ieee(grad, grad_ref, dtype)
    if reduction == "none":
        # hand values: -log clamp is 100, so t=1 at x=0 costs exactly 100
        np.testing.assert_array_equal(loss[[0, 4]], [0, 0])
        assert loss[1] == 100 and loss[3] == 100
        close_ieee(loss[2], 25.0, dtype)   # 0.25 * 100 + 0.75 * 0
        assert grad[0] == 0 and grad[4] == 0      # x == t: no gradient
        assert grad[1] < -1e11 and grad[3] > 1e11  # -(1)/1e-12 and +(1)/1e-12


# ----------------------------------------------------------------------------- kl_div
KL_LAYOUTS = {"NC": (6, 5), "NCd": (3, 5, 4), "C": (7,)}


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("layout", list(KL_LAYOUTS))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum", "batchmean"])
def test_kl_div(rng, dtype, reduction, layout, log_target):
    shape = KL_LAYOUTS[layout]
    cax = 0 if len(shape) == 1 else 1
    q = ref.log_softmax(rng.standard_normal(shape) * 2, axis=cax).astype(dtype)
    p = make_probs(rng, shape, cax, np.float64)
    if not log_target:
        p.reshape(-1)[::4] = 0.0  # xlogy(0, 0) = 0 terms
    tgt = (np.log(p) if log_target else p).astype(dtype)
    loss_ref, grad_ref = ref.kl_div(q, tgt, reduction=reduction, log_target=log_target)
    # the terms have both signs: scale the tolerance by the terms' magnitude
    items, _ = ref.kl_div(q, tgt, reduction="none", log_target=log_target)
    denom = {"none": 1, "sum": 1, "mean": q.size, "batchmean": shape[0]}[reduction]
    scale = None if reduction == "none" else np.abs(items).sum() / denom
    _both(fx.kl_div, ref.kl_div, q, tgt, reduction=reduction, dtype=dtype, scale=scale,
          log_target=log_target, what=f"kl {layout}")


def test_kl_div_of_identical_distributions_is_zero(rng, dtype):
    q = ref.log_softmax(rng.standard_normal((4, 6)), axis=1)
    for log_target in (False, True):
        tgt = q if log_target else np.exp(q)
        loss = fx.kl_div(q.astype(dtype), tgt.astype(dtype), reduction="batchmean",
                         log_target=log_target)
        assert abs(float(loss)) < 50 * np.finfo(dtype).eps
