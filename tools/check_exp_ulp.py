"""The kernels' float32 exp (kernels/fx_vecmath.h) against float64 exp over every float32
x in [log(2^-126), 0] (about 1.1e9 values), for each ISA variant this CPU runs: prints
the largest error in ulps and where. tests/test_vecmath.py samples the same range; this
covers all of it (about 30 s per ISA).

    python tools/check_exp_ulp.py          # the build in src/ (built in place)
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"))
import fastxent  # noqa: E402
from fastxent import _core  # noqa: E402

lo_bits = int(np.array([np.log(np.finfo(np.float32).tiny)], np.float32).view(np.uint32)[0])
for isa in fastxent.show_config()["isa_available"]:
    _core.select_isa(isa)
    worst, worst_x = 0.0, 0.0
    for start in range(0x80000000, lo_bits + 1, 1 << 24):      # -0.0 down to lo
        x = np.arange(start, min(start + (1 << 24), lo_bits + 1), dtype=np.uint32).view(np.float32)
        got = np.empty_like(x)
        _core.vecmath(x, got, 0)
        ref = np.exp(x.astype(np.float64))
        err = np.abs(got - ref) / np.spacing(ref.astype(np.float32)).astype(np.float64)
        i = int(err.argmax())
        if err[i] > worst:
            worst, worst_x = float(err[i]), float(x[i])
    print(f"{isa}: max {worst:.4f} ulp at x = {worst_x!r}", flush=True)
