"""SeKronConv2d: a thin ``nn.Module`` shell over :func:`sekron.torch.conv2d`.

The factors are ``nn.Parameter``s, so the layer trains and fine-tunes like any other; the
kernel is never stored. The constructor checks the options once (the checks of ``conv2d``)
and the forward calls the same internal convolution on them. :meth:`SeKronConv2d.from_conv`
is the entry point from a trained ``nn.Conv2d``; the factorizing itself is
:func:`sekron.torch._policy.factorize_weight`, shared with ``compress``.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._typing import ConvMethod, Form
from .._validation import _type_name, check_choice
from ..tensor import SeKronTensor
from ._checks import (
    METHODS,
    PADDING_MODES,
    ConvArgs,
    check_bias,
    check_conv_args,
    check_st,
    check_weight_dtype,
    check_x,
)
from ._functional import run_conv
from ._policy import check_factorize_options, factorize_weight

__all__ = ["SeKronConv2d"]


@lru_cache(maxsize=64)
def _factor_names(n: int) -> tuple[str, ...]:
    """``("factor0", .., f"factor{n-1}")``: the factors' parameter names, read on every forward
    (a cache hit runs no Python frame)."""
    return tuple(f"factor{k}" for k in range(n))


def _as_torch_factors(st: SeKronTensor) -> list[torch.Tensor]:
    """Copies of the factors as torch tensors (numpy/jax converted, dtype kept; a numpy view
    with negative strides, as a factor of reversed singular vectors can be, is copied first:
    torch refuses it)."""
    out = []
    for f in st.factors:
        t = f if isinstance(f, torch.Tensor) else torch.as_tensor(np.ascontiguousarray(f))
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
    method : {"auto", "factorized", "reconstructed"}
        Passed to :func:`sekron.torch.conv2d` (``"auto"`` picks the fastest of the dense conv
        on the rebuilt kernel and the factorized or merged plans, per regime: in eval mode
        with autograd on it times forwards, in train mode forwards plus backwards);
        ``"factorized"`` measures, per regime too, which of its two layouts runs faster.

    The options are checked once, here (as :func:`sekron.torch.conv2d` checks them); the
    forward then runs the same convolution on the checked values.

    Attributes
    ----------
    factor0, factor1, ... : torch.nn.Parameter
        The SeKron factors, in the layout of :attr:`form` (theory docs); :attr:`factors` lists
        them. ``state_dict`` keys are ``factor0 .. factor{S-1}`` and ``bias``.
    bias : torch.nn.Parameter or None
    sekron : SeKronTensor
        The current kernel, built from the parameters (cheap: no copy, no reconstruction).

    Notes
    -----
    ``forward(x) == F.conv2d(x, self.sekron.to_tensor(), bias, stride, padding, dilation)``
    up to rounding; the factorized plan (conv docs) never builds the kernel. Grouped
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
        method: ConvMethod = "auto",
    ) -> None:
        super().__init__()
        if not isinstance(st, SeKronTensor):
            raise TypeError(f"st must be a sekron.SeKronTensor; got {_type_name(st)}.")
        if st.ndim != 4:
            raise ValueError(
                f"st must be a 4-mode kernel (out_channels, in_channels, kh, kw); got shape "
                f"{st.shape} with {st.ndim} modes."
            )
        args = check_conv_args(stride, padding, dilation, 1, method, st.shape[2:])
        padding_mode = check_choice(padding_mode, "padding_mode", PADDING_MODES)
        factors = _as_torch_factors(st)
        kernel = SeKronTensor._trusted(factors, st.form, st.shapes, st.ranks)
        check_st(kernel, 2, "SeKronConv2d")
        if isinstance(bias, torch.Tensor):  # a copy in the factors' dtype and device
            bias = bias.detach().to(dtype=factors[0].dtype, device=factors[0].device)
        bias = check_bias(bias, kernel)
        self.in_channels, self.out_channels = st.shape[1], st.shape[0]
        self.kernel_size = (st.shape[2], st.shape[3])
        self.stride, self.dilation = args.stride, args.dilation
        self.padding = padding if isinstance(padding, str) else _padding_pair(args.pad4)
        self.groups = 1
        self.padding_mode = padding_mode
        self.method = method
        self.form, self.shapes, self.ranks = st.form, st.shapes, st.ranks
        self.rel_error: float | None = st.rel_error
        self.n_factors = len(factors)
        for k, f in enumerate(factors):
            self.register_parameter(f"factor{k}", nn.Parameter(f))
        if bias is None:
            self.register_parameter("bias", None)
        else:
            self.bias = nn.Parameter(bias.clone())
        self._set_args(args)

    def _set_args(self, args: ConvArgs) -> None:
        """Keep the checked options; padding modes other than zeros pad the input with F.pad
        first (``_mode_pad``), the conv then pads nothing."""
        zeros = self.padding_mode == "zeros"
        top, bottom, left, right = args.pad4
        self._args = args
        self._conv_args = args if zeros else args._replace(pad4=(0, 0, 0, 0))
        self._mode_pad = None if zeros else (left, right, top, bottom)

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
        form: Form = "nested",
        method: ConvMethod = "auto",
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
            ``"search"``: the best candidate of :func:`sekron.search` within ``compression``
            and no more MACs per output position than the dense conv, over every factor
            configuration with up to 3 factors, searched for at most ``DEFAULT_MAX_SECONDS``
            (30 s; every 2-factor configuration is always scored). For other MAC budgets or
            time limits call :func:`sekron.search` (``mac_compression``, ``max_seconds``) and
            pass its best candidate's shapes, or use :func:`sekron.torch.compress`.
        rank : int or sequence of ints, optional
            Ranks (for ``shapes``) or the structure's rank.
        tol : float, optional
            With ``shapes`` only: the cheapest ranks with relative weight error <= tol.
        compression : float > 1, optional
            A parameter budget of ``conv.weight.numel() / compression``. With a structure,
            give at most one of ``rank`` and ``compression``; with shapes, ``tol`` and
            ``compression`` exclude each other (``rank`` caps either).
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
            ``conv`` is not an ``nn.Conv2d``, or its weight is not float32/float64 (convert
            a half-precision layer first, e.g. ``conv.float()``).
        ValueError
            Grouped convolutions, neither or both of ``shapes`` and ``structure``, options that
            do not apply to the chosen way (``tol`` with a structure, ``form`` with a
            structure, ``rank`` with ``compression`` for a structure), ``compression <= 1``,
            or a weight on the meta device or with NaN/Inf.

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
        options = check_factorize_options(
            shapes_given=shapes is not None,
            structure=structure,
            rank=rank,
            tol=tol,
            compression=compression,
            form=form,
        )
        check_choice(method, "method", METHODS)
        check_weight_dtype(conv.weight, "conv.weight")
        return cls._from_factorized(conv, factorize_weight(conv.weight, options, shapes).st, method)

    @classmethod
    def _from_factorized(cls, conv: nn.Conv2d, st: SeKronTensor, method: str) -> SeKronConv2d:
        """The layer for ``conv`` with kernel ``st`` (internal: arguments checked): the conv's
        options, dtype, device, training mode and requires_grad flags; ``rel_error``
        measured against the conv's weight."""
        weight = conv.weight.detach()
        layer = cls(
            st,
            conv.bias,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            padding_mode=conv.padding_mode,
            method=method,  # type: ignore[arg-type]
        )
        layer.to(dtype=weight.dtype, device=weight.device)
        layer.train(conv.training)
        for p in layer.factors:
            p.requires_grad_(conv.weight.requires_grad)
        if layer.bias is not None and conv.bias is not None:
            layer.bias.requires_grad_(conv.bias.requires_grad)
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
        names = _factor_names(self.n_factors)
        return tuple(map(self._parameters.__getitem__, names))  # type: ignore[arg-type]

    @property
    def sekron(self) -> SeKronTensor:
        """The kernel as a SeKronTensor of the current parameters (shares their storage: it
        follows their values, dtype and device; no copy, no reconstruction, no checks)."""
        return SeKronTensor._trusted(self.factors, self.form, self.shapes, self.ranks)

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

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Unpickling a layer pickled by sekron 0.1 (before the checked options were kept)."""
        super().__setstate__(state)
        if "_args" not in self.__dict__:
            for old in ("_pad", "_conv_padding", "_sekron_cache"):
                self.__dict__.pop(old, None)
            self._set_args(
                check_conv_args(
                    self.stride, self.padding, self.dilation, 1, self.method, self.kernel_size
                )
            )

    # -- forward -------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        st = self.sekron
        x = check_x(x, st, self._args, 2, "SeKronConv2d", not torch.compiler.is_compiling())
        if self._mode_pad is not None:
            _check_mode_padding(x, self._mode_pad, self.padding_mode)
            x = F.pad(x, self._mode_pad, mode=self.padding_mode)
        # (the bias from _parameters: Module.__getattr__ is a Python call on every forward)
        return run_conv(x, st, self._parameters["bias"], self._conv_args, None, self.training)

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


def _check_mode_padding(x: torch.Tensor, pad: tuple[int, int, int, int], mode: str) -> None:
    """Reflect padding needs each pad < the input size there, circular each pad <= it."""
    if mode == "replicate":
        return
    left, right, top, bottom = pad
    for size, p in ((x.shape[-2], max(top, bottom)), (x.shape[-1], max(left, right))):
        if p > size or (mode == "reflect" and p == size):
            rule = "<" if mode == "reflect" else "<="
            raise ValueError(
                f"x of shape {tuple(x.shape)} is too small for padding_mode={mode!r}: each "
                f"padding must be {rule} the input size in its dim; got padding {p} for size "
                f"{size}."
            )


def _padding_pair(pad4: tuple[int, int, int, int]) -> tuple[int, int]:
    """The (height, width) padding of symmetric (top, bottom, left, right) padding."""
    return (pad4[0], pad4[2])
