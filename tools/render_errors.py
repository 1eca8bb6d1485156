#!/usr/bin/env python3
"""Render docs/errors.md (every bad input and the error it gets) from real runs.

    python tools/render_errors.py            # regenerate docs/errors.md
    python tools/render_errors.py --stdout   # print it instead

The cases are ``BAD_INPUTS`` in ``tests/error_cases.py``: each is called with the installed
rnnkit and its exception type and message go into the table. ``tests/test_bad_inputs.py``
checks every case's exception and message, and that docs/errors.md equals what this renders.
Render it with torch installed: some cases pass torch tensors and dtypes.
"""

import argparse
import os
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))
DOC = os.path.join(ROOT, "docs", "errors.md")
sys.path.insert(0, os.path.join(ROOT, "tests"))

import rnnkit  # noqa: E402
from error_cases import BAD_INPUTS  # noqa: E402
from rnnkit import _validate  # noqa: E402


def md(text):
    """Escape the table separator."""
    return text.replace("|", "\\|")


def render(cases=None):
    """docs/errors.md as text, from running every case now (default: all of BAD_INPUTS)."""
    cases = BAD_INPUTS if cases is None else cases
    lines = [
        "# Bad inputs and the errors they get",
        "",
        "Generated from real runs by `python tools/render_errors.py`; the cases are `BAD_INPUTS`",
        "in `tests/error_cases.py`, where `tests/test_bad_inputs.py` checks each exception type",
        "and message (and that this page is up to date). Base call: `lstm_forward` in float64",
        "with T=3, B=2, I=4, H=5 (so G*H = 20), changed in one argument. Memory sizes in",
        "messages are those of the machine that generated the table",
        f"({_validate._human(_validate.memory_limit() or 0)}, RAM + swap).",
        "",
        "Rules behind the table:",
        "",
        "- Every message starts with the argument's name, then what was expected (symbolically",
        "  and in numbers) and what was given. Wrong kinds of data raise `TypeError`; wrong",
        "  shapes or values raise `ValueError`; misuse of a module's state raises `RuntimeError`.",
        "- dtypes: float32 or float64, one dtype per call (set by `x`, or by the workspace for",
        "  backward). Integer, bool, complex, object, string and other float widths are",
        "  rejected, float16 included: it is never computed in another precision silently.",
        "  float32/float64 in non-native byte order are accepted (same values; results are",
        "  native). `rnnkit.nn` modules require exactly their own dtype.",
        "- torch tensors (CPU, float32/float64) are taken as arrays without a copy; `dtype=`",
        "  accepts `torch.float32` / `torch.float64`. A tensor with `requires_grad=True` is",
        "  refused, not detached silently (rnnkit's gradients come from its backward functions:",
        "  a quietly detached tensor would leave torch's autograd gradients missing); bfloat16",
        "  is refused like float16 (`load_state_dict`, which only copies values, accepts",
        "  both). Ragged nested lists are `ValueError` naming the argument.",
        "- Any layout is accepted: non-contiguous, negative strides, Fortran order, broadcast",
        "  (stride 0), read-only, Python lists; results are bitwise those of C-contiguous",
        "  arrays. Outputs are always fresh arrays; inputs are never written.",
        "- T = 0 or B = 0 (and I = 0, H = 0) give correctly shaped empty or zero results.",
        "- NaN and Inf propagate as IEEE arithmetic says (position by position as the NumPy",
        "  oracle); nothing crashes. tanh(+-inf) = +-1, sigmoid(-inf) = 0, exp underflows to 0.",
        "  One deliberate difference from plain multiplication: relu's gradient is a select, as",
        "  in PyTorch (a unit whose pre-activation is <= 0 or NaN passes exactly 0, even when",
        "  the incoming gradient is NaN or Inf).",
        "- Large values: sigmoid and tanh are exact to a few ulp and their gradients finite for",
        "  pre-activations up to |a| = 1e4 and beyond; softmax and the cross-entropy shift by",
        "  the row maximum and stay finite and exact for logits up to 1e4 (spread 2e4).",
        "- Sizes: every GEMM dimension (T*B, G*H, I) must fit the BLAS's 32-bit integers",
        "  (`ValueError`); byte counts that do not fit 64 bits are `ValueError`; a call whose",
        "  buffers (all of them: outputs, workspace, scratch, the BLAS's 33 MiB GEMM buffer)",
        "  exceed the machine's RAM + swap, or what an address-space limit (RLIMIT_AS,",
        "  `ulimit -v`) still leaves, is `MemoryError` before any allocation, naming the",
        "  argument and the bytes; other allocation failures (C++ `std::bad_alloc`, in any",
        "  kernel or thread, NumPy) are `MemoryError` too.",
        "",
        "| group | input tried | exception | message |",
        "|---|---|---|---|",
    ]
    threads = rnnkit.get_num_threads()
    try:
        for case in cases:
            try:
                case.call()
                got, msg = "(no error)", ""
            except Exception as e:  # the table reports whatever happens
                got, msg = type(e).__name__, str(e)
            lines.append(f"| {case.group} | {md(case.what)} | `{got}` | `{md(msg)}` |")
    finally:
        rnnkit.set_num_threads(threads)  # a case may set it
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdout", action="store_true", help="print the page instead of writing it")
    args = parser.parse_args(argv)
    text = render()
    if args.stdout:
        sys.stdout.write(text)
    else:
        with open(DOC, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(DOC)} ({len(BAD_INPUTS)} cases)")


if __name__ == "__main__":
    main()
