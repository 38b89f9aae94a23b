"""Reading stack files without the engine (Blueprint generator, integration test) follows the same rules."""

from __future__ import annotations

import pytest
import yaml

from infra import config
from tests.infra.harness import ROOT


def write_stack(tmp_path, values: dict) -> "Path":  # noqa: F821
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(yaml.safe_dump({"config": {f"reranker:{k}": v for k, v in values.items()}}))
    return path


def test_the_committed_dev_stack_parses_to_the_documented_defaults():
    cfg = config.load_stack_file("dev")
    assert (cfg.target, cfg.memory_mb, cfg.workers, cfg.environment) == ("docker", 1024, 1, "development")
    docker = cfg.target_settings
    assert (
        cfg.rerank_device == "cpu"
        and docker.bind_address == "127.0.0.1"
        and docker.public_host == "localhost"
    )


def test_the_committed_prod_stack_parses_for_the_blueprint_and_is_refused_for_a_deploy():
    cfg = config.load_stack_file("prod", deploy=False)
    assert (cfg.target, cfg.memory_mb, cfg.environment, cfg.rerank_device) == (
        "render",
        2048,
        "production",
        "cpu",
    )
    assert cfg.target_settings.plan.api_name == "standard"
    assert cfg.required_secrets == config.PROD_REQUIRED_SECRETS
    with pytest.raises(config.ConfigError, match="renderOwnerId is required"):
        config.load_stack_file("prod")


def test_encrypted_values_count_as_present_secrets(tmp_path):
    path = write_stack(
        tmp_path,
        {
            "target": "docker",
            "environment": "production",
            "llmApiKey": {"secure": "v1:abc"},
            "supabaseAnonKey": {"secure": "v1:def"},
            "supabaseServiceRoleKey": {"secure": "v1:ghi"},
            "supabaseJwtSecret": {"secure": "v1:jkl"},
        },
    )
    cfg = config.load_stack_file("test", path)
    assert set(cfg.secret_env) == {
        "LLM_API_KEY",
        "SUPABASE_ANON_KEY",
        "SUPABASE_SERVICE_ROLE_KEY",
        "SUPABASE_JWT_SECRET",
    }
    assert not cfg.secret_env["LLM_API_KEY"].known


def test_production_requires_the_guide_secrets_by_default(tmp_path):
    path = write_stack(tmp_path, {"environment": "production"})
    with pytest.raises(config.ConfigError) as caught:
        config.load_stack_file("test", path)
    for key in config.PROD_REQUIRED_SECRETS:
        assert f"reranker:{key} (" in str(caught.value)


def test_development_requires_no_secret_by_default(tmp_path):
    cfg = config.load_stack_file("test", write_stack(tmp_path, {}))
    assert cfg.required_secrets == () and cfg.secret_env == {}


def test_yaml_values_reach_the_program_as_the_engine_passes_them():
    assert config.config_string(True) == "true"
    assert config.config_string(1024) == "1024"
    assert config.config_string(["a", "b"]) == '["a", "b"]'
    assert config.config_string({"A": 1}) == '{"A": 1}'


def test_lists_accept_comma_separated_text(tmp_path):
    path = write_stack(tmp_path, {"corsAllowedOrigins": "https://a.example, https://b.example:8443"})
    assert config.load_stack_file("test", path).cors_allowed_origins == (
        "https://a.example",
        "https://b.example:8443",
    )


def test_build_arguments_must_be_args_of_the_real_dockerfile():
    declared = config.dockerfile_args(ROOT / "Dockerfile")
    assert {"BASE_IMAGE", "TORCH_INDEX_URL"} <= declared
