"""The command line: ``fastxent COMMAND [options]``, also ``python -m fastxent COMMAND``.

Each command is a function ``cmd_<name>(argv, prog) -> exit status`` with its line in
COMMANDS; the usage text is made from COMMANDS. A new command (``eval``, the metrics) is
one more function and one more line. The commands import what they need when they run:
this module imports the standard library and fastxent (hence NumPy) only, and
``import fastxent`` does not import it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from typing import Callable, Dict, List, Optional, Tuple


def cmd_info(argv: List[str], prog: str) -> int:
    """What ``fastxent.show_config()`` says, one line a key, in words."""
    p = argparse.ArgumentParser(prog=prog, description="How this fastxent was built and what "
                                "it will use: fastxent.show_config(), readable.")
    p.add_argument("--json", action="store_true", help="print show_config() as JSON instead")
    args = p.parse_args(argv)
    import numpy as np

    import fastxent as fx

    cfg = fx.show_config()
    if args.json:
        print(json.dumps(cfg, indent=2))
        return 0
    rows = [("fastxent", f"{cfg.get('version')} ({os.path.dirname(fx.__file__)})")]
    if "isa" in cfg:
        avail = ", ".join(cfg.get("isa_available", []))
        rows.append(("kernels", f"{cfg['isa']}, the widest this CPU runs of those built "
                                f"({avail})"))
    if "openmp" in cfg:
        threads = cfg.get("max_threads")
        omp = os.environ.get("OMP_NUM_THREADS")
        how = f"OMP_NUM_THREADS={omp}" if omp else "OpenMP's default; OMP_NUM_THREADS unset"
        rows.append(("threads", f"{threads} for a call with n_threads=None ({how})"
                     if cfg["openmp"] else "1: built without OpenMP, every call is serial"))
    if cfg.get("forked_serial"):
        rows.append(("fork", "this process was forked: calls here run serially (GNU "
                             "OpenMP hangs a child whose parent used it)"))
    known = {"version", "isa", "isa_available", "openmp", "max_threads", "forked_serial"}
    rows += [(k, str(v)) for k, v in cfg.items() if k not in known]
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cpus = os.cpu_count()
    rows.append(("CPU", f"{_cpu_model()}, {cpus} usable CPUs"))
    rows.append(("python", f"{platform.python_version()}, NumPy {np.__version__}, "
                           f"{platform.system()} {platform.machine()}"))
    for key, value in rows:
        print(f"{key:<9} {value}")
    return 0


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def cmd_bench(argv: List[str], prog: str) -> int:
    """The comparison with NumPy, PyTorch, JAX and scikit-learn (fastxent._bench)."""
    from . import _bench

    return _bench.main(argv, prog=prog)


def _load_eval_arrays(paths: List[str], logits_key: Optional[str], labels_key: Optional[str]):
    """(logits, labels) from LOGITS.npy LABELS.npy (memory-mapped) or one .npz (its
    members `logits_key` / `labels_key`, else 'logits' / 'labels', else its first two);
    a .npz member is read whole when first sliced (zip members cannot be mapped)."""
    import numpy as np

    arrays = []
    for path in paths:
        if path.endswith(".npz"):
            z = np.load(path)
            names = list(z.files)
            lk = logits_key or ("logits" if "logits" in names else names[0] if names else None)
            yk = labels_key or ("labels" if "labels" in names else
                                next((k for k in names if k != lk), None))
            for key in (lk, yk):
                if key is None or key not in names:
                    raise ValueError(f"{path}: no member {key!r} (members: {names})")
                arrays.append(z[key])
        else:
            arrays.append(np.load(path, mmap_mode="r", allow_pickle=False))
    if len(arrays) != 2:
        raise ValueError("give LOGITS.npy LABELS.npy, or one .npz holding both")
    return arrays[0], arrays[1]


def cmd_eval(argv: List[str], prog: str) -> int:
    """Evaluation metrics of saved logits and labels (fastxent.metrics), streamed in blocks
    of rows from memory-mapped .npy files, so the logits may be larger than memory."""
    p = argparse.ArgumentParser(
        prog=prog, description="Metrics of logits against class labels, from one pass: "
        "cross-entropy, perplexity, log loss (scikit-learn's), top-k accuracy, calibration "
        "errors (torchmetrics' binning). LOGITS (..., C), class axis last; LABELS (...) "
        "integer class indices.")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="LOGITS.npy LABELS.npy, or DATA.npz holding both")
    p.add_argument("--logits-key", help=".npz member of the logits (default: 'logits')")
    p.add_argument("--labels-key", help=".npz member of the labels (default: 'labels')")
    p.add_argument("--top-k", type=int, default=1, help="k of the top-k accuracy (default 1)")
    p.add_argument("--n-bins", type=int, default=15, help="calibration bins (default 15)")
    p.add_argument("--ignore-index", type=int, default=-100,
                   help="label value to skip (default -100)")
    p.add_argument("--block-rows", type=int, default=0,
                   help="rows per block read (default: about 64 MiB of logits)")
    p.add_argument("--threads", type=int, default=None, help="n_threads (default: OpenMP's)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    args = p.parse_args(argv)
    from . import metrics

    try:
        x, y = _load_eval_arrays(args.files, args.logits_key, args.labels_key)
        if x.ndim < 1 or x.shape[:-1] != y.shape:
            raise ValueError(f"logits {x.shape} and labels {y.shape} do not match: labels "
                             "must have the logits' shape without the last (class) axis")
        C = x.shape[-1]
        block = args.block_rows or max(1, (64 << 20) // max(1, C * x.dtype.itemsize))
        if block < 1:
            raise ValueError(f"--block-rows must be positive, got {block}")
        acc = metrics.MetricsAccumulator(top_k=args.top_k, n_bins=args.n_bins,
                                         ignore_index=args.ignore_index, n_threads=args.threads)
        # blocks along the first axis (a slice of a memory map is a view: only the block
        # is read, and copied only if the file's layout is not C order)
        inner = max(1, math.prod(x.shape[1:-1])) if x.ndim > 1 else 1
        step = max(1, block // inner)
        if x.ndim == 1:
            acc.update(x, y)
        for start in range(0, x.shape[0] if x.ndim > 1 else 0, step):
            xb, yb = x[start:start + step], y[start:start + step]
            acc.update(xb.reshape(-1, C), yb.reshape(-1))
        result = acc.compute()
    except (ValueError, TypeError, IndexError, OSError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 2
    if args.json:
        # a mean over no item is NaN, which JSON has not: null
        out = {k: (None if isinstance(v, float) and v != v else v)
               for k, v in result.as_dict().items()}
        print(json.dumps(out, indent=2, allow_nan=False))
        return 0
    r = result
    rows = [("items", f"{r.n_kept} kept of {r.n_items}"),
            ("cross_entropy", f"{r.cross_entropy:.6g}"),
            ("perplexity", f"{r.perplexity:.6g}"),
            ("log_loss", f"{r.log_loss:.6g}"),
            (f"accuracy@{r.top_k}", f"{r.accuracy:.6g}"),
            (f"ece ({r.n_bins} bins)", f"{r.ece:.6g}"),
            ("rmsce", f"{r.rmsce:.6g}"),
            ("mce", f"{r.mce:.6g}")]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")
    return 0


COMMANDS: Dict[str, Tuple[Callable[[List[str], str], int], str]] = {
    "info": (cmd_info, "how this fastxent was built and what it will use (show_config)"),
    "bench": (cmd_bench, "time fastxent against NumPy, PyTorch, JAX and scikit-learn "
                         "(--quick: a short run; --help)"),
    "eval": (cmd_eval, "metrics of saved logits and labels (.npy, memory-mapped, or .npz): "
                       "log loss, perplexity, accuracy, calibration; --json"),
}


def _prog() -> str:
    """How the user called us: 'fastxent' (the console script) or 'python -m fastxent'."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m fastxent" if name in ("__main__.py", "-m", "") else "fastxent"


def usage(prog: str) -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {prog} COMMAND [options]", "",
             "fastxent: fused cross-entropy losses and gradients over NumPy arrays, on the CPU.",
             "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", f"`{prog} COMMAND --help` lists a command's options."]
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    """Run the command named by argv[0] (sys.argv[1:] by default); returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = _prog()
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(prog))
        return 0
    if argv[0] == "--version":
        from . import __version__

        print(f"fastxent {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{prog}: unknown command {name!r}\n\n{usage(prog)}", file=sys.stderr)
        return 2
    try:
        return COMMANDS[name][0](rest, f"{prog} {name}")
    except BrokenPipeError:
        # the reader went away (`fastxent eval ... --json | head`): stop quietly, as other
        # command-line tools do, with stdout pointed at devnull so that Python's flush at
        # exit does not raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141          # 128 + SIGPIPE, what a shell reports for a tool killed by it
