"""Sphinx configuration. Build with: sphinx-build -b html docs docs/_build/html"""

from __future__ import annotations

import sekron

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
