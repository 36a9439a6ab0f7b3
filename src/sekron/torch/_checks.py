"""Checks of :mod:`sekron.torch`'s arguments, once, at the public boundary.

:func:`check_conv_args` turns ``stride``/``padding``/``dilation``/``groups``/``method`` into a
:class:`ConvArgs` once; :func:`sekron.torch.conv2d` calls it per call, ``SeKronConv2d`` once in
its constructor, and both then run the same internal convolution on the checked values.
"""

from __future__ import annotations

import torch

from .._conv_args import METHODS, ConvArgs, check_conv_args, check_input_shape, check_kernel
from .._validation import _type_name
from ..tensor import SeKronTensor

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

PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_st(st: object, n_spatial: int, fn: str) -> SeKronTensor:
    """A SeKronTensor with floating torch factors and ``2 + n_spatial`` modes."""
    st = check_kernel(st, n_spatial, fn, "pytorch")
    if st._factors[0].dtype not in FLOAT_DTYPES:
        raise TypeError(f"st has dtype {st.dtype}; a convolution kernel must be floating point.")
    return st


def check_x(
    x: object, st: SeKronTensor, args: ConvArgs, n_spatial: int, fn: str, remember: bool = True
) -> torch.Tensor:
    """The input: a tensor of ``st``'s dtype and device, ``C * groups`` channels, with room
    for the (dilated) kernel after padding (``remember``: see :func:`check_conv_args`)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor; got {_type_name(x)}.")
    # (st's private attributes: this runs on every call)
    check_input_shape(tuple(x.shape), st._shape, args, n_spatial, fn, remember)
    f0 = st._factors[0]
    if x.dtype != f0.dtype:
        raise TypeError(f"x has dtype {x.dtype} but st has dtype {f0.dtype}; cast one of them.")
    device = f0.device
    if x.device != device:
        raise ValueError(f"x is on {x.device} but st's factors are on {device}; move one.")
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
