"""Backend-neutral checks of convolution options (shared by :mod:`sekron.torch` and
:mod:`sekron.jax`, so both raise the same messages): no torch or jax import here.

:func:`check_conv_args` turns ``stride``/``padding``/``dilation``/``groups``/``method`` into a
:class:`ConvArgs` once; :func:`check_input_shape` checks an input's shape against a kernel.
"""

from __future__ import annotations

from typing import Any, NamedTuple, get_args

from ._conv_plan import conv_output_size, normalize_padding
from ._typing import ConvMethod, Pad4, Pair
from ._validation import _type_name, check_choice, check_ints, check_positive_int
from .tensor import SeKronTensor

__all__ = ["METHODS", "ConvArgs", "check_conv_args", "check_input_shape", "check_kernel"]

_LIBRARY = {"pytorch": ("torch", "torch tensors"), "jax": ("jax", "jax arrays")}

METHODS: tuple[str, ...] = get_args(ConvMethod)


class ConvArgs(NamedTuple):
    """Checked convolution options, 2-D (a 1-D conv has unit height)."""

    stride: Pair
    pad4: Pad4  # zero padding (top, bottom, left, right)
    dilation: Pair
    groups: int
    method: str


def check_kernel(st: object, n_spatial: int, fn: str, backend: str) -> SeKronTensor:
    """A SeKronTensor of ``backend``'s arrays with ``2 + n_spatial`` modes (the floating
    dtype is the caller's check)."""
    if not isinstance(st, SeKronTensor):
        raise TypeError(f"st must be a sekron.SeKronTensor; got {_type_name(st)}.")
    # private attributes, not the properties: this runs on every call (see _ARGS_MEMO)
    if st._backend != backend:
        lib, arrays = _LIBRARY[backend]
        raise TypeError(
            f"st must have {lib} factors (backend {backend!r}); got backend {st.backend!r}. "
            f"Build it with backend={backend!r} or from {arrays}."
        )
    want = 2 + n_spatial
    if len(st._shape) != want:
        layout = "(F, C, K)" if n_spatial == 1 else "(F, C, Kh, Kw)"
        raise ValueError(f"{fn} needs st of shape {layout} ({want} modes); got shape {st.shape}.")
    return st


def _check_padding(padding: Any, n_spatial: int, stride: tuple[int, ...]) -> Any:
    if not isinstance(padding, str):
        return check_ints(padding, "padding", n_spatial, at_least=0)
    if padding not in ("same", "valid"):
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid'; got {padding!r}.")
    if padding == "same" and any(s != 1 for s in stride):
        raise ValueError(f"padding='same' needs stride 1 (like F.conv2d); got stride {stride}.")
    return padding


# checked calls, remembered: a layer in a loop passes the same options and input shape on
# every call, and after a long convolution these checks run from cold caches, at several
# times their warm cost (#16: about 1.5 % of a 7 ms 1x1 layer for the two of them). Only
# successes are kept; the keys hold exact ints, strings and tuples of them, so no key equal
# to a kept one (True == 1, 1.0 == 1) can skip a check that would fail
MEMO_ENTRIES = 1024
_ARGS_MEMO: dict[tuple[Any, ...], ConvArgs] = {}
_SHAPES_MEMO: dict[tuple[Any, ...], bool] = {}


def _exact(v: Any) -> bool:
    """An exact int or str, or a tuple of exact ints: values equal only to themselves among
    the values the checks accept."""
    t = type(v)
    return t is int or t is str or (t is tuple and set(map(type, v)) <= _INT)


_INT = {int}


def _remember(memo: dict[tuple[Any, ...], Any], key: tuple[Any, ...], value: Any) -> None:
    if len(memo) >= MEMO_ENTRIES:
        memo.clear()
    memo[key] = value


def check_conv_args(
    stride: object,
    padding: object,
    dilation: object,
    groups: object,
    method: object,
    kernel: tuple[int, ...],
    remember: bool = True,
) -> ConvArgs:
    """Check the options of a convolution with ``kernel`` (1 or 2 spatial sizes).

    ``remember`` False checks without the memo (under ``torch.compile``, where dynamo would
    guard on the memo's contents and recompile when it changes)."""
    if not remember:
        return _check_conv_args(stride, padding, dilation, groups, method, kernel)
    key = (stride, padding, dilation, groups, method, kernel)
    exact = (
        _exact(stride)
        and _exact(padding)
        and _exact(dilation)
        and _exact(groups)
        and type(method) is str
    )
    if exact:
        hit = _ARGS_MEMO.get(key)
        if hit is not None:
            return hit
    args = _check_conv_args(stride, padding, dilation, groups, method, kernel)
    if exact:
        _remember(_ARGS_MEMO, key, args)
    return args


def _check_conv_args(
    stride: object,
    padding: object,
    dilation: object,
    groups: object,
    method: object,
    kernel: tuple[int, ...],
) -> ConvArgs:
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


def check_input_shape(
    shape: tuple[int, ...],
    kernel_shape: tuple[int, ...],
    args: ConvArgs,
    n_spatial: int,
    fn: str,
    remember: bool = True,
) -> None:
    """An input of ``shape`` for a kernel of ``kernel_shape``: ``n_spatial + 1`` or ``+ 2``
    dims, ``C * groups`` channels, ``groups`` dividing F, room for the dilated kernel
    (``remember`` as for :func:`check_conv_args`)."""
    if not remember:
        return _check_input_shape(shape, kernel_shape, args, n_spatial, fn)
    key = (shape, kernel_shape, args, n_spatial)
    exact = _exact(shape)
    if exact and key in _SHAPES_MEMO:
        return None
    _check_input_shape(shape, kernel_shape, args, n_spatial, fn)
    if exact:
        _remember(_SHAPES_MEMO, key, True)
    return None


def _check_input_shape(
    shape: tuple[int, ...], kernel_shape: tuple[int, ...], args: ConvArgs, n_spatial: int, fn: str
) -> None:
    if len(shape) not in (n_spatial + 1, n_spatial + 2):
        raise ValueError(
            f"{fn}: x must have {n_spatial + 2} dims (N, C, *spatial) or {n_spatial + 1} "
            f"(C, *spatial); got shape {tuple(shape)}."
        )
    channels = shape[-n_spatial - 1]
    groups = args.groups
    want = kernel_shape[1] * groups
    if channels != want:
        raise ValueError(
            f"x has {channels} channels but st of shape {kernel_shape} with groups={groups} "
            f"needs C * groups = {want}."
        )
    if kernel_shape[0] % groups:
        raise ValueError(
            f"groups={groups} must divide the output channels, st.shape[0] == {kernel_shape[0]}."
        )
    kernel = kernel_shape[2:] if n_spatial == 2 else (1, kernel_shape[2])
    size = shape[-2:] if n_spatial == 2 else (1, shape[-1])
    pads = (args.pad4[0] + args.pad4[1], args.pad4[2] + args.pad4[3])
    for i in range(2):
        if conv_output_size(size[i], kernel[i], 1, pads[i], args.dilation[i]) < 1:
            raise ValueError(
                f"x of shape {tuple(shape)} is too small: the spatial size {size[i]} plus "
                f"padding {pads[i]} is less than the dilated kernel "
                f"{args.dilation[i] * (kernel[i] - 1) + 1}."
            )
