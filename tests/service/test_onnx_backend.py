"""ONNX Runtime backend: export the test models, serve them with RERANK_BACKEND=onnx: torch fp32's scores.

The exported graphs live in session-scoped copies of the cached test models (`<copy>/onnx/model.onnx`, the
layout jinaai/jina-reranker-v1-tiny-en ships), so the shared model cache is never written to. int8 fidelity
is measured on the JinaBERT-shaped proxy outside the tests (benchmarks/fidelity.py --onnx-file); here int8
only has to load and rank sensibly.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the exporter needs the onnx package (requirements/dev.txt)")

from service.backends.onnx_backend import OnnxBackend  # noqa: E402
from service.backends.onnx_export import export_onnx, quantize_int8  # noqa: E402
from service.backends.selection import choose_backend  # noqa: E402
from service.engine.factory import build_engine  # noqa: E402
from service.model_store import ModelNotAvailableError  # noqa: E402
from service.settings import SettingsError, load_settings  # noqa: E402
from tests.support.model_factory import english_like_query, english_like_text  # noqa: E402


def _with_onnx(source: Path, dest: Path, *, quantize: bool) -> Path:
    shutil.copytree(source, dest)
    onnx_dir = dest / "onnx"
    export_onnx(dest, onnx_dir / "model.onnx")
    if quantize:
        quantize_int8(onnx_dir / "model.onnx", onnx_dir / "model_quantized.onnx")
    return dest


@pytest.fixture(scope="session")
def bert_onnx_dir(bert_model_dir, tmp_path_factory) -> Path:
    return _with_onnx(bert_model_dir, tmp_path_factory.mktemp("onnx") / "bert", quantize=False)


@pytest.fixture(scope="session")
def alibi_onnx_dir(alibi_model_dir, tmp_path_factory) -> Path:
    return _with_onnx(alibi_model_dir, tmp_path_factory.mktemp("onnx") / "alibi", quantize=True)


def _workload(n: int, seed: int) -> tuple[str, list[str]]:
    rng = random.Random(seed)
    # 1 to 700 words: short pairs, long ones, and some truncated at 512 tokens, in the same batches
    words = [rng.choice([1, 5, 40, 120, 300, 700]) for _ in range(n)]
    return english_like_query(rng), [english_like_text(rng, count) for count in words]


def _engine(model_dir: Path, **env):
    return build_engine(load_settings(RERANK_MODEL_PATH=str(model_dir), RERANK_BATCH_TOKENS="4096", **env))


@pytest.mark.parametrize("model", ["bert", "alibi"])
def test_onnx_scores_equal_torch_fp32(model, request):
    model_dir = request.getfixturevalue(f"{model}_onnx_dir")
    query, documents = _workload(48, seed=11)
    torch_engine = _engine(model_dir, RERANK_BACKEND="torch", RERANK_PRECISION="fp32")
    onnx_engine = _engine(model_dir, RERANK_BACKEND="onnx", RERANK_PRECISION="fp32")
    try:
        assert onnx_engine.info["backend"] == "onnx" and onnx_engine.info["precision"] == "fp32"
        assert onnx_engine.engine.backend.name == "onnx"
        assert onnx_engine.engine.backend.model_file == model_dir / "onnx" / "model.onnx"
        expected = torch_engine.engine.rerank_now(query, documents)
        got = onnx_engine.engine.rerank_now(query, documents)
        np.testing.assert_allclose(got.relevance, expected.relevance, atol=1e-4, rtol=0)
        assert got.tokens == expected.tokens
        # batch independence holds for the ONNX graph too (dynamic batch and sequence axes)
        alone = [onnx_engine.engine.rerank_now(query, [doc]).relevance[0] for doc in documents[:6]]
        np.testing.assert_allclose(alone, got.relevance[:6], atol=1e-5, rtol=0)
    finally:
        torch_engine.engine.stop()
        onnx_engine.engine.stop()


def test_session_threads_follow_torch_and_inputs_follow_the_graph(alibi_onnx_dir):
    import torch

    loaded = _engine(alibi_onnx_dir, RERANK_BACKEND="onnx", RERANK_THREADS="1")
    try:
        backend = loaded.engine.backend
        assert torch.get_num_threads() == 1 == backend.threads
        options = backend.session.get_session_options()
        assert options.inter_op_num_threads == 1
        assert backend.input_names == ["input_ids", "attention_mask", "token_type_ids"]
        # only the inputs the graph declares are fed, as int64
        features = {"input_ids": np.array([[2, 50, 3]]), "attention_mask": np.ones((1, 3), dtype=np.int64),
                    "token_type_ids": np.zeros((1, 3), dtype=np.int64), "unused": np.zeros((1, 3))}
        logits = backend.forward(features)
        assert logits.dtype == np.float32 and logits.shape == (1, 1)
        assert loaded.info["threads"] == 1
    finally:
        loaded.engine.stop()


def test_int8_loads_and_scores(alibi_onnx_dir):
    query, documents = _workload(24, seed=5)
    loaded = _engine(alibi_onnx_dir, RERANK_BACKEND="onnx", RERANK_PRECISION="int8")
    reference = _engine(alibi_onnx_dir, RERANK_BACKEND="torch", RERANK_PRECISION="fp32")
    try:
        assert (loaded.info["backend"], loaded.info["precision"]) == ("onnx", "int8")
        assert loaded.engine.backend.model_file.name == "model_quantized.onnx"
        scores = loaded.engine.rerank_now(query, documents).relevance
        expected = reference.engine.rerank_now(query, documents).relevance
        assert scores.shape == (24,) and np.all((scores >= 0) & (scores <= 1))
        assert np.corrcoef(scores, expected)[0, 1] > 0.9  # sane, not the fidelity bar
        # dynamic int8 scales activations per batch: pairs run alone, so neighbours do not change a score
        alone = [loaded.engine.rerank_now(query, [doc]).relevance[0] for doc in documents[:6]]
        np.testing.assert_allclose(alone, scores[:6], atol=1e-6, rtol=0)
    finally:
        loaded.engine.stop()
        reference.engine.stop()


def test_auto_backend_with_int8_means_onnx_and_torch_refuses_it():
    assert choose_backend(backend="auto", precision="int8", device="cpu").backend == "onnx"
    assert choose_backend(backend="onnx", precision="int8", device="cpu").precision == "int8"
    with pytest.raises(ValueError, match="RERANK_PRECISION=int8 needs RERANK_BACKEND=onnx"):
        choose_backend(backend="torch", precision="int8", device="cpu")
    # auto stays torch fp32/bf16 logic: never picks ONNX or int8 by itself
    assert choose_backend(backend="auto", precision="auto", device="cpu").backend == "torch"
    with pytest.raises(SettingsError, match="RERANK_PRECISION"):
        load_settings(RERANK_PRECISION="int4")


def test_missing_onnx_file_names_the_setting_and_the_fix(bert_model_dir):
    with pytest.raises(ModelNotAvailableError) as excinfo:
        _engine(bert_model_dir, RERANK_BACKEND="onnx")
    message = str(excinfo.value)
    assert "RERANK_BACKEND=onnx" in message
    assert str(bert_model_dir / "onnx" / "model.onnx") in message
    assert "scripts/export_onnx.py --model-path" in message


def test_missing_int8_file_names_quantize(bert_onnx_dir):
    with pytest.raises(ModelNotAvailableError,
                       match=r"RERANK_PRECISION=int8.*model_quantized\.onnx.*--quantize"):
        _engine(bert_onnx_dir, RERANK_BACKEND="onnx", RERANK_PRECISION="int8")


def test_graph_exported_for_shorter_pairs_is_refused(alibi_onnx_dir):
    with pytest.raises(ModelNotAvailableError,
                       match="exported for at most 512 tokens.*RERANK_MAX_LENGTH=1024"):
        _engine(alibi_onnx_dir, RERANK_BACKEND="onnx", RERANK_MAX_LENGTH="1024")


def test_hub_id_looks_in_the_cache_snapshot_of_the_loaded_revision(tmp_path, monkeypatch):
    """For a Hub id the file is looked up in the model's cache snapshot, at the revision that was loaded."""
    from types import SimpleNamespace

    from huggingface_hub import constants

    commit = "a" * 40
    snapshot = tmp_path / "hub" / "models--org--reranker" / "snapshots" / commit
    (snapshot / "onnx").mkdir(parents=True)
    (tmp_path / "hub" / "models--org--reranker" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--reranker" / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    fake = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(_name_or_path="org/reranker",
                                                                        _commit_hash=commit)), max_length=512)
    with pytest.raises(ModelNotAvailableError,
                       match=r"hf download org/reranker onnx/model\.onnx --revision a{40}"):
        OnnxBackend.from_loaded_model(fake)
    from service.backends.onnx_backend import locate_onnx_file

    (snapshot / "onnx" / "model.onnx").write_bytes(b"")
    assert locate_onnx_file(fake, "model.onnx") == (snapshot / "onnx" / "model.onnx", "org/reranker")
