"""The command line: ``python -m fastxent`` / the ``fastxent`` console script, its ``info``
and ``bench`` commands, and where ``bench`` writes.

``bench`` runs here on one tiny shape with a tiny budget: these tests check what it prints
and writes (a progress line per shape, tables within 100 columns, the memory table's
header, the report in the scratch directory, the committed record untouched), never how
fast anything is.
"""
import hashlib
import importlib.metadata
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import pytest

import fastxent as fx
from fastxent import _bench, _cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "fastxent", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


def test_usage_lists_the_commands():
    out = _run()
    assert out.returncode == 0, out.stderr
    assert "usage: python -m fastxent COMMAND" in out.stdout
    for name in ("info", "bench"):
        assert f"\n  {name} " in out.stdout
    bad = _run("frobnicate")
    assert bad.returncode == 2 and "unknown command 'frobnicate'" in bad.stderr


def test_info_says_what_show_config_says():
    cfg = fx.show_config()
    out = _run("info")
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line for line in out.stdout.splitlines()}
    assert cfg["version"] in lines["fastxent"]
    assert lines["kernels"].split()[1].rstrip(",") == cfg["isa"]
    assert all(isa in lines["kernels"] for isa in cfg["isa_available"])
    assert "threads" in lines
    as_json = _run("info", "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == cfg


def test_console_script_is_installed():
    eps = importlib.metadata.entry_points()
    group = (eps.select(group="console_scripts") if hasattr(eps, "select")   # Python 3.10+
             else eps.get("console_scripts", []))
    scripts = [ep for ep in group if ep.name == "fastxent"]
    assert [ep.value for ep in scripts] == ["fastxent._cli:main"]
    exe = os.path.join(os.path.dirname(sys.executable), "fastxent")
    if not os.path.exists(exe):   # a package imported from the source tree, not installed
        if os.environ.get("CI") == "true":
            pytest.fail(f"{exe} is missing: the installed package must provide it (CI=true)")
        pytest.skip(f"{exe} is not there (fastxent not installed in this environment)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == f"fastxent {fx.__version__}"


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _record():
    """The committed record's files, {path: sha256}, when the tests run in a checkout."""
    paths = [os.path.join(ROOT, "bench", f) for f in _bench.RECORD_FILES]
    return {p: _digest(p) for p in paths if os.path.exists(p)}


def test_quick_bench_prints_compact_tables_and_writes_only_scratch(tmp_path):
    before = _record()
    out_dir = tmp_path / "out"
    out = _run("bench", "--quick", "--shapes", "64x10", "--libs", "numpy", "fastxent",
               "--memory-shapes", "64x10", "--budget", "0.05", "--repeat", "2",
               "--min-repeat", "1", "--chart", "", "--out-dir", str(out_dir), cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    too_wide = [line for line in lines if len(line) > _bench.WIDTH]
    assert too_wide == [], too_wide
    assert any(line.startswith("[ 1/1] CE 64x10") and "fastxent" in line for line in lines)
    assert any(line.split() == ["shape", "fastxent", "fx/out", "vs", "numpy", "/", "floor"]
               for line in lines), out.stdout
    assert any(line.split() == ["shape", "MiB", "fastxent", "fx/out", "in", "place", "numpy"]
               for line in lines), out.stdout
    assert (out_dir / "RESULTS.md").is_file()
    report = (out_dir / "RESULTS.md").read_text()
    assert "Quick run" in report and "not the committed record" in report
    assert _record() == before


def test_bench_refuses_to_write_the_record_from_a_partial_run(tmp_path):
    before = _record()
    out = _run("bench", "--quick", "--record", cwd=ROOT)
    assert out.returncode == 2 and "full run only" in out.stderr and "--quick" in out.stderr
    if before:
        target = next(iter(before))
        named = _run("bench", "--shapes", "64x10", "--out", target, cwd=ROOT)
        assert named.returncode == 2 and "committed benchmark record" in named.stderr
    assert _record() == before


def _args(**kw):
    base = dict(record=False, quick=False, shapes=None, libs=None, no_memory=False,
                memory_shapes=None, out=None, chart=None, out_dir=None, json=None)
    base.update(kw)
    return SimpleNamespace(**base)


def test_outputs_go_to_scratch_unless_recording(tmp_path):
    checkout = tmp_path / "repo"
    (checkout / "bench").mkdir(parents=True)
    (checkout / "bench" / "compare.py").write_text("")
    (checkout / "src" / "fastxent").mkdir(parents=True)
    (checkout / "src" / "fastxent" / "__init__.py").write_text("")
    assert _bench.find_checkout(str(checkout)) == str(checkout)
    bench = str(checkout / "bench")
    out, chart, _ = _bench.resolve_outputs(_args(quick=True), str(checkout))
    assert (out, chart) == (os.path.join(bench, "out", "RESULTS.md"),
                            os.path.join(bench, "out", "throughput.png"))
    out, chart, _ = _bench.resolve_outputs(_args(quick=True), None)
    assert os.path.dirname(out) == _bench.scratch_dir(None) != bench
    out, chart, _ = _bench.resolve_outputs(_args(record=True), str(checkout))
    assert (out, chart) == (os.path.join(bench, "RESULTS.md"), os.path.join(bench, "throughput.png"))
    for bad in (_args(record=True, shapes=["64x10"]), _args(record=True, out_dir="x"),
                _args(record=True, no_memory=True), _args(chart=os.path.join(bench, "throughput.png"))):
        with pytest.raises(ValueError):
            _bench.resolve_outputs(bad, str(checkout))
    with pytest.raises(ValueError, match="checkout"):
        _bench.resolve_outputs(_args(record=True), None)


def test_busy_machine_is_named():
    quiet = _bench.busy_reasons((0.1, 0.1, 0.1), cpus=2, T=2, results=[], other=0.02)
    assert quiet == []
    loaded = _bench.busy_reasons((2.5, 2.0, 1.0), cpus=2, T=2, results=[])
    assert len(loaded) == 1 and "load average 2.50" in loaded[0]
    shared = _bench.busy_reasons((0.1, 0.1, 0.1), cpus=2, T=2, results=[], other=0.9)
    assert len(shared) == 1 and "other processes used 0.90" in shared[0]


def test_import_fastxent_loads_neither_the_cli_nor_the_bench():
    code = ("import sys, fastxent; "
            "print(sorted(m for m in sys.modules if m.startswith('fastxent.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    loaded = out.stdout
    assert "fastxent._core" in loaded
    assert "fastxent._cli" not in loaded and "fastxent._bench" not in loaded
