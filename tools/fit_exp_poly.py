"""Fit the float32 exp polynomial used in src/fastxent/kernels/fx_vecmath.h (vexp_poly_k).

exp(r) ~= 1 + r * q(r) on |r| <= ln2/2, q of degree 5, fitted for minimal maximum
relative error by Lawson's iteratively reweighted least squares on a dense grid. Prints
the coefficients rounded to float32 and the error they leave (about 1.7e-8 relative,
a third of float32's half-ulp), against float64 exp. Run: python tools/fit_exp_poly.py
"""
import numpy as np

a = np.log(2) / 2
r = np.linspace(-a, a, 20001)
r = r[r != 0]
target = np.expm1(r) / r            # q(r) should equal (exp(r) - 1) / r
rel = r / np.exp(r)                 # turns an error in q into a relative error in exp
V = np.vander(r, 6, increasing=True)
w = np.ones_like(r)
for _ in range(200):
    sw = np.sqrt(w) * rel
    c, *_ = np.linalg.lstsq(V * sw[:, None], target * sw, rcond=None)
    err = np.abs(1 + r * (V @ c) - np.exp(r)) / np.exp(r)
    w = w * err
    w /= w.sum()
c32 = c.astype(np.float32)
err32 = np.abs(1 + r * (V @ c32.astype(np.float64)) - np.exp(r)) / np.exp(r)
print("coefficients of q (float32):", [float(v) for v in c32])
print(f"max relative error: {err32.max():.3g} (float64 coefficients: {err.max():.3g})")
