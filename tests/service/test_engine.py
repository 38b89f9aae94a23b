"""The engine: token-budget batching, cross-request batching, batch-independent scores, SDPA attention."""

from __future__ import annotations

import asyncio
import random

import numpy as np
import pytest
import torch
from sentence_transformers import CrossEncoder

from service.backends.torch_backend import TorchBackend, enable_sdpa
from service.engine.batching import QUADRATIC_FROM, padding_ratio, plan_batches
from service.engine.factory import build_engine, engine_options
from service.engine.ranking import rank
from service.engine.reranker import RerankEngine
from service.settings import load_settings
from tests.support.model_factory import english_like_query, english_like_text


def test_batches_respect_the_token_budget_and_cover_every_pair():
    rng = random.Random(0)
    lengths = [rng.randint(5, 512) for _ in range(300)]
    batches = plan_batches(lengths, token_budget=4096)
    assert sorted(i for batch in batches for i in batch) == list(range(300))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * longest <= 4096
        assert len(batch) == 1 or len(batch) * longest * longest <= 4096 * QUADRATIC_FROM
    # sorted by length: padding is small compared with batching in arrival order
    arrival = [list(range(i, min(i + 16, 300))) for i in range(0, 300, 16)]
    assert padding_ratio(lengths, batches) < 1.1 < padding_ratio(lengths, arrival)


def test_a_pair_longer_than_the_budget_gets_its_own_batch():
    assert plan_batches([10, 5000, 10], token_budget=1024) == [[1], [0, 2]]


def test_rank_orders_by_score_then_index():
    assert rank([0.2, 0.9, 0.2, 0.5]) == [1, 3, 0, 2]
    assert rank([0.2, 0.9, 0.2, 0.5], top_n=2) == [1, 3]
    assert rank([0.1], top_n=10) == [0]


@pytest.mark.parametrize(("precision", "expected"), [("fp32", 1024), ("bf16", 1024)])
def test_batch_budget_defaults_to_the_one_measured_for_the_precision_that_serves(
        alibi_model_dir, precision, expected):
    loaded = build_engine(load_settings(RERANK_MODEL_PATH=str(alibi_model_dir), RERANK_PRECISION=precision))
    try:
        assert loaded.info["precision"] == precision
        assert loaded.engine.batch_tokens == loaded.info["batch_tokens"] == expected
    finally:
        loaded.engine.stop()
    explicit = build_engine(load_settings(RERANK_MODEL_PATH=str(alibi_model_dir), RERANK_PRECISION=precision,
                                          RERANK_BATCH_TOKENS="3000"))
    try:
        assert explicit.engine.batch_tokens == 3000  # an operator's value wins
    finally:
        explicit.engine.stop()


def test_torch_pads_each_batch_to_its_longest_pair_and_onnx_to_a_multiple_of_16(alibi_model_dir):
    settings = load_settings(RERANK_MODEL_PATH=str(alibi_model_dir), RERANK_PRECISION="fp32")
    assert engine_options(settings, "onnx", "fp32")["pad_multiple"] == 16
    loaded = build_engine(settings)
    try:
        engine = loaded.engine
        assert engine.pad_multiple == loaded.info["pad_multiple"] == 1
        shapes: list[tuple[int, int]] = []
        forward = engine.backend.forward

        def recording(features):
            shapes.append(features["input_ids"].shape)
            return forward(features)

        engine.backend.forward = recording
        pairs = [([engine.encoder.pad_token_id + 5] * n, None) for n in (37, 20, 131)]
        exact = engine.score_pairs(pairs)
        assert shapes == [(3, 131)]  # one batch (within the budget), as long as its longest pair
        shapes.clear()
        onnx_like = RerankEngine(engine.encoder, engine.backend, engine.activation, batch_tokens=engine.batch_tokens,
                                 max_wait_s=0, pad_multiple=16)
        rounded = onnx_like.score_pairs(pairs)
        assert shapes == [(3, 144)]
        np.testing.assert_allclose(exact, rounded, atol=1e-5)  # padding is masked: the scores do not move
    finally:
        loaded.engine.stop()


@pytest.fixture(scope="module")
def fp32_engine(alibi_model_dir):
    loaded = build_engine(load_settings(RERANK_MODEL_PATH=str(alibi_model_dir), RERANK_PRECISION="fp32",
                                        RERANK_BATCH_TOKENS="2048"))
    yield loaded.engine
    loaded.engine.stop()


def _workload(n: int, seed: int = 1) -> tuple[str, list[str]]:
    rng = random.Random(seed)
    return english_like_query(rng), [english_like_text(rng, rng.randint(5, 300)) for _ in range(n)]


def test_scores_do_not_depend_on_batch_neighbours(fp32_engine):
    query, documents = _workload(40)
    together = fp32_engine.rerank_now(query, documents).relevance
    alone = np.array([fp32_engine.rerank_now(query, [doc]).relevance[0] for doc in documents])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    shuffled_order = list(range(40))
    random.Random(2).shuffle(shuffled_order)
    shuffled = fp32_engine.rerank_now(query, [documents[i] for i in shuffled_order]).relevance
    np.testing.assert_allclose(shuffled, together[shuffled_order], atol=1e-5)


def test_engine_equals_cross_encoder_predict_on_mixed_lengths(fp32_engine, alibi_model_dir):
    query, documents = _workload(60, seed=3)
    reference = CrossEncoder(str(alibi_model_dir), trust_remote_code=True, max_length=512,
                             config_kwargs={"max_position_embeddings": 512}).predict([(query, d) for d in documents])
    np.testing.assert_allclose(fp32_engine.rerank_now(query, documents).relevance, reference, atol=1e-5)


def test_concurrent_requests_share_forward_passes(fp32_engine):
    requests = [_workload(6, seed=s) for s in range(12)]
    expected = [fp32_engine.rerank_now(q, d).relevance for q, d in requests]
    before = fp32_engine.scheduler.forward_calls

    async def run_all():
        return await asyncio.gather(*(fp32_engine.rerank(q, d) for q, d in requests))

    results = asyncio.run(run_all())
    calls = fp32_engine.scheduler.forward_calls - before
    assert calls < len(requests), "concurrent requests were not batched together"
    for got, want in zip(results, expected):
        np.testing.assert_allclose(got.relevance, want, atol=1e-5)


def test_sdpa_attention_gives_the_same_scores_as_eager(alibi_model_dir):
    model = CrossEncoder(str(alibi_model_dir), trust_remote_code=True, max_length=512,
                         config_kwargs={"max_position_embeddings": 512})
    self_attention = [m for m in model.model.modules() if "attn_implementation" in vars(m)]
    assert self_attention and all(m.attn_implementation is None for m in self_attention), \
        "expected the eager path after loading, as JinaBERT under transformers 4.57"
    query, documents = _workload(30, seed=4)
    pairs = [(query, d) for d in documents]
    eager = model.predict(pairs)
    switched = enable_sdpa(model.model)
    assert switched == len(self_attention)
    assert all(m.attn_implementation == "torch" for m in self_attention)
    np.testing.assert_allclose(model.predict(pairs), eager, atol=1e-5)


def test_models_without_the_attribute_are_left_alone(bert_model_dir):
    model = CrossEncoder(str(bert_model_dir))
    backend = TorchBackend(model.model)
    assert backend.sdpa_modules == 0


def test_thread_count_divides_cores_between_workers(bert_model_dir, monkeypatch):
    import service.engine.factory as factory
    from service.engine.torch_engine import configure_threads

    monkeypatch.setattr(factory, "cpu_count_available", lambda: 8)
    original = torch.get_num_threads()
    assert configure_threads(load_settings(WEB_CONCURRENCY="2")) == 4
    assert torch.get_num_threads() == 4
    assert configure_threads(load_settings(WEB_CONCURRENCY="16")) == 1
    assert configure_threads(load_settings(RERANK_THREADS="3")) == 3
    torch.set_num_threads(original)
