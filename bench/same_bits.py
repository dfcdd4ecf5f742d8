"""Same bits before and after: every public function of two builds of fastxent compared.

A refactor of the kernel layer must not change one bit of any result. This builds git
revision REV in a temporary worktree (``build_old`` of ab_builds.py: imported as
``fastxent_ab_old``), imports it next to the current source tree's build (``src/``,
built in place first: ``python setup.py build_ext --inplace``) and, for every ISA
variant both builds can run (``_core.select_isa`` on both), calls both on a fixed-seed
grid of inputs and options and compares every output bit for bit (``.tobytes()`` of
arrays of the same dtype and shape): losses (scalars and per-item "none" arrays),
gradients (new, into ``grad_out``, in place), ``out=`` arrays, the inputs after the
call, which buffer was returned, and the exception of a call that raises.

    python bench/same_bits.py HEAD~1
    python bench/same_bits.py e552410 --isa avx2 baseline -v
    python bench/same_bits.py HEAD --quick              # no benchmark shapes, fewer options
    python bench/same_bits.py HEAD --keep-old /tmp/old  # reuse the old build next time

Prints per ISA the number of calls compared and every mismatch (function, case, output,
first differing index, old and new values); a difference of NaN bits only (sign or
payload of a NaN that is NaN in both) is counted apart from value differences, but
both are failures. Exit status 1 on any mismatch, 0 otherwise. Old and new are each
called on their own fresh copies of the inputs.
"""
import argparse
import itertools
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab_builds import ROOT, build_old  # noqa: E402

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
DTYPES = (F32, F64)
LABEL_DTYPES = tuple(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64,
                                          np.uint8, np.uint16, np.uint32, np.uint64))
VALUE_KINDS = ("normal", "x30", "x1e4", "masked", "special", "neginf_rows")
GRADS = ("none", "fresh", "out", "inplace")
REDS = ("none", "mean", "sum")
SMOOTHING = (0.0, 0.1, 1.0)
SENTINEL = -7.25

SERIAL_BELOW = 65536          # _core.pyx: smaller calls run on one thread whatever n_threads
INPUT = object()              # keyword value: the call's own copy of the first argument


class View:
    """An argument passed as a view of a fresh copy of `base` (a layout, offset or byte
    order that a plain copy would lose). The base is compared after the call too."""

    def __init__(self, base, make, tag):
        self.base, self.make, self.tag = base, make, tag

    def __repr__(self):
        return self.tag


class Case:
    __slots__ = ("func", "desc", "args", "kwargs")

    def __init__(self, func, desc, args, kwargs):
        self.func, self.desc, self.args, self.kwargs = func, desc, args, kwargs


# ----------------------------------------------------------------------------- inputs

def rng_for(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def specials(dt):
    big, tiny, small = (3e38, 1e-42, 1e-30) if dt == F32 else (1e308, 5e-324, 1e-300)
    return np.array([np.inf, -np.inf, np.nan, big, -big, tiny, -tiny, small, 0.0, -0.0])


def logits(rng, shape, dt, kind, axis=-1):
    """Values of `kind` with the special entries placed per item along `axis`."""
    if not shape:
        return np.asarray(rng.standard_normal() * (30 if kind == "x30" else 1), dtype=dt)
    ax = axis % len(shape)
    C = shape[ax]
    moved = shape[:ax] + shape[ax + 1:] + (C,)
    x = rng.standard_normal(moved)
    rows = x.reshape(-1, C)
    if kind == "x30":
        rows *= 30
    elif kind == "x1e4":
        rows *= 1e4
    elif kind == "masked":
        rows[rng.random(rows.shape) < 0.3] = -np.inf
    elif kind == "special":
        sv = specials(dt)
        for r in range(rows.shape[0]):
            if rng.random() < 0.5:
                k = int(rng.integers(1, 3))
                rows[r, rng.integers(0, C, k)] = rng.choice(sv, k)
    elif kind == "neginf_rows":
        rows[rng.random(rows.shape) < 0.2] = -np.inf
        rows[rng.random(rows.shape[0]) < 0.3] = -np.inf
        rows[0] = -np.inf
    elif kind != "normal":
        raise ValueError(kind)
    return np.ascontiguousarray(np.moveaxis(x, -1, ax)).astype(dt)


def log_softmax_np(x, ax):
    with np.errstate(all="ignore"):
        x64 = x.astype(np.float64)
        m = np.max(x64, axis=ax, keepdims=True)
        m = np.where(np.isfinite(m), m, 0.0)
        return (x64 - m - np.log(np.sum(np.exp(x64 - m), axis=ax, keepdims=True))).astype(x.dtype)


def probabilities(rng, shape, dt, ax, zeros=0.2):
    p = np.exp(rng.standard_normal(shape) * 2)
    p[rng.random(shape) < zeros] = 0.0
    s = p.sum(axis=ax, keepdims=True)
    return (p / np.where(s > 0, s, 1.0)).astype(dt)


def hard_labels(rng, item_shape, C, ldt):
    """Labels of dtype ldt (values it can hold) with ~10% set to an ignore_index; returns
    (labels, ignore_index or None for the default -100)."""
    info = np.iinfo(ldt)
    y = rng.integers(0, min(C, int(info.max) + 1), item_shape)
    if info.min < 0:
        ign = None                              # the default -100
    elif ldt == np.uint64:
        ign = 2**40
    elif info.max >= C:
        ign = int(info.max)
    else:
        ign = 3 % C                             # a valid class index, ignored
    mask = rng.random(item_shape) < 0.1
    y = np.where(mask, -100 if ign is None else ign, y)
    return np.asarray(y).astype(ldt), ign


def options(rng, level, axes, n=8):
    """Combinations of the option axes: 'full' the product; 'strat' every value pair of
    the first two axes with the others drawn at random; 'light' n of those, every value
    of the second axis (the gradient mode) among them."""
    names = list(axes)
    if level == "full":
        combos = list(itertools.product(*axes.values()))
    else:
        combos = [(a, b) + tuple(v[int(rng.integers(len(v)))] for v in list(axes.values())[2:])
                  for a in axes[names[0]] for b in axes[names[1]]]
        if level == "light":
            order = [int(i) for i in rng.permutation(len(combos))]
            pick = [next(i for i in order if combos[i][1] == b) for b in axes[names[1]]]
            pick += [i for i in order if i not in pick][:max(0, n - len(pick))]
            combos = [combos[i] for i in sorted(pick)]
    return [dict(zip(names, c)) for c in combos]


def thread_list(rng, size, threads):
    """The n_threads values of a call: `threads` where given; 1 and 2 for a call big
    enough to run threaded; else one of 1, 2, None drawn per call."""
    if threads is not None:
        return threads
    if size >= SERIAL_BELOW:
        return (1, 2)
    return ((1, 2, None)[int(rng.integers(3))],)


def grad_kwargs(mode, shape, dt, offset=0):
    if mode == "none":
        return {}
    if mode == "fresh":
        return {"return_grad": True}
    if mode == "inplace":
        return {"return_grad": True, "grad_out": INPUT}
    if offset:
        n = math.prod(shape)
        store = np.full(n + offset, SENTINEL, dt)
        return {"return_grad": True, "grad_out": View(
            store, lambda b, s=shape, o=offset: b[o:].reshape(s), f"grad_out+{offset}")}
    return {"return_grad": True, "grad_out": np.full(shape, SENTINEL, dt)}


def name(dt):
    return "f32" if dt == F32 else "f64"


# ------------------------------------------------------------------ softmax family

CE_AXES = {"target": tuple(d.name for d in LABEL_DTYPES) + ("soft",), "grad": GRADS,
           "red": REDS, "ls": SMOOTHING, "w": (False, True)}
NLL_AXES = {"target": tuple(d.name for d in LABEL_DTYPES), "grad": GRADS, "red": REDS,
            "w": (False, True)}


def softmax_loss_cases(fname, shape, axis, level, kinds=VALUE_KINDS, dtypes=DTYPES,
                       threads=None, n_light=8, grad_offset=0, grads=None, targets=None):
    rng = rng_for(f"{fname} {shape} {axis} {level}")
    ax = axis % len(shape)
    C = shape[ax]
    item_shape = shape[:ax] + shape[ax + 1:]
    axes = dict(CE_AXES if fname == "cross_entropy" else NLL_AXES)
    if grads is not None:
        axes["grad"] = grads
    if targets is not None:
        axes["target"] = targets
    for dt in dtypes:
        w = rng.uniform(0.25, 2.0, C).astype(dt)
        for kind in kinds:
            x = logits(rng, shape, dt, kind, ax)
            if fname == "nll_loss":
                x = log_softmax_np(x, ax)
            targets = {}
            for opt in options(rng, level, axes, n_light):
                t = opt["target"]
                if t not in targets:
                    targets[t] = ((probabilities(rng, shape, dt if rng.random() < 0.7 else F64, ax),
                                   None) if t == "soft" else hard_labels(rng, item_shape, C, np.dtype(t)))
                y, ign = targets[t]
                kw = {} if axis == 1 else {"axis": axis}
                if ign is not None:
                    kw["ignore_index"] = ign
                if opt["w"]:
                    kw["weight"] = w
                kw["reduction"] = opt["red"]
                if opt.get("ls"):
                    kw["label_smoothing"] = opt["ls"]
                kw.update(grad_kwargs(opt["grad"], shape, dt, grad_offset))
                for nt in thread_list(rng, x.size, threads):
                    k2 = dict(kw)
                    if nt is not None:
                        k2["n_threads"] = nt
                    desc = [f"{name(dt)} {shape} axis={axis} {kind} target={t}"]
                    if ign is not None:
                        desc.append(f"ignore_index={ign}")
                    desc.append(f"w={int(opt['w'])} red={opt['red']}")
                    if "ls" in opt:
                        desc.append(f"ls={opt['ls']}")
                    off = f"+{grad_offset}" if grad_offset and opt["grad"] == "out" else ""
                    desc.append(f"grad={opt['grad']}{off} nt={nt}")
                    desc = " ".join(desc)
                    yield Case(fname, desc, [x, y], k2)


# ------------------------------------------------------------------ building blocks

def block_cases(fname, shape, axis, kinds=VALUE_KINDS, dtypes=DTYPES, threads=None,
                outs=("none", "out", "inplace")):
    rng = rng_for(f"{fname} {shape} {axis}")
    reduces = fname in ("logsumexp", "entropy")
    ax = axis % len(shape)
    oshape = shape[:ax] + shape[ax + 1:] if reduces else shape
    for dt in dtypes:
        for kind in kinds:
            x = logits(rng, shape, dt, kind, ax)
            for om in outs:
                if om == "inplace" and reduces:
                    continue
                kw = {} if axis == -1 else {"axis": axis}
                if om == "out":
                    kw["out"] = np.full(oshape, SENTINEL, dt)
                elif om == "out_f" and len(oshape) >= 2:
                    kw["out"] = View(np.full(oshape, SENTINEL, dt), np.asfortranarray, "out(F)")
                elif om == "inplace":
                    kw["out"] = INPUT
                for nt in thread_list(rng, x.size, threads):
                    k2 = dict(kw, **({} if nt is None else {"n_threads": nt}))
                    yield Case(fname, f"{name(dt)} {shape} axis={axis} {kind} out={om} nt={nt}",
                               [x], k2)


def sigmoid_cases(shape, kinds=("normal", "x30", "x1e4", "special"), threads=None,
                  sweep=False):
    rng = rng_for(f"sigmoid {shape} {sweep}")
    for dt in DTYPES:
        if sweep:
            lim = 120 if dt == F32 else 800
            xs = [("sweep", np.linspace(-lim, lim, shape[0]).astype(dt))]
        else:
            xs = [(k, logits(rng, shape, dt, k)) for k in kinds]
        for kind, x in xs:
            for fname in ("sigmoid", "log_sigmoid"):
                for om in ("none", "out", "inplace"):
                    kw = {"out": np.full(shape, SENTINEL, dt)} if om == "out" else \
                        {"out": INPUT} if om == "inplace" else {}
                    for nt in thread_list(rng, x.size, threads):
                        k2 = dict(kw, **({} if nt is None else {"n_threads": nt}))
                        yield Case(fname, f"{name(dt)} {shape} {kind} out={om} nt={nt}", [x], k2)


def vecmath_cases():
    rng = rng_for("vecmath")
    for dt in DTYPES:
        fin = np.finfo(dt)
        lo = float(np.log(fin.tiny)) - 8
        doms = {
            0: np.concatenate([np.linspace(lo, 0, 20001), -np.logspace(-30, 2, 2001),
                               [-np.inf, np.nan, 0.0, -0.0, -1e4, fin.min]]),
            1: np.concatenate([np.linspace(0, 1, 20001), np.logspace(-40 if dt == F32 else -310, 0, 2001),
                               [np.nan]]),
            2: np.concatenate([np.exp(rng.uniform(-700 if dt == F64 else -90, 80, 20001)),
                               [0.0, 1.0, np.inf, np.nan, fin.tiny, fin.max, fin.smallest_subnormal]]),
        }
        for what, x in doms.items():
            x = x.astype(dt)
            yield Case("_core.vecmath", f"{name(dt)} what={what} n={x.size}",
                       [x, np.full(x.shape, SENTINEL, dt), what], {})


# ------------------------------------------------------------------ elementwise losses

def weight_param(kind, rng, shape, dt):
    if kind is None:
        return None
    if kind == "full":
        return rng.uniform(0.25, 2.0, shape).astype(dt)
    if kind == "col":
        return rng.uniform(0.25, 2.0, shape[-1:] if shape else ()).astype(dt)
    if kind == "rowbc":
        return rng.uniform(0.25, 2.0, shape[:-1] + (1,)).astype(dt)
    raise ValueError(kind)


def bce_targets(rng, shape, dt, kind):
    if kind == "float":
        return rng.random(shape).astype(dt)
    if kind == "float01":
        return (rng.random(shape) < 0.5).astype(dt)
    if kind == "bool":
        return np.asarray(rng.random(shape) < 0.5)
    if kind == "uint8":
        return np.asarray(rng.random(shape) < 0.5).astype(np.uint8)
    raise ValueError(kind)


def probs_input(rng, shape, dt, kind):
    p = rng.random(shape)
    if kind == "extreme":
        tiny = 1e-45 if dt == F32 else 5e-324
        eps = np.finfo(dt).epsneg
        p.reshape(-1)[:] = rng.choice([0.0, 1.0, tiny, 1e-30, 1 - eps, 0.5, 1e-7], p.size)
    elif kind == "edges":
        m = rng.random(shape)
        p = np.where(m < 0.1, 0.0, np.where(m < 0.2, 1.0, p))
    return np.asarray(p).astype(dt)


def elementwise_cases(fname, shape, level, threads=None, n_light=8, kinds=None):
    rng = rng_for(f"{fname} {shape} {level}")
    nd = len(shape)
    wkinds = (None, "full") + (("col",) if nd >= 1 else ()) + (("rowbc",) if nd >= 2 else ())
    if fname == "binary_cross_entropy_with_logits":
        axes = {"target": ("float", "float01", "bool", "uint8"), "grad": GRADS, "red": REDS,
                "w": wkinds, "pw": (None, "full") + (("col",) if nd >= 1 else ())}
        kinds = kinds or ("normal", "x30", "special")
    elif fname == "binary_cross_entropy":
        axes = {"target": ("float", "float01", "bool", "uint8"), "grad": GRADS, "red": REDS,
                "w": wkinds}
        kinds = kinds or ("uniform", "edges", "extreme")
    else:  # kl_div
        axes = {"log_target": (False, True), "grad": GRADS, "red": REDS + ("batchmean",)}
        kinds = kinds or ("normal", "masked", "special")
    for dt in DTYPES:
        for kind in kinds:
            if fname == "binary_cross_entropy_with_logits":
                x = logits(rng, shape, dt, kind)
            elif fname == "binary_cross_entropy":
                x = probs_input(rng, shape, dt, kind)
            else:
                x = log_softmax_np(logits(rng, shape, dt, kind), -1) if shape else \
                    np.asarray(-0.5, dtype=dt)
            cache = {}
            for opt in options(rng, level, axes, n_light):
                kw = {"reduction": opt["red"]}
                if fname == "kl_div":
                    lt = opt["log_target"]
                    if lt not in cache:
                        p = probabilities(rng, shape, dt, -1) if shape else np.asarray(0.3, dt)
                        with np.errstate(divide="ignore"):
                            cache[lt] = np.log(p) if lt else p
                    t = cache[lt]
                    if lt:
                        kw["log_target"] = True
                    desc = f"log_target={lt}"
                else:
                    if opt["target"] not in cache:
                        cache[opt["target"]] = bce_targets(rng, shape, dt, opt["target"])
                    t = cache[opt["target"]]
                    desc = f"target={opt['target']} w={opt['w']}"
                    key = ("w", opt["w"])
                    if key not in cache:
                        cache[key] = weight_param(opt["w"], rng, shape, dt)
                    if cache[key] is not None:
                        kw["weight"] = cache[key]
                    if "pw" in opt:
                        key = ("pw", opt["pw"])
                        if key not in cache:
                            cache[key] = weight_param(opt["pw"], rng, shape, dt)
                        if cache[key] is not None:
                            kw["pos_weight"] = cache[key]
                        desc += f" pos_weight={opt['pw']}"
                kw.update(grad_kwargs(opt["grad"], shape, dt))
                for nt in thread_list(rng, x.size, threads):
                    k2 = dict(kw, **({} if nt is None else {"n_threads": nt}))
                    yield Case(fname, f"{name(dt)} {shape} {kind} {desc} red={opt['red']} "
                                      f"grad={opt['grad']} nt={nt}", [x, t], k2)


# ------------------------------------------------------------------ odd layouts, errors

def layout_cases():
    rng = rng_for("layouts")
    for dt in DTYPES:
        base = logits(rng, (23, 34), dt, "normal")
        y = rng.integers(0, 17, 23)
        views = [View(base, lambda b: b[:, ::2], "x[:, ::2]"),
                 View(base[:, :17], np.asfortranarray, "x(F)"),
                 View(base[:, :17], lambda b: b.astype(b.dtype.newbyteorder(">")), "x(>)")]
        for v in views:
            for gm in ("none", "fresh", "out", "inplace"):
                kw = grad_kwargs(gm, (23, 17), dt)
                yield Case("cross_entropy", f"{name(dt)} {v.tag} grad={gm}", [v, y], kw)
            yield Case("softmax", f"{name(dt)} {v.tag}", [v], {})
            yield Case("logsumexp", f"{name(dt)} {v.tag} axis=0", [v], {"axis": 0})
            t = (rng.random((23, 17)) < 0.5)
            yield Case("binary_cross_entropy_with_logits", f"{name(dt)} {v.tag} grad=inplace",
                       [v, t], {"return_grad": True, "grad_out": INPUT})
        x = base[:, :17].copy()
        g = View(np.full((23, 17), SENTINEL, dt), np.asfortranarray, "grad_out(F)")
        yield Case("cross_entropy", f"{name(dt)} (23, 17) grad_out(F)", [x, y],
                   {"return_grad": True, "grad_out": g})
        g = View(np.full((23, 17), SENTINEL, dt), lambda b: b.astype(b.dtype.newbyteorder(">")),
                 "grad_out(>)")
        yield Case("cross_entropy", f"{name(dt)} (23, 17) grad_out(>)", [x, y],
                   {"return_grad": True, "grad_out": g})
        for wt in (np.float64, np.float32, np.int64):
            w = rng.uniform(1, 3, 17).astype(wt)
            yield Case("cross_entropy", f"{name(dt)} (23, 17) weight {np.dtype(wt).name}",
                       [x, y], {"weight": w, "return_grad": True})
        yield Case("cross_entropy", f"{name(dt)} (23, 17) weight list", [x, y],
                   {"weight": list(rng.uniform(1, 3, 17)), "reduction": "sum"})
        yi = np.full(23, -100)
        yield Case("cross_entropy", f"{name(dt)} (23, 17) every target ignored", [x, yi],
                   {"return_grad": True})
        yield Case("nll_loss", f"{name(dt)} (23, 17) every target ignored", [x, yi],
                   {"return_grad": True, "reduction": "mean"})
        yield Case("cross_entropy", f"{name(dt)} (0, 17) empty batch", [x[:0], y[:0]],
                   {"return_grad": True})
        for red in ("mean", "batchmean"):
            yield Case("kl_div", f"{name(dt)} (0, 17) empty {red}", [x[:0], x[:0]],
                       {"reduction": red, "return_grad": True})


def error_cases():
    rng = rng_for("errors")
    for dt in DTYPES:
        x = logits(rng, (9, 10), dt, "normal")
        for ldt, bad in ((np.int64, 12), (np.int8, -5), (np.uint16, 10), (np.uint64, 2**63 + 1)):
            y = rng.integers(0, 10, 9).astype(ldt)
            y[5] = bad
            yield Case("cross_entropy", f"{name(dt)} label {bad} ({np.dtype(ldt).name})", [x, y], {})
            yield Case("nll_loss", f"{name(dt)} label {bad} ({np.dtype(ldt).name})", [x, y], {})
        y = rng.integers(0, 10, (2, 7, 9)).astype(np.int32)
        y[1, 3, 4] = 10
        yield Case("cross_entropy", f"{name(dt)} (2,10,7,9) axis=1 label 10",
                   [logits(rng, (2, 10, 7, 9), dt, "normal", 1), y], {})
        for bad in (1.5, -1e-30, np.nan):
            p = rng.random((9, 10)).astype(dt)
            p[4, 7] = bad
            yield Case("binary_cross_entropy", f"{name(dt)} input {bad}",
                       [p, rng.random((9, 10)).astype(dt)], {})


# ------------------------------------------------------------------ the grid

def grid(quick, stream_bytes):
    """(group name, case iterator) pairs, fixed seeds."""
    full = "strat" if quick else "full"
    strat = "light" if quick else "strat"
    kinds_q = ("normal", "special") if quick else VALUE_KINDS
    g = []
    ce = "cross_entropy"
    # option sweeps on small shapes: every combination
    for shape, axis in (((37, 10), 1), ((2, 5, 7, 9), 1)):
        g.append((f"CE sweep {shape}", softmax_loss_cases(ce, shape, axis, full, kinds_q)))
    # every class count, 1-D, class axis not last
    shapes = [((37, 1), 1), ((37, 2), 1), ((37, 3), 1), ((37, 17), 1), ((29, 100), 1),
              ((13, 1000), 1), ((5, 4097), 1), ((3, 40000), 1), ((10,), 1), ((1000,), 0),
              ((3, 21, 32, 32), 1), ((2, 300, 4, 4), 1), ((10, 37), 0), ((4, 7, 50), -1),
              ((4, 7, 50), 1)]
    for shape, axis in shapes:
        g.append((f"CE {shape} axis={axis}", softmax_loss_cases(ce, shape, axis, strat, kinds_q)))
    # threaded sizes (1 and 2 threads): blocks, chunk-parallel rows, heap chunk table
    mkinds = ("normal", "special") if quick else VALUE_KINDS
    for shape, axis, n in (((5000, 17), 1, 8), ((700, 100), 1, 8), ((80, 1000), 1, 8),
                           ((20, 4097), 1, 8), ((4, 40000), 1, 8), ((3, 40000), 1, 8),
                           ((1, 100000), 1, 8), ((100000,), 0, 6), ((2, 300000), 1, 8),
                           ((6, 21, 32, 32), 1, 8), ((100, 1000), 0, 6), ((4, 64, 1000), -1, 6)):
        g.append((f"CE threaded {shape} axis={axis}",
                  softmax_loss_cases(ce, shape, axis, "light", mkinds, threads=(1, 2), n_light=n)))
    # a gradient big enough for streaming stores: rows and class axis 1, offset or not
    for dt in DTYPES:
        n = stream_bytes // (1000 * dt.itemsize) + 7
        hw = int(math.ceil(math.sqrt(stream_bytes / (2 * 21 * dt.itemsize)))) + 1
        for shape, axis in (((n, 1000), 1), ((2, 21, hw, hw), 1)):
            for off in (0, 3):
                g.append((f"CE streaming {name(dt)} {shape} off={off}", softmax_loss_cases(
                    ce, shape, axis, "light" if quick else "strat", ("normal",), dtypes=(dt,),
                    threads=(1, 2), n_light=3, grad_offset=off, grads=("fresh", "out", "inplace"),
                    targets=("int64", "uint8", "soft"))))
    # nll_loss on log_softmax outputs
    nk = ("normal", "special") if quick else ("normal", "x30", "masked", "special", "neginf_rows")
    for shape, axis, lvl in (((37, 10), 1, full if not quick else "strat"), ((13, 1000), 1, strat),
                             ((2, 5, 7, 9), 1, strat), ((17,), 0, strat), ((2, 300, 4, 4), 1, strat),
                             ((5, 4097), 1, strat)):
        g.append((f"NLL {shape}", softmax_loss_cases("nll_loss", shape, axis, lvl, nk)))
    g.append(("NLL threaded (80, 1000)", softmax_loss_cases("nll_loss", (80, 1000), 1, "light",
                                                           ("normal", "special"), threads=(1, 2))))
    g.append(("NLL threaded (1, 100000)", softmax_loss_cases("nll_loss", (1, 100000), 1, "light",
                                                            ("normal",), threads=(1, 2), n_light=4)))
    # building blocks
    bshapes = [((37, 10), -1), ((13, 1000), -1), ((5, 4097), -1), ((3, 40000), -1),
               ((17,), -1), ((1,), 0), ((4, 7, 50), 1), ((10, 37), 0), ((2, 5, 7, 9), 1),
               ((37, 1), -1), ((37, 3), -1)]
    tshapes = [((80, 1000), -1), ((2000, 100), -1), ((2, 300000), -1), ((1, 100000), -1),
               ((4, 100, 200), 1)]
    for fname in ("logsumexp", "softmax", "log_softmax", "entropy"):
        for shape, axis in bshapes:
            g.append((f"{fname} {shape} axis={axis}", block_cases(
                fname, shape, axis, kinds_q, outs=("none", "out", "inplace", "out_f"))))
        for shape, axis in tshapes:
            g.append((f"{fname} threaded {shape}", block_cases(
                fname, shape, axis, mkinds, threads=(1, 2), outs=("none", "out"))))
    for shape in ((), (1,), (37,), (37, 10), (4, 5, 6), (3, 1001)):
        g.append((f"sigmoid {shape}", sigmoid_cases(shape)))
    g.append(("sigmoid threaded (300, 257)", sigmoid_cases((300, 257), threads=(1, 2))))
    g.append(("sigmoid sweep", sigmoid_cases((20001,), sweep=True)))
    g.append(("vecmath", vecmath_cases()))
    # elementwise losses
    for fname in ("binary_cross_entropy_with_logits", "binary_cross_entropy", "kl_div"):
        g.append((f"{fname} sweep (37, 10)", elementwise_cases(fname, (37, 10), full)))
        for shape in ((5, 1000), (100,), (4, 5, 6), (), (1, 1)):
            g.append((f"{fname} {shape}", elementwise_cases(fname, shape, strat)))
        g.append((f"{fname} threaded (300, 257)",
                  elementwise_cases(fname, (300, 257), "light", threads=(1, 2), n_light=12)))
    g.append(("layouts", layout_cases()))
    g.append(("errors", error_cases()))
    if not quick:
        g.append(("benchmark shapes", bench_cases()))
    return g


def bench_cases():
    """The shapes of bench/compare.py, once each: forward, and forward+backward with a
    new gradient, at 2 threads (float32 unless marked)."""
    rng = rng_for("bench")
    for (N, C), dt in (((64, 10), F32), ((256, 1000), F32), ((4096, 1000), F32),
                       ((1024, 32768), F32), ((8, 256000), F32), ((4096, 1000), F64)):
        x = (rng.standard_normal((N, C), dtype=np.float32) if dt == F32
             else rng.standard_normal((N, C)))
        y = rng.integers(0, C, N)
        for gm in ("none", "fresh") + (("out",) if N * C >= 1 << 25 else ()):
            yield Case("cross_entropy", f"{name(dt)} ({N}, {C}) bench grad={gm} nt=2", [x, y],
                       dict(grad_kwargs(gm, x.shape, dt), n_threads=2))
        del x
    x = rng.standard_normal((8, 21, 256, 256), dtype=np.float32)
    y = rng.integers(0, 21, (8, 256, 256))
    for gm in ("none", "fresh", "out"):
        yield Case("cross_entropy", f"f32 (8, 21, 256, 256) axis=1 bench grad={gm} nt=2", [x, y],
                   dict(grad_kwargs(gm, x.shape, F32), n_threads=2))
    del x, y
    for (N, C), tk in (((4096, 1000), "float"), ((4096, 1000), "bool"), ((1024, 32768), "bool")):
        x = rng.standard_normal((N, C), dtype=np.float32)
        t = bce_targets(rng, (N, C), F32, tk)
        for gm in ("none", "fresh"):
            yield Case("binary_cross_entropy_with_logits",
                       f"f32 ({N}, {C}) target={tk} bench grad={gm} nt=2", [x, t],
                       dict(grad_kwargs(gm, x.shape, F32), n_threads=2))


# ------------------------------------------------------------------ running, comparing

def materialize(v, bases):
    if isinstance(v, View):
        b = v.base.copy()
        bases.append(b)
        return v.make(b)
    if isinstance(v, np.ndarray):
        return v.copy()
    return v


def resolve(mod, func):
    obj = mod
    for part in func.split("."):
        obj = getattr(obj, part)
    return obj


ARG_NAMES = {"_core.vecmath": ("x", "out")}


def run_call(mod, case):
    """The outputs of one call as [(label, value)], on fresh copies of the inputs."""
    bases = []
    args = [materialize(a, bases) for a in case.args]
    kw = {k: args[0] if v is INPUT else materialize(v, bases) for k, v in case.kwargs.items()}
    try:
        res = resolve(mod, case.func)(*args, **kw)
    except Exception as e:  # noqa: BLE001 - an exception is an outcome to compare
        return [("exception", f"{type(e).__name__}: {e}")]
    outs = []
    target = kw.get("grad_out", kw.get("out"))
    if isinstance(res, tuple):
        outs += [("loss", res[0]), ("grad", res[1]),
                 ("grad is grad_out", None if target is None else res[1] is target)]
    elif res is not None:
        outs += [("result", res), ("result is out", None if target is None else res is target)]
    names = ARG_NAMES.get(case.func, ("input", "target"))
    for i, a in enumerate(args):
        if isinstance(a, np.ndarray):
            outs.append((f"{names[i] if i < len(names) else f'argument {i}'} after call", a))
    for k, v in kw.items():
        if isinstance(v, np.ndarray) and v is not args[0]:
            outs.append((f"{k} after call", v))
    for i, b in enumerate(bases):
        outs.append((f"view base {i} after call", b))
    return outs


def fmt(v):
    bits = np.asarray(v).reshape(1).view(f"u{v.dtype.itemsize}")[0] if v.dtype.kind == "f" else None
    return f"{v!s}" + ("" if bits is None else f" ({int(bits):#0{2 + 2 * v.dtype.itemsize}x})")


def diff(o, n):
    """None if o and n have the same bits, else a description (kind, text); kind is
    'value', 'nan-bits' or 'other'."""
    if isinstance(o, np.ndarray) or isinstance(o, np.generic):
        if type(o) is not type(n):
            return "other", f"type {type(o).__name__} vs {type(n).__name__}"
        a, b = np.asarray(o), np.asarray(n)
        if a.dtype != b.dtype or a.shape != b.shape:
            return "other", f"dtype/shape {a.dtype}{a.shape} vs {b.dtype}{b.shape}"
        if a.tobytes() == b.tobytes():
            return None
        fa, fb = a.reshape(-1), b.reshape(-1)
        if a.dtype.kind != "f":
            i = int(np.flatnonzero(fa != fb)[0]) if fa.size else 0
            return "value", f"first at {np.unravel_index(i, a.shape)}: old {fa[i]} new {fb[i]}"
        u = f"u{a.dtype.itemsize}"
        idx = np.flatnonzero(np.ascontiguousarray(fa).view(u) != np.ascontiguousarray(fb).view(u))
        nan = np.isnan(fa[idx]) & np.isnan(fb[idx])
        val, nbits = idx[~nan], idx[nan]
        where = (lambda i: tuple(int(k) for k in np.unravel_index(i, a.shape))) if a.ndim else (lambda i: ())
        parts = []
        if val.size:
            i = int(val[0])
            parts.append(f"{val.size} of {a.size} values differ, first at {where(i)}: "
                         f"old {fmt(fa[i])} new {fmt(fb[i])}")
        if nbits.size:
            i = int(nbits[0])
            parts.append(f"{nbits.size} NaN-bit differences, first at {where(i)}: "
                         f"old {fmt(fa[i])} new {fmt(fb[i])}")
        return ("value" if val.size else "nan-bits"), "; ".join(parts)
    if o == n and type(o) is type(n):
        return None
    return "other", f"old {o!r} new {n!r}"


def compare(old_outs, new_outs):
    if [k for k, _ in old_outs] != [k for k, _ in new_outs]:
        return [("outcome", "other", f"old gave {dict(old_outs).get('exception', 'a result')}; "
                 f"new gave {dict(new_outs).get('exception', 'a result')}")]
    bad = []
    for (label, o), (_, n) in zip(old_outs, new_outs):
        d = diff(o, n)
        if d is not None:
            bad.append((label,) + d)
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("rev", help="git revision to compare the working tree's build with")
    ap.add_argument("--isa", nargs="+", help="ISA variants to compare (default: all both can run)")
    ap.add_argument("--quick", action="store_true",
                    help="no benchmark shapes; fewer value kinds and option combinations")
    ap.add_argument("-v", "--verbose", action="store_true", help="time and calls per group")
    ap.add_argument("--keep-old", metavar="DIR",
                    help="build the old revision into DIR and reuse it while REV names the same commit")
    args = ap.parse_args()

    t_start = time.perf_counter()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", args.rev + "^{commit}"],
                            check=True, capture_output=True, text=True).stdout.strip()
    tmp = None
    if args.keep_old:
        pkg = os.path.abspath(args.keep_old)
        stamp = os.path.join(pkg, "REV")
        if not (os.path.exists(stamp) and open(stamp).read().strip() == commit):
            shutil.rmtree(pkg, ignore_errors=True)
            with tempfile.TemporaryDirectory() as t:
                shutil.copytree(build_old(commit, t), pkg)
            with open(stamp, "w") as f:
                f.write(commit + "\n")
    else:
        tmp = tempfile.TemporaryDirectory()
        pkg = build_old(commit, tmp.name)
    t_built = time.perf_counter()
    # Results do not depend on it; it keeps OpenMP threads from spinning for a core that
    # another process holds (on a busy 2-core machine spinning made calls 10x slower).
    os.environ.setdefault("OMP_WAIT_POLICY", "passive")
    sys.path.insert(0, pkg)
    sys.path.insert(0, os.path.join(ROOT, "src"))
    import fastxent as new
    import fastxent_ab_old as old
    if not os.path.dirname(os.path.abspath(new.__file__)) == os.path.join(ROOT, "src", "fastxent"):
        sys.exit(f"fastxent was imported from {new.__file__}, not {ROOT}/src: "
                 "build it in place first (python setup.py build_ext --inplace)")

    def isas(mod):
        c = mod._core
        return c.isa_available() if hasattr(c, "isa_available") and hasattr(c, "select_isa") else None
    io, inew = isas(old), isas(new)
    if io is None or inew is None:
        both = [None]
        print("one build cannot select an ISA: comparing the variants each picks by default")
    else:
        both = [i for i in inew if i in io]
        if args.isa:
            missing = [i for i in args.isa if i not in both]
            if missing:
                sys.exit(f"ISA {missing} not runnable by both builds (both: {both})")
            both = [i for i in both if i in args.isa]
    prev = {m: m._core.current_isa() for m in (old, new)} if both != [None] else {}
    have_vecmath = hasattr(old._core, "vecmath") and hasattr(new._core, "vecmath")
    stream = getattr(new._core, "stream_grad_bytes", None) or 8 * 1024 * 1024
    print(f"old: {args.rev} ({commit[:10]}), {pkg}; new: {ROOT}/src; "
          f"ISAs: {', '.join(map(str, both))}; streaming-store threshold {stream} bytes"
          f"{'' if have_vecmath else '; _core.vecmath not in both: skipped'}")

    calls = {i: 0 for i in both}
    secs = {i: 0.0 for i in both}
    bad_calls = {i: 0 for i in both}
    kinds = {i: {"value": 0, "nan-bits": 0, "other": 0} for i in both}
    per_func = {i: {} for i in both}
    for gname, cases in grid(args.quick, stream):
        if gname == "vecmath" and not have_vecmath:
            continue
        tg, ng = time.perf_counter(), 0
        for case in cases:
            ng += 1
            for isa in both:
                t0 = time.perf_counter()
                if isa is not None:
                    old._core.select_isa(isa)
                    new._core.select_isa(isa)
                bad = compare(run_call(old, case), run_call(new, case))
                secs[isa] += time.perf_counter() - t0
                calls[isa] += 1
                if bad:
                    bad_calls[isa] += 1
                    per_func[isa][case.func] = per_func[isa].get(case.func, 0) + 1
                    for label, kind, text in bad:
                        kinds[isa][kind] += 1
                        print(f"MISMATCH [{isa}] {case.func}: {case.desc} | {label}: {text}",
                              flush=True)
        if args.verbose:
            print(f"  {gname}: {ng} cases x {len(both)} ISAs, {time.perf_counter() - tg:.1f} s",
                  flush=True)
    for m, i in prev.items():
        m._core.select_isa(i)
    t_end = time.perf_counter()
    print()
    failed = False
    for isa in both:
        k = kinds[isa]
        line = (f"ISA {isa}: {calls[isa]} calls compared, {bad_calls[isa]} with mismatches "
                f"({k['value']} value, {k['nan-bits']} NaN-bit-only, {k['other']} other outputs)"
                f", {secs[isa]:.1f} s")
        if per_func[isa]:
            line += "; by function: " + ", ".join(f"{f} {n}" for f, n in sorted(per_func[isa].items()))
        print(line)
        failed |= bad_calls[isa] > 0
    print(f"build of {args.rev}: {t_built - t_start:.0f} s; comparison: {t_end - t_built:.0f} s; "
          + ("MISMATCHES" if failed else "same bits"))
    if tmp is not None:
        tmp.cleanup()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
