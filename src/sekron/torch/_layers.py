"""SeKronConv2d: a thin ``nn.Module`` shell over :func:`sekron.torch.conv2d`.

The factors are ``nn.Parameter``s, so the layer trains and fine-tunes like any other; the
kernel is never stored. :meth:`SeKronConv2d.from_conv` is the entry point from a trained
``nn.Conv2d``.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validation import _type_name, check_form, is_int
from ..tensor import SeKronTensor
from ._functional import METHODS, conv2d

__all__ = ["SeKronConv2d"]

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pair(value: Any, name: str) -> tuple[int, int]:
    """An int or a pair of ints as a pair; precise errors otherwise."""
    if is_int(value):
        v = (int(value), int(value))
    elif isinstance(value, Sequence) and not isinstance(value, str | bytes) and len(value) == 2:
        if not all(is_int(x) for x in value):
            raise TypeError(f"{name} must be an int or a pair of ints; got {value!r}.")
        v = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name} must be an int or a pair of ints; got {value!r}.")
    return v


def _as_torch_factors(st: SeKronTensor) -> list[torch.Tensor]:
    """Copies of the factors as torch tensors (numpy/jax converted, dtype kept)."""
    out = []
    for f in st.factors:
        t = f if isinstance(f, torch.Tensor) else torch.as_tensor(np.asarray(f))
        out.append(t.detach().clone())
    return out


class SeKronConv2d(nn.Module):
    """A 2-D convolution whose kernel is a SeKron tensor, stored as trainable factors.

    Parameters
    ----------
    st : SeKronTensor
        Kernel of shape ``(out_channels, in_channels, kh, kw)`` (4 modes), nested or chain.
        numpy or jax factors are converted to torch (dtype kept); the factors are copied into
        new ``nn.Parameter`` objects.
    bias : torch.Tensor, optional
        Shape ``(out_channels,)``; becomes a parameter (copied).
    stride, dilation : int or (int, int)
    padding : int, (int, int), "same" or "valid"
        As in ``nn.Conv2d``. ``"same"`` needs ``stride == 1``.
    padding_mode : {"zeros", "reflect", "replicate", "circular"}
        As in ``nn.Conv2d``: modes other than zeros pad the input with ``F.pad`` first.
    method : str
        Passed to :func:`sekron.torch.conv2d` (``"auto"`` picks the faster of the factorized
        stage plan and one dense conv on the rebuilt kernel).

    Attributes
    ----------
    factor0, factor1, ... : torch.nn.Parameter
        The SeKron factors, in the layout of :attr:`form` (SPEC §2); :attr:`factors` lists
        them. ``state_dict`` keys are ``factor0 .. factor{S-1}`` and ``bias``.
    bias : torch.nn.Parameter or None
    sekron : SeKronTensor
        The current kernel, built from the parameters (cheap: no copy, no reconstruction).

    Notes
    -----
    ``forward(x) == F.conv2d(x, self.sekron.to_tensor(), bias, stride, padding, dilation)``
    up to rounding; the factorized plan (SPEC §5) never builds the kernel. Grouped
    convolutions are not supported (``groups`` is always 1).

    References
    ----------
    Hameed et al., "SeKron: A Decomposition Method Supporting Many Factorization Structures",
    arXiv:2210.06299.

    Examples
    --------
    >>> import torch, sekron
    >>> from sekron.torch import SeKronConv2d
    >>> conv = torch.nn.Conv2d(64, 128, 3, padding=1)
    >>> layer = SeKronConv2d.from_conv(conv, shapes=[(8, 8, 3, 1), (16, 8, 1, 3)], rank=8)
    >>> layer  # doctest: +NORMALIZE_WHITESPACE
    SeKronConv2d(64, 128, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), nested,
                 shapes=((8, 8, 3, 1), (16, 8, 1, 3)), ranks=(8,), params=4,608 (16x))
    >>> layer(torch.randn(2, 64, 16, 16)).shape
    torch.Size([2, 128, 16, 16])
    """

    def __init__(
        self,
        st: SeKronTensor,
        bias: torch.Tensor | None = None,
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] | str = 0,
        dilation: int | Sequence[int] = 1,
        padding_mode: str = "zeros",
        method: str = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(st, SeKronTensor):
            raise TypeError(f"st must be a sekron.SeKronTensor; got {_type_name(st)}.")
        if st.ndim != 4:
            raise ValueError(
                f"st must be a 4-mode kernel (out_channels, in_channels, kh, kw); got shape "
                f"{st.shape} with {st.ndim} modes."
            )
        stride_p = _pair(stride, "stride")
        dilation_p = _pair(dilation, "dilation")
        for name, v in (("stride", stride_p), ("dilation", dilation_p)):
            if min(v) < 1:
                raise ValueError(f"{name} must be >= 1; got {v}.")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(
                    f"padding must be an int, a pair, 'same' or 'valid'; got {padding!r}."
                )
            if padding == "same" and stride_p != (1, 1):
                raise ValueError(
                    f"padding='same' needs stride 1 (as in nn.Conv2d); got stride={stride_p}."
                )
            padding_v: tuple[int, int] | str = padding
        else:
            padding_v = _pair(padding, "padding")
            if min(padding_v) < 0:
                raise ValueError(f"padding must be >= 0; got {padding_v}.")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}; got {padding_mode!r}.")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}.")
        out_channels, in_channels, kh, kw = st.shape
        factors = _as_torch_factors(st)
        if bias is not None:
            if not isinstance(bias, torch.Tensor):
                raise TypeError(f"bias must be a torch.Tensor or None; got {_type_name(bias)}.")
            if tuple(bias.shape) != (out_channels,):
                raise ValueError(
                    f"bias must have shape ({out_channels},) (out_channels); got "
                    f"{tuple(bias.shape)}."
                )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = (kh, kw)
        self.stride = stride_p
        self.padding = padding_v
        self.dilation = dilation_p
        self.groups = 1
        self.padding_mode = padding_mode
        self.method = method
        self.form = st.form
        self.shapes = st.shapes
        self.ranks = st.ranks
        self.rel_error: float | None = st.rel_error
        self.n_factors = len(factors)
        for k, f in enumerate(factors):
            self.register_parameter(f"factor{k}", nn.Parameter(f))
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(bias.detach().clone().to(factors[0].dtype))
        self._pad, self._conv_padding = self._padding_plan()
        self._sekron_cache: tuple[tuple[Any, ...], SeKronTensor] | None = None

    # -- construction from a dense conv --------------------------------------------------------
    @classmethod
    def from_conv(
        cls,
        conv: nn.Conv2d,
        *,
        shapes: Sequence[Sequence[int]] | None = None,
        structure: Any = None,
        rank: int | Sequence[int] | None = None,
        tol: float | None = None,
        compression: float | None = None,
        form: str = "nested",
        method: str = "auto",
    ) -> SeKronConv2d:
        """Factorize a trained ``nn.Conv2d`` into a SeKronConv2d.

        Parameters
        ----------
        conv : torch.nn.Conv2d
            Its stride, padding, dilation, padding_mode and bias are kept. ``groups`` must be 1.
        shapes : sequence of S tuples ``(f_k, c_k, h_k, w_k)``, optional
            Explicit factor shapes, decomposed by :func:`sekron.decompose` with ``rank``,
            ``tol`` or ``compression`` (none of them: full ranks, exact).
        structure : str or structure object, optional
            ``"cp"``, ``"tucker"``, ``"tucker2"``, ``"tt"``, ``"tr"``, ``"gkpd"`` or an object
            from :mod:`sekron.structures`, fitted with ``rank`` or ``compression``; or
            ``"search"``: the best candidate of :func:`sekron.search` within ``compression``,
            over the ``SEARCH_MAX_CONFIGS`` (200) most balanced factor configurations; for an
            exhaustive search call :func:`sekron.search` and pass its best candidate's shapes.
        rank : int or sequence of ints, optional
            Ranks (for ``shapes``) or the structure's rank.
        tol : float, optional
            With ``shapes`` only: the cheapest ranks with relative weight error <= tol.
        compression : float > 1, optional
            A parameter budget of ``conv.weight.numel() / compression``.
        form : {"nested", "chain"}
            With ``shapes`` only.
        method : str
            Execution method of :func:`sekron.torch.conv2d`.

        Returns
        -------
        SeKronConv2d
            Of the conv's dtype and device. ``rel_error`` holds the measured relative
            Frobenius error of the kernel.

        Raises
        ------
        TypeError
            ``conv`` is not an ``nn.Conv2d``.
        ValueError
            Grouped convolutions, neither or both of ``shapes`` and ``structure``, options that
            do not apply to the chosen way (``tol`` with a structure, ``form`` with a
            structure), or ``compression <= 1``.

        Examples
        --------
        >>> import torch
        >>> from sekron.torch import SeKronConv2d
        >>> conv = torch.nn.Conv2d(32, 64, 3, stride=2, bias=False)
        >>> layer = SeKronConv2d.from_conv(conv, shapes=[(8, 4, 3, 3), (8, 8, 1, 1)])
        >>> x = torch.randn(1, 32, 9, 9)
        >>> torch.allclose(layer(x), conv(x), atol=1e-5)
        True
        """
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be a torch.nn.Conv2d; got {_type_name(conv)}.")
        if conv.groups != 1:
            raise ValueError(
                f"grouped convolutions are not supported: conv.groups must be 1; got "
                f"groups={conv.groups}. Leave grouped/depthwise layers dense."
            )
        if (shapes is None) == (structure is None):
            raise ValueError(
                "give exactly one of shapes (explicit factor shapes) and structure (a name such "
                f"as 'cp', 'tucker2', 'gkpd' or 'search'); got shapes={shapes!r}, "
                f"structure={structure!r}."
            )
        max_params = budget_from_compression(compression, conv.weight.numel())
        weight = conv.weight.detach()
        if shapes is not None:
            from ..decomposition import decompose

            st = decompose(weight, shapes, rank, form=form, tol=tol, max_params=max_params)
        else:
            if check_form(form) != "nested":
                raise ValueError(
                    f"form applies to explicit shapes only; got form={form!r} with "
                    f"structure={structure!r} (a structure fixes its own form)."
                )
            if tol is not None:
                raise ValueError(
                    f"tol applies to explicit shapes only; got tol={tol!r} with "
                    f"structure={structure!r}. Use rank or compression."
                )
            st = fit_structure(
                weight, structure, rank=rank, max_params=max_params, compression=compression
            )
        layer = cls(
            st,
            conv.bias,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            padding_mode=conv.padding_mode,
            method=method,
        )
        layer.to(dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            rebuilt = layer.sekron.to_tensor()
            den = torch.linalg.vector_norm(weight.double())
            num = torch.linalg.vector_norm((rebuilt - weight).double())
            layer.rel_error = float(num / den) if float(den) > 0 else float(num)
        return layer

    # -- the current kernel --------------------------------------------------------------------
    @property
    def factors(self) -> tuple[nn.Parameter, ...]:
        """The factor parameters ``factor0 .. factor{S-1}``, in the layout of :attr:`form`."""
        params = self._parameters
        return tuple(params[f"factor{k}"] for k in range(self.n_factors))  # type: ignore[misc]

    @property
    def sekron(self) -> SeKronTensor:
        """The kernel as a SeKronTensor of the current parameters (shares their storage).

        The object is reused while the parameters are the same tensors of the same shapes
        (building and validating one cost more than a small convolution); it follows their
        values, dtype and device, which it does not copy.
        """
        factors = self.factors
        key = tuple((id(p), p.shape) for p in factors)
        hit = getattr(self, "_sekron_cache", None)
        if (
            hit is not None
            and hit[0] == key
            and all(a is b for a, b in zip(hit[1].factors, factors, strict=True))
        ):
            return hit[1]
        st = SeKronTensor(list(factors), self.form)
        compiler = getattr(torch, "compiler", None)
        if not (torch.jit.is_tracing() or (compiler is not None and compiler.is_compiling())):
            self._sekron_cache = (key, st)
        return st

    @property
    def n_params(self) -> int:
        """Parameters of the kernel factors (bias excluded)."""
        return sum(p.numel() for p in self.factors)

    @property
    def compression(self) -> float:
        """Dense kernel size over the factors' size (bias excluded)."""
        return (
            self.out_channels
            * self.in_channels
            * self.kernel_size[0]
            * self.kernel_size[1]
            / self.n_params
        )

    def to_conv(self) -> nn.Conv2d:
        """A dense ``nn.Conv2d`` with the rebuilt kernel (same options, dtype and device)."""
        ref = self.factors[0]
        conv = nn.Conv2d(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            bias=self.bias is not None,
            padding_mode=self.padding_mode,  # type: ignore[arg-type]
            device=ref.device,
            dtype=ref.dtype,
        )
        with torch.no_grad():
            conv.weight.copy_(self.sekron.to_tensor())
            if self.bias is not None and conv.bias is not None:
                conv.bias.copy_(self.bias)
        return conv

    # -- forward -------------------------------------------------------------------------------
    def _padding_plan(self) -> tuple[tuple[int, int, int, int] | None, tuple[int, int]]:
        """``(F.pad amounts or None, symmetric padding for the conv)``, as nn.Conv2d does."""
        if self.padding == "valid":
            return None, (0, 0)
        if self.padding == "same":
            lr: list[int] = []
            for d, k in zip(reversed(self.dilation), reversed(self.kernel_size), strict=True):
                total = d * (k - 1)
                lr += [total // 2, total - total // 2]
            left, right, top, bottom = (int(v) for v in lr)
            if self.padding_mode == "zeros" and left == right and top == bottom:
                return None, (top, left)
            return (left, right, top, bottom), (0, 0)
        assert not isinstance(self.padding, str)
        ph, pw = self.padding
        if self.padding_mode == "zeros":
            return None, (ph, pw)
        return (pw, pw, ph, ph), (0, 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._pad is not None:
            mode = "constant" if self.padding_mode == "zeros" else self.padding_mode
            x = F.pad(x, self._pad, mode=mode)
        return conv2d(
            x,
            self.sekron,
            self.bias,
            stride=self.stride,
            padding=self._conv_padding,
            dilation=self.dilation,
            method=self.method,
        )

    def extra_repr(self) -> str:
        text = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            text += (
                f", padding={self.padding!r}"
                if isinstance(self.padding, str)
                else (f", padding={self.padding}")
            )
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode!r}"
        if self.method != "auto":
            text += f", method={self.method!r}"
        return text + (
            f", {self.form}, shapes={self.shapes}, ranks={self.ranks}, "
            f"params={self.n_params:,} ({self.compression:.3g}x)"
        )


# ----------------------------------------------------------------------------------------------
# shared with compress()
# ----------------------------------------------------------------------------------------------
def budget_from_compression(compression: object, numel: int) -> int | None:
    """``numel / compression`` as an int budget; validates ``compression``."""
    if compression is None:
        return None
    if isinstance(compression, bool) or not isinstance(compression, numbers.Real):
        raise TypeError(
            f"compression must be a number > 1 (dense size / parameters); got "
            f"{_type_name(compression)}."
        )
    if not float(compression) > 1.0:
        raise ValueError(f"compression must be > 1; got {compression!r}.")
    return max(1, int(numel / float(compression)))


def structure_name(structure: Any) -> str:
    """Short name of a structure argument: the string itself or the object's ``.name``."""
    if isinstance(structure, str):
        return structure
    return str(getattr(structure, "name", type(structure).__name__))


# structure="search" evaluates this many factor configurations per layer, most balanced first
# (sekron.search's max_configs): an exhaustive 3-factor search of a 512x512x3x3 layer takes on
# the order of an hour on 2 cores, this one well under a minute.
SEARCH_MAX_CONFIGS = 200


def _search_function() -> Any:
    """:func:`sekron.search`, imported lazily (it is an optional part of the package)."""
    try:
        from ..search import search
    except ImportError as exc:  # pragma: no cover - only while sekron.search is missing
        raise ImportError(f"structure='search' needs sekron.search: {exc}") from exc
    return search


def fit_structure(
    weight: torch.Tensor,
    structure: Any,
    *,
    rank: Any = None,
    max_params: int | None = None,
    compression: float | None = None,
) -> SeKronTensor:
    """Fit ``structure`` (a name, a structure object or "search") to a conv weight."""
    if isinstance(structure, str) and structure == "search":
        search = _search_function()
        if rank is not None:
            raise ValueError(
                f"rank does not apply to structure='search' (it chooses ranks); got rank={rank!r}."
            )
        if compression is None:
            raise ValueError(
                "structure='search' needs a parameter budget: give compression (> 1); got "
                "compression=None."
            )
        result = search(
            weight,
            compression=compression,
            max_factors=3,
            max_configs=SEARCH_MAX_CONFIGS,
            progress=False,
        )
        st: SeKronTensor = result.best.to_sekron()
        return st
    if not isinstance(structure, str) and not hasattr(structure, "fit"):
        raise TypeError(
            "structure must be a name ('cp', 'tucker', 'tucker2', 'tt', 'tr', 'gkpd', 'search') "
            f"or a structure object with .fit; got {_type_name(structure)}."
        )
    try:
        from ..structures import get_structure
    except ImportError as exc:  # pragma: no cover - until sekron.structures lands
        raise ImportError(f"structure={structure!r} needs sekron.structures: {exc}") from exc
    obj = get_structure(structure)
    st = obj.fit(weight, rank=rank, max_params=max_params)
    return st
