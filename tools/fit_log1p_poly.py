"""Fit the float32 log1p polynomial used in src/fastxent/kernels/fx_vecmath.h (vlog1p_unit).

log1p(f) ~= f + f^2 q(f) on sqrt(1/2) - 1 <= f <= sqrt(2) - 1 (the range left after
taking out a power of two), q of degree DEG, fitted for minimal maximum relative error
of log1p by Lawson's iteratively reweighted least squares on a dense grid. Prints the
coefficients rounded to float32 and the relative error they leave against float64
log1p. Run: python tools/fit_log1p_poly.py [DEG]
"""
import sys

import numpy as np

DEG = int(sys.argv[1]) if len(sys.argv) > 1 else 8
lo, hi = np.sqrt(0.5) - 1, np.sqrt(2) - 1
f = np.linspace(lo, hi, 40001)
f = f[np.abs(f) > 1e-4]                 # q is smooth through 0; keep the division clean
target = (np.log1p(f) - f) / f**2       # what q(f) should equal
rel = f**2 / np.abs(np.log1p(f))        # turns an error in q into a relative error in log1p
V = np.vander(f, DEG + 1, increasing=True)
w = np.ones_like(f)
for _ in range(300):
    sw = np.sqrt(w) * rel
    c, *_ = np.linalg.lstsq(V * sw[:, None], target * sw, rcond=None)
    err = np.abs(f + f**2 * (V @ c) - np.log1p(f)) / np.abs(np.log1p(f))
    w = w * err
    w /= w.sum()
c32 = c.astype(np.float32)
err32 = np.abs(f + f**2 * (V @ c32.astype(np.float64)) - np.log1p(f)) / np.abs(np.log1p(f))
print(f"degree {DEG}, coefficients of q, constant first (float32):")
print([float(v) for v in c32])
print(f"max relative error: {err32.max():.3g} (float64 coefficients: {err.max():.3g}); "
      f"float32 half-ulp is {2.0**-24:.3g}")
