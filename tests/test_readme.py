"""Every Python example of the README runs unchanged, in order, in one namespace (a later
example may use what an earlier one defined, as a reader would)."""

import pathlib
import re

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_has_python_examples():
    assert len(_python_blocks()) >= 2


def test_readme_examples_run(capsys):
    namespace = {}
    for k, block in enumerate(_python_blocks()):
        exec(compile(block, f"README.md example {k + 1}", "exec"), namespace)  # noqa: S102
