"""benchmarks/RESULTS.md's soak and precision-gate sections: they come from separate runs (benchmarks.soak,
benchmarks.gate_report), possibly on another machine than the benchmark's, so each names the CPU it ran on."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.machine import cpu_label
from benchmarks.report import render

BENCH_DIR = Path(__file__).resolve().parents[2] / "benchmarks"
XEON = {"model": "Intel(R) Xeon(R) Platinum", "vendor": "GenuineIntel", "family": "6", "model_number": "143",
        "affinity": 2, "flags": "avx2 avx512f avx512_bf16 avx512_vnni amx_bf16 amx_tile amx_int8"}
EPYC = {"model": "AMD EPYC", "vendor": "AuthenticAMD", "family": "25", "model_number": "17", "cores_online": 2,
        "flags": "avx2 avx512f avx512_bf16 avx512_vnni"}


def _soak(precision: str, cpu: str | None) -> dict:
    entry = {"precision": precision, "where": "image reranker:test, --memory 2g", "capacity_rps": 3.9,
             "target_rps": 3.9, "requests": 100, "failures": 0, "failure_reasons": {}, "seconds": 60.0,
             "peak_rss_mib": 460.0, "end_rss_mib": 390.0, "container_peak_mib": 380.0, "error": None}
    return entry if cpu is None else {**entry, "cpu": cpu}


def _gate(cpu: str | None) -> dict:
    option = {"spearman": 0.99999, "top10_overlap": 1.0, "max_abs_diff": 6.6e-3, "mean_abs_diff": 8e-4,
              "speedup_vs_reference": 1.44, "passed": True}
    verdicts = {"trained MiniLM reranker": {"reference": "torch-fp32",
                                            "options": {"torch-fp32": {"passed": True}, "torch-bf16": option}}}
    return {"verdicts": verdicts} if cpu is None else {"cpu": cpu, "verdicts": verdicts}


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    end = text.find("\n### ", start + len(heading))
    return text[start:end if end != -1 else len(text)]


def _results(**extra) -> dict:
    return {**json.loads((BENCH_DIR / "results.json").read_text()), **extra}


def test_cpu_label_names_the_model_generation_and_the_bf16_hardware():
    assert cpu_label(XEON) == ("Intel(R) Xeon(R) Platinum (GenuineIntel family 6, model 143; AVX-512 BF16, VNNI, "
                               "AMX), 2 CPUs")
    assert cpu_label(EPYC) == "AMD EPYC (AuthenticAMD family 25, model 17; AVX-512 BF16, VNNI, no AMX), 2 CPUs"
    assert cpu_label({"flags": ""}) == "unknown CPU (no AMX), ? CPUs"


def test_the_soak_and_gate_sections_name_the_cpu_they_were_measured_on():
    text = render(_results(soak=[_soak("fp32", cpu_label(XEON)), _soak("bf16", cpu_label(XEON))],
                           gate=_gate(cpu_label(EPYC))))
    soak = _section(text, "### Memory soak")
    gate = _section(text, "### Precision gate")
    assert f"Measured on {cpu_label(XEON)}." in soak and "AMD EPYC" not in soak
    assert f"Measured on {cpu_label(EPYC)}." in gate and "Xeon" not in gate
    assert "| trained MiniLM reranker | torch-bf16 | 0.99999 | 1.000 | 6.60e-03 |" in gate


def test_a_soak_run_on_two_machines_names_both_and_an_old_record_says_it_does_not_know():
    mixed = render(_results(soak=[_soak("fp32", cpu_label(XEON)), _soak("bf16", cpu_label(EPYC))]))
    assert f"Measured on {cpu_label(EPYC)} and {cpu_label(XEON)}." in _section(mixed, "### Memory soak")
    unknown = render(_results(soak=[_soak("fp32", None)], gate=_gate(None)))
    assert "The CPU it ran on was not recorded." in _section(unknown, "### Memory soak")
    assert "The CPU it ran on was not recorded." in _section(unknown, "### Precision gate")
