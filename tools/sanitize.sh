#!/usr/bin/env bash
# Build rnnkit with AddressSanitizer + UndefinedBehaviorSanitizer (CMake option RNNKIT_SANITIZE)
# into a fresh temporary venv and run the kernel tests under it. Exits non-zero if a test fails
# or if either sanitizer reports anything (a report aborts the process; the report itself is
# written to a log file, printed at the end, since pytest's output capture would swallow it).
#
#   tools/sanitize.sh                 # the default test selection below
#   tools/sanitize.sh -k lstm         # extra arguments go to pytest
#   KEEP=1 tools/sanitize.sh          # keep the temporary directory (path printed) ...
#   REUSE=/tmp/rnnkit-sanitize.XXXXXX tools/sanitize.sh   # ... and rerun the tests in it
#
# The dev venv and the source tree are not touched: the package is built non-editable from a
# copy-free `pip install .` (scikit-build-core builds in a temporary directory).
# Needs: python3 with venv, gcc (its libasan.so is preloaded: the sanitized extension is loaded
# into an uninstrumented python, so the ASan runtime must come first).
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS

if [[ -n "${REUSE:-}" ]]; then
  tmp="$REUSE"
else
  tmp="$(mktemp -d -t rnnkit-sanitize.XXXXXX)"
  if [[ -z "${KEEP:-}" ]]; then trap 'rm -rf "$tmp"' EXIT; else echo "sanitize: keeping $tmp"; fi
fi
py="$tmp/venv/bin/python"
logs="$tmp/reports"
rm -rf "$logs"
mkdir -p "$logs"

if [[ -z "${REUSE:-}" ]]; then
  python3 -m venv "$tmp/venv"
  echo "sanitize: building rnnkit with RNNKIT_SANITIZE=ON into $tmp/venv"
  "$py" -m pip install --quiet --no-cache-dir -C cmake.define.RNNKIT_SANITIZE=ON ".[test]"
  echo "sanitize: built in $((SECONDS - start)) s"
fi

libasan="$(gcc -print-file-name=libasan.so)"
# libstdc++ is preloaded too: python itself does not link it, and ASan can only intercept
# __cxa_throw (every C++ exception, e.g. std::bad_alloc -> MemoryError) if it is loaded at start.
libstdcxx="$(gcc -print-file-name=libstdc++.so)"
for lib in "$libasan" "$libstdcxx"; do
  if [[ ! -e "$lib" ]]; then
    echo "sanitize: $lib not found (needs gcc's runtime libraries)" >&2
    exit 2
  fi
done

# Leak detection is off: CPython does not free everything at exit. Every other ASan and UBSan
# check is on and fatal (the extension is also compiled with -fno-sanitize-recover=undefined).
# allocator_may_return_null: an impossible allocation (the MemoryError tests ask for petabytes)
# returns null / throws std::bad_alloc as it does without ASan, instead of aborting; ASan
# then logs a WARNING, which is expected and not counted as a report.
export LD_PRELOAD="$libasan $libstdcxx"
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:halt_on_error=1:abort_on_error=1:strict_string_checks=1:detect_stack_use_after_return=1:check_initialization_order=1:log_path=$logs/asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan"
# Tells the tests they run sanitized (the resident-memory test skips: ASan's quarantine grows
# the RSS by design; the hypothesis profile runs fewer examples).
export RNNKIT_SANITIZED=1
export PYTHONFAULTHANDLER=1

# The sanitized package must be the one imported: run outside the source tree's python/ dir
# (the tests import rnnkit, never python/rnnkit, since it is not on sys.path).
tests=(tests/test_kernels.py tests/test_errors.py tests/test_reference.py tests/test_properties.py
       tests/test_bad_inputs.py tests/test_layouts.py tests/test_degenerate_sizes.py
       tests/test_workspaces.py tests/test_numerical_safety.py tests/test_memory.py
       tests/test_private_core.py tests/test_concurrency.py tests/test_kernel_choice.py
       tests/test_fp_env.py tests/test_fork.py tests/test_bf16.py)
status=0
"$py" -m pytest -q -p no:cacheprovider "${tests[@]}" "$@" || status=$?
"$py" -c "import rnnkit, os; assert os.path.realpath(rnnkit.__file__).startswith(os.path.realpath('$tmp')), rnnkit.__file__" \
  || { echo "sanitize: the tests did not use the sanitized build" >&2; status=3; }

unset LD_PRELOAD
reports=("$logs"/*)
if [[ -e "${reports[0]}" ]]; then
  echo "sanitize: sanitizer output:" >&2
  cat "$logs"/* >&2
  # Errors (ASan "ERROR:", UBSan "runtime error:", internal CHECKs) fail the run; the expected
  # "WARNING: AddressSanitizer failed to allocate" lines of the MemoryError tests do not.
  if grep -qE "ERROR: |runtime error|CHECK failed|SUMMARY: " "$logs"/*; then
    echo "sanitize: sanitizer errors reported" >&2
    if [[ $status == 0 ]]; then status=1; fi
  fi
fi
echo "sanitize: pytest exit status $status, $((SECONDS - start)) s in all"
exit "$status"
