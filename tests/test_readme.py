"""The README's examples run as written, a type checker accepts them, and its commands name
what exists.

* Every ```python block of README.md runs in a fresh namespace, warnings as errors, and no
  call reads an array after fastxent wrote a gradient over it (``grad_out=x``): the Usage
  example once did, and every later line computed on gradients.
* mypy accepts every block (``loss, grad = fx.cross_entropy(..., return_grad=True)``,
  ``float(fx.cross_entropy(x, y))``), and rejects exactly the marked lines of a file that
  uses each loss and building block right and wrong: the overloads on ``return_grad``
  discriminate, the building blocks are annotated, and the installed package is typed
  (``py.typed``; without it mypy would see no types at all).
* Blocks fenced ```python torch (the PyTorch section) need torch: test_torch_autograd.py
  runs them.
* The shell blocks' ``pip install ".[extra]"`` name extras of pyproject.toml, their
  ``python path.py`` files exist, and their ``fastxent`` commands parse.

mypy is in the ``test`` extra; on CI (CI=true) its absence fails the test, elsewhere it skips.
"""
import importlib.resources
import os
import re
import shlex
import subprocess
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastxent

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _blocks(lang):
    text = README.read_text(encoding="utf-8")
    return re.findall(r"^```" + lang + r"\n(.*?)^```", text, flags=re.S | re.M)


PY_BLOCKS = _blocks("python")
SH_BLOCKS = _blocks("bash")


def test_readme_has_the_usage_example():
    assert any("fx.cross_entropy(logits, labels, return_grad=True)" in b for b in PY_BLOCKS)
    assert SH_BLOCKS, "no ```bash block found"


# ------------------------------------------------------------------- the examples run
class _Watch:
    """fastxent's public functions, wrapped: a call that writes the gradient over one of its
    inputs marks that memory; a later call that reads marked memory is recorded."""

    def __init__(self):
        self.overwritten = []      # arrays a gradient was written over
        self.stale_reads = []      # (function, argument) that read one of them afterwards
        self.module = types.ModuleType("fastxent")
        for name in dir(fastxent):
            obj = getattr(fastxent, name)
            setattr(self.module, name, self._wrap(name, obj) if name in fastxent.__all__ else obj)

    def _wrap(self, name, fn):
        def call(*args, **kw):
            arrays = [(f"argument {i}", a) for i, a in enumerate(args)]
            arrays += [(k, v) for k, v in kw.items() if k != "grad_out"]
            for what, a in arrays:
                if isinstance(a, np.ndarray) and any(np.shares_memory(a, o)
                                                     for o in self.overwritten):
                    self.stale_reads.append(f"{name}({what})")
            result = fn(*args, **kw)
            out = kw.get("grad_out")
            if isinstance(out, np.ndarray) and any(isinstance(a, np.ndarray)
                                                   and np.shares_memory(a, out)
                                                   for _, a in arrays):
                self.overwritten.append(out)
            return result
        return call


@pytest.mark.parametrize("i", range(len(PY_BLOCKS)))
def test_python_block_runs_as_written(i, monkeypatch):
    watch = _Watch()
    monkeypatch.setitem(sys.modules, "fastxent", watch.module)
    namespace = {"__name__": f"readme_block_{i}"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a NaN or an overflow in an example is a bug
        exec(compile(PY_BLOCKS[i], f"README.md python block {i}", "exec"), namespace)
    assert "fx" in namespace and namespace["fx"] is watch.module   # the block ran through us
    assert watch.stale_reads == [], (
        f"block {i} reads arrays after fastxent wrote a gradient over them: {watch.stale_reads}")


def test_watch_catches_a_read_after_an_in_place_gradient(monkeypatch):
    """The check above is not vacuous: the README's old Usage order is caught."""
    watch = _Watch()
    monkeypatch.setitem(sys.modules, "fastxent", watch.module)
    namespace = {}
    exec("import numpy as np\nimport fastxent as fx\n"
         "x = np.random.randn(8, 5).astype(np.float32)\ny = np.arange(8) % 5\n"
         "fx.cross_entropy(x, y, return_grad=True, grad_out=x)\n"
         "fx.cross_entropy(x, y, label_smoothing=0.1)\n", namespace)
    assert watch.stale_reads == ["cross_entropy(argument 0)"]


# ------------------------------------------------------------------------- the types
def _require_mypy():
    try:
        import mypy  # noqa: F401
    except ImportError:
        msg = 'mypy is not installed (it is in the test extra: pip install ".[test]")'
        if os.environ.get("CI") == "true":
            pytest.fail(f"{msg}, but the CI must run this test (CI=true)")
        pytest.skip(msg)


TYPE_CASES = '''\
from typing import Any, Tuple
import numpy as np
from numpy.typing import NDArray
import fastxent as fx

x = np.zeros((4, 3), np.float32)
y = np.array([0, 1, 2, 0])
p = np.full((4, 3), 0.5, np.float32)
g: NDArray[np.floating[Any]]
flag = bool(x.size)

loss, g = fx.cross_entropy(x, y, return_grad=True)
loss, g = fx.nll_loss(x, y, return_grad=True, grad_out=np.empty_like(x))
loss, g = fx.binary_cross_entropy_with_logits(x, p, return_grad=True)
loss, g = fx.binary_cross_entropy(p, p, return_grad=True)
loss, g = fx.kl_div(x, p, return_grad=True, reduction="batchmean")
f: float = float(fx.cross_entropy(x, y)) + float(fx.nll_loss(x, y, return_grad=False))
f = float(fx.binary_cross_entropy_with_logits(x, p)) + float(fx.binary_cross_entropy(p, p))
f = float(fx.kl_div(x, p)) + fx.cross_entropy(x, y, reduction="none").sum()
either = fx.cross_entropy(x, y, return_grad=flag)
g = fx.logsumexp([[1.0, 2.0]]) + fx.softmax(x) + fx.log_softmax(x, axis=0)
g = fx.entropy(x) + fx.sigmoid(3.0) + fx.log_sigmoid(x, out=np.empty_like(x))
config: dict = fx.show_config()

a, b = fx.cross_entropy(x, y)  # E
a, b = fx.kl_div(x, p, return_grad=False)  # E
f = float(fx.binary_cross_entropy(p, p, return_grad=True))  # E
f = float(either)  # E
fx.softmax(x, axis="1")  # E
fx.sigmoid(x, out=[0.0])  # E
fx.cross_entropy(x, y, reduction=None)  # E
'''


def test_mypy_accepts_the_readme_and_the_overloads_discriminate(tmp_path):
    _require_mypy()
    files = []
    for i, block in enumerate(PY_BLOCKS):
        f = tmp_path / f"readme_block_{i}.py"
        f.write_text(block)
        files.append(f)
    cases = tmp_path / "type_cases.py"
    cases.write_text(TYPE_CASES)
    cmd = [sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / ".mypy_cache"),
           "--no-error-summary", "--show-error-codes", "--no-color-output",
           "--config-file", os.devnull] + [str(f) for f in files + [cases]]
    env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env)
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    readme_errors = [e for e in errors if "readme_block_" in e]
    assert readme_errors == [], "\n".join(readme_errors)
    got = {int(e.split(":")[1]) for e in errors if "type_cases.py" in e}
    expected = {n for n, line in enumerate(TYPE_CASES.splitlines(), 1) if line.endswith("# E")}
    assert got == expected, (f"mypy flagged lines {sorted(got)}, expected {sorted(expected)}:\n"
                             + out.stdout + out.stderr)
    assert not [e for e in errors if "type_cases.py" not in e and "readme_block_" not in e], \
        out.stdout


def test_installed_package_is_typed():
    """py.typed is in the installed package (the wheel's package-data): mypy reads the
    annotations only then."""
    assert importlib.resources.files("fastxent").joinpath("py.typed").is_file()


# ---------------------------------------------------------------------- the commands
def _commands():
    for block in SH_BLOCKS:
        for line in block.splitlines():
            line = line.split(" #")[0].strip()
            if line and not line.startswith("#"):
                for part in line.split("&&"):
                    yield shlex.split(part)


def _extras():
    text = (ROOT / "pyproject.toml").read_text()
    section = text.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    return set(re.findall(r"^([A-Za-z0-9_-]+)\s*=", section, flags=re.M))


def test_shell_blocks_name_what_exists():
    from fastxent import _bench, _cli

    extras, seen = _extras(), set()
    for words in _commands():
        if words[:2] == ["pip", "install"]:
            for w in words[2:]:
                m = re.fullmatch(r"\.\[([\w,-]+)\]", w)
                if m:
                    missing = set(m.group(1).split(",")) - extras
                    assert not missing, f"README installs extras {missing} pyproject lacks"
                    seen.add("extra")
        elif words and words[0] in ("python", "python3") and words[1].endswith(".py"):
            assert (ROOT / words[1]).is_file(), f"README runs {words[1]}, which does not exist"
            seen.add("script")
        elif words[:1] == ["fastxent"] or words[:3] == ["python", "-m", "fastxent"]:
            rest = words[1:] if words[0] == "fastxent" else words[3:]
            assert rest and rest[0] in _cli.COMMANDS, f"README runs {' '.join(words)}"
            if rest[0] == "bench":
                _bench.parse_args(rest[1:])   # SystemExit on an option that does not exist
            seen.add("cli")
    assert seen == {"extra", "script", "cli"}, seen
