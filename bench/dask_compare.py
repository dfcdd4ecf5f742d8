"""fastxent.dask.cross_entropy against the same loss written with Dask's own array
operations (max, exp, sum, log, and vindex to take the target logits), on a
distributed.LocalCluster of 1 and 2 worker processes, for logits larger than one
worker's memory limit. Reports the wall time of each ``compute()`` and each worker's
peak resident memory (sampled every 20 ms in the worker process) during it.

The logits are generated inside the graph, block by block from a fixed seed (uniform in
[-8, 8)), so that no process ever holds the whole array and both formulations see the
same numbers; the generation is part of both times. Workers run one thread each and
OMP_NUM_THREADS=1 (fastxent's kernels would otherwise start OpenMP threads beside
Dask's), so the two formulations get the same CPU.

    python bench/dask_compare.py                       # 2 GiB of float32 logits, 1 GiB/worker
    python bench/dask_compare.py --rows 8192 --classes 16384 --memory-limit 512MiB

The machines these run on are shared: say so with the numbers, and rerun on a quiet one.
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time

import numpy as np


def _logits_block(block_info=None, *, seed, dtype):
    info = block_info[None]
    rng = np.random.default_rng([seed, *info["chunk-location"]])
    shape = info["chunk-shape"]
    out = rng.random(shape, dtype=np.float32 if dtype == np.float32 else np.float64)
    out *= 16
    out -= 8
    return out


def logits(rows, classes, row_chunk, class_chunk, dtype, seed=0):
    """A lazy (rows, classes) array of logits, each block generated where it is used."""
    import dask.array as da
    from functools import partial
    chunks = da.core.normalize_chunks((row_chunk, class_chunk), (rows, classes))
    return da.map_blocks(partial(_logits_block, seed=seed, dtype=np.dtype(dtype).type),
                         chunks=chunks, dtype=dtype, meta=np.empty((0, 0), dtype))


def plain_dask_cross_entropy(x, target):
    """The mean cross-entropy with Dask's own operations: lse = m + log sum exp(x - m),
    the target logit taken by vindex, the exp's sum accumulated in float64."""
    import dask.array as da
    m = x.max(axis=1)
    s = da.exp(x - m[:, None]).sum(axis=1, dtype=np.float64)
    lse = m.astype(np.float64) + da.log(s)
    xt = x.vindex[np.arange(x.shape[0]), target].astype(np.float64)
    return (lse - xt).mean()


def plain_dask_cross_entropy_grad_sum(x, target):
    """The same loss and its gradient, softmax(x) - onehot(target), over N, with Dask's
    own operations; returns loss + sum of |grad| (one number, so that the client receives
    no array)."""
    import dask.array as da
    m = x.max(axis=1)
    s = da.exp(x - m[:, None]).sum(axis=1, dtype=np.float64)
    lse = m.astype(np.float64) + da.log(s)
    xt = x.vindex[np.arange(x.shape[0]), target].astype(np.float64)
    loss = (lse - xt).mean()
    classes = da.arange(x.shape[1], chunks=(x.chunks[1],))
    onehot = classes[None, :] == da.from_array(target, chunks=(x.chunks[0],))[:, None]
    grad = (da.exp(x - lse[:, None].astype(x.dtype)) - onehot) / x.shape[0]
    return loss + abs(grad).sum(dtype=np.float64)


def fastxent_cross_entropy_grad_sum(x, target):
    import fastxent.dask as fxd
    loss, grad = fxd.cross_entropy(x, target, return_grad=True)
    return loss + abs(grad).sum(dtype=np.float64)


# ---- per-worker peak RSS (runs inside the worker processes through client.run)

def _start_sampler(dask_worker):
    import psutil
    proc = psutil.Process()
    st = {"run": True}
    st["peak"] = st["base"] = proc.memory_info().rss

    def loop():
        while st["run"]:
            st["peak"] = max(st["peak"], proc.memory_info().rss)
            time.sleep(0.02)
    st["thread"] = threading.Thread(target=loop, daemon=True)
    st["thread"].start()
    dask_worker._fastxent_rss = st
    return st["base"]


def _stop_sampler(dask_worker):
    st = dask_worker._fastxent_rss
    st["run"] = False
    st["thread"].join()
    return st["base"], st["peak"]


def _spilled(dask_worker):
    """Bytes this worker has written to its spill directory so far (cumulative)."""
    metrics = getattr(dask_worker.data, "cumulative_metrics", None)
    if metrics is None:
        return -1
    return int(sum(v for (label, unit), v in metrics.items()
                   if label == "disk-write" and unit == "bytes"))


def run_one(client, build, repeat):
    times, peaks, bases, value = [], [], [], None
    for _ in range(repeat):
        lazy = build()
        spill0 = client.run(_spilled)
        client.run(_start_sampler)
        t0 = time.perf_counter()
        value = float(lazy.compute())
        times.append(time.perf_counter() - t0)
        res = client.run(_stop_sampler)
        spill1 = client.run(_spilled)
        bases.append(max(b for b, _ in res.values()))
        peaks.append(max(p for _, p in res.values()))
        spilled = sum(spill1[k] - spill0[k] for k in spill1)
    return value, min(times), max(peaks), max(bases), spilled


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=16384)
    ap.add_argument("--classes", type=int, default=32768)
    ap.add_argument("--row-chunk", type=int, default=2048)
    ap.add_argument("--class-chunk", type=int, default=8192)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--memory-limit", default="1GiB", help="per worker (LocalCluster memory_limit)")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--grad", action="store_true",
                    help="the loss and its gradient (reduced to loss + sum |grad| on the "
                         "workers) instead of the loss alone")
    args = ap.parse_args(argv)

    os.environ["OMP_NUM_THREADS"] = "1"         # inherited by the worker processes
    import dask
    from dask.utils import format_bytes, parse_bytes
    from distributed import Client, LocalCluster
    import fastxent
    import fastxent.dask as fxd

    dt = np.dtype(args.dtype)
    nbytes = args.rows * args.classes * dt.itemsize
    target = np.random.default_rng(1).integers(0, args.classes, args.rows)
    print(("loss and gradient (loss + sum |grad|); " if args.grad else "loss; ")
          + f"logits {args.rows} x {args.classes} {dt} = {format_bytes(nbytes)} in chunks of "
          f"{args.row_chunk} x {args.class_chunk} "
          f"({format_bytes(args.row_chunk * args.class_chunk * dt.itemsize)}); memory limit "
          f"{args.memory_limit} per worker (the logits are {nbytes / parse_bytes(args.memory_limit):.1f}x "
          f"it); fastxent {fastxent.__version__}, dask {dask.__version__}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")

    def fx_build():
        x = logits(args.rows, args.classes, args.row_chunk, args.class_chunk, dt)
        if args.grad:
            return fastxent_cross_entropy_grad_sum(x, target)
        return fxd.cross_entropy(x, target)

    def plain_build():
        x = logits(args.rows, args.classes, args.row_chunk, args.class_chunk, dt)
        if args.grad:
            return plain_dask_cross_entropy_grad_sum(x, target)
        return plain_dask_cross_entropy(x, target)

    rows = []
    for n in args.workers:
        with LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                          memory_limit=args.memory_limit, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.run(lambda: __import__("fastxent.dask"))      # import time not timed
            for name, build in (("fastxent.dask", fx_build), ("plain dask", plain_build)):
                try:
                    value, t, peak, base, spilled = run_one(client, build, args.repeat)
                except Exception as e:          # e.g. a worker killed for memory
                    print(f"{n} worker(s)  {name:14s} failed: {type(e).__name__}: {e}")
                    rows.append((n, name, None, None, None, None, None))
                    continue
                rows.append((n, name, value, t, peak, base, spilled))
                print(f"{n} worker(s)  {name:14s} {t:8.2f} s   peak RSS/worker "
                      f"{format_bytes(peak):>10s} (idle {format_bytes(base)})   spilled "
                      f"{format_bytes(spilled) if spilled >= 0 else '?'}   loss {value:.12g}")
    print()
    print("| workers | | time (s) | peak RSS per worker | spilled to disk | loss |")
    print("|---|---|---|---|---|---|")
    for n, name, value, t, peak, base, spilled in rows:
        if value is None:
            print(f"| {n} | {name} | failed | | | |")
        else:
            print(f"| {n} | {name} | {t:.2f} | {format_bytes(peak)} | "
                  f"{format_bytes(spilled) if spilled >= 0 else '?'} | {value:.10g} |")
    for n in args.workers:
        got = {name: r for (k, name, *r) in rows if k == n}
        a, b = got.get("fastxent.dask"), got.get("plain dask")
        if a and b and a[0] is not None and b[0] is not None:
            print(f"{n} worker(s): plain dask / fastxent.dask: time {b[1] / a[1]:.1f}x, peak "
                  f"memory {b[2] / a[2]:.1f}x; |loss difference| {abs(a[0] - b[0]):.2e}")


if __name__ == "__main__":
    main()
