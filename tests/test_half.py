"""float16 and bfloat16 input (issue 14).

The half kernels widen each value exactly to float32 and run the float32 arithmetic, so:
  * exactness: every result equals the float32 kernels' result on the widened values,
    the loss bit for bit (float32) and each gradient / output rounded once to the input's
    dtype (round to nearest even, as NumPy / ml_dtypes cast), on every ISA;
  * accuracy, against the float64 reference on the same widened values: the loss within
    float32 accuracy, gradients and outputs within one rounding of the input dtype;
  * PyTorch's float16 / bfloat16 cross-entropy on the same values is no more accurate.
"""
import numpy as np
import pytest

import fastxent as fx
from conftest import (assert_same_bits, canonical_nan, close_ieee, require_ml_dtypes,
                      require_torch)
from registry import BLOCKS, CASES

ml_dtypes = require_ml_dtypes()
HALF = {"float16": np.dtype(np.float16), "bfloat16": np.dtype(ml_dtypes.bfloat16)}
# mantissa bits: one rounding to the dtype is within 2^-(bits+1) relative, one ulp 2^-bits
MANT = {"float16": 10, "bfloat16": 7}


@pytest.fixture(params=list(HALF))
def half(request):
    return request.param


def _to_half(a, hd):
    """Float arrays of a call in the half dtype; labels, bool and uint8 kept."""
    if isinstance(a, np.ndarray) and a.dtype.kind == "f":
        return a.astype(hd)
    return a


@pytest.fixture(autouse=True, params=["measured", "rows"])
def items_switch(request):
    """Each test twice: with the measured switch between the items path (rows of few
    classes, lanes over rows) and the row path, which half inputs share with float32
    (kernels/fx_softmax_items.h: a half group goes through a float32 block), and with
    every row forced onto the row path. Either way half and float32 take the same path,
    so the float32 results the tests compare bits with are that path's."""
    from fastxent import _core
    prev = _core._set_items_max_c(-1 if request.param == "measured" else 0)
    yield request.param
    _core._set_items_max_c(prev)


def _widened(a):
    """The float32 values a half array holds (exact)."""
    if isinstance(a, np.ndarray) and (a.dtype.kind == "f" or a.dtype.kind == "V"):
        return a.astype(np.float32)
    return a


def _half_case(case, rng, hd):
    x, t, kw = case.make(rng, np.float32)
    # weights stay as given: the kernels read them in float32 for a half input
    return _to_half(x, hd), _to_half(t, hd), kw


def within_one_rounding(actual, expected, half, what=""):
    """|a - e| <= one ulp of the half dtype at |e| (one rounding, plus the float32
    arithmetic's error, which is far smaller), plus the float32 error bound of the
    project's float32 tests relative to the largest |e| (gradients come out of
    differences such as p - 1), plus the half dtype's smallest subnormal."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(a), np.isnan(e), err_msg=f"{what}: NaN pattern")
    fin = np.isfinite(e)
    big = float(np.abs(e[fin]).max()) if fin.any() else 0.0
    smallest = 2.0**-24 if half == "float16" else float(np.finfo(np.float32).smallest_subnormal)
    bound = 2.0**-MANT[half] * np.abs(e[fin]) + 2e-5 * big + smallest
    err = np.abs(a[fin] - e[fin])
    worst = int(np.argmax(err - bound)) if err.size else 0
    assert np.all(err <= bound), (f"{what}: error {err[worst]} > bound {bound[worst]} at "
                                  f"{e[fin][worst]}")


@pytest.mark.parametrize("case_id", sorted(CASES))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_loss_is_the_float32_result_rounded_once(isa, half, case_id, reduction, rng):
    case = CASES[case_id]
    hd = HALF[half]
    x, t, kw = _half_case(case, rng, hd)
    loss, grad = case.fx(x, t, kw, reduction=reduction, return_grad=True)
    loss32, grad32 = case.fx(_widened(x), _widened(t), kw, reduction=reduction, return_grad=True)
    # the loss is float32, the same bits as the float32 kernels give on the widened values
    assert np.asarray(loss).dtype == np.float32
    assert_same_bits(loss, loss32, f"{case_id} loss")
    # the gradient in the input's dtype: the float32 gradient rounded once
    assert grad.dtype == hd and grad.shape == x.shape
    assert_same_bits(grad, grad32.astype(hd), f"{case_id} grad")
    # a float32 grad_out: the unrounded gradient
    g32 = np.full(x.shape, np.nan, dtype=np.float32)
    loss_u, grad_u = case.fx(x, t, kw, reduction=reduction, return_grad=True, grad_out=g32)
    assert grad_u is g32
    assert_same_bits(grad_u, grad32, f"{case_id} float32 grad_out")
    assert_same_bits(loss_u, loss32, f"{case_id} loss with float32 grad_out")


@pytest.mark.parametrize("case_id", sorted(CASES))
@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
def test_accuracy_against_float64(half, case_id, reduction, rng):
    case = CASES[case_id]
    x, t, kw = _half_case(case, rng, HALF[half])
    loss, grad = case.fx(x, t, kw, reduction=reduction, return_grad=True)
    x64 = x.astype(np.float64)
    t64 = t.astype(np.float64) if t.dtype.kind in "fV" else t
    ref_loss, ref_grad = case.ref(x64, t64, kw, reduction=reduction)
    close_ieee(loss, ref_loss, np.float32, f"{case_id} loss",
               scale=case.loss_scale(x64, t64, kw, reduction))
    within_one_rounding(grad.astype(np.float64), ref_grad, half, f"{case_id} grad")


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_blocks(isa, half, name, rng):
    block = BLOCKS[name]
    hd = HALF[half]
    x = (rng.standard_normal((7, 300)) * 4).astype(hd)
    kw = block.call_kw(-1)
    out = block.fx(x, **kw)
    out32 = block.fx(x.astype(np.float32), **kw)
    assert out.dtype == hd
    assert_same_bits(out, out32.astype(hd), name)
    o32 = np.empty(out.shape, np.float32)
    assert block.fx(x, **kw, out=o32) is o32
    assert_same_bits(o32, out32, f"{name} float32 out=")
    ref = block.ref(x.astype(np.float64), **kw)
    within_one_rounding(out.astype(np.float64), ref, half, name)


def check_against_float32(x, t, t32, kw, same):
    """cross_entropy(x, t, **kw) with its gradient, x half: float32's on the widened values
    and t32, the gradient rounded once, with 1 and 2 threads and in place (same: the
    comparison)."""
    hd = x.dtype
    l32, g32 = fx.cross_entropy(x.astype(np.float32), t32, return_grad=True, **kw)
    for nt in (1, 2):
        loss, grad = fx.cross_entropy(x, t, return_grad=True, n_threads=nt, **kw)
        same(loss, l32, f"loss {kw}, {nt} threads")
        same(grad, g32.astype(hd), f"grad {kw}, {nt} threads")
    buf = x.copy()
    _, grad = fx.cross_entropy(buf, t, return_grad=True, grad_out=buf, **kw)
    assert grad is buf
    same(grad, g32.astype(hd), f"grad in place {kw}")


@pytest.mark.parametrize("keep_e", [True, False], ids=["kept", "made-again"])
@pytest.mark.parametrize("rows", [3, 5])
@pytest.mark.parametrize("C", [3, 4096, 4097, 70000])
def test_long_rows_and_threads(isa, half, C, rows, keep_e, rng):
    """Rows of one and of many chunks, whose e_j the gradient and softmax passes either
    keep in a float32 row (fx_row_scratch) or make again per chunk (_core's size limit,
    forced here), and the chunk-parallel path of few long rows (3 rows on 2 threads): the
    float32 path's bits rounded once, for any thread count, in place too, with an ignored
    row and with class weights."""
    hd = HALF[half]
    x = (rng.standard_normal((rows, C)) * 3).astype(hd)
    y = rng.integers(0, C, rows)
    y[1] = -100
    w = rng.uniform(0.5, 2.0, C).astype(np.float32)
    x32 = x.astype(np.float32)
    prev = fx._core._set_row_e_max_bytes(1 << 20 if keep_e else 0)
    try:
        for kw in ({"label_smoothing": 0.05}, {"weight": w}):
            check_against_float32(x, y, y, kw, assert_same_bits)
        for nt in (1, 2):
            sm = fx.softmax(x, n_threads=nt)
            assert_same_bits(sm, fx.softmax(x32).astype(hd), f"softmax, {nt} threads")
    finally:
        fx._core._set_row_e_max_bytes(prev)


@pytest.mark.parametrize("C", [2, 3, 5, 8, 17, 37, 56, 72, 100])
def test_few_classes(isa, half, C, rng):
    """Rows of few classes, on the items path where the switch gives it (the autouse
    items_switch runs each test on the measured switch and on the row path): hard labels
    with every option, soft targets, nll_loss and the building blocks; the float32
    results on the widened values, rounded once, for 1 and 2 threads and in place. 203
    rows: whole groups and a partial one. (NaN compared as NaN: the half row path's max
    from bit patterns may keep another NaN than float32's.)"""
    def same(a, b, what):
        assert_same_bits(canonical_nan(a), canonical_nan(b), what)

    hd = HALF[half]
    n = 203
    x = (rng.standard_normal((n, C)) * 3).astype(hd)
    odd = x.copy()                      # a NaN row and an all -inf row, item by item
    odd[5, 0] = np.nan
    odd[6, :] = -np.inf
    y = rng.integers(0, C, n)
    y[7] = -100
    w = rng.uniform(0.5, 2.0, C).astype(np.float32)
    p = fx.softmax(rng.standard_normal((n, C)).astype(np.float32)).astype(hd)
    calls = [(x, y, {}), (x, y, {"weight": w, "label_smoothing": 0.1}),
             (odd, y.astype(np.int32), {"reduction": "none"}), (x, p, {}),
             (x, p, {"weight": w, "reduction": "sum"})]
    for x, t, kw in calls:
        check_against_float32(x, t, p.astype(np.float32) if t is p else t, kw, same)
    x = odd
    x32 = x.astype(np.float32)
    logp = fx.log_softmax(x)
    l32, g32 = fx.nll_loss(logp.astype(np.float32), y, return_grad=True, reduction="none")
    loss, grad = fx.nll_loss(logp, y, return_grad=True, reduction="none")
    same(loss, l32, "nll_loss")
    same(grad, g32.astype(hd), "nll_loss grad")
    for name in ("softmax", "log_softmax", "logsumexp", "entropy"):
        block = getattr(fx, name)
        for nt in (1, 2):
            same(block(x, n_threads=nt), block(x32).astype(hd), f"{name}, {nt} threads")


def test_in_place_gradient(half, rng):
    hd = HALF[half]
    for shape, axis in (((5, 9000), 1), ((5, 30), 1), ((4, 6, 5), 1)):
        x = (rng.standard_normal(shape) * 3).astype(hd)
        y = rng.integers(0, x.shape[axis], tuple(s for i, s in enumerate(shape) if i != axis))
        loss, grad = fx.cross_entropy(x, y, axis=axis, return_grad=True)
        buf = x.copy()
        loss2, grad2 = fx.cross_entropy(buf, y, axis=axis, return_grad=True, grad_out=buf)
        assert grad2 is buf
        assert_same_bits(loss2, loss)
        assert_same_bits(grad2, grad)


def test_class_axis_beyond_the_panel_buffer(isa, half, rng):
    """A class axis that is not last, with more classes than the half class-axis kernel's
    float32 panel buffer holds (on the wide ISAs): the row kernels on a moved copy."""
    hd = HALF[half]
    x = (rng.standard_normal((2, 3000, 5)) * 3).astype(hd)
    y = rng.integers(0, 3000, (2, 5))
    loss, grad = fx.cross_entropy(x, y, return_grad=True, reduction="sum")
    ref_loss, ref_grad = CASES["ce-plain"].ref(x.astype(np.float64), y, {}, reduction="sum")
    close_ieee(loss, ref_loss, np.float32, "loss")
    within_one_rounding(grad.astype(np.float64), ref_grad, half, "grad")
    # soft targets in the half dtype, too
    p = fx.softmax(rng.standard_normal(x.shape).astype(np.float32), axis=1).astype(hd)
    loss_s, grad_s = fx.cross_entropy(x, p, return_grad=True)
    l32, g32 = fx.cross_entropy(x.astype(np.float32), p.astype(np.float32), return_grad=True)
    close_ieee(loss_s, l32, np.float32, "soft loss")
    within_one_rounding(grad_s.astype(np.float64), g32.astype(np.float64), half, "soft grad")


def test_half_targets_of_a_float32_input(rng):
    x = rng.standard_normal((6, 5)).astype(np.float32)
    t = rng.uniform(0, 1, (6, 5)).astype(ml_dtypes.bfloat16)
    assert_same_bits(fx.binary_cross_entropy_with_logits(x, t),
                     fx.binary_cross_entropy_with_logits(x, t.astype(np.float32)))


def test_float16_range(rng):
    """float16 rounds values above 65504 to inf and values below 6e-8 to 0: a mean over
    many items makes each gradient that small (the documented caveat), which
    reduction="sum" or a float32 grad_out avoid."""
    x = np.zeros((200000, 2), np.float16)
    y = np.zeros(200000, np.int64)
    _, g = fx.cross_entropy(x, y, return_grad=True)             # -0.5 / 200000 = -2.5e-6
    assert g.dtype == np.float16 and g[0, 0] != 0               # a subnormal
    x = np.zeros((40000000 // 20, 2), np.float16)
    _, g = fx.cross_entropy(x, np.zeros(len(x), np.int64), return_grad=True)
    assert g[0, 0] == np.float16(-0.5 / len(x))                 # rounded once, not flushed
    g32 = np.empty(x.shape, np.float32)
    fx.cross_entropy(x, np.zeros(len(x), np.int64), return_grad=True, grad_out=g32)
    assert g32[0, 0] == np.float32(-0.5) / np.float32(len(x))


def test_errors_name_the_dtypes(rng):
    with pytest.raises(TypeError, match="float16 or bfloat16"):
        fx.cross_entropy(np.zeros((2, 3), np.int32), np.zeros(2, np.int64))
    with pytest.raises(ValueError, match="expected bfloat16"):
        fx.cross_entropy(np.zeros((2, 3), ml_dtypes.bfloat16), np.zeros(2, np.int64),
                         return_grad=True, grad_out=np.zeros((2, 3), np.float16))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fx.binary_cross_entropy(np.full((2, 3), 1.5, np.float16), np.zeros((2, 3), np.float16))


def _torch_half(torch, x32, half):
    """A torch tensor of the half dtype and the same values as a NumPy half array."""
    tdt = torch.bfloat16 if half == "bfloat16" else torch.float16
    xt = torch.from_numpy(x32).to(tdt)
    xn = xt.float().numpy().astype(HALF[half])
    assert np.array_equal(xn.astype(np.float32), xt.float().numpy())
    return xt, xn


@pytest.mark.parametrize("shape", [(64, 1000), (8, 32768)])
def test_at_least_as_accurate_as_pytorch(half, shape, rng):
    torch = require_torch()
    F = torch.nn.functional
    x32 = (rng.standard_normal(shape) * 3).astype(np.float32)
    y = rng.integers(0, shape[1], shape[0])
    xt, xn = _torch_half(torch, x32, half)
    xt.requires_grad_(True)
    lt = F.cross_entropy(xt, torch.from_numpy(y))
    lt.backward()
    loss, grad = fx.cross_entropy(xn, y, return_grad=True)
    ref_loss, ref_grad = CASES["ce-plain"].ref(xn.astype(np.float64), y, {}, reduction="mean")
    err_fx = abs(float(loss) - ref_loss)
    err_torch = abs(float(lt.detach().double()) - ref_loss)
    assert err_fx <= 1e-6 * abs(ref_loss)
    assert err_fx <= err_torch, (err_fx, err_torch)
    gt = xt.grad.double().numpy()
    # both round the gradient to the half dtype (error up to half an ulp): fastxent's
    # largest error is no bigger than PyTorch's, up to the float32 arithmetic before the
    # rounding (a 1e-3 relative margin)
    e_fx = np.abs(grad.astype(np.float64) - ref_grad).max()
    e_torch = np.abs(gt - ref_grad).max()
    assert e_fx <= e_torch * 1.001, (e_fx, e_torch)


def test_every_half_value_round_trips(isa, half):
    """logsumexp of a one-class row is the value itself: every bit pattern of the half
    dtype widened and rounded back unchanged (NaN stays NaN), through the vector and the
    partial-vector paths (65536 rows of one class: a tail of every width)."""
    hd = HALF[half]
    x = np.arange(65536, dtype=np.uint16).view(hd).reshape(-1, 1)
    out = fx.logsumexp(x)
    nan = np.isnan(x[:, 0].astype(np.float32))
    # (-0.0 + log(1) is +0.0: the one value that is not its own logsumexp)
    keep = ~nan & (x[:, 0].view(np.uint16) != 0x8000)
    assert np.array_equal(out.view(np.uint16)[keep], x[:, 0].view(np.uint16)[keep])
    assert np.isnan(out[nan].astype(np.float32)).all()
    # elementwise: every value through sigmoid, the float32 result rounded once (a NaN's
    # payload is not compared: the casts of NumPy and ml_dtypes differ there too)
    got = fx.sigmoid(x[:, 0])
    want = fx.sigmoid(x[:, 0].astype(np.float32)).astype(hd)
    assert np.array_equal(np.isnan(got.astype(np.float32)), nan)
    assert np.array_equal(got.view(np.uint16)[~nan], want.view(np.uint16)[~nan])


def test_rounding_into_subnormals_and_overflow(isa, half):
    """softmax and log_softmax of rows [0, -d] for d over the dtype's range: results from
    1 down through the subnormals to 0, and beyond the largest finite value (float16:
    -inf), each the float32 result rounded to nearest even."""
    hd = HALF[half]
    top = 65504.0 if half == "float16" else 3e38
    d = np.geomspace(1e-3, top, 3001)
    x = np.stack([np.zeros_like(d), -d], axis=1).astype(hd)
    x32 = x.astype(np.float32)
    for fn in (fx.softmax, fx.log_softmax):
        assert_same_bits(fn(x), fn(x32).astype(hd), fn.__name__)
    if half == "float16":
        assert (fx.softmax(x)[:, 1].astype(np.float32) == 0).any()
        sub = fx.softmax(x)[:, 1].astype(np.float32)
        assert ((sub > 0) & (sub < 6.1e-5)).any()           # subnormal results met


@pytest.mark.parametrize("C", [1, 2, 31, 32, 33, 63, 64, 65, 100, 4096, 4097, 8200])
def test_row_max_from_bit_patterns(isa, half, C, rng):
    """The half row path takes each chunk's max from the 16-bit patterns (hmax_t in
    kernels/fx_simd.h: signed max and unsigned min per lane). Rows built so that the max
    sits anywhere, in any sign, beside -0.0, +-inf, subnormals and NaNs of both signs:
    the loss is the float32 kernels' on the widened values, bit for bit, and NaN exactly
    where theirs is. (Any shift near the max gives the same loss, often to the bit: the
    wide negative row is the one a wrong max cannot pass.)"""
    hd = HALF[half]
    tiny = float(ml_dtypes.finfo(hd).smallest_subnormal)
    kinds = ["mixed", "negative", "wide_negative", "zeros", "neg_inf", "pos_inf", "nan",
             "neg_nan", "subnormal", "max_last", "max_first"]
    rows = []
    for kind in kinds:
        r = rng.standard_normal(C) * 4
        if kind == "negative":
            r = -np.abs(r) - 0.5
        elif kind == "wide_negative":               # a wrong max would overflow the exps
            r = -1 - rng.random(C) * 300
        elif kind == "zeros":
            r = np.where(rng.random(C) < 0.5, -0.0, -np.abs(r))
        elif kind == "neg_inf":
            r[rng.random(C) < 0.5] = -np.inf
        elif kind == "pos_inf":
            r[rng.integers(C)] = np.inf
        elif kind == "nan":
            r[rng.integers(C)] = np.nan
        elif kind == "neg_nan":
            r = -np.abs(r)
            r[rng.integers(C)] = -np.nan
        elif kind == "subnormal":
            r = -np.abs(r) * tiny
        elif kind == "max_last":
            r = -np.abs(r)
            r[-1] = 1.0
        elif kind == "max_first":
            r = -np.abs(r)
            r[0] = 0.25
        rows.append(r)
    x = np.array(rows).astype(hd)
    y = rng.integers(0, C, len(rows))
    x32 = x.astype(np.float32)
    got = fx.cross_entropy(x, y, reduction="none")
    want = fx.cross_entropy(x32, y, reduction="none")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    fin = ~np.isnan(want)
    assert_same_bits(got[fin], want[fin], f"C={C}")
    assert_same_bits(fx.logsumexp(x)[fin], fx.logsumexp(x32)[fin].astype(hd), f"logsumexp C={C}")
