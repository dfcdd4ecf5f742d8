"""pytest-benchmark suite: fastxent against NumPy (and PyTorch when installed).

Not part of the test suite (``pytest tests`` does not collect bench/). Run it with

    pytest bench --benchmark-only
    pytest bench --benchmark-only --benchmark-group-by=group --benchmark-columns=min,median,rounds

Each benchmark group is one (loss, shape, pass); compare the rows of a group. For the full
side-by-side comparison with JAX, scikit-learn and the memory floors, run ``fastxent bench``
(bench/compare.py).
"""

import os

import numpy as np
import pytest

pytest.importorskip("pytest_benchmark")
fx = pytest.importorskip("fastxent")

# the NumPy reference implementations of the comparison (fastxent._bench, which
# bench/compare.py runs; no heavy imports at module level)
from fastxent._bench import numpy_bce_with_logits, numpy_cross_entropy  # noqa: E402

THREADS = int(os.environ.get("FASTXENT_BENCH_THREADS", "2"))

CE_SHAPES = [(64, 10), (4096, 1000), (1024, 32768)]
BCE_SHAPES = [(4096, 1000)]


def _ce_data(shape, dtype=np.float32):
    rng = np.random.default_rng(0)
    x = (2 * rng.standard_normal(shape)).astype(dtype)
    y = rng.integers(0, shape[1], size=shape[0], dtype=np.int64)
    return x, y


def _bce_data(shape, target):
    rng = np.random.default_rng(0)
    x = (2 * rng.standard_normal(shape)).astype(np.float32)
    t = rng.random(shape) < 0.5
    return x, (t if target == "bool" else t.astype(np.float32))


def _sid(shape):
    return "x".join(map(str, shape))


def _torch():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    return torch


# ---------------------------------------------------------------- softmax cross-entropy


@pytest.mark.parametrize("shape", CE_SHAPES, ids=_sid)
@pytest.mark.parametrize("lib", ["fastxent", "numpy", "torch"])
def test_ce_forward(benchmark, lib, shape):
    benchmark.group = f"CE {_sid(shape)} forward"
    x, y = _ce_data(shape)
    if lib == "fastxent":
        res = benchmark(fx.cross_entropy, x, y, n_threads=THREADS)
    elif lib == "numpy":
        res = benchmark(numpy_cross_entropy, x, y)
    else:
        torch = _torch()
        import torch.nn.functional as F

        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def run():
            with torch.no_grad():
                return F.cross_entropy(xt, yt)

        res = float(benchmark(run))
    assert np.isfinite(float(res))


@pytest.mark.parametrize("shape", CE_SHAPES, ids=_sid)
@pytest.mark.parametrize("lib", ["fastxent", "fastxent/out", "numpy", "torch"])
def test_ce_forward_backward(benchmark, lib, shape):
    benchmark.group = f"CE {_sid(shape)} forward+backward"
    x, y = _ce_data(shape)
    if lib == "fastxent":
        loss, grad = benchmark(fx.cross_entropy, x, y, return_grad=True, n_threads=THREADS)
    elif lib == "fastxent/out":
        out = np.zeros_like(x)
        loss, grad = benchmark(
            fx.cross_entropy, x, y, return_grad=True, grad_out=out, n_threads=THREADS
        )
    elif lib == "numpy":
        loss, grad = benchmark(numpy_cross_entropy, x, y, return_grad=True)
    else:
        torch = _torch()
        import torch.nn.functional as F

        xt = torch.from_numpy(x).requires_grad_()
        yt = torch.from_numpy(y)

        def run():
            xt.grad = None
            loss = F.cross_entropy(xt, yt)
            loss.backward()
            return loss.detach(), xt.grad

        loss, grad = benchmark(run)
        grad = grad.numpy()
    assert grad.shape == x.shape and np.isfinite(float(loss))


# ---------------------------------------------------------------- BCE with logits


@pytest.mark.parametrize("target", ["float", "bool"])
@pytest.mark.parametrize("shape", BCE_SHAPES, ids=_sid)
@pytest.mark.parametrize("lib", ["fastxent", "numpy", "torch"])
def test_bce_forward_backward(benchmark, lib, shape, target):
    benchmark.group = f"BCE-with-logits {_sid(shape)} {target} target forward+backward"
    x, t = _bce_data(shape, target)
    if lib == "fastxent":
        loss, grad = benchmark(
            fx.binary_cross_entropy_with_logits, x, t, return_grad=True, n_threads=THREADS
        )
    elif lib == "numpy":
        loss, grad = benchmark(numpy_bce_with_logits, x, t, True)
    else:
        torch = _torch()
        import torch.nn.functional as F

        xt = torch.from_numpy(x).requires_grad_()
        tt = torch.from_numpy(t.astype(np.float32))  # torch needs a float target

        def run():
            xt.grad = None
            loss = F.binary_cross_entropy_with_logits(xt, tt)
            loss.backward()
            return loss.detach(), xt.grad

        loss, grad = benchmark(run)
        grad = grad.numpy()
    assert grad.shape == x.shape and np.isfinite(float(loss))
