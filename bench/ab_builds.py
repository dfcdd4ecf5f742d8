"""A/B timing of two builds of fastxent in one process, calls interleaved.

Runs on a shared, noisy machine cannot be compared with each other; two builds timed
side by side in one process can. This builds git revision REV (default: HEAD~1) in a
temporary worktree, imports it as ``fastxent_ab_old`` next to the current source tree's
build (``src/``, built in place first: ``python setup.py build_ext --inplace``), and times
the same calls on both, alternating, at 2 threads.

    python bench/ab_builds.py e552410
    python bench/ab_builds.py HEAD~3 --threads 1 --cases bce col
    python bench/ab_builds.py HEAD~1 --isa avx2 --cases ce opts blocks elem

--isa selects the kernel variant on both builds (default: the widest this CPU runs).

Prints old and new medians (ms), old/new of the medians and of the fastest samples
(> 1: the current tree is faster), and whether both give the same loss and gradient
bits. Per case: the forward pass alone (fwd), forward+backward returning a new gradient
(fresh) and into a preallocated one (out).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def build_old(rev, tmp):
    wt = os.path.join(tmp, "wt")
    subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-f", wt, rev],
                   check=True, capture_output=True)
    try:
        subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace", "-q"], cwd=wt,
                       check=True, capture_output=True)
        pkg = os.path.join(tmp, "pkg")
        shutil.copytree(os.path.join(wt, "src", "fastxent"), os.path.join(pkg, "fastxent_ab_old"))
    finally:
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", wt],
                       capture_output=True)
    return pkg


def cases(which, rng):
    out = []
    if "ce" in which:
        for shape in [(64, 1000), (256, 1000), (4096, 1000), (1024, 32768)]:
            x = rng.standard_normal(shape, dtype=np.float32)
            y = rng.integers(0, shape[1], shape[0])
            out.append((f"CE {shape[0]}x{shape[1]}", lambda fx, x=x, y=y, **kw:
                        fx.cross_entropy(x, y, **kw), x))
    if "ce64" in which:
        for shape in [(256, 1000), (4096, 1000)]:
            x = rng.standard_normal(shape)
            y = rng.integers(0, shape[1], shape[0])
            out.append((f"CE {shape[0]}x{shape[1]} float64", lambda fx, x=x, y=y, **kw:
                        fx.cross_entropy(x, y, **kw), x))
    if "bce" in which:
        for shape in [(64, 1000), (4096, 1000), (1024, 32768)]:
            x = rng.standard_normal(shape, dtype=np.float32)
            t = rng.random(shape) < 0.5
            out.append((f"BCE {shape[0]}x{shape[1]} bool", lambda fx, x=x, t=t, **kw:
                        fx.binary_cross_entropy_with_logits(x, t, **kw), x))
    if "opts" in which:         # the softmax variants with per-class terms, and nll_loss
        x = rng.standard_normal((4096, 1000), dtype=np.float32)
        y = rng.integers(0, 1000, 4096)
        w = (rng.random(1000) + 0.5).astype(np.float32)
        p = rng.dirichlet(np.ones(1000), 4096).astype(np.float32)
        out.append(("CE 4096x1000 smooth+w", lambda fx, x=x, y=y, w=w, **kw:
                    fx.cross_entropy(x, y, w, label_smoothing=0.1, **kw), x))
        out.append(("CE 4096x1000 soft", lambda fx, x=x, p=p, **kw:
                    fx.cross_entropy(x, p, **kw), x))
        out.append(("NLL 4096x1000", lambda fx, x=x, y=y, **kw:
                    fx.nll_loss(x, y, **kw), x))
        xc = rng.standard_normal((8, 21, 64, 64), dtype=np.float32)
        yc = rng.integers(0, 21, (8, 64, 64))
        out.append(("CE 8x21x64x64 axis=1 smooth", lambda fx, x=xc, y=yc, **kw:
                    fx.cross_entropy(x, y, label_smoothing=0.1, **kw), xc))
    if "elem" in which:         # the other elementwise losses
        x = rng.standard_normal((4096, 1000), dtype=np.float32)
        pr = rng.random((4096, 1000), dtype=np.float32)
        t = rng.random((4096, 1000), dtype=np.float32)
        lq = np.log(rng.dirichlet(np.ones(1000), 4096)).astype(np.float32)
        out.append(("BCE 4096x1000 float pos_weight", lambda fx, x=x, t=t, **kw:
                    fx.binary_cross_entropy_with_logits(x, t, pos_weight=np.float32(2), **kw), x))
        out.append(("BCE probs 4096x1000", lambda fx, x=pr, t=t, **kw:
                    fx.binary_cross_entropy(x, t, **kw), pr))
        out.append(("KL 4096x1000", lambda fx, x=lq, t=t, **kw:
                    fx.kl_div(x, t, **kw), lq))
    if "items" in which:        # many items, few classes (the items kernels)
        for shape in [(600000, 2), (200000, 10), (100000, 37), (40000, 100)]:
            x = rng.standard_normal(shape, dtype=np.float32)
            y = rng.integers(0, shape[1], shape[0])
            out.append((f"CE {shape[0]}x{shape[1]}", lambda fx, x=x, y=y, **kw:
                        fx.cross_entropy(x, y, **kw), x))
        for shape in [(16, 2, 128, 128), (8, 2, 512, 512), (12, 3, 160, 160)]:
            x = rng.standard_normal(shape, dtype=np.float32)
            y = rng.integers(0, shape[1], shape[:1] + shape[2:])
            out.append((f"CE {'x'.join(map(str, shape))} axis=1", lambda fx, x=x, y=y, **kw:
                        fx.cross_entropy(x, y, axis=1, **kw), x))
    if "half" in which:         # 2-byte logits (needs ml_dtypes)
        import ml_dtypes
        for dt in (np.float16, ml_dtypes.bfloat16):
            x = rng.standard_normal((1024, 32768), dtype=np.float32).astype(dt)
            y = rng.integers(0, 32768, 1024)
            out.append((f"CE 1024x32768 {np.dtype(dt).name}", lambda fx, x=x, y=y, **kw:
                        fx.cross_entropy(x, y, **kw), x))
    if "mem" in which:          # rows streamed from memory (beyond L3)
        for shape in [(10000, 1000), (40000, 1000), (8192, 8192)]:
            x = rng.standard_normal(shape, dtype=np.float32)
            y = rng.integers(0, shape[1], shape[0])
            out.append((f"CE {shape[0]}x{shape[1]}", lambda fx, x=x, y=y, **kw:
                        fx.cross_entropy(x, y, **kw), x))
    if "col" in which:
        x = rng.standard_normal((8, 21, 256, 256), dtype=np.float32)
        y = rng.integers(0, 21, (8, 256, 256))
        out.append(("CE 8x21x256x256 axis=1", lambda fx, x=x, y=y, **kw:
                    fx.cross_entropy(x, y, axis=1, **kw), x))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rev", nargs="?", default="HEAD~1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--cases", nargs="+", default=["ce", "bce", "col"],
                    help="ce, ce64 (float64), opts (smoothing, weights, soft targets, "
                         "nll_loss), bce, elem (BCE on probabilities, KL), col (class "
                         "axis 1), items (many items, 2 to 100 classes), mem (rows streamed from memory), half (float16 "
                         "and bfloat16 logits), blocks (logsumexp, softmax, sigmoid: "
                         "forward only)")
    ap.add_argument("--isa", default="best", help="kernel variant on both builds")
    ap.add_argument("--old-pkg", metavar="DIR",
                    help="a folder holding fastxent_ab_old already built from REV (as "
                         "same_bits.py --keep-old leaves it): skip the build")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sys.path.insert(0, os.path.abspath(args.old_pkg) if args.old_pkg
                        else build_old(args.rev, tmp))
        sys.path.insert(0, os.path.join(ROOT, "src"))
        import fastxent as new
        import fastxent_ab_old as old
        for fx in (old, new):
            fx._core.select_isa(args.isa)
        print(f"old: {args.rev}; new: {ROOT}/src; ISA {new._core.current_isa()}; "
              f"{args.threads} threads; median of {args.rounds} interleaved rounds")
        if "blocks" in args.cases:
            blocks(old, new, args, np.random.default_rng(0))
        for name, call, x in cases(args.cases, np.random.default_rng(0)):
            g = np.empty_like(x)
            variants = {}
            for tag, fx in (("old", old), ("new", new)):
                variants[(tag, "fwd")] = lambda fx=fx: call(fx, n_threads=args.threads)
                variants[(tag, "fresh")] = lambda fx=fx: call(fx, n_threads=args.threads,
                                                              return_grad=True)
                variants[(tag, "out")] = lambda fx=fx: call(fx, n_threads=args.threads,
                                                            return_grad=True, grad_out=g)
            reps = max(1, int(3e6 // x.size))       # a sample lasts a few ms at least
            times = time_interleaved(variants, args.rounds, reps)
            lo, go = call(old, return_grad=True)
            ln, gn = call(new, return_grad=True)
            same = bool(lo == ln and np.array_equal(go, gn))
            for how in ("fwd", "fresh", "out"):
                o = np.median(times[("old", how)]) * 1e3
                n = np.median(times[("new", how)]) * 1e3
                best = min(times[("old", how)]) / min(times[("new", how)])
                print(f"{name:24s} {how:5s} old {o:9.3f} ms  new {n:9.3f} ms  old/new {o / n:5.2f}"
                      f"  (fastest {best:5.2f})" + ("" if how != "fresh" else f"  same bits: {same}"))


def time_interleaved(calls, rounds, reps):
    """{key: [seconds per call, one sample per round]}: every call warmed up, then each
    round times each call in turn (reps calls per sample)."""
    times = {k: [] for k in calls}
    for f in calls.values():
        f()
    for _ in range(rounds):
        for k, f in calls.items():
            t0 = time.perf_counter()
            for _ in range(reps):
                f()
            times[k].append((time.perf_counter() - t0) / reps)
    return times


def blocks(old, new, args, rng):
    """The building blocks, which have no gradient: one line each."""
    x = rng.standard_normal((4096, 1000), dtype=np.float32)
    for name in ("logsumexp", "softmax", "log_softmax", "entropy", "sigmoid"):
        calls = {tag: (lambda fx=fx: getattr(fx, name)(x, n_threads=args.threads))
                 for tag, fx in (("old", old), ("new", new))}
        times = time_interleaved(calls, args.rounds, 3)
        same = np.array_equal(calls["old"](), calls["new"](), equal_nan=True)
        o, n = np.median(times["old"]) * 1e3, np.median(times["new"]) * 1e3
        best = min(times["old"]) / min(times["new"])
        print(f"{name + ' 4096x1000':24s} fwd   old {o:9.3f} ms  new {n:9.3f} ms  old/new "
              f"{o / n:5.2f}  (fastest {best:5.2f})  same bits: {same}")


if __name__ == "__main__":
    main()
