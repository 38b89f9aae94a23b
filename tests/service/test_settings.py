from __future__ import annotations

import os

import pytest

from service.settings import PROJECT_ROOT, SettingsError, cpu_count_available, load_settings


def test_defaults():
    settings = load_settings()
    assert settings.rerank_model == "jinaai/jina-reranker-v1-tiny-en"
    assert settings.model_path is None
    assert settings.rerank_device == "cpu"
    assert settings.rerank_max_length == 512
    assert settings.rerank_max_documents == 1000
    assert settings.rerank_max_body_bytes == 2 * 1024 * 1024
    assert settings.environment.value == "development" and not settings.is_production
    assert settings.cors_allowed_origins == []
    assert settings.port == 8000 and settings.web_concurrency == 1


def test_environment_variables_are_read(monkeypatch):
    monkeypatch.setenv("RERANK_MODEL", "org/other")
    monkeypatch.setenv("ENVIRONMENT", "production")
    monkeypatch.setenv("RERANK_API_KEYS", "a-key")
    monkeypatch.setenv("CORS_ALLOWED_ORIGINS", "https://a.example, https://b.example,")
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("WEB_CONCURRENCY", "3")
    settings = load_settings()
    assert settings.rerank_model == "org/other" and settings.is_production
    assert settings.cors_allowed_origins == ["https://a.example", "https://b.example"]
    assert (settings.port, settings.web_concurrency) == (9001, 3)


@pytest.mark.parametrize("raw", ["models/jina-reranker-v1-tiny-en", "./models/jina-reranker-v1-tiny-en",
                                 "models\\jina-reranker-v1-tiny-en"])
def test_relative_model_path_resolves_against_the_project_root(raw):
    settings = load_settings(RERANK_MODEL_PATH=raw)
    assert settings.model_path == PROJECT_ROOT / "models" / "jina-reranker-v1-tiny-en"
    assert settings.model_path.is_absolute()


def test_absolute_model_path_and_blank_path(tmp_path):
    assert load_settings(RERANK_MODEL_PATH=str(tmp_path)).model_path == tmp_path
    assert load_settings(RERANK_MODEL_PATH="  ").model_path is None


@pytest.mark.parametrize(("key", "value"), [("RERANK_DEVICE", "tpu"), ("RERANK_MAX_LENGTH", "8"),
                                            ("ENVIRONMENT", "staging"), ("PORT", "0"), ("WEB_CONCURRENCY", "x"),
                                            ("RERANK_PRECISION", "fp8")])
def test_invalid_values_name_the_variable(key, value):
    with pytest.raises(SettingsError) as excinfo:
        load_settings(**{key: value})
    assert key in str(excinfo.value) and repr(value) in str(excinfo.value)


def test_cpu_count_honours_the_cgroup_quota(tmp_path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cpu_count_available(tmp_path) == min(2, len(os.sched_getaffinity(0)))
    (tmp_path / "cpu.max").write_text("50000 100000\n")
    assert cpu_count_available(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_count_available(tmp_path) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("env", [dict(RERANK_PRECISION="int8", RERANK_BACKEND="torch"),
                                 dict(RERANK_PRECISION="int8", RERANK_DEVICE="cuda"),
                                 dict(RERANK_PRECISION="bf16", RERANK_BACKEND="onnx")])
def test_backend_and_precision_that_do_not_fit_are_refused_at_startup(env):
    with pytest.raises(SettingsError) as excinfo:
        load_settings(**env)
    assert "RERANK_PRECISION=" in str(excinfo.value)
