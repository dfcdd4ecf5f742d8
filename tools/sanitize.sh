#!/usr/bin/env bash
# Run the test suite on a build with AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   bash tools/sanitize.sh [pytest arguments]      (default: tests -q -x)
#
# Builds this checkout in place with FASTXENT_SANITIZE=1 (setup.py) in a fresh virtual
# environment, then runs pytest with the sanitizer runtime preloaded (Python itself is not
# instrumented). Any memory or undefined-behaviour error in the compiled core aborts the
# run with a report. Leak checking is off: CPython's own allocations would drown it.
# Not part of CI (it takes several times the normal suite's time).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv-sanitize}"
rm -rf "$VENV" build
python3 -m venv "$VENV"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q ".[test]" Cython numpy setuptools
python -m pip install -q torch==2.13.0 || true
FASTXENT_SANITIZE=1 python setup.py build_ext --inplace -q
ASAN_LIB="$(gcc -print-file-name=libasan.so)"
UBSAN_LIB="$(gcc -print-file-name=libubsan.so)"
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export PYTHONPATH="$PWD/src"
if [ "$#" -eq 0 ]; then set -- tests -q -x -p no:cacheprovider; fi
python -m pytest "$@"
