"""fastxent.dask on a real multi-process cluster (distributed.LocalCluster with two worker
processes, started once for the module): every loss and option, both dtypes, irregular
and empty row and class chunks, against fastxent on the computed NumPy arrays."""
import numpy as np
import pytest

import fastxent as fx
from conftest import require_dask

require_dask()

import dask                      # noqa: E402
import dask.array as da          # noqa: E402
from distributed import Client, LocalCluster   # noqa: E402

import fastxent.dask as fxd      # noqa: E402

# float64: the merged partials and per-block sums only reorder float64 additions and
# move exp's shift: 1e-12 relative (the bar). float32: a few float32 ulps of the
# row's terms, as tests/test_partials.py.
RTOL = {np.dtype(np.float32): 2e-6, np.dtype(np.float64): 1e-12}

N, C = 41, 9000
ROW_CHUNKS = (7, 0, 30, 4)
CLASS_CHUNKS = (1, 4095, 0, 3000, 1904)      # straddles the kernels' 16 KiB chunks


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None, memory_limit="2GiB") as cluster, \
            Client(cluster) as c:
        yield c


def _data(dt, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((N, C)) * 4).astype(dt)
    x[3, 17] = -np.inf                                     # a masked class
    t = rng.integers(0, C, N)
    t[[0, 5, 40]] = -100                                   # ignored items
    t[6] = C - 1
    y = rng.random((N, C)).astype(dt)
    y /= y.sum(axis=1, keepdims=True)
    w = (rng.random(C) + 0.25).astype(dt)
    return x, t, y, w


def _chunked(a, chunks):
    return da.from_array(a, chunks=chunks)


def _check(actual, expected, dt, what):
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, what
    assert np.array_equal(np.isnan(actual), np.isnan(expected)), what
    rtol = RTOL[np.dtype(dt)]
    if what.startswith("grad") or what.startswith("out"):
        # relative to the largest entry: where a p_j and b_j cancel, no computation in a
        # different order keeps each entry's relative accuracy
        top = np.max(np.abs(expected), initial=0.0)
        err = np.max(np.abs(actual - expected), initial=0.0)
        assert err <= rtol * top, f"{what}: {err} > {rtol} * {top}"
    else:
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=1e-300, err_msg=what)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_softmax_family_every_option(client, dt):
    x, t, y, w = _data(dt)
    X = _chunked(x, (ROW_CHUNKS, CLASS_CHUNKS))
    T = _chunked(t, ((20, 21),))                 # chunked unlike X's rows: rechunked
    Y = _chunked(y, ((41,), (9000,)))            # likewise along both axes
    cases = []
    for target, tgt_np in ((T, t), (Y, y)):
        for weight in (None, w, _chunked(w, (4500,))):
            for eps in (0.0, 0.2):
                for red in ("mean", "sum", "none"):
                    kw = dict(label_smoothing=eps, reduction=red)
                    lazy = fxd.cross_entropy(X, target, weight, return_grad=True, split_every=2, **kw)
                    w_np = None if weight is None else w
                    ref = fx.cross_entropy(x, tgt_np, w_np, return_grad=True, **kw)
                    cases.append((f"ce {tgt_np.ndim} {weight is not None} {eps} {red}", lazy, ref))
    for weight in (None, w):
        for red in ("mean", "sum", "none"):
            lazy = fxd.nll_loss(X, T, weight, reduction=red, return_grad=True, split_every=3)
            ref = fx.nll_loss(x, t, weight, reduction=red, return_grad=True)
            cases.append((f"nll {weight is not None} {red}", lazy, ref))
    computed = dask.compute(*[c[1] for c in cases])
    for (name, lazy, ref), (loss, grad) in zip(cases, computed):
        assert lazy[0].ndim == (1 if name.endswith("none") else 0), name
        assert lazy[1].chunks == X.chunks, name
        assert np.asarray(loss).dtype == np.dtype(dt) and grad.dtype == np.dtype(dt), name
        _check(loss, ref[0], dt, "loss " + name)
        _check(grad, ref[1], dt, "grad " + name)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_building_blocks(client, dt):
    x, *_ = _data(dt, seed=1)
    x[3, 17] = -4.0            # logsumexp's refinement of a dominated row is not applied
    X = _chunked(x, (ROW_CHUNKS, CLASS_CHUNKS))
    lse, sm, lsm = dask.compute(fxd.logsumexp(X), fxd.softmax(X, split_every=2),
                                fxd.log_softmax(X, axis=1))
    _check(lse, fx.logsumexp(x), dt, "logsumexp")
    _check(sm, fx.softmax(x), dt, "out softmax")
    _check(lsm, fx.log_softmax(x), dt, "out log_softmax")


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_elementwise_losses(client, dt):
    rng = np.random.default_rng(2)
    shape, chunks = (30, 50), ((10, 0, 20), (7, 43))
    x = (rng.standard_normal(shape) * 3).astype(dt)
    p = (1 / (1 + np.exp(-x.astype(np.float64)))).astype(dt)
    tgt = rng.random(shape).astype(dt)
    w = (rng.random(shape[1]) + 0.5).astype(dt)
    wfull = (rng.random(shape) + 0.5).astype(dt)
    lq = np.log(p)
    X, Pr, LQ = (_chunked(a, chunks) for a in (x, p, lq))
    cases = []
    for red in ("mean", "sum", "none"):
        cases.append((f"bcel {red}",
                      fxd.binary_cross_entropy_with_logits(X, tgt, w, pos_weight=w[::-1].copy(),
                                                           reduction=red, return_grad=True),
                      fx.binary_cross_entropy_with_logits(x, tgt, w, pos_weight=w[::-1].copy(),
                                                          reduction=red, return_grad=True)))
        cases.append((f"bcel full weight {red}",
                      fxd.binary_cross_entropy_with_logits(X, tgt > 0.5, wfull, reduction=red,
                                                           return_grad=True),
                      fx.binary_cross_entropy_with_logits(x, tgt > 0.5, wfull, reduction=red,
                                                          return_grad=True)))
        cases.append((f"bce {red}", fxd.binary_cross_entropy(Pr, tgt, w, reduction=red,
                                                             return_grad=True),
                      fx.binary_cross_entropy(p, tgt, w, reduction=red, return_grad=True)))
    for red in ("mean", "sum", "none", "batchmean"):
        for log_target in (False, True):
            y = lq[::-1].copy() if log_target else p[::-1].copy()
            cases.append((f"kl {red} {log_target}",
                          fxd.kl_div(LQ, y, reduction=red, log_target=log_target, return_grad=True),
                          fx.kl_div(lq, y, reduction=red, log_target=log_target, return_grad=True)))
    computed = dask.compute(*[c[1] for c in cases])
    for (name, lazy, ref), (loss, grad) in zip(cases, computed):
        assert lazy[1].chunks == X.chunks, name
        _check(loss, ref[0], dt, "loss " + name)
        _check(grad, ref[1], dt, "grad " + name)


@pytest.mark.parametrize("dt", [np.float32, np.float64])
def test_any_class_axis_label_dtypes_and_ignore_index(client, dt):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((6, 700, 5)) * 3).astype(dt)          # (N, C, d) as PyTorch
    t = rng.integers(0, 700, (6, 5)).astype(np.int32)
    t[1, 2] = 7                                  # ignore_index=7 is a class: ignored anyway
    y = rng.random(x.shape).astype(dt)
    y /= y.sum(axis=1, keepdims=True)
    w = (rng.random(700) + 0.5).astype(dt)
    X = _chunked(x, ((2, 4), (300, 0, 400), (3, 2)))
    xl = np.ascontiguousarray(np.moveaxis(x, 1, -1))              # (N, d, C): axis=-1
    XL = _chunked(xl, ((4, 2), (5,), (1, 699)))
    x1 = x[0, :, 0].copy()                                          # one unbatched row
    X1 = _chunked(x1, ((350, 350),))
    cases = []
    for red in ("mean", "none"):
        kw = dict(reduction=red, return_grad=True)
        cases += [
            ("ce axis 1 " + red, fxd.cross_entropy(X, t, w, ignore_index=7, n_threads=1, **kw),
             fx.cross_entropy(x, t, w, ignore_index=7, **kw)),
            ("ce soft axis 1 " + red, fxd.cross_entropy(X, y, label_smoothing=0.3, **kw),
             fx.cross_entropy(x, y, label_smoothing=0.3, **kw)),
            ("ce axis -1 uint16 " + red,
             fxd.cross_entropy(XL, t.astype(np.uint16), axis=-1, label_smoothing=0.1, **kw),
             fx.cross_entropy(xl, t.astype(np.uint16), axis=-1, label_smoothing=0.1, **kw)),
            ("ce 1-D " + red, fxd.cross_entropy(X1, np.int64(5), **kw),
             fx.cross_entropy(x1, np.int64(5), **kw)),
            ("nll axis 1 " + red, fxd.nll_loss(X, t, w, ignore_index=7, **kw),
             fx.nll_loss(x, t, w, ignore_index=7, **kw)),
        ]
    cases += [("out softmax axis 1", (fxd.softmax(X, axis=1), fxd.log_softmax(X, axis=1)),
               (fx.softmax(x, axis=1), fx.log_softmax(x, axis=1))),
              ("out logsumexp", (fxd.logsumexp(XL), fxd.logsumexp(X1)),
               (fx.logsumexp(xl), fx.logsumexp(x1)))]
    computed = dask.compute(*[c[1] for c in cases])
    for (name, lazy, ref), (a, b) in zip(cases, computed):
        assert lazy[1].chunks == (X1 if "1-D" in name else XL if "-1" in name else X).chunks \
            or name.startswith("out"), name
        _check(a, ref[0], dt, ("out " if name.startswith("out") else "loss ") + name)
        _check(b, ref[1], dt, ("out " if name.startswith("out") else "grad ") + name)


def test_losses_without_grad_and_determinism(client):
    x, t, y, w = _data(np.float64, seed=3)
    X = _chunked(x, (ROW_CHUNKS, CLASS_CHUNKS))
    lazy = [fxd.cross_entropy(X, t, w, label_smoothing=0.1), fxd.cross_entropy(X, y),
            fxd.nll_loss(X, t, reduction="sum")]
    first = dask.compute(*lazy)
    again = dask.compute(*lazy)
    assert [np.asarray(a).tobytes() for a in first] == [np.asarray(b).tobytes() for b in again]
    _check(first[0], fx.cross_entropy(x, t, w, label_smoothing=0.1), np.float64, "ce")
    _check(first[1], fx.cross_entropy(x, y), np.float64, "ce soft")
    _check(first[2], fx.nll_loss(x, t, reduction="sum"), np.float64, "nll")
    # every target ignored: the mean over nothing is NaN, as in PyTorch
    assert np.isnan(fxd.cross_entropy(X, np.full(N, -100)).compute())


def _raises_like(exc, numpy_call, dask_call):
    with pytest.raises(exc):
        numpy_call()
    with pytest.raises(exc):
        r = dask_call()
        dask.compute(r)


def test_bad_input_raises_as_numpy(client):
    x, t, y, w = _data(np.float64, seed=4)
    x, t, y = x[:6, :50], t[:6] % 50, y[:6, :50]
    X = _chunked(x, ((3, 3), (20, 30)))
    _raises_like(ValueError, lambda: fx.cross_entropy(x, t[:5]),
                 lambda: fxd.cross_entropy(X, t[:5]))
    _raises_like(ValueError, lambda: fx.cross_entropy(x, y[:, :49]),
                 lambda: fxd.cross_entropy(X, y[:, :49]))
    _raises_like(ValueError, lambda: fx.cross_entropy(x, t, np.ones(49)),
                 lambda: fxd.cross_entropy(X, t, np.ones(49)))
    _raises_like(ValueError, lambda: fx.cross_entropy(x, t, reduction="avg"),
                 lambda: fxd.cross_entropy(X, t, reduction="avg"))
    _raises_like(ValueError, lambda: fx.cross_entropy(x, t, label_smoothing=1.5),
                 lambda: fxd.cross_entropy(X, t, label_smoothing=1.5))
    xi = np.zeros(x.shape, np.int64)
    _raises_like(TypeError, lambda: fx.cross_entropy(xi, t),
                 lambda: fxd.cross_entropy(_chunked(xi, X.chunks), t))
    _raises_like(TypeError, lambda: fx.nll_loss(x, y), lambda: fxd.nll_loss(X, y))
    bad = t.copy()
    bad[4] = 50                                  # out of range: raised by the block's task
    _raises_like(IndexError, lambda: fx.cross_entropy(x, bad), lambda: fxd.cross_entropy(X, bad))
    _raises_like(IndexError, lambda: fx.nll_loss(x, bad), lambda: fxd.nll_loss(X, bad))
    _raises_like(ValueError, lambda: fx.binary_cross_entropy_with_logits(x, y[:, :49]),
                 lambda: fxd.binary_cross_entropy_with_logits(X, y[:, :49]))
    _raises_like(ValueError, lambda: fx.binary_cross_entropy_with_logits(x, y, np.ones(7)),
                 lambda: fxd.binary_cross_entropy_with_logits(X, y, np.ones(7)))
    _raises_like(ValueError, lambda: fx.binary_cross_entropy(x, y),      # x outside [0, 1]
                 lambda: fxd.binary_cross_entropy(X, y))
    _raises_like(ValueError, lambda: fx.kl_div(x, y, reduction="batch"),
                 lambda: fxd.kl_div(X, y, reduction="batch"))
    # what only the Dask functions can meet
    with pytest.raises(ValueError):
        fxd.cross_entropy(X[X[:, 0] > 0], t[:3])              # unknown row chunk sizes
    _raises_like(ValueError, lambda: fx.cross_entropy(x, t, axis=2),
                 lambda: fxd.cross_entropy(X, t, axis=2))
    _raises_like(ValueError, lambda: fx.cross_entropy(x, t, axis=0),     # target shape
                 lambda: fxd.cross_entropy(X, t, axis=0))
    _raises_like(ValueError, lambda: fx.cross_entropy(x[0, 0], t),
                 lambda: fxd.cross_entropy(X[0, 0], t))
    with pytest.raises(ValueError):
        fxd.cross_entropy(X, t, split_every=1)
