"""sekron: tensor decomposition by sequences of Kronecker products (SeKron, arXiv:2210.06299)."""

from importlib import metadata as _metadata

from . import structures
from .compare import CompareTable, compare
from .decomposition import decompose
from .interop import from_tensorly, to_tensorly
from .kron import kron, rearrange, unrearrange
from .random import random_sekron
from .refinement import refine
from .search import Candidate, SearchResult, search
from .tensor import SeKronTensor

__version__ = _metadata.version("sekron")

__all__ = [
    "Candidate",
    "CompareTable",
    "SeKronTensor",
    "SearchResult",
    "__version__",
    "compare",
    "decompose",
    "from_tensorly",
    "kron",
    "random_sekron",
    "rearrange",
    "refine",
    "search",
    "structures",
    "to_tensorly",
    "unrearrange",
]
