"""The target registry (infra/targets/): every module keeps the plug-in interface of CONTRACTS.md, the shared
code names no platform, and every target renders the SAME deployment spec: one stack, deployed to each
registered target, gives the same image build, env names, secrets, health path, port and memory."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pulumi
import pytest
import yaml

from infra import config, targets
from infra.spec import build_spec
from tests.infra import harness
from tests.infra.harness import FAKE_SECRETS, ROOT, plain
from tests.infra.test_program import assert_no_secret_in_clear

NAMES = targets.names()


def stack_for(target: str) -> str:
    """The real or example stack whose target is `target` (each target ships one)."""
    for path in [*sorted(ROOT.glob("Pulumi.*.yaml")), *sorted(harness.EXAMPLES.glob("Pulumi.*.yaml"))]:
        document = yaml.safe_load(path.read_text()) or {}
        declared = (document.get("config") or {}).get(f"{config.PROJECT}:target", targets.DEFAULT_TARGET)
        if declared == target and path.name != "Pulumi.yaml":
            return path.name[len("Pulumi.") : -len(".yaml")]
    raise AssertionError(f"target {target} has no stack file (add infra/examples/Pulumi.{target}.yaml)")


def test_the_registry_finds_every_target_module():
    assert {"docker", "render", "cloudrun", "ecs"} <= set(NAMES)
    assert targets.TARGETS["cloudrun"] is targets.get_target("cloudrun")
    with pytest.raises(KeyError, match="no target 'heroku'"):
        targets.get_target("heroku")


@pytest.mark.parametrize("name", NAMES)
def test_each_target_module_keeps_the_plug_in_interface(name):
    module = targets.get_target(name)
    assert module.NAME == name
    assert callable(module.parse) and callable(module.deploy)
    assert isinstance(module.KEYS, tuple) and all(isinstance(k, config.Key) for k in module.KEYS)
    assert hasattr(module, "SIZES")
    common = {k.name for k in config.COMMON_KEYS}
    assert not common & {k.name for k in module.KEYS}, "a target may not redeclare a shared key"


def test_keys_several_targets_declare_mean_the_same_everywhere():
    seen: dict[str, config.Key] = {}
    for name in NAMES:
        for key in targets.get_target(name).KEYS:
            assert seen.setdefault(key.name, key) == key, f"{key.name} differs between targets"


@pytest.mark.parametrize("module", ["program.py", "config.py", "spec.py", "sizing.py"])
def test_the_shared_code_names_no_platform(module):
    source = (ROOT / "infra" / module).read_text()
    code = re.sub(r'""".*?"""|#[^\n]*', "", source, flags=re.DOTALL)  # docstrings and comments may
    for name in NAMES:
        if name == targets.DEFAULT_TARGET and module != "program.py":
            continue  # "docker" is also the engine's name (Dockerfile, docker.io)
        assert not re.search(rf'["\']{name}["\']', code), f"infra/{module} names the platform {name!r}"


@pytest.mark.parametrize("name", NAMES)
def test_each_target_has_a_stack_the_mock_tests_run(name):
    assert config.load_stack_file(stack_for(name), deploy=False).target == name


# ---- one stack, every target ---------------------------------------------------------------------------

SHARED = {
    "environment": "production",
    "workers": "2",
    "memoryMb": "4096",
    "cpus": "",
    "port": "8080",
    "minInstances": "1",
    "maxInstances": "1",
    "targetCpuPercent": "",
    "concurrency": "",
    "shutdownGraceSeconds": "5",
    "startPeriodSeconds": "90",
    "imageFlavour": "torch",
    "buildImage": "true",
    "jwtAudience": "reranker-api",
    "metricsPublic": "true",
    "env": '{"RERANK_MAX_DOCUMENTS": "500"}',
    "requiredSecrets": '["apiKeys"]',
}
SHARED_SECRETS = {"apiKeys": FAKE_SECRETS["apiKeys"], "supabaseJwtSecret": FAKE_SECRETS["supabaseJwtSecret"]}
# What each target needs beyond the shared settings to deploy at all (its required keys, a pushable image).
REQUIRED = {
    "docker": {},
    "render": {"renderOwnerId": "tea-cmockowner000000000", "imageName": "ghcr.io/acme/reranker:shared"},
    "cloudrun": {"gcpProject": "acme-rerank"},
    "ecs": {},
    "kubernetes": {"imageName": "ghcr.io/acme/reranker:shared"},
    "digitalocean": {"imageName": "registry.digitalocean.com/acme/reranker:shared"},
    "railway": {},
    "fly": {},
}


def _env_docker(r):
    (c,) = r.of_type("docker:index/container:Container")
    envs = dict(e.split("=", 1) for e in plain(c.inputs["envs"]))
    secret = {k for k, v in envs.items() if v in SHARED_SECRETS.values()}  # (in clear nowhere: checked below)
    health = c.inputs["healthcheck"]["tests"][1]
    port = c.inputs["ports"][0]["internal"]
    return set(envs), secret, health, port, c.inputs["memory"]


def _env_render(r):
    (s,) = r.of_type("render:services:WebService")
    env = {i["key"]: i["value"] for i in plain(s.inputs["envVars"])}
    names = set(env)
    secret = {k for k, v in env.items() if v in SHARED_SECRETS.values()}  # (in clear nowhere: checked below)
    from infra.targets.render import PLANS_BY_NAME

    details = s.inputs["serviceDetails"]
    return (
        names,
        secret,
        details["healthCheckPath"],
        int(env["PORT"]),
        PLANS_BY_NAME[details["plan"]].memory_mb,
    )


def _env_cloudrun(r):
    (s,) = r.of_type("gcp:cloudrunv2/service:Service")
    (c,) = s.inputs["template"]["containers"]
    names = {e["name"] for e in c["envs"]} | {"PORT"}  # Cloud Run sets PORT from the container port
    secret = {e["name"] for e in c["envs"] if "valueSource" in e}
    assert c["startupProbe"]["httpGet"]["port"] == c["ports"]["containerPort"]
    memory = int(c["resources"]["limits"]["memory"].removesuffix("Mi"))
    return names, secret, c["startupProbe"]["httpGet"]["path"], c["ports"]["containerPort"], memory


def _env_ecs(r):
    (task,) = r.of_type("aws:ecs/taskDefinition:TaskDefinition")
    (c,) = json.loads(plain(task.inputs["containerDefinitions"]))
    names = {e["name"] for e in c["environment"]} | {e["name"] for e in c["secrets"]}
    secret = {e["name"] for e in c["secrets"]}
    (group,) = r.of_type("aws:lb/targetGroup:TargetGroup")
    assert group.inputs["port"] == c["portMappings"][0]["containerPort"]
    return (
        names,
        secret,
        group.inputs["healthCheck"]["path"],
        c["portMappings"][0]["containerPort"],
        int(task.inputs["memory"]),
    )


def _env_kubernetes(r):
    (deployment,) = r.of_type("kubernetes:apps/v1:Deployment")
    (c,) = plain(deployment.inputs["spec"])["template"]["spec"]["containers"]
    names = {e["name"] for e in c["env"]}
    secret = {e["name"] for e in c["env"] if "secretKeyRef" in e.get("valueFrom", {})}
    assert c["readinessProbe"]["httpGet"]["port"] == c["ports"][0]["name"] == "http"
    memory = int(c["resources"]["limits"]["memory"].removesuffix("Mi"))
    return names, secret, c["readinessProbe"]["httpGet"]["path"], int(c["ports"][0]["containerPort"]), memory


def _env_digitalocean(r):
    from infra.targets.digitalocean import SIZES_BY_SLUG

    (app,) = r.of_type("digitalocean:index/app:App")
    (service,) = plain(app.inputs["spec"])["services"]
    names = {e["key"] for e in service["envs"]}
    secret = {e["key"] for e in service["envs"] if e["type"] == "SECRET"}
    assert service["healthCheck"]["port"] == service["httpPort"]
    memory = SIZES_BY_SLUG[service["instanceSizeSlug"]].memory_mb
    return names, secret, service["healthCheck"]["httpPath"], int(service["httpPort"]), memory


# How to read the rendered container contract out of each target's resources. A new target joins the
# test by itself (it is in the registry) and fails until its reader is added here.
READERS = {
    "docker": _env_docker,
    "render": _env_render,
    "cloudrun": _env_cloudrun,
    "ecs": _env_ecs,
    "kubernetes": _env_kubernetes,
    "digitalocean": _env_digitalocean,
}


def _file_railway(cfg):
    """railway.json holds no variables: `--variables` prints the commands, secrets as placeholders."""
    from infra import railway_config

    document, variables = railway_config.document(cfg), railway_config.variables(cfg)
    names = set(re.findall(r"--set '?([A-Z][A-Z0-9_]*)=", variables))
    secret = set(re.findall(r"--set '([A-Z][A-Z0-9_]*)=<value>'", variables))
    port = int(re.search(r"--set PORT=(\d+)", variables).group(1))
    memory = cfg.memory_mb  # no limit in railway.json: the plan's per-replica memory must hold it
    assert cfg.target_settings.plan.memory_mb >= memory
    build = (ROOT, ROOT / document["build"]["dockerfilePath"], "runtime")  # Railway builds the last stage
    return names, secret, document["deploy"]["healthcheckPath"], port, memory, build


def _file_fly(cfg):
    from infra import fly_config

    document, commands = fly_config.document(cfg), fly_config.variables(cfg)
    secret = set(re.findall(r"'([A-Z][A-Z0-9_]*)=<value>'", commands))
    http = document["http_service"]
    assert int(document["env"]["PORT"]) == http["internal_port"]
    build = (ROOT, ROOT / document["build"]["dockerfile"], document["build"]["build-target"])
    memory = document["vm"][0]["memory_mb"]
    return set(document["env"]) | secret, secret, http["checks"][0]["path"], http["internal_port"], memory, build


# Targets deployed from a config-as-code file instead of `pulumi up` (module CONFIG_FILE): how to read the
# same contract out of the rendered file.
FILE_READERS = {"railway": _file_railway, "fly": _file_fly}


def _build_of(r):
    images = r.of_type("docker:index/image:Image")
    assert len(images) == 1, "every target builds the image once"
    build = images[0].inputs["build"]
    return Path(build["context"]), Path(build["dockerfile"]), build["target"], build.get("args")


PULUMI_TARGETS = [name for name in NAMES if not hasattr(targets.get_target(name), "CONFIG_FILE")]
FILE_TARGETS = [name for name in NAMES if name not in PULUMI_TARGETS]


def _shared_cfg(name: str) -> config.StackConfig:
    stack = stack_for(name)
    values, _ = harness.stack_values(stack)
    drop = {"renderPlan", "railwayRestartMaxRetries", "flyVmSize"}
    raw = {k: v for k, v in values.items() if k not in drop} | SHARED | REQUIRED.get(name, {}) | SHARED_SECRETS
    return config.parse(config.RawConfig(stack, raw, frozenset(SHARED_SECRETS), "test"))


@pytest.mark.parametrize("name", FILE_TARGETS)
def test_one_stack_renders_the_same_container_contract_in_every_config_file(name):
    assert name in FILE_READERS, f"target {name}: add its reader to FILE_READERS in {Path(__file__).name}"
    cfg = _shared_cfg(name)
    spec = build_spec(cfg)
    names, secret, health, port, memory, build = FILE_READERS[name](cfg)
    assert names == set(spec.env_names), f"{name}: env names differ from the spec's"
    assert secret == set(spec.secret_env) and {"RERANK_API_KEYS", "SUPABASE_JWT_SECRET"} <= secret
    assert "/api/health/" in health and port == 8080
    assert memory >= 4096, f"{name}: memory {memory} MB, the spec asks for {spec.memory_mb}"
    assert build == (ROOT, ROOT / "Dockerfile", "runtime")
    text = json.dumps([FILE_READERS[name](cfg)[:5]], default=sorted)
    assert not any(value in text for value in SHARED_SECRETS.values())


@pytest.mark.parametrize("name", FILE_TARGETS)
def test_pulumi_up_on_a_config_file_target_stops_and_names_its_file(name):
    from infra import program

    harness.configure(stack_for(name), set={**SHARED, **REQUIRED.get(name, {})}, secrets=SHARED_SECRETS)
    with pytest.raises(pulumi.RunError, match=re.escape(targets.get_target(name).CONFIG_FILE)):
        program.run()


@pytest.mark.parametrize("name", PULUMI_TARGETS)
@pulumi.runtime.test
def test_one_stack_renders_the_same_container_contract_on_every_target(name):
    assert name in READERS, f"target {name}: add its reader to READERS in {Path(__file__).name}"
    stack = stack_for(name)
    values, _ = harness.stack_values(stack)
    # Keys of the stack's own that the shared settings replace (its scaling block, its sizing).
    drop = tuple(k for k in values if k in {"renderPlan"})
    r = harness.run_stack(
        stack, set={**SHARED, **REQUIRED.get(name, {})}, secrets=SHARED_SECRETS, remove=drop
    )
    cfg = config.parse(
        config.RawConfig(
            stack,
            {
                **{k: v for k, v in values.items() if k not in drop},
                **SHARED,
                **REQUIRED.get(name, {}),
                **SHARED_SECRETS,
            },
            frozenset(SHARED_SECRETS),
            "test",
        )
    )
    spec = build_spec(cfg)

    def check(outputs):
        names, secret, health, port, memory = READERS[name](r)
        assert_no_secret_in_clear(r)
        assert names == set(spec.env_names), f"{name}: env names differ from the spec's"
        assert {"RERANK_API_KEYS", "SUPABASE_JWT_SECRET"} <= secret, f"{name}: secrets not marked secret"
        assert secret == set(spec.secret_env), f"{name}: {secret ^ set(spec.secret_env)}"
        assert "/api/health/" in health
        assert port == 8080
        assert memory == 4096, f"{name}: memory {memory} MB, the spec asks for {spec.memory_mb}"
        context, dockerfile, stage, args = _build_of(r)
        assert (context, dockerfile, stage) == (ROOT, ROOT / "Dockerfile", "runtime")
        assert not args  # the stack sets no build arguments: no target adds its own
        assert outputs["healthUrl"] == outputs["url"] + "/api/health/"
        assert outputs["memoryMb"] == 4096 and outputs["workers"] == 2 and outputs["target"] == name
        assert sorted(outputs["envNames"]) == spec.env_names
        assert {
            "RERANK_JWT_AUDIENCE",
            "RERANK_METRICS_PUBLIC",
            "RERANK_SHUTDOWN_GRACE_S",
            "RERANK_MAX_DOCUMENTS",
        } <= set(spec.env_names)

    return r.settled(check)


@pytest.mark.parametrize("path", sorted(harness.EXAMPLES.glob("Pulumi.*.yaml")), ids=lambda p: p.name)
def test_example_stacks_use_only_their_targets_settings(path):
    cfg = config.load_stack_file(path.name[len("Pulumi.") : -len(".yaml")], path, deploy=False)
    assert cfg.target in NAMES


@pytest.mark.parametrize("name", PULUMI_TARGETS)
@pulumi.runtime.test
def test_preview_declares_every_target_with_unknown_values(name):
    """`pulumi preview` (a dry run: ids, digests and URLs unknown) declares each target without errors."""
    stack = stack_for(name)
    overrides = {"set": {**SHARED, **REQUIRED.get(name, {})}, "secrets": SHARED_SECRETS}
    mocks = harness.configure(stack, preview=True, **overrides)
    from infra import program

    r = harness.Run(program.run(), mocks)

    def check(_):
        assert len(r.mocks.created) >= 2, r.types()
        assert any(t.startswith("reranker:targets:") for t in r.types()), r.types()

    return r.settled(check)


def test_platform_names_are_valid_dns_labels_whatever_the_stack_is_called():
    from infra.targets._base import dns_label

    assert dns_label("reranker-Team_A.prod") == "reranker-team-a-prod"
    assert dns_label("reranker-" + "x" * 80, 49) == "reranker-" + "x" * 40
    assert dns_label("2024") == "r-2024"
