"""Fit the float32 exp polynomials used in src/fastxent/kernels/fx_vecmath.h (vexp_poly_k).

The exp reduces x = (N m + j) ln2/N + r, |r| <= ln2/(2N), and needs exp(r) = 1 + r q(r):

  N = 1  (no table: the baseline ISA):      q of degree 5, about 1.7e-8 relative;
  N = 16 (a table of 2^(j/16): AVX2, AVX-512): q = 1 + c1 r + c2 r^2, about 1.7e-9.

Each q is fitted for minimal maximum relative error in exp(r) by Lawson's iteratively
reweighted least squares on a dense grid; for N = 16 q's constant term is held at 1 (the
kernel adds r q to 1 in one multiply-add). Prints the coefficients rounded to float32 and
the error they leave against float64 exp. Run: python tools/fit_exp_poly.py

The end-to-end error (reduction, table rounding, the final rounding) is measured over
every float32 by tools/check_exp_ulp.py.
"""
import numpy as np


def fit(n_table, degree, fix_constant, slack=1.0):
    a = np.log(2) / (2 * n_table) * slack         # slack: a little past ln2/(2N)
    r = np.linspace(-a, a, 20001)
    r = r[r != 0]
    rel = r / np.exp(r)                 # turns an error in q into a relative error in exp
    target = np.expm1(r) / r            # q(r) should equal (exp(r) - 1) / r
    first = 0
    if fix_constant:                    # q = 1 + r q1(r): fit q1
        target, rel, first = (target - 1) / r, rel * r, 1
    V = np.vander(r, degree + 1 - first, increasing=True)
    w = np.ones_like(r)
    for _ in range(200):
        sw = np.sqrt(w) * np.abs(rel)
        c, *_ = np.linalg.lstsq(V * sw[:, None], target * sw, rcond=None)
        err = np.abs(rel * (V @ c - target))
        w = w * err
        w /= w.sum()
    c32 = c.astype(np.float32)
    err32 = np.abs(rel * (V @ c32.astype(np.float64) - target))
    coef = ([1.0] if fix_constant else []) + [float(v) for v in c32]
    print(f"N = {n_table}: q's coefficients, constant first (float32): {coef}")
    print(f"        max relative error in exp(r): {err32.max():.3g} "
          f"(float64 coefficients: {err.max():.3g})")


fit(1, 5, fix_constant=False)
fit(16, 2, fix_constant=True, slack=1.02)
