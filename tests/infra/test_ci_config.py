"""scripts/ci_stack_config.py: CI variables become stack settings, secrets with --secret and via stdin."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

from infra.ci import ci_variable
from infra.config import KEYS_BY_NAME
from tests.infra.harness import ROOT

FAKE_PULUMI = """#!{python}
import json, os, sys
with open(os.environ["FAKE_PULUMI_LOG"], "a") as log:
    log.write(json.dumps({{"argv": sys.argv[1:], "stdin": sys.stdin.read()}}) + "\\n")
sys.exit(int(os.environ.get("FAKE_PULUMI_EXIT", "0")))
"""


def run_script(tmp_path, env: dict[str, str], exit_code: int = 0):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "pulumi"
    fake.write_text(FAKE_PULUMI.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    log = tmp_path / "calls.jsonl"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("RERANKER_", "LLM_", "SUPABASE_"))}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ci_stack_config.py"), "--stack", "acme/prod"],
        env={
            **base,
            **env,
            "PATH": f"{bin_dir}{os.pathsep}{base['PATH']}",
            "FAKE_PULUMI_LOG": str(log),
            "FAKE_PULUMI_EXIT": str(exit_code),
        },
        capture_output=True,
        text=True,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def test_variables_become_settings_and_secrets_stay_off_the_command_line(tmp_path):
    pem = "-----BEGIN PUBLIC KEY-----\nMFkw\n-----END PUBLIC KEY-----"
    result, calls = run_script(
        tmp_path,
        {
            "RERANKER_IMAGE_NAME": "ghcr.io/acme/reranker@sha256:" + "a" * 64,
            "RERANKER_BUILD_IMAGE": "false",
            "LLM_API_KEY": "sk-secret-value",
            "SUPABASE_JWT_PUBLIC_KEY": pem,
            "SUPABASE_URL": "",  # empty: skipped, not written as an empty setting
        },
    )
    assert result.returncode == 0, result.stderr
    by_key = {call["argv"][-1]: call for call in calls}
    assert set(by_key) == {"imageName", "buildImage", "llmApiKey", "supabaseJwtPublicKey"}
    assert by_key["llmApiKey"]["argv"] == [
        "config",
        "set",
        "--stack",
        "acme/prod",
        "--secret",
        "--",
        "llmApiKey",
    ]
    assert by_key["llmApiKey"]["stdin"] == "sk-secret-value"
    assert by_key["supabaseJwtPublicKey"]["stdin"] == pem  # multi-line values arrive whole
    assert "--plaintext" in by_key["imageName"]["argv"]
    assert "sk-secret-value" not in result.stdout + result.stderr
    assert "set reranker:llmApiKey from LLM_API_KEY (secret)" in result.stdout


def test_a_failing_pulumi_fails_the_step(tmp_path):
    result, _ = run_script(tmp_path, {"RERANKER_MEMORY_MB": "2048"}, exit_code=3)
    assert result.returncode == 3
    assert "pulumi config set memoryMb failed" in result.stderr


def test_variable_names():
    assert ci_variable(KEYS_BY_NAME["imageName"]) == "RERANKER_IMAGE_NAME"
    assert ci_variable(KEYS_BY_NAME["renderOwnerId"]) == "RERANKER_RENDER_OWNER_ID"
    assert ci_variable(KEYS_BY_NAME["llmApiKey"]) == "LLM_API_KEY"
    assert ci_variable(KEYS_BY_NAME["apiKeys"]) == "RERANKER_API_KEYS"  # a secret of every target
    assert ci_variable(KEYS_BY_NAME["gcpProject"]) == "RERANKER_GCP_PROJECT"  # a target's own key
    assert (
        ci_variable(KEYS_BY_NAME["environment"]) == "RERANKER_ENVIRONMENT"
    )  # not the container's ENVIRONMENT


def test_every_targets_keys_are_in_the_ci_list(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "ci_stack_config.py"), "--stack", "x", "--list"],
        capture_output=True,
        text=True,
        check=True,
    )
    for line in (
        "RERANKER_API_KEYS",
        "reranker:apiKeys (secret)",
        "RERANKER_AWS_REGION",
        "RERANKER_RENDER_OWNER_ID",
    ):
        assert line in result.stdout
