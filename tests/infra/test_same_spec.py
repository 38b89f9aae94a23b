"""One stack's settings, four platforms (kubernetes, digitalocean, railway.json, fly.toml): each rendering
carries the same image, variable names, health path, port and memory, because each renders the same
DeploymentSpec."""

from __future__ import annotations

import json

import pulumi
import pytest
import yaml

from infra import config, fly_config, railway_config
from infra.config import HEALTH_PATH
from infra.spec import build_spec
from infra.targets.digitalocean import SIZES_BY_SLUG
from tests.infra import harness
from tests.infra.harness import FAKE_SECRETS, plain

IMAGE = "registry.digitalocean.com/acme/reranker:1.4.0"
BASE = {
    "environment": "production",
    "workers": 1,
    "cpus": 1,
    "memoryMb": 2048,
    "port": 8080,
    "startPeriodSeconds": 90,
    "shutdownGraceSeconds": 20,
    "minInstances": 1,
    "maxInstances": 1,
    "imageName": IMAGE,
    "buildImage": False,
    "logLevel": "warning",
    "requiredSecrets": ["apiKeys"],
    "env": {"RERANK_MAX_DOCUMENTS": "500"},
}
SECRETS = {"apiKeys": FAKE_SECRETS["apiKeys"]}


def stack_file(tmp_path, target: str):
    path = tmp_path / f"Pulumi.same-{target}.yaml"
    path.write_text(
        yaml.safe_dump({"config": {f"reranker:{k}": v for k, v in {**BASE, "target": target}.items()}})
    )
    return path


def parsed(tmp_path, target: str) -> config.StackConfig:
    values, secret_keys = harness.stack_values(target, stack_file(tmp_path, target))
    values.update(SECRETS)
    raw = config.RawConfig(f"same-{target}", values, frozenset(secret_keys | set(SECRETS)), "test")
    return config.parse(raw)


def contract(image, env_names, health_path, port, memory_mb) -> dict:
    return {
        "image": image,
        "env": sorted(env_names),
        "health": health_path,
        "port": port,
        "memory": memory_mb,
    }


EXPECTED_ENV = sorted(
    ["PORT", "WEB_CONCURRENCY", "ENVIRONMENT", "RERANK_DEVICE", "RERANK_MAX_LENGTH", "LOG_LEVEL",
     "RERANK_SHUTDOWN_GRACE_S", "RERANK_MAX_DOCUMENTS", "RERANK_API_KEYS"]
)  # fmt: skip
EXPECTED = contract(IMAGE, EXPECTED_ENV, HEALTH_PATH, 8080, 2048)


@pytest.mark.parametrize("target", ["railway", "fly", "kubernetes", "digitalocean"])
def test_every_target_gets_the_same_spec(tmp_path, target):
    spec = build_spec(parsed(tmp_path, target))
    assert contract(spec.image.name, spec.env_names, spec.health.path, spec.port, spec.memory_mb) == EXPECTED


def test_railway_json_renders_it(tmp_path):
    cfg = parsed(tmp_path, "railway")
    document = railway_config.document(cfg)
    variables = railway_config.variables(cfg)
    names = sorted(n for n in EXPECTED_ENV if f"--set {n}=" in variables or f"--set '{n}=" in variables)
    # Railway builds the Dockerfile itself (no image reference), and the plan holds the memory.
    assert cfg.target_settings.plan.memory_mb >= 2048
    assert names == EXPECTED_ENV
    assert document["deploy"]["healthcheckPath"] == HEALTH_PATH
    assert "--set PORT=8080" in variables


def test_fly_toml_renders_it(tmp_path):
    cfg = parsed(tmp_path, "fly")
    document = fly_config.document(cfg)
    secrets = fly_config.variables(cfg)
    env_names = [*document["env"], *(n for n in EXPECTED_ENV if f"'{n}=<value>'" in secrets)]
    got = contract(
        document["build"]["image"],
        env_names,
        document["http_service"]["checks"][0]["path"],
        document["http_service"]["internal_port"],
        document["vm"][0]["memory_mb"],
    )
    assert got == EXPECTED


@pytest.mark.parametrize("target", ["kubernetes", "digitalocean"])
@pulumi.runtime.test
def test_the_pulumi_targets_declare_it(tmp_path, target):
    run = harness.run_stack(f"same-{target}", stack_file=stack_file(tmp_path, target), secrets=SECRETS)

    def check(outputs):
        if target == "kubernetes":
            pod = plain(run.one("kubernetes:apps/v1:Deployment").inputs)["spec"]["template"]["spec"]
            (container,) = pod["containers"]
            got = contract(
                container["image"],
                [item["name"] for item in container["env"]],
                container["readinessProbe"]["httpGet"]["path"],
                int(container["ports"][0]["containerPort"]),
                int(container["resources"]["limits"]["memory"].removesuffix("Mi")),
            )
        else:
            (service,) = plain(run.one("digitalocean:index/app:App").inputs)["spec"]["services"]
            image = service["image"]
            got = contract(
                f"registry.digitalocean.com/acme/{image['repository']}:{image['tag']}",
                [item["key"] for item in service["envs"]],
                service["healthCheck"]["httpPath"],
                int(service["httpPort"]),
                SIZES_BY_SLUG[service["instanceSizeSlug"]].memory_mb,
            )
        assert got == EXPECTED
        assert sorted(outputs["envNames"]) == EXPECTED_ENV
        assert json.dumps(outputs, default=str).count(FAKE_SECRETS["apiKeys"]) == 0

    return run.settled(check)
