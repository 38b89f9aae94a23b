"""benchmarks/flavours.py's table in RESULTS.md: rendered from flavours.json, with the ratios and the verdict."""

from __future__ import annotations

import json

from benchmarks import flavours


def _entry(precision: str, w1: int, rss: int) -> dict:
    return {"image": "reranker:x", "image_mb": 420, "memory_limit": "512m", "cold_start_s": 1.84,
            "info": {"precision": precision}, "W1_p50_ms": w1, "W1_p95_ms": w1 + 100, "W2_p50_ms": 310,
            "W2_p95_ms": 330, "W3_req_per_s": 2.4, "W3_p50_ms": 3100, "soak": {"requests": 30},
            "memory_after_soak": {"worker_peak_rss_mb": rss, "cgroup_peak_mb": rss + 150, "oom_killed": False,
                                  "running": True}}


SAMPLE = {
    "generated_at": "2026-12-01 09:00:00 UTC", "duration_s": 420, "load_at_start": 0.5, "load_at_end": 1.5,
    "machine": {"model": "AMD EPYC", "vendor": "AuthenticAMD", "family": "26", "model_number": "2", "affinity": 2,
                "flags": "avx2 avx512f avx512_bf16 avx512_vnni"}, "settings": {"soak_s": 60},
    "flavours": {"torch": _entry("fp32", 4000, 760), "onnx": _entry("fp32", 3600, 260)},
    "ratios_onnx_vs_torch": {"W1_p50": 0.9, "W2_p50": 1.0, "W3_throughput": 1.05},
    "agreement_onnx_vs_torch": {"W1": {"spearman": 1.0, "max_abs_diff": 2e-5},
                                "W2": {"spearman": 1.0, "max_abs_diff": 1e-5}},
    "fidelity_json": {"options": {"onnx-fp32": {"passed": True, "spearman": 0.99999, "top10_overlap": 1.0,
                                                "max_abs_diff": 3e-5},
                                  "onnx-int8": {"passed": False, "spearman": 0.6, "max_abs_diff": 0.8}}},
}


def test_section_names_both_flavours_ratios_and_verdict(tmp_path):
    path = tmp_path / "flavours.json"
    assert flavours.flavours_section(path) == ""  # before the first run
    path.write_text(json.dumps(SAMPLE))
    section = flavours.flavours_section(path)
    assert "| torch (`runtime`, fp32) | 420 MB | 512m | 760 MB |" in section
    assert "| onnx (`runtime-onnx`, fp32) | 420 MB | 512m | 260 MB |" in section
    assert "W1 p50 **0.90x**" in section and "W3 throughput **1.05x**" in section
    assert "int8: failed the gate on this model" in section and "not shipped" in section
    # Measured apart from the benchmark, maybe on another machine: the CPU is named as the soak and gate name theirs.
    assert "measured on AMD EPYC (AuthenticAMD family 26, model 2; AVX-512 BF16, VNNI, no AMX), 2 CPUs." in section
    assert "60 s soak" in section
