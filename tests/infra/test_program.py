"""The Pulumi program against mocks, with the real Pulumi.dev.yaml / Pulumi.prod.yaml: the resources a
`pulumi up` would create, their inputs, the secrets' secrecy and the stack outputs."""

from __future__ import annotations

import runpy
import shlex

import pulumi
import pytest
import yaml

from infra import config
from infra.targets import render
from tests.infra import harness
from tests.infra.harness import (
    BUILT_DIGEST,
    FAKE_SECRETS,
    PROD_DIGEST,
    PULLED_ID,
    ROOT,
    plain,
    strings_inside_secrets,
    strings_outside_secrets,
)

CONTAINER = "docker:index/container:Container"
IMAGE = "docker:index/image:Image"
REMOTE_IMAGE = "docker:index/remoteImage:RemoteImage"
DOCKER_PROVIDER = "pulumi:providers:docker"
WEB_SERVICE = "render:services:WebService"
REGISTRY_CREDENTIAL = "render:registrycredentials:RegistryCredential"
GUIDE_SECRET_ENV = {"LLM_API_KEY", "SUPABASE_ANON_KEY", "SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_JWT_SECRET"}


def env_of(container) -> dict[str, str]:
    return dict(entry.split("=", 1) for entry in plain(container.inputs["envs"]))


def assert_no_secret_in_clear(run: harness.Run) -> None:
    """No fake secret value appears outside a secret marker in any resource input."""
    for resource in run.mocks.created:
        clear = strings_outside_secrets(resource.inputs)
        for name, value in FAKE_SECRETS.items():
            assert not any(value in text for text in clear), (
                f"{name} is in clear text in {resource.typ} {resource.name}"
            )


def test_project_file_matches_the_program():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == config.PROJECT == harness.PROJECT
    assert project["runtime"]["name"] == "python"
    assert project["runtime"]["options"]["virtualenv"] == ".venv"
    assert (ROOT / project["main"] / "__main__.py").is_file()


# ---- dev: local Docker -------------------------------------------------------------------------------


@pulumi.runtime.test
def test_dev_builds_the_dockerfile_and_runs_it_locally_with_1gb_and_one_worker():
    run = harness.run_stack("dev")

    def check(outputs):
        assert sorted(run.types()) == sorted(
            [IMAGE, CONTAINER, "command:local:Command", "reranker:targets:DockerDeployment"]
        )
        image = run.one(IMAGE).inputs
        assert image["imageName"] == "reranker:dev"
        assert image["skipPush"] is True
        assert image["build"]["context"] == str(ROOT)
        assert image["build"]["dockerfile"] == str(ROOT / "Dockerfile")
        assert image["build"]["target"] == "runtime"  # imageFlavour torch

        container = run.one(CONTAINER).inputs
        assert container["image"] == BUILT_DIGEST  # the built image's id: a rebuild replaces the container
        assert container["name"] == "reranker-dev"
        assert container["memory"] == 1024 and container["memorySwap"] == 1024
        assert container["user"] == "10001"
        assert container["ports"] == [
            {"internal": 8000, "external": 8000, "ip": "127.0.0.1", "protocol": "tcp"}
        ]
        assert container["restart"] == "unless-stopped"
        assert container["wait"] is True
        assert container["readOnly"] is True and "/tmp" in container["tmpfs"]
        assert env_of(run.one(CONTAINER)) == {
            "PORT": "8000",
            "WEB_CONCURRENCY": "1",
            "ENVIRONMENT": "development",
            "RERANK_DEVICE": "cpu",
            "RERANK_MAX_LENGTH": "512",
            "LOG_LEVEL": "info",
            "RERANK_SHUTDOWN_GRACE_S": "30",
            "CORS_ALLOWED_ORIGINS": "http://localhost:3000",
        }

        health = container["healthcheck"]
        kind, command = health["tests"]
        assert kind == "CMD-SHELL"
        assert "http://127.0.0.1:8000/api/health/" in command and shlex.split(command)[0] == "python3"
        assert (health["interval"], health["timeout"], health["retries"], health["startPeriod"]) == (
            "5s",
            "4s",
            3,
            "120s",
        )
        assert container["waitTimeout"] >= 120 + 3 * 5

        assert outputs["url"] == "http://localhost:8000"
        assert outputs["healthUrl"] == "http://localhost:8000/api/health/"
        assert outputs["imageName"] == "reranker:dev"
        assert outputs["imageDigest"] == BUILT_DIGEST
        assert outputs["memoryMb"] == 1024 and outputs["workers"] == 1 and outputs["target"] == "docker"

    return run.settled(check)


@pulumi.runtime.test
def test_dev_container_args_for_the_integration_test_are_what_the_program_declares():
    from infra.targets.docker import dev_container_args

    run = harness.run_stack("dev")

    def check(_):
        declared = run.one(CONTAINER).inputs
        args = dev_container_args(BUILT_DIGEST)
        assert args["image"] == declared["image"]
        assert sorted(args["envs"]) == sorted(plain(declared["envs"]))
        assert args["memory"] == declared["memory"] and args["memory_swap"] == declared["memorySwap"]
        assert args["user"] == declared["user"]
        assert args["ports"] == declared["ports"]
        assert args["healthcheck"]["tests"] == declared["healthcheck"]["tests"]
        assert args["healthcheck"]["start_period"] == declared["healthcheck"]["startPeriod"]
        assert args["read_only"] == declared["readOnly"] and args["tmpfs"] == declared["tmpfs"]
        assert args["wait_timeout"] == declared["waitTimeout"]

    return run.settled(check)


@pulumi.runtime.test
def test_dev_on_a_remote_host_pushes_the_image_and_pulls_it_there_with_secret_credentials():
    run = harness.run_stack(
        "dev",
        set={
            "dockerHost": "ssh://deploy@203.0.113.10",
            "imageName": "ghcr.io/acme/reranker:dev",
            "registryUsername": "acme-bot",
        },
        secrets={"registryPassword": FAKE_SECRETS["registryPassword"]},
    )

    def check(outputs):
        provider = run.one(DOCKER_PROVIDER)
        assert provider.inputs["host"] == "ssh://deploy@203.0.113.10"
        # Provider inputs travel JSON-encoded; the whole registryAuth value is a secret.
        assert any(
            FAKE_SECRETS["registryPassword"] in s
            for s in strings_inside_secrets(provider.inputs["registryAuth"])
        )

        image = run.one(IMAGE).inputs
        assert image["skipPush"] is False
        assert image["build"]["platform"] == "linux/amd64"
        assert plain(image["registry"]) == {
            "server": "ghcr.io",
            "username": "acme-bot",
            "password": FAKE_SECRETS["registryPassword"],
        }

        pulled = run.one(REMOTE_IMAGE)
        assert pulled.inputs["name"] == f"ghcr.io/acme/reranker@{BUILT_DIGEST}"
        assert pulled.provider and "docker" in pulled.provider
        container = run.one(CONTAINER)
        assert container.inputs["image"] == PULLED_ID
        assert container.provider == pulled.provider
        assert container.inputs["ports"][0]["ip"] == "0.0.0.0"
        limit = run.one("command:local:Command").inputs  # the pids limit, set on the remote engine
        assert limit["environment"] == {"DOCKER_HOST": "ssh://deploy@203.0.113.10"}
        assert outputs["url"] == "http://203.0.113.10:8000"
        assert_no_secret_in_clear(run)

    return run.settled(check)


@pulumi.runtime.test
def test_a_prebuilt_image_is_pulled_instead_of_built():
    run = harness.run_stack("dev", set={"buildImage": "false", "imageName": "ghcr.io/acme/reranker:1.2.0"})

    def check(outputs):
        assert run.of_type(IMAGE) == []
        assert run.one(REMOTE_IMAGE).inputs["name"] == "ghcr.io/acme/reranker:1.2.0"
        assert run.one(CONTAINER).inputs["image"] == PULLED_ID
        assert outputs["imageName"] == "ghcr.io/acme/reranker:1.2.0"

    return run.settled(check)


# ---- prod: Render ------------------------------------------------------------------------------------


@pulumi.runtime.test
def test_prod_runs_the_pushed_digest_on_render_standard_with_health_check_and_secrets():
    run = harness.run_stack("prod", **harness.prod_overrides())

    def check(outputs):
        assert run.of_type(IMAGE) == [] and run.of_type(CONTAINER) == []
        service = run.one(WEB_SERVICE).inputs
        assert service["name"] == "reranker-prod"
        assert service["ownerId"] == "tea-cmockowner000000000"
        assert service["autoDeploy"] == "no"
        assert service["image"]["imagePath"] == f"ghcr.io/acme/reranker@{PROD_DIGEST}"
        details = service["serviceDetails"]
        assert details["runtime"] == "image"
        assert details["plan"] == "standard"  # 2048 MB
        assert details["region"] == "oregon"
        assert details["healthCheckPath"] == "/api/health/"
        assert details["numInstances"] == 1

        env = {item["key"]: item["value"] for item in plain(service["envVars"])}
        assert env["ENVIRONMENT"] == "production"
        assert env["RERANK_DEVICE"] == "cpu"
        assert env["WEB_CONCURRENCY"] == "1"  # one worker per Render standard CPU
        assert env["PORT"] == "8000"
        assert {k: env[k] for k in GUIDE_SECRET_ENV} == {
            "LLM_API_KEY": FAKE_SECRETS["llmApiKey"],
            "SUPABASE_ANON_KEY": FAKE_SECRETS["supabaseAnonKey"],
            "SUPABASE_SERVICE_ROLE_KEY": FAKE_SECRETS["supabaseServiceRoleKey"],
            "SUPABASE_JWT_SECRET": FAKE_SECRETS["supabaseJwtSecret"],
        }
        assert_no_secret_in_clear(run)

        assert outputs["url"] == "https://reranker-prod.onrender.com"
        assert outputs["healthUrl"] == "https://reranker-prod.onrender.com/api/health/"
        assert outputs["imageDigest"] == PROD_DIGEST
        assert outputs["renderPlan"] == "standard"
        assert outputs["renderPlanListPriceUsdPerMonth"] == 25
        assert set(outputs["envNames"]) >= GUIDE_SECRET_ENV
        for value in FAKE_SECRETS.values():
            assert value not in repr(outputs)

    return run.settled(check)


@pulumi.runtime.test
def test_render_env_vars_carry_each_secret_as_a_secret_output_and_the_rest_as_plain_text():
    from infra.spec import build_spec
    from infra.targets.render import env_vars

    harness.configure("prod")
    values, secret_keys = harness.stack_values("prod")
    values.update(harness.PROD_CI_SETTINGS)
    for key in config.PROD_REQUIRED_SECRETS:
        values[key] = FAKE_SECRETS[key]
        secret_keys.add(key)
    cfg = config.parse(config.RawConfig("prod", values, frozenset(secret_keys), "test"))
    items = env_vars(build_spec(cfg))
    outputs = [item for item in items if isinstance(item.value, pulumi.Output)]
    assert sorted(item.key for item in outputs) == sorted(GUIDE_SECRET_ENV)
    assert all(isinstance(item.value, str) for item in items if item not in outputs)
    assert "ENVIRONMENT" in [item.key for item in items if item not in outputs]

    async def secrecy():
        return [await item.value.is_secret() for item in outputs]

    def check(flags):
        assert flags == [True] * 4

    return pulumi.Output.from_input(secrecy()).apply(check)


@pulumi.runtime.test
def test_prod_building_its_own_image_pushes_it_and_gives_render_a_secret_registry_credential():
    overrides = harness.prod_overrides(
        buildImage="true", imageName="ghcr.io/acme/reranker:2.0.0", registryUsername="acme-bot"
    )
    overrides["secrets"]["registryPassword"] = FAKE_SECRETS["registryPassword"]
    run = harness.run_stack("prod", **overrides)

    def check(_):
        image = run.one(IMAGE).inputs
        assert image["imageName"] == "ghcr.io/acme/reranker:2.0.0"
        assert image["skipPush"] is False and image["build"]["platform"] == "linux/amd64"
        assert FAKE_SECRETS["registryPassword"] in strings_inside_secrets(image["registry"])
        credential = run.one(REGISTRY_CREDENTIAL).inputs
        assert credential["registry"] == "GITHUB"
        assert credential["username"] == "acme-bot"
        assert credential["name"] == "ghcr-reranker"  # the name render.yaml refers to
        assert strings_inside_secrets(credential["authToken"]) == [FAKE_SECRETS["registryPassword"]]
        service = run.one(WEB_SERVICE).inputs
        assert service["image"]["imagePath"] == f"ghcr.io/acme/reranker@{BUILT_DIGEST}"
        assert service["image"]["registryCredentialId"] == f"{run.one(REGISTRY_CREDENTIAL).name}-id"
        assert_no_secret_in_clear(run)

    return run.settled(check)


@pulumi.runtime.test
def test_render_plan_follows_memory():
    run = harness.run_stack("prod", **harness.prod_overrides(memoryMb="4096", workers="4"))

    def check(outputs):
        assert run.one(WEB_SERVICE).inputs["serviceDetails"]["plan"] == "pro"
        assert outputs["renderPlan"] == "pro"
        assert outputs["renderPlanListPriceUsdPerMonth"] == render.PLANS_BY_NAME["pro"].usd_per_month

    return run.settled(check)


@pulumi.runtime.test
def test_a_max_length_above_the_measured_one_warns_at_preview(monkeypatch):
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *a, **k: warnings.append(message))
    run = harness.run_stack("dev", set={"rerankMaxLength": "2048"})

    def check(_):
        assert any("rerankMaxLength=2048" in w and "infra/sizing.py" in w for w in warnings), warnings

    return run.settled(check)


@pulumi.runtime.test
def test_the_entry_point_pulumi_runs_declares_the_stack(monkeypatch):
    """Run infra/ the way Pulumi.yaml's `main: infra/` does: as a directory with __main__.py."""
    from infra import program

    mocks = harness.configure("dev")
    captured = {}
    real_run = program.run
    monkeypatch.setattr(program, "run", lambda: captured.setdefault("outputs", real_run()))
    runpy.run_path(str(ROOT / "infra"), run_name="__main__")
    run = harness.Run(captured["outputs"], mocks)

    def check(outputs):
        assert CONTAINER in run.types()
        assert outputs["url"] == "http://localhost:8000"

    return run.settled(check)


@pytest.mark.parametrize("stack", ["dev", "prod"])
@pulumi.runtime.test
def test_preview_declares_the_same_resources(stack):
    """`pulumi preview` (a dry run: unknown ids and digests) declares the stack without errors."""
    overrides = harness.prod_overrides() if stack == "prod" else {}
    mocks = harness.configure(stack, preview=True, **overrides)
    from infra import program

    run = harness.Run(program.run(), mocks)

    def check(_):
        expected = WEB_SERVICE if stack == "prod" else CONTAINER
        assert expected in run.types()

    return run.settled(check)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_stack_files_only_use_known_settings(stack):
    values, _ = harness.stack_values(stack)
    assert set(values) <= set(config.KEYS_BY_NAME), set(values) - set(config.KEYS_BY_NAME)
