#!/usr/bin/env python
"""Half-precision logits (issue 14): float16 and bfloat16 beside float32, side by side.

For each shape (rows x classes, hard labels), in one run and interleaved round by round:

* fastxent ``cross_entropy`` forward (the loss only) and forward+backward (``return_grad``
  into a ``grad_out`` of the input's dtype the caller already owns), for the same values
  in float32, float16 and bfloat16 (the half arrays rounded from the float32 ones; the
  float32 run reads the float32 array);
* the read floors: the logits read once by NumPy, ``np.max`` over the array viewed as
  int16 (2-byte) or as float32 (4-byte), on one thread and split in T pieces over a
  thread pool (NumPy releases the GIL); the faster of the two is the floor;
* PyTorch's bfloat16 (and float16) ``F.cross_entropy``, forward and forward+backward
  (``torch.autograd.grad``), with ``torch.set_num_threads(T)``;
* the loss error of each against float64 on the same (widened) values.

Run from a checkout after an in-place build::

    PYTHONPATH=src python bench/half_compare.py [--shapes 1024x32768,4096x32768]
        [--threads T] [--rounds 7] [--isa avx2]

Times are medians over the rounds. The machine's load changes them: say so with the
numbers, and re-run on a quiet machine before quoting ratios.

``--record bench/HALF_RESULTS.md`` runs the default shapes once per ISA variant this CPU
runs (not the baseline where a wider one runs) and writes what it prints there, with the
commit and the machine.
"""
import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

import fastxent as fx

try:
    import ml_dtypes
except ImportError:  # pragma: no cover - the message is the point
    sys.exit("bench/half_compare.py needs ml_dtypes (pip install ml_dtypes)")


def reference_mean_loss(x, y, block=256):
    """The float64 mean cross-entropy of the values x holds, a block of rows at a time."""
    total = 0.0
    for r0 in range(0, x.shape[0], block):
        xb = x[r0:r0 + block].astype(np.float64)
        m = xb.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(xb - m).sum(axis=1))
        total += float((lse - xb[np.arange(len(xb)), y[r0:r0 + block]]).sum())
    return total / x.shape[0]


def read_floor(a, T, pool):
    """Callables reading `a` once with np.max: one thread, and T pieces over the pool."""
    flat = a.reshape(-1)
    parts = np.array_split(flat, T)

    def one():
        return np.max(flat)

    def split():
        return max(f.result() for f in [pool.submit(np.max, p) for p in parts])
    return {"read 1t": one, f"read {T}t": split}


def exp_floor(n, T, pool, chunk=1 << 15):
    """The compute floor: fastxent's own float32 vector exp (kernels/fx_vecmath.h) applied
    to n values held in cache (a 128 KiB block exp-ed over and over, no memory traffic),
    on one thread and split over T: a forward pass makes one exp per logit after
    widening it, so no half kernel can take less time than this, however few bytes it
    reads."""
    from fastxent import _core

    src = -np.abs(np.random.default_rng(1).standard_normal(chunk, dtype=np.float32)) * 3
    outs = [np.empty_like(src) for _ in range(T)]
    exp = _core.fx_vecmath_fn.FX_MATH_EXP_NONPOS

    def part(i, count):
        for _ in range(count // chunk):
            _core.vecmath(src, outs[i], exp)

    cells = {"exp in cache 1t": lambda: part(0, n)}
    if T > 1:
        cells[f"exp in cache {T}t"] = lambda: list(pool.map(part, range(T), [n // T] * T))
    return cells


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shapes", default="1024x32768,4096x32768")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--isa", default=None, help="fastxent's kernel variant (_core.select_isa)")
    ap.add_argument("--record", metavar="FILE", default=None,
                    help="run every ISA variant of this CPU and write the output to FILE")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    if args.record:
        return record(args, argv)
    T = args.threads
    if args.isa:
        from fastxent import _core
        _core.select_isa(args.isa)
    torch = None
    if not args.no_torch:
        try:
            import torch
            torch.set_num_threads(T)
        except ImportError:
            print("(torch not installed: its columns are skipped)")
    pool = ThreadPoolExecutor(T)
    bf16 = np.dtype(ml_dtypes.bfloat16)
    print(f"fastxent {fx.__version__}, ISA {fx.show_config()['isa']}, threads {T}, "
          f"torch {torch.__version__ if torch else '-'}; median of {args.rounds} rounds")
    for spec in args.shapes.split(","):
        N, C = (int(v) for v in spec.lower().split("x"))
        rng = np.random.default_rng(0)
        x32 = (rng.standard_normal((N, C), dtype=np.float32) * 3)
        y = rng.integers(0, C, N)
        arrays = {"float32": x32, "float16": x32.astype(np.float16), "bfloat16": x32.astype(bf16)}
        grads = {k: np.zeros_like(a) for k, a in arrays.items()}
        cells = {}
        for k, a in arrays.items():
            cells[(k, "fastxent fwd")] = (lambda a=a: fx.cross_entropy(a, y, n_threads=T))
            cells[(k, "fastxent fwd+bwd")] = (
                lambda a=a, g=grads[k]: fx.cross_entropy(a, y, return_grad=True, grad_out=g,
                                                         n_threads=T)[0])
        for name, fn in read_floor(arrays["bfloat16"].view(np.int16), T, pool).items():
            cells[("2-byte", name)] = fn
        for name, fn in read_floor(x32, T, pool).items():
            cells[("4-byte", name)] = fn
        for name, fn in exp_floor(N * C, T, pool).items():
            cells[("exp", name)] = fn
        if torch is not None:
            F = torch.nn.functional
            yt = torch.from_numpy(y)
            for k, tdt in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
                xt = torch.from_numpy(arrays[k].view(np.int16)).view(tdt)   # the same values
                xg = xt.clone().requires_grad_(True)
                cells[(k, "torch fwd")] = lambda xt=xt: F.cross_entropy(xt, yt)
                cells[(k, "torch fwd+bwd")] = (
                    lambda xg=xg: torch.autograd.grad(F.cross_entropy(xg, yt), xg)[0] is None)
        times = {key: [] for key in cells}
        results = {}
        for r in range(args.rounds + 1):              # round 0: warm-up, not timed
            for key, fn in cells.items():
                t0 = time.perf_counter()
                res = fn()
                dt = time.perf_counter() - t0
                if r:
                    times[key].append(dt)
                results[key] = res
        med = {key: float(np.median(v)) for key, v in times.items()}
        ref = {k: reference_mean_loss(a, y) for k, a in arrays.items()}

        def err(key):
            res = results[key]
            if hasattr(res, "detach"):
                res = float(res.detach().double())
            return abs(float(res) - ref[key[0]]) / abs(ref[key[0]])

        print(f"\n{N}x{C} (float32 {x32.nbytes / 2**20:.0f} MiB, half "
              f"{arrays['float16'].nbytes / 2**20:.0f} MiB)")
        print(f"  {'':10s} {'what':18s} {'ms':>9s} {'GB/s read':>10s} {'loss rel. err':>14s}")
        for key in cells:
            k, what = key
            nbytes = x32.nbytes if k in ("float32", "4-byte", "exp") else arrays["float16"].nbytes
            e = f"{err(key):14.2e}" if "fwd" in what and "+bwd" not in what else ""
            print(f"  {k:10s} {what:18s} {med[key] * 1e3:9.2f} {nbytes / med[key] / 1e9:10.1f} {e}")
        floor2 = min(med[("2-byte", n)] for n in ("read 1t", f"read {T}t"))
        floor4 = min(med[("4-byte", n)] for n in ("read 1t", f"read {T}t"))
        floor_exp = min(med[("exp", n)] for n in ("exp in cache 1t", f"exp in cache {T}t")
                        if ("exp", n) in med)
        print("  ratios:")
        print(f"    compute floor (exp in cache) / 2-byte read floor: {floor_exp / floor2:.2f}")
        for k in ("float16", "bfloat16"):
            f32 = med[("float32", "fastxent fwd")]
            print(f"    {k}: fwd {f32 / med[(k, 'fastxent fwd')]:.2f}x faster than float32; "
                  f"fwd+bwd {med[('float32', 'fastxent fwd+bwd')] / med[(k, 'fastxent fwd+bwd')]:.2f}x; "
                  f"fwd / 2-byte read floor {med[(k, 'fastxent fwd')] / floor2:.2f}; "
                  f"fwd / compute floor {med[(k, 'fastxent fwd')] / floor_exp:.2f}")
            if torch is not None:
                print(f"      torch {k}: fwd+bwd {med[(k, 'torch fwd+bwd')] / med[(k, 'fastxent fwd+bwd')]:.1f}x "
                      f"fastxent's time, fwd {med[(k, 'torch fwd')] / med[(k, 'fastxent fwd')]:.1f}x")
        print(f"    float32: fwd / 4-byte read floor {med[('float32', 'fastxent fwd')] / floor4:.2f}")
    return 0


def record(args, argv):
    """Run main once per ISA variant (fastxent._bench.item_isas) in this process, its
    output captured, and write it to args.record as markdown."""
    import contextlib
    import io
    import platform
    import subprocess

    from fastxent._bench import item_isas

    rest = [a for a in argv if a != "--record" and a != args.record]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = subprocess.run(["git", "-C", root, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip() or "?"
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo")
                if ln.startswith("model name")), platform.processor()) \
        if os.path.exists("/proc/cpuinfo") else platform.processor()
    parts = [f"# Half-precision logits: float16 and bfloat16 beside float32\n\n"
             f"`python bench/half_compare.py {' '.join(argv)}` on commit {commit}, "
             f"{cpu}, {os.cpu_count()} cores, threads {args.threads}. Medians of "
             f"{args.rounds} interleaved rounds; each ISA variant of fastxent's kernels in turn "
             f"(PyTorch's times are its own, the same in each). See the docstring of "
             f"bench/half_compare.py for what each line measures.\n"]
    for isa in item_isas():
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            main(rest + ["--isa", isa])
        parts.append(f"\n## {isa}\n\n```\n{buf.getvalue().rstrip()}\n```\n")
        print(buf.getvalue())
    with open(args.record, "w") as f:
        f.write("".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
