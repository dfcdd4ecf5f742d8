"""Build fastxent's compiled core.

OpenMP is detected by compiling and running a tiny OpenMP program with the compiler
setuptools picked; when that fails the core is built serially, with a warning, and
fastxent.show_config() reports it. The build targets the compiler's baseline ISA (no
-march=native): the AVX2 and AVX-512 kernels are compiled alongside through function
target attributes and chosen at import time from what the CPU supports.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings

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


class BuildExt(build_ext):
    def build_extensions(self):
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
            cflags = cflags + ["-O3", "-Wno-psabi", "-Wno-unused-function"]
        for ext in self.extensions:
            ext.extra_compile_args = list(ext.extra_compile_args) + cflags
            ext.extra_link_args = list(ext.extra_link_args) + lflags
        super().build_extensions()


extensions = [
    Extension(
        "fastxent._core",
        sources=["src/fastxent/_core.pyx"],
        include_dirs=[np.get_include(), "src/fastxent"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        depends=[
            "src/fastxent/fx_kernels.h",
            "src/fastxent/fx_precisions.h",
            "src/fastxent/fx_impl.h",
        ],
    )
]

setup(
    ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}),
    cmdclass={"build_ext": BuildExt},
)
