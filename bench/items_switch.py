"""Where rows of few classes should switch from the item-lane kernels to the row path.

Times both paths of the current build side by side (``_core._set_items_max_c``: 0 forces
the row path, ``_core.ITEMS_MAX_C`` the items path) on rows of C classes, 1 thread, in-cache (4096 rows by
default), min of many calls. Prints ns per row for each path and rows/items (> 1: the
items path is faster). The switch points in ``kernels/fx_softmax_items.h``
(FX_ITEMS_SWITCH_LOSS, FX_ITEMS_SWITCH_BLOCKS) are the largest C where the items path was
not slower at both columns, per ISA and precision.

    python bench/items_switch.py avx2 16,24,32,48            # cross_entropy: fwd, fwd+bwd
    python bench/items_switch.py avx512 8,16,24 --dtype float64 --what blocks
                                                            # logsumexp, softmax(out=)
Run from a checkout built in place (``python setup.py build_ext --inplace``).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
import fastxent as fx  # noqa: E402


def tmin(f, reps):
    f()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("isa")
    ap.add_argument("classes", help="comma-separated class counts")
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    ap.add_argument("--what", default="ce", choices=["ce", "blocks"])
    ap.add_argument("--reps", type=int, default=200)
    a = ap.parse_args(argv)
    fx._core.select_isa(a.isa)
    rng = np.random.default_rng(0)
    cols = ("fwd", "fwd+bwd") if a.what == "ce" else ("logsumexp", "softmax")
    print(f"{a.isa} {a.dtype} ns per row, row path -> items path (rows/items): {cols[0]}, {cols[1]}")
    for C in (int(c) for c in a.classes.split(",")):
        n = a.rows
        x = rng.standard_normal((n, C)).astype(a.dtype)
        y = rng.integers(0, C, n)
        g = np.empty_like(x)
        r = {}
        for mode, switch in (("rows", 0), ("items", fx._core.ITEMS_MAX_C)):
            prev = fx._core._set_items_max_c(switch)
            try:
                if a.what == "ce":
                    r[mode] = (tmin(lambda: fx.cross_entropy(x, y, n_threads=1), a.reps),
                               tmin(lambda: fx.cross_entropy(x, y, n_threads=1, return_grad=True,
                                                             grad_out=g), a.reps))
                else:
                    r[mode] = (tmin(lambda: fx.logsumexp(x, n_threads=1), a.reps),
                               tmin(lambda: fx.softmax(x, out=g, n_threads=1), a.reps))
            finally:
                fx._core._set_items_max_c(prev)
        o, i = r["rows"], r["items"]
        print(f"C={C:4d}  {o[0] / n * 1e9:6.1f} -> {i[0] / n * 1e9:6.1f} ({o[0] / i[0]:4.2f})"
              f"   {o[1] / n * 1e9:6.1f} -> {i[1] / n * 1e9:6.1f} ({o[1] / i[1]:4.2f})")


if __name__ == "__main__":
    main()
