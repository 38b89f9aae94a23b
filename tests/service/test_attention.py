"""The attention path actually taken: SDPA switched on in both code forms of JinaBERT's attention switch,
verified by counting scaled_dot_product_attention calls at warm-up, with unchanged scores; a switch that
does nothing is reported as eager, with the reason, in the log and /info."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from service.engine.factory import build_engine
from service.settings import load_settings
from tests.support.model_factory import alibert_modeling_source, cached_model

SMALL = {"max_position_embeddings": 512}
PAIRS_QUERY = "how does the pod affect the memory limit"
PAIRS_DOCS = ["The pod restarts when the memory limit is too high.", "Bees forage in spring.",
              "A readiness probe means the node rarely drains on its own, " * 8]


@pytest.fixture(scope="module", params=["module", "config"])
def form_model(request, model_cache):
    return request.param, cached_model("alibi", model_cache, attention_form=request.param, **SMALL)


def _eager_reference(model_dir):
    from sentence_transformers import CrossEncoder

    model = CrossEncoder(str(model_dir), trust_remote_code=True, max_length=512, device="cpu")
    return model.predict([(PAIRS_QUERY, d) for d in PAIRS_DOCS], convert_to_numpy=True)


def test_the_factory_writes_the_form_it_was_asked_for(model_cache):
    module_code = alibert_modeling_source("module")
    config_code = alibert_modeling_source("config")
    assert "self.attn_implementation == \"torch\"" in module_code
    assert "self.config.attn_implementation == \"torch\"" in config_code
    assert "self.attn_implementation = config.attn_implementation" not in config_code
    folder = cached_model("alibi", model_cache, attention_form="config", **SMALL)
    assert (folder / "modeling_alibert.py").read_text() == config_code
    with pytest.raises(ValueError):
        alibert_modeling_source("nope")


def test_both_code_forms_run_verified_sdpa_with_the_eager_scores(form_model, caplog):
    form, model_dir = form_model
    with caplog.at_level(logging.INFO, logger="service.backend"):
        loaded = build_engine(load_settings(RERANK_MODEL_PATH=str(model_dir), RERANK_PRECISION="fp32"))
    try:
        info = loaded.info
        assert info["attention"] == "attention: sdpa (verified)"
        assert "attention: sdpa (verified)" in caplog.text
        detail = info["attention_detail"]
        assert detail["code_form"] == form
        assert detail["switched_modules"] == info["sdpa_attention_modules"] == 2  # one per layer
        assert detail["sdpa_calls_at_warmup"] >= 2
        scores = loaded.engine.rerank_now(PAIRS_QUERY, PAIRS_DOCS).relevance
        np.testing.assert_allclose(scores, _eager_reference(model_dir), atol=1e-5)
        model = loaded.engine.backend.model
        # The shared config (and transformers' own meaning of the setting) is left as it was loaded.
        assert model.config.attn_implementation is None
        assert model.config._attn_implementation != "torch"
    finally:
        loaded.engine.stop()


def test_a_switch_the_forward_ignores_is_reported_as_eager(form_model, monkeypatch):
    """The modeling code falls back to eager when SDPA is unavailable: the switch is set, but never taken."""
    form, model_dir = form_model
    settings = load_settings(RERANK_MODEL_PATH=str(model_dir), RERANK_PRECISION="fp32")
    loaded = build_engine(settings)  # imports the remote module
    loaded.engine.stop()
    modules = [m for name, m in sys.modules.items() if name.startswith("transformers_modules")
               and name.endswith("modeling_alibert")]
    assert modules
    for module in modules:
        monkeypatch.setattr(module, "scaled_dot_product_attention", None)
    loaded = build_engine(settings)
    try:
        assert loaded.info["attention"].startswith("attention: eager (")
        assert "never called scaled_dot_product_attention" in loaded.info["attention"]
        assert loaded.info["sdpa_attention_modules"] == 0
        model = loaded.engine.backend.model
        attn = [m for m in model.modules() if type(m).__name__ == "AliBertSelfAttention"]
        values = [m.attn_implementation if form == "module" else m.config.attn_implementation for m in attn]
        assert values == [None] * len(attn)  # undone
    finally:
        loaded.engine.stop()


def test_transformers_own_bert_is_verified_as_its_own_sdpa(bert_model_dir):
    loaded = build_engine(load_settings(RERANK_MODEL_PATH=str(bert_model_dir), RERANK_PRECISION="fp32"))
    try:
        assert loaded.info["attention"] == "attention: sdpa (verified: the model's own attention)"
    finally:
        loaded.engine.stop()


def test_info_shows_the_attention_path(alibi_client):
    info = alibi_client.get("/info").json()
    assert info["attention"] == "attention: sdpa (verified)"
    assert info["attention_detail"]["code_form"] == "module"
