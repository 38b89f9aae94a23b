"""The precision gate's parts that need no model: the calibration set, the metrics, fidelity.json, and what
`auto` picks from a verdict on a given CPU."""

from __future__ import annotations

import json
import random

import pytest

from service import fidelity_gate as gate
from service.backends.selection import choose_backend
from service.calibration import calibration_set, relevance_examples

NATIVE = {"avx512_bf16": True, "avx512_vnni": True}
NOT_NATIVE = {"avx512_bf16": False, "amx_bf16": False, "avx512_vnni": False}


def test_the_calibration_set_is_fixed_realistic_and_rankable():
    first, again = calibration_set(), calibration_set()
    assert first.sha256() == again.sha256()
    assert len(first.pairs) >= 512
    per_query = {}
    for pair in first.pairs:
        per_query[pair.query_id] = per_query.get(pair.query_id, 0) + 1
    assert min(per_query.values()) > 10  # top-10 overlap means something
    words = [len(p.passage.split()) for p in first.pairs]
    assert min(words) >= 40 and 120 <= sum(words) / len(words) <= 260 and max(words) >= 380  # RAG chunks
    kinds = {p.kind for p in first.pairs}
    assert kinds == {"relevant", "near", "other"}
    assert calibration_set(seed=1).sha256() != first.sha256()
    training = {(q, p) for q, p, _ in relevance_examples(200)}
    assert not training & {(p.query, p.passage) for p in first.pairs}
    with pytest.raises(ValueError):
        calibration_set(per_query=10)


def test_metrics_match_their_definitions():
    rng = random.Random(0)
    ref = [rng.random() for _ in range(64)]
    ids = [i // 16 for i in range(64)]
    same = gate.compare(ref, ref, ids)
    assert same["passed"] and same["spearman"] == pytest.approx(1.0) and same["top10_overlap"] == 1.0
    shifted = gate.compare(ref, [x + 0.02 for x in ref], ids)  # same ranking, scores moved
    assert shifted["spearman"] == pytest.approx(1.0) and shifted["failed"] == ["max_abs_diff"]
    reversed_ = gate.compare(ref, [-x for x in ref], ids)
    assert set(reversed_["failed"]) == {"spearman", "top10_overlap", "max_abs_diff"}
    # Swap the 10th and 11th best of one query: overlap 9/10 there, 0.975 on average over 4 queries.
    cand = list(ref)
    group = sorted(range(16), key=lambda i: -ref[i])
    cand[group[9]], cand[group[10]] = ref[group[10]], ref[group[9]]
    assert gate.top_k_overlap(ref, cand, ids) == pytest.approx((3 + 0.9) / 4)
    nan = gate.compare(ref, [float("nan")] * 64, ids)
    assert not nan["passed"]


def _verdict(bf16_passed=True, speed=1.8, **extra_options):
    options = {"torch-fp32": {"passed": True, "spearman": 1.0, "top10_overlap": 1.0, "max_abs_diff": 0.0,
                              "speedup_vs_reference": 1.0},
               "torch-bf16": {"passed": bf16_passed, "spearman": 0.9999 if bf16_passed else 0.97,
                              "top10_overlap": 1.0, "max_abs_diff": 0.002 if bf16_passed else 0.3,
                              "speedup_vs_reference": speed, "failed": [] if bf16_passed else ["spearman"]},
               **extra_options}
    return gate.Verdict(options=options, created="2026-12-01T00:00:00Z")


def test_verdict_round_trips_and_refuses_other_weights(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    verdict = _verdict()
    verdict.model = {"weights": [{"file": "model.safetensors", "bytes": 10, "sha256": "..."}]}
    path = gate.write_verdict(tmp_path, verdict)
    data = json.loads(path.read_text())
    assert set(data) >= {"created", "versions", "thresholds", "calibration", "options"}
    assert data["thresholds"] == {"spearman": 0.999, "top10_overlap": 0.98, "max_abs_diff": 0.01}
    again = gate.read_verdict(tmp_path)
    assert again.passed("torch-bf16") and again.options == verdict.options
    (tmp_path / "model.safetensors").write_bytes(b"y" * 11)
    with pytest.raises(gate.VerdictError, match="other weights"):
        gate.read_verdict(tmp_path)
    path.write_text("{not json")
    with pytest.raises(gate.VerdictError):
        gate.read_verdict(tmp_path)
    assert gate.read_verdict(tmp_path / "nowhere") is None


def test_auto_follows_the_verdict_and_the_cpu():
    passed, failed = _verdict(True), _verdict(False)
    choice = choose_backend(backend="auto", precision="auto", device="cpu", verdict=passed, features=NATIVE)
    assert (choice.backend, choice.precision) == ("torch", "bf16")
    assert "Spearman 0.99990" in choice.reason and choice.figures["speedup_vs_reference"] == 1.8
    choice = choose_backend(backend="auto", precision="auto", device="cpu", verdict=failed, features=NATIVE)
    assert (choice.backend, choice.precision) == ("torch", "fp32") and "FAILED" in choice.reason
    choice = choose_backend(backend="auto", precision="auto", device="cpu", verdict=passed, features=NOT_NATIVE)
    assert choice.precision == "fp32" and "emulated" in choice.reason
    slower = _verdict(True, speed=0.9)
    choice = choose_backend(backend="auto", precision="auto", device="cpu", verdict=slower, features=NATIVE)
    assert choice.precision == "fp32" and "not faster" in choice.reason
    choice = choose_backend(backend="auto", precision="auto", device="cpu", verdict=None,
                            verdict_problem="no fidelity.json in /m", features=NATIVE)
    assert choice.precision == "fp32" and "no precision verdict" in choice.reason and "/m" in choice.reason
    # An explicit precision is obeyed, with the verdict's figures in the reason.
    choice = choose_backend(backend="auto", precision="bf16", device="cpu", verdict=failed, features=NATIVE)
    assert choice.precision == "bf16" and "FAILED" in choice.reason


def test_auto_takes_the_fastest_passed_option_whose_files_are_there(tmp_path):
    (tmp_path / "onnx").mkdir()
    (tmp_path / "onnx" / "model_quantized.onnx").write_bytes(b"")
    int8 = {"passed": True, "spearman": 0.9995, "top10_overlap": 0.99, "max_abs_diff": 0.005,
            "speedup_vs_reference": 2.5}
    verdict = _verdict(True, speed=1.8, **{"onnx-int8": int8})
    choice = choose_backend(backend="auto", precision="auto", device="cpu", verdict=verdict,
                            model_dir=tmp_path, features=NATIVE)
    assert (choice.backend, choice.precision) == ("onnx", "int8")
    choice = choose_backend(backend="torch", precision="auto", device="cpu", verdict=verdict,
                            model_dir=tmp_path, features=NATIVE)
    assert (choice.backend, choice.precision) == ("torch", "bf16")
    (tmp_path / "onnx" / "model_quantized.onnx").unlink()
    choice = choose_backend(backend="auto", precision="auto", device="cpu", verdict=verdict,
                            model_dir=tmp_path, features=NATIVE)
    assert choice.precision == "bf16"


def test_native_support_per_precision():
    assert gate.runs_natively("torch-fp32", {})[0]
    assert gate.runs_natively("torch-bf16", {"amx_bf16": True})[0]
    assert not gate.runs_natively("torch-bf16", {"avx512_vnni": True})[0]
    assert gate.runs_natively("onnx-int8", {"avx_vnni": True})[0]
    assert not gate.runs_natively("onnx-int8", {"avx512_bf16": True})[0]
