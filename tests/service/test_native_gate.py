"""The native JinaBERT implementation (service/backends/jinabert.py) against the model's remote code: the build-time
check that writes native.json (service/native_gate.py), and what the torch flavour serves because of it
(service/engine/implementation.py): native only where the check passed and its probe is reproduced at start-up,
the remote code otherwise, with the reason in /info."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from service import native_gate
from service.backends import jinabert
from service.calibration import calibration_set
from service.engine.factory import build_engine
from service.model_store import ModelNotAvailableError
from service.settings import load_settings
from tests.support.blocked_imports import run_service_without
from tests.support.model_factory import cached_model

# 6 heads: ALiBi's slopes for a head count that is not a power of two (the real model has 12) take the
# interleaved branch; a 512-position cap like the service's.
DIMS = {"hidden_size": 48, "num_heads": 6, "intermediate_size": 96, "max_position_embeddings": 512}
QUERY = "how does the pod affect the memory limit"
DOCS = ["The pod restarts when the memory limit is too high.", "Bees forage in spring.",
        "A readiness probe means the node rarely drains on its own, " * 30, "memory"]
SMALL_CALIBRATION = calibration_set(n_queries=4)


def _gated_copy(source, tmp_path_factory, name):
    folder = tmp_path_factory.mktemp(name) / "model"
    shutil.copytree(source, folder)  # native.json is written next to the weights: never into the shared cache
    verdict = native_gate.run_native_gate(folder, calibration=SMALL_CALIBRATION, log=lambda _: None)
    return folder, verdict


@pytest.fixture(scope="module", params=["module", "config"])
def gated(request, model_cache, tmp_path_factory):
    source = cached_model("alibi", model_cache, attention_form=request.param, **DIMS)
    return _gated_copy(source, tmp_path_factory, f"native-{request.param}")


@pytest.fixture
def gated_module_form(model_cache, tmp_path):
    source = cached_model("alibi", model_cache, attention_form="module", **DIMS)
    folder = tmp_path / "model"
    shutil.copytree(source, folder)
    native_gate.run_native_gate(folder, calibration=SMALL_CALIBRATION, log=lambda _: None)
    return folder


def _engine(folder, **env):
    return build_engine(load_settings(**{"RERANK_MODEL_PATH": str(folder), "RERANK_PRECISION": "fp32", **env}))


def test_the_check_passes_both_code_forms_and_records_its_probe(gated):
    folder, verdict = gated
    assert verdict.passed, verdict.reason
    written = json.loads((folder / native_gate.VERDICT_FILE).read_text())
    assert written["passed"] is True and written["implementation"] == jinabert.IMPLEMENTATION
    metrics = written["metrics"]
    assert metrics["pairs"] == len(SMALL_CALIBRATION.query_ids)
    assert metrics["token_ids_identical"] is True
    assert metrics["max_abs_diff"] <= native_gate.TOLERANCE
    assert written["model"]["weights"][0]["file"] == "model.safetensors"
    probe = written["probe"]
    assert len(probe["logits"]) == len(probe["documents"]) == len(probe["input_ids"])


def test_native_serves_the_remote_codes_scores_without_importing_transformers(gated):
    folder, _ = gated
    native, remote = _engine(folder), _engine(folder, RERANK_IMPLEMENTATION="remote-code")
    try:
        assert native.info["implementation"]["name"] == "native"
        assert native.info["implementation"]["verdict"]["passed"] is True
        assert remote.info["implementation"]["name"] == "remote-code"
        assert native.info["attention"] == "attention: sdpa (verified: the model's own attention)"
        assert native.info["linear"] == remote.info["linear"] == "linear: onednn (verified)"  # packed alike
        assert native.info["max_length"] == remote.info["max_length"] == 512
        for documents in (DOCS, DOCS[:1]):
            np.testing.assert_allclose(native.engine.rerank_now(QUERY, documents).relevance,
                                       remote.engine.rerank_now(QUERY, documents).relevance, atol=1e-6)
    finally:
        native.engine.stop(), remote.engine.stop()
    result, answers = run_service_without(("transformers", "sentence_transformers"), folder, {"HF_HUB_OFFLINE": "1"})
    assert answers is not None, result.stderr[-4000:]
    assert answers["banned_loaded"] == []
    assert answers["health"]["status"] == "healthy"
    assert answers["info"]["implementation"]["name"] == "native"
    assert len(answers["v1"]["results"]) == 2 and len(answers["tei"]) == 2


def test_bf16_converts_the_native_model_as_it_converts_the_remote_code(gated):
    folder, _ = gated
    native = _engine(folder, RERANK_PRECISION="bf16")
    remote = _engine(folder, RERANK_PRECISION="bf16", RERANK_IMPLEMENTATION="remote-code")
    try:
        assert native.info["implementation"]["name"] == "native"
        assert native.info["bf16_weights"]["bf16_linear_layers"] == remote.info["bf16_weights"]["bf16_linear_layers"] > 0
        assert native.info["bf16_weights"]["fp32_linear_layers"] == remote.info["bf16_weights"]["fp32_linear_layers"]
        np.testing.assert_allclose(native.engine.rerank_now(QUERY, DOCS).relevance,
                                   remote.engine.rerank_now(QUERY, DOCS).relevance, atol=1e-3)
    finally:
        native.engine.stop(), remote.engine.stop()


def test_a_probe_the_weights_no_longer_reproduce_falls_back_to_the_remote_code(gated_module_form):
    path = gated_module_form / native_gate.VERDICT_FILE
    data = json.loads(path.read_text())
    data["probe"]["logits"][0] += 0.01  # as if the weights had changed after the check (same file size)
    path.write_text(json.dumps(data))
    loaded = _engine(gated_module_form)
    try:
        implementation = loaded.info["implementation"]
        assert implementation["name"] == "remote-code"
        assert "the probe's logits moved by" in implementation["reason"]
    finally:
        loaded.engine.stop()
    with pytest.raises(ModelNotAvailableError, match="RERANK_IMPLEMENTATION=native, but .*probe.*python -m "
                                                     "service.native_gate"):
        _engine(gated_module_form, RERANK_IMPLEMENTATION="native")


def test_other_weights_than_the_checked_ones_are_not_served_natively(gated_module_form):
    data = json.loads((gated_module_form / native_gate.VERDICT_FILE).read_text())
    data["model"]["weights"][0]["bytes"] += 1
    (gated_module_form / native_gate.VERDICT_FILE).write_text(json.dumps(data))
    loaded = _engine(gated_module_form)
    try:
        assert loaded.info["implementation"]["name"] == "remote-code"
        assert "was taken on other weights" in loaded.info["implementation"]["reason"]
    finally:
        loaded.engine.stop()


def test_without_a_verdict_the_remote_code_serves_and_says_why(model_cache):
    folder = cached_model("alibi", model_cache, **DIMS)
    assert not (folder / native_gate.VERDICT_FILE).exists()
    loaded = _engine(folder)
    try:
        assert loaded.info["implementation"]["name"] == "remote-code"
        assert f"no {native_gate.VERDICT_FILE} in {folder}" in loaded.info["implementation"]["reason"]
    finally:
        loaded.engine.stop()
    with pytest.raises(ModelNotAvailableError, match="RERANK_IMPLEMENTATION=native, but no native.json"):
        _engine(folder, RERANK_IMPLEMENTATION="native")


def test_a_model_it_does_not_cover_gets_a_failed_verdict_naming_the_key(bert_model_dir, tmp_path):
    folder = tmp_path / "bert"
    shutil.copytree(bert_model_dir, folder)
    verdict = native_gate.run_native_gate(folder, log=lambda _: None)
    assert not verdict.passed
    assert "position_embedding_type='absolute'" in verdict.reason
    loaded = _engine(folder)
    try:
        assert loaded.info["implementation"]["name"] == "remote-code"
        assert "did not pass" in loaded.info["implementation"]["reason"]
    finally:
        loaded.engine.stop()


def test_weights_that_do_not_match_the_names_are_refused(model_cache, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "model"
    shutil.copytree(cached_model("alibi", model_cache, **DIMS), folder)
    state = load_file(str(folder / "model.safetensors"))
    state.pop("bert.pooler.dense.bias")
    state["bert.extra.weight"] = torch.zeros(2)
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(jinabert.UnsupportedModel, match="does not match JinaBERT's weight names"):
        jinabert.load(folder, max_length=64)


def test_alibi_slopes_follow_press_et_al():
    assert jinabert.alibi_slopes(8) == [2 ** -(i + 1) for i in range(8)]
    twelve = jinabert.alibi_slopes(12)
    assert twelve[:8] == jinabert.alibi_slopes(8)
    assert twelve[8:] == jinabert.alibi_slopes(16)[0::2][:4]
    bias = jinabert.alibi_bias(12, 5)
    assert bias.shape == (1, 12, 5, 5)
    assert float(bias[0, 0, 0, 3]) == pytest.approx(-3 * twelve[0])
    assert float(bias[0, 11, 4, 4]) == 0.0


def test_unsupported_configurations_are_named():
    base = {"architectures": ["JinaBertForSequenceClassification"], "position_embedding_type": "alibi",
            "feed_forward_type": "geglu", "hidden_size": 384, "num_attention_heads": 12, "vocab_size": 10,
            "type_vocab_size": 2, "intermediate_size": 8, "num_hidden_layers": 1}
    assert jinabert.unsupported_reason(base) is None
    assert "feed_forward_type='original'" in jinabert.unsupported_reason({**base, "feed_forward_type": "original"})
    assert "ForSequenceClassification" in jinabert.unsupported_reason({**base, "architectures": ["JinaBertModel"]})
    assert "more than one output label" in jinabert.unsupported_reason({**base, "id2label": {"0": "a", "1": "b"}})
    assert "not a multiple" in jinabert.unsupported_reason({**base, "num_attention_heads": 5})


def test_a_native_model_that_cannot_load_falls_back_with_the_cause(gated_module_form, caplog):
    (gated_module_form / "tokenizer.json").unlink()  # the native path tokenizes with it; transformers has vocab.txt
    with caplog.at_level("WARNING", logger="service.engine"):
        loaded = _engine(gated_module_form)
    try:
        implementation = loaded.info["implementation"]
        assert implementation["name"] == "remote-code"
        assert "tokenizer.json does not exist" in implementation["reason"]
        assert "implementation: remote code:" in caplog.text  # a passed check that fails here is a warning
        assert len(loaded.engine.rerank_now(QUERY, DOCS).relevance) == len(DOCS)
    finally:
        loaded.engine.stop()
