"""scripts/download_models.py as a user runs it: a Hub id into the Hugging Face cache (here a cache laid out
on disk, with the Hub offline or unreachable), a local directory, RERANK_LOCAL_DIR, and the failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.scripts.download_helpers import (
    closed_port,
    printed_model_path,
    run_script,
    script_env,
)
from tests.support.hub_cache import install_in_hub_cache
from tests.support.model_factory import EXTERNAL_CODE_REPO_ID, build_external_code_repo, cached_model

SCRIPT = "download_models.py"
REPO_ID = "testorg/tiny-reranker"


@pytest.fixture(scope="module")
def external_model_dir(model_cache: Path) -> Path:
    """Like the real model: config.json's auto_map points into a second repository."""
    return cached_model("alibi", model_cache, auto_map="external", max_position_embeddings=1024)


@pytest.fixture
def hub_cache(tmp_path: Path, external_model_dir: Path) -> tuple[Path, str]:
    """A Hugging Face cache holding the model repository and its remote-code repository."""
    hf_home = tmp_path / "hf-home"
    commit = install_in_hub_cache(external_model_dir, hf_home, REPO_ID).name
    build_external_code_repo(hf_home)
    return hf_home, commit


def test_cached_model_and_its_code_repository_load_offline(hub_cache):
    hf_home, commit = hub_cache
    result = run_script(SCRIPT, "--model", REPO_ID, env=script_env(hf_home, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr
    assert (
        f"{REPO_ID} is in the Hugging Face cache ({hf_home / 'hub'}) and loads with the Hub offline"
        in result.stdout
    )
    assert f"Remote code from: {EXTERNAL_CODE_REPO_ID}" in result.stdout
    assert f"  RERANK_MODEL={REPO_ID}\n  RERANK_MODEL_REVISION={commit}\n" in result.stdout
    # The offline proof loaded the second repository's code, into $HF_HOME/modules (what the image ships).
    modules = hf_home / "modules" / "transformers_modules" / "testorg" / "alibert_hyphen_implementation"
    assert list(modules.glob("*/modeling_alibert.py")), "remote code was not prepared in $HF_HOME/modules"
    # The precision verdict sits next to the weights, in the snapshot the service loads.
    snapshot = hf_home / "hub" / ("models--" + REPO_ID.replace("/", "--")) / "snapshots" / commit
    assert json.loads((snapshot / "fidelity.json").read_text())["options"]["torch-bf16"]["pairs"] >= 512


def test_unreachable_hub_falls_back_to_the_cache(hub_cache):
    hf_home, commit = hub_cache
    env = script_env(hf_home, HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    result = run_script(SCRIPT, "--model", REPO_ID, "--no-fidelity-gate", env=env)
    assert result.returncode == 0, result.stderr
    assert f"RERANK_MODEL_REVISION={commit}" in result.stdout


def test_unreachable_hub_says_what_failed_and_what_to_try(tmp_path):
    port = closed_port()
    result = run_script(
        SCRIPT, env=script_env(tmp_path / "empty-hf-home", HF_ENDPOINT=f"http://127.0.0.1:{port}")
    )
    assert result.returncode == 1
    assert result.stdout == ""
    message = result.stderr
    assert "Traceback" not in message
    assert message.startswith(
        f"error: Could not download jinaai/jina-reranker-v1-tiny-en from the Hugging Face Hub at "
        f"http://127.0.0.1:{port} (ConnectionError: [Errno 111] Connection refused)."
    )
    for advice in (
        "HTTPS_PROXY=",
        "HF_TOKEN",
        "HF_ENDPOINT",
        "python scripts/download_reranker_local.py --model jinaai/jina-reranker-v1-tiny-en --output-dir DIR",
        "RERANK_MODEL_PATH=DIR",
    ):
        assert advice in message


def test_missing_code_repository_is_named(tmp_path, external_model_dir):
    hf_home = tmp_path / "hf-home"
    install_in_hub_cache(external_model_dir, hf_home, REPO_ID)  # but not testorg/alibert-implementation
    result = run_script(SCRIPT, "--model", REPO_ID, env=script_env(hf_home, HF_HUB_OFFLINE="1"))
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"error: {EXTERNAL_CODE_REPO_ID} (remote code named by {REPO_ID}'s auto_map) is not in the "
        f"Hugging Face cache ({hf_home / 'hub'}) and HF_HUB_OFFLINE=1 forbids downloading it."
    )


def test_local_directory_is_verified_in_place(tmp_path, bert_model_dir):
    model_dir = tmp_path / "bert"  # a copy: the precision gate writes its verdict next to the weights
    shutil.copytree(bert_model_dir, model_dir)
    result = run_script(SCRIPT, "--model", str(model_dir), env=script_env(tmp_path / "hf-home"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(
        f"{model_dir} loads with the Hub offline (BertForSequenceClassification"
    )
    assert printed_model_path(result.stdout) == model_dir
    verdict = json.loads((model_dir / "fidelity.json").read_text())
    assert set(verdict["options"]) == {"torch-fp32", "torch-bf16"}
    assert verdict["calibration"]["pairs"] >= 512
    assert "Precision gate (" in result.stdout and "torch-bf16: Spearman" in result.stdout


def test_the_precision_gate_can_be_skipped(tmp_path, bert_model_dir):
    model_dir = tmp_path / "bert"
    shutil.copytree(bert_model_dir, model_dir)
    result = run_script(SCRIPT, "--model", str(model_dir), "--no-fidelity-gate",
                        env=script_env(tmp_path / "hf-home"))
    assert result.returncode == 0, result.stderr
    assert not (model_dir / "fidelity.json").exists()
    assert "Precision gate: no verdict (RERANK_PRECISION=auto will run fp32)" in result.stdout


def test_rerank_local_dir_saves_a_self_contained_directory(hub_cache, tmp_path):
    hf_home, _ = hub_cache
    target = tmp_path / "plain" / "tiny-reranker"
    env = script_env(hf_home, HF_HUB_OFFLINE="1", RERANK_LOCAL_DIR=str(target))
    result = run_script(SCRIPT, "--model", REPO_ID, env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Saved {REPO_ID} to {target}; it loads with the Hub offline")
    assert printed_model_path(result.stdout) == target
    auto_map = json.loads((target / "config.json").read_text())["auto_map"]
    assert (
        auto_map["AutoModelForSequenceClassification"] == "modeling_alibert.AliBertForSequenceClassification"
    )
    assert json.loads((target / "fidelity.json").read_text())["options"]["torch-bf16"]["pairs"] >= 512
    # Self-contained: it loads from a fresh HF_HOME that has no code repository at all.
    shutil.rmtree(hf_home)
    result = run_script(SCRIPT, "--model", str(target), "--no-fidelity-gate",
                        env=script_env(tmp_path / "fresh-hf-home"))
    assert result.returncode == 0, result.stderr


def test_a_directory_that_does_not_load_says_why(tmp_path, bert_model_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copyfile(bert_model_dir / "config.json", broken / "config.json")  # no weights, no tokenizer
    result = run_script(SCRIPT, "--model", str(broken), env=script_env(tmp_path / "hf-home"))
    assert result.returncode == 1
    assert result.stderr.startswith(
        f"error: {broken} was downloaded but does not load with the Hub offline: "
    )
    assert "Traceback" not in result.stderr
