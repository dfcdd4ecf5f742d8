"""Buffers: every memory layout a caller can hand over gives the same result as a
C-contiguous copy of the same values (bit for bit: the package computes on a contiguous
copy, and the kernels are deterministic), or a clear error.

Layouts: read-only, np.memmap (read-only file mapping), non-contiguous slices, negative
strides, Fortran order, unaligned (a view into a uint8 buffer at offset 1), non-native
byte order. They are applied to every array argument (input, labels, probability
targets, weights) of every loss, and to the building blocks; then to ``grad_out`` /
``out=`` (which must receive the result, be the returned object, and leave the memory
between its strided elements alone); then ``grad_out=input`` in place, and ``grad_out``
aliasing another argument.
"""

import itertools

import numpy as np
import pytest

import fastxent as fx
import reference as ref
from conftest import assert_same_bits as same
from registry import BLOCKS, CASES

SENTINEL = 1234.5
LAYOUTS = ["readonly", "memmap", "noncontig", "negstride", "fortran", "unaligned", "byteswap"]
OUT_LAYOUTS = ["noncontig", "negstride", "fortran", "unaligned", "memmap_rw", "byteswap"]
_counter = itertools.count()


def layout(a, how, tmp_path):
    """A view or copy of `a` with the same values (and dtype up to byte order) in the
    layout `how`."""
    a = np.ascontiguousarray(a)
    if how == "contig":
        return a.copy()
    if how == "readonly":
        b = a.copy()
        b.flags.writeable = False
        return b
    if how in ("memmap", "memmap_rw"):
        path = tmp_path / f"buf{next(_counter)}.bin"
        m = np.memmap(path, dtype=a.dtype, mode="w+", shape=a.shape if a.ndim else (1,))
        m[...] = a.reshape(m.shape)
        m.flush()
        del m
        m = np.memmap(path, dtype=a.dtype, mode="r" if how == "memmap" else "r+",
                      shape=a.shape if a.ndim else (1,))
        return m.reshape(a.shape) if a.ndim == 0 else m
    if how == "noncontig":
        if a.ndim == 0:
            return a.copy()
        big = np.zeros(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if how == "negstride":
        b = np.flip(a).copy()
        return np.flip(b)
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "unaligned":
        raw = np.zeros(a.nbytes + 1, np.uint8)
        b = raw[1:].view(a.dtype).reshape(a.shape)
        b[...] = a
        if a.dtype.itemsize > 1 and a.size:
            assert not b.flags.aligned
        return b
    if how == "byteswap":
        return a.astype(a.dtype.newbyteorder())
    raise KeyError(how)


def _freeze(*arrays):
    return [None if a is None else np.array(a, copy=True) for a in arrays]


def _unchanged(arrays, frozen, what):
    for a, f in zip(arrays, frozen):
        if a is not None:
            same(a, f, f"{what}: an input was modified")


# ------------------------------------------------------------------- the loss calls
# every call of registry.CASES: each loss with its options (weights, pos_weight, ignored
# labels, smoothing, probability and bool targets, axis=-1, log_target)
def _array_args(x, t, kw):
    """The array arguments by name: input, target, and the array options (weights)."""
    args = {"input": x, "target": t}
    args.update({k: v for k, v in kw.items() if isinstance(v, np.ndarray)})
    return args


def _with(x, t, kw, **replace):
    """(x, t, kw) with some array arguments replaced (by the names of _array_args)."""
    x = replace.pop("input", x)
    t = replace.pop("target", t)
    return x, t, {**kw, **replace}


@pytest.mark.parametrize("how", LAYOUTS)
@pytest.mark.parametrize("case", list(CASES))
def test_loss_inputs_in_any_layout(rng, tmp_path, dtype, case, how):
    case = CASES[case]
    x, t, kw = case.make(rng, dtype)
    expected = {r: case.fx(x, t, kw, reduction=r, return_grad=True) for r in case.reductions}
    # one array argument at a time in the layout, then all of them
    arrays = _array_args(x, t, kw)
    arg_sets = {name: _with(x, t, kw, **{name: layout(a, how, tmp_path)}) for name, a in arrays.items()}
    arg_sets["all"] = _with(x, t, kw, **{name: layout(a, how, tmp_path) for name, a in arrays.items()})
    for which, (xv, tv, kwv) in arg_sets.items():
        views = list(_array_args(xv, tv, kwv).values())
        frozen = _freeze(*views)
        for r in case.reductions:
            got = case.fx(xv, tv, kwv, reduction=r, return_grad=True)
            same(got, expected[r], f"{case.id} {how} {which} reduction={r}")
            same(case.fx(xv, tv, kwv, reduction=r), expected[r][0],
                 f"{case.id} {how} {which} loss only")
        _unchanged(views, frozen, f"{case.id} {how} {which}")


# ---------------------------------------------------------------- building blocks
@pytest.mark.parametrize("how", LAYOUTS)
@pytest.mark.parametrize("name", list(BLOCKS))
def test_building_block_inputs_in_any_layout(rng, tmp_path, dtype, name, how):
    fn = BLOCKS[name].fx
    x = (rng.standard_normal((7, 4, 9)) * 3).astype(dtype)
    x[1, 2, 3] = -np.inf
    for ax in [-1, 0, 1] if BLOCKS[name].has_axis else [None]:
        kw = BLOCKS[name].call_kw(ax)
        expected = fn(x, **kw)
        xv = layout(x, how, tmp_path)
        frozen = _freeze(xv)
        same(fn(xv, **kw), expected, f"{name} {how} axis={ax}")
        _unchanged([xv], frozen, f"{name} {how}")


# ------------------------------------------------------------ grad_out / out layouts
def _out_buffer(shape, dtype, how, tmp_path):
    """(the buffer to pass, the parent memory that must stay as it was outside it)."""
    if how == "noncontig":
        parent = np.full(shape[:-1] + (3 * shape[-1],), SENTINEL, dtype)
        return parent[..., 1::3], parent
    if how == "negstride":
        parent = np.full(shape, SENTINEL, dtype)
        return np.flip(parent), parent
    if how == "fortran":
        b = np.asfortranarray(np.full(shape, SENTINEL, dtype))
        return b, b
    if how == "unaligned":
        raw = np.zeros(int(np.prod(shape)) * np.dtype(dtype).itemsize + 2, np.uint8)
        b = raw[1:-1].view(dtype).reshape(shape)
        b[...] = SENTINEL
        assert not b.flags.aligned
        return b, raw
    if how == "memmap_rw":
        b = layout(np.full(shape, SENTINEL, dtype), "memmap_rw", tmp_path)
        return b, b
    if how == "byteswap":
        b = np.full(shape, SENTINEL, np.dtype(dtype).newbyteorder())
        return b, b
    raise KeyError(how)


def _check_written(buf, parent, result, expected, what):
    same(buf, expected, f"{what}: buffer does not hold the result")
    assert result is buf, f"{what}: the returned array is not the buffer passed in"
    if parent is not buf and parent.dtype != np.uint8:
        # every parent element outside the view still holds the sentinel
        inside = np.zeros(parent.shape, bool)
        if parent.shape == buf.shape:     # negstride: the view covers the parent
            inside[...] = True
        else:
            inside[..., 1::3] = True
        assert (parent[~inside] == SENTINEL).all(), f"{what}: wrote outside the view"
    elif parent.dtype == np.uint8:
        assert parent[0] == 0 and parent[-1] == 0, f"{what}: wrote outside the unaligned view"


@pytest.mark.parametrize("how", OUT_LAYOUTS)
@pytest.mark.parametrize("case", list(CASES))
def test_grad_out_in_any_layout(rng, tmp_path, dtype, case, how):
    case = CASES[case]
    x, t, kw = case.make(rng, dtype)
    for r in case.reductions:
        loss, grad = case.fx(x, t, kw, reduction=r, return_grad=True)
        buf, parent = _out_buffer(x.shape, dtype, how, tmp_path)
        if how == "byteswap":
            # a non-native buffer: either written correctly or refused before any write
            try:
                got = case.fx(x, t, kw, reduction=r, return_grad=True, grad_out=buf)
            except ValueError:
                assert (buf == SENTINEL).all()
                continue
        else:
            got = case.fx(x, t, kw, reduction=r, return_grad=True, grad_out=buf)
        same(got[0], loss, f"{case.id} {how} loss")
        _check_written(buf, parent, got[1], grad, f"{case.id} grad_out {how} reduction={r}")


@pytest.mark.parametrize("how", OUT_LAYOUTS)
@pytest.mark.parametrize("name", list(BLOCKS))
def test_out_of_building_blocks_in_any_layout(rng, tmp_path, dtype, name, how):
    fn = BLOCKS[name].fx
    x = (rng.standard_normal((6, 8)) * 3).astype(dtype)
    for ax in [-1, 0] if BLOCKS[name].has_axis else [None]:
        kw = BLOCKS[name].call_kw(ax)
        expected = fn(x, **kw)
        buf, parent = _out_buffer(expected.shape, dtype, how, tmp_path)
        if how == "byteswap":
            try:
                got = fn(x, out=buf, **kw)
            except ValueError:
                assert (buf == SENTINEL).all()
                continue
        else:
            got = fn(x, out=buf, **kw)
        _check_written(buf, parent, got, expected, f"{name} out {how} axis={ax}")


# ----------------------------------------------------------------- grad_out = input
@pytest.mark.parametrize("how", ["contig", "noncontig", "negstride", "fortran", "unaligned", "memmap_rw"])
@pytest.mark.parametrize("case", list(CASES))
def test_grad_out_is_input_in_place(rng, tmp_path, dtype, case, how):
    case = CASES[case]
    x, t, kw = case.make(rng, dtype)
    for r in case.reductions:
        loss, grad = case.fx(x, t, kw, reduction=r, return_grad=True)
        xv = layout(x, how, tmp_path)
        got_loss, got_grad = case.fx(xv, t, kw, reduction=r, return_grad=True, grad_out=xv)
        same(got_loss, loss, f"{case.id} in place {how} loss")
        same(xv, grad, f"{case.id} in place {how} grad")
        assert got_grad is xv, f"{case.id} {how}: in place must return the input array"


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_cross_entropy_in_place_any_class_axis(rng, dtype, axis):
    x = (rng.standard_normal((4, 6, 5)) * 3).astype(dtype)
    ax = axis % 3
    t = rng.integers(0, x.shape[ax], tuple(s for i, s in enumerate(x.shape) if i != ax))
    loss, grad = fx.cross_entropy(x, t, axis=axis, return_grad=True)
    xi = x.copy()
    l2, g2 = fx.cross_entropy(xi, t, axis=axis, return_grad=True, grad_out=xi)
    assert g2 is xi
    same(l2, loss)
    same(xi, grad)


@pytest.mark.parametrize("name", [name for name, block in BLOCKS.items() if not block.reduces])
@pytest.mark.parametrize("how", ["contig", "noncontig", "negstride", "fortran", "unaligned"])
def test_building_block_out_is_input_in_place(rng, tmp_path, name, how):
    fn = BLOCKS[name].fx
    x = (rng.standard_normal((5, 7)) * 3).astype(np.float32)
    for ax in [-1, 0] if BLOCKS[name].has_axis else [None]:
        kw = BLOCKS[name].call_kw(ax)
        expected = fn(x, **kw)
        xv = layout(x, how, tmp_path)
        got = fn(xv, out=xv, **kw)
        assert got is xv
        same(xv, expected, f"{name} in place {how} axis={ax}")


# ------------------------------------------------------ grad_out aliasing another input
def test_grad_out_aliasing_probability_target(rng, dtype):
    """grad_out is the probability target's buffer: the result must be the one computed
    from the target's values (the target is read while the gradient is written), or a
    clear ValueError before anything is written."""
    x = (rng.standard_normal((8, 6)) * 3).astype(dtype)
    y = ref.softmax(rng.standard_normal((8, 6))).astype(dtype)
    loss, grad = fx.cross_entropy(x, y, return_grad=True)
    y0 = y.copy()
    try:
        l2, g2 = fx.cross_entropy(x, y, return_grad=True, grad_out=y)
    except ValueError:
        same(y, y0)
        return
    same(l2, loss, "loss")
    same(g2, grad, "grad over the target's buffer")


@pytest.mark.parametrize("param", ["target", "weight", "pos_weight"])
def test_bce_grad_out_aliasing_another_argument(rng, param):
    x = (rng.standard_normal((6, 4)) * 3).astype(np.float32)
    args = {"target": rng.random((6, 4)).astype(np.float32),
            "weight": rng.uniform(0.5, 2, (6, 4)).astype(np.float32),
            "pos_weight": rng.uniform(0.5, 3, (6, 4)).astype(np.float32)}
    loss, grad = fx.binary_cross_entropy_with_logits(x, args["target"], args["weight"],
                                                     pos_weight=args["pos_weight"], return_grad=True)
    alias = args[param]
    a0 = alias.copy()
    try:
        l2, g2 = fx.binary_cross_entropy_with_logits(x, args["target"], args["weight"],
                                                     pos_weight=args["pos_weight"],
                                                     return_grad=True, grad_out=alias)
    except ValueError:
        same(alias, a0)
        return
    same(l2, loss, f"loss with grad_out={param}")
    same(g2, grad, f"grad over {param}")


def test_cross_entropy_grad_out_aliasing_weight_unbatched(rng):
    # unbatched input (C,) and weight (C,) have the same shape and dtype
    x = (rng.standard_normal(6) * 3).astype(np.float64)
    w = rng.uniform(0.5, 2, 6)
    t = np.int64(2)
    loss, grad = fx.cross_entropy(x, t, w, label_smoothing=0.2, return_grad=True)
    try:
        l2, g2 = fx.cross_entropy(x, t, w, label_smoothing=0.2, return_grad=True, grad_out=w)
    except ValueError:
        return
    same(l2, loss)
    same(g2, grad)


def test_grad_out_partly_overlapping_input(rng):
    """grad_out overlaps the input shifted by one row: must equal the out-of-place
    result (computed from the input as it was before the call)."""
    buf = (rng.standard_normal((9, 5)) * 3).astype(np.float32)
    x = buf[:8]
    g = buf[1:]
    t = rng.integers(0, 5, 8)
    loss, grad = fx.cross_entropy(x.copy(), t, return_grad=True)
    l2, g2 = fx.cross_entropy(x, t, return_grad=True, grad_out=g)
    same(l2, loss)
    same(g, grad, "grad_out overlapping the input")
    assert g2 is g


def test_elementwise_in_place_same_bits(rng, dtype):
    """The elementwise kernels sum losses in lane partials; out of place a segment whose
    sum is not finite is summed again, wide, and in place (nothing left to redo from) a
    vector whose loss is inf, NaN or too big for a lane sum goes wide before its gradient
    is stored. Over many folds and both blocks, and with an infinite loss, both give the
    same bits; with losses beyond max/16 the sums may differ in the last bits, both close
    to the float64 reference."""
    x = (rng.standard_normal((37, 1000)) * 4).astype(dtype)     # 37000 elements: 2 blocks
    t = rng.random(x.shape).astype(dtype)
    x_inf = x.copy()
    x_inf[20, 7] = np.inf                                       # (1 - t) * inf: loss inf
    x_big, t_big = x.copy(), t.copy()
    big = np.finfo(dtype).max / 8                               # above max / (lanes per fold)
    x_big[5, 3:6], t_big[5, 3:6] = -big, 1.0                    # loss = -x = big, 3 of them
    for xs, ts in ((x, t), (x_inf, t), (x_big, t_big)):
        for fn, extra in ((fx.binary_cross_entropy_with_logits, {}),
                          (fx.binary_cross_entropy_with_logits, {"pos_weight": 2.5}),
                          (fx.kl_div, {})):
            args = (xs / 10, ts) if fn is fx.kl_div else (xs, ts)
            loss, grad = fn(*args, return_grad=True, reduction="sum", **extra)
            xi = args[0].copy()
            l2, g2 = fn(xi, ts, return_grad=True, grad_out=xi, reduction="sum", **extra)
            same(g2, grad)
            if xs is not x_big:
                same(l2, loss, f"{fn.__name__} {extra} in place")
            elif fn is not fx.kl_div:
                expected = ref.binary_cross_entropy_with_logits(
                    xs, ts, pos_weight=extra.get("pos_weight"), reduction="sum")[0]
                for got in (loss, l2):
                    assert abs(float(got) - expected) <= 1e-6 * abs(expected), (got, expected)
    assert np.isinf(fx.binary_cross_entropy_with_logits(x_inf, t, reduction="sum"))


@pytest.mark.parametrize("offset", [0, 3], ids=["aligned", "offset3"])
def test_streamed_gradient_same_bits_as_small_calls(rng, isa, dtype, offset):
    """A gradient of at least _core.stream_grad_bytes is written with non-temporal
    stores, row by row from a buffer; rows computed by smaller (cached) calls give the
    same bits, for every ISA variant. grad_out starts `offset` elements into a buffer,
    so the vector-aligned part of each row starts anywhere; smoothing, weights and
    ignored rows go through the buffer too."""
    from fastxent import _core
    C = 1000
    N = _core.stream_grad_bytes // (C * np.dtype(dtype).itemsize) + 7
    x = rng.standard_normal((N, C)).astype(dtype) * 3
    y = rng.integers(0, C, N)
    y[::97] = -100
    w = rng.random(C).astype(dtype) + 0.5
    kw = dict(weight=w, label_smoothing=0.05, reduction="none", return_grad=True)
    store = np.full(N * C + offset, SENTINEL, dtype)
    g = store[offset:].reshape(N, C)
    loss, grad = fx.cross_entropy(x, y, grad_out=g, **kw)
    assert grad is g and g.nbytes >= _core.stream_grad_bytes
    assert np.all(store[:offset] == SENTINEL)
    for r0 in range(0, N, 1000):
        l_small, g_small = fx.cross_entropy(x[r0:r0 + 1000], y[r0:r0 + 1000], **kw)
        same(loss[r0:r0 + 1000], l_small, f"rows {r0}+ loss")
        same(g[r0:r0 + 1000], g_small, f"rows {r0}+ grad")
    # and a returned (new) gradient
    same(fx.cross_entropy(x, y, **kw), (loss, g), "returned gradient")


@pytest.mark.parametrize("C", [2, 3, 21])
@pytest.mark.parametrize("offset", [0, 3], ids=["aligned", "offset3"])
def test_streamed_gradient_class_axis_1_same_bits(rng, isa, dtype, offset, C):
    """The column kernel ((N, C, H, W), class axis 1) streams a gradient of at least
    _core.stream_grad_bytes out of its panel buffer (two classes: from its vectors,
    two_class_panel): the same bits as one image at a time (a gradient too small to
    stream), for every ISA, aligned to a vector or not."""
    from fastxent import _core
    W = 256
    H = _core.stream_grad_bytes // (2 * C * W * np.dtype(dtype).itemsize) + 1
    x = rng.standard_normal((3, C, H, W)).astype(dtype) * 3
    y = rng.integers(0, C, (3, H, W))
    y[:, ::7, ::5] = -100
    kw = dict(reduction="none", return_grad=True, axis=1)
    store = np.full(x.size + offset, SENTINEL, dtype)
    g = store[offset:].reshape(x.shape)
    loss, grad = fx.cross_entropy(x, y, grad_out=g, **kw)
    assert grad is g and g.nbytes >= _core.stream_grad_bytes
    assert np.all(store[:offset] == SENTINEL)
    for i in range(3):
        l_one, g_one = fx.cross_entropy(x[i:i + 1], y[i:i + 1], **kw)
        assert g_one.nbytes < _core.stream_grad_bytes
        same(loss[i:i + 1], l_one, f"image {i} loss")
        same(g[i:i + 1], g_one, f"image {i} grad")
