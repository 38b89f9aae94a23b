"""Fidelity is a test, not a hope: every backend/precision that RERANK_PRECISION=auto can pick, on any CPU,
scores 512 fixed (query, document) pairs within Spearman >= 0.999 and max |score difference| <= 0.01 of
fp32 torch `CrossEncoder.predict`, on the JinaBERT-shaped proxy (random weights, init std 0.1). Options that
fail (bf16 autocast, ONNX int8 on this proxy: see benchmarks/RESULTS.md) stay opt-in."""

from __future__ import annotations

from itertools import groupby

import pytest

import service.backends.selection as selection
from benchmarks.fidelity import MAX_ABS_DIFF, MIN_SPEARMAN, compare, fidelity_pairs, reference_scores
from service.engine.factory import build_engine
from service.settings import load_settings
from tests.support.model_factory import JINA_TINY_DIMS, cached_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def proxy_dir(model_cache):
    return cached_model("alibi", model_cache, **JINA_TINY_DIMS)


@pytest.fixture(scope="module")
def pairs():
    return fidelity_pairs(512)


@pytest.fixture(scope="module")
def reference(proxy_dir, pairs):
    return reference_scores(proxy_dir, pairs)


def auto_choices(monkeypatch) -> set[tuple[str, str]]:
    """What `auto` picks on a CPU with native bf16 and on one without."""
    choices = set()
    for native_bf16 in (True, False):
        monkeypatch.setattr(selection, "cpu_has_native_bf16", lambda native=native_bf16: native)
        choice = selection.choose_backend(backend="auto", precision="auto", device="cpu")
        choices.add((choice.backend, choice.precision))
    monkeypatch.undo()
    return choices


def test_every_option_auto_can_pick_keeps_fidelity(proxy_dir, pairs, reference, monkeypatch):
    assert len(pairs) >= 500
    for backend, precision in sorted(auto_choices(monkeypatch)):
        loaded = build_engine(load_settings(RERANK_MODEL_PATH=str(proxy_dir), RERANK_BACKEND=backend,
                                            RERANK_PRECISION=precision))
        try:
            scores = []
            for query, group in groupby(pairs, key=lambda pair: pair[0]):
                scores.extend(loaded.engine.rerank_now(query, [doc for _, doc in group]).relevance.tolist())
        finally:
            loaded.engine.stop()
        report = compare(reference, scores, option=f"{backend}/{precision}")
        print(f"\n{report.option}: Spearman {report.spearman:.6f}, max |diff| {report.max_abs_diff:.2e} "
              f"over {len(scores)} pairs")
        assert report.spearman >= MIN_SPEARMAN and report.max_abs_diff <= MAX_ABS_DIFF, report
