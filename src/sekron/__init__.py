"""sekron: tensor decomposition by sequences of Kronecker products (SeKron, arXiv:2210.06299)."""

from .decomposition import decompose
from .kron import kron, rearrange, unrearrange
from .random import random_sekron
from .tensor import SeKronTensor

__version__ = "0.1.0"

__all__ = [
    "SeKronTensor",
    "__version__",
    "decompose",
    "kron",
    "random_sekron",
    "rearrange",
    "unrearrange",
]
