"""`python -m service` when the model cannot be had, as a newcomer meets it: one message, exit 1, before uvicorn
starts, in bounded time, and the same words in development and production."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.service.test_model_loading import REAL_ID, clean_env, run_service
from tests.support.hub_cache import install_in_hub_cache
from tests.support.network import black_hole, closed_port

ADVICE = (
    f"python scripts/download_reranker_local.py --model {REAL_ID} --output-dir DIR",
    "RERANK_MODEL_PATH=DIR",
    "HTTPS_PROXY=",
)


def timed_run(env: dict[str, str], timeout: float = 90.0) -> tuple[int | None, str, float]:
    started = time.monotonic()
    code, stderr, _ = run_service(env, timeout=timeout)
    return code, stderr, time.monotonic() - started


def reranker_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("reranker: ")]


def assert_one_unreachable_message(stderr: str, where: str, reason: str) -> None:
    """Exactly one `reranker:` line: the Hub could not be reached (where, why) and the ways out."""
    assert "ENVIRONMENT=production" not in stderr
    assert "Uvicorn running" not in stderr and "Traceback" not in stderr
    (message,) = reranker_lines(stderr)
    assert message.startswith(
        f"reranker: Could not download {REAL_ID} from the Hugging Face Hub at {where} ({reason})."
    )
    for advice in ADVICE:
        assert advice in message


def test_development_with_an_unreachable_hub_says_so_not_production(tmp_path):
    port = closed_port()
    env = clean_env(HF_HOME=str(tmp_path / "empty"), HF_ENDPOINT=f"http://127.0.0.1:{port}")
    code, stderr, elapsed = timed_run(env)
    assert code == 1, stderr
    refused = "ConnectionError: [Errno 111] Connection refused"
    assert_one_unreachable_message(stderr, f"http://127.0.0.1:{port}", refused)
    # One attempt: not huggingface_hub's five retries over 23 s ("Retrying in 8s [Retry 5/5]").
    assert "Retrying in" not in stderr
    assert elapsed < 45, f"{elapsed:.0f} s"


def test_development_with_a_black_holed_hub_fails_in_bounded_time(tmp_path):
    with black_hole() as url:
        env = clean_env(HF_HOME=str(tmp_path / "empty"), HF_ENDPOINT=url, HF_HUB_ETAG_TIMEOUT="2")
        code, stderr, elapsed = timed_run(env, timeout=120)
    assert code == 1, stderr
    assert elapsed < 40, f"took {elapsed:.0f} s with HF_HUB_ETAG_TIMEOUT=2"
    assert f"Asking the Hugging Face Hub at {url} for {REAL_ID} (waiting at most 2 s for an answer" in stderr
    assert_one_unreachable_message(stderr, url, "ReadTimeout: no answer within 2 s")


def test_development_with_a_black_holed_hub_serves_the_cached_model(tmp_path, bert_model_dir):
    install_in_hub_cache(bert_model_dir, tmp_path / "hf", REAL_ID)
    with black_hole() as url:
        env = clean_env(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=url, HF_HUB_ETAG_TIMEOUT="2")
        started = time.monotonic()
        code, stderr, health = run_service(env, timeout=120)
        elapsed = time.monotonic() - started
    assert code is None, stderr
    assert health == {"status": "healthy", "version": "2.0.0"}
    assert f"The Hugging Face Hub at {url} cannot be reached (ReadTimeout: no answer within 2 s)" in stderr
    assert stderr.count("Asking the Hugging Face Hub") == 1  # then offline: no wait per file
    assert elapsed < 90


@pytest.mark.parametrize("environment", ["development", "production"])
def test_a_missing_model_path_fails_before_uvicorn_with_one_message(tmp_path, environment):
    missing = tmp_path / "no-such-model"
    code, stderr, elapsed = timed_run(clean_env(RERANK_MODEL_PATH=str(missing), ENVIRONMENT=environment))
    assert code == 1, stderr  # not 143 (SIGTERM) after uvicorn started
    assert "Uvicorn running" not in stderr and "Traceback" not in stderr
    assert reranker_lines(stderr) == [
        f"reranker: RERANK_MODEL_PATH={missing} does not exist: it must be a model directory. Create one "
        f"with: python scripts/download_reranker_local.py --output-dir {missing}"
    ]
    assert elapsed < 30


@pytest.mark.parametrize("environment", ["development", "production"])
def test_a_folder_that_is_not_a_model_is_described_the_same_way(tmp_path, environment):
    folder = tmp_path / "empty-folder"
    folder.mkdir()
    code, stderr, _ = timed_run(clean_env(RERANK_MODEL_PATH=str(folder), ENVIRONMENT=environment))
    assert code == 1, stderr
    assert reranker_lines(stderr) == [
        f"reranker: RERANK_MODEL_PATH={folder} has no config.json: it is not a model directory. Create one "
        f"with: python scripts/download_reranker_local.py --output-dir {folder}"
    ]


def test_a_model_that_fails_to_load_after_start_exits_1_not_143(tmp_path, bert_model_dir):
    broken = tmp_path / "broken"
    broken.mkdir()
    shutil.copyfile(bert_model_dir / "config.json", broken / "config.json")  # passes preflight; no weights
    code, stderr, _ = timed_run(clean_env(RERANK_MODEL_PATH=str(broken), HF_HUB_OFFLINE="1"), timeout=120)
    assert code == 1, stderr
    assert "CRITICAL service.state: Model failed to load" in stderr
