"""Compare fastxent with NumPy, PyTorch, JAX and scikit-learn, and with the memory floors.

For every shape of issue 4 it times the forward pass (the loss) and the forward+backward pass
(the loss and its gradient with respect to the logits) of

* fastxent      ``fx.cross_entropy(x, y, return_grad=True, n_threads=T)`` /
                ``fx.binary_cross_entropy_with_logits(...)``; a second column, ``fastxent/out``,
                passes a preallocated ``grad_out`` (no page faults on a fresh gradient array);
* numpy         a max-shifted log-sum-exp written here (``numpy_cross_entropy``,
                ``numpy_bce_with_logits``), one N x C temporary, float64 final sum;
* torch         ``F.cross_entropy`` / ``F.binary_cross_entropy_with_logits``; forward+backward
                by autograd on ``torch.from_numpy(x).requires_grad_()``;
                ``torch.set_num_threads(T)``;
* jax           ``jax.jit`` of optax's ``softmax_cross_entropy_with_integer_labels`` /
                ``sigmoid_binary_cross_entropy`` (a ``jnp`` formula without optax), forward+backward
                by ``jax.value_and_grad``, compiled ahead of time, ``block_until_ready``;
                XLA's threads are limited through ``XLA_FLAGS`` set before jax is imported;
* sklearn       ``sklearn._loss.loss.HalfMultinomialLoss`` (``HalfBinomialLoss`` for BCE),
                ``loss`` and ``loss_gradient`` with ``n_threads=T`` (per-sample losses, then
                a mean);

and the memory floors measured in the same run: reading the logits once (``np.max(x)`` or
``x.sum()``, whichever is faster), copying them once into a preallocated array
(``np.copyto``: the floor of a call with ``grad_out``), and copying them once into a new
array (``x.copy()``: the floor of a call that returns a new gradient, which pays for the
same fresh pages). NumPy runs these single-threaded; they are also run split in T pieces
over a ``ThreadPoolExecutor`` (NumPy releases the GIL) and the faster of the two is the
floor.

Libraries are interleaved side by side within each shape (one sample of every cell per round,
the order rotated each round), because these machines are noisy; each time is the median of the
rounds (the minimum with ``--stat min``), and a sample of a fast call averages enough calls to last about a millisecond.

Run ``fastxent bench --help`` (``python -m fastxent bench``; from a checkout also
``python bench/compare.py``); see bench/README.md. A run writes its report (RESULTS.md,
throughput.png) to a scratch directory, ``bench/out/`` of a checkout (ignored by git) or
``fastxent-bench/`` in the temporary directory; only a full run with ``--record`` writes the
committed record, ``bench/RESULTS.md`` and ``bench/throughput.png``.

This module is not imported by ``import fastxent``; at module level it imports the standard
library and NumPy only (each library it compares is imported when its cells are made).
"""

from __future__ import annotations

import argparse
import datetime
import gc
import importlib
import importlib.util
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import tracemalloc
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# --------------------------------------------------------------------------------------------
# the shapes of issue 4
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    key: str
    loss: str  # "ce" (softmax cross-entropy, class indices) or "bce" (BCE with logits)
    shape: tuple
    dtype: str = "float32"
    target: str = "index"  # "index" | "float" | "bool"
    axis: int = 1
    group: str = "main"  # "items": the "many items, few classes" section (per ISA)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    @property
    def label(self) -> str:
        s = "x".join(map(str, self.shape))
        if self.loss == "ce":
            s = f"CE {s}"
            if self.dtype != "float32":
                s += f" {self.dtype}"
            if len(self.shape) > 2:
                s += f" axis={self.axis - len(self.shape) if self.axis == len(self.shape) - 1 else self.axis}"
        else:
            s = f"BCE {s} {self.target}"
        return s


CASES = [
    Case("64x10", "ce", (64, 10)),
    Case("256x1000", "ce", (256, 1000)),
    Case("4096x1000", "ce", (4096, 1000)),
    Case("1024x32768", "ce", (1024, 32768)),
    Case("256x131072", "ce", (256, 131072)),
    Case("8x256000", "ce", (8, 256000)),
    Case("8192x8192", "ce", (8192, 8192)),
    Case("4096x1000:f64", "ce", (4096, 1000), dtype="float64"),
    Case("8x21x256x256", "ce", (8, 21, 256, 256), axis=1),
    Case("bce:4096x1000", "bce", (4096, 1000), target="float"),
    Case("bce:4096x1000:bool", "bce", (4096, 1000), target="bool"),
    Case("bce:1024x32768", "bce", (1024, 32768), target="float"),
    Case("bce:1024x32768:bool", "bce", (1024, 32768), target="bool"),
]
# Many items, few classes (issue 11): rows of 2 to 1000 classes, class-axis-1 maps of 2 to
# 150 classes, a (batch, time, classes) layout; fastxent timed on every ISA variant the CPU
# runs, side by side, against the floors of exp-ing and of reading the logits.
ITEM_CASES = [
    Case("items:600000x2", "ce", (600000, 2), group="items"),
    Case("items:200000x10", "ce", (200000, 10), group="items"),
    Case("items:100000x37", "ce", (100000, 37), group="items"),
    Case("items:40000x100", "ce", (40000, 100), group="items"),
    Case("items:10000x1000", "ce", (10000, 1000), group="items"),
    Case("items:16x2x128x128", "ce", (16, 2, 128, 128), axis=1, group="items"),
    Case("items:12x3x160x160", "ce", (12, 3, 160, 160), axis=1, group="items"),
    Case("items:4x21x128x128", "ce", (4, 21, 128, 128), axis=1, group="items"),
    Case("items:2x150x64x64", "ce", (2, 150, 64, 64), axis=1, group="items"),
    Case("items:64x50x20", "ce", (64, 50, 20), axis=2, group="items"),
]
CASES = CASES + ITEM_CASES
CASE_BY_KEY = {c.key: c for c in CASES}

# shapes whose peak memory is measured (each lib in a fresh subprocess)
MEMORY_KEYS = ["4096x1000", "1024x32768", "8192x8192", "bce:1024x32768"]
MEMORY_KEYS_QUICK = ["4096x1000", "1024x32768"]

STAT = "median"  # the statistic of the samples shown in the tables: "median" or "min" (--stat)

LIBS = ["fastxent", "fastxent/out", "numpy", "torch", "jax", "sklearn"]
FLOORS = ["read", "copy", "fresh copy"]
MODES = ["fwd", "fwd+bwd"]


def make_data(case: Case, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(case.shape, dtype=np.float32)
    x *= 2.0
    x = x.astype(case.dtype, copy=False)
    if case.loss == "ce":
        c = case.shape[case.axis]
        tshape = case.shape[: case.axis] + case.shape[case.axis + 1 :]
        y = rng.integers(0, c, size=tshape, dtype=np.int64)
    else:
        yb = rng.random(case.shape, dtype=np.float32) < 0.5
        y = yb if case.target == "bool" else yb.astype(case.dtype)
    return x, y


def tiny_case(case: Case) -> Case:
    """The same case at a tiny shape, used to warm a library up in the memory subprocess."""
    shape = tuple(min(s, 4) if i != case.axis else min(s, 16) for i, s in enumerate(case.shape))
    return Case(case.key + ":tiny", case.loss, shape, case.dtype, case.target, case.axis)


# --------------------------------------------------------------------------------------------
# NumPy reference implementations (the "numpy" column)
# --------------------------------------------------------------------------------------------


def numpy_cross_entropy(x, y, axis=1, return_grad=False):
    """Mean softmax cross-entropy over class axis ``axis`` with a max-shifted log-sum-exp.

    One temporary of the size of ``x`` (reused for the gradient); float64 final sum.
    Returns a scalar of ``x.dtype`` or ``(loss, grad)`` with grad = (softmax - onehot) / n.
    """
    m = np.max(x, axis=axis, keepdims=True)
    z = np.subtract(x, m)
    np.exp(z, out=z)
    s = np.sum(z, axis=axis, keepdims=True)
    yi = np.expand_dims(y, axis)
    picked = np.take_along_axis(x, yi, axis=axis)
    lse = np.log(s)
    lse += m
    n = y.size
    loss = x.dtype.type(np.sum(lse - picked, dtype=np.float64) / n)
    if not return_grad:
        return loss
    z /= s
    pt = np.take_along_axis(z, yi, axis=axis)
    pt -= 1
    np.put_along_axis(z, yi, pt, axis=axis)
    z *= x.dtype.type(1.0 / n)
    return loss, z


def numpy_bce_with_logits(x, t, return_grad=False):
    """Mean BCE-with-logits: max(x, 0) - x t + log1p(exp(-|x|)); t float or bool."""
    n = x.size
    e = np.abs(x)
    np.negative(e, out=e)
    np.exp(e, out=e)  # e = exp(-|x|), in (0, 1]
    tmp = np.log1p(e)
    tmp += np.maximum(x, 0)
    tmp -= x * t
    loss = x.dtype.type(np.sum(tmp, dtype=np.float64) / n)
    if not return_grad:
        return loss
    np.add(e, 1, out=tmp)
    g = np.where(x >= 0, x.dtype.type(1), e)  # sigmoid(x) = g / (1 + e)
    g /= tmp
    g -= t
    g *= x.dtype.type(1.0 / n)
    return loss, g


# --------------------------------------------------------------------------------------------
# cells: one timed callable per (library, mode) for one case
# --------------------------------------------------------------------------------------------


class Skip(Exception):
    pass


@dataclass
class Cell:
    fn: object  # () -> result
    extract: object  # result -> (loss: float, grad: ndarray | None) in fastxent's convention


def _np_extract(r):
    if isinstance(r, tuple):
        return float(r[0]), r[1]
    return float(r), None


def cells_numpy(case, x, y, T):
    if case.loss == "ce":
        return {
            ("numpy", "fwd"): Cell(lambda: numpy_cross_entropy(x, y, case.axis), _np_extract),
            ("numpy", "fwd+bwd"): Cell(
                lambda: numpy_cross_entropy(x, y, case.axis, return_grad=True), _np_extract
            ),
        }
    return {
        ("numpy", "fwd"): Cell(lambda: numpy_bce_with_logits(x, y), _np_extract),
        ("numpy", "fwd+bwd"): Cell(lambda: numpy_bce_with_logits(x, y, True), _np_extract),
    }


def cells_fastxent(case, x, y, T, inplace=False):
    import fastxent as fx

    if case.loss == "ce":
        f = fx.cross_entropy
        kw = {"n_threads": T} if case.axis == 1 else {"axis": case.axis, "n_threads": T}
    else:
        f = fx.binary_cross_entropy_with_logits
        kw = {"n_threads": T}
    g = np.empty_like(x)
    g.fill(0)  # touch the pages: grad_out is a buffer the caller already owns
    cells = {
        ("fastxent", "fwd"): Cell(lambda: f(x, y, **kw), _np_extract),
        ("fastxent", "fwd+bwd"): Cell(lambda: f(x, y, return_grad=True, **kw), _np_extract),
        ("fastxent/out", "fwd+bwd"): Cell(
            lambda: f(x, y, return_grad=True, grad_out=g, **kw), _np_extract
        ),
    }
    if case.group == "items":
        for isa in item_isas():
            for mode, call in (("fwd", lambda: f(x, y, **kw)),
                               ("fwd+bwd", lambda: f(x, y, return_grad=True, grad_out=g, **kw))):
                cells[(f"fastxent@{isa}", mode)] = Cell(_on_isa(isa, call), _np_extract)
    if inplace:  # only for the memory subprocess: this overwrites x
        cells[("fastxent/inplace", "fwd+bwd")] = Cell(
            lambda: f(x, y, return_grad=True, grad_out=x, **kw), _np_extract
        )
    return cells


def item_isas():
    """The kernel variants the items section times: each one this CPU runs, but the
    portable baseline where a wider one runs (the issue's goals are AVX2's and AVX-512's)."""
    from fastxent import _core

    isas = list(_core.isa_available())
    return [i for i in isas if i != "baseline"] or isas


def _on_isa(isa, call):
    """call() with fastxent's kernels switched to `isa` (select_isa costs well under a
    microsecond, nothing beside the calls timed here)."""
    from fastxent import _core

    def run():
        prev = _core.select_isa(isa)
        try:
            return call()
        finally:
            _core.select_isa(prev)

    return run


def cells_torch(case, x, y, T):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(T)
    xt0 = torch.from_numpy(x)  # shares memory with x
    xt = torch.from_numpy(x).requires_grad_()
    if case.loss == "ce":
        yt = torch.from_numpy(y)  # int64 class indices
        # torch's class axis is 1: another one is moved there as a view
        cls = (lambda v: v) if case.axis == 1 else (lambda v: v.movedim(case.axis, 1))

        def fwd():
            with torch.no_grad():
                return F.cross_entropy(cls(xt0), yt)

        def fb():
            xt.grad = None
            loss = F.cross_entropy(cls(xt), yt)
            loss.backward()
            return loss.detach(), xt.grad

    else:
        # torch wants a floating target: a bool target is converted once, outside the timing
        yt = torch.from_numpy(y if y.dtype == x.dtype else y.astype(x.dtype))

        def fwd():
            with torch.no_grad():
                return F.binary_cross_entropy_with_logits(xt0, yt)

        def fb():
            xt.grad = None
            loss = F.binary_cross_entropy_with_logits(xt, yt)
            loss.backward()
            return loss.detach(), xt.grad

    def ex(r):
        if isinstance(r, tuple):
            return float(r[0]), r[1].numpy()
        return float(r), None

    return {("torch", "fwd"): Cell(fwd, ex), ("torch", "fwd+bwd"): Cell(fb, ex)}


_OPTAX = None


def cells_jax(case, x, y, T):
    import jax
    import jax.numpy as jnp

    global _OPTAX
    if _OPTAX is None:
        try:
            import optax

            _OPTAX = optax
        except ImportError:
            _OPTAX = False
    optax = _OPTAX
    axis = case.axis

    if case.loss == "ce":

        def formula(logits, labels):
            lsm = jax.nn.log_softmax(logits, axis=axis)
            picked = jnp.take_along_axis(lsm, jnp.expand_dims(labels, axis), axis=axis)
            return -jnp.mean(picked)

        if optax:

            def loss_fn(logits, labels):
                return jnp.mean(
                    optax.softmax_cross_entropy_with_integer_labels(logits, labels, axis=axis)
                )

        else:
            loss_fn = formula
        yj = jax.device_put(y)
    else:

        def formula(logits, labels):
            lab = labels.astype(logits.dtype)
            return jnp.mean(
                jnp.maximum(logits, 0) - logits * lab + jnp.log1p(jnp.exp(-jnp.abs(logits)))
            )

        if optax:

            def loss_fn(logits, labels):  # a bool target is cast inside the jitted graph
                return jnp.mean(
                    optax.sigmoid_binary_cross_entropy(logits, labels.astype(logits.dtype))
                )

        else:
            loss_fn = formula
        yj = jax.device_put(y)
    xj = jax.device_put(x)

    def compile_pair(fn):
        fwd_c = jax.jit(fn).lower(xj, yj).compile()
        fb_c = jax.jit(jax.value_and_grad(fn)).lower(xj, yj).compile()
        return fwd_c, fb_c

    try:
        fwd_c, fb_c = compile_pair(loss_fn)
    except Exception:  # e.g. an optax without the axis argument: fall back to the formula
        if loss_fn is formula:
            raise
        fwd_c, fb_c = compile_pair(formula)

    def fwd():
        return fwd_c(xj, yj).block_until_ready()

    def fb():
        return jax.block_until_ready(fb_c(xj, yj))

    def ex(r):
        if isinstance(r, tuple):
            return float(r[0]), np.asarray(r[1])
        return float(r), None

    return {("jax", "fwd"): Cell(fwd, ex), ("jax", "fwd+bwd"): Cell(fb, ex)}


def cells_sklearn(case, x, y, T):
    from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss

    if case.loss == "ce":
        if x.ndim != 2 or case.axis != 1:
            raise Skip("HalfMultinomialLoss needs (n_samples, n_classes) raw predictions")
        lossobj = HalfMultinomialLoss(n_classes=x.shape[1])
        xr = x
        yf = y.astype(x.dtype)  # sklearn takes the class index as a float of the same dtype
    else:
        lossobj = HalfBinomialLoss()
        xr = x.reshape(-1)
        yf = y.reshape(-1).astype(x.dtype)
    n = yf.shape[0]

    def fwd():
        return lossobj.loss(y_true=yf, raw_prediction=xr, n_threads=T).mean(dtype=np.float64)

    def fb():
        lo, g = lossobj.loss_gradient(y_true=yf, raw_prediction=xr, n_threads=T)
        return lo.mean(dtype=np.float64), g

    def ex(r):  # sklearn's gradient is per sample (not divided by n)
        if isinstance(r, tuple):
            return float(r[0]), (r[1] / n).reshape(x.shape)
        return float(r), None

    return {("sklearn", "fwd"): Cell(fwd, ex), ("sklearn", "fwd+bwd"): Cell(fb, ex)}


def cells_floors(x, T, pool, target=None, exp_floor=False):
    """Memory floors: read the logits once; read them and write a copy once. With an
    elementwise target (BCE): also read the logits and the target once and write one
    array (``np.subtract(x, t, out=)``), the traffic of BCE's forward+backward."""
    flat = x.reshape(-1)
    dst = np.empty_like(flat)
    dst[...] = 0  # touch the pages
    parts = np.array_split(flat, T)
    dparts = np.array_split(dst, T)

    def read_t(f):
        return lambda: list(pool.map(f, parts))

    def copy_1():
        np.copyto(dst, flat)

    def copy_t():
        list(pool.map(np.copyto, dparts, parts))

    def fresh_copy_t():
        new = np.empty_like(flat)
        list(pool.map(np.copyto, np.array_split(new, T), parts))
        return new

    none = lambda r: (float("nan"), None)  # noqa: E731
    cells = {}
    if exp_floor:
        # the time of exp-ing as many values as there are logits (fastxent's own vector
        # exp, kernels/fx_vecmath.h, over -|x| of the first logits, read from and written
        # to arrays that stay in cache): no softmax loss can take less, whatever its
        # layout. Arithmetic only: the read floor below is the memory's bound (an exp
        # loop streaming the logits from memory measured 3x slower than this at
        # 10000x1000 on one thread: it has none of the kernels' prefetching, so it was
        # no floor).
        from fastxent import _core

        chunk = min(1 << 15, flat.size)     # 128 KiB in and out (float32): in L2
        share = -(-flat.size // T)          # one thread's share of the values
        src = -np.abs(flat[:chunk])
        scratch = np.empty(chunk, dtype=flat.dtype)

        def exp_share():
            for j in range(0, share, chunk):
                k = min(chunk, share - j)
                _core.vecmath(src[:k], scratch[:k], _core.fx_vecmath_fn.FX_MATH_EXP_NONPOS)

        # Per ISA, its own exp (the floor of that ISA's rows); with T threads, one
        # thread's share (1/T of the values) on one thread: perfect scaling, a lower bound
        # (Python threads calling the hook in 128 KiB pieces contend for the GIL and
        # measured no faster than one).
        for isa in item_isas():
            cells[(f"exp@{isa}", f"vexp 1/{T} on 1t")] = Cell(_on_isa(isa, exp_share), none)
    cells |= {
        ("read", "max 1t"): Cell(lambda: np.max(flat), none),
        ("read", "sum 1t"): Cell(lambda: flat.sum(), none),
        ("copy", "copyto 1t"): Cell(copy_1, none),
        ("fresh copy", "x.copy() 1t"): Cell(flat.copy, none),
    }
    if T > 1:
        cells[("read", f"max {T}t")] = Cell(read_t(np.max), none)
        cells[("read", f"sum {T}t")] = Cell(read_t(np.sum), none)
        cells[("copy", f"copyto {T}t")] = Cell(copy_t, none)
        cells[("fresh copy", f"x.copy() {T}t")] = Cell(fresh_copy_t, none)
    if target is not None:
        tflat = target.reshape(-1)
        if tflat.dtype == np.bool_:
            # NumPy casts a bool operand through a buffer, slower than memory: copy the
            # logits and read the target's bytes instead (the same traffic)
            tflat = tflat.view(np.uint8)
            how = "copyto+max"

            def xt(a, b, c):
                np.copyto(c, a)
                return b.max()
        else:
            how = "subtract"

            def xt(a, b, c):
                np.subtract(a, b, out=c)
        tparts = np.array_split(tflat, T)
        cells[("x-t", f"{how} 1t")] = Cell(lambda: xt(flat, tflat, dst), none)
        if T > 1:
            cells[("x-t", f"{how} {T}t")] = Cell(
                lambda: list(pool.map(xt, parts, tparts, dparts)), none)
    return cells


MAKERS = {
    "numpy": cells_numpy,
    "fastxent": cells_fastxent,
    "torch": cells_torch,
    "jax": cells_jax,
    "sklearn": cells_sklearn,
}

# --------------------------------------------------------------------------------------------
# environment: optional libraries, XLA flags
# --------------------------------------------------------------------------------------------


def xla_flags_for(T):
    return f"--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads={T}"


def probe_jax(env):
    """Import jax and run one op in a subprocess (an unknown XLA flag aborts the process)."""
    code = "import jax, jax.numpy as jnp; print(float(jnp.ones(8).sum()))"
    try:
        r = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
        )
    except Exception as e:  # pragma: no cover
        return False, repr(e)
    return r.returncode == 0 and r.stdout.strip() == "8.0", (r.stderr or r.stdout)[-500:]


def setup_jax_env(T, notes):
    """Set XLA_FLAGS before jax is imported; returns the flags in force, or None when jax is out."""
    if importlib.util.find_spec("jax") is None:
        notes.append("jax: not installed, skipped.")
        return None
    user = os.environ.get("XLA_FLAGS", "")
    wanted = (user + " " + xla_flags_for(T)).strip()
    env = dict(os.environ, XLA_FLAGS=wanted)
    ok, err = probe_jax(env)
    if not ok:
        # fall back to the one flag XLA surely knows
        wanted = (user + " --xla_cpu_multi_thread_eigen=false").strip()
        env = dict(os.environ, XLA_FLAGS=wanted)
        ok, err2 = probe_jax(env)
        if not ok:
            notes.append(f"jax: does not start here, skipped ({err2.strip()[-200:]!r}).")
            return None
        notes.append(f"jax: XLA rejected intra_op_parallelism_threads ({err.strip()[-120:]!r}).")
    os.environ["XLA_FLAGS"] = wanted
    return wanted


def lib_available(name, notes):
    mod = {"numpy": "numpy", "fastxent": "fastxent", "torch": "torch", "jax": "jax",
           "sklearn": "sklearn"}[name]
    try:
        importlib.import_module(mod)
        if name == "sklearn":
            importlib.import_module("sklearn._loss.loss")
        if name == "jax":
            import jax

            jax.config.update("jax_enable_x64", True)  # for the float64 case
        return True
    except Exception as e:
        notes.append(f"{name}: not importable ({type(e).__name__}: {e}), skipped.")
        return False


def versions():
    out = {"python": platform.python_version()}
    for m in ["numpy", "fastxent", "torch", "jax", "jaxlib", "optax", "sklearn", "scipy",
              "matplotlib", "threadpoolctl"]:
        try:
            mod = sys.modules.get(m) or importlib.import_module(m)
            out[m] = getattr(mod, "__version__", "?")
        except Exception:
            out[m] = None
    return out


def cpu_info():
    model, flags = "unknown", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and model == "unknown":
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags") and not flags:
                    flags = line.split(":", 1)[1]
    except OSError:
        model = platform.processor() or "unknown"
    fl = flags.split()
    isa = [f for f in ("avx512f", "avx512bw", "avx512vl", "avx2", "fma") if f in fl]
    try:
        ncpu = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        ncpu = os.cpu_count()
    return {"model": model, "isa_flags": isa, "cpus_usable": ncpu, "cpu_count": os.cpu_count()}


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------


class Checker:
    """Compares each library's loss (and gradient) with the numpy column's, from the warm-up
    call's result (no extra call). The numpy forward+backward cell is warmed up first."""

    REF = ("numpy", "fwd+bwd")

    def __init__(self, case, log=print):
        self.tol = 1e-4 if case.dtype == "float32" else 1e-9
        self.ref = None
        self.notes = {}
        self.log = log

    def see(self, name, cell, result):
        if name[0] in FLOORS + ["x-t"] or name[0].startswith("exp@"):
            return
        loss, grad = cell.extract(result)
        if name == self.REF:
            self.ref = (loss, grad, float(np.max(np.abs(grad))) or 1.0)
            return
        if self.ref is None:
            return
        ref_loss, ref_grad, scale = self.ref
        msgs = []
        if not abs(loss - ref_loss) <= self.tol * max(1.0, abs(ref_loss)):
            msgs.append(f"loss {loss:.7g} vs numpy {ref_loss:.7g}")
        if grad is not None:
            g = np.asarray(grad).reshape(ref_grad.shape)
            err = float(np.max(np.abs(np.subtract(g, ref_grad, dtype=ref_grad.dtype)))) / scale
            if not err <= 10 * self.tol:
                msgs.append(f"grad max error {err:.2g} of max |grad|")
        if msgs:
            self.notes[name] = "; ".join(msgs)
            self.log(f"    ! {name[0]} {name[1]}: MISMATCH with numpy: {self.notes[name]}")


def time_case(cells, budget, min_rounds, max_rounds, sample_target=1e-3, checker=None,
              cooldown=0.0, log=print):
    """Interleaved timing. Returns ({name: {"median": s, "samples": [...], ...}}, rounds)."""
    names = list(cells)
    est = {}
    failed = {}
    warm_order = sorted(names, key=lambda n: n != Checker.REF)
    for name in warm_order:
        cell = cells[name]
        try:
            t0 = time.perf_counter()
            res = cell.fn()  # warm-up (page faults, thread pools, caches)
            est[name] = time.perf_counter() - t0
            if checker is not None:
                checker.see(name, cell, res)
            del res
            if est[name] < 0.1:  # a second call for a better estimate when it is cheap
                t0 = time.perf_counter()
                cell.fn()
                est[name] = time.perf_counter() - t0
        except Skip as e:
            failed[name] = f"skipped: {e}"
        except Exception as e:
            failed[name] = f"failed: {type(e).__name__}: {str(e)[:200]}"
            log(f"    ! {name}: {failed[name]}")
    if checker is not None:
        checker.ref = None  # free the reference gradient before timing
    names = [n for n in names if n in est]
    # inner repetitions so that one sample lasts about sample_target seconds
    inner = {n: max(1, int(sample_target / max(est[n], 1e-9))) for n in names}
    per_round = sum(est[n] * inner[n] for n in names) or 1e-9
    rounds = int(min(max_rounds, max(min_rounds, budget // per_round)))
    samples = {n: [] for n in names}
    cores = {n: [] for n in names}
    gc.collect()
    gc.disable()
    try:
        for r in range(rounds):
            k = r % max(1, len(names))
            for n in names[k:] + names[:k]:
                fn = cells[n].fn
                reps = inner[n]
                if cooldown:
                    # let the thread pools of the library timed before this one (OpenMP
                    # runtimes spin-wait after a parallel region) fall asleep first
                    time.sleep(cooldown)
                if est[n] < 2e-3:
                    # an untimed call first: it wakes this library's sleeping thread pool
                    # (measured here: ~0.3 ms) and its data into cache, as in a loop of calls
                    fn()
                c0 = time.process_time()
                t0 = time.perf_counter()
                for _ in range(reps):
                    res = fn()
                t1 = time.perf_counter()
                c1 = time.process_time()
                del res
                samples[n].append((t1 - t0) / reps)
                cores[n].append((c1 - c0) / reps)
    finally:
        gc.enable()
    out = {}
    for n in names:
        s = samples[n]
        out[n] = {
            "median": statistics.median(s),
            "min": min(s),
            "samples": s,
            "inner": inner[n],
            # total CPU time / total wall time (a ratio of sums: robust to a coarse clock)
            "cores": sum(cores[n]) / max(sum(s), 1e-12),
        }
    for n, why in failed.items():
        out[n] = {"error": why}
    return out, rounds


# --------------------------------------------------------------------------------------------
# memory
# --------------------------------------------------------------------------------------------


def _status_kb(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def mem_child(spec):
    """Run in a fresh process: peak extra resident memory of one forward+backward call."""
    case = CASE_BY_KEY[spec["case"]]
    lib, T = spec["lib"], spec["threads"]
    base_lib = lib.split("/")[0]
    maker = MAKERS[base_lib]
    kw = {"inplace": True} if lib == "fastxent/inplace" else {}
    if base_lib == "jax":
        import jax

        jax.config.update("jax_enable_x64", True)
    tc = tiny_case(case)
    tx, ty = make_data(tc, 1)
    for c in maker(tc, tx, ty, T, **kw).values():  # warm the library up on a tiny input
        c.fn()
    x, y = make_data(case)
    cell = maker(case, x, y, T, **kw)[(lib, "fwd+bwd")]
    gc.collect()
    method = "VmHWM-VmRSS"
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the resident high-water mark to the current RSS
        before = _status_kb("VmRSS")
    except OSError:
        import resource

        method = "ru_maxrss delta"
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    res = cell.fn()
    if method == "VmHWM-VmRSS":
        after = _status_kb("VmHWM")
    else:
        import resource

        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    del res
    print(json.dumps({"extra": after - before, "method": method}))


def measure_memory_subprocess(case, lib, T):
    env = dict(os.environ)
    # this same fastxent (the directory above the package first on the path), in a new process
    code = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
            "from fastxent._bench import main; sys.exit(main())")
    cmd = [sys.executable, "-c", code, PACKAGE_PARENT, "--_mem-child",
           json.dumps({"case": case.key, "lib": lib, "threads": T})]
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        return None, "timeout"
    if r.returncode != 0:
        return None, (r.stderr.strip().splitlines() or ["?"])[-1][:200]
    try:
        d = json.loads(r.stdout.strip().splitlines()[-1])
    except Exception:
        return None, "bad output"
    return d["extra"], d["method"]


def measure_memory_tracemalloc(fn):
    """Peak extra bytes traced by tracemalloc (NumPy registers its data buffers) during fn()."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        res = fn()
        peak = tracemalloc.get_traced_memory()[1]
        del res
    finally:
        tracemalloc.stop()
    return peak - base


# --------------------------------------------------------------------------------------------
# reporting
# --------------------------------------------------------------------------------------------


def fmt_ms(t):
    if t is None:
        return "—"
    ms = t * 1e3
    if ms >= 100:
        return f"{ms:.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    if ms >= 1:
        return f"{ms:.2f}"
    if ms >= 0.01:
        return f"{ms:.3f}"
    return f"{ms:.4f}"


def fmt_x(r):
    if r is None:
        return "—"
    return f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"


def med(timed, name):
    d = timed.get(name)
    return d[STAT] if d and "median" in d else None


def floor_of(timed, kind):
    best, which = None, None
    for name, d in timed.items():
        if name[0] == kind and "median" in d and (best is None or d[STAT] < best):
            best, which = d[STAT], name[1]
    return best, which


def ratio(a, b):
    return a / b if (a is not None and b is not None and b > 0) else None


def build_rows(results):
    """Rows of the times table and of the ratios table."""
    trows, rrows = [], []
    for case, timed in results:
        floors = {k: floor_of(timed, k) for k in FLOORS}
        for mode in MODES:
            t = {lib: med(timed, (lib, mode)) for lib in LIBS}
            # forward: the read floor; forward+backward: a new gradient against a copy
            # into a new array, grad_out against a copy into a preallocated one
            fl = floors["read" if mode == "fwd" else "fresh copy"]
            fl_out = floors["copy"]
            trows.append([case.label, mode] + [fmt_ms(t[l]) for l in LIBS]
                         + [fmt_ms(floors[k][0]) for k in FLOORS])
            fxt = t["fastxent"]
            used = fl[1] or "—"
            if mode != "fwd":
                used = f"{fl[1] or '—'} / {fl_out[1] or '—'}"
            rrows.append([case.label, mode]
                         + [fmt_x(ratio(t[l], fxt)) for l in ("numpy", "torch", "jax", "sklearn")]
                         + [fmt_x(ratio(fxt, fl[0])),
                            fmt_x(ratio(t["fastxent/out"], fl_out[0])) if mode != "fwd" else "—",
                            used])
    thead = ["shape", "pass"] + LIBS + ["read floor", "copy floor", "fresh copy floor"]
    rhead = ["shape", "pass", "vs numpy", "vs torch", "vs jax", "vs sklearn",
             "fastxent / floor", "fastxent/out / copy floor", "floors used"]
    return (thead, trows), (rhead, rrows)


def bce_floor_rows(results):
    """BCE forward+backward against its own floor (read x and the target, write one
    array): how close fastxent is to it, and what 10x PyTorch would need."""
    rows = []
    for case, timed in results:
        fl = floor_of(timed, "x-t")
        if case.loss != "bce" or fl[0] is None:
            continue
        fx_t, fx_out = med(timed, ("fastxent", "fwd+bwd")), med(timed, ("fastxent/out", "fwd+bwd"))
        torch_t = med(timed, ("torch", "fwd+bwd"))
        rows.append([case.label, fmt_ms(fx_t), fmt_ms(fx_out), fmt_ms(fl[0]), fl[1],
                     fmt_x(ratio(fx_out, fl[0])), fmt_ms(torch_t),
                     fmt_ms(torch_t / 10 if torch_t else None),
                     fmt_x(ratio(torch_t, fl[0]))])
    head = ["shape", "fastxent", "fastxent/out", "x-t floor", "floor used",
            "fastxent/out / floor", "torch", "torch / 10", "torch / floor"]
    return head, rows


def items_rows(results):
    """The "many items, few classes" table: per shape and ISA variant, fastxent's time per
    item, PyTorch's and JAX's time over it (same run, same threads), and fastxent's forward
    over its floor: the larger of exp-ing every logit and reading them once."""
    head = ["shape", "ISA", "fwd ns/item", "fwd vs torch", "f+b ns/item", "f+b vs torch",
            "f+b vs jax", "floor ns/item", "fwd / floor"]
    rows = []
    for case, timed in results:
        if case.group != "items":
            continue
        n = int(np.prod(case.shape)) // case.shape[case.axis]
        isas = sorted({k[0].split("@", 1)[1] for k in timed if k[0].startswith("fastxent@")})
        for isa in isas:
            floors = [f for f in (floor_of(timed, f"exp@{isa}")[0], floor_of(timed, "read")[0]) if f]
            floor = max(floors) if floors else None
            fwd, fb = med(timed, (f"fastxent@{isa}", "fwd")), med(timed, (f"fastxent@{isa}", "fwd+bwd"))
            per = lambda t: f"{t / n * 1e9:.1f}" if t else "—"  # noqa: E731
            rows.append([case.label, isa, per(fwd), fmt_x(ratio(med(timed, ("torch", "fwd")), fwd)),
                         per(fb), fmt_x(ratio(med(timed, ("torch", "fwd+bwd")), fb)),
                         fmt_x(ratio(med(timed, ("jax", "fwd+bwd")), fb)), per(floor),
                         fmt_x(ratio(fwd, floor))])
    return head, rows


def text_table(head, rows, left=2):
    """A plain-text table: the first ``left`` columns left-aligned, the others right-aligned."""
    w = [max(len(str(r[i])) for r in [head] + rows) for i in range(len(head))]
    lines = ["  ".join(str(h).rjust(w[i]) if i >= left else str(h).ljust(w[i])
                       for i, h in enumerate(head)).rstrip()]
    lines.append("  ".join("-" * x for x in w))
    for r in rows:
        lines.append("  ".join(str(c).rjust(w[i]) if i >= left else str(c).ljust(w[i])
                               for i, c in enumerate(r)).rstrip())
    return "\n".join(lines)


def md_table(head, rows):
    out = ["| " + " | ".join(map(str, head)) + " |",
           "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
    out += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(out)


def cores_table(results):
    head = ["shape", "pass"] + LIBS
    rows = []
    for case, timed in results:
        for mode in MODES:
            row = [case.label, mode]
            for lib in LIBS:
                d = timed.get((lib, mode))
                row.append(f"{d['cores']:.1f}" if d and "cores" in d else "—")
            rows.append(row)
    return head, rows


def make_chart(results, path, T, cpu):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no chart."
    series = LIBS + ["read floor", "copy floor", "fresh copy floor"]
    colors = dict(zip(series, ["#d62728", "#ff9896", "#7f7f7f", "#1f77b4", "#2ca02c",
                               "#ff7f0e", "#c5b0d5", "#9467bd", "#8c564b"]))
    labels = [c.label for c, _ in results]
    fig, axes = plt.subplots(2, 1, figsize=(max(10, 1.25 * len(labels) + 3), 10), sharex=True)
    width = 0.8 / len(series)
    for ax, mode in zip(axes, MODES):
        for j, s in enumerate(series):
            xs, ys = [], []
            for i, (case, timed) in enumerate(results):
                if s == "read floor":
                    t = floor_of(timed, "read")[0]
                elif s == "copy floor":
                    t = floor_of(timed, "copy")[0]
                elif s == "fresh copy floor":
                    t = floor_of(timed, "fresh copy")[0]
                else:
                    t = med(timed, (s, mode))
                if t:
                    xs.append(i - 0.4 + (j + 0.5) * width)
                    ys.append(case.nbytes / t / 1e9)
            if ys:
                ax.bar(xs, ys, width, label=s, color=colors[s])
        ax.set_yscale("log")
        ax.set_ylabel("GB/s of logits")
        ax.set_title(f"{'forward' if mode == 'fwd' else 'forward + backward'} — "
                     f"{cpu['model']}, {T} threads")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[-1].set_xticks(range(len(labels)))
    axes[-1].set_xticklabels(labels, rotation=30, ha="right")
    axes[0].legend(ncol=4, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def mib(b):
    return "—" if b is None else f"{b / 2**20:.1f}"


def write_markdown(path, ctx):
    L = []
    a = L.append
    a("# fastxent benchmark results\n")
    if ctx["quick"]:
        a("> **Quick run** (`--quick`: few repeats, short budget): indicative only.\n")
    if not ctx["record"]:
        a("> A scratch report, not the committed record (`bench/RESULTS.md`, written only by "
          "a full run with `--record`).\n")
    if ctx.get("busy"):
        a(f"> **Busy machine**: {ctx['busy']}\n")
    a(f"- Date: {ctx['date']}")
    a(f"- Command: `{ctx['command']}`")
    cpu = ctx["cpu"]
    a(f"- CPU: {cpu['model']} ({cpu['cpus_usable']} usable CPUs of {cpu['cpu_count']}; "
      f"ISA flags: {', '.join(cpu['isa_flags']) or 'none of avx2/avx512'})")
    a(f"- Threads: **{ctx['threads']}** for fastxent (`n_threads`), PyTorch "
      f"(`torch.set_num_threads`), scikit-learn (`n_threads`), the threaded NumPy floors; "
      f"JAX: `XLA_FLAGS={ctx['xla_flags']!r}` set before importing jax "
      f"(see the cores table for what each library really used)")
    a("- Versions: " + ", ".join(f"{k} {v}" for k, v in ctx["versions"].items() if v))
    a(f"- JAX loss: {ctx['jax_impl']}")
    ls, le = ctx["load"]
    a(f"- Load average (1, 5, 15 min) at the start: {ls[0]:.2f}, {ls[1]:.2f}, {ls[2]:.2f}; at "
      f"the end of the timings: {le[0]:.2f}, {le[1]:.2f}, {le[2]:.2f} (a busy machine makes "
      "the times noisy; compare ratios within one run)")
    if ctx.get("other_cpus") is not None:
        a(f"- Other work during the timings: {ctx['other_cpus']:.2f} CPUs on average (busy time "
          "of this process's CPUs in `/proc/stat`, steal included, minus this process's own)")
    a(f"- Timing: {STAT} of {ctx['rounds_desc']} interleaved rounds per cell (budget "
      f"{ctx['budget']:g} s per shape, {ctx['min_rounds']}–{ctx['max_rounds']} rounds), "
      "`time.perf_counter`, one warm-up call per cell (two when it is cheap), garbage "
      "collector off while timing; "
      "a sample of a call shorter than 1 ms is the mean of enough calls to last ~1 ms, after "
      "one untimed call (which wakes that library's thread pool up) for calls under 2 ms.")
    a("")
    if ctx["fx_config"] is not None:
        a("`fx.show_config()`:\n")
        a("```")
        a(json.dumps(ctx["fx_config"], indent=2, default=str))
        a("```\n")
    if ctx["notes"]:
        a("Notes:\n")
        for n in ctx["notes"]:
            a(f"- {n}")
        a("")
    a(f"## Times (ms, {STAT})\n")
    a("`fastxent/out`: the same call with a preallocated `grad_out` (reused, so no page faults "
      "on a fresh gradient). Floors: NumPy reading the logits once (faster of `np.max` and "
      "`.sum()`), copying them once into a preallocated array (`np.copyto`: copy floor) and "
      "copying them once into a new array (`x.copy()`: fresh copy floor, which pays for new "
      "pages as a returned gradient does), each the faster "
      f"of 1 thread and {ctx['threads']} threads (halves over a `ThreadPoolExecutor`).\n")
    a(md_table(*ctx["times"]))
    a("")
    a("## Ratios\n")
    a("`vs X` = X's time / fastxent's time (how many times faster fastxent is). "
      "`fastxent / floor` = fastxent's time / the floor: the read floor for the forward pass; "
      "for forward+backward, which returns a new gradient, the fresh copy floor. "
      "`fastxent/out / copy floor`: the call with a preallocated `grad_out` against the "
      "copy into a preallocated array.\n")
    a(md_table(*ctx["ratios"]))
    a("")
    if ctx["bce_floor"][1]:
        a("## BCE-with-logits forward+backward against its own floor\n")
        a("A BCE forward+backward reads the logits and the target and writes the gradient. "
          "The `x-t floor` is NumPy doing just that traffic into a preallocated array: "
          "`np.subtract(x, t, out=g)` for a float target; for a bool target, whose cast NumPy "
          "runs slower than memory, `np.copyto(g, x)` then the target's bytes' `max()`; the "
          "faster of 1 thread and the threaded halves. `torch / floor` "
          "is the most any implementation could be faster than PyTorch here: where it is "
          "below 10, 10x PyTorch is out of reach on this machine.\n")
        a(md_table(*ctx["bce_floor"]))
        a("")
    if ctx["items"][1]:
        a("## Many items, few classes, on each ISA variant\n")
        a("fastxent timed on every kernel variant this CPU runs (`_core.select_isa`), beside "
          "PyTorch and JAX in the same run and threads (they use their own best ISA). Per item "
          "(a row, or a position of a class-axis-1 map); forward+backward into a preallocated "
          "`grad_out`. The floor is the larger of two lower bounds: that ISA's vector exp "
          "of as many values as there are logits (arithmetic alone: values in cache; one "
          "thread's share of them on one thread, as if the threads scaled perfectly) and "
          "NumPy reading the logits once (the faster of 1 thread and the threaded "
          "halves).\n")
        a(md_table(*ctx["items"]))
        a("")
    a("## Cores used (process CPU time / wall time, summed over the timed samples)\n")
    a(md_table(*ctx["cores"]))
    a("")
    a("## Peak memory of forward+backward (extra MiB over the inputs)\n")
    a("Method: each library runs in a fresh Python subprocess (`fastxent._bench`, `--_mem-child`), "
      "is warmed up on a tiny input, then builds the inputs (and the preallocated `grad_out` "
      "where there is one; JAX's are on its device and its programs compiled ahead of time); "
      "`/proc/self/clear_refs` (`5`) resets the resident high-water mark and the column is "
      "`VmHWM` after one forward+backward call minus `VmRSS` before it (where `clear_refs` is "
      "not writable, the `ru_maxrss` delta). The returned gradient counts: 1.00x of the logits "
      "is the minimum for a call that returns a new gradient, 0 for `grad_out=`. The "
      "`tracemalloc` columns are the peak of Python-traced allocations in this process (NumPy "
      "registers its data buffers with tracemalloc; PyTorch, JAX and C-level buffers are "
      "invisible to it).\n")
    a(md_table(*ctx["memory"]))
    a("")
    if ctx["chart"]:
        a(f"## Chart\n\n![throughput]({ctx['chart']})\n")
    if ctx["checks"]:
        a("## Result checks that failed\n")
        for k, v in ctx["checks"].items():
            a(f"- {k}: {v}")
        a("")
    if ctx.get("threadpools"):
        a("## Thread pools loaded (threadpoolctl)\n")
        for line in ctx["threadpools"]:
            a(f"- {line}")
        a("")
    with open(path, "w") as f:
        f.write("\n".join(L))


# --------------------------------------------------------------------------------------------
# where the report goes
# --------------------------------------------------------------------------------------------

RECORD_FILES = ("RESULTS.md", "throughput.png")  # in bench/ of a checkout: the committed record
PARTIAL_FLAGS = ("--quick", "--shapes", "--libs", "--no-memory", "--memory-shapes")


def find_checkout(hint=None):
    """The root of a fastxent checkout (it holds bench/compare.py and src/fastxent/), or None:
    ``hint`` when given, else the current directory, else the directory above src/ when this
    package is a checkout's own (an in-place or editable build)."""
    roots = [hint] if hint else [os.getcwd(), os.path.dirname(PACKAGE_PARENT)]
    for root in roots:
        if (os.path.isfile(os.path.join(root, "bench", "compare.py"))
                and os.path.isfile(os.path.join(root, "src", "fastxent", "__init__.py"))):
            return os.path.abspath(root)
    return None


def is_record(path):
    """``path`` is a file of the committed record: RESULTS.md or throughput.png in the bench/
    directory of a checkout (the one that holds compare.py)."""
    p = os.path.realpath(path)
    d = os.path.dirname(p)
    return (os.path.basename(p) in RECORD_FILES and os.path.basename(d) == "bench"
            and os.path.isfile(os.path.join(d, "compare.py")))


def scratch_dir(checkout):
    """Where a run that is not the record writes: bench/out/ of the checkout (ignored by
    git), else fastxent-bench/ in the temporary directory."""
    if checkout:
        return os.path.join(checkout, "bench", "out")
    return os.path.join(tempfile.gettempdir(), "fastxent-bench")


def resolve_outputs(args, checkout):
    """(report path or None, chart path or None, json path or None); ValueError when the
    options ask for something this run must not do (the record from a partial run; a
    partial run over the record)."""
    if args.record:
        partial = [f for f in PARTIAL_FLAGS if getattr(args, f[2:].replace("-", "_"))]
        partial += [f for f in ("--out", "--chart", "--out-dir")
                    if getattr(args, f[2:].replace("-", "_")) is not None]
        if partial:
            raise ValueError(f"--record writes the committed record (bench/RESULTS.md, "
                             f"bench/throughput.png) from a full run only; drop {', '.join(partial)}")
        if checkout is None:
            raise ValueError("--record writes bench/RESULTS.md of a fastxent checkout: run it "
                             "from the repository root")
        bench = os.path.join(checkout, "bench")
        return os.path.join(bench, RECORD_FILES[0]), os.path.join(bench, RECORD_FILES[1]), args.json
    d = args.out_dir or scratch_dir(checkout)
    out = os.path.join(d, RECORD_FILES[0]) if args.out is None else (args.out or None)
    chart = os.path.join(d, RECORD_FILES[1]) if args.chart is None else (args.chart or None)
    for path in (out, chart, args.json):
        if path and is_record(path):
            raise ValueError(f"{path} is the committed benchmark record: only a full run with "
                             "--record writes it (leave --out/--chart out to write to a scratch "
                             "directory)")
    return out, chart, args.json


def shown_path(path):
    """``path`` relative to the current directory when it lies below it."""
    rel = os.path.relpath(path)
    return path if rel.startswith(os.pardir) else rel


# --------------------------------------------------------------------------------------------
# console
# --------------------------------------------------------------------------------------------

WIDTH = 100  # columns of the console output


class Console:
    """The console output: lines of at most WIDTH columns. A shape's progress line is opened
    when the shape starts (``begin``) and closed with its result (``end``); any other message
    (``say``) starts on a line of its own."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stdout
        self.open = False

    def _write(self, text):
        self.stream.write(text)
        self.stream.flush()

    def begin(self, text):
        self.say_break()
        self._write(text)
        self.open = True

    def end(self, text):
        self._write(text + "\n" if self.open else "    " + text + "\n")
        self.open = False

    def say_break(self):
        if self.open:
            self._write("\n")
            self.open = False

    def say(self, text="", indent=""):
        self.say_break()
        for line in text.split("\n"):
            if len(line) > WIDTH:
                line = textwrap.fill(line, WIDTH, subsequent_indent=indent or "  ",
                                     break_long_words=False, break_on_hyphens=False)
            self._write(line + "\n")


class OtherWork:
    """How much CPU other processes used (and the hypervisor stole) on this process's CPUs
    while something ran: the busy time of those CPUs (``/proc/stat``: user, nice, system,
    irq, softirq, steal) minus this process's own CPU time, over the wall time, in CPUs.
    ``stop()`` gives None where ``/proc/stat`` cannot be read."""

    def __init__(self):
        try:
            self.cpus = {f"cpu{i}" for i in os.sched_getaffinity(0)}
        except AttributeError:  # pragma: no cover - not Linux
            self.cpus = None
        self.begin = None

    def _busy(self):
        try:
            total = 0
            with open("/proc/stat") as f:
                for line in f:
                    if not line.startswith("cpu"):
                        break
                    name, *v = line.split()
                    if name == "cpu" or (self.cpus is not None and name not in self.cpus):
                        continue
                    v = [int(t) for t in v[:8]]
                    total += v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
            return total / os.sysconf("SC_CLK_TCK")
        except (OSError, ValueError, IndexError, AttributeError):
            return None

    def start(self):
        self.begin = (time.perf_counter(), self._busy(), time.process_time())

    def stop(self):
        """(CPUs' worth of other work since start(), or None; wall seconds)."""
        w0, b0, p0 = self.begin
        w1, b1, p1 = time.perf_counter(), self._busy(), time.process_time()
        if b0 is None or b1 is None or w1 <= w0:
            return None, w1 - w0
        return max(0.0, ((b1 - b0) - (p1 - p0)) / (w1 - w0)), w1 - w0


OTHER_BUSY = 0.25  # CPUs of other work, on average over the timings, that make a run "busy"


def busy_reasons(load_start, cpus, T, results, other=None):
    """Why this machine was too busy for these times to mean much (empty: it was not).

    Before the run: a 1-minute load average above ``cpus - T + 1`` (other work kept more than
    the CPUs left over by the T threads busy). During it: other processes using more than
    OTHER_BUSY CPUs on average over the timings (``other``, from OtherWork), or fastxent and
    PyTorch running on fewer than 0.75 T cores (median over the shapes of 64 MiB and more,
    which they run on T threads)."""
    reasons = []
    if load_start[0] > cpus - T + 1:
        reasons.append(f"load average {load_start[0]:.2f} on {cpus} usable CPUs before the "
                       f"run ({T} threads asked for)")
    if other is not None and other > OTHER_BUSY:
        reasons.append(f"other processes used {other:.2f} of the {cpus} CPUs on average while "
                       "the shapes were timed")
    got = [d["cores"] for case, timed in results if case.nbytes >= 64 * 2**20
           for (lib, _), d in timed.items() if lib in ("fastxent", "torch") and "cores" in d]
    if T > 1 and got and statistics.median(got) < 0.75 * T:
        reasons.append(f"fastxent and PyTorch ran on {statistics.median(got):.1f} of the {T} "
                       "cores asked for (median over the shapes of 64 MiB and more)")
    return reasons


def busy_banner(reasons, console):
    console.say("!! BUSY MACHINE: " + "; ".join(reasons) + ".", indent="!! ")
    console.say("!! These times are inflated and the ratios unreliable (PyTorch's most): do not "
                "compare them with the README or bench/RESULTS.md; rerun on a quiet machine "
                "(no build, test run or other benchmark at the same time).", indent="!! ")


def compact_rows(results, mode, libs):
    """The console's table for one pass: a row per shape, fastxent's time, the other libraries
    as X's time / fastxent's, and fastxent over its memory floor."""
    others = [l for l in ("numpy", "torch", "jax", "sklearn") if l in libs]
    out_col = mode != "fwd" and "fastxent" in libs
    head = (["shape", "fastxent"] + (["fx/out"] if out_col else [])
            + [f"vs {l}" for l in others] + ["/ floor"])
    rows = []
    for case, timed in results:
        fxt = med(timed, ("fastxent", mode))
        floor = floor_of(timed, "read" if mode == "fwd" else "fresh copy")[0]
        row = [case.label, fmt_ms(fxt)]
        if out_col:
            row.append(fmt_ms(med(timed, ("fastxent/out", mode))))
        row += [fmt_x(ratio(med(timed, (l, mode)), fxt)) for l in others]
        row.append(fmt_x(ratio(fxt, floor)))
        rows.append(row)
    return head, rows


MEM_SHORT = {"fastxent": "fastxent", "fastxent/out": "fx/out", "fastxent/inplace": "in place"}


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def parse_args(argv=None, prog=None):
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__.split("\n\n")[0],
        epilog="A run writes RESULTS.md and throughput.png to --out-dir (default: bench/out/ of a\n"
               "checkout, else fastxent-bench/ in the temporary directory); only a full run with\n"
               "--record writes the committed record, bench/RESULTS.md and bench/throughput.png.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="threads for every library (2)")
    p.add_argument("--quick", action="store_true",
                   help="short budget and few repeats; memory on two shapes only")
    p.add_argument("--shapes", nargs="+", default=None, metavar="KEY",
                   help="subset of shapes (keys, comma or space separated); see --list")
    p.add_argument("--list", action="store_true", help="list the shape keys and exit")
    p.add_argument("--libs", nargs="+", default=None,
                   help="subset of libraries (numpy fastxent torch jax sklearn)")
    p.add_argument("--record", action="store_true",
                   help="write the committed record, bench/RESULTS.md and bench/throughput.png "
                        "of the checkout (a full run only: not with --quick, --shapes, --libs, "
                        "--no-memory, --memory-shapes, --out, --chart, --out-dir)")
    p.add_argument("--isa", default=None,
                   help="fastxent's kernel variant for every shape (avx512, avx2, baseline; "
                        "default: the widest this CPU runs); the many-items section times "
                        "each variant anyway. Not with --record")
    p.add_argument("--out-dir", default=None, metavar="DIR",
                   help="directory of the report and the chart (default: bench/out/ of a "
                        "checkout, else fastxent-bench/ in the temporary directory)")
    p.add_argument("--out", default=None, metavar="PATH",
                   help="markdown report (default: DIR/RESULTS.md; '' for none)")
    p.add_argument("--chart", default=None, metavar="PATH",
                   help="PNG chart (default: DIR/throughput.png; '' for none)")
    p.add_argument("--repeat", type=int, default=None,
                   help="most rounds per cell (default 15; 5 with --quick)")
    p.add_argument("--min-repeat", type=int, default=None,
                   help="fewest rounds per cell (default 5; 3 with --quick)")
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timing per shape (default 20; 3 with --quick)")
    p.add_argument("--cooldown", type=float, default=0.0, metavar="MS",
                   help="sleep before each timed sample, so that the previous library's idle "
                        "threads stop spinning (0: off; they then wake up slower)")
    p.add_argument("--stat", choices=["median", "min"], default="median",
                   help="statistic of the samples in the tables (median; min is the steadier "
                        "estimate of the quiet-machine time when other work loads the machine)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--memory-shapes", nargs="+", default=None, metavar="KEY",
                   help="shapes whose peak memory is measured")
    p.add_argument("--json", default=None, help="also dump every sample to this JSON file")
    p.add_argument("--_mem-child", dest="mem_child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def split_keys(vals):
    out = []
    for v in vals:
        out += [s for s in v.split(",") if s]
    return out


def main(argv=None, prog=None, checkout=None):
    """Run the comparison; returns the exit status. ``prog``: the command's name in messages
    (``fastxent bench``); ``checkout``: the repository root, when the caller knows it."""
    prog = prog or "fastxent bench"
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv, prog)
    if args.mem_child:
        mem_child(json.loads(args.mem_child))
        return 0
    if args.list:
        for c in CASES:
            print(f"{c.key:22s} {c.label}  ({c.nbytes / 2**20:.1f} MiB)")
        return 0
    try:
        out_path, chart_path, json_path = resolve_outputs(args, find_checkout(checkout))
    except ValueError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    if args.isa is not None:
        if args.record:
            print(f"{prog}: --isa is not for the record (a run on the widest ISA)", file=sys.stderr)
            return 2
        try:
            from fastxent import _core

            _core.select_isa(args.isa)
        except (ImportError, ValueError) as e:
            print(f"{prog}: --isa {args.isa}: {e}", file=sys.stderr)
            return 2
    global STAT
    STAT = args.stat
    T = args.threads
    quick = args.quick
    budget = args.budget if args.budget is not None else (3.0 if quick else 20.0)
    max_rounds = args.repeat if args.repeat is not None else (5 if quick else 15)
    min_rounds = args.min_repeat if args.min_repeat is not None else (3 if quick else 5)
    min_rounds = min(min_rounds, max_rounds)
    cases = CASES
    if args.shapes:
        keys = split_keys(args.shapes)
        bad = [k for k in keys if k not in CASE_BY_KEY]
        if bad:
            print(f"{prog}: unknown shape keys {bad}; see --list", file=sys.stderr)
            return 2
        cases = [CASE_BY_KEY[k] for k in keys]

    console = Console()
    say = console.say
    notes = []      # for the report
    skipped = []    # for the console too: the libraries that are not compared, and why
    wanted_libs = split_keys(args.libs) if args.libs else list(MAKERS)
    xla_flags = setup_jax_env(T, skipped) if "jax" in wanted_libs else None
    libs = [l for l in ["numpy", "fastxent", "torch", "jax", "sklearn"]
            if l in wanted_libs and (l != "jax" or xla_flags is not None)
            and lib_available(l, skipped)]
    notes += skipped
    if "fastxent" not in libs:
        notes.append("fastxent is NOT importable: its columns are empty.")
    jax_impl = "—"
    if "jax" in libs:
        try:
            import optax  # noqa: F401

            jax_impl = (f"optax {optax.__version__} `softmax_cross_entropy_with_integer_labels` "
                        "/ `sigmoid_binary_cross_entropy`, `.mean()`")
        except ImportError:
            jax_impl = "jnp formula (`jax.nn.log_softmax` + `take_along_axis`); optax missing"
            notes.append("optax not installed: JAX uses a jnp log_softmax formula.")
    if "sklearn" in libs:
        notes.append("sklearn: not run for the 4-d shape (HalfMultinomialLoss takes "
                     "(n_samples, n_classes)); BCE uses HalfBinomialLoss on the flattened array.")
    notes.append("NumPy's own operations are single-threaded; the floors also run in "
                 f"{T} threads and the faster is used (column 'floor used').")
    notes.append("Targets: int64 class indices for every library (sklearn: the same as floats); "
                 "for BCE with a bool target, fastxent, NumPy and JAX (cast inside the jitted "
                 "graph) read the bool array, PyTorch (which needs a float target) and "
                 "scikit-learn get a float copy made once outside the timing.")
    notes.append("fastxent, PyTorch and scikit-learn each bring an OpenMP runtime, which "
                 "spin-waits for a while after a parallel region; interleaved, one library's "
                 "idle threads can take a core from the next for a moment (measured: +0.1 ms "
                 "on a 0.1 ms call); `--cooldown` avoids it, off here unless the command says so.")
    fx_config = None
    if "fastxent" in libs:
        import fastxent as fx

        try:
            fx_config = fx.show_config()
        except Exception as e:
            notes.append(f"fx.show_config() failed: {e!r}")

    cpu = cpu_info()
    load_start = os.getloadavg()
    isa = f", fastxent {fx_config['isa']}" if fx_config else ""
    say(f"{prog}: {len(cases)} shape(s), {T} thread(s){isa}; {', '.join(libs)}")
    say(f"CPU: {cpu['model']} ({cpu['cpus_usable']} usable CPUs), load average "
        f"{load_start[0]:.2f}")
    for n in skipped:
        say(f"  {n}", indent="    ")
    if xla_flags:
        say(f"  XLA_FLAGS={xla_flags}")
    say(("quick run, indicative only: " if quick else "")
        + f"{min_rounds}-{max_rounds} rounds per cell, {budget:g} s per shape, the {STAT} shown")
    early_busy = busy_reasons(load_start, cpu["cpus_usable"], T, [])
    if early_busy:
        busy_banner(early_busy, console)
    pool = ThreadPoolExecutor(max(T, 1))
    results = []
    all_checks = {}
    rounds_used = []
    meter = OtherWork()
    other_by_case, other_sum, other_wall = {}, 0.0, 0.0
    t_start = time.perf_counter()
    say("")
    for i, case in enumerate(cases, 1):
        t0 = time.perf_counter()
        console.begin(f"[{i:>2}/{len(cases)}] {case.label:<22s}  ")
        x, y = make_data(case)
        cells = {}
        for lib in libs:
            try:
                cells.update(MAKERS[lib](case, x, y, T))
            except Skip:
                pass  # the report's tables show it as missing
            except Exception as e:
                say(f"    ! {lib}: setup failed: {type(e).__name__}: {str(e)[:200]}")
        cells.update(cells_floors(x, T, pool, y if case.loss == "bce" else None,
                                  exp_floor=case.group == "items"))
        checker = Checker(case, log=say)
        meter.start()
        timed, rounds = time_case(cells, budget, min_rounds, max_rounds, checker=checker,
                                  cooldown=args.cooldown / 1e3, log=say)
        rounds_used.append(rounds)
        other, wall = meter.stop()
        if other is not None:
            other_by_case[case.key] = other
            other_sum += other * wall
            other_wall += wall
        for k, v in checker.notes.items():
            all_checks[f"{case.label} {k[0]} {k[1]}"] = v
        results.append((case, timed))
        fwd, fb = med(timed, ("fastxent", "fwd")), med(timed, ("fastxent", "fwd+bwd"))
        vs_torch = ratio(med(timed, ("torch", "fwd+bwd")), fb)
        console.end(f"fastxent {fmt_ms(fwd)} / {fmt_ms(fb)} ms"
                    + (f", vs torch {fmt_x(vs_torch)}" if vs_torch else "")
                    + f", {rounds} rounds, {time.perf_counter() - t0:.1f} s")
        cores = timed.get(("fastxent", "fwd+bwd"), {}).get("cores")
        if T > 1 and cores is not None and case.nbytes >= 64 * 2**20 and cores < 0.75 * T:
            say(f"        ! fastxent ran on {cores:.1f} of {T} cores here: the machine is busy")
        if other is not None and other > 2 * OTHER_BUSY:
            say(f"        ! other processes used {other:.1f} of the {cpu['cpus_usable']} CPUs "
                "while this shape was timed")
        del cells, x, y
        gc.collect()
    pool.shutdown()

    # ---- memory -------------------------------------------------------------------------
    mem_rows, mem_short = [], []
    mem_libs = []
    if not args.no_memory:
        mkeys = split_keys(args.memory_shapes) if args.memory_shapes else (
            MEMORY_KEYS_QUICK if quick else MEMORY_KEYS)
        mcases = [CASE_BY_KEY[k] for k in mkeys if k in CASE_BY_KEY and CASE_BY_KEY[k] in cases]
        for lib in ["fastxent", "torch", "jax", "numpy", "sklearn"]:  # fastxent beside torch
            if lib not in libs:
                continue
            if lib == "fastxent":
                mem_libs += ["fastxent", "fastxent/out", "fastxent/inplace"]
            else:
                mem_libs.append(lib)
        if mcases:
            say("\nPeak memory of forward+backward: each library in a fresh subprocess")
        for i, case in enumerate(mcases, 1):
            t0 = time.perf_counter()
            console.begin(f"[{i:>2}/{len(mcases)}] {case.label:<22s}  ")
            row = [case.label, f"{case.nbytes / 2**20:.1f}"]
            short = [case.label, f"{case.nbytes / 2**20:.1f}"]
            x, y = make_data(case)
            for lib in mem_libs:
                if lib == "sklearn" and (case.loss == "ce" and len(case.shape) != 2):
                    row.append("—")
                    short.append("—")
                    continue
                extra, how = measure_memory_subprocess(case, lib, T)
                if extra is None:
                    row.append(f"failed ({how})")
                    short.append("failed")
                else:
                    row.append(f"{mib(extra)} ({extra / case.nbytes:.2f}x)")
                    short.append(f"{extra / case.nbytes:.2f}x")
            for lib in ("fastxent", "numpy"):
                if lib not in libs:
                    row.append("—")
                    continue
                c = MAKERS[lib](case, x, y, T)[(lib, "fwd+bwd")]
                c.fn()
                b = measure_memory_tracemalloc(c.fn)
                row.append(f"{mib(b)} ({b / case.nbytes:.2f}x)")
            del x, y
            gc.collect()
            console.end(f"done, {time.perf_counter() - t0:.1f} s")
            mem_rows.append(row)
            mem_short.append(short)
    mem_head = (["shape", "logits MiB"] + [f"{l} (RSS)" for l in mem_libs]
                + ["fastxent (tracemalloc)", "numpy (tracemalloc)"])

    # ---- report -------------------------------------------------------------------------
    (thead, trows), (rhead, rrows) = build_rows(results)
    say(f"\nForward+backward (loss and gradient): fastxent's time in ms ({STAT}); "
        "vs X: X's time / fastxent's\n"
        "fx/out: with a preallocated grad_out; / floor: fastxent's time / NumPy's x.copy()")
    say(text_table(*compact_rows(results, "fwd+bwd", libs), left=1))
    say(f"\nForward (the loss only), ms ({STAT}); / floor: fastxent's time / NumPy reading "
        "the logits once")
    say(text_table(*compact_rows(results, "fwd", libs), left=1))
    ihead, irows = items_rows(results)
    if irows:
        say(f"\nMany items, few classes: fastxent on each ISA variant ({STAT}; f+b into a "
            "preallocated grad_out),\nvs X: X's time / fastxent's; floor: the larger of "
            "exp-ing every logit and reading them once")
        say(text_table(ihead, irows, left=1))
    if mem_short:
        say("\nPeak extra memory of forward+backward, in sizes of the logits (1.00x: the "
            "returned gradient)\nfx/out: into a preallocated grad_out; in place: grad_out=logits")
        say(text_table(["shape", "MiB"] + [MEM_SHORT.get(l, l) for l in mem_libs], mem_short,
                       left=1))
    if all_checks:
        say("\nResults that differ from NumPy's: see the report")

    chart_rel = None
    if chart_path:
        os.makedirs(os.path.dirname(os.path.abspath(chart_path)), exist_ok=True)
        err = make_chart(results, chart_path, T, cpu)
        if err:
            notes.append(err)
            say(err)
        else:
            chart_rel = os.path.relpath(chart_path, os.path.dirname(os.path.abspath(
                out_path or chart_path)))
    threadpools = []
    try:
        from threadpoolctl import threadpool_info

        for d in threadpool_info():
            threadpools.append(f"{d.get('user_api')}/{d.get('internal_api')} "
                               f"{d.get('version') or ''} num_threads={d.get('num_threads')} "
                               f"({os.path.basename(d.get('filepath', ''))})")
    except Exception:
        pass
    load_end = os.getloadavg()
    other_mean = other_sum / other_wall if other_wall > 0 else None
    reasons = busy_reasons(load_start, cpu["cpus_usable"], T, results, other_mean)
    busy = "; ".join(reasons) + ": these times are inflated. Rerun on a quiet machine." if reasons else None
    rlo, rhi = (min(rounds_used), max(rounds_used)) if rounds_used else (0, 0)
    ctx = {
        "quick": quick,
        "record": args.record,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"{prog} " + " ".join(shlex.quote(a) for a in argv),
        "cpu": cpu,
        "threads": T,
        "xla_flags": xla_flags,
        "versions": versions(),
        "jax_impl": jax_impl,
        "budget": budget,
        "min_rounds": min_rounds,
        "max_rounds": max_rounds,
        "rounds_desc": f"{rlo}" if rlo == rhi else f"{rlo}–{rhi}",
        "fx_config": fx_config,
        "notes": notes,
        "times": (thead, trows),
        "ratios": (rhead, rrows),
        "bce_floor": bce_floor_rows(results),
        "items": (ihead, irows),
        "cores": cores_table(results),
        "memory": (mem_head, mem_rows),
        "chart": chart_rel,
        "checks": all_checks,
        "threadpools": threadpools,
        "load": (load_start, load_end),
        "busy": busy,
        "other_cpus": other_mean,
    }
    say("")
    if out_path:
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        write_markdown(out_path, ctx)
        say(f"report: {shown_path(out_path)}"
            + (" (the committed record)" if args.record else " (a scratch copy, not the record)"))
    if chart_rel:
        say(f"chart: {shown_path(chart_path)}")
    if json_path:
        dump = {"context": {k: v for k, v in ctx.items() if k not in ("times", "ratios",
                                                                     "cores", "memory")},
                "results": [{"case": c.key, "cells": {f"{k[0]}|{k[1]}": v
                                                      for k, v in t.items()}}
                            for c, t in results]}
        with open(json_path, "w") as f:
            json.dump(dump, f, indent=1, default=str)
    say(f"total {time.perf_counter() - t_start:.0f} s")
    if reasons:
        busy_banner(reasons, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
