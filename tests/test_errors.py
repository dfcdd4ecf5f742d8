"""Bad input: every bad input of the documented contract (the README and the function
docstrings), label checks, and a fuzz of the argument checks.

For each bad input the test asserts
  * the exact exception type of the table,
  * a message that names what is wrong (the bad label and its position, both shapes,
    the dtype),
  * that nothing was written: ``grad_out`` (or ``out=`` of a building block) is filled
    with a sentinel before the call and must still hold it afterwards, for every loss
    function (cross_entropy, nll_loss, binary_cross_entropy_with_logits,
    binary_cross_entropy, kl_div) and every building block.

The fuzz (``test_fuzz_argument_checking``) makes FUZZ_CALLS seeded random calls with
random shapes, dtypes (object, complex, bool, str, longdouble, ...), None, lists,
scalars and wrong keyword values; each call must either raise a clean TypeError,
ValueError or IndexError (leaving any output buffer untouched) or return the result of
the float64 reference in tests/reference.py.
"""

import math
import re
import warnings

import numpy as np
import pytest

import fastxent as fx
import reference as ref
from conftest import INT_DTYPES, assert_same_bits, close_ieee
from registry import BLOCK_NAMES, BLOCKS, LOSS_NAMES, LOSSES

SENTINEL = 1234.5  # exactly representable in float32 and float64; no kernel produces it
REDUCING_BLOCKS = tuple(name for name, block in BLOCKS.items() if block.reduces)
# the losses that take class indices
INDEX_LOSSES = [name for name, loss in LOSSES.items() if "index" in loss.targets]
# (loss, keyword) of every weight array a loss takes
WEIGHT_PARAMS = [(loss.name, param) for loss in LOSSES.values() for param in loss.weights]


# ----------------------------------------------------------------------------- helpers
def _valid_args(name, rng, shape=(4, 3), dtype=np.float32):
    """(input, target, extra kwargs) that make a valid call of loss `name`."""
    return (*LOSSES[name].valid_call(rng, shape, dtype), {})


def _raises_untouched(exc, fn, *args, grad_like=None, grad_out=None, msg_parts=(),
                      key="grad_out", **kw):
    """Call fn(*args, **kw) with a sentinel-filled output buffer; assert `exc` is raised,
    that its message holds every string of msg_parts, and that the buffer is untouched.
    Returns the message."""
    if grad_out is None:
        grad_out = np.full(grad_like.shape, SENTINEL, dtype=grad_like.dtype)
    before = grad_out.copy()
    if key == "grad_out":
        kw.setdefault("return_grad", True)
    kw[key] = grad_out
    with pytest.raises(exc) as info:
        fn(*args, **kw)
    assert type(info.value) is exc, f"expected exactly {exc.__name__}, got {type(info.value).__name__}"
    assert_same_bits(grad_out, before, f"{key} was written before the {exc.__name__}")
    msg = str(info.value)
    for part in msg_parts:
        assert part in msg, f"message {msg!r} does not name {part!r}"
    return msg


def _position_named(msg, pos):
    """The message names the position `pos` (a tuple): as the tuple, or for a 1-D
    position also as the bare index."""
    if str(tuple(pos)) in msg or str(list(pos)) in msg:
        return True
    return len(pos) == 1 and re.search(rf"(?<![\d.]){pos[0]}(?![\d.])", msg) is not None


# ------------------------------------------------- class index outside [0, C) -> IndexError
def _bad_values(label_dtype, C):
    info = np.iinfo(label_dtype)
    vals = {"C": C, "C+17": C + 17, "max": int(info.max)}
    if info.min < 0:
        vals["-1"] = -1
        vals["-101"] = -101          # near, but not equal to, the default ignore_index
        vals["min"] = int(info.min)
    return vals


LAYOUTS = {
    # input shape, target shape
    "N": ((13, 5), (13,)),
    "spatial": ((3, 5, 4, 2), (3, 4, 2)),
    "unbatched": ((5,), ()),
}


@pytest.mark.parametrize("label_dtype", INT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("name", INDEX_LOSSES)
def test_label_out_of_range_is_indexerror(rng, dtype, name, layout, label_dtype):
    xshape, tshape = LAYOUTS[layout]
    C = xshape[0] if len(xshape) == 1 else xshape[1]
    fn = getattr(fx, name)
    for what, bad in _bad_values(label_dtype, C).items():
        x = rng.standard_normal(xshape).astype(dtype)
        t = np.asarray(rng.integers(0, C, size=tshape), dtype=label_dtype)
        pos = tuple(int(rng.integers(0, s)) for s in tshape)
        t[pos] = bad
        x0 = x.copy()
        for reduction in ("none", "mean", "sum"):
            for weight in (None, np.linspace(0.5, 2.0, C).astype(dtype)):
                msg = _raises_untouched(IndexError, fn, x, t, weight, grad_like=x,
                                        reduction=reduction, msg_parts=(str(bad),))
                if pos:
                    assert _position_named(msg, pos), f"{what}: {msg!r} does not name position {pos}"
        # also without return_grad, and the input is never touched
        with pytest.raises(IndexError):
            fn(x, t)
        assert_same_bits(x, x0, "input")


@pytest.mark.parametrize("name", INDEX_LOSSES)
def test_label_error_in_place_leaves_logits(rng, name):
    # grad_out=input: the logits must survive a bad label in the last row
    x = rng.standard_normal((64, 10)).astype(np.float32)
    t = rng.integers(0, 10, size=64)
    t[-1] = 10
    x0 = x.copy()
    with pytest.raises(IndexError):
        getattr(fx, name)(x, t, return_grad=True, grad_out=x)
    assert_same_bits(x, x0, "logits")


@pytest.mark.parametrize("name", INDEX_LOSSES)
def test_ignore_index_outside_range_is_not_an_error(rng, name):
    fn = getattr(fx, name)
    x = rng.standard_normal((6, 4))
    for label_dtype, ii in ((np.int64, -100), (np.int64, 4), (np.int64, 1000), (np.uint8, 255),
                            (np.int8, -1), (np.uint64, 2**63 - 1)):
        t = np.asarray(rng.integers(0, 4, size=6), dtype=label_dtype)
        t[[1, 4]] = ii
        loss, grad = fn(x, t, ignore_index=ii, reduction="none", return_grad=True)
        assert loss[1] == 0 and loss[4] == 0
        assert not grad[[1, 4]].any()
        assert np.isfinite(loss).all()


def test_first_bad_label_of_many_is_named(rng):
    x = rng.standard_normal((1000, 7)).astype(np.float32)
    t = rng.integers(0, 7, size=1000)
    t[517] = 9
    t[800] = -3
    with pytest.raises(IndexError) as info:
        fx.cross_entropy(x, t)
    msg = str(info.value)
    assert "9" in msg and _position_named(msg, (517,)), msg


@pytest.mark.parametrize("n_threads", [1, 2])
def test_first_bad_label_across_label_blocks(rng, n_threads):
    """Many labels are checked in blocks of 65536, in parallel: the first bad one is named
    even when a later block also has one, or when it sits in the last, partial block."""
    n = 300_000
    x = rng.standard_normal((n, 3)).astype(np.float32)
    t = rng.integers(0, 3, size=n).astype(np.int32)
    t[250_000] = 7                       # the fourth block
    t[140_000] = -2                      # the third: named first
    with pytest.raises(IndexError) as info:
        fx.cross_entropy(x, t, n_threads=n_threads)
    assert "-2" in str(info.value) and _position_named(str(info.value), (140_000,))
    t[140_000] = 0
    t[n - 1] = 3                         # the last, partial block
    with pytest.raises(IndexError) as info:
        fx.cross_entropy(x, t, n_threads=n_threads)
    assert _position_named(str(info.value), (250_000,))


def test_weighted_mean_over_label_blocks_is_thread_independent(rng):
    """The weight sum of the mean is added block by block in block order: the same bits
    for any thread count, and the float64 reference's value."""
    n = 200_003
    x = rng.standard_normal((n, 4)).astype(np.float32)
    t = rng.integers(0, 4, size=n)
    t[::7] = -100
    w = (rng.random(4) + 0.1).astype(np.float32)
    got = [fx.cross_entropy(x, t, w, n_threads=k) for k in (1, 2)]
    assert_same_bits(got[0], got[1])
    x64 = x.astype(np.float64)
    keep = t != -100
    lse = np.log(np.exp(x64[keep] - x64[keep].max(1, keepdims=True)).sum(1)) + x64[keep].max(1)
    wt = w.astype(np.float64)[t[keep]]
    want = np.sum(wt * (lse - x64[keep, t[keep]])) / np.sum(wt)
    assert abs(float(got[0]) - want) <= 1e-6 * abs(want)


def test_uint64_label_beyond_int64_is_out_of_range_even_with_ignore_index_int64_min():
    """Regression: a uint64 label beyond int64's range is out of range, also with
    ignore_index=-2**63, and the message names it."""
    x = np.zeros((2, 3), np.float32)
    t = np.array([0, 2**64 - 1], np.uint64)
    with pytest.raises(IndexError, match="18446744073709551615"):
        fx.cross_entropy(x, t, ignore_index=-2**63)


# ------------------------------------------------------- shapes that do not match -> ValueError
SHAPE_CASES = [
    # name, input shape, target shape, target kind, kwargs
    ("cross_entropy", (4, 3), (5,), "int", {}),
    ("cross_entropy", (4, 3), (4, 3), "int", {}),          # index target shaped like input
    ("cross_entropy", (4, 3, 2), (4, 3), "int", {}),
    ("cross_entropy", (4, 3, 2), (4, 2), "int", {"axis": -1}),
    ("cross_entropy", (3,), (1,), "int", {}),
    ("cross_entropy", (4, 3), (), "int", {}),
    ("cross_entropy", (4, 3), (4, 4), "float", {}),
    ("cross_entropy", (4, 3), (3, 4), "float", {}),
    ("cross_entropy", (4, 3), (4,), "float", {}),
    ("nll_loss", (4, 3), (3,), "int", {}),
    ("nll_loss", (2, 3, 5), (2, 4), "int", {}),
    ("binary_cross_entropy_with_logits", (4, 3), (4, 4), "float", {}),
    ("binary_cross_entropy_with_logits", (4, 3), (12,), "float", {}),
    ("binary_cross_entropy_with_logits", (4, 3), (1, 3), "float", {}),   # no broadcasting
    ("binary_cross_entropy_with_logits", (4, 3), (4, 3, 1), "bool", {}),
    ("binary_cross_entropy", (4, 3), (3, 4), "float", {}),
    ("binary_cross_entropy", (4, 3), (4,), "float", {}),
    ("kl_div", (4, 3), (4, 4), "float", {}),
    ("kl_div", (4, 3), (3,), "float", {}),
]


@pytest.mark.parametrize("case", SHAPE_CASES, ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}-{c[3]}")
def test_shape_mismatch_is_valueerror_naming_both_shapes(rng, case, dtype):
    name, xs, ts, kind, kw = case
    x = rng.uniform(0.1, 0.9, xs).astype(dtype)
    if kind == "int":
        t = np.zeros(ts, dtype=np.int64)
    elif kind == "bool":
        t = np.zeros(ts, dtype=bool)
    else:
        t = np.full(ts, 0.5, dtype=dtype)
    _raises_untouched(ValueError, getattr(fx, name), x, t, grad_like=x,
                      msg_parts=(str(tuple(xs)), str(tuple(ts))), **kw)


# --------------------------------------------------------- non-float input -> TypeError
# (float16 and bfloat16 are inputs: tests/test_half.py)
BAD_INPUT_DTYPES = [np.int8, np.int32, np.int64, np.uint8, np.uint64, np.bool_,
                    np.longdouble, np.complex64, np.complex128, np.object_, "U3", "S3",
                    "datetime64[s]", "timedelta64[ms]"]


def _as_dtype(a, dt):
    dt = np.dtype(dt)
    if dt.kind in "USO":
        return a.astype(np.float64).astype(dt)
    if dt.kind in "mM":
        return a.astype(np.int64).astype(dt)
    return a.astype(dt)


@pytest.mark.parametrize("bad", BAD_INPUT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_non_float_input_is_typeerror(rng, name, bad):
    x, t, kw = _valid_args(name, rng)
    xb = _as_dtype(x, bad)
    g = np.full(x.shape, SENTINEL, np.float32)
    for gl in (g, g.astype(np.float64)):
        _raises_untouched(TypeError, getattr(fx, name), xb, t, grad_out=gl.copy(),
                          msg_parts=(str(np.dtype(bad)),), **kw)
    with pytest.raises(TypeError):
        getattr(fx, name)(xb, t)


@pytest.mark.parametrize("bad", BAD_INPUT_DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_non_float_input_to_building_blocks_is_typeerror(rng, name, bad):
    x = rng.standard_normal((3, 4))
    xb = _as_dtype(x, bad)
    shape = (3,) if name in REDUCING_BLOCKS else (3, 4)
    for odt in (np.float32, np.float64):
        _raises_untouched(TypeError, getattr(fx, name), xb, key="out",
                          grad_out=np.full(shape, SENTINEL, odt), msg_parts=(str(np.dtype(bad)),))


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_python_list_of_ints_input_is_typeerror(rng, name):
    x, t, kw = _valid_args(name, rng)
    with pytest.raises(TypeError):
        getattr(fx, name)(np.rint(x).astype(np.int64).tolist(), t)


@pytest.mark.parametrize("name,tdt", [
    (n, d) for n in LOSS_NAMES for d in (np.complex64, np.complex128, np.object_, "U3", np.bool_)
    if not (d is np.bool_ and "bool" in LOSSES[n].targets)   # bool targets are valid there
], ids=lambda v: v if isinstance(v, str) else np.dtype(v).name)
def test_bad_target_dtype_is_typeerror(rng, name, tdt):
    x, t, kw = _valid_args(name, rng)
    tb = _as_dtype(t, tdt)
    _raises_untouched(TypeError, getattr(fx, name), x, tb, grad_like=x,
                      msg_parts=(str(np.dtype(tdt)),), **kw)


@pytest.mark.parametrize("name,param", WEIGHT_PARAMS)
def test_complex_weight_is_typeerror(rng, name, param):
    """A complex weight is complex input: TypeError, not a silent drop of the imaginary part."""
    x, t, kw = _valid_args(name, rng)
    w = np.ones(x.shape[-1], np.complex128) * (1 + 1j)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exception is the contract, not a warning
        _raises_untouched(TypeError, getattr(fx, name), x, t, grad_like=x, **{param: w})
        # a Python sequence holding a complex number too
        _raises_untouched(TypeError, getattr(fx, name), x, t, grad_like=x,
                          **{param: [1j] + [1.0] * (x.shape[-1] - 1)})


# --------------------------------- weight length, label_smoothing, reduction -> ValueError
@pytest.mark.parametrize("name", INDEX_LOSSES)
def test_weight_of_wrong_length_is_valueerror(rng, name):
    x, t, kw = _valid_args(name, rng, shape=(4, 5))
    for w in (np.ones(4), np.ones(6), np.ones((5, 1)), np.ones((1, 5)), np.float64(2.0),
              np.ones(0), [1.0, 2.0]):
        wshape = np.shape(w)
        _raises_untouched(ValueError, getattr(fx, name), x, t, w, grad_like=x,
                          msg_parts=(str(wshape),))


@pytest.mark.parametrize("name,param", [p for p in WEIGHT_PARAMS if not LOSSES[p[0]].class_axis])
def test_binary_weight_that_does_not_broadcast_is_valueerror(rng, name, param):
    x, t, kw = _valid_args(name, rng, shape=(4, 5))
    for w in (np.ones(4), np.ones(6), np.ones((3, 5)), np.ones((4, 5, 2))):
        _raises_untouched(ValueError, getattr(fx, name), x, t, grad_like=x,
                          msg_parts=(str(w.shape), str(x.shape)), **{param: w})


@pytest.mark.parametrize("eps", [-0.1, -1e-12, 1.0000001, 2.0, math.nan, math.inf, -math.inf])
def test_label_smoothing_outside_unit_interval_is_valueerror(rng, eps):
    for soft in (False, True):
        x = rng.standard_normal((4, 5)).astype(np.float32)
        t = ref.softmax(rng.standard_normal((4, 5))).astype(np.float32) if soft else rng.integers(0, 5, 4)
        _raises_untouched(ValueError, fx.cross_entropy, x, t, grad_like=x, label_smoothing=eps)


def test_label_smoothing_at_the_bounds_is_accepted(rng):
    x = rng.standard_normal((4, 5))
    t = rng.integers(0, 5, 4)
    for eps in (0.0, 1.0, np.float32(1.0), 0):
        loss, grad = fx.cross_entropy(x, t, label_smoothing=eps, return_grad=True)
        rl, rg = ref.cross_entropy(x, t, label_smoothing=float(eps))
        np.testing.assert_allclose(loss, rl, rtol=1e-11)
        np.testing.assert_allclose(grad, rg, rtol=1e-11, atol=1e-13)


@pytest.mark.parametrize("name,reduction", [
    (n, r) for n in LOSS_NAMES for r in ("avg", "MEAN", "Mean", "", "mean ", "batchmean", None, 1, b"mean")
    if r not in LOSSES[n].reductions])  # batchmean is kl_div's own
def test_unknown_reduction_is_valueerror(rng, name, reduction):
    x, t, kw = _valid_args(name, rng)
    _raises_untouched(ValueError, getattr(fx, name), x, t, grad_like=x, reduction=reduction)


# ------------------------------------------- binary_cross_entropy input outside [0, 1]
@pytest.mark.parametrize("bad", [-1e-7, 1 + 1e-6, -0.5, 1.5, -math.inf, math.inf, 1e30])
def test_binary_cross_entropy_input_outside_unit_interval_is_valueerror(rng, dtype, bad):
    x = rng.uniform(0, 1, (5, 4)).astype(dtype)
    t = (rng.random((5, 4)) < 0.5).astype(dtype)
    x[3, 2] = bad
    assert x[3, 2] < 0 or x[3, 2] > 1
    for reduction in ("none", "mean", "sum"):
        _raises_untouched(ValueError, fx.binary_cross_entropy, x, t, grad_like=x, reduction=reduction)
    # in place over the input: the input survives
    x0 = x.copy()
    with pytest.raises(ValueError):
        fx.binary_cross_entropy(x, t, return_grad=True, grad_out=x)
    assert_same_bits(x, x0, "input")


def test_binary_cross_entropy_accepts_exact_zero_and_one():
    x = np.array([0.0, 1.0, 0.0, 1.0])
    t = np.array([0.0, 1.0, 1.0, 0.0])
    loss, grad = fx.binary_cross_entropy(x, t, reduction="none", return_grad=True)
    rl, rg = ref.binary_cross_entropy(x, t, reduction="none")
    np.testing.assert_allclose(loss, rl)
    np.testing.assert_allclose(grad, rg)


# ------------------------------------ grad_out wrong shape / dtype / not writable -> ValueError
def _bad_grad_outs(x):
    other = np.float64 if x.dtype == np.float32 else np.float32
    ro = np.full(x.shape, SENTINEL, x.dtype)
    ro.flags.writeable = False
    bads = {
        "transposed-shape": np.full(x.shape[::-1], SENTINEL, x.dtype),
        "extra-dim": np.full(x.shape + (1,), SENTINEL, x.dtype),
        "flat": np.full((x.size,), SENTINEL, x.dtype),
        "narrower": np.full(x.shape[:-1] + (x.shape[-1] - 1,), SENTINEL, x.dtype),
        "bigger": np.full((x.shape[0] + 1,) + x.shape[1:], SENTINEL, x.dtype),
        "other-float": np.full(x.shape, SENTINEL, other),
        "int": np.full(x.shape, 1234, np.int64),
        "float16": np.full(x.shape, SENTINEL, np.float16),
        "read-only": ro,
        "read-only-view": np.broadcast_to(np.full(x.shape[1:], SENTINEL, x.dtype), x.shape),
    }
    bads.update(_self_overlapping(x.shape, x.dtype))
    return bads


def _self_overlapping(shape, dtype):
    """Writable outputs whose elements share memory (PyTorch refuses them as outputs):
    the first axis with stride 0, and (2-D and up) rows one element apart."""
    from numpy.lib.stride_tricks import as_strided
    inner = shape[1:]
    base = np.full(max(1, int(np.prod(inner))), SENTINEL, dtype)
    item = base.itemsize
    inner_strides = tuple(int(np.prod(inner[k + 1:])) * item for k in range(len(inner)))
    bads = {"zero-stride": as_strided(base, shape, (0,) + inner_strides)}
    if len(shape) > 1:
        window = np.full(int(sum(shape)), SENTINEL, dtype)
        bads["sliding-window"] = as_strided(window, shape, (item,) * len(shape))
    return bads


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_bad_grad_out_is_valueerror_before_any_write(rng, name, dtype):
    x, t, kw = _valid_args(name, rng, shape=(4, 3), dtype=dtype)
    x0 = x.copy()
    for what, g in _bad_grad_outs(x).items():
        for reduction in ("none", "mean", "sum"):
            msg = _raises_untouched(ValueError, getattr(fx, name), x, t, grad_out=g,
                                    reduction=reduction, **kw)
            if "shape" in what or what in ("flat", "bigger", "narrower"):
                assert str(g.shape) in msg and str(x.shape) in msg, msg
            if what in ("other-float", "int", "float16"):
                assert str(g.dtype) in msg, msg
            if what in ("zero-stride", "sliding-window"):
                assert "share memory" in msg, msg
    assert_same_bits(x, x0, "input")


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_grad_out_not_an_array_is_a_clean_error(rng, name):
    x, t, kw = _valid_args(name, rng)
    for g in (x.tolist(), 0.0, "grad"):
        with pytest.raises((ValueError, TypeError)):
            getattr(fx, name)(x, t, return_grad=True, grad_out=g, **kw)


@pytest.mark.parametrize("name", BLOCK_NAMES)
def test_bad_out_of_building_block_is_valueerror_before_any_write(rng, name, dtype):
    x = rng.standard_normal((4, 3)).astype(dtype)
    x0 = x.copy()
    shape = (4,) if name in REDUCING_BLOCKS else (4, 3)
    other = np.float64 if dtype == np.float32 else np.float32
    ro = np.full(shape, SENTINEL, dtype)
    ro.flags.writeable = False
    bads = [np.full(shape[::-1] if len(shape) > 1 else (3,), SENTINEL, dtype),
            np.full(shape + (1,), SENTINEL, dtype),
            np.full((1,) + shape, SENTINEL, dtype),
            np.full(shape, SENTINEL, other),
            np.full(shape, 1234, np.int32),
            ro, *_self_overlapping(shape, dtype).values()]
    for out in bads:
        _raises_untouched(ValueError, getattr(fx, name), x, key="out", grad_out=out)
    assert_same_bits(x, x0, "input")


def test_error_message_names_axis_and_threads(rng):
    x = rng.standard_normal((3, 4))
    for bad in (2, -3, 17):
        with pytest.raises(ValueError, match=str(bad)):
            fx.softmax(x, axis=bad)
        with pytest.raises(ValueError, match=str(bad)):
            fx.cross_entropy(x, np.zeros(3, int), axis=bad)
    # a 1-D (unbatched) input has one axis: axis is checked there too
    with pytest.raises(ValueError, match="axis=5"):
        fx.cross_entropy(np.zeros(3, np.float32), np.array(1), axis=5)
    for bad in (0, -1):
        with pytest.raises(ValueError):
            fx.softmax(x, n_threads=bad)
    for bad in (1.5, "2"):
        with pytest.raises(TypeError):
            fx.softmax(x, n_threads=bad)


@pytest.mark.parametrize("kw,label_dtype", [
    ({"ignore_index": 2**63}, np.int64),
    ({"ignore_index": 2**70}, np.int64),
    ({"ignore_index": -2**63 - 1}, np.int64),
    ({"ignore_index": 2**64 - 1}, np.uint64),   # a natural "ignore" marker for uint64 labels
    ({"n_threads": 2**40}, np.int64),
    ({"n_threads": 2**63}, np.int64),
], ids=["ii=2**63", "ii=2**70", "ii=-2**63-1", "uint64-ii=2**64-1", "nt=2**40", "nt=2**63"])
def test_out_of_range_integer_arguments_are_clean(rng, kw, label_dtype):
    """Integers beyond the C types: a ValueError/TypeError (or the right answer), never an
    OverflowError from the C conversion. The array is big enough for the parallel path."""
    x = rng.standard_normal((512, 300)).astype(np.float32)
    t = rng.integers(0, 300, 512).astype(label_dtype)
    if "ignore_index" in kw and label_dtype == np.uint64:
        t[::7] = kw["ignore_index"]
    try:
        loss, grad = fx.cross_entropy(x, t, return_grad=True, **kw)
    except (ValueError, TypeError):
        return
    rl, rg = ref.cross_entropy(x, t, **{k: v for k, v in kw.items() if k != "n_threads"})
    close_ieee(loss, rl, np.float32, "loss")
    close_ieee(grad, rg, np.float32, "grad")


# ==================================================================================== fuzz
FUZZ_CALLS = 3000
P_BAD = 0.12          # chance that any one argument is drawn from the invalid pool
CLEAN = (TypeError, ValueError, IndexError)
ALL_NAMES = LOSS_NAMES + BLOCK_NAMES
_F = [np.float32, np.float64]
BAD_DTYPES = [np.longdouble, np.int8, np.int64, np.uint8, np.uint64, np.bool_,
              np.complex64, np.complex128, np.object_, "U2", "S2"]
BAD_LABEL_DTYPES = [np.bool_, np.float16, np.complex64, np.object_, "U2"]


class _Opaque:
    def __repr__(self):
        return "<opaque>"


JUNK = [None, [], [1, 2], [[1.0], [2.0, 3.0]], 0, 1, -1, 2**70, 1.5, math.nan, math.inf,
        True, 1j, "mean", b"x", _Opaque(), {"a": 1}, np.float32(1), np.int64(3), (1, 2),
        slice(1), np.array("abc"), np.array(None)]

# (valid values, invalid or odd values) of each keyword argument
KW_POOLS = {
    "reduction": (["none", "mean", "sum"], ["batchmean", "avg", None, 1, "MEAN", ""]),
    "ignore_index": ([-100, -1, 0, 1, 2, 255, 2**31, 2**63 - 1, -2**63, np.int8(1), np.uint64(3)],
                     [2**63, 2**70, -2**63 - 1, 1.0, None, True, "1"]),
    "label_smoothing": ([0.0, 0.1, 0.5, 1.0, np.float32(0.2), "0.1"],
                        [-0.1, 1.1, math.nan, math.inf, None, 1j, [0.1], "x"]),
    "axis": ([0, 1, -1, -2, 2, np.int64(1), True], [3, 5, -5, 1.0, None, "1", 2**70]),
    "n_threads": ([None, 1, 2, 3, np.int32(2)], [0, -1, 1.5, "2", 2**40, 2**70]),
    "return_grad": ([True, False, 1, 0], [None, "yes"]),
    "log_target": ([False, True], [1, None, "x"]),
}


def _pick(rng, pool):
    return pool[int(rng.integers(len(pool)))]


def _kw(rng, name):
    good, bad = KW_POOLS[name]
    return _pick(rng, bad if rng.random() < P_BAD else good)


def _bad(rng):
    return rng.random() < P_BAD


def _rand_shape(rng, ndim=None):
    ndim = int(rng.integers(0, 4)) if ndim is None else ndim
    return tuple(int(rng.choice([0, 1, 1, 2, 3, 4])) for _ in range(ndim))


def _rand_values(rng, shape, dtype):
    v = np.asarray(rng.standard_normal(shape) * float(rng.choice([1.0, 3.0, 100.0])))
    if rng.random() < 0.1 and v.size:
        v.reshape(-1)[rng.integers(0, v.size)] = rng.choice([np.nan, -np.inf])  # +inf: test_ieee
    with np.errstate(invalid="ignore", over="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _as_dtype(v, dtype)


def _layout(rng, a):
    r = rng.random()
    if r < 0.1 and a.ndim:
        return np.flip(a, axis=-1)                   # negative strides
    if r < 0.15:
        return np.asfortranarray(a)
    if r < 0.2 and a.ndim:
        return np.repeat(a, 2, axis=-1)[..., ::2]    # non-contiguous
    if r < 0.25:
        a = a.copy()
        a.flags.writeable = False
    return a


def _rand_array(rng, shape=None, dtype=None, unit=False):
    shape = _rand_shape(rng) if shape is None else shape
    if dtype is None:
        dtype = _pick(rng, BAD_DTYPES) if _bad(rng) else _pick(rng, _F)
    if unit:
        return _layout(rng, _as_dtype(np.asarray(rng.random(shape)), dtype))
    return _layout(rng, _rand_values(rng, shape, dtype))


def _junk(rng):
    return _pick(rng, JUNK)


def _fuzz_case(rng):
    """(name, args, kwargs, output-buffer key): a random call, each argument valid
    except with probability P_BAD (then junk, a bad dtype, a bad shape or a bad value)."""
    name = _pick(rng, ALL_NAMES)
    r = rng.random()
    if r < P_BAD / 2:
        x = _junk(rng)
    else:
        x = _rand_array(rng, unit=(name == "binary_cross_entropy" and rng.random() < 0.8))
        if name in ("cross_entropy", "nll_loss") + BLOCK_NAMES[:4] and x.ndim == 0 and not _bad(rng):
            x = _rand_array(rng, shape=_rand_shape(rng, int(rng.integers(1, 4))), dtype=x.dtype)
        if rng.random() < 0.03:
            x = x.tolist()
    xa = x if isinstance(x, np.ndarray) else None
    try:
        xshape = np.shape(x) if xa is None and isinstance(x, list) else xa.shape if xa is not None else ()
    except ValueError:  # a ragged list
        xshape = ()
    nd = len(xshape)
    kw = {}
    args = [x]
    if name in ("cross_entropy", "nll_loss"):
        ax = 0 if nd <= 1 else 1
        if rng.random() < 0.3:
            kw["axis"] = _kw(rng, "axis")
            a = kw["axis"]
            if isinstance(a, (int, np.integer)) and nd > 1 and -nd <= a < nd:
                ax = int(a) % nd
        C = xshape[ax] if nd else 1
        item = xshape[:ax] + xshape[ax + 1:] if nd > 1 else ()
        if name == "cross_entropy" and rng.random() < 0.3:
            t = _rand_array(rng, shape=xshape, dtype=_pick(rng, _F), unit=True)   # soft
        else:
            ldt = _pick(rng, BAD_LABEL_DTYPES) if _bad(rng) else _pick(rng, INT_DTYPES)
            t = rng.integers(0, max(C, 1), size=item)
            if _bad(rng) and t.size:
                t.reshape(-1)[rng.integers(t.size)] = _pick(rng, [C, C + 1, -1, 1000, -100])
            if np.dtype(ldt).kind == "u":
                t = np.abs(t)
            t = _layout(rng, _as_dtype(np.asarray(t), ldt))
        if _bad(rng):
            t = _pick(rng, [_junk(rng), _rand_array(rng), t.reshape(-1), t[..., None]])
        args.append(t)
        if rng.random() < 0.3:
            w = rng.uniform(0.2, 2.0, C).astype(_pick(rng, _F))
            if _bad(rng):
                w = _pick(rng, [_junk(rng), _rand_array(rng), np.ones(C + 1), w.astype(np.complex64),
                                w[:, None], w.tolist()])
            args.append(w)
        for k in ("ignore_index", "reduction") + (("label_smoothing",) if name == "cross_entropy" else ()):
            if rng.random() < 0.4:
                kw[k] = _kw(rng, k)
    elif name in ("binary_cross_entropy_with_logits", "binary_cross_entropy", "kl_div"):
        if name == "kl_div":
            tdt = _pick(rng, _F)
        else:
            tdt = _pick(rng, _F + [np.bool_, np.uint8, np.int64, np.float16])
        t = _rand_array(rng, shape=xshape, dtype=tdt, unit=True)
        if _bad(rng):
            t = _pick(rng, [_junk(rng), _rand_array(rng), t.astype(np.complex64), t[..., None]])
        args.append(t)
        cols = xshape[-1] if nd else 1
        if name != "kl_div" and rng.random() < 0.3:
            w = _pick(rng, [np.full(cols, 2.0), rng.uniform(0, 2, xshape), np.float32(0.5)])
            if _bad(rng):
                w = _pick(rng, [_junk(rng), _rand_array(rng), np.ones(cols + 1), np.ones(cols, complex)])
            args.append(w)
        if name == "binary_cross_entropy_with_logits" and rng.random() < 0.3:
            pw = _pick(rng, [np.full(cols, 3.0), rng.uniform(0.5, 3, cols).astype(np.float32)])
            if _bad(rng):
                pw = _pick(rng, [_junk(rng), _rand_array(rng), np.ones(cols + 1)])
            kw["pos_weight"] = pw
        if rng.random() < 0.4:
            kw["reduction"] = (_pick(rng, ["batchmean", "batchmean", "mean", "sum", "none"])
                               if name == "kl_div" and not _bad(rng) else _kw(rng, "reduction"))
        if name == "kl_div" and rng.random() < 0.4:
            kw["log_target"] = _kw(rng, "log_target")
    else:  # building blocks
        if name not in ("sigmoid", "log_sigmoid") and rng.random() < 0.3:
            kw["axis"] = _kw(rng, "axis")
    if rng.random() < 0.25:
        kw["n_threads"] = _kw(rng, "n_threads")
    key = "out" if name in BLOCK_NAMES else "grad_out"
    if name in LOSS_NAMES and rng.random() < 0.6:
        kw["return_grad"] = _kw(rng, "return_grad")
    if rng.random() < 0.3:
        if key == "out" and name in REDUCING_BLOCKS and nd:
            ax = kw.get("axis", -1)
            try:
                shp = xshape[:int(ax) % nd] + xshape[int(ax) % nd + 1:]
            except (TypeError, ValueError, ZeroDivisionError):
                shp = xshape[:-1]
        else:
            shp = xshape
        dt = xa.dtype if xa is not None and xa.dtype.kind == "f" else _pick(rng, _F)
        r = rng.random()
        if r < 0.15 and xa is not None and name in LOSS_NAMES:
            kw[key] = xa                                     # in place
        elif not _bad(rng):
            buf = np.full(shp, SENTINEL, dtype=dt)
            kw[key] = _layout(rng, buf) if rng.random() < 0.5 else buf
            if name in LOSS_NAMES and not _bad(rng):
                kw["return_grad"] = True
        else:
            kw[key] = _pick(rng, [_junk(rng), np.full(_rand_shape(rng), SENTINEL, dt),
                                  np.full(shp, SENTINEL, np.float16), np.full(shp + (1,), SENTINEL, dt)])
    return name, args, kw, key


def _copy_arg(a):
    return a.copy() if isinstance(a, np.ndarray) else a


UNCHECKED = object()


def _class_axis_len(name, x, kw):
    x = np.asarray(x)
    if x.ndim == 0:
        return 1
    if name in ("cross_entropy", "nll_loss"):
        ax = 0 if x.ndim == 1 else kw.get("axis", 1)
    else:
        ax = kw.get("axis", -1)
    try:
        return x.shape[int(ax)]
    except (TypeError, ValueError, IndexError):
        return 1


def _reference(name, args, kw):
    """The float64 reference for the same call: (loss or value, grad or None).

    Translations where fastxent's documented choice differs from what the NumPy
    reference computes by itself:
      * a bool axis is taken as the int it equals (fastxent uses operator.index);
      * a size-1 weight/pos_weight of a 0-d BCE input is that scalar;
      * entropy, softmax and log_softmax of a slice with no defined distribution (all
        -inf, or holding a NaN; the fuzz injects no +inf) are NaN: the docstrings say so
        and NaN propagates (the reference's entropy maps them to 0);
      * nothing is compared for an empty class axis (C = 0), a degenerate case the
        reference does not model; the result only has to be a clean one.
    """
    rkw = {k: v for k, v in kw.items() if k not in ("return_grad", "grad_out", "n_threads", "out")}
    if isinstance(rkw.get("axis"), (bool, np.bool_)):
        rkw["axis"] = int(rkw["axis"])
    args = [_copy_arg(a) for a in args]
    if _class_axis_len(name, args[0], rkw) == 0:
        return UNCHECKED
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if name in BLOCK_NAMES:
            f = getattr(ref, name)
            if name in ("sigmoid", "log_sigmoid"):
                return f(args[0]), None
            ax = rkw.get("axis", -1)
            val = f(args[0], axis=ax)
            if name in ("entropy", "softmax", "log_softmax"):
                x64 = np.asarray(args[0], dtype=np.float64)
                keep = name != "entropy"
                undefined = (np.all(x64 == -np.inf, axis=ax, keepdims=keep)
                             | np.any(np.isnan(x64), axis=ax, keepdims=keep))
                val = np.where(undefined, np.nan, val)
            return val, None
        if name in ("cross_entropy", "nll_loss"):
            a = list(args)
            if len(a) > 2:
                rkw["weight"] = a.pop(2)
            if "label_smoothing" in rkw:
                rkw["label_smoothing"] = float(rkw["label_smoothing"])
            return getattr(ref, name)(*a, **rkw)
        if name == "kl_div":
            rkw["log_target"] = bool(rkw.get("log_target", False))
        if np.ndim(args[0]) == 0:
            if len(args) > 2 and np.size(args[2]) == 1:
                args[2] = np.reshape(args[2], ())
            if np.size(rkw.get("pos_weight", 0)) == 1 and rkw.get("pos_weight") is not None:
                rkw["pos_weight"] = np.reshape(rkw["pos_weight"], ())
        return getattr(ref, name)(*args, **rkw)


def _check_success(name, args, kw, key, result, expected, buf):
    """The call succeeded: it must agree with the reference (which must accept the call),
    and a given output buffer must hold the returned values."""
    dt = np.asarray(args[0]).dtype if not isinstance(args[0], list) else np.dtype(np.float64)
    want_grad = name in LOSS_NAMES and bool(kw.get("return_grad", False))
    val, grad = result if want_grad else (result, None)
    out_val = grad if want_grad else val if name in BLOCK_NAMES else None
    if isinstance(buf, np.ndarray) and out_val is not None:
        assert_same_bits(buf, out_val, "output buffer does not hold the result")
    if expected is UNCHECKED:
        return
    if isinstance(expected, BaseException):
        raise AssertionError(f"fastxent accepted a call that the reference rejects "
                             f"({type(expected).__name__}: {expected})")
    exp_val, exp_grad = expected
    close_ieee(val, exp_val, dt, "value")
    if want_grad:
        close_ieee(grad, exp_grad, dt, "grad", unit=_grad_unit(name, args, kw))


def _grad_unit(name, args, kw):
    """The size of the terms whose difference is the gradient, for its absolute error
    bound: softmax losses compute scale * (a p_j - b_j) with a, b ~ w (p_t - 1 cancels),
    BCE with logits w (lw sigmoid(x) - pw t); the error is relative to these terms, not
    to the (possibly tiny) difference."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            x = np.asarray(args[0], dtype=np.float64)
            mean = kw.get("reduction", "mean") == "mean"
            if name in ("cross_entropy", "nll_loss"):
                ax = 0 if x.ndim == 1 else int(kw.get("axis", 1))
                C = x.shape[ax]
                w = np.ones(C) if len(args) < 3 else np.abs(np.asarray(args[2], np.float64)).reshape(C)
                t = np.asarray(args[1])
                if t.dtype.kind == "f":
                    rows = np.moveaxis(np.abs(t.astype(np.float64)), ax, -1).reshape(-1, C)
                    a = float(w.max()) * max(1.0, float(rows.sum(axis=1).max()))
                    return a / rows.shape[0] if mean else a
                t = t.reshape(-1).astype(np.int64)
                valid = t != int(kw.get("ignore_index", -100))
                W = float(w[t[valid]].sum()) if valid.any() else 0.0
                a = float(w.max())
                return a / W if mean and W > 0 else a
            if name == "binary_cross_entropy_with_logits":
                a = 1.0
                if len(args) > 2:
                    a *= float(np.abs(np.asarray(args[2], np.float64)).max())
                if kw.get("pos_weight") is not None:
                    a *= max(1.0, float(np.abs(np.asarray(kw["pos_weight"], np.float64)).max()))
                return a / x.size if mean and x.size else a
    except Exception:  # noqa: BLE001 - odd arguments: fall back to the result's own scale
        pass
    return 0.0


def _describe(name, args, kw):
    def d(a):
        if isinstance(a, np.ndarray):
            return f"ndarray(shape={a.shape}, dtype={a.dtype}, strides={a.strides})"
        return repr(a)[:60]
    return f"fx.{name}({', '.join(d(a) for a in args)}, " + \
        ", ".join(f"{k}={d(v)}" for k, v in kw.items()) + ")"


def test_fuzz_argument_checking():
    rng = np.random.default_rng(20240521)
    failures = []
    n_ok = n_clean = 0
    for i in range(FUZZ_CALLS):
        name, args, kw, key = _fuzz_case(rng)
        buf = kw.get(key)
        buf_is_input = isinstance(buf, np.ndarray) and buf is args[0]
        before = buf.copy() if isinstance(buf, np.ndarray) else None
        try:
            expected = _reference(name, args, kw)
        except ZeroDivisionError:
            expected = UNCHECKED  # the reference's soft-target mean over no items
        except Exception as exc:  # noqa: BLE001 - the reference may reject what fx rejects
            expected = exc
        try:
            with warnings.catch_warnings():
                # a complex value silently cast to real is not a clean rejection
                warnings.simplefilter("error", np.exceptions.ComplexWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                result = getattr(fx, name)(*args, **kw)
        except CLEAN:
            n_clean += 1
            if before is not None:
                try:
                    assert_same_bits(buf, before)
                except AssertionError:
                    what = "input overwritten" if buf_is_input else "output written"
                    failures.append(f"#{i} {what} before the error: {_describe(name, args, kw)}")
            continue
        except BaseException as exc:  # noqa: BLE001
            failures.append(f"#{i} {type(exc).__name__}: {exc} <- {_describe(name, args, kw)}")
            continue
        n_ok += 1
        try:
            _check_success(name, args, kw, key, result, expected, buf)
        except AssertionError as exc:
            failures.append(f"#{i} wrong result <- {_describe(name, args, kw)}: "
                            + " ".join(str(exc).split())[:400])
    print(f"fuzz: {FUZZ_CALLS} calls, {n_ok} results checked against the reference, "
          f"{n_clean} clean errors")
    assert n_ok > FUZZ_CALLS // 10 and n_clean > FUZZ_CALLS // 10, (n_ok, n_clean)
    assert not failures, f"{len(failures)} bad outcomes:\n" + "\n".join(failures[:25])


# ------------------------------------------------ the caller's code run mid-conversion
CALLBACK_PROBE = r"""
import numpy as np
import fastxent as fx

def fresh():
    x = np.random.default_rng(0).standard_normal((64, 10)).astype(np.float32)
    return x, np.arange(64) % 10

class Mutating:
    # converting this object (as an array, an index or a float) changes the caller's
    # input array in place, after fastxent has seen it: its float32 buffer becomes
    # float64 of half the columns
    def __init__(self, victim, value):
        self.victim, self.value = victim, value
    def _strike(self):
        self.victim.dtype = np.float64
        return self.value
    def __array__(self, dtype=None, copy=None):
        return np.asarray(self._strike(), dtype=dtype)
    def __index__(self):
        return self._strike()
    def __float__(self):
        return float(self._strike())

calls = {
    "ce target": lambda x, y: fx.cross_entropy(x, Mutating(x, y), return_grad=True),
    "ce weight": lambda x, y: fx.cross_entropy(x, y, Mutating(x, np.ones(10, np.float32)),
                                               return_grad=True),
    "ce n_threads": lambda x, y: fx.cross_entropy(x, y, return_grad=True,
                                                  n_threads=Mutating(x, 2)),
    "ce axis": lambda x, y: fx.cross_entropy(x, y, axis=Mutating(x, 1), return_grad=True),
    "ce label_smoothing": lambda x, y: fx.cross_entropy(x, y, return_grad=True,
                                                        label_smoothing=Mutating(x, 0.1)),
    "ce grad_out": lambda x, y: fx.cross_entropy(
        x, Mutating(x, y), return_grad=True, grad_out=np.empty((64, 10), np.float32)),
    "nll target": lambda x, y: fx.nll_loss(x, Mutating(x, y), return_grad=True),
    "bce target": lambda x, y: fx.binary_cross_entropy_with_logits(
        x, Mutating(x, np.ones((64, 10), np.float32)), return_grad=True),
    "bce pos_weight": lambda x, y: fx.binary_cross_entropy_with_logits(
        x, np.ones((64, 10), np.float32), pos_weight=Mutating(x, np.ones(10)),
        return_grad=True),
    "kl target": lambda x, y: fx.kl_div(x, Mutating(x, np.ones((64, 10), np.float32)),
                                        return_grad=True),
    "softmax n_threads": lambda x, y: fx.softmax(x, n_threads=Mutating(x, 2)),
    "logsumexp axis": lambda x, y: fx.logsumexp(x, axis=Mutating(x, 1)),
    "sigmoid out": lambda x, y: fx.sigmoid(x, n_threads=Mutating(x, 1),
                                           out=np.empty((64, 10), np.float32)),
}
for name, call in calls.items():
    x, y = fresh()
    try:
        result = call(x, y)
    except (TypeError, ValueError, IndexError) as exc:   # a clean refusal is fine
        print(name, "refused", type(exc).__name__)
        continue
    # or it computed on what the input was when the kernel started: its new shape
    for r in result if isinstance(result, tuple) else (result,):
        assert np.all(np.isfinite(r)), name
    print(name, "computed", x.dtype, x.shape)
print("survived")
"""


def test_callbacks_that_change_the_input_cannot_break_memory_safety():
    """Converting an argument can run the caller's code (__array__, __index__,
    __float__), and that code can change the input array in place (``x.dtype =
    np.float64`` is legal NumPy) after fastxent has looked at it. Every dtype, shape and
    pointer the kernel uses is read from fastxent's own snapshot taken after the last
    such call: the call computes on a consistent array or refuses cleanly, and never
    writes past a buffer (the probe crashed the interpreter with SIGSEGV before). Run in
    a subprocess, so that a crash fails this test instead of the suite."""
    import subprocess
    import sys
    run = subprocess.run([sys.executable, "-c", CALLBACK_PROBE], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert run.stdout.strip().endswith("survived"), run.stdout
    assert run.stdout.count("computed") + run.stdout.count("refused") == 13, run.stdout


def test_logsumexp_over_an_empty_axis_is_minus_inf(dtype):
    """The log of an empty sum: -inf, as SciPy and PyTorch give (it raised). Entropy over
    no classes still has no value (ValueError)."""
    x = np.zeros((3, 0), dtype)
    res = fx.logsumexp(x)
    assert res.shape == (3,) and res.dtype == dtype and np.all(res == -np.inf)
    out = np.zeros(3, dtype)
    assert fx.logsumexp(x, out=out) is out and np.all(out == -np.inf)
    assert np.all(fx.logsumexp(np.zeros((0, 4), dtype), axis=0) == -np.inf)
    with pytest.raises(ValueError, match="length 0"):
        fx.entropy(x)


def test_allocation_failure_is_memoryerror_before_any_write(dtype):
    """Every allocation of the compiled core happens before its parallel region (the
    kernels allocate nothing that can fail: rows of more than 64 chunks get their chunk
    tables from the caller), so an allocation that fails is a MemoryError with every
    output untouched. (A failing allocation inside a kernel gave a NaN loss and an
    unwritten grad_out, or an uninitialised logsumexp, before.) Each allocation of each
    call is made to fail in turn through the core's test hook."""
    from fastxent import _core
    rng = np.random.default_rng(3)
    C = 70 * 16384 // np.dtype(dtype).itemsize            # 70 chunks a row: heap tables
    x = rng.standard_normal((5, C)).astype(dtype)
    y = rng.integers(0, C, 5)
    calls = {
        # 5 rows at 2 threads: parallel over rows, a chunk table per thread
        "cross_entropy": lambda g: fx.cross_entropy(x, y, return_grad=True, grad_out=g,
                                                    n_threads=2)[1],
        "cross_entropy serial": lambda g: fx.cross_entropy(x, y, return_grad=True, grad_out=g,
                                                           n_threads=1)[1],
        # 1 row at 2 threads: parallel over the chunks of the row
        "cross_entropy one row": lambda g: fx.cross_entropy(x[:1], y[:1], return_grad=True,
                                                            grad_out=g[:1], n_threads=2)[1],
        "logsumexp": lambda g: fx.logsumexp(x, out=g[:, 0], n_threads=2),
        "softmax": lambda g: fx.softmax(x, out=g, n_threads=2),
    }
    for name, call in calls.items():
        expected = call(np.empty_like(x)).copy()
        failures = 0
        for k in range(4):                  # the k-th allocation of the call fails
            g = np.full_like(x, SENTINEL)
            _core._fail_allocation_after(k)
            try:
                got = call(g)
            except MemoryError:
                failures += 1
                assert np.all(g == SENTINEL), f"{name}: output written before the MemoryError"
                continue
            finally:
                _core._fail_allocation_after(-1)
            assert_same_bits(got, expected, f"{name}, allocation {k} not reached")
        assert failures >= 1, name        # the call allocates: its failure was exercised
