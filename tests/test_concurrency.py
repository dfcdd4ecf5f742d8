"""Concurrency, threads, fork and leaks.

* THREADS Python threads x CALLS_PER_THREAD calls each, all at once, on inputs big enough
  for the OpenMP path, get results bit-identical to serial calls (and the calls release
  the GIL: another thread runs while a long kernel does).
* n_threads = 1, 2, 3 (and None) give identical bits for every kernel.
* threadpoolctl.threadpool_limits(1) is honoured.
* After os.fork() (multiprocessing's "fork" start method) in a parent that has already run
  a parallel kernel, a call in the child returns the right answer and does not hang.
* No leaks: resident memory is flat over LEAK_CALLS small calls, error paths included.
"""

import multiprocessing
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastxent as fx

THREADS = 8
CALLS_PER_THREAD = 50
LEAK_CALLS = 100_000
# 2 x 32768-element blocks at least: above the kernels' serial cut-off (65536 elements)
SHAPE = (160, 1000)


def _require_threadpoolctl():
    try:
        import threadpoolctl
        return threadpoolctl
    except ImportError:
        if os.environ.get("CI") == "true":
            pytest.fail("threadpoolctl is not installed, but CI must run this test (CI=true)")
        pytest.skip("threadpoolctl is not installed")


def _workload(seed):
    """A list of (name, thunk) covering every kernel, on inputs derived from `seed`."""
    rng = np.random.default_rng(seed)
    x32 = (rng.standard_normal(SHAPE) * 3).astype(np.float32)
    x64 = (rng.standard_normal(SHAPE) * 3)
    C = SHAPE[1]
    t = rng.integers(0, C, SHAPE[0])
    t[::7] = -100
    w = rng.uniform(0.5, 2, C).astype(np.float32)
    y = rng.random(SHAPE)
    y /= y.sum(axis=1, keepdims=True)
    tb = rng.random(SHAPE) < 0.3
    x3 = (rng.standard_normal((8, 40, 500)) * 3).astype(np.float32)
    t3 = rng.integers(0, 500, (8, 40))
    x3m = np.moveaxis(x3, 2, 1)          # (8, 500, 40) view: class axis 1, not contiguous
    return [
        ("ce", lambda: fx.cross_entropy(x32, t, w, label_smoothing=0.1, return_grad=True)),
        ("ce-none", lambda: fx.cross_entropy(x64, t, reduction="none", return_grad=True)),
        ("ce-soft", lambda: fx.cross_entropy(x64, y, return_grad=True)),
        ("ce-axis-last", lambda: fx.cross_entropy(x3, t3, axis=-1, return_grad=True)),
        ("ce-axis-1-view", lambda: fx.cross_entropy(x3m, t3, return_grad=True)),
        ("nll", lambda: fx.nll_loss(x32, t, w, reduction="sum", return_grad=True)),
        ("bce", lambda: fx.binary_cross_entropy_with_logits(x32, tb, pos_weight=w, return_grad=True)),
        ("bce-none", lambda: fx.binary_cross_entropy_with_logits(x64, y, reduction="none", return_grad=True)),
        ("lse", lambda: fx.logsumexp(x32)),
        ("softmax", lambda: fx.softmax(x64)),
        ("log_softmax", lambda: fx.log_softmax(x32, axis=0)),
        ("entropy", lambda: fx.entropy(x64)),
        ("sigmoid", lambda: fx.sigmoid(x32)),
        ("log_sigmoid", lambda: fx.log_sigmoid(x64)),
    ]


def _bits(result):
    """A hashable, bit-exact fingerprint of a result (scalar, array or tuple)."""
    if isinstance(result, tuple):
        return tuple(_bits(r) for r in result)
    a = np.ascontiguousarray(np.asarray(result))
    return (a.dtype.str, a.shape, a.tobytes())


# ------------------------------------------------------------------ many Python threads
def test_many_threads_get_serial_results():
    seeds = range(THREADS)
    works = {s: _workload(s) for s in seeds}
    expected = {(s, name): _bits(f()) for s in seeds for name, f in works[s]}

    def worker(s):
        out = []
        for i in range(CALLS_PER_THREAD):
            name, f = works[s][(i + s) % len(works[s])]
            out.append(((s, name), _bits(f())))
        return out

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = [r for rs in pool.map(worker, seeds) for r in rs]
    assert len(results) == THREADS * CALLS_PER_THREAD
    bad = [key for key, bits in results if bits != expected[key]]
    assert not bad, f"{len(bad)} concurrent results differ from the serial ones: {sorted(set(bad))[:10]}"


def test_calls_release_the_gil():
    """While one thread runs a long kernel (serially, so a core stays free), the main
    thread keeps running Python: its longest pause is far shorter than the call."""
    # grow the input until one serial call takes 40 ms (at most 2**26 elements, 256 MB);
    # timed on a second call, since the first one of a size pays for fresh pages
    base = np.random.default_rng(0).standard_normal((1024, 1000), dtype=np.float32)
    rows = 2048
    while True:
        x = np.tile(base, (rows // 1024, 1))
        t = np.zeros(rows, np.int64)
        fx.cross_entropy(x, t, return_grad=True, n_threads=1)
        t0 = time.perf_counter()
        fx.cross_entropy(x, t, return_grad=True, n_threads=1)
        single = time.perf_counter() - t0
        if single > 0.04 or rows * 1000 >= 2**26:
            break
        rows *= 2
    started, done = threading.Event(), threading.Event()
    span = []

    def long_call():
        started.set()
        a = time.perf_counter()
        fx.cross_entropy(x, t, return_grad=True, n_threads=1)
        span.append((a, time.perf_counter()))
        done.set()

    th = threading.Thread(target=long_call)
    th.start()
    started.wait()
    stamps = []
    while not done.is_set():
        stamps.append(time.perf_counter())
    th.join()
    a, b = span[0]
    inside = [s for s in stamps if a <= s <= b]
    gaps = np.diff([a] + inside + [b])
    assert b - a > 0.01, f"the call is too short to measure ({b - a:.4f} s)"
    assert gaps.max() < 0.5 * (b - a), (
        f"the main thread stalled {gaps.max() * 1e3:.1f} ms during a {(b - a) * 1e3:.1f} ms call "
        f"(serial call alone: {single * 1e3:.1f} ms): the GIL is held")


# ------------------------------------------------------------------ thread-count invariance
def test_thread_count_does_not_change_bits():
    work = _workload(123)
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((300, 700)) * 3).astype(np.float32)
    t = rng.integers(0, 700, 300)
    calls = {
        "ce": lambda n: fx.cross_entropy(x, t, label_smoothing=0.05, return_grad=True, n_threads=n),
        "ce-none": lambda n: fx.cross_entropy(x, t, reduction="none", return_grad=True, n_threads=n),
        "ce-soft": lambda n: fx.cross_entropy(x, fx.softmax(x * 0.5), return_grad=True, n_threads=n),
        "nll": lambda n: fx.nll_loss(x, t, return_grad=True, n_threads=n),
        "bce": lambda n: fx.binary_cross_entropy_with_logits(x, x > 0.5, return_grad=True, n_threads=n),
        "bce-f64": lambda n: fx.binary_cross_entropy_with_logits(x.astype(np.float64), (x > 0).astype(np.float64),
                                                                 reduction="sum", return_grad=True, n_threads=n),
        "lse": lambda n: fx.logsumexp(x, n_threads=n),
        "softmax": lambda n: fx.softmax(x, axis=0, n_threads=n),
        "log_softmax": lambda n: fx.log_softmax(x, n_threads=n),
        "entropy": lambda n: fx.entropy(x, n_threads=n),
        "sigmoid": lambda n: fx.sigmoid(x, n_threads=n),
        "log_sigmoid": lambda n: fx.log_sigmoid(x, n_threads=n),
        "bce-probs": lambda n: fx.binary_cross_entropy(fx.sigmoid(x), x > 0, return_grad=True, n_threads=n),
        "kl": lambda n: fx.kl_div(fx.log_softmax(x), fx.softmax(x * 2), return_grad=True, n_threads=n),
    }
    for name, call in calls.items():
        ref_bits = _bits(call(1))
        for n in (2, 3, None):
            assert _bits(call(n)) == ref_bits, f"{name}: n_threads={n} differs from n_threads=1"
    for name, f in work:                   # repeated calls: the same bits
        assert _bits(f()) == _bits(f()), name


# ------------------------------------------------------------------ threadpoolctl
def test_threadpool_limits_is_honoured():
    threadpoolctl = _require_threadpoolctl()
    work = _workload(5)
    before = {name: _bits(f()) for name, f in work}
    default = fx.show_config()["max_threads"]
    with threadpoolctl.threadpool_limits(limits=1):
        assert fx.show_config()["max_threads"] == 1
        inside = {name: _bits(f()) for name, f in work}
    assert fx.show_config()["max_threads"] == default, "the limit must be lifted on exit"
    assert inside == before
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert fx.show_config()["max_threads"] == 1


# ------------------------------------------------------------------ fork
def _child(conn, seed):
    try:
        out = {name: _bits(f()) for name, f in _workload(seed)}
        conn.send(("ok", out, fx.show_config()))
    except BaseException as exc:  # noqa: BLE001 - report anything to the parent
        conn.send(("error", repr(exc), None))
    finally:
        conn.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_after_parallel_work_does_not_hang():
    seed = 11
    # the parent runs parallel kernels (explicitly 2 threads: also on a 1-core machine)
    big = np.random.default_rng(0).standard_normal((2000, 500)).astype(np.float32)
    fx.cross_entropy(big, np.zeros(2000, np.int64), return_grad=True, n_threads=2)
    fx.softmax(big, n_threads=2)
    expected = {name: _bits(f()) for name, f in _workload(seed)}
    ctx = multiprocessing.get_context("fork")
    for _ in range(2):                       # a second child from the same parent
        parent_end, child_end = ctx.Pipe(duplex=False)
        p = ctx.Process(target=_child, args=(child_end, seed))
        p.start()
        child_end.close()
        try:
            assert parent_end.poll(60), "the forked child hung (no answer in 60 s)"
            status, out, cfg = parent_end.recv()
        finally:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        assert status == "ok", out
        assert p.exitcode == 0, p.exitcode
        bad = [k for k in expected if out[k] != expected[k]]
        assert not bad, f"results in the forked child differ: {bad}"
    # the parent still runs in parallel afterwards and gets the same bits
    assert {name: _bits(f()) for name, f in _workload(seed)} == expected


# ------------------------------------------------------------------ leaks
def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc/self/statm")
def test_no_leak_over_many_small_calls():
    """Resident memory is flat over LEAK_CALLS small calls that cycle through every
    function, the gradient paths, grad_out/out, and error paths (an exception object
    and its traceback per call).

    Slack: after a warm-up of 10% of the calls (which lets the allocator and NumPy's
    small-array cache reach their steady state), the RSS may grow by at most 4 MiB over
    the remaining 90,000 calls: that is under 47 bytes per call, so any leak of a buffer
    (>= 80 bytes here), an array object (~100 bytes) or a Python exception per call is
    caught, while page-granular allocator noise (a few pages) is not mistaken for one."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((8, 10)) * 3).astype(np.float32)
    x64 = x.astype(np.float64)
    t = rng.integers(0, 10, 8)
    bad_t = t.copy()
    bad_t[3] = 99
    tb = x > 0
    p = fx.sigmoid(x)
    g = np.empty_like(x)
    out = np.empty(8, np.float32)
    gnc = np.empty((8, 20), np.float32)[:, ::2]
    w = np.ones(10, np.float32)

    def err(f):
        try:
            f()
        except (ValueError, TypeError, IndexError):
            pass

    calls = [
        lambda: fx.cross_entropy(x, t, return_grad=True),
        lambda: fx.cross_entropy(x, t, w, reduction="none", label_smoothing=0.1),
        lambda: fx.cross_entropy(x64, fx.softmax(x64), return_grad=True, grad_out=x64.copy()),
        lambda: fx.cross_entropy(x, t, return_grad=True, grad_out=g),
        lambda: fx.cross_entropy(x, t, return_grad=True, grad_out=gnc),
        lambda: fx.nll_loss(x, t, return_grad=True),
        lambda: fx.binary_cross_entropy_with_logits(x, tb, pos_weight=w, return_grad=True),
        lambda: fx.binary_cross_entropy(p, tb, return_grad=True),
        lambda: fx.kl_div(x, p, return_grad=True),
        lambda: fx.logsumexp(x, out=out),
        lambda: fx.softmax(x, axis=0),
        lambda: fx.entropy(x),
        lambda: fx.log_sigmoid(x),
        lambda: err(lambda: fx.cross_entropy(x, bad_t, return_grad=True, grad_out=g)),
        lambda: err(lambda: fx.cross_entropy(x, t[:5])),
        lambda: err(lambda: fx.softmax(x.astype(np.int32))),
        lambda: err(lambda: fx.binary_cross_entropy(x, tb)),
        lambda: err(lambda: fx.cross_entropy(x, t, reduction="avg")),
    ]
    n = len(calls)
    warm = LEAK_CALLS // 10
    t0 = time.perf_counter()
    for i in range(warm):
        calls[i % n]()
    rss0 = _rss_bytes()
    samples = []
    for i in range(warm, LEAK_CALLS):
        calls[i % n]()
        if i % 10_000 == 0:
            samples.append(_rss_bytes())
    rss1 = _rss_bytes()
    elapsed = time.perf_counter() - t0
    growth = rss1 - rss0
    assert growth <= 4 * 2**20, (
        f"RSS grew {growth / 2**20:.2f} MiB over {LEAK_CALLS - warm} calls "
        f"({growth / (LEAK_CALLS - warm):.0f} B/call); samples (MiB): "
        f"{[round(s / 2**20, 2) for s in samples]}")
    assert elapsed < 60, f"{LEAK_CALLS} calls took {elapsed:.1f} s"
