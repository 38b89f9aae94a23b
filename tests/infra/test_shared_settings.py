"""The settings every target shares: the image flavour and its memory footprint, the scaling block, the
access settings of the hardening issue (API keys, JWT, anonymous access, public metrics) and the shutdown
grace, as the docker and render targets render them and refuse what they cannot honour."""

from __future__ import annotations

import pulumi
import pytest
import yaml

from infra import blueprint, config, sizing, targets
from infra.targets import render
from tests.infra import harness
from tests.infra.harness import FAKE_SECRETS, ROOT, plain
from tests.infra.test_program import CONTAINER, WEB_SERVICE, assert_no_secret_in_clear, env_of
from tests.infra.test_validation import refused

IMAGE = "docker:index/image:Image"


def prod(**set_):
    return harness.prod_overrides(**set_)


# ---- image flavour and memory ------------------------------------------------------------------------


def test_each_flavour_has_a_footprint_and_a_build_target():
    assert sizing.FLAVOURS == ("torch", "onnx")
    torch, onnx = sizing.footprint("torch"), sizing.footprint("onnx")
    assert (torch.worker_mb, torch.headroom_mb, torch.build_target, torch.measured) == (
        650,
        150,
        "runtime",
        True,
    )
    assert onnx.build_target == "runtime-onnx" and onnx.measured is True
    assert sizing.required_memory_mb(1, "onnx") <= render.PLANS_BY_NAME["starter"].memory_mb
    assert sizing.required_memory_mb(1, "torch") > render.PLANS_BY_NAME["starter"].memory_mb


@pulumi.runtime.test
def test_the_slim_flavour_with_one_worker_runs_on_render_starter():
    pushed = "ghcr.io/acme/reranker-onnx@sha256:" + "12" * 32
    run = harness.run_stack("prod", **prod(imageFlavour="onnx", memoryMb="", imageName=pushed))

    def check(outputs):
        assert run.one(WEB_SERVICE).inputs["serviceDetails"]["plan"] == "starter"
        assert outputs["renderPlan"] == "starter" and outputs["renderPlanListPriceUsdPerMonth"] == 7
        assert outputs["imageFlavour"] == "onnx"
        assert outputs["memoryMb"] == sizing.required_memory_mb(1, "onnx")

    return run.settled(check)


@pytest.mark.parametrize(
    ("flavour", "workers", "plan"),
    [("torch", 1, "standard"), ("onnx", 1, "starter"), ("onnx", 2, "standard")],
)
def test_the_render_plan_follows_the_flavours_footprint(flavour, workers, plan):
    raw = config.raw_from_stack_file("prod")
    values = {k: v for k, v in raw.values.items() if k != "memoryMb"}
    values.update(imageFlavour=flavour, workers=str(workers))
    cfg = config.parse(config.RawConfig("prod", values, raw.secret_keys, "test"), deploy=False)
    assert cfg.target_settings.plan.name == plan


def test_the_blueprint_follows_the_flavour(tmp_path):
    document = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    document["config"].pop("reranker:memoryMb")
    document["config"]["reranker:imageFlavour"] = "onnx"
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(document))
    text = blueprint.render_yaml(config.load_stack_file("prod", path, deploy=False))
    assert "docker build --target runtime-onnx ." in text
    assert yaml.safe_load(text)["services"][0]["plan"] == "starter"


@pulumi.runtime.test
def test_the_onnx_flavour_builds_its_dockerfile_stage(tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text((ROOT / "Dockerfile").read_text() + "\nFROM python AS runtime-onnx\n")
    run = harness.run_stack("dev", set={"imageFlavour": "onnx", "dockerfile": str(dockerfile)})

    def check(_):
        assert run.one(IMAGE).inputs["build"]["target"] == "runtime-onnx"
        assert run.one(IMAGE).inputs["build"]["dockerfile"] == str(dockerfile)

    return run.settled(check)


# ---- access, shutdown ------------------------------------------------------------------------------


@pulumi.runtime.test
def test_access_settings_reach_the_container_and_the_jwt_keys_only_as_secrets():
    run = harness.run_stack(
        "dev",
        set={
            "jwtAudience": "reranker-api",
            "metricsPublic": "true",
            "allowAnonymous": "false",
            "shutdownGraceSeconds": "20",
        },
        secrets={k: FAKE_SECRETS[k] for k in ("apiKeys", "supabaseJwtSecret", "supabaseJwtPublicKey")},
    )

    def check(_):
        container = run.one(CONTAINER)
        env = env_of(container)
        assert env["RERANK_API_KEYS"] == FAKE_SECRETS["apiKeys"]
        assert env["SUPABASE_JWT_SECRET"] == FAKE_SECRETS["supabaseJwtSecret"]
        assert env["SUPABASE_JWT_PUBLIC_KEY"] == FAKE_SECRETS["supabaseJwtPublicKey"]
        assert env["RERANK_JWT_AUDIENCE"] == "reranker-api"
        assert env["RERANK_METRICS_PUBLIC"] == "true" and env["RERANK_ALLOW_ANONYMOUS"] == "false"
        assert env["RERANK_SHUTDOWN_GRACE_S"] == "20"
        assert container.inputs["stopTimeout"] == 25 and container.inputs["destroyGraceSeconds"] == 25
        assert_no_secret_in_clear(run)

    return run.settled(check)


@pulumi.runtime.test
def test_the_docker_container_drops_every_capability_and_caps_processes():
    run = harness.run_stack("dev")

    def check(_):
        inputs = run.one(CONTAINER).inputs
        assert inputs["capabilities"] == {"drops": ["ALL"]}
        assert inputs["securityOpts"] == ["no-new-privileges:true"]
        assert inputs["stopSignal"] == "SIGTERM" and inputs["stopTimeout"] == 35
        # pulumi-docker has no PidsLimit: the program applies it to the container it just created.
        limit = run.one("command:local:Command").inputs
        assert limit["create"] == "docker update --pids-limit 512 reranker-dev"
        assert "environment" not in limit  # the local engine
        assert limit["triggers"] == [run.one(CONTAINER).name + "-id"]

    return run.settled(check)


@pulumi.runtime.test
def test_production_with_allow_anonymous_deploys_without_credentials():
    run = harness.run_stack(
        "dev", set={"environment": "production", "allowAnonymous": "true", "requiredSecrets": "[]"}
    )

    def check(_):
        env = env_of(run.one(CONTAINER))
        assert env["RERANK_ALLOW_ANONYMOUS"] == "true" and "RERANK_API_KEYS" not in env

    return run.settled(check)


@pulumi.runtime.test
def test_render_stops_with_the_grace_and_autoscales_on_cpu():
    run = harness.run_stack(
        "prod", **prod(shutdownGraceSeconds="60", minInstances="2", maxInstances="5", targetCpuPercent="65")
    )

    def check(_):
        details = run.one(WEB_SERVICE).inputs["serviceDetails"]
        assert details["maxShutdownDelaySeconds"] == 65
        assert details["numInstances"] == 2
        scaling = details["autoscaling"]
        assert (scaling["enabled"], scaling["min"], scaling["max"]) == (True, 2, 5)
        assert scaling["criteria"]["cpu"] == {"enabled": True, "percentage": 65}
        assert scaling["criteria"]["memory"]["enabled"] is False
        env = {i["key"]: i["value"] for i in plain(run.one(WEB_SERVICE).inputs["envVars"])}
        assert env["RERANK_SHUTDOWN_GRACE_S"] == "60"

    return run.settled(check)


def test_the_blueprint_carries_the_scaling_block(tmp_path):
    document = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    document["config"].update({"reranker:maxInstances": 3, "reranker:targetCpuPercent": 75})
    path = tmp_path / "Pulumi.prod.yaml"
    path.write_text(yaml.safe_dump(document))
    service = blueprint.blueprint(config.load_stack_file("prod", path, deploy=False))["services"][0]
    assert service["scaling"] == {"minInstances": 1, "maxInstances": 3, "targetCPUPercent": 75}


# ---- refusals ----------------------------------------------------------------------------------------

CASES = {
    "production without any authentication": (
        "dev",
        {"set": {"environment": "production", "requiredSecrets": "[]"}},
        [
            "reranker:apiKeys is not set, nor supabaseJwtSecret or supabaseJwtPublicKey: environment=production "
            "refuses to deploy a service anyone can call; pulumi config set --secret apiKeys <key1>,<key2>",
            "pulumi config set allowAnonymous true",
        ],
    ),
    "API keys in plain text": (
        "dev",
        {"set": {"apiKeys": "key-in-the-clear"}},
        [
            "reranker:apiKeys is stored in plain text in Pulumi.dev.yaml; store it encrypted: "
            "pulumi config set --secret apiKeys <value>"
        ],
    ),
    "the JWT public key in plain text": (
        "dev",
        {"set": {"supabaseJwtPublicKey": "-----BEGIN PUBLIC KEY-----"}},
        ["reranker:supabaseJwtPublicKey is stored in plain text"],
    ),
    "API keys that hold no key": (
        "dev",
        {"secrets": {"apiKeys": " , "}},
        ["reranker:apiKeys holds no key; pulumi config set --secret apiKeys <key1>,<key2>"],
    ),
    "a typed variable through env": (
        "dev",
        {"set": {"env": '{"RERANK_SHUTDOWN_GRACE_S": "9"}'}},
        ["reranker:env.RERANK_SHUTDOWN_GRACE_S is set by the typed key shutdownGraceSeconds"],
    ),
    "a maximum below the minimum": (
        "prod",
        prod(minInstances="3", maxInstances="2"),
        ["reranker:maxInstances=2 is below minInstances=3; pulumi config set maxInstances 3"],
    ),
    "a CPU target with nothing to scale": (
        "prod",
        prod(targetCpuPercent="70"),
        ["reranker:targetCpuPercent=70 has nothing to scale: maxInstances=1 is not above minInstances=1"],
    ),
    "more than one docker container": (
        "dev",
        {"set": {"minInstances": "2"}},
        [
            "reranker:minInstances cannot be honoured: the docker target runs exactly one container on one engine"
        ],
    ),
    "a concurrency docker cannot route by": (
        "dev",
        {"set": {"concurrency": "4"}},
        ["reranker:concurrency cannot be honoured: a single Docker container has no autoscaler or router"],
    ),
    "a concurrency Render cannot route by": (
        "prod",
        prod(concurrency="4"),
        [
            "reranker:concurrency cannot be honoured: Render routes requests to instances without a per-instance"
        ],
    ),
    "Render scaled to zero": (
        "prod",
        prod(minInstances="0"),
        ["reranker:minInstances=0: Render cannot scale a web service to zero"],
    ),
    "a shutdown grace past Render's limit": (
        "prod",
        prod(shutdownGraceSeconds="400"),
        [
            "reranker:shutdownGraceSeconds=400: Render waits at most 300 s after SIGTERM",
            "pulumi config set shutdownGraceSeconds 295",
        ],
    ),
    "torch on Render starter": (
        "prod",
        prod(renderPlan="starter", memoryMb=""),
        [
            "reranker:renderPlan=starter (512 MB) cannot hold 1 worker(s) x 650 MB + 150 MB headroom = 800 MB; "
            "use standard (pulumi config set renderPlan standard)"
        ],
    ),
    "too little memory for torch, enough for onnx": (
        "dev",
        {"set": {"memoryMb": "600"}},
        [
            "reranker:memoryMb=600 is too small for 1 worker x 650 MB + 150 MB headroom; set memoryMb >= 800",
            "(the onnx image flavour fits: pulumi config set imageFlavour onnx)",
        ],
    ),
    "too little memory for onnx": (
        "dev",
        {
            "set": {
                "memoryMb": "400",
                "imageFlavour": "onnx",
                "buildImage": "false",
                "imageName": "ghcr.io/a/r:1",
            }
        },
        ["reranker:memoryMb=400 is too small for 1 worker x 300 MB + 150 MB headroom; set memoryMb >= 450"],
    ),
    "a flavour the Dockerfile cannot build": (
        "dev",
        {"set": {"imageFlavour": "onnx", "dockerfile": "tests/infra/fixtures/Dockerfile.torch-only"}},
        [
            "reranker:imageFlavour=onnx builds the Dockerfile stage 'runtime-onnx', which Dockerfile.torch-only "
            "does not define"
        ],
    ),
    "an unknown flavour": (
        "dev",
        {"set": {"imageFlavour": "tensorrt"}},
        ["reranker:imageFlavour='tensorrt' is not one of: torch, onnx"],
    ),
    "a retired key": (
        "dev",
        {"set": {"renderInstances": "2"}},
        ["reranker:renderInstances was retired; use minInstances (and maxInstances for autoscaling)"],
    ),
    "an unknown target": (
        "dev",
        {"set": {"target": "heroku"}},
        [f"reranker:target='heroku' is not one of: {', '.join(targets.names())}"],
    ),
}


@pytest.mark.parametrize("case", list(CASES))
@pulumi.runtime.test
def test_settings_a_target_cannot_honour_are_refused(case):
    stack, overrides, expected = CASES[case]
    message = refused(stack, **overrides)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


@pulumi.runtime.test
def test_shared_and_target_problems_are_reported_together():
    message = refused("prod", **prod(memoryMb="300", renderRegion="mars", concurrency="2", logLevel="loud"))
    assert message.startswith("4 problem(s) in Pulumi.prod.yaml:")
    for fragment in (
        "reranker:memoryMb=300",
        "reranker:renderRegion='mars'",
        "reranker:concurrency",
        "reranker:logLevel",
    ):
        assert fragment in message
