"""The benchmark harness runs end to end and writes a complete report.

Tiny AliBERT test model, tiny workload, the seed-style server and this service only (Infinity needs its
own venv and minutes to install). No timing thresholds: only that every column is there and sane.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> tuple[dict, str, str]:
    out_dir = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--smoke", "--contenders", "seed,service",
         "--model-cache", str(model_cache), "--out-dir", str(out_dir)],
        cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, f"harness failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    results = json.loads((out_dir / "results.json").read_text())
    return results, (out_dir / "RESULTS.md").read_text(), proc.stdout


def _finite_positive(value: object) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def test_both_contenders_measured(smoke_run):
    results, _, stdout = smoke_run
    contenders = results["contenders"]
    assert set(contenders) == {"seed", "service"}, stdout
    for key, entry in contenders.items():
        assert entry["status"] == "ok", f"{key}: {entry.get('error')}"


def test_every_metric_is_present_and_sane(smoke_run):
    results, _, _ = smoke_run
    for key, entry in results["contenders"].items():
        w = entry["workloads"]
        for wk in ("W1", "W2"):
            stats = w[wk]
            assert stats["n"] >= 1
            assert _finite_positive(stats["p50_ms"]) and stats["p95_ms"] >= stats["p50_ms"], (key, wk, stats)
            assert _finite_positive(stats["tokens_per_s"]), (key, wk)
            # A fraction of the measured matmul peak; noise can distort a tiny-model measurement, so only
            # absurd values fail (this is not a timing assertion).
            assert 0 < stats["mfu"] < 10, (key, wk, stats["mfu"])
        w3 = w["W3"]
        assert w3["n"] == results["workloads"]["W3"]["requests_per_burst"] * w3["bursts"]
        assert _finite_positive(w3["throughput_rps"]) and _finite_positive(w3["tokens_per_s"])
        assert 0 < w3["mfu"] < 10
        assert set(entry["ratio_vs_seed"]) == {"W1_p50", "W1_p95", "W2_p50", "W2_p95", "W3_throughput"}
        assert all(_finite_positive(r) for r in entry["ratio_vs_seed"].values())
        mem = entry["memory"]
        assert 20 < mem["peak_rss_per_worker_serving_mib"] < 24 * 1024, (key, mem)
        assert mem["vmhwm_mib"] >= mem["peak_rss_per_worker_serving_mib"] * 0.99
        # the file-backed part of that peak (libraries' code, the mapped model): there, and only a part of it
        assert 0 < mem["peak_rss_per_worker_serving_file_mib"] < mem["peak_rss_per_worker_serving_mib"], (key, mem)
        assert 0 < entry["cold_start_s"] < 120
        runs = entry["cold_start_runs_s"]  # the measured start, then one more alone (the smoke plan's 2)
        assert len(runs) == results["settings"]["plan"]["cold_starts"] == 2, (key, runs)
        assert min(runs) <= entry["cold_start_s"] <= max(runs)
    assert results["contenders"]["seed"]["ratio_vs_seed"]["W1_p50"] == pytest.approx(1.0)


def test_service_scores_agree_with_the_seed_server(smoke_run):
    results, _, _ = smoke_run
    agreement = results["contenders"]["service"]["agreement_vs_seed"]
    for wk in ("W1", "W2"):
        assert agreement[wk]["n"] == results["workloads"][wk]["documents_per_request"]
        assert 0 <= agreement[wk]["max_abs_diff"] <= 1


def test_context_is_recorded(smoke_run):
    results, _, _ = smoke_run
    assert results["machine"]["model"] and results["machine"]["flags"]
    assert results["versions"]["torch"] and results["versions"]["transformers"]
    assert results["versions"]["sentence-transformers"]
    for dtype in ("fp32", "bf16"):
        assert _finite_positive(results["matmul_peak"][dtype]["gflops"])
    assert results["model"]["flops_per_token_at_mean_W1_pair"] > 0
    for wk in ("W1", "W2", "W3"):
        assert results["workloads"][wk]["mean_tokens_per_request"] > 0


def test_markdown_report_has_the_table(smoke_run):
    from benchmarks.report import TABLE_COLUMNS

    _, markdown, _ = smoke_run
    header = "| " + " | ".join(TABLE_COLUMNS) + " |"
    assert header in markdown
    table = markdown.split(header, 1)[1].split("\n\n", 1)[0].strip().splitlines()
    rows = [line for line in table[1:] if line.startswith("|")]
    assert len(rows) == 2
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == len(TABLE_COLUMNS) and all(cells), row
        assert re.fullmatch(r"[\d,]+ MiB \([\d,]+ file\)", cells[TABLE_COLUMNS.index("peak RSS/worker serving")]), row
        assert re.fullmatch(r"[\d.]+ s \([\d.]+-[\d.]+\)", cells[TABLE_COLUMNS.index("cold start")]), row
    assert "## Machine and versions" in markdown and "- CPU: **" in markdown
