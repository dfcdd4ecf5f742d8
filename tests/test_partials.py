"""fastxent.partials: rows split into class blocks give, once merged, the single-machine
losses, gradients and softmax outputs (fastxent on the whole rows is the reference: it is
itself checked against the float64 reference and PyTorch elsewhere)."""
import numpy as np
import pytest

import fastxent as fx
from fastxent import partials as P

# Merging blocks changes only the order of float64 sums and where exp is shifted:
# float64 results agree to ~1e-15 relative, float32 ones (exp and the gradient in float32)
# to a few float32 ulps.
RTOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-12}


def _cuts(rng, C, k):
    """k class blocks of random widths (empty ones included) covering [0, C)."""
    inner = np.sort(rng.integers(0, C + 1, k - 1))
    return [0, *inner.tolist(), C]


def _blocks(cuts):
    return list(zip(cuts[:-1], cuts[1:]))


def _case(rng, dt, N, C, kind):
    x = (rng.standard_normal((N, C)) * 4).astype(dt)
    x[1, 3] = -np.inf                      # a masked class
    if kind == "soft":
        y = rng.random((N, C)).astype(dt)
        y /= y.sum(axis=1, keepdims=True)
        return x, y
    t = rng.integers(0, C, N)
    t[2] = -100                            # an ignored item
    t[4] = C - 1
    return x, t


def _slice(target, a, b):
    return target if target.ndim == 1 else target[:, a:b]


def _split_loss_and_grad(x, target, weight, eps, cuts, reduction, order=None):
    C = x.shape[1]
    blocks = _blocks(cuts)
    parts = [P.softmax_partials(x[:, a:b], _slice(target, a, b),
                                None if weight is None else weight[a:b],
                                offset=a, classes=C, label_smoothing=eps) for a, b in blocks]
    if order is not None:
        parts = [parts[i] for i in order]
    merged = P.merge_all(parts)
    loss = P.finish(merged, reduction, x.dtype)
    scale = P.grad_scale(merged, reduction)
    grad = np.concatenate(
        [P.block_grad(x[:, a:b], merged, _slice(target, a, b),
                      None if weight is None else weight[a:b], offset=a, classes=C,
                      label_smoothing=eps, scale=scale) for a, b in blocks], axis=1)
    return loss, grad


def assert_close_to(actual, expected, dtype, what):
    """Loss: relative per value; gradient: relative to its largest entry (where a p_j and
    b_j cancel, no split can keep relative accuracy per entry)."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, what
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), what
    fin = np.isfinite(expected)
    assert np.array_equal(actual[~fin], expected[~fin]), what
    rtol = RTOL[np.dtype(dtype)]
    if what.startswith("grad"):
        top = np.max(np.abs(expected[fin]), initial=0.0)
        err = np.max(np.abs(actual[fin] - expected[fin]), initial=0.0)
        assert err <= rtol * top, f"{what}: {err} > {rtol} * {top}"
    else:
        np.testing.assert_allclose(actual[fin], expected[fin], rtol=rtol,
                                   atol=rtol * np.finfo(np.float64).tiny, err_msg=what)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["hard", "soft"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("eps", [0.0, 0.15])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_split_rows_equal_whole_rows(dt, kind, weighted, eps, reduction):
    rng = np.random.default_rng(abs(hash((kind, weighted, eps, reduction))) % 2**32)
    N, C = 11, 9000                        # rows of several 16 KiB chunks in float32
    x, target = _case(rng, dt, N, C, kind)
    weight = (rng.random(C) + 0.25).astype(dt) if weighted else None
    ref_loss, ref_grad = fx.cross_entropy(x, target, weight, label_smoothing=eps,
                                          reduction=reduction, return_grad=True)
    for cuts in ([0, C], [0, 1, 4096, 4096, 8000, C], _cuts(rng, C, 5)):
        loss, grad = _split_loss_and_grad(x, target, weight, eps, cuts, reduction)
        assert np.asarray(loss).dtype == np.dtype(dt)
        assert grad.dtype == np.dtype(dt)
        assert_close_to(loss, ref_loss, dt, f"loss {cuts}")
        assert_close_to(grad, ref_grad, dt, f"grad {cuts}")


def test_merge_is_deterministic_and_order_only_rounds():
    rng = np.random.default_rng(5)
    x, t = _case(rng, np.float64, 20, 700, "hard")
    cuts = [0, 100, 350, 351, 700]
    a = _split_loss_and_grad(x, t, None, 0.1, cuts, "none")
    b = _split_loss_and_grad(x, t, None, 0.1, cuts, "none")
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes()
    c = _split_loss_and_grad(x, t, None, 0.1, cuts, "none", order=[3, 1, 0, 2])
    np.testing.assert_allclose(c[0], a[0], rtol=1e-14)


def test_ignored_items_and_all_ignored_mean_is_nan():
    x = np.arange(12, dtype=np.float64).reshape(3, 4)
    t = np.array([-100, 1, -100])
    m = P.merge(P.softmax_partials(x[:, :2], t, offset=0, classes=4),
                P.softmax_partials(x[:, 2:], t, offset=2, classes=4))
    assert list(m["kept"]) == [0.0, 1.0, 0.0]
    assert list(m["weight"]) == [0.0, 1.0, 0.0]
    np.testing.assert_allclose(P.row_losses(m), fx.cross_entropy(x, t, reduction="none"),
                               rtol=1e-15)
    none = np.full(3, -100)
    m0 = P.softmax_partials(x, none, classes=4)
    assert np.isnan(P.finish(m0, "mean")) and np.isnan(fx.cross_entropy(x, none))
    assert P.finish(m0, "sum") == 0.0


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_softmax_log_softmax_logsumexp(dt):
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((6, 5000)) * 5).astype(dt)
    cuts = [0, 2500, 2500, 4999, 5000]
    merged = P.merge_all([P.softmax_partials(x[:, a:b], offset=a, classes=5000)
                          for a, b in _blocks(cuts)])
    sm = np.concatenate([P.block_softmax(x[:, a:b], merged) for a, b in _blocks(cuts)], 1)
    lsm = np.concatenate([P.block_softmax(x[:, a:b], merged, log=True)
                          for a, b in _blocks(cuts)], 1)
    assert_close_to(sm, fx.softmax(x), dt, "grad-like softmax")
    assert_close_to(lsm, fx.log_softmax(x), dt, "log_softmax")
    assert_close_to(P.logsumexp(merged), fx.logsumexp(x), dt, "logsumexp")


def test_bad_arguments():
    x = np.zeros((3, 4))
    t = np.array([0, 1, 2])
    with pytest.raises(IndexError):
        P.softmax_partials(x, np.array([0, 9, 1]), offset=0, classes=8)
    with pytest.raises(ValueError):
        P.softmax_partials(x, t, offset=6, classes=8)          # [6, 10) outside [0, 8)
    with pytest.raises(ValueError):
        P.softmax_partials(x, t, np.ones(8), offset=0, classes=8)   # weight: the block's 4
    with pytest.raises(ValueError):
        P.softmax_partials(x, np.ones((3, 5)), offset=0, classes=8)
    with pytest.raises(ValueError):
        P.softmax_partials(x[0], t[:1], classes=8)
    with pytest.raises(TypeError):
        P.softmax_partials(x.astype(np.int32), t, classes=8)
    with pytest.raises(TypeError):
        P.softmax_partials(x, t, offset=1.0, classes=8)
    with pytest.raises(ValueError):
        P.softmax_partials(x, t, classes=8, label_smoothing=2.0)
    p = P.softmax_partials(x, t, classes=8)
    with pytest.raises(ValueError):
        P.merge(p, p[:2])
    with pytest.raises(TypeError):
        P.merge(p, np.zeros(3))
    with pytest.raises(ValueError):
        P.block_grad(x, p[:2], t, classes=8)
    with pytest.raises(ValueError):
        P.merge_all([])


def test_same_bits_for_any_thread_count():
    rng = np.random.default_rng(11)
    x, t = _case(rng, np.float32, 300, 3000, "hard")       # 900K elements: parallel
    w = (rng.random(1000) + 0.5).astype(np.float32)
    blk = np.ascontiguousarray(x[:, 1000:2000])
    one = P.softmax_partials(blk, t, w, offset=1000, classes=3000, label_smoothing=0.1,
                             n_threads=1)
    two = P.softmax_partials(blk, t, w, offset=1000, classes=3000, label_smoothing=0.1,
                             n_threads=2)
    assert one.tobytes() == two.tobytes()
    g1 = P.block_grad(blk, one, t, w, offset=1000, classes=3000, label_smoothing=0.1,
                      n_threads=1)
    g2 = P.block_grad(blk, one, t, w, offset=1000, classes=3000, label_smoothing=0.1,
                      n_threads=2)
    assert g1.tobytes() == g2.tobytes()


def test_half_precision_blocks_are_refused_not_misread():
    """The partials kernels read float32/float64; the losses take float16 (issue 14), and a
    float16 block once came back as garbage partials."""
    x = np.zeros((3, 4), dtype=np.float16)
    with pytest.raises(TypeError, match="float32 or float64"):
        fx.partials.softmax_partials(x, np.array([0, 1, 2]), offset=0, classes=4)
