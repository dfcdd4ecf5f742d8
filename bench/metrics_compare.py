"""fastxent.metrics against scikit-learn and torchmetrics, side by side in one run.

    PYTHONPATH=src python bench/metrics_compare.py [--repeat 5] [--quick] [--threads N] [--isa avx2]

For each shape (1,000,000 x 10 and 100,000 x 1000, float32 logits, int64 labels) and two
kinds of data, "random" (labels independent of the logits: the target is rarely the
argmax) and "80% right" (the target's logit raised so that about 80% of the argmaxes are
right, as from a trained model; the kernel's cheap path for top-1 differs between the
two), it times, interleaved round by round (best of --repeat):
  * fx.cross_entropy(x, y, axis=-1): the forward loss, the yardstick of issue 16
    ("evaluate costs at most 1.2x one cross_entropy forward");
  * fx.metrics.evaluate(x, y): every metric from one pass (and its kernel alone, the
    ns/item of _core.metrics_rows);
  * fx.metrics.log_loss(y, x);
  * scikit-learn: log_loss(y, softmax(x)) with SciPy's softmax (the probabilities are
    part of its path), and top_k_accuracy_score(y, x);
  * torchmetrics (CPU torch): MulticlassCalibrationError and Perplexity on tensors
    viewing the same memory (softmax inside, as they apply it to logits).
Prints a table and the ratios. The numbers depend on the machine and its load: compare
ratios from one run, never across runs.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def best_of(fns, repeat):
    """Each callable timed once per round, rounds interleaved; the best of each."""
    times = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: min(v) for k, v in times.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="a tenth of the rows, no torchmetrics")
    p.add_argument("--threads", type=int, default=None, help="n_threads for fastxent")
    p.add_argument("--isa", default=None, help="fastxent's kernel variant (_core.select_isa)")
    p.add_argument("--no-sklearn", action="store_true")
    p.add_argument("--no-torchmetrics", action="store_true")
    args = p.parse_args(argv)

    import fastxent as fx
    from fastxent import _core, metrics

    if args.isa:
        _core.select_isa(args.isa)
    rng = np.random.default_rng(0)
    shapes = [(1_000_000, 10), (100_000, 1000)]
    if args.quick:
        shapes = [(n // 10, c) for n, c in shapes]
    print(f"fastxent {fx.__version__}, ISA {fx.show_config()['isa']}, "
          f"threads {args.threads or fx.show_config()['max_threads']}; best of {args.repeat}")
    for (n, c), kind in [(s, k) for s in shapes for k in ("random", "80% right")]:
        x = (rng.standard_normal((n, c), dtype=np.float32) * 3).astype(np.float32)
        y = rng.integers(0, c, n)
        if kind == "80% right":
            right = rng.random(n) < 0.8
            x[np.flatnonzero(right), y[right]] = x[right].max(axis=1) + 1.0
        acc = metrics.MetricsAccumulator(n_threads=args.threads)
        acc.dtype = np.dtype(np.float32)
        lo, hi = acc._clip
        fns = {
            "fx.cross_entropy": lambda: fx.cross_entropy(x, y, axis=-1, n_threads=args.threads),
            "fx.metrics.evaluate": lambda: metrics.evaluate(x, y, n_threads=args.threads),
            "  its kernel": lambda: _core.metrics_rows(
                x, y, ignore_index=-100, class_weight=None, sample_weight=None, top_k=1,
                clip_lo=lo, clip_hi=hi, edges=acc._edges, n_threads=args.threads),
            "fx.metrics.log_loss": lambda: metrics.log_loss(y, x, n_threads=args.threads),
        }
        if not args.no_sklearn:
            from scipy.special import softmax
            from sklearn.metrics import log_loss, top_k_accuracy_score

            labels = np.arange(c)
            fns["sklearn log_loss(softmax)"] = lambda: log_loss(y, softmax(x, axis=1),
                                                                labels=labels)
            fns["sklearn top_k_accuracy"] = lambda: top_k_accuracy_score(y, x, k=1,
                                                                         labels=labels)
        if not (args.no_torchmetrics or args.quick):
            import torch
            from torchmetrics.classification import MulticlassCalibrationError
            from torchmetrics.text import Perplexity

            xt, yt = torch.from_numpy(x), torch.from_numpy(y)

            def tm_calibration():
                m = MulticlassCalibrationError(num_classes=c, n_bins=15, norm="l1")
                return m(xt, yt)

            def tm_perplexity():
                return Perplexity()(xt[None], yt[None])

            fns["torchmetrics calibration"] = tm_calibration
            fns["torchmetrics perplexity"] = tm_perplexity
        t = best_of(fns, args.repeat)
        ce = t["fx.cross_entropy"]
        print(f"\n{n:,} x {c} float32, {kind}")
        for k, v in t.items():
            extra = f"  {v / n * 1e9:8.1f} ns/item" if k in ("fx.cross_entropy", "  its kernel",
                                                           "fx.metrics.evaluate") else ""
            print(f"  {k:<28} {v * 1e3:9.2f} ms  {v / ce:6.2f}x cross_entropy{extra}")
        if "sklearn log_loss(softmax)" in t:
            print(f"  log_loss speed-up over scikit-learn: "
                  f"{t['sklearn log_loss(softmax)'] / t['fx.metrics.log_loss']:.1f}x")


if __name__ == "__main__":
    main()
