"""Regressions for what a review of the kernels found (each failed before its fix)."""
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastxent as fx
from fastxent import _core

RACE = textwrap.dedent("""
    import threading, numpy as np, fastxent as fx
    N, C = 4000, 1000
    x = np.zeros((N, C), np.float32); t = np.zeros(N, np.int64); stop = False
    def mutate():
        while not stop:
            t[N - 1] = 10**12; t[N - 1] = 0
    th = threading.Thread(target=mutate); th.start()
    nan = 0
    x3 = np.zeros((1, C, N), np.float32)           # class axis 1: the column kernel
    t3 = t.reshape(1, N)
    for _ in range(300):
        for call in (lambda: fx.cross_entropy(x, t, return_grad=True, n_threads=1),
                     lambda: fx.nll_loss(x, t, return_grad=True, n_threads=1),
                     lambda: fx.cross_entropy(x3, t3, return_grad=True, n_threads=1)):
            try:
                loss, grad = call()
                nan += bool(np.isnan(loss))
            except IndexError:
                pass
    stop = True; th.join()
    print("ok", nan)
""")


def test_label_changed_by_another_thread_mid_call_never_crashes():
    """Labels are validated, then read again by the kernels with the GIL released; a
    label another thread sets out of range in between used to index outside the row
    (segfault). Now the kernels classify every label they read: such an item's loss is
    NaN, never an out-of-bounds access. Run in a subprocess so a crash fails the test."""
    out = subprocess.run([sys.executable, "-c", RACE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, (out.returncode, out.stderr[-2000:])
    assert out.stdout.startswith("ok")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logsumexp_nan_wins_over_infinite_max(isa, dtype):
    x = np.zeros(64, dtype); x[0] = np.nan; x[40] = np.inf
    y = np.full(64, -np.inf, dtype); y[0] = np.nan
    z = np.zeros(8192, dtype); z[5] = np.nan; z[5000] = np.inf      # two chunks
    for a in (x, y, z):
        assert np.isnan(fx.logsumexp(a)), a.size
    w = np.zeros(8192, dtype); w[5000] = np.inf
    assert fx.logsumexp(w) == np.inf
    assert fx.logsumexp(np.array([np.inf, 1.0], dtype)) == np.inf
    assert fx.logsumexp(np.array([-np.inf, -np.inf], dtype)) == -np.inf


def test_uint64_label_beyond_int64_is_out_of_range_even_with_ignore_index_int64_min():
    x = np.zeros((2, 3), np.float32)
    t = np.array([0, 2**64 - 1], np.uint64)
    with pytest.raises(IndexError, match="18446744073709551615"):
        fx.cross_entropy(x, t, ignore_index=-2**63)


def test_absurd_n_threads_is_capped_not_fatal():
    """libgomp exits the process when it cannot create the threads asked for; a request
    beyond max(OpenMP default, processors) is reduced to that."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((512, 1000)).astype(np.float32)
    y = rng.integers(0, 1000, 512)
    a = fx.cross_entropy(x, y, return_grad=True, n_threads=1)
    b = fx.cross_entropy(x, y, return_grad=True, n_threads=100_000)
    assert a[0] == b[0] and np.array_equal(a[1], b[1])


def test_weights_from_any_real_sequence_and_axis_checked_for_1d():
    x = np.zeros((2, 3), np.float32)
    y = np.array([0, 2])
    assert fx.cross_entropy(x, y, weight=[1, 2, 3]) == fx.cross_entropy(x, y, weight=np.array([1.0, 2.0, 3.0], np.float32))
    assert fx.binary_cross_entropy_with_logits(x, x, pos_weight=3) == fx.binary_cross_entropy_with_logits(x, x)
    with pytest.raises(TypeError):
        fx.cross_entropy(x, y, weight=[1j, 2, 3])
    with pytest.raises(ValueError, match="axis=5"):
        fx.cross_entropy(np.zeros(3, np.float32), np.array(1), axis=5)
    assert fx.cross_entropy(np.zeros(3, np.float32), np.array(1), axis=-1) == np.float32(np.log(3))
