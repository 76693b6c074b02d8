"""Reports: a markdown table and a PNG chart of NDCG@20 per model on cold / warm / all."""

from __future__ import annotations

import io
import math
from pathlib import Path

from coldstart import artifacts
from coldstart.evaluate import GROUPS

TABLE_METRICS = ("ndcg@20", "recall@20", "ndcg@10", "recall@10")


def _fmt(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.4f}"


def markdown_table(results: dict[str, dict[str, dict[str, float]]],
                   metrics: tuple[str, ...] = TABLE_METRICS) -> str:
    """One row per model; columns group/metric. `results` maps model -> evaluate() JSON."""
    header = ["model"] + [f"{g} {m}" for g in GROUPS for m in metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, groups in results.items():
        row = [model] + [_fmt(groups.get(g, {}).get(m)) for g in GROUPS for m in metrics]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def ndcg_chart(results: dict[str, dict[str, dict[str, float]]], title: str, metric: str = "ndcg@20") -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results)
    width = 0.8 / len(GROUPS)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(models) + 2), 4.0))
    for j, group in enumerate(GROUPS):
        values = [results[m].get(group, {}).get(metric, float("nan")) for m in models]
        positions = [i + (j - (len(GROUPS) - 1) / 2) * width for i in range(len(models))]
        bars = ax.bar(positions, values, width, label=group)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    ax.set_xticks(range(len(models)), models, rotation=15)
    ax.set_ylabel(metric.upper())
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def write_report(results: dict[str, dict[str, dict[str, float]]], folder: str | Path, *, title: str,
                 context: dict | None = None) -> Path:
    """Write metrics.json, report.md and ndcg20.png into `folder`, each atomically."""
    folder = Path(folder)
    artifacts.write_json(folder / "metrics.json", results)
    intro = f"# {title}\n\n"
    if context:
        intro += "".join(f"- {k}: {v}\n" for k, v in context.items()) + "\n"
    artifacts.write_text(folder / "report.md", intro + markdown_table(results) + "\n![NDCG@20](ndcg20.png)\n")
    artifacts.write_bytes(folder / "ndcg20.png", ndcg_chart(results, title))
    return folder
