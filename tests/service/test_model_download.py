"""service/model_download.py: the logic the download scripts and the image build run (the scripts themselves
are tested in tests/scripts/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.model_download import (
    ModelDownloadError,
    external_code_repos,
    localize_remote_code,
    model_files,
    source_from_spec,
)

REAL_MODEL_AUTO_MAP = {  # jinaai/jina-reranker-v1-tiny-en's config.json
    "AutoConfig": "jinaai/jina-bert-implementation--configuration_bert.JinaBertConfig",
    "AutoModel": "jinaai/jina-bert-implementation--modeling_bert.JinaBertModel",
    "AutoModelForSequenceClassification": (
        "jinaai/jina-bert-implementation--modeling_bert.JinaBertForSequenceClassification"
    ),
}


def test_code_repositories_come_from_every_auto_map_entry_including_tokenizer_pairs():
    config = {"auto_map": {**REAL_MODEL_AUTO_MAP, "AutoTokenizer": ["org/tok-code--tokenization.Slow", None]}}
    assert external_code_repos(config) == ["jinaai/jina-bert-implementation", "org/tok-code"]
    assert external_code_repos({"auto_map": {"AutoConfig": "configuration_x.XConfig"}}) == []
    assert external_code_repos({}) == []


def _write(path: Path, text: str = "x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_localizing_copies_the_code_and_rewrites_references(tmp_path):
    model, code = tmp_path / "model", tmp_path / "code"
    _write(model / "config.json", json.dumps({"auto_map": REAL_MODEL_AUTO_MAP, "hidden_size": 384}))
    _write(
        model / "tokenizer_config.json",
        json.dumps({"auto_map": {"AutoTokenizer": ["jinaai/jina-bert-implementation--tok.Slow", None]}}),
    )
    _write(code / "configuration_bert.py", "# config")
    _write(code / "modeling_bert.py", "from .configuration_bert import JinaBertConfig")

    copied = localize_remote_code(model, {"jinaai/jina-bert-implementation": code})

    assert sorted(copied) == ["configuration_bert.py", "modeling_bert.py"]
    config = json.loads((model / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "configuration_bert.JinaBertConfig",
        "AutoModel": "modeling_bert.JinaBertModel",
        "AutoModelForSequenceClassification": "modeling_bert.JinaBertForSequenceClassification",
    }
    assert config["hidden_size"] == 384
    assert json.loads((model / "tokenizer_config.json").read_text())["auto_map"] == {
        "AutoTokenizer": ["tok.Slow", None]
    }
    assert (model / "modeling_bert.py").read_text() == "from .configuration_bert import JinaBertConfig"


def test_localizing_never_overwrites_different_code(tmp_path):
    model, code = tmp_path / "model", tmp_path / "code"
    _write(model / "config.json", json.dumps({"auto_map": REAL_MODEL_AUTO_MAP}))
    _write(model / "modeling_bert.py", "# the model's own, different")
    _write(code / "modeling_bert.py", "# the code repository's")
    with pytest.raises(ModelDownloadError, match="already has a different modeling_bert.py"):
        localize_remote_code(model, {"jinaai/jina-bert-implementation": code})
    assert (model / "modeling_bert.py").read_text() == "# the model's own, different"


def test_only_the_files_the_service_needs_are_copied(tmp_path):
    for name in (
        "config.json",
        "model.safetensors",
        "pytorch_model.bin",
        "tokenizer.json",
        "onnx/model.onnx",
        "onnx/model_quantized.onnx",
        "flax_model.msgpack",
        ".gitattributes",
        ".cache/huggingface/x",
        "1_Pooling/config.json",
        "modeling_bert.py",
        "__pycache__/modeling_bert.cpython-311.pyc",
    ):
        _write(tmp_path / name)
    assert model_files(tmp_path) == [
        "1_Pooling/config.json",
        "config.json",
        "model.safetensors",
        "modeling_bert.py",
        "onnx/model.onnx",  # RERANK_BACKEND=onnx
        "onnx/model_quantized.onnx",  # RERANK_PRECISION=int8
        "tokenizer.json",
    ]
    (tmp_path / "model.safetensors").unlink()
    assert "pytorch_model.bin" in model_files(tmp_path)  # the only weights: kept


def test_a_model_is_a_directory_or_an_id(tmp_path):
    assert source_from_spec(str(tmp_path)).path == tmp_path.resolve()
    hub = source_from_spec("jinaai/jina-reranker-v1-tiny-en", "abc123")
    assert (hub.path, hub.model_id, hub.revision) == (None, "jinaai/jina-reranker-v1-tiny-en", "abc123")
    with pytest.raises(ModelDownloadError, match="is not a directory"):
        source_from_spec(str(tmp_path / "missing" / "model"))
