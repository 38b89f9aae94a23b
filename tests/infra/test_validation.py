"""Every invalid setting fails the program before any resource is declared, with a message that names the
key and the fix (what `pulumi preview` prints)."""

from __future__ import annotations

import pulumi
import pytest

from infra import program
from infra.config import ConfigError
from tests.infra import harness
from tests.infra.harness import FAKE_SECRETS


def refused(stack: str, **overrides) -> str:
    mocks = harness.configure(stack, **overrides)
    with pytest.raises(ConfigError) as caught:
        program.run()
    assert mocks.created == [], "resources were declared before the configuration was validated"
    assert isinstance(caught.value, pulumi.RunError)  # printed without a stack trace by `pulumi preview`
    return str(caught.value)


def prod(**set_) -> dict:
    return harness.prod_overrides(**set_)


CASES = {
    "memory below workers x footprint + headroom": (
        "dev",
        {"set": {"memoryMb": "512", "workers": "2"}},
        [
            "reranker:memoryMb=512 is too small for 2 workers x 650 MB + 150 MB headroom; "
            "set memoryMb >= 1450 (pulumi config set memoryMb 1450)"
        ],
    ),
    "memory below one worker names the single-worker size": (
        "dev",
        {"set": {"memoryMb": "512"}},
        ["reranker:memoryMb=512 is too small for 1 worker x 650 MB + 150 MB headroom; set memoryMb >= 800"],
    ),
    "too many workers for the memory suggests fewer": (
        "dev",
        {"set": {"memoryMb": "1024", "workers": "3"}},
        ["set memoryMb >= 2100", "or lower workers to 1 (pulumi config set workers 1)"],
    ),
    "prod without its secrets": (
        "prod",
        {"set": harness.PROD_CI_SETTINGS},
        [
            f"reranker:{key} ({env}) is required by stack prod but not set; "
            f"pulumi config set --secret {key} <value>"
            for key, env in [
                ("llmApiKey", "LLM_API_KEY"),
                ("supabaseAnonKey", "SUPABASE_ANON_KEY"),
                ("supabaseServiceRoleKey", "SUPABASE_SERVICE_ROLE_KEY"),
                ("supabaseJwtSecret", "SUPABASE_JWT_SECRET"),
            ]
        ],
    ),
    "an empty secret counts as missing": (
        "prod",
        {
            "set": harness.PROD_CI_SETTINGS,
            "secrets": {
                **{k: FAKE_SECRETS[k] for k in ("llmApiKey", "supabaseAnonKey", "supabaseJwtSecret")},
                "supabaseServiceRoleKey": "",
            },
        },
        ["reranker:supabaseServiceRoleKey (SUPABASE_SERVICE_ROLE_KEY) is required by stack prod but not set"],
    ),
    "a secret stored in plain text": (
        "dev",
        {"set": {"llmApiKey": "sk-in-the-clear"}},
        [
            "reranker:llmApiKey is stored in plain text in Pulumi.dev.yaml; "
            "store it encrypted: pulumi config set --secret llmApiKey <value>"
        ],
    ),
    "the committed prod file alone (what CI must add)": (
        "prod",
        {},
        [
            "reranker:imageName='ghcr.io/OWNER/reranker:latest' still has the OWNER placeholder",
            "reranker:renderOwnerId is required for target=render (pulumi config set renderOwnerId",
            "reranker:llmApiKey (LLM_API_KEY) is required",
        ],
    ),
    "requiredSecrets naming a non-secret": (
        "prod",
        prod(requiredSecrets='["llmApiKey", "supabaseUrl"]'),
        ["reranker:requiredSecrets lists 'supabaseUrl', which is not a secret setting"],
    ),
    "a forced Render plan too small for the footprint": (
        "prod",
        prod(renderPlan="starter", memoryMb="600", workers="1"),
        [
            "reranker:renderPlan=starter (512 MB) cannot hold "
            "1 worker(s) x 650 MB + 150 MB headroom = 800 MB; "
            "use standard (pulumi config set renderPlan standard)"
        ],
    ),
    "a forced Render plan smaller than memoryMb": (
        "prod",
        prod(renderPlan="standard", memoryMb="4096"),
        ["reranker:renderPlan=standard has 2048 MB, less than memoryMb=4096"],
    ),
    "memory beyond the largest Render plan": (
        "prod",
        prod(memoryMb="16384"),
        ["reranker:memoryMb=16384 does not fit the largest supported Render plan pro_plus (8192 MB"],
    ),
    "cpus beyond a forced plan": (
        "prod",
        prod(renderPlan="standard", cpus="2"),
        ["reranker:cpus=2 is more than renderPlan=standard offers (1 CPU)"],
    ),
    "Render with a local image name": (
        "prod",
        prod(imageName="reranker:prod"),
        ["reranker:imageName='reranker:prod' is a local name, but Render pulls the image from a registry"],
    ),
    "a remote host with a local image name": (
        "dev",
        {"set": {"dockerHost": "ssh://deploy@203.0.113.10"}},
        ["reranker:imageName='reranker:dev' is a local name, but the remote Docker host pulls the image"],
    ),
    "a malformed dockerHost": (
        "dev",
        {"set": {"dockerHost": "deploy@203.0.113.10"}},
        ["reranker:dockerHost='deploy@203.0.113.10' must look like ssh://user@host"],
    ),
    "a misspelt key": (
        "dev",
        {"set": {"memoryMB": "2048"}},
        [
            "reranker:memoryMB is not a setting of this project; did you mean memoryMb? "
            "remove it with: pulumi config rm memoryMB"
        ],
    ),
    "a value outside its choices": (
        "dev",
        {"set": {"rerankDevice": "gpu"}},
        ["reranker:rerankDevice='gpu' is not one of: cpu, cuda, auto"],
    ),
    "a number that is not one": (
        "dev",
        {"set": {"workers": "two"}},
        ["reranker:workers='two' is not a whole number"],
    ),
    "a number out of range": (
        "dev",
        {"set": {"rerankMaxLength": "100000"}},
        ["reranker:rerankMaxLength=100000 is out of range 16..8192"],
    ),
    "a boolean that is not one": (
        "dev",
        {"set": {"buildImage": "yes"}},
        ["reranker:buildImage='yes' must be true or false"],
    ),
    "a CORS origin with a path": (
        "dev",
        {"set": {"corsAllowedOrigins": '["https://app.example.com/"]'}},
        [
            "reranker:corsAllowedOrigins entry 'https://app.example.com/' is not an origin",
            "use 'https://app.example.com'",
        ],
    ),
    "env overriding a typed key": (
        "dev",
        {"set": {"env": '{"WEB_CONCURRENCY": "4"}'}},
        ["reranker:env.WEB_CONCURRENCY is set by the typed key workers; pulumi config set workers 4"],
    ),
    "env carrying something that looks like a secret": (
        "dev",
        {"set": {"env": '{"HF_TOKEN": "hf_abc"}'}},
        ["reranker:env.HF_TOKEN looks like a secret", "pulumi config set --secret secretEnv"],
    ),
    "env with a value the service rejects": (
        "dev",
        {"set": {"env": '{"RERANK_PRECISION": "fp64"}'}},
        ["reranker:env.RERANK_PRECISION='fp64' is not accepted by the service (RERANK_PRECISION)"],
    ),
    "env that is not a map": (
        "dev",
        {"set": {"env": '["A=1"]'}},
        ["reranker:env must be a map of NAME: value"],
    ),
    "a build argument the Dockerfile does not declare": (
        "dev",
        {"set": {"imageBuildArgs": '{"MODEL_NAME": "x"}'}},
        ["reranker:imageBuildArgs.MODEL_NAME is not an ARG of Dockerfile"],
    ),
    "build arguments without a build": (
        "dev",
        {"set": {"buildImage": "false", "imageBuildArgs": '{"VERSION": "1"}'}},
        ["reranker:imageBuildArgs is set but buildImage=false"],
    ),
    "a Dockerfile that is not there": (
        "dev",
        {"set": {"dockerfile": "docker/Missing.Dockerfile"}},
        ["reranker:dockerfile points at", "Missing.Dockerfile, which does not exist"],
    ),
    "a registry user without a password": (
        "dev",
        {"set": {"registryUsername": "acme-bot"}},
        [
            "reranker:registryPassword is needed with registryUsername "
            "(pulumi config set --secret registryPassword"
        ],
    ),
    "a Render credential for a registry Render does not know": (
        "prod",
        {
            "set": {
                **harness.PROD_CI_SETTINGS,
                "imageName": "quay.io/acme/reranker:1",
                "registryUsername": "u",
            },
            "secrets": {**harness.prod_overrides()["secrets"], "registryPassword": "p"},
        },
        ["reranker:registryServer='quay.io' is not a registry Render can hold a credential for"],
    ),
    "secretEnv that is not a JSON map": (
        "dev",
        {"secrets": {"secretEnv": "HF_TOKEN=abc"}},
        ["reranker:secretEnv must be a JSON map"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pulumi.runtime.test
def test_invalid_settings_are_refused_before_any_resource(case):
    stack, overrides, expected = CASES[case]
    message = refused(stack, **overrides)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


@pulumi.runtime.test
def test_all_problems_are_reported_at_once():
    message = refused("dev", set={"memoryMb": "300", "rerankDevice": "tpu", "logLevel": "loud"})
    assert message.startswith("3 problem(s) in Pulumi.dev.yaml:")
    assert "reranker:memoryMb=300" in message and "reranker:rerankDevice='tpu'" in message
    assert "reranker:logLevel='loud'" in message


@pulumi.runtime.test
def test_secret_values_never_appear_in_error_messages():
    message = refused(
        "prod",
        set={**harness.PROD_CI_SETTINGS, "memoryMb": "100"},
        secrets={k: FAKE_SECRETS[k] for k in ("llmApiKey", "supabaseAnonKey")},
    )
    assert "reranker:memoryMb" in message
    assert FAKE_SECRETS["llmApiKey"] not in message and FAKE_SECRETS["supabaseAnonKey"] not in message


@pulumi.runtime.test
def test_an_explicit_empty_required_list_lets_a_production_stack_run_without_the_guide_secrets():
    run = harness.run_stack(
        "prod",
        set={**harness.PROD_CI_SETTINGS, "requiredSecrets": "[]"},
        secrets={"apiKeys": FAKE_SECRETS["apiKeys"]},
    )

    def check(outputs):
        assert outputs["url"] == "https://reranker-prod.onrender.com"

    return run.settled(check)
