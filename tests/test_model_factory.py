"""The test/benchmark model factory (tests/support/model_factory.py) and the AliBERT remote code it ships.

Every other test trusts these stand-ins to behave like the real model (jinaai/jina-reranker-v1-tiny-en):
loaded through CrossEncoder, offline, as remote code, with an ALiBi buffer sized by max_position_embeddings.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

from tests.support import model_factory as mf

REPO_ROOT = Path(__file__).resolve().parent.parent
ALIBI_TEST_POSITIONS = 1024  # uncapped loads in this file use 1,024 positions: 4 x 1024^2 floats, 16 MB


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # Hub access is impossible here anyway. Note: huggingface_hub and transformers read these variables at
    # import time, so in-process they only matter if nothing imported them yet; the subprocess test below
    # is the one that proves a fresh process loads with HF_HUB_OFFLINE=1.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("factory-models")


@pytest.fixture(scope="module")
def bert_dir(model_root) -> Path:
    return mf.build_bert_reranker(model_root / "bert")


@pytest.fixture(scope="module")
def alibi_dir(model_root) -> Path:
    return mf.build_alibi_reranker(model_root / "alibi", max_position_embeddings=ALIBI_TEST_POSITIONS)


@pytest.fixture(scope="module")
def pairs() -> list[tuple[str, str]]:
    rng = random.Random(42)
    query = mf.english_like_query(rng)
    return [(query, mf.english_like_text(rng, rng.randrange(5, 150))) for _ in range(32)]


@pytest.fixture(scope="module")
def alibi_ce(alibi_dir):
    """One shared load of the local remote-code variant (tests that change it restore it)."""
    return _cross_encoder(alibi_dir, trust_remote_code=True)


def _cross_encoder(path: Path, **kwargs):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(path), device="cpu", **kwargs)


def _logits(ce, pairs) -> np.ndarray:
    import torch

    return ce.predict(pairs, activation_fn=torch.nn.Identity(), batch_size=64)


def _layers(ce):
    return ce.model.bert.encoder.layer


# ----------------------------------------------------------------------------------------------------------
# Text and tokenizer
# ----------------------------------------------------------------------------------------------------------


def test_english_like_text_is_deterministic_and_sized():
    a = mf.english_like_text(random.Random(7), 250)
    b = mf.english_like_text(random.Random(7), 250)
    assert a == b
    assert len(a.split()) == 250
    assert a[0].isupper() and a.endswith((".", "?"))
    assert mf.english_like_text(random.Random(8), 250) != a
    assert mf.english_like_text(random.Random(1), 0) == ""
    assert mf.english_like_query(random.Random(3)).endswith("?")
    assert len(mf.english_like_query(random.Random(3), 12).split()) == 12
    assert mf.corpus(50, seed=5) == mf.corpus(50, seed=5)
    words = " ".join(mf.corpus(500)).lower().split()
    assert len(set(words)) > 400  # varied, English-looking text
    assert words.count("the") > 50


def test_tokenizer_training_is_reproducible_across_processes():
    # The `tokenizers` trainer breaks ties by ids it assigns in hash-map order (random per process); the
    # factory pins them. Two fresh processes must produce byte-identical tokenizers.
    code = (
        "import hashlib; from tests.support.model_factory import _trained_tokenizer_json as t;"
        "print(hashlib.sha256(t(3000).encode()).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", code], cwd=REPO_ROOT, check=True, capture_output=True, text=True
        ).stdout.strip()
        for _ in range(2)
    }
    digests.add(hashlib.sha256(mf._trained_tokenizer_json(3000).encode()).hexdigest())
    assert len(digests) == 1
    assert 2000 <= mf.tokenizer_vocab_size() <= 4000


# ----------------------------------------------------------------------------------------------------------
# BERT variant
# ----------------------------------------------------------------------------------------------------------


def test_bert_reranker_loads_and_scores(bert_dir, pairs):
    from transformers import BertForSequenceClassification, BertTokenizerFast

    ce = _cross_encoder(bert_dir)
    assert isinstance(ce.model, BertForSequenceClassification)
    assert isinstance(ce.tokenizer, BertTokenizerFast)
    assert ce.model.config.num_labels == 1
    assert 2000 <= len(ce.tokenizer) <= 4000
    assert (bert_dir / "vocab.txt").is_file() and (bert_dir / "tokenizer.json").is_file()

    scores = ce.predict(pairs)
    assert scores.shape == (len(pairs),)
    assert np.all((scores >= 0) & (scores <= 1))
    logits = _logits(ce, pairs)
    np.testing.assert_allclose(scores, 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-6)  # sigmoid
    assert logits.std() > 0.1, "documents must get clearly different scores"


# ----------------------------------------------------------------------------------------------------------
# AliBERT variant (remote code)
# ----------------------------------------------------------------------------------------------------------


def test_alibi_folder_layout_and_config(alibi_dir):
    config = json.loads((alibi_dir / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_alibert.AliBertConfig",
        "AutoModel": "modeling_alibert.AliBertModel",
        "AutoModelForSequenceClassification": "modeling_alibert.AliBertForSequenceClassification",
    }
    assert config["position_embedding_type"] == "alibi"
    assert config["model_type"] == "alibert"
    assert config["architectures"] == ["AliBertForSequenceClassification"]
    assert config["max_position_embeddings"] == ALIBI_TEST_POSITIONS
    assert len(config["id2label"]) == 1
    for name in mf.ALIBERT_FILES:
        assert (alibi_dir / name).read_bytes() == (mf.ALIBERT_SOURCE_DIR / name).read_bytes()
    source = (mf.ALIBERT_SOURCE_DIR / "modeling_alibert.py").read_text()
    # The transformers-4-only imports JinaBERT has (the reason for the pins).
    assert "from transformers.onnx import OnnxConfig" in source
    assert "find_pruneable_heads_and_indices" in source


def test_alibi_reranker_loads_as_remote_code(alibi_ce, alibi_dir, pairs):
    import torch

    ce = alibi_ce
    model = ce.model
    assert type(model).__name__ == "AliBertForSequenceClassification"
    assert type(model).__module__.startswith("transformers_modules."), (
        "must come from the folder's remote code"
    )
    # Loaded through AutoConfig, JinaBERT-style configs lose attn_implementation: the eager path.
    assert model.config.attn_implementation is None
    assert all(layer.attention.self.attn_implementation is None for layer in _layers(ce))

    encoder = model.bert.encoder
    assert encoder.alibi.shape == (1, 4, ALIBI_TEST_POSITIONS, ALIBI_TEST_POSITIONS)
    assert encoder.alibi.dtype == torch.float32
    # Non-persistent buffer: rebuilt by the constructor on load, not uninitialised memory.
    assert torch.equal(encoder.alibi, encoder.rebuild_alibi_tensor(ALIBI_TEST_POSITIONS))
    assert encoder.alibi[0, 0, 0, 0] == 0 and encoder.alibi[0, 0, 0, 1] == -0.25  # slope 2^-2 for head 0 of 4

    scores = ce.predict(pairs)
    assert np.all((scores >= 0) & (scores <= 1))
    logits = _logits(ce, pairs)
    assert logits.std() > 0.1, "documents must get clearly different scores"
    # Deterministic across loads.
    assert np.array_equal(_logits(_cross_encoder(alibi_dir, trust_remote_code=True), pairs), logits)


def test_alibi_buffer_cap_with_config_kwargs(model_root, alibi_ce, pairs):
    default_dir = mf.build_alibi_reranker(model_root / "alibi-8192")
    assert json.loads((default_dir / "config.json").read_text())["max_position_embeddings"] == 8192
    capped = _cross_encoder(
        default_dir, trust_remote_code=True, config_kwargs={"max_position_embeddings": 512}
    )
    assert capped.model.bert.encoder.alibi.shape == (1, 4, 512, 512)
    assert capped.model.config.max_position_embeddings == 512

    # Same seed, same weights: capping changes nothing for inputs within the cap.
    assert np.array_equal(_logits(capped, pairs), _logits(alibi_ce, pairs))


def test_eager_and_sdpa_paths_agree(alibi_ce, pairs, monkeypatch):
    ce = alibi_ce
    modeling = sys.modules[type(ce.model).__module__]
    calls = []
    real_sdpa = modeling.scaled_dot_product_attention

    def counting_sdpa(*args, **kwargs):
        calls.append(1)
        return real_sdpa(*args, **kwargs)

    monkeypatch.setattr(modeling, "scaled_dot_product_attention", counting_sdpa)

    eager = _logits(ce, pairs)
    assert not calls
    try:
        for layer in ce.model.bert.encoder.layer:
            layer.attention.self.attn_implementation = "torch"
        sdpa = _logits(ce, pairs)
    finally:
        for layer in ce.model.bert.encoder.layer:
            layer.attention.self.attn_implementation = None
    assert calls, "the 'torch' path must use scaled_dot_product_attention"
    np.testing.assert_allclose(sdpa, eager, atol=1e-5, rtol=0)


def test_saved_model_matches_in_memory_model_bit_for_bit(alibi_ce, pairs):
    import torch

    ce = alibi_ce
    reference = mf.make_alibi_model(max_position_embeddings=ALIBI_TEST_POSITIONS)
    for layer in reference.bert.encoder.layer:
        layer.attention.self.attn_implementation = None  # the path a loaded model takes
    features = ce.tokenizer(
        [q for q, _ in pairs], [d for _, d in pairs], padding=True, truncation=True, return_tensors="pt"
    )
    with torch.inference_mode():
        loaded = ce.model(**features).logits
        in_memory = reference(**features).logits
    assert torch.equal(loaded, in_memory)


def test_alibi_grows_for_longer_inputs_like_jinabert():
    import torch

    small = mf.make_alibi_model(max_position_embeddings=16)
    large = mf.make_alibi_model(max_position_embeddings=64)
    assert small.bert.encoder.alibi.shape == (1, 4, 16, 16)
    ids = torch.randint(5, 2000, (2, 40), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[1, 30:] = 0
    with torch.inference_mode(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        grown = small(input_ids=ids, attention_mask=mask).logits
    assert any("Increasing alibi size from 16 to 40" in str(w.message) for w in caught)
    assert small.bert.encoder.alibi.shape == (1, 4, 40, 40)
    with torch.inference_mode():
        assert torch.allclose(grown, large(input_ids=ids, attention_mask=mask).logits, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Determinism, init, cache
# ----------------------------------------------------------------------------------------------------------


def _files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.is_file()}


@pytest.mark.parametrize("kind", ["bert", "alibi"])
def test_same_seed_same_model(kind, tmp_path):
    build = mf._BUILDERS[kind]
    first, second = build(tmp_path / "a", seed=3), build(tmp_path / "b", seed=3)
    assert _files(first) == _files(second)  # weights, config and tokenizer, byte for byte
    other = build(tmp_path / "c", seed=4)
    assert _files(other)["model.safetensors"] != _files(first)["model.safetensors"]
    assert _files(other)["tokenizer.json"] == _files(first)["tokenizer.json"]


def test_saved_weights_follow_init_std(tmp_path):
    from safetensors.torch import load_file

    default = load_file(mf.build_alibi_reranker(tmp_path / "default") / "model.safetensors")
    weight = default["bert.encoder.layer.0.mlp.gated_layers.weight"]
    assert weight.shape == (2 * 64, 32)  # GEGLU: one projection to 2 x intermediate
    assert weight.std().item() == pytest.approx(mf.resolve_init_std(None, 32), rel=0.1)
    assert mf.resolve_init_std(None, 384) == pytest.approx(0.1)

    explicit = load_file(mf.build_bert_reranker(tmp_path / "bert", init_std=0.05) / "model.safetensors")
    big = explicit["bert.embeddings.word_embeddings.weight"][1:]  # row 0 is the zeroed padding row
    assert big.std().item() == pytest.approx(0.05, rel=0.05)


def test_jina_tiny_dims_proxy_shape():
    model = mf.make_alibi_model(**{**mf.JINA_TINY_DIMS, "max_position_embeddings": 64})
    assert model.bert.embeddings.word_embeddings.weight.shape == (61056, 384)
    assert len(model.bert.encoder.layer) == 4
    assert model.bert.encoder.layer[0].attention.self.num_attention_heads == 12
    assert model.bert.encoder.layer[0].mlp.gated_layers.weight.shape == (2 * 1536, 384)
    assert model.config.initializer_range == pytest.approx(0.1)
    assert not hasattr(model.bert.embeddings, "position_embeddings")


def test_cached_model_builds_once(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    first = mf.cached_model("alibi", root, seed=5, max_position_embeddings=256)
    assert first.parent == root and first.name.startswith("alibi-")
    assert (first / "config.json").is_file() and (first / "modeling_alibert.py").is_file()
    assert oct(first.stat().st_mode & 0o777) == oct(0o755)

    def no_rebuild(*args, **kwargs):
        raise AssertionError("cached model was rebuilt")

    with monkeypatch.context() as patch:
        patch.setitem(mf._BUILDERS, "alibi", no_rebuild)
        assert mf.cached_model("alibi", root, seed=5, max_position_embeddings=256) == first

    assert mf.cached_model("alibi", root, seed=6, max_position_embeddings=256) != first
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []  # no temp dirs left
    with pytest.raises(ValueError):
        mf.cached_model("gpt", root)


_EXTERNAL_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from sentence_transformers import CrossEncoder
    pairs = json.loads(sys.argv[3])
    out = {}
    for key, path in (("external", sys.argv[1]), ("local", sys.argv[2])):
        ce = CrossEncoder(path, trust_remote_code=True, device="cpu")
        out[key] = {
            "module": type(ce.model).__module__,
            "alibi": list(ce.model.bert.encoder.alibi.shape),
            "attn": ce.model.config.attn_implementation,
            "scores": ce.predict(pairs).tolist(),
        }
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def external_load(model_root, alibi_dir, pairs, tmp_path_factory):
    """Load the external-auto_map and the local variant in a fresh offline process, started in the background.

    A fresh process because HF_HOME and HF_HUB_OFFLINE are read when huggingface_hub / transformers import,
    as when a server starts. In the background because importing sentence-transformers takes seconds; the
    test at the end of this file collects the result.
    """
    hf_home = tmp_path_factory.mktemp("hf-home")
    snapshot = mf.build_external_code_repo(hf_home)
    external_dir = mf.build_alibi_reranker(
        model_root / "alibi-external", auto_map="external", max_position_embeddings=ALIBI_TEST_POSITIONS
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    some_pairs = pairs[:8]
    proc = subprocess.Popen(
        [sys.executable, "-c", _EXTERNAL_SCRIPT, str(external_dir), str(alibi_dir), json.dumps(some_pairs)],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield {"proc": proc, "hf_home": hf_home, "snapshot": snapshot, "external_dir": external_dir}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.fixture(scope="module", autouse=True)
def _start_external_load_early(request):
    # Only when the external test is selected (not with `-k` picking other tests).
    if any(
        item.name == "test_external_auto_map_loads_offline_from_fake_hub_cache"
        for item in request.session.items
    ):
        request.getfixturevalue("external_load")


def test_external_auto_map_loads_offline_from_fake_hub_cache(external_load, alibi_dir):
    snapshot, hf_home, external_dir = (
        external_load["snapshot"],
        external_load["hf_home"],
        external_load["external_dir"],
    )
    commit = snapshot.name
    assert len(commit) == 40 and (snapshot.parent.parent / "refs" / "main").read_text() == commit
    assert snapshot.parent.parent.name == "models--testorg--alibert-implementation"
    config = json.loads((external_dir / "config.json").read_text())
    assert config["auto_map"]["AutoModelForSequenceClassification"] == (
        "testorg/alibert-implementation--modeling_alibert.AliBertForSequenceClassification"
    )
    assert not any((external_dir / name).exists() for name in mf.ALIBERT_FILES)

    stdout, stderr = external_load["proc"].communicate(timeout=300)
    assert external_load["proc"].returncode == 0, stderr[-3000:]
    out = json.loads(stdout.strip().splitlines()[-1])

    assert out["external"]["module"] == (
        f"transformers_modules.testorg.alibert_hyphen_implementation.{commit}.modeling_alibert"
    )
    assert out["local"]["module"] == f"transformers_modules.{alibi_dir.name}.modeling_alibert"
    for variant in out.values():
        assert variant["alibi"] == [1, 4, ALIBI_TEST_POSITIONS, ALIBI_TEST_POSITIONS]
        assert variant["attn"] is None
    # Same seed and dimensions: the two variants are the same model.
    np.testing.assert_allclose(out["external"]["scores"], out["local"]["scores"], rtol=0, atol=1e-7)
    # Remote code is copied under $HF_HOME/modules (HF_MODULES_CACHE's default).
    modules = hf_home / "modules" / "transformers_modules"
    assert (modules / "testorg" / "alibert_hyphen_implementation" / commit / "modeling_alibert.py").is_file()
    assert (modules / alibi_dir.name / "modeling_alibert.py").is_file()
