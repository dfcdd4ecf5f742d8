#!/usr/bin/env python
"""Compare fastxent with NumPy, PyTorch, JAX and scikit-learn: ``fastxent bench``.

The harness is ``fastxent._bench`` (inside the package, so that ``fastxent bench`` and
``python -m fastxent bench`` run it from any installed fastxent); this file runs it from a
checkout, with the same options. See bench/README.md, or ``python bench/compare.py --help``.
"""
import os
import sys

try:
    from fastxent import _bench
except ImportError as exc:  # pragma: no cover - the message is the point
    sys.exit(f"bench/compare.py needs fastxent installed ({exc}); from the repository root: "
             'pip install ".[bench]"')

# the NumPy reference implementations, for bench/test_bench.py
numpy_cross_entropy = _bench.numpy_cross_entropy
numpy_bce_with_logits = _bench.numpy_bce_with_logits

if __name__ == "__main__":
    sys.exit(_bench.main(prog="python bench/compare.py",
                         checkout=os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
