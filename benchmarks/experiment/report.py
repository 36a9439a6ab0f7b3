"""Write the experiment's results: JSON, a Markdown table and a plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["markdown", "plot", "write"]


def _pm(stat: dict[str, Any], digits: int) -> str:
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _digits(metric: str) -> int:
    return 2 if metric == "psnr" else 4


def _task_table(name: str, res: dict[str, Any]) -> list[str]:
    metrics, orig = res["metrics"], res["original"]
    lines = [f"## {name}", "", res["notes"], ""]
    refs = ", ".join(
        f"{ref}: " + ", ".join(f"{m} {v:.{_digits(m)}f}" for m, v in vals.items())
        for ref, vals in res["references"].items()
    )
    orig_text = ", ".join(f"{m} {orig[m]:.{_digits(m)}f}" for m in metrics)
    lines.append(
        f"Original model: {orig_text}; {orig['params']:,} parameters, {orig['macs']:,} MACs."
        + (f" Reference: {refs}." if refs else "")
    )
    lines.append("")
    head = ["family", "ratio", "achieved", "params", "MACs", "latency"]
    head += [f"{m} before" for m in metrics] + [f"{m} after" for m in metrics]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in res["rows"]:
        cells = [
            row["family"],
            f"{row['ratio']:g}x",
            f"{row['achieved_ratio']:.2f}x",
            f"{row['params']:,}",
            f"{row['macs'] / orig['macs']:.2f}x",
            f"{row['latency']['ratio']:.2f}x",
        ]
        cells += [f"{row['before'][m]:.{_digits(m)}f}" for m in metrics]
        cells += [_pm(row["after"][m], _digits(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    calibrated = [
        f"{row['family']} {row['ratio']:g}x: "
        + ", ".join(f"{k} at {v:g}" for k, v in row["calibrated"].items())
        for row in res["rows"]
        if row["calibrated"]
    ]
    if calibrated:
        lines += ["", "Layers compressed at a larger `compression` to fit the budget: "]
        lines += [f"- {c}" for c in calibrated]
    return lines + [""]


def markdown(results: dict[str, Any]) -> str:
    """The results as Markdown: a table per task (mean ± std over the seeds)."""
    cfg = results["config"]
    lines = [
        "# Does choosing the structure pay off? (measured)",
        "",
        f"Seeds {cfg['seeds']}, ratios {cfg['ratios']}, {cfg['threads']} threads, "
        f"torch {cfg['torch']}; {results['elapsed_s'] / 60:.1f} min in all"
        + (" (**interrupted**: partial)" if results.get("interrupted") else "")
        + ".",
        "",
        "`ratio`: target compression of the compressed layers' weights; `achieved`: dense "
        "weights / factor parameters over those layers; `params`: whole model; `MACs` and "
        "`latency`: compressed / original (latency: interleaved medians, one batch, CPU); "
        "`after`: mean ± std over the seeds after fine-tuning. The compressed layers run "
        f"with `method={cfg.get('conv_method', 'auto')!r}` for every metric and fine-tuning "
        f"step, with `method={cfg.get('latency_method', 'auto')!r}` for the latency.",
        "",
    ]
    for name, res in results["tasks"].items():
        lines += _task_table(name, res)
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Primary metric against the achieved compression, one line per family (mean ± std after
    fine-tuning, solid; before fine-tuning, dotted), one panel per task."""
    # a Figure on the Agg canvas, not pyplot: no process-wide backend switch (matplotlib.use)
    # and no figure registry, whoever calls this
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    tasks = results["tasks"]
    fig = Figure(figsize=(6 * max(len(tasks), 1), 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, max(len(tasks), 1))
    axes = [axes] if len(tasks) <= 1 else list(axes)
    for ax, (name, res) in zip(axes, tasks.items(), strict=False):
        metric = res["metrics"][0]
        families = list(dict.fromkeys(r["family"] for r in res["rows"]))
        for fam in families:
            rows = [r for r in res["rows"] if r["family"] == fam]
            xs = [r["achieved_ratio"] for r in rows]
            line = ax.errorbar(
                xs,
                [r["after"][metric]["mean"] for r in rows],
                yerr=[r["after"][metric]["std"] for r in rows],
                marker="o",
                capsize=3,
                label=fam,
            )
            color = line[0].get_color()
            ax.plot(xs, [r["before"][metric] for r in rows], ":", marker="x", color=color)
        ax.axhline(res["original"][metric], color="k", ls="--", lw=1, label="original")
        for ref, vals in res["references"].items():
            ax.axhline(vals[metric], color="gray", ls="-.", lw=1, label=ref)
        ax.set_xscale("log", base=2)
        top = max((r["achieved_ratio"] for r in res["rows"]), default=2.0)
        ax.set_xticks([2.0**k for k in range(1, 7) if 2.0**k <= 1.5 * top])
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("achieved compression of the compressed layers (x)")
        ax.set_ylabel(f"{metric} (solid: fine-tuned, dotted: before)")
        ax.set_title(name)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def write(results: dict[str, Any], out: Path, stem: str) -> list[Path]:
    """Write ``stem.json``, ``stem.md`` and ``stem.png`` under ``out``; return their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.json", out / f"{stem}.md", out / f"{stem}.png"]
    paths[0].write_text(json.dumps(results, indent=1) + "\n")
    paths[1].write_text(markdown(results))
    plot(results, paths[2])
    return paths
