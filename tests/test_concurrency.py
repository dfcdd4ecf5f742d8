"""Concurrency, threads, fork and leaks.

* THREADS Python threads x CALLS_PER_THREAD calls each, all at once, on inputs big enough
  for the OpenMP path, get results bit-identical to serial calls (and the calls release
  the GIL: another thread runs while a long kernel does).
* n_threads = 1, 2, 3, None (and an absurd 100000, capped) give identical bits for every
  call of the registry and every building block, on every ISA, parallel over rows and over
  one long row.
* threadpoolctl.threadpool_limits(1) is honoured.
* A label changed by another thread while a call runs never crashes the process.
* After os.fork() (multiprocessing's "fork" start method) in a parent that has already run
  a parallel region, fastxent's or another library's, a call in the child returns the
  right answer and does not hang.
* No leaks: resident memory is flat over LEAK_CALLS small calls, error paths included.
"""

import multiprocessing
import os
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastxent as fx
from conftest import assert_same_bits, close_ieee, require_threadpoolctl
from registry import BLOCKS, CASES

THREADS = 8
CALLS_PER_THREAD = 50
LEAK_CALLS = 100_000
# 2 x 32768-element blocks at least: above the kernels' serial cut-off (65536 elements)
SHAPE = (160, 1000)


def _workload(seed):
    """(name, thunk) for every call of the registry (each reduction in turn) and every
    building block, on inputs of SHAPE derived from `seed`, float32 and float64 in turn;
    plus a (B, T, V) input with axis=-1 and a non-contiguous class-axis-1 view of it."""
    rng = np.random.default_rng(seed)
    work = []
    for i, case in enumerate(CASES.values()):
        dtype = (np.float32, np.float64)[i % 2]
        x, t, kw = case.make(rng, dtype, SHAPE)
        kw = {**kw, "reduction": case.reductions[i % len(case.reductions)]}
        work.append((case.id, lambda case=case, x=x, t=t, kw=kw: case.fx(x, t, kw, return_grad=True)))
    for i, block in enumerate(BLOCKS.values()):
        x = (rng.standard_normal(SHAPE) * 3).astype((np.float32, np.float64)[i % 2])
        kw = block.call_kw((-1, 0)[i % 2])
        work.append((block.name, lambda block=block, x=x, kw=kw: block.fx(x, **kw)))
    x3 = (rng.standard_normal((8, 40, 500)) * 3).astype(np.float32)
    t3 = rng.integers(0, 500, (8, 40))
    x3m = np.moveaxis(x3, 2, 1)          # (8, 500, 40) view: class axis 1, not contiguous
    work += [("ce-axis-last-3d", lambda: fx.cross_entropy(x3, t3, axis=-1, return_grad=True)),
             ("ce-axis-1-view", lambda: fx.cross_entropy(x3m, t3, return_grad=True))]
    return work


def _assert_all_same_bits(got, expected, what):
    """got, expected: {key: result}; every result the same bits (all mismatches listed)."""
    assert got.keys() == expected.keys(), what
    bad = []
    for key in expected:
        try:
            assert_same_bits(got[key], expected[key], str(key))
        except AssertionError as exc:
            bad.append(str(exc))
    assert not bad, f"{what}: {len(bad)} results differ:\n" + "\n".join(bad[:10])


# ------------------------------------------------------------------ many Python threads
def test_many_threads_get_serial_results():
    seeds = range(THREADS)
    works = {s: _workload(s) for s in seeds}
    expected = {(s, name): f() for s in seeds for name, f in works[s]}

    def worker(s):
        out = []
        for i in range(CALLS_PER_THREAD):
            name, f = works[s][(i + s) % len(works[s])]
            out.append(((s, name, i), f()))
        return out

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        results = dict(r for rs in pool.map(worker, seeds) for r in rs)
    assert len(results) == THREADS * CALLS_PER_THREAD
    _assert_all_same_bits(results, {key: expected[key[:2]] for key in results},
                          "concurrent results against the serial ones")


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
# big enough for the kernels to go parallel over rows, or over the class axis of long rows
THREAD_SHAPES = {"many_rows": (3000, 67), "long_rows": (3, 70001),
                 "few_classes": (20000, 10)}     # the item-lane kernels (test_items.py)
# the reduction uses a fixed blocking, whatever n_threads (compared with n_threads=1)
THREAD_COUNTS = (2, 3, None)
# the parallel result itself against the reference, at these sizes (the float64 reference
# is slow there; every call is compared with it at small sizes in test_core / test_family)
REF_CHECKED = ("ce-index", "ce-plain", "bce-logits")


@pytest.mark.parametrize("shape", list(THREAD_SHAPES))
def test_thread_count_gives_identical_bits(isa, rng, dtype, shape):
    # the elementwise kernels (BCE, kl_div, the sigmoids) split the flat array, whatever
    # its shape: they run on many_rows only
    long_rows = shape == "long_rows"
    shape = THREAD_SHAPES[shape]
    for case in CASES.values():
        if case.id == "ce-axis-last" or (long_rows and not case.loss.class_axis):
            continue        # (ce-axis-last: on a 2-D input the same call as ce-plain)
        x, t, kw = case.make(rng, dtype, shape)
        # every reduction where the result is checked against the reference; elsewhere
        # "sum" (the blocked reduction and the gradient; the other reductions only scale)
        for reduction in case.reductions if case.id in REF_CHECKED else ("sum",):
            one = case.fx(x, t, kw, reduction=reduction, return_grad=True, n_threads=1)
            for n in THREAD_COUNTS:
                assert_same_bits(case.fx(x, t, kw, reduction=reduction, return_grad=True, n_threads=n),
                                 one, f"{case.id} {reduction} n_threads={n}")
            if case.id in REF_CHECKED:
                loss_ref, grad_ref = case.ref(x, t, kw, reduction=reduction)
                close_ieee(one[0], loss_ref, dtype, f"{case.id} {reduction} loss")
                close_ieee(one[1], grad_ref, dtype, f"{case.id} {reduction} grad")
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    for block, axis in [(b, -1) for b in BLOCKS.values()] + [(BLOCKS["softmax"], 0)]:
        if long_rows and not block.has_axis:
            continue
        kw = block.call_kw(axis)
        one = block.fx(x, n_threads=1, **kw)
        for n in THREAD_COUNTS:
            assert_same_bits(block.fx(x, n_threads=n, **kw), one, f"{block.name} {kw} n_threads={n}")


def test_absurd_n_threads_is_capped_not_fatal(rng):
    """libgomp exits the process when it cannot create the threads asked for; a request
    beyond max(OpenMP default, processors) is reduced to that: the same bits as one thread."""
    x = rng.standard_normal((512, 1000)).astype(np.float32)
    y = rng.integers(0, 1000, 512)
    one = fx.cross_entropy(x, y, return_grad=True, n_threads=1)
    assert_same_bits(fx.cross_entropy(x, y, return_grad=True, n_threads=100_000), one)
    assert_same_bits(fx.softmax(x, n_threads=100_000), fx.softmax(x, n_threads=1))


# ------------------------------------------------------------------ threadpoolctl
def test_threadpool_limits_is_honoured():
    threadpoolctl = require_threadpoolctl()
    work = _workload(5)
    before = {name: f() for name, f in work}
    default = fx.show_config()["max_threads"]
    with threadpoolctl.threadpool_limits(limits=1):
        assert fx.show_config()["max_threads"] == 1
        inside = {name: f() for name, f in work}
    assert fx.show_config()["max_threads"] == default, "the limit must be lifted on exit"
    _assert_all_same_bits(inside, before, "under threadpool_limits(1)")
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert fx.show_config()["max_threads"] == 1


# ------------------------------------------------------------ labels changed mid-call
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


# ------------------------------------------------------------------ fork
def _child(conn, seed):
    try:
        out = {name: f() for name, f in _workload(seed)}
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
    expected = {name: f() for name, f in _workload(seed)}
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
        _assert_all_same_bits(out, expected, "results in the forked child")
    # the parent still runs in parallel afterwards and gets the same bits
    _assert_all_same_bits({name: f() for name, f in _workload(seed)}, expected, "parent after fork")


FOREIGN_OPENMP_PROBE = r"""
import ctypes, ctypes.util, os
import numpy as np
gomp = ctypes.CDLL(ctypes.util.find_library("gomp") or "libgomp.so.1")
BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
body = BODY(lambda data: None)
gomp.GOMP_parallel(body, None, 2, 0)    # another library's parallel region, unseen by fastxent
import fastxent as fx
pid = os.fork()
if pid == 0:
    x = np.random.default_rng(0).standard_normal((2000, 500)).astype(np.float32)
    loss = fx.cross_entropy(x, np.zeros(2000, np.int64), n_threads=2)
    os._exit(0 if np.isfinite(loss) and fx.show_config()["forked_serial"] else 3)
_, status = os.waitpid(pid, 0)
print("child exit", os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_fork_after_another_librarys_openmp_does_not_hang():
    """The parent ran an OpenMP parallel region through another library on the same
    runtime (here libgomp called directly), never through fastxent; a forked child's
    first parallel call hung forever before. Every forked child now runs serially. In a
    subprocess of its own session, killed whole on a timeout."""
    import ctypes.util
    import signal
    if ctypes.util.find_library("gomp") is None or not fx.show_config()["openmp"]:
        pytest.skip("no libgomp here, or a serial build")
    proc = subprocess.Popen([sys.executable, "-c", FOREIGN_OPENMP_PROBE], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("the forked child hung (no answer in 60 s)")
    assert proc.returncode == 0, out + err
    assert out.strip() == "child exit 0", out + err


THREAD_LIMIT_PROBE = r"""
import resource, sys, threading
import numpy as np
import fastxent as fx
case = sys.argv[1]
x = np.random.default_rng(0).standard_normal((4000, 500)).astype(np.float32)
y = np.zeros(4000, np.int64)
expected = float(fx.cross_entropy(x, y, n_threads=1))
if case == "other thread":
    fx.cross_entropy(x, y, n_threads=2)     # the main thread's pool of workers exists
    threading.stack_size(256 << 10)
with open("/proc/self/status") as f:
    vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize"))
# a few MiB more address space: no room for a worker thread's stack (8 MiB by default);
# the "stack size" case leaves room for 8 MiB, not for the 64 MiB it asks OpenMP for
margin = (24 << 20) if case == "stack size" else (4 << 20)
resource.setrlimit(resource.RLIMIT_AS, (vm + margin, resource.RLIM_INFINITY))
got = []
call = lambda: got.append(float(fx.cross_entropy(x, y, n_threads=2)))
if case == "other thread":   # libgomp keeps a pool per calling thread: this one needs its own
    t = threading.Thread(target=call)
    t.start()
    t.join()
else:
    call()
print("same" if got == [expected] else f"differs {got} {expected}")
"""


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc/self/status")
@pytest.mark.parametrize("case", ["main thread", "other thread", "stack size"])
def test_threads_that_cannot_be_created_mean_serial_not_exit(case):
    """Under an address-space limit (RLIMIT_AS) the system cannot create a parallel
    region's threads, and GNU libgomp then exits the process ("Thread creation failed",
    which it did here). fastxent creates that many threads itself before the first such
    region of each calling thread (libgomp keeps a pool per calling thread), with the
    stack size libgomp will use (OMP_STACKSIZE), and runs on as many as it could: the
    call answers, with the serial bits."""
    if not fx.show_config()["openmp"]:
        pytest.skip("a serial build starts no threads")
    env = dict(os.environ)
    if case == "stack size":
        env["OMP_STACKSIZE"] = "64M"
    run = subprocess.run([sys.executable, "-c", THREAD_LIMIT_PROBE, case], capture_output=True,
                         text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert run.stdout.strip() == "same", run.stdout + run.stderr


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
