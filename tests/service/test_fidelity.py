"""The precision gate on real models: bf16 passes on trained weights (all-MiniLM-L6-v2's trunk with a trained
reranker head) and fails on the random JinaBERT-shaped proxy, and `auto` follows the verdict written next to
the model, with the figures in /info. Scores of what `auto` runs stay within the bounds."""

from __future__ import annotations

import json
import shutil

import pytest

import service.backends.selection as selection
from service import fidelity_gate as gate
from service.calibration import calibration_set
from service.engine.factory import build_engine
from service.settings import load_settings
from tests.support.model_factory import JINA_TINY_DIMS, cached_model

pytestmark = pytest.mark.slow

NATIVE = {"model": "test CPU", "avx512_bf16": True, "amx_bf16": False, "avx512_vnni": True}


@pytest.fixture(scope="module")
def trained_dir(model_cache, tmp_path_factory):
    """A private copy (the gate writes fidelity.json next to the weights; the cache stays verdict-free)."""
    target = tmp_path_factory.mktemp("trained") / "trained-reranker"
    shutil.copytree(cached_model("trained", model_cache), target)
    return target


@pytest.fixture(scope="module")
def trained_verdict(trained_dir):
    return gate.run_gate(trained_dir, options=["torch-bf16"], log=print)


def test_trained_model_spreads_its_scores_like_a_reranker(trained_dir):
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(trained_dir), max_length=512, device="cpu")
    groups = calibration_set().by_query()[:4]
    scores = [s for q, docs in groups for s in model.predict([(q, d) for d in docs]).tolist()]
    assert min(scores) < 0.2 and max(scores) > 0.8  # not a near-constant random head


def test_bf16_passes_the_gate_on_trained_weights(trained_dir, trained_verdict):
    entry = trained_verdict.options["torch-bf16"]
    assert entry["passed"], trained_verdict.summary("torch-bf16")
    assert entry["pairs"] >= 512 and entry["mode"] == "weights"
    written = json.loads((trained_dir / gate.VERDICT_FILE).read_text())
    assert written["options"]["torch-bf16"]["passed"] is True
    assert written["calibration"]["sha256"] == calibration_set().sha256()
    assert written["versions"]["torch"] and written["model"]["weights"][0]["sha256"]


def test_the_gate_times_each_option_batched_and_padded_as_it_serves(trained_dir, monkeypatch):
    """auto picks the fastest option that passed, by the speeds the gate measured: those must be the speeds of the
    batching that serves (per backend and precision), not of a batch size of the gate's own."""
    from service.backends.torch_backend import TorchBackend

    seen: dict[str, list[tuple[int, int, int]]] = {}  # precision -> (pairs, padded length, longest pair)
    scoring = []  # non-empty while the gate scores the calibration set (not the load's warm-up checks)
    real_forward, real_score = TorchBackend.forward, gate._score_calibration

    def recording_forward(self, features):
        if scoring:
            mask = features["attention_mask"]
            seen.setdefault(self.precision, []).append((mask.shape[0], mask.shape[1], int(mask.sum(axis=1).max())))
        return real_forward(self, features)

    def recording_score(engine, calibration):
        scoring.append(True)
        try:
            return real_score(engine, calibration)
        finally:
            scoring.clear()

    monkeypatch.setattr(TorchBackend, "forward", recording_forward)
    monkeypatch.setattr(gate, "_score_calibration", recording_score)
    gate.run_gate(trained_dir, options=["torch-bf16"], calibration=calibration_set(n_queries=2, per_query=16),
                  write=False, log=print)
    for precision in ("fp32", "bf16"):
        loaded = build_engine(load_settings(RERANK_MODEL_PATH=str(trained_dir), RERANK_PRECISION=precision))
        loaded.engine.stop()
        budget, multiple = loaded.info["batch_tokens"], loaded.info["pad_multiple"]
        batches = seen[precision]
        assert all(pairs * length <= budget for pairs, length, _ in batches), (precision, budget, batches)
        assert all(length == -(-longest // multiple) * multiple for _, length, longest in batches), batches
        # ...and filled up to it: the calibration's pairs were cut by the budget, not scored a few at a time.
        assert max(pairs * length for pairs, length, _ in batches) > budget // 2, batches


def test_bf16_fails_the_gate_on_the_random_proxy(model_cache):
    proxy = cached_model("alibi", model_cache, **JINA_TINY_DIMS)
    verdict = gate.run_gate(proxy, options=["torch-bf16"], write=False, log=print)
    assert not verdict.passed("torch-bf16"), verdict.summary("torch-bf16")
    assert not (proxy / gate.VERDICT_FILE).exists()


def test_auto_follows_the_verdict(trained_dir, trained_verdict, monkeypatch):
    monkeypatch.setattr(selection, "cpu_features", lambda: dict(NATIVE))
    loaded = build_engine(load_settings(RERANK_MODEL_PATH=str(trained_dir)))
    try:
        # The verdict holds the speed bf16 measured against fp32 on this machine: auto takes bf16 only when it
        # passed AND was faster (a loaded machine can measure it slower; then auto must keep fp32 and say why).
        faster = float(trained_verdict.options["torch-bf16"].get("speedup_vs_reference") or 0.0) > 1.0
        expected = "bf16" if faster else "fp32"
        assert (loaded.info["backend"], loaded.info["precision"]) == ("torch", expected)
        if faster:
            assert "passed the gate" in loaded.info["backend_reason"]
            chosen = loaded.info["precision_verdict"]["chosen"]
            assert chosen["spearman"] >= 0.999 and chosen["max_abs_diff"] <= 0.01
        else:
            assert "not faster than fp32" in loaded.info["backend_reason"], loaded.info["backend_reason"]
        # What auto serves is what was gated: the calibration set's scores within the bounds.
        reference, ids = [], []
        fp32 = build_engine(load_settings(RERANK_MODEL_PATH=str(trained_dir), RERANK_PRECISION="fp32"))
        try:
            served = []
            for query_id, (query, docs) in enumerate(calibration_set().by_query()[:8]):
                served += loaded.engine.rerank_now(query, docs).relevance.tolist()
                reference += fp32.engine.rerank_now(query, docs).relevance.tolist()
                ids += [query_id] * len(docs)
        finally:
            fp32.engine.stop()
        assert gate.compare(reference, served, ids)["passed"]
    finally:
        loaded.engine.stop()

    # A failed verdict, or none at all: fp32, and the reason says which.
    data = json.loads((trained_dir / gate.VERDICT_FILE).read_text())
    data["options"]["torch-bf16"]["passed"] = False
    (trained_dir / gate.VERDICT_FILE).write_text(json.dumps(data))
    loaded = build_engine(load_settings(RERANK_MODEL_PATH=str(trained_dir)))
    loaded.engine.stop()
    assert loaded.info["precision"] == "fp32" and "no faster option passed" in loaded.info["backend_reason"]
    (trained_dir / gate.VERDICT_FILE).unlink()
    loaded = build_engine(load_settings(RERANK_MODEL_PATH=str(trained_dir)))
    loaded.engine.stop()
    assert loaded.info["precision"] == "fp32" and "no precision verdict" in loaded.info["backend_reason"]
    assert loaded.info["precision_verdict"]["file"] is None
