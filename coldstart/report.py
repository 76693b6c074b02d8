"""Reports: a markdown table and a PNG chart of NDCG@20 per model on cold / warm / all."""

from __future__ import annotations

import io
import math
from pathlib import Path

from coldstart import artifacts
from coldstart.evaluate import GROUPS

TABLE_METRICS = ("ndcg@20", "recall@20", "ndcg@10", "recall@10")
SOURCE_MARK = "[source interactions]"
SOURCE_NOTE = (f"Rows marked {SOURCE_MARK} learn the target's cold items from another dataset's interactions "
               "with the same titles, which no single-domain model sees: compare them with the other rows knowing it.")


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
    import matplotlib  # matplotlib: heavy, only the report draws

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


def stages_table(stages: dict[str, dict]) -> str:
    """One row per pipeline stage: what happened to it (done, reused, skipped, failed) and why or how long."""
    lines = ["| stage | status | detail |", "|---|---|---|"]
    for name, entry in stages.items():
        status = entry["status"]
        if status in ("done", "reused"):
            detail = f"{entry.get('seconds', 0):.0f} s; " + (", ".join(entry.get("models", [])) or "no model rows")
        else:
            detail = entry.get("reason") or entry.get("error", "")
        lines.append(f"| {name} | {status.upper() if status == 'failed' else status} | {detail.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def write_report(results: dict[str, dict[str, dict[str, float]]], folder: str | Path, *, title: str,
                 context: dict | None = None, stages: dict[str, dict] | None = None) -> Path:
    """Write metrics.json, report.md and ndcg20.png into `folder`, each atomically.

    `stages` (the pipeline's ledger) adds a table of every stage's outcome, so a
    skipped or failed stage is named in the report with its reason or error.
    """
    folder = Path(folder)
    artifacts.write_json(folder / "metrics.json", results)
    intro = f"# {title}\n\n"
    if context:
        intro += "".join(f"- {k}: {v}\n" for k, v in context.items()) + "\n"
    body = markdown_table(results) + "\n![NDCG@20](ndcg20.png)\n"
    if any(SOURCE_MARK in name for name in results):
        body += f"\n{SOURCE_NOTE}\n"
    if stages:
        body += "\n## Stages\n\n" + stages_table(stages)
    artifacts.write_text(folder / "report.md", intro + body)
    artifacts.write_bytes(folder / "ndcg20.png", ndcg_chart(results, title))
    return folder
