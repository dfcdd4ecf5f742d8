"""`import fastxent` loads NumPy and fastxent's own modules, nothing optional."""
import json
import subprocess
import sys

OPTIONAL = ("torch", "scipy", "jax", "sklearn", "threadpoolctl", "matplotlib", "pandas",
            "dask", "distributed", "ml_dtypes")


def test_import_pulls_in_no_optional_package():
    code = ("import sys, json, fastxent; "
            "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    top = set(json.loads(out.stdout.strip().splitlines()[-1]))
    assert "numpy" in top and "fastxent" in top
    assert not top & set(OPTIONAL), sorted(top & set(OPTIONAL))
