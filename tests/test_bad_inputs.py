"""Every bad input gets a clear error: the right exception type, a message that names the
argument, what was expected and what was given.

The cases are ``BAD_INPUTS`` in ``tests/error_cases.py``; ``docs/errors.md`` is rendered from
them by ``python tools/render_errors.py``, and a test here checks that it is up to date.
"""

import importlib.util
import os
import re

import numpy as np
import pytest

import rnnkit
from conftest import CELLS
from error_cases import BAD_INPUTS, B, H, base_args
from rnnkit import _validate

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir)


def _case_id(case):
    return re.sub(r"[^A-Za-z0-9=*.]+", "_", case.what).strip("_")[:70]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[_case_id(c) for c in BAD_INPUTS])
def test_bad_input(case):
    if case.exc is MemoryError and _validate.memory_limit() is None:
        pytest.skip("the machine's memory size is unknown here")
    threads = rnnkit.get_num_threads()
    try:
        with pytest.raises(case.exc) as info:
            case.call()
    finally:
        rnnkit.set_num_threads(threads)
    message = str(info.value)
    assert message.startswith(case.message), f"\n  got:      {message}\n  expected: {case.message}"
    assert type(info.value) is case.exc  # not a subclass (e.g. numpy's own errors)


def _load_renderer():
    """tools/render_errors.py as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "render_errors", os.path.join(ROOT, "tools", "render_errors.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# The machine's memory size, which the page's header and its MemoryError messages quote.
_MACHINE_MEMORY = re.compile(r"\(\d+(\.\d)? (bytes|KiB|MiB|GiB|TiB|PiB|EiB), RAM \+ swap\)")


def test_docs_errors_md_is_up_to_date():
    """docs/errors.md is what tools/render_errors.py renders now, up to the memory size of the
    machine that rendered it."""
    if _validate.memory_limit() is None:
        pytest.skip("the machine's memory size is unknown here (the MemoryError cases differ)")
    pytest.importorskip("torch")  # the page has the torch cases' rows
    rendered = _load_renderer().render()
    with open(os.path.join(ROOT, "docs", "errors.md"), encoding="utf-8") as f:
        doc = f.read()
    assert _MACHINE_MEMORY.search(rendered), "the page quotes the machine's memory size"
    assert _MACHINE_MEMORY.sub("(M, RAM + swap)", doc) == _MACHINE_MEMORY.sub("(M, RAM + swap)", rendered), (
        "docs/errors.md is out of date: regenerate it with `python tools/render_errors.py`"
    )


# ============================================================================= shapes, all arguments


def _seq_args(cell, dtype=np.float64, proj=False):
    args = base_args(dtype, cell)
    if proj:
        P = 3
        args.update(
            h0=np.zeros((B, P), dtype), W_hh=np.zeros((4 * H, P), dtype), W_hr=np.zeros((P, H), dtype)
        )
    return args


def _forward_kw(cell):
    return CELLS[cell][1]


@pytest.mark.parametrize(
    "cell, proj", [(c, False) for c in CELLS] + [("lstm", True)], ids=list(CELLS) + ["lstm_proj"]
)
def test_every_shape_error_names_argument_expected_and_actual(cell, proj):
    args = _seq_args(cell, proj=proj)
    fn = getattr(rnnkit, f"{CELLS[cell][0]}_forward")
    fn(**args, **_forward_kw(cell))  # the valid baseline
    for name, a in args.items():
        bads = [a[None], a.reshape(-1)[:1].reshape(()) if a.ndim == 1 else a[0]]
        bads += [
            np.zeros(tuple(s + (k == i) for k, s in enumerate(a.shape)), a.dtype)
            for i in range(a.ndim)
            if not (name == "x" and i != 1)
        ]
        for bad in bads:
            with pytest.raises(ValueError) as info:
                fn(**dict(args, **{name: bad}), **_forward_kw(cell))
            msg = str(info.value)
            # x's batch / time sizes are the reference others are checked against, and an
            # x with the wrong rank is reported on x; otherwise the changed argument is named
            named = msg.split(":")[0]
            if name == "x" and bad.ndim == 3:
                assert named in ("h0", "c0"), msg
                continue
            if name == "W_hr" and named == "W_hh":  # W_hr sets P and H, W_hh is checked by them
                continue
            assert named == name, msg
            assert "expected" in msg and str(tuple(bad.shape)) in msg, msg
