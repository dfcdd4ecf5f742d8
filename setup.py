"""Build fastxent's compiled core.

One extension, fastxent._core: the Cython loops (_core.pyx) and the C kernels, each
(precision, ISA) instance its own translation unit (src/fastxent/kernels/fx_*_*.c),
compiled in parallel (FASTXENT_BUILD_JOBS, default: the processor count).

OpenMP is detected by compiling and running a tiny OpenMP program with the compiler
setuptools picked; when that fails the core is built serially, with a warning, and
fastxent.show_config() reports it (FASTXENT_NO_OPENMP=1 forces it). The build targets
the compiler's baseline ISA (no -march=native): the AVX2 and AVX-512 instances are
compiled alongside through function target attributes and chosen at import time from
what the CPU supports. FASTXENT_BASELINE_ONLY=1 builds the baseline instances alone (a
quick build for tests of the build itself). No debug information (-g0): the module
stays small. FASTXENT_SANITIZE=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer
(tools/sanitize.sh).
"""
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d\\n", n > 0 && omp_get_max_threads() > 0);
        return 0;
    }
    """
)


def openmp_flags(compiler):
    """(compile_args, link_args) that enable OpenMP, or None if the compiler has none."""
    if os.environ.get("FASTXENT_NO_OPENMP"):
        return None
    if compiler.compiler_type == "msvc":
        return ["/openmp"], []
    candidates = [(["-fopenmp"], ["-fopenmp"])]
    if sys.platform == "darwin":
        candidates.append((["-Xpreprocessor", "-fopenmp"], ["-lomp"]))
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "probe.c")
        with open(src, "w") as f:
            f.write(OPENMP_PROBE)
        for cflags, lflags in candidates:
            try:
                objs = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                exe = os.path.join(tmp, "probe")
                compiler.link_executable(objs, exe, extra_postargs=lflags)
                out = subprocess.run([exe], capture_output=True, text=True, timeout=60)
                if out.returncode == 0 and out.stdout.strip() == "1":
                    return cflags, lflags
            except Exception:  # noqa: BLE001 - any failure means "no OpenMP here"
                continue
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return None


def parallel_compile(compiler, jobs):
    """Make compiler.compile build its objects `jobs` at a time (distutils compiles one
    after another), the biggest (by source size) first."""
    def compile(sources, output_dir=None, macros=None, include_dirs=None, debug=0,
                extra_preargs=None, extra_postargs=None, depends=None):
        macros, objects, extra_postargs, pp_opts, build = compiler._setup_compile(
            output_dir, macros, include_dirs, sources, depends, extra_postargs)
        cc_args = compiler._get_cc_args(pp_opts, debug, extra_preargs)

        def one(obj):
            src, ext = build[obj]
            compiler._compile(obj, src, ext, cc_args, extra_postargs, pp_opts)

        order = sorted(build, key=lambda o: -os.path.getsize(build[o][0]))
        with ThreadPoolExecutor(max(1, jobs)) as pool:
            list(pool.map(one, order))
        return objects

    compiler.compile = compile


class BuildExt(build_ext):
    def build_extensions(self):
        if self.compiler.compiler_type != "msvc":
            parallel_compile(self.compiler, int(os.environ.get("FASTXENT_BUILD_JOBS", 0))
                             or os.cpu_count() or 1)
        flags = openmp_flags(self.compiler)
        if flags is None:
            warnings.warn(
                "fastxent: the C compiler has no working OpenMP; building the kernels "
                "serially (every call will use one thread).",
                stacklevel=1,
            )
            cflags, lflags = [], []
        else:
            cflags, lflags = flags
        if self.compiler.compiler_type != "msvc":
            # -O3 unswitches the hoisted option branches out of the inner loops; no
            # -ffast-math: it would break the NaN/inf semantics the kernels promise.
            cflags = cflags + ["-O3", "-g0", "-Wno-psabi", "-Wno-unused-function"]
            if os.environ.get("FASTXENT_SANITIZE"):
                # AddressSanitizer and UndefinedBehaviorSanitizer (tools/sanitize.sh runs
                # the test suite on such a build); any error aborts the process
                san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                       "-fno-omit-frame-pointer", "-g"]
                cflags, lflags = cflags + san, lflags + san
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args) + cflags
            ext.extra_link_args = list(ext.extra_link_args) + lflags
        super().build_extensions()


KERNELS = "src/fastxent/kernels"
BASELINE_ONLY = bool(os.environ.get("FASTXENT_BASELINE_ONLY"))
kernel_sources = sorted(
    f for f in glob.glob(f"{KERNELS}/fx_*.c")
    if not BASELINE_ONLY or not f.endswith(("_avx2.c", "_avx512.c"))
)

extensions = [
    Extension(
        "fastxent._core",
        sources=["src/fastxent/_core.pyx"] + kernel_sources,
        include_dirs=[np.get_include(), KERNELS],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")]
        + ([("FX_BASELINE_ONLY", "1")] if BASELINE_ONLY else []),
        depends=sorted(glob.glob(f"{KERNELS}/*.h")),
    )
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildExt},
)
