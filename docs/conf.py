"""Sphinx configuration of rnnkit's documentation.

Build (from the repository root, after ``pip install ".[docs]"``)::

    python -m sphinx -W -b html docs docs/_build/html
    python -m sphinx -W -b doctest -D plot_gallery=0 docs docs/_build/doctest

The tutorials under ``docs/tutorials/`` are executed by sphinx-gallery during the html build
(their rendered pages go to ``docs/auto_tutorials/``, which is not under version control);
``-D plot_gallery=0`` skips executing them again for the doctest build.
"""

from __future__ import annotations

import rnnkit

project = "rnnkit"
author = "the rnnkit authors"
copyright = "2026, the rnnkit authors"
release = version = rnnkit.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "tutorials/README.rst", "auto_tutorials/*.ipynb", "auto_tutorials/*.py"]

# The API reference: each page under api/ lists its modules with :members: (their __all__),
# signatures with their type hints.
autodoc_default_options: dict[str, object] = {}
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
napoleon_numpy_docstring = True
napoleon_google_docstring = True  # Seq2Seq and a few others list their arguments under "Args:"
add_module_names = False

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3

# doctest: every example in a docstring runs with numpy (as np) and rnnkit imported.
doctest_global_setup = """
import numpy as np
import rnnkit
"""

sphinx_gallery_conf = {
    "examples_dirs": "tutorials",
    "gallery_dirs": "auto_tutorials",
    "filename_pattern": r"/plot_",
    "within_subsection_order": "FileNameSortKey",
    "download_all_examples": False,
    "write_computation_times": False,
    "remove_config_comments": True,
    "abort_on_example_error": True,
    "matplotlib_animations": False,
    "image_scrapers": ("matplotlib",),
}

html_theme = "furo"
html_title = f"rnnkit {release}"
html_static_path: list[str] = []
