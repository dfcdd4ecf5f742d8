"""A build without OpenMP still works, serially, and says so.

Builds the extension from this checkout into a temporary directory with
FASTXENT_NO_OPENMP=1 (setup.py then skips its OpenMP probe, as it does for a compiler
without OpenMP) and FASTXENT_BASELINE_ONLY=1 (only the baseline kernels: a quick
build), and checks in a subprocess that the serial build reports itself and gives the
same bits as the installed (OpenMP) build's baseline kernels.
"""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastxent as fx

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys
import numpy as np
import fastxent as fx
rng = np.random.default_rng(7)
x = rng.standard_normal((300, 257)).astype(np.float32)
y = rng.integers(0, 257, 300)
loss, grad = fx.cross_entropy(x, y, return_grad=True, n_threads=4)
print(json.dumps({"config": fx.show_config(), "file": fx.__file__,
                  "isas": fx._core.isa_available(),
                  "loss": float(loss), "grad": grad.tobytes().hex()}))
"""


def test_serial_build_without_openmp(tmp_path):
    for mod in ("Cython", "setuptools"):
        try:
            __import__(mod)
        except ImportError:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{mod} is needed to build the serial variant (pip install '.[test]')")
            pytest.skip(f"{mod} is not installed")
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / name)
    shutil.copytree(ROOT / "src", tmp_path / "src",
                    ignore=shutil.ignore_patterns("*.so", "_core.c", "__pycache__"))
    env = dict(os.environ, FASTXENT_NO_OPENMP="1", FASTXENT_BASELINE_ONLY="1")
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    assert "building the kernels serially" in build.stdout + build.stderr

    run = subprocess.run([sys.executable, "-c", PROBE], cwd=tmp_path,
                         env=dict(os.environ, PYTHONPATH=str(tmp_path / "src")),
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    got = json.loads(run.stdout.strip().splitlines()[-1])
    assert got["file"].startswith(str(tmp_path)), got["file"]
    assert got["config"]["openmp"] is False
    assert got["config"]["max_threads"] == 1
    assert got["isas"] == ["baseline"]

    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 257)).astype(np.float32)
    y = rng.integers(0, 257, 300)
    prev = fx._core.select_isa("baseline")
    try:
        loss, grad = fx.cross_entropy(x, y, return_grad=True)
    finally:
        fx._core.select_isa(prev)
    assert got["loss"] == float(loss)
    assert got["grad"] == grad.tobytes().hex()  # same kernels, same blocking: same bits
