"""Every public name is documented, with its shapes, and appears in the API reference.

The rule, precisely:

* **Public objects** are the functions and classes listed in ``__all__`` of ``rnnkit``, of
  ``rnnkit.onnx``, ``rnnkit.keras``, ``rnnkit.flax`` and of the modules of its layers:
  ``rnnkit.ops``, ``rnnkit.reference``, ``rnnkit.nn``, ``rnnkit.models``,
  ``rnnkit.distributed``, ``rnnkit.train`` and each of their non-underscore submodules (the
  former flat modules only re-export these objects). Each must have a docstring of its own (a
  class's inherited or generated one, such as a NamedTuple's ``"X(a, b)"``, does not count).
* **Public methods** are the functions defined in the body of a public class whose names do
  not start with ``_``, plus ``__call__``. Each must have a docstring, its own or that of the
  method it overrides (``inspect.getdoc``). Properties are attributes and are not checked.
* **Shapes**: a public function, class (its ``__init__``) or method *handles arrays* if one of
  its parameters or its return value is annotated with an array type (the annotation names
  ``ArrayLike`` or ``ndarray``, other than as the values of a ``dict``). Its docstring must
  then give at least one shape in the shape letters: a parenthesised, comma-separated tuple of
  dimensions, each a capitalised letter-name (``T``, ``G*H``, ``4H``, ``L*D``, ``H_out``) or
  ``...``, such as ``(T, B, I)``, ``(G*H,)`` or ``(..., C)``; ``(...)`` (any shape) counts.
  For a class the class docstring counts; for ``forward``, ``backward`` and ``__call__`` the
  class docstring counts too (modules describe their call there, as torch.nn does).
* The letters T, B, I, H, G are defined once, on the first page of the documentation
  (``docs/index.md``); the API reference (``docs/api/*.rst``) documents, with ``:members:``,
  every module that defines a public object, and that module lists the object in its
  ``__all__`` (so the object appears in the reference).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import sys
from pathlib import Path

import pytest

import rnnkit

DOCS = Path(__file__).resolve().parent.parent / "docs"
LAYERS = ("ops", "reference", "nn", "models", "distributed", "train")
MODULES = ("rnnkit.onnx", "rnnkit.keras", "rnnkit.flax")  # public modules outside the layers
# Result types live in a private module (shared by ops and reference); the reference
# documents it on the page of the package.
DEFINING_MODULES_ALSO = ("rnnkit._types",)

_DIM = r"\s*(?:\.\.\.|[0-9]*[A-Z][A-Za-z0-9_]*(?:\s*[*+-]\s*[0-9]*[A-Z0-9][A-Za-z0-9_]*)*)\s*"
SHAPE = re.compile(rf"\((?:{_DIM},)+(?:{_DIM})?\)|\(\s*\.\.\.\s*\)")
ARRAY_ANNOTATION = re.compile(r"ArrayLike|ndarray")


def public_modules() -> list[str]:
    names = ["rnnkit", *MODULES]
    for layer in LAYERS:
        pkg = importlib.import_module(f"rnnkit.{layer}")
        names.append(pkg.__name__)
        subs = [m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")]
        names += [f"{pkg.__name__}.{m}" for m in subs]
    return names


def public_objects() -> dict[str, object]:
    """{qualified name: object} for every public function and class, once each."""
    found: dict[int, tuple[str, object]] = {}
    for modname in public_modules():
        mod = importlib.import_module(modname)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and id(obj) not in found:
                found[id(obj)] = (f"{obj.__module__}.{obj.__qualname__}", obj)
    return dict(found.values())


def public_methods(cls: type) -> dict[str, object]:
    out = {}
    for name, member in vars(cls).items():
        if name.startswith("_") and name != "__call__":
            continue
        func = getattr(member, "__func__", member)  # staticmethod / classmethod
        if inspect.isfunction(func):
            out[name] = getattr(cls, name)
    return out


def handles_arrays(func: object) -> bool:
    try:
        sig = inspect.signature(func)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return False
    annotations = [p.annotation for p in sig.parameters.values()] + [sig.return_annotation]
    for a in annotations:
        text = a if isinstance(a, str) else getattr(a, "__name__", str(a))
        text = re.sub(r"dict\[[^\]]*\]", "", str(text))  # a mapping of arrays is not a shape
        if ARRAY_ANNOTATION.search(text):
            return True
    return False


def own_doc(obj: object) -> str:
    doc = vars(obj).get("__doc__") if inspect.isclass(obj) else obj.__doc__
    return inspect.cleandoc(doc) if doc else ""


PUBLIC = public_objects()


def test_the_rule_sees_the_api():
    # the walk finds the kernels, the modules and the trainers (a walk that found nothing
    # would pass every test below)
    names = set(PUBLIC)
    for expected in (
        "rnnkit.ops.recurrent.lstm_forward",
        "rnnkit.reference.recurrent.gru_backward",
        "rnnkit.nn.recurrent.LSTM",
        "rnnkit.models.seq2seq.Seq2Seq",
        "rnnkit.train.fit.fit",
        "rnnkit.set_num_threads",
    ):
        assert expected in names
    assert len(PUBLIC) > 100


def test_shape_pattern():
    for good in ("x (T, B, I)", "b_ih (G*H,)", "h_n (L*D, B, H_out)", "(4H, I)", "(..., C)", "(...)"):
        assert SHAPE.search(good), good
    for bad in ("like x", "(see below)", "(x, y)", "(B)", "(one step)"):
        assert not SHAPE.search(bad), bad


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_object_documented_with_shapes(name):
    obj = PUBLIC[name]
    doc = own_doc(obj)
    assert doc, f"{name}: no docstring"
    problems = []
    func = obj.__init__ if inspect.isclass(obj) else obj  # type: ignore[misc]
    if handles_arrays(func) and not SHAPE.search(doc):
        problems.append(f"{name}: takes or returns arrays but its docstring gives no shape in letters")
    if inspect.isclass(obj):
        for mname, method in public_methods(obj).items():
            mdoc = inspect.getdoc(method) or ""
            if not mdoc:
                problems.append(f"{name}.{mname}: no docstring")
                continue
            text = mdoc + ("\n" + doc if mname in ("forward", "backward", "__call__") else "")
            if handles_arrays(method) and not SHAPE.search(text):
                problems.append(f"{name}.{mname}: takes or returns arrays but gives no shape in letters")
    assert not problems, "\n".join(problems)


def _documented_modules() -> set[str]:
    documented = set()
    for page in (DOCS / "api").glob("*.rst"):
        for m in re.finditer(r"^\.\. automodule:: (\S+)\n((?:   :.*\n)*)", page.read_text(), re.M):
            if ":members:" in m.group(2):
                documented.add(m.group(1))
    return documented


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_public_object_in_the_reference(name):
    obj = PUBLIC[name]
    modname = obj.__module__
    assert modname in set(public_modules()) | set(DEFINING_MODULES_ALSO), (
        f"{name}: defined in {modname}, which is neither public nor documented"
    )
    short = obj.__qualname__
    if modname == "rnnkit":  # the package page lists its own functions one by one
        text = (DOCS / "api" / "rnnkit.rst").read_text()
        assert f".. autofunction:: rnnkit.{short}" in text, f"{name}: missing from docs/api/rnnkit.rst"
        return
    assert modname in _documented_modules(), f"{name}: its module {modname} has no automodule :members:"
    assert short in sys.modules[modname].__all__, f"{name}: not in {modname}.__all__, so not in the reference"


def test_rnnkit_functions_all_listed():
    # a function defined in rnnkit/__init__.py and exported must be on the package page
    text = (DOCS / "api" / "rnnkit.rst").read_text()
    for name in rnnkit.__all__:
        obj = getattr(rnnkit, name)
        if inspect.isfunction(obj) and obj.__module__ == "rnnkit":
            assert f".. autofunction:: rnnkit.{name}" in text, name


def test_shape_letters_defined_on_the_first_page():
    first = (DOCS / "index.md").read_text()
    for letter in "TBIHG":
        defined = re.search(rf"^\| \*\*{letter}\*\* \| \S", first, re.M)
        assert defined, f"{letter} not defined in docs/index.md"
