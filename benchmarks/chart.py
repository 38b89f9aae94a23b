"""chart.png: latency, throughput and memory per contender, from one run's results.json (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHART_FILE = "chart.png"


def write_chart(results: dict[str, Any], out_dir: Path) -> Path | None:
    """Four panels side by side: W1 p50, W2 p50 (ms, lower is better), W3 throughput (req/s, higher is better),
    peak RSS per worker (MiB). Returns the file, or None if matplotlib is missing (the report says so)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    ok = [(key, e) for key, e in results["contenders"].items() if e.get("status") == "ok"]
    if not ok:
        return None
    labels = [e["label"].replace(" this service", "\nservice").replace(" server", "\nserver") for _, e in ok]
    colours = ["#9e9e9e" if key == "seed" else "#f0a030" if key == "infinity" else "#2f7ed8" for key, _ in ok]
    panels = [
        ("W1 p50 latency (ms)\n1 query x 100 docs", [e["workloads"]["W1"]["p50_ms"] for _, e in ok], "{:,.0f}"),
        ("W2 p50 latency (ms)\n1 query x 20 docs", [e["workloads"]["W2"]["p50_ms"] for _, e in ok], "{:,.0f}"),
        ("W3 throughput (req/s)\n8 concurrent clients", [e["workloads"]["W3"]["throughput_rps"] or 0 for _, e in ok],
         "{:.2f}"),
        ("peak RSS per worker (MiB)\nserving", [e["memory"]["peak_rss_per_worker_serving_mib"] for _, e in ok],
         "{:,.0f}"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6))
    for ax, (title, values, fmt) in zip(axes, panels):
        bars = ax.barh(range(len(values)), values, color=colours)
        ax.set_yticks(range(len(values)), labels if ax is axes[0] else [""] * len(values), fontsize=8)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=10)
        for bar, value in zip(bars, values):
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " " + fmt.format(value), va="center",
                    fontsize=8)
        ax.set_xlim(0, max(values) * 1.3 if max(values) else 1)
        ax.spines[["top", "right"]].set_visible(False)
    cpu = results.get("machine", {}).get("model", "")
    fig.suptitle(f"{results['model']['label']} - {cpu} - {results['generated_at']}", fontsize=9)
    fig.tight_layout()
    path = Path(out_dir) / CHART_FILE
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
