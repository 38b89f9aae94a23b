"""scripts/download_reranker_local.py as a user runs it: a plain, self-contained model directory from a Hub id
(here a Hugging Face cache laid out on disk) or a local directory, and the RERANK_MODEL_PATH line for .env."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from service.settings import PROJECT_ROOT
from tests.scripts.download_helpers import (
    closed_port,
    printed_model_path,
    run_script,
    script_env,
)
from tests.support.hub_cache import install_in_hub_cache
from tests.support.model_factory import build_external_code_repo, cached_model

SCRIPT = "download_reranker_local.py"
REPO_ID = "testorg/tiny-reranker"
LOCAL_AUTO_MAP = {
    "AutoConfig": "configuration_alibert.AliBertConfig",
    "AutoModel": "modeling_alibert.AliBertModel",
    "AutoModelForSequenceClassification": "modeling_alibert.AliBertForSequenceClassification",
}


@pytest.fixture(scope="module")
def external_model_dir(model_cache: Path) -> Path:
    return cached_model("alibi", model_cache, auto_map="external", max_position_embeddings=1024)


def test_hub_model_becomes_a_self_contained_directory(tmp_path, external_model_dir):
    hf_home = tmp_path / "hf-home"
    install_in_hub_cache(external_model_dir, hf_home, REPO_ID)
    build_external_code_repo(hf_home)
    output = tmp_path / "models" / "tiny-reranker"
    result = run_script(
        SCRIPT, "--model", REPO_ID, "--output-dir", str(output), env=script_env(hf_home, HF_HUB_OFFLINE="1")
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"Saved {REPO_ID} to {output}; it loads with the Hub offline")
    assert "Put this line in .env:\nRERANK_MODEL_PATH=" in result.stdout
    assert printed_model_path(result.stdout) == output
    assert json.loads((output / "config.json").read_text())["auto_map"] == LOCAL_AUTO_MAP
    assert {"configuration_alibert.py", "modeling_alibert.py", "model.safetensors", "tokenizer.json",
            "fidelity.json"} <= {p.name for p in output.iterdir()}
    assert "Precision gate (" in result.stdout
    # No Hugging Face cache needed any more: the service's settings load it from a fresh HF_HOME, offline.
    shutil.rmtree(hf_home)
    check = run_script("download_models.py", "--model", str(output), "--no-fidelity-gate",
                       env=script_env(tmp_path / "fresh"))
    assert check.returncode == 0, check.stderr


def test_local_directory_with_external_code_is_localized(tmp_path, external_model_dir):
    hf_home = tmp_path / "hf-home"
    build_external_code_repo(hf_home)
    output = tmp_path / "out"
    result = run_script(
        SCRIPT,
        "--model",
        str(external_model_dir),
        "--output-dir",
        str(output),
        "--no-fidelity-gate",
        env=script_env(hf_home, HF_HUB_OFFLINE="1"),
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((output / "config.json").read_text())["auto_map"] == LOCAL_AUTO_MAP
    assert (external_model_dir / "config.json").read_text() != (output / "config.json").read_text()


def test_relative_output_dir_is_under_the_project_root_and_printed_relative(tmp_path, bert_model_dir):
    relative = "build/test-download-reranker-local/bert"
    try:
        result = run_script(
            SCRIPT,
            "--model",
            str(bert_model_dir),
            "--output-dir",
            relative,
            "--no-fidelity-gate",
            env=script_env(tmp_path / "hf-home"),
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.rstrip().endswith(f"\nRERANK_MODEL_PATH={relative}")
        assert (PROJECT_ROOT / relative / "model.safetensors").is_file()
    finally:
        shutil.rmtree(PROJECT_ROOT / "build" / "test-download-reranker-local", ignore_errors=True)


def test_rerun_replaces_the_model_but_never_another_directory(tmp_path, bert_model_dir):
    output = tmp_path / "out"
    env = script_env(tmp_path / "hf-home")
    for _ in range(2):
        result = run_script(SCRIPT, "--model", str(bert_model_dir), "--output-dir", str(output),
                            "--no-fidelity-gate", env=env)
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no leftovers next to it

    precious = tmp_path / "notes"
    precious.mkdir()
    (precious / "todo.txt").write_text("keep me")
    result = run_script(SCRIPT, "--model", str(bert_model_dir), "--output-dir", str(precious),
                        "--no-fidelity-gate", env=env)
    assert result.returncode == 1
    assert result.stderr == (
        f"error: {precious} exists and is not a model directory (no config.json): refusing "
        f"to replace it. Choose an empty or new directory.\n"
    )
    assert (precious / "todo.txt").read_text() == "keep me"


def test_unreachable_hub_fails_with_advice(tmp_path):
    port = closed_port()
    result = run_script(
        SCRIPT,
        "--output-dir",
        str(tmp_path / "out"),
        env=script_env(tmp_path / "hf-home", HF_ENDPOINT=f"http://127.0.0.1:{port}"),
    )
    assert result.returncode == 1
    assert result.stderr.startswith(
        "error: Could not download jinaai/jina-reranker-v1-tiny-en from the Hugging "
        f"Face Hub at http://127.0.0.1:{port} (ConnectionError: [Errno 111] "
        "Connection refused). Things to try:"
    )
    assert not (tmp_path / "out").exists()
