"""Sphinx configuration. Build with: sphinx-build -b html docs docs/_build/html"""

from __future__ import annotations

import importlib.util

import sekron

# The API pages document sekron.torch (and sekron.jax): without torch, autodoc would warn and
# leave them out silently. Say so once, with the command that fixes it.
_missing = [m for m in ("torch", "jax") if importlib.util.find_spec(m) is None]
if _missing:
    raise RuntimeError(
        f"the docs build needs {' and '.join(_missing)} for the sekron.torch/sekron.jax API "
        'pages; install them first: pip install torch==2.13.0 && pip install -e ".[docs,torch,jax]"'
    )

project = "sekron"
author = "sekron developers"
release = sekron.__version__
version = sekron.__version__

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
]
myst_enable_extensions = ["dollarmath", "amsmath"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build"]
numpydoc_show_class_members = False
autosummary_generate = True
autodoc_typehints = "none"
html_theme = "alabaster"
html_static_path = ["_static"]
