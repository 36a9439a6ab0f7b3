"""The shared harness: compress at a budget, measure, fine-tune, measure again.

Public API of sekron only: :func:`sekron.torch.compress`, :func:`~sekron.torch.count_macs` and
:func:`~sekron.torch.count_params`. A task (:class:`Task`) brings a pretrained model, its
fine-tuning data, its loss and its metric; :func:`run` does the same thing to every task, family,
ratio and seed and returns plain dicts (JSON-ready).

Budget. The compression ratio ``r`` is counted over the weights of the compressed layers (the
same layers for every family): each compressed layer keeps at most ``weight.numel() / r``
factor parameters (its bias is unchanged and not counted). ``compress(compression=r)`` gives
every layer that budget; a family whose stored embedding is larger than its own count
(TR and Tucker-2 in nested form) can exceed it, so such a layer is compressed again alone at
larger ``compression`` values until it fits (doubling, then three geometric bisections: the
value used is within a factor 2**(1/8) of the smallest that fits, among those tried). The
values used are reported (``calibrated``).

Conv method. Every compressed layer runs with ``method="reconstructed"`` (:data:`METHOD`,
passed to ``compress``): its kernel is rebuilt from the factors and one dense conv runs. Every
metric, loss and fine-tuning step therefore computes the same numbers in any process, for any
order of jobs. ``method="auto"`` would time the candidate conv plans per regime (inference,
forward, training) and could pick another plan in another process (a Dask worker), so the
results would differ in rounding between a local and a cluster run. Only the latency is
measured with ``"auto"``, the method a user's compressed model runs by default, on a copy
rebuilt with :class:`~sekron.torch.SeKronConv2d` (:func:`with_method`).
"""

from __future__ import annotations

import copy
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import torch
from torch import nn

from sekron.torch import SeKronConv2d, compress, count_macs, count_params

__all__ = [
    "FAMILIES",
    "METHOD",
    "Config",
    "Progress",
    "Task",
    "compress_to_budget",
    "compressed_row",
    "fine_tune",
    "finish_row",
    "latency_ratio",
    "mean_loss",
    "run",
    "seed_run",
    "with_method",
]

#: Family label -> ``structure=`` of :func:`sekron.torch.compress`.
FAMILIES: dict[str, str] = {
    "SeKron": "search",
    "GKPD": "gkpd",
    "TT": "tt",
    "TR": "tr",
    "CP": "cp",
    "Tucker-2": "tucker2",
}

#: ``method=`` of every compressed layer the harness fine-tunes and measures (module docstring).
METHOD: Final = "reconstructed"

#: Largest ``compression`` a layer is retried with, as a multiple of the target ratio.
MAX_CALIBRATION = 64.0
#: Geometric bisections of a calibrated layer's ``compression`` after the doubling search.
BISECTIONS = 3


@dataclass(frozen=True)
class Task:
    """One task: a pretrained model, the data it is fine-tuned on, a loss and a metric.

    ``evaluate(model)`` returns ``{metric: value}`` (the first key is the primary metric);
    ``train_x``/``train_y`` are the fine-tuning data; ``skip`` the conv layers no family
    compresses; ``example`` one input batch (MACs are counted and latency measured on it).
    """

    name: str
    load_model: Callable[[], nn.Module]
    evaluate: Callable[[nn.Module], dict[str, float]]
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    train_x: torch.Tensor
    train_y: torch.Tensor
    skip: tuple[str, ...]
    example: torch.Tensor
    batch_size: int
    lr: float
    epochs: int
    references: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: str = ""


@dataclass(frozen=True)
class Config:
    """What to run: families (labels of :data:`FAMILIES`), ratios, seeds and the schedule."""

    families: tuple[str, ...] = tuple(FAMILIES)
    ratios: tuple[float, ...] = (2.0, 4.0, 8.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    epochs: int | None = None  # None: each task's own
    max_batches: int | None = None  # per epoch; None: the whole fine-tuning set
    latency_reps: int = 21


class Progress:
    """Plain progress lines on stderr (no dependency): done/total, elapsed and remaining time."""

    def __init__(self, total: int, *, enabled: bool = True) -> None:
        self.total, self.done, self.enabled = total, 0, enabled
        self.start = time.perf_counter()
        self._tty = sys.stderr.isatty()

    def show(self, what: str) -> None:
        if not self.enabled:
            return
        elapsed = time.perf_counter() - self.start
        eta = "?" if self.done == 0 else _clock(elapsed / self.done * (self.total - self.done))
        pct = 100 * self.done // max(self.total, 1)
        line = (
            f"[{self.done}/{self.total}] {pct:3d}%  {_clock(elapsed)} elapsed, ~{eta} left  {what}"
        )
        sys.stderr.write(f"\r{line}\x1b[K" if self._tty else line + "\n")
        sys.stderr.flush()

    def advance(self, what: str = "") -> None:
        self.done += 1
        self.show(what)

    def close(self) -> None:
        if self.enabled and self._tty:
            sys.stderr.write("\n")


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m}m{s:02d}s"


# ----------------------------------------------------------------------------------------------
# compression at a budget
# ----------------------------------------------------------------------------------------------
def _convs(model: nn.Module, skip: Sequence[str]) -> dict[str, nn.Conv2d]:
    return {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d) and n not in skip and m.groups == 1
    }


def _weights(layer: nn.Module) -> int:
    """Parameters of a layer without its bias (the factors of a SeKron layer)."""
    bias = getattr(layer, "bias", None)
    return count_params(layer) - (0 if bias is None else bias.numel())


def _set_layer(model: nn.Module, name: str, layer: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, layer)


def _fits(layer: nn.Module, budget: float) -> bool:
    return not isinstance(layer, nn.Conv2d) and _weights(layer) <= budget


def _calibrate(
    model: nn.Module, structure: str, name: str, budget: float, ratio: float, rest: list[str]
) -> tuple[nn.Module, float]:
    """Layer ``name`` compressed alone (``rest`` skipped) at the smallest ``compression``
    found that fits ``budget``: doubling from ``ratio``, then ``BISECTIONS`` geometric
    bisections (within a factor 2**(1/8) of the smallest that fits)."""

    def attempt(c: float) -> nn.Module | None:
        trial, _ = compress(
            model, structure=structure, compression=c, skip=rest, method=METHOD, progress=False
        )
        layer = trial.get_submodule(name)
        return layer if _fits(layer, budget) else None

    lo, hi = ratio, 2 * ratio
    best = attempt(hi)
    while best is None:
        lo, hi = hi, 2 * hi
        if hi > MAX_CALIBRATION * ratio:
            raise RuntimeError(
                f"{structure}: layer {name} does not fit {budget:.0f} parameters at any "
                f"compression up to {MAX_CALIBRATION * ratio:g}."
            )
        best = attempt(hi)
    for _ in range(BISECTIONS):
        mid = (lo * hi) ** 0.5
        layer = attempt(mid)
        if layer is None:
            lo = mid
        else:
            hi, best = mid, layer
    return best, hi


def compress_to_budget(
    model: nn.Module, structure: str, ratio: float, skip: Sequence[str]
) -> tuple[nn.Module, dict[str, Any]]:
    """``model`` (untouched) compressed by ``structure`` with every compressed layer's factors
    within ``weight.numel() / ratio`` parameters; the conv layers outside ``skip`` are the
    compressed ones.

    Returns the compressed copy and a summary: per layer the dense weights, the factor
    parameters, the ``compression`` value that was passed (``calibrated`` when above
    ``ratio``), and the totals. Raises ``RuntimeError`` naming a layer that cannot be brought
    within the budget.
    """
    dense = _convs(model, skip)
    others = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in dense]
    budgets = {n: m.weight.numel() / ratio for n, m in dense.items()}
    small, _ = compress(
        model, structure=structure, compression=ratio, skip=others, method=METHOD, progress=False
    )
    used = {n: ratio for n in dense}
    for name in [n for n in dense if not _fits(small.get_submodule(n), budgets[n])]:
        rest = others + [n for n in dense if n != name]
        layer, used[name] = _calibrate(model, structure, name, budgets[name], ratio, rest)
        _set_layer(small, name, layer)
    layers = {
        n: {
            "weights": m.weight.numel(),
            "factors": _weights(small.get_submodule(n)),
            "compression_arg": round(used[n], 4),
        }
        for n, m in dense.items()
    }
    weights = sum(v["weights"] for v in layers.values())
    factors = sum(v["factors"] for v in layers.values())
    summary = {
        "layers": layers,
        "skipped": others,
        "calibrated": {n: round(c, 4) for n, c in used.items() if c != ratio},
        "weights": weights,
        "factors": factors,
        "achieved_ratio": weights / factors,
    }
    return small, summary


# ----------------------------------------------------------------------------------------------
# fine-tuning, losses and latency
# ----------------------------------------------------------------------------------------------
def _batches(n: int, batch_size: int, gen: torch.Generator, limit: int | None) -> Iterator[Any]:
    for b, idx in enumerate(torch.randperm(n, generator=gen).split(batch_size)):
        if limit is not None and b == limit:
            return
        yield idx


def fine_tune(
    model: nn.Module, task: Task, *, seed: int, epochs: int, max_batches: int | None = None
) -> list[float]:
    """Fine-tune every parameter of ``model`` in place; the same schedule for every family.

    Adam at ``task.lr`` with a cosine decay to zero over all steps, mini-batches of
    ``task.batch_size`` in an order drawn from ``torch.Generator().manual_seed(seed)`` (the
    same order for every model), ``max_batches`` per epoch at most. Returns each epoch's mean
    training loss.
    """
    n = len(task.train_x)
    per_epoch = -(-n // task.batch_size)
    if max_batches is not None:
        per_epoch = min(per_epoch, max_batches)
    opt = torch.optim.Adam(model.parameters(), lr=task.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs * per_epoch, 1))
    gen = torch.Generator().manual_seed(seed)
    history = []
    for _ in range(epochs):
        model.train()
        losses = []
        for idx in _batches(n, task.batch_size, gen, max_batches):
            loss = task.loss(model(task.train_x[idx]), task.train_y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        history.append(statistics.fmean(losses))
    model.eval()
    return history


@torch.no_grad()
def mean_loss(model: nn.Module, task: Task, *, batches: int | None = None) -> float:
    """Mean ``task.loss`` of ``model`` (eval mode) over the fine-tuning data (its first
    ``batches`` batches in stored order, or all of it), weighted by batch size."""
    model.eval()
    total, count = 0.0, 0
    for k, idx in enumerate(torch.arange(len(task.train_x)).split(task.batch_size)):
        if batches is not None and k == batches:
            break
        total += float(task.loss(model(task.train_x[idx]), task.train_y[idx])) * len(idx)
        count += len(idx)
    return total / count


@torch.no_grad()
def latency_ratio(
    original: nn.Module, compressed: nn.Module, x: torch.Tensor, reps: int
) -> dict[str, float]:
    """Median CPU seconds of one forward pass on ``x``, the two models timed alternately
    (interleaved, after two warm-up passes each), and their ratio compressed / original."""
    original.eval()
    compressed.eval()
    for _ in range(2):
        original(x)
        compressed(x)
    t_orig, t_comp = [], []
    for _ in range(reps):
        t = time.perf_counter()
        original(x)
        t_orig.append(time.perf_counter() - t)
        t = time.perf_counter()
        compressed(x)
        t_comp.append(time.perf_counter() - t)
    med_o, med_c = statistics.median(t_orig), statistics.median(t_comp)
    return {"original_s": med_o, "compressed_s": med_c, "ratio": med_c / med_o}


def with_method(
    model: nn.Module, method: Literal["auto", "factorized", "reconstructed"]
) -> nn.Module:
    """A copy of ``model`` whose :class:`~sekron.torch.SeKronConv2d` layers run with ``method``
    (rebuilt by the public constructor from the same factors, bias and options); ``model`` is
    untouched."""
    out = copy.deepcopy(model)
    for name, layer in list(out.named_modules()):
        if isinstance(layer, SeKronConv2d):
            new = SeKronConv2d(
                layer.sekron,
                layer.bias,
                stride=layer.stride,
                padding=layer.padding,
                dilation=layer.dilation,
                padding_mode=layer.padding_mode,
                method=method,
            )
            _set_layer(out, name, new.train(layer.training))
    return out


def _mean_std(values: Sequence[float]) -> dict[str, Any]:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "values": list(values)}


# ----------------------------------------------------------------------------------------------
# the experiment
# ----------------------------------------------------------------------------------------------
def compressed_row(
    task: Task, model: nn.Module, family: str, ratio: float, cfg: Config
) -> tuple[nn.Module, dict[str, Any]]:
    """``model`` compressed by ``family`` at ``ratio`` and measured: the row of the results
    before any fine-tuning."""
    start = time.perf_counter()
    small, summary = compress_to_budget(model, FAMILIES[family], ratio, task.skip)
    compress_s = time.perf_counter() - start
    row: dict[str, Any] = {
        "family": family,
        "structure": FAMILIES[family],
        "ratio": ratio,
        **summary,
        "compress_s": compress_s,
        "params": count_params(small),
        "macs": count_macs(small, task.example[:1]),
        "latency": latency_ratio(model, with_method(small, "auto"), task.example, cfg.latency_reps),
        "before": task.evaluate(small),
        "loss_before": mean_loss(small, task),
    }
    return small, row


def seed_run(task: Task, small: nn.Module, seed: int, cfg: Config) -> dict[str, Any]:
    """A copy of ``small`` fine-tuned with ``seed`` and measured."""
    epochs = task.epochs if cfg.epochs is None else cfg.epochs
    tuned = copy.deepcopy(small)
    start = time.perf_counter()
    history = fine_tune(tuned, task, seed=seed, epochs=epochs, max_batches=cfg.max_batches)
    seconds = time.perf_counter() - start
    return {
        "seed": seed,
        **task.evaluate(tuned),
        "loss": mean_loss(tuned, task),
        "epoch_losses": history,
        "fine_tune_s": seconds,
    }


def finish_row(row: dict[str, Any], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``row`` with its seeds' runs and their mean and spread per metric."""
    row["after"] = {m: _mean_std([r[m] for r in runs]) for m in row["before"]}
    row["runs"] = runs
    return row


def _row(
    task: Task, model: nn.Module, family: str, ratio: float, cfg: Config, bar: Progress
) -> dict[str, Any]:
    """Compress, measure, fine-tune once per seed and measure again: one row of the results."""
    tag = f"{task.name} {family} {ratio:g}x"
    bar.show(f"{tag}: compress")
    small, row = compressed_row(task, model, family, ratio, cfg)
    bar.advance(f"{tag}: compressed in {row['compress_s']:.1f} s")
    runs: list[dict[str, Any]] = []
    for seed in cfg.seeds:
        bar.show(f"{tag}: fine-tune seed {seed}")
        runs.append(seed_run(task, small, seed, cfg))
        bar.advance(f"{tag}: seed {seed} done")
    return finish_row(row, runs)


def run(
    tasks: Sequence[Task], cfg: Config, *, progress: bool = True, executor: Executor | None = None
) -> dict[str, Any]:
    """Run the experiment; returns the results (JSON-ready). A ``KeyboardInterrupt`` stops it
    after the row in progress is dropped: the rows done so far are returned with
    ``"interrupted": True``.

    With ``executor`` (a ``concurrent.futures.Executor``; Dask's ``Client.get_executor()``),
    each task's (family, ratio) compressions and then its (family, ratio, seed) fine-tunings
    run as tasks on it (see :mod:`experiment.on_executor`); the results are the local run's,
    timings aside.
    """
    per_row = 1 + len(cfg.seeds)
    bar = Progress(len(tasks) * len(cfg.families) * len(cfg.ratios) * per_row, enabled=progress)
    results: dict[str, Any] = {"config": _config_dict(cfg, tasks), "tasks": {}}
    start = time.perf_counter()
    try:
        for task in tasks:
            model = task.load_model().eval()
            original = task.evaluate(model)
            out: dict[str, Any] = {
                "metrics": list(original),
                "original": {
                    **original,
                    "loss": mean_loss(model, task),
                    "params": count_params(model),
                    "macs": count_macs(model, task.example[:1]),
                },
                "references": task.references,
                "skip": list(task.skip),
                "notes": task.notes,
                "rows": [],
            }
            results["tasks"][task.name] = out
            if executor is not None:
                from .on_executor import rows_on

                rows_on(executor, task, model, cfg, bar, out["rows"])
                continue
            for family in cfg.families:
                for ratio in cfg.ratios:
                    out["rows"].append(_row(task, model, family, ratio, cfg, bar))
    except KeyboardInterrupt:
        results["interrupted"] = True
    finally:
        bar.close()
    results["elapsed_s"] = time.perf_counter() - start
    return results


def _config_dict(cfg: Config, tasks: Sequence[Task]) -> dict[str, Any]:
    return {
        "families": {f: FAMILIES[f] for f in cfg.families},
        "ratios": list(cfg.ratios),
        "seeds": list(cfg.seeds),
        "max_batches": cfg.max_batches,
        "latency_reps": cfg.latency_reps,
        "conv_method": METHOD,
        "latency_method": "auto",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "schedule": {
            t.name: {
                "optimizer": "Adam",
                "lr": t.lr,
                "lr_schedule": "cosine to 0 over all steps",
                "batch_size": t.batch_size,
                "epochs": t.epochs if cfg.epochs is None else cfg.epochs,
                "train_samples": len(t.train_x),
            }
            for t in tasks
        },
    }
