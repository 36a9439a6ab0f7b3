"""Checks of :mod:`sekron.torch`'s arguments, once, at the public boundary.

:func:`check_conv_args` turns ``stride``/``padding``/``dilation``/``groups``/``method`` into a
:class:`ConvArgs` once; :func:`sekron.torch.conv2d` calls it per call, ``SeKronConv2d`` once in
its constructor, and both then run the same internal convolution on the checked values.
"""

from __future__ import annotations

from typing import Any, NamedTuple, get_args

import torch

from .._typing import ConvMethod, Pad4, Pair
from .._validation import _type_name, check_choice, check_ints, check_positive_int
from ..tensor import SeKronTensor
from ._conv_plan import conv_output_size, normalize_padding

__all__ = [
    "ConvArgs",
    "METHODS",
    "PADDING_MODES",
    "check_bias",
    "check_conv_args",
    "check_no_inference",
    "check_st",
    "check_weight_dtype",
    "check_x",
]

METHODS: tuple[str, ...] = get_args(ConvMethod)
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


class ConvArgs(NamedTuple):
    """Checked convolution options, 2-D (a 1-D conv has unit height)."""

    stride: Pair
    pad4: Pad4  # zero padding (top, bottom, left, right)
    dilation: Pair
    groups: int
    method: str


def check_st(st: object, n_spatial: int, fn: str) -> SeKronTensor:
    """A SeKronTensor with floating torch factors and ``2 + n_spatial`` modes."""
    if not isinstance(st, SeKronTensor):
        raise TypeError(f"st must be a sekron.SeKronTensor; got {_type_name(st)}.")
    if st.backend != "pytorch":
        raise TypeError(
            f"st must have torch factors (backend 'pytorch'); got backend {st.backend!r}. "
            "Build it with backend='pytorch' or from torch tensors."
        )
    want = 2 + n_spatial
    if st.ndim != want:
        layout = "(F, C, K)" if n_spatial == 1 else "(F, C, Kh, Kw)"
        raise ValueError(f"{fn} needs st of shape {layout} ({want} modes); got shape {st.shape}.")
    if st.dtype not in FLOAT_DTYPES:
        raise TypeError(f"st has dtype {st.dtype}; a convolution kernel must be floating point.")
    return st


def _check_padding(padding: Any, n_spatial: int, stride: tuple[int, ...]) -> Any:
    if not isinstance(padding, str):
        return check_ints(padding, "padding", n_spatial, at_least=0)
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid'; got {padding!r}.")
    if padding == "same" and any(s != 1 for s in stride):
        raise ValueError(f"padding='same' needs stride 1 (like F.conv2d); got stride {stride}.")
    return padding


def check_conv_args(
    stride: object,
    padding: object,
    dilation: object,
    groups: object,
    method: object,
    kernel: tuple[int, ...],
) -> ConvArgs:
    """Check the options of a convolution with ``kernel`` (1 or 2 spatial sizes)."""
    method = check_choice(method, "method", METHODS)
    groups = check_positive_int(groups, "groups")
    if groups > 1 and method == "factorized":
        raise ValueError(
            f"method='factorized' supports groups=1 only; got groups={groups}. "
            "Use method='reconstructed' or 'auto' for grouped convolutions."
        )
    n = len(kernel)
    stride_t = check_ints(stride, "stride", n, at_least=1)
    dilation_t = check_ints(dilation, "dilation", n, at_least=1)
    padding_c = _check_padding(padding, n, stride_t)
    if n == 1:  # a 1-D conv runs as a 2-D one of unit height
        kernel = (1, *kernel)
        stride_t, dilation_t = (1, *stride_t), (1, *dilation_t)
        if not isinstance(padding_c, str):
            padding_c = (0, *padding_c)
    stride_p, dilation_p = (stride_t[0], stride_t[1]), (dilation_t[0], dilation_t[1])
    pad4 = normalize_padding(padding_c, (kernel[0], kernel[1]), dilation_p)
    return ConvArgs(stride_p, pad4, dilation_p, groups, method)


def check_x(x: object, st: SeKronTensor, args: ConvArgs, n_spatial: int, fn: str) -> torch.Tensor:
    """The input: a tensor of ``st``'s dtype and device, ``C * groups`` channels, with room
    for the (dilated) kernel after padding."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {_type_name(x)}.")
    if x.ndim not in (n_spatial + 1, n_spatial + 2):
        raise ValueError(
            f"{fn}: x must have {n_spatial + 2} dims (N, C, *spatial) or {n_spatial + 1} "
            f"(C, *spatial); got shape {tuple(x.shape)}."
        )
    channels = x.shape[-n_spatial - 1]
    groups = args.groups
    want = st.shape[1] * groups
    if channels != want:
        raise ValueError(
            f"x has {channels} channels but st of shape {st.shape} with groups={groups} "
            f"needs C * groups = {want}."
        )
    if st.shape[0] % groups:
        raise ValueError(
            f"groups={groups} must divide the output channels, st.shape[0] == {st.shape[0]}."
        )
    if x.dtype != st.dtype:
        raise TypeError(f"x has dtype {x.dtype} but st has dtype {st.dtype}; cast one of them.")
    device = st.factors[0].device
    if x.device != device:
        raise ValueError(f"x is on {x.device} but st's factors are on {device}; move one.")
    kernel = st.shape[2:] if n_spatial == 2 else (1, st.shape[2])
    size = x.shape[-2:] if n_spatial == 2 else (1, x.shape[-1])
    pads = (args.pad4[0] + args.pad4[1], args.pad4[2] + args.pad4[3])
    for i in range(2):
        if conv_output_size(size[i], kernel[i], 1, pads[i], args.dilation[i]) < 1:
            raise ValueError(
                f"x of shape {tuple(x.shape)} is too small: the spatial size {size[i]} plus "
                f"padding {pads[i]} is less than the dilated kernel "
                f"{args.dilation[i] * (kernel[i] - 1) + 1}."
            )
    return x


def check_no_inference(x: torch.Tensor, st: SeKronTensor, bias: torch.Tensor | None) -> None:
    """Outside ``torch.inference_mode()``, autograd cannot save inference tensors: name the
    one that would fail, before torch does."""
    if not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
        return
    ts = (x, *st.factors) if bias is None else (x, *st.factors, bias)
    if not any(t.requires_grad for t in ts):
        return
    for i, t in enumerate(ts):
        if t.is_inference():
            name = "x" if i == 0 else "bias" if i > len(st.factors) else f"st.factors[{i - 1}]"
            raise TypeError(
                f"{name} is an inference tensor (made under torch.inference_mode()); "
                "autograd cannot record a convolution with it. Run the call under "
                "torch.inference_mode() or torch.no_grad(), or clone it outside inference mode."
            )


def check_bias(bias: object, st: SeKronTensor) -> torch.Tensor | None:
    """None, or a tensor of shape (F,) with ``st``'s dtype and device."""
    if bias is None:
        return None
    if not isinstance(bias, torch.Tensor):
        raise TypeError(f"bias must be a torch.Tensor or None; got {_type_name(bias)}.")
    if tuple(bias.shape) != (st.shape[0],):
        raise ValueError(f"bias must have shape ({st.shape[0]},); got {tuple(bias.shape)}.")
    if bias.dtype != st.dtype:
        raise TypeError(f"bias has dtype {bias.dtype} but st has dtype {st.dtype}; cast it.")
    if bias.device != st.factors[0].device:
        raise ValueError(
            f"bias is on {bias.device} but st's factors are on {st.factors[0].device}; move it."
        )
    return bias


def check_weight_dtype(weight: torch.Tensor, name: str) -> None:
    """A weight sekron can factorize: float32 or float64, on a real device, finite."""
    if weight.dtype not in (torch.float32, torch.float64):
        raise TypeError(
            f"{name} has dtype {weight.dtype}; sekron factorizes float32 and float64 weights. "
            "Convert the layer first (e.g. conv.float()) and cast the result back if needed."
        )
    if weight.device.type == "meta":
        raise ValueError(f"{name} is on the meta device: it has no values to factorize.")
    if not bool(weight.detach().isfinite().all()):
        raise ValueError(f"{name} contains NaN or Inf; it cannot be factorized.")
