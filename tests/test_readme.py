"""Every Python example in README.md runs unchanged and prints what the README says it prints."""

import contextlib
import importlib.util
import io
import pathlib
import re

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
# The ONNX example needs the optional onnx package (in the test extra); without it, it is left out.
if importlib.util.find_spec("onnx") is None:
    BLOCKS = [b for b in BLOCKS if "rnnkit.onnx" not in b]


def test_readme_has_examples():
    assert len(BLOCKS) >= 2


def test_readme_examples_run_in_order():
    # The blocks build on each other (the module example reuses the quick start's x), as a
    # reader would run them: one namespace, in order.
    namespace: dict = {}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for i, block in enumerate(BLOCKS):
            try:
                exec(compile(block, f"README.md python block {i}", "exec"), namespace)
            except Exception as e:  # pragma: no cover - the message says which block
                pytest.fail(f"README python block {i} raised {type(e).__name__}: {e}\n{block}")
    # Comments of the form "# (256, 64) (50, 8, 32)" after a print say what it prints.
    checked = 0
    for block in BLOCKS:
        for line in block.splitlines():
            m = re.match(r"\s*print\(.*\)\s*#\s*(\(.*\))\s*$", line)
            if m:
                assert m.group(1) in out.getvalue(), f"README says {line!r}; printed {out.getvalue()!r}"
                checked += 1
    assert checked >= 1, "no print with its expected output found in the README"
