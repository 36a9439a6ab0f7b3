"""Counting parameters and multiply-accumulates (MACs) of models with SeKron layers.

MACs of a SeKron convolution are those of the factorized stage plan (conv docs): the factors run
from last to first, each as one grouped ``conv2d``. The plan is a pure function of tuples of
ints (cached); arrays are only touched when a model is run to record its layers' input shapes.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from math import prod
from typing import Any

import torch
from torch import nn

from .._conv_macs import factorized_macs
from .._conv_plan import Pad4, normalize_padding
from .._plan import Ranks, Shapes
from .._validation import (
    _type_name,
    check_bool,
    check_form,
    check_ints,
    check_positive_int,
    check_rank,
    check_shapes,
    is_int,
)

__all__ = ["count_macs", "count_params", "dense_conv_macs", "sekron_conv_macs"]


def count_params(module: nn.Module) -> int:
    """Number of parameters of a module (each shared parameter counted once).

    Parameters
    ----------
    module : torch.nn.Module
        Any module: an ``nn.Conv2d``, a :class:`~sekron.torch.SeKronConv2d` or a whole model.

    Returns
    -------
    int
        ``sum(p.numel() for p in module.parameters())``.

    Raises
    ------
    TypeError
        ``module`` is not an ``nn.Module``.
    ValueError
        It has uninitialized lazy parameters. A SeKronConv2d counts its factors
        (and bias), never the full kernel it stands for.

    Examples
    --------
    >>> from torch import nn
    >>> from sekron.torch import count_params
    >>> count_params(nn.Conv2d(16, 32, 3))
    4640
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module; got {_type_name(module)}.")
    check_initialized(module, "module")
    return sum(p.numel() for p in module.parameters())


def check_initialized(module: nn.Module, name: str) -> None:
    """Lazy modules have no parameter sizes until they ran once."""
    for pname, p in module.named_parameters():
        if isinstance(p, nn.parameter.UninitializedParameter):
            raise ValueError(
                f"{name} has an uninitialized lazy parameter {pname!r}; run it once on an "
                "example input first."
            )


# ----------------------------------------------------------------------------------------------
# plans: pure functions of ints
# ----------------------------------------------------------------------------------------------
@lru_cache(maxsize=1024)
def _stage_kernel_macs(shapes: Shapes, ranks: Ranks, form: str) -> tuple[int, ...]:
    """MACs per batch element and per output position of each stage k (conv docs).

    Nested: stage S costs ``P_{S-1} f_S C h_S w_S`` and stage k < S costs
    ``P_k F_{>=k} C_{<=k} h_k w_k`` (``P_k = R_1..R_k``). Chain: stage k contracts
    ``(r_k, c_k, h_k, w_k)`` into ``(r_{k-1}, f_k)`` for every ``(c_{<k}, f_{>k})``.
    """
    n = len(shapes)
    f = [s[0] for s in shapes]
    c = [s[1] for s in shapes]
    hw = [s[2] * s[3] for s in shapes]
    out = []
    if form == "nested":
        for k in range(n):
            p = prod(ranks[: min(k + 1, n - 1)])
            if k == n - 1:
                out.append(p * f[k] * prod(c) * hw[k])
            else:
                out.append(p * prod(f[k:]) * prod(c[: k + 1]) * hw[k])
    else:
        bounds = (1, *ranks, 1)
        for k in range(n):
            out.append(
                prod(c[:k]) * prod(f[k + 1 :]) * bounds[k] * f[k] * bounds[k + 1] * c[k] * hw[k]
            )
    return tuple(out)


def sekron_conv_macs(
    shapes: Shapes,
    ranks: Ranks,
    form: str,
    in_hw: tuple[int, int] | None = None,
    *,
    stride: int | Sequence[int] = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    dilation: int | Sequence[int] = 1,
    batch: int = 1,
) -> int:
    """MACs of the factorized SeKron conv2d stage plan (conv docs).

    Parameters
    ----------
    shapes, ranks, form
        The SeKron kernel's factor shapes ``(f_k, c_k, h_k, w_k)``, ranks and form.
    in_hw : (int, int), optional
        Input height and width (before padding). ``None`` gives MACs *per output position*:
        every stage is charged as if it ran at the output resolution (border effects and the
        extra positions of stages before a stride are ignored), which is the conv docs' formula
        with ``N = L = 1``.
    stride, dilation : int or (int, int)
    padding : (top, bottom, left, right)
        Zero padding, as :func:`sekron.torch.conv2d` applies it: each dim just before the
        first stage whose window is wider than 1 there (stages before it see the unpadded
        map), or to the input when there is none or it is the first stage.
    batch : int
        Batch size N.

    Returns
    -------
    int
        With ``in_hw``, the exact count of the stage plan that :func:`sekron.torch.conv2d`
        executes (``sekron._conv_macs.factorized_macs``): stages that run before the
        stride or before later windows shrink the map are charged their larger maps.

    Examples
    --------
    >>> from sekron.torch import sekron_conv_macs
    >>> shapes = ((8, 8, 3, 1), (16, 8, 1, 3))  # a (128, 64, 3, 3) kernel, dense 73,728
    >>> sekron_conv_macs(shapes, (4,), "nested")  # per output position
    24576
    >>> macs = sekron_conv_macs(shapes, (4,), "nested", (16, 16), padding=(1, 1, 1, 1))
    >>> macs < 16 * 16 * 73728  # dense MACs of the same conv
    True
    """
    shapes_t = check_shapes(shapes, None)
    if len(shapes_t[0]) != 4:
        raise ValueError(
            f"shapes must give 4 sizes (f_k, c_k, h_k, w_k) per factor; got {shapes_t[0]}."
        )
    ranks_t = check_rank(ranks, len(shapes_t) - 1, "ranks")
    assert ranks_t is not None
    form_c = check_form(form)
    n_batch = check_positive_int(batch, "batch")
    if in_hw is None:
        return n_batch * sum(_stage_kernel_macs(shapes_t, ranks_t, form_c))
    h, w = check_ints(in_hw, "in_hw", 2, at_least=1)
    top, bottom, left, right = check_ints(padding, "padding", 4, at_least=0)
    stride_p = check_ints(stride, "stride", 2, at_least=1)
    dilation_p = check_ints(dilation, "dilation", 2, at_least=1)
    in_shape = (n_batch, prod(s[1] for s in shapes_t), h, w)
    return factorized_macs(
        shapes_t,
        ranks_t,
        form_c,
        in_shape,
        (stride_p[0], stride_p[1]),
        (top, bottom, left, right),
        (dilation_p[0], dilation_p[1]),
    )


def dense_conv_macs(weight_shape: Sequence[int], out_numel: int, groups: int = 1) -> int:
    """MACs of a dense convolution: ``out_numel * (C / groups) * prod(kernel)``.

    ``weight_shape`` is ``(F, C / groups, *kernel)`` as PyTorch stores it, so ``groups`` is
    already accounted for by the weight's second dim; it is accepted for clarity only.
    """
    del groups
    return int(out_numel) * prod(int(v) for v in weight_shape[1:])


# ----------------------------------------------------------------------------------------------
# running a model with hooks
# ----------------------------------------------------------------------------------------------
def _sekron_layer_padding(layer: Any, in_hw: tuple[int, int]) -> tuple[tuple[int, int], Pad4]:
    """(input size the conv sees, its zero padding (top, bottom, left, right)) for a
    SeKronConv2d: with zero padding the conv pads itself; other padding modes pad the input
    with ``F.pad`` first and the conv gets the padded input."""
    pad4 = normalize_padding(layer.padding, layer.kernel_size, layer.dilation)
    if layer.padding_mode == "zeros":
        return in_hw, pad4
    top, bottom, left, right = pad4
    return (in_hw[0] + top + bottom, in_hw[1] + left + right), (0, 0, 0, 0)


def _layer_macs(module: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int | None:
    """MACs of one leaf layer for one call, or None for layers that are not counted."""
    from ._layers import SeKronConv2d

    if isinstance(module, SeKronConv2d):
        in_hw, pad4 = _sekron_layer_padding(module, (int(inp.shape[-2]), int(inp.shape[-1])))
        batch = prod(int(v) for v in inp.shape[:-3])
        return sekron_conv_macs(
            module.shapes,
            module.ranks,
            module.form,
            in_hw,
            stride=module.stride,
            padding=pad4,
            dilation=module.dilation,
            batch=batch,
        )
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        # weight (C_in, C_out / groups, *kernel): every input element meets every tap of
        # the C_out / groups output channels of its group
        return inp.numel() * prod(int(v) for v in module.weight.shape[1:])
    if isinstance(module, nn.modules.conv._ConvNd):
        return dense_conv_macs(tuple(module.weight.shape), out.numel(), module.groups)
    if isinstance(module, nn.Linear):
        return out.numel() * module.in_features
    if isinstance(module, nn.Bilinear):
        return out.numel() * module.in1_features * module.in2_features
    return None


def layer_macs(
    model: nn.Module, example_input: torch.Tensor, arg: str = "input_shape"
) -> dict[str, tuple[int, tuple[int, ...]]]:
    """``{name: (MACs, input shape)}`` of every counted layer, from one forward pass.

    The model runs in eval mode under ``torch.no_grad`` and every module's training flag is
    restored afterwards, so batch-norm statistics are not touched. A layer called several
    times has its MACs summed (and its last input shape recorded).
    """
    from ._layers import SeKronConv2d

    counted = (nn.modules.conv._ConvNd, nn.Linear, nn.Bilinear, SeKronConv2d)
    found: dict[str, tuple[int, tuple[int, ...]]] = {}
    handles = []

    def make_hook(name: str) -> Any:
        def hook(module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
            macs = _layer_macs(module, args[0], out)
            if macs is not None:
                prev = found.get(name, (0, ()))[0]
                found[name] = (prev + macs, tuple(int(v) for v in args[0].shape))

        return hook

    flags = {m: m.training for m in model.modules()}
    try:
        for name, m in model.named_modules():
            if isinstance(m, counted):
                handles.append(m.register_forward_hook(make_hook(name)))
        model.eval()
        with torch.no_grad():
            try:
                model(example_input)
            except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                raise ValueError(
                    f"{arg}: the model fails on an input of shape "
                    f"{tuple(example_input.shape)} and dtype {example_input.dtype}: {exc}"
                ) from exc
    finally:
        for h in handles:
            h.remove()
        for m, flag in flags.items():
            m.training = flag
    return found


# the largest zero input count_macs/compress allocate to run a model once (1 GiB of float32)
MAX_EXAMPLE_ELEMENTS = 2**28


def _example_input(model: nn.Module, input_shape: Any, name: str = "input_shape") -> torch.Tensor:
    if isinstance(input_shape, torch.Tensor):
        return input_shape
    if isinstance(input_shape, str | bytes) or not isinstance(input_shape, Sequence):
        raise TypeError(
            f"{name} must be a tuple of ints such as (1, 3, 32, 32) or an example tensor; "
            f"got {_type_name(input_shape)}."
        )
    if not input_shape or not all(is_int(v) and int(v) >= 1 for v in input_shape):
        raise ValueError(
            f"{name} must be a non-empty tuple of positive ints such as (1, 3, 32, 32); "
            f"got {tuple(input_shape)!r}."
        )
    numel = prod(int(v) for v in input_shape)
    if numel > MAX_EXAMPLE_ELEMENTS:
        raise ValueError(
            f"{name} {tuple(input_shape)!r} has {numel:,} elements; the model runs once on a "
            f"zero input of that shape: give at most {MAX_EXAMPLE_ELEMENTS:,} (count one "
            "sample and multiply by the batch size)."
        )
    ref = next(iter(model.parameters()), None)
    kwargs: dict[str, Any] = {} if ref is None else {"dtype": ref.dtype, "device": ref.device}
    return torch.zeros(tuple(int(v) for v in input_shape), **kwargs)


def count_macs(
    model: nn.Module, input_shape: Sequence[int] | torch.Tensor, *, by_layer: bool = False
) -> int | dict[str, int]:
    """Multiply-accumulates of one forward pass.

    Parameters
    ----------
    model : torch.nn.Module
        A single layer or a whole model.
    input_shape : tuple of ints or torch.Tensor
        Shape of the input, batch included, e.g. ``(1, 3, 32, 32)``; a zero input of the
        model's dtype and device is run. An example tensor may be given instead.
    by_layer : bool
        Return ``{layer name: MACs}`` instead of the total.

    Returns
    -------
    int or dict of str to int

    Notes
    -----
    Counted layers: convolutions (``nn.Conv1d/2d/3d``, grouped and dilated included:
    ``out_elements * C/groups * prod(kernel)``), transposed convolutions
    (``nn.ConvTranspose1d/2d/3d``: ``in_elements * F/groups * prod(kernel)``, each input
    element scattered through the kernel), ``nn.Linear`` (``out_elements * in_features``),
    ``nn.Bilinear`` and :class:`~sekron.torch.SeKronConv2d`. Biases, activations, pooling and
    normalization are not counted. A SeKronConv2d is charged the MACs of its factorized stage
    plan (conv docs, :func:`sekron_conv_macs`) whatever ``method`` it executes with (a
    channels-first stage of at most 2 channels executes 4 times its own, packed: conv docs,
    stage algorithm).

    The model runs once in eval mode without gradients; training flags are restored.

    Examples
    --------
    >>> from torch import nn
    >>> from sekron.torch import count_macs
    >>> count_macs(nn.Conv2d(16, 32, 3, padding=1), (1, 16, 8, 8))  # 8*8*32 outputs * 16*9
    294912
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {_type_name(model)}.")
    x = _example_input(model, input_shape)
    check_bool(by_layer, "by_layer")
    found = layer_macs(model, x)
    if by_layer:
        return {name: macs for name, (macs, _) in found.items()}
    return sum(macs for macs, _ in found.values())
