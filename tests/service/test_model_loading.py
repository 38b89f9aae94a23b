"""Loading: the runbook's log lines, production's offline-only rule, the ALiBi buffer cap, remote code."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from service.model_store import ModelNotAvailableError, ModelSource, config_overrides, effective_max_length, \
    load_reranker, resolve_device
from service.settings import PROJECT_ROOT
from tests.service.conftest import free_port
from tests.support.blocked_imports import run_service_without
from tests.support.hub_cache import install_in_hub_cache
from tests.support.model_factory import build_alibi_reranker, build_external_code_repo

REAL_ID = "jinaai/jina-reranker-v1-tiny-en"


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HF_", "RERANK_", "TRANSFORMERS_")) and k not in {"ENVIRONMENT", "PORT"}}
    env["RERANK_API_KEYS"] = "model-loading-test-key"  # production refuses to start without a credential
    env.update(extra)
    return env


def test_local_path_log_lines(caplog, bert_model_dir):
    caplog.set_level(logging.INFO, logger="service")
    load_reranker(ModelSource(REAL_ID, path=bert_model_dir), local_files_only=True)
    messages = [r.getMessage() for r in caplog.records if r.name.startswith("service")]
    expected = [f"Using local model path: {bert_model_dir}",
                f"Loading reranker model from local directory: {bert_model_dir}",
                f"Local reranker model loaded successfully from: {bert_model_dir}"]
    assert [m for m in messages if m in expected] == expected


def run_service(env: dict[str, str], timeout: float = 90.0) -> tuple[int | None, str, dict | None]:
    """Start `python -m service`; return (exit code or None if it served, stderr, health body)."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "service"], cwd=PROJECT_ROOT, env={**env, "PORT": str(port)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    health = None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and process.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/health/", timeout=2)
                if response.status_code == 200:
                    health = response.json()
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.2)
    finally:
        code = process.poll()
        if code is None:
            process.terminate()
        _, stderr = process.communicate(timeout=30)
    return code, stderr, health


def test_production_loads_a_cached_hub_model_offline_with_the_runbook_log_lines(tmp_path, bert_model_dir):
    install_in_hub_cache(bert_model_dir, tmp_path / "hf", REAL_ID)
    code, stderr, health = run_service(clean_env(HF_HOME=str(tmp_path / "hf"), ENVIRONMENT="production"))
    assert code is None, stderr
    assert health == {"status": "healthy", "version": "2.0.0"}
    loading = stderr.index(f"Loading {REAL_ID} model...")
    assert stderr.index(f"{REAL_ID} model loaded successfully") > loading


def test_production_without_the_model_exits_with_the_fix(tmp_path):
    code, stderr, _ = run_service(clean_env(HF_HOME=str(tmp_path / "empty"), ENVIRONMENT="production"))
    assert code == 1
    assert f"Model {REAL_ID} is not on disk" in stderr
    assert f"python scripts/download_models.py --model {REAL_ID}" in stderr
    assert "Traceback" not in stderr


def test_production_under_uvicorn_also_refuses_to_start(tmp_path):
    env = clean_env(HF_HOME=str(tmp_path / "empty"), ENVIRONMENT="production")
    result = subprocess.run([sys.executable, "-m", "uvicorn", "service.main:app", "--port", str(free_port())],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert f"python scripts/download_models.py --model {REAL_ID}" in result.stderr


def test_missing_local_directory_names_the_fix(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="download_reranker_local.py --output-dir"):
        load_reranker(ModelSource(REAL_ID, path=tmp_path / "nope"), local_files_only=True)


def test_cuda_without_a_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ModelNotAvailableError, match="RERANK_DEVICE=cuda"):
        resolve_device("cuda")
    assert resolve_device("auto") == "cpu"


def test_alibi_buffer_is_capped_to_max_length(alibi_model_dir):
    model, max_length = load_reranker(ModelSource(REAL_ID, path=alibi_model_dir), max_length=512,
                                      local_files_only=True)
    heads = model.model.config.num_attention_heads
    buffers = [b for name, b in model.model.named_buffers() if name.endswith("alibi")]
    assert buffers and all(tuple(b.shape) == (1, heads, 512, 512) for b in buffers)
    assert model.model.config.max_position_embeddings == 512 == max_length


def test_learned_position_embeddings_are_never_capped(bert_model_dir):
    config = json.loads((bert_model_dir / "config.json").read_text())
    assert config_overrides(config, 128) == {}
    assert effective_max_length(config, 1024) == config["max_position_embeddings"]
    model, max_length = load_reranker(ModelSource(REAL_ID, path=bert_model_dir), max_length=1024,
                                      local_files_only=True)
    assert max_length == 512 and model.model.config.max_position_embeddings == 512


PEAK_RSS = """
import json, sys
from pathlib import Path
from service.model_store import ModelSource, load_reranker
model, _ = load_reranker(ModelSource("x", path=Path(sys.argv[1])), max_length=int(sys.argv[2]),
                         local_files_only=True)
# VmHWM belongs to this process image; getrusage's ru_maxrss would carry the parent's (large) high-water
# mark over when subprocess starts us with vfork + exec.
status = Path("/proc/self/status").read_text()
print(json.dumps({"peak_mb": int(status.split("VmHWM:")[1].split()[0]) / 1024}))
"""


def test_the_cap_keeps_the_alibi_buffer_out_of_memory(alibi_model_dir):
    """Uncapped, 4 heads x 8,192^2 float32 = 1 GiB are allocated at load (12 heads: 3.2 GB, the real model)."""
    def peak(max_length: int) -> float:
        result = subprocess.run([sys.executable, "-c", PEAK_RSS, str(alibi_model_dir), str(max_length)],
                                cwd=PROJECT_ROOT, env=clean_env(HF_HUB_OFFLINE="1"), capture_output=True,
                                text=True, timeout=300, check=True)
        return json.loads(result.stdout.strip().splitlines()[-1])["peak_mb"]

    capped, uncapped = peak(512), peak(8192)
    print(f"\npeak RSS loading the ALiBi test model: capped at 512: {capped:.0f} MB, at 8,192: {uncapped:.0f} MB")
    assert uncapped - capped > 900


def test_remote_code_in_a_second_repository_loads_offline(tmp_path):
    model_dir = build_alibi_reranker(tmp_path / "model", auto_map="external")
    hf_home = tmp_path / "hf"
    build_external_code_repo(hf_home)
    assert not list(model_dir.glob("*.py"))
    code = ("import sys; from pathlib import Path; from service.model_store import ModelSource, load_reranker;"
            "m, _ = load_reranker(ModelSource('x', path=Path(sys.argv[1])), local_files_only=True);"
            "print(float(m.score([('a query', 'a document')])[0]))")
    result = subprocess.run([sys.executable, "-c", code, str(model_dir)], cwd=PROJECT_ROOT,
                            env=clean_env(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1"), capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert 0.0 <= float(result.stdout.strip().splitlines()[-1]) <= 1.0


def test_an_unwritable_modules_cache_is_not_reported_as_a_missing_model(alibi_model_dir, tmp_path):
    modules = tmp_path / "modules"
    modules.mkdir()
    modules.chmod(0o500)
    code = ("import sys; from pathlib import Path; from service.model_store import ModelSource, load_reranker;"
            "load_reranker(ModelSource('x', path=Path(sys.argv[1])), local_files_only=True)")
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                             code, str(alibi_model_dir)] if os.geteuid() == 0 else
                            [sys.executable, "-c", code, str(alibi_model_dir)],
                            cwd=PROJECT_ROOT, env=clean_env(HF_MODULES_CACHE=str(modules), HF_HUB_OFFLINE="1"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "modules cache" in result.stderr and "HF_MODULES_CACHE" in result.stderr
    assert "is not on disk" not in result.stderr


# ---- load_reranker is what sentence-transformers' CrossEncoder loads ------------------------------------------

PAIRS = [("what is a reranker", "A reranker scores documents for a query. " * 30),  # truncated at 64 tokens
         ("capital of france", "Paris is the capital of France."),
         ("x " * 80, "a long query, truncated with its document (longest_first)"),
         ("q", "")]


def _variant(kind: str, bert_model_dir, alibi_model_dir, tmp_path):
    import torch

    """A model folder, the CrossEncoder keyword arguments the service's loader stands for, and the activation
    CrossEncoder is expected to pick."""
    if kind == "alibi-module":
        return alibi_model_dir, {"config_kwargs": {"max_position_embeddings": 64}}, "Sigmoid"
    if kind == "saved-by-sentence-transformers":  # modules.json + config_sentence_transformers.json (5.x)
        from sentence_transformers import CrossEncoder

        CrossEncoder(str(bert_model_dir), activation_fn=torch.nn.Identity()).save_pretrained(str(tmp_path / kind))
        return tmp_path / kind, {}, "Identity"
    if kind == "alibi-config":
        folder = build_alibi_reranker(tmp_path / kind, attention_form="config")
        return folder, {"config_kwargs": {"max_position_embeddings": 64}}, "Sigmoid"
    folder = tmp_path / kind
    shutil.copytree(bert_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    if kind == "named-in-config":  # sentence-transformers 4+ writes this into config.json
        config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.activation.Tanh"}
        expected = "Tanh"
    elif kind == "st-config-without-modules":  # CrossEncoder reads it only next to a modules.json: ignored
        (folder / "config_sentence_transformers.json").write_text(
            json.dumps({"activation_fn": "torch.nn.modules.linear.Identity"}))
        expected = "Sigmoid"
    elif kind == "legacy-name":  # before sentence-transformers 4.0
        config["sbert_ce_default_activation_function"] = "torch.nn.modules.linear.Identity"
        expected = "Identity"
    elif kind == "bare-encoder":  # not a classifier: CrossEncoder adds one logit (a fresh head)
        config["architectures"] = ["BertModel"]
        config.pop("id2label", None), config.pop("label2id", None)
        expected = "Sigmoid"
    else:
        expected = "Sigmoid"
    (folder / "config.json").write_text(json.dumps(config))
    return folder, {}, expected


@pytest.mark.parametrize("kind", ["alibi-module", "alibi-config", "bert", "named-in-config", "legacy-name",
                                  "saved-by-sentence-transformers", "st-config-without-modules", "bare-encoder"])
def test_load_reranker_equals_cross_encoder(kind, bert_model_dir, alibi_model_dir, tmp_path):
    """Same tokenizer and cap, same labels, same activation, same scores as `CrossEncoder(...).predict`."""
    import torch
    from sentence_transformers import CrossEncoder

    folder, kwargs, activation = _variant(kind, bert_model_dir, alibi_model_dir, tmp_path)
    torch.manual_seed(0)  # a bare encoder's new head is drawn at load: the same draw for both
    loaded, max_length = load_reranker(ModelSource(REAL_ID, path=folder), max_length=64, local_files_only=True)
    torch.manual_seed(0)
    reference = CrossEncoder(str(folder), trust_remote_code=True, max_length=64, device="cpu", **kwargs)

    assert max_length == 64 == loaded.tokenizer.model_max_length == reference.tokenizer.model_max_length
    assert loaded.num_labels == reference.num_labels == 1
    assert type(loaded.activation_fn).__name__ == type(reference.activation_fn).__name__ == activation
    assert loaded.activation_name.endswith(activation)
    for query, document in PAIRS:
        ours = loaded.tokenizer(query, document, truncation="longest_first", max_length=64)
        theirs = reference.tokenizer(query, document, truncation="longest_first", max_length=64)
        assert ours["input_ids"] == theirs["input_ids"] and len(ours["input_ids"]) <= 64
    np.testing.assert_allclose(loaded.score(PAIRS), reference.predict(PAIRS), rtol=0, atol=1e-6)


def test_an_activation_that_cannot_be_imported_is_a_clear_load_error(bert_model_dir, tmp_path):
    folder = shutil.copytree(bert_model_dir, tmp_path / "model")
    config = json.loads((folder / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": "nowhere.Softplus"}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotAvailableError, match="activation 'nowhere.Softplus' cannot be imported"):
        load_reranker(ModelSource(REAL_ID, path=folder), local_files_only=True)


def test_a_sentence_transformers_pipeline_that_is_not_a_cross_encoder_is_refused(bert_model_dir, tmp_path):
    folder = shutil.copytree(bert_model_dir, tmp_path / "model")
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.modules.Pooling"}]))
    with pytest.raises(ModelNotAvailableError, match="not a single Transformer module at its root"):
        load_reranker(ModelSource(REAL_ID, path=folder), local_files_only=True)


def test_the_torch_service_never_imports_sentence_transformers(alibi_model_dir):
    """The whole torch-flavour service, every API, in a fresh interpreter where importing sentence-transformers
    raises; the runtime image does not install it (tests/image/test_image.py)."""
    result, answers = run_service_without(("sentence_transformers",), alibi_model_dir,
                                          {"RERANK_FLAVOUR": "torch", "HF_HUB_OFFLINE": "1"})
    assert answers is not None, result.stderr[-4000:]
    assert answers["banned_loaded"] == []
    assert answers["health"]["status"] == "healthy"
    assert (answers["info"]["flavour"], answers["info"]["activation"]) == ("torch",
                                                                           "torch.nn.modules.activation.Sigmoid")
    assert [r["index"] for r in answers["v1"]["results"]] in ([0, 1], [1, 0])
    assert len(answers["v2"]["results"]) == 2 and len(answers["tei"]) == 2
