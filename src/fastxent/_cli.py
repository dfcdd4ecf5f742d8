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


COMMANDS: Dict[str, Tuple[Callable[[List[str], str], int], str]] = {
    "info": (cmd_info, "how this fastxent was built and what it will use (show_config)"),
    "bench": (cmd_bench, "time fastxent against NumPy, PyTorch, JAX and scikit-learn "
                         "(--quick: a short run; --help)"),
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
    return COMMANDS[name][0](rest, f"{prog} {name}")
