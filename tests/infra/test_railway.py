"""railway.json is what the generator makes of infra/examples/Pulumi.railway.yaml, parses as Railway's
config-as-code, says what the spec says; the `railway` target refuses what Railway cannot do, and
`pulumi up` on a railway stack stops with the way forward."""

from __future__ import annotations

import json
import subprocess
import sys

import pulumi
import pytest
import yaml

from infra import railway_config
from infra.config import HEALTH_PATH, ConfigError, load_stack_file
from infra.spec import STOP_MARGIN_SECONDS, build_spec
from tests.infra import harness
from tests.infra.harness import ROOT

SCRIPT = [sys.executable, str(ROOT / "scripts" / "railway_config.py")]
# Railway's config-as-code fields (docs.railway.com/config-as-code/reference, railway.com/railway.schema.json).
BUILD_FIELDS = {"builder", "watchPatterns", "buildCommand", "dockerfilePath", "railpackVersion"}
DEPLOY_FIELDS = {
    "startCommand", "preDeployCommand", "numReplicas", "multiRegionConfig", "healthcheckPath",
    "healthcheckTimeout", "restartPolicyType", "restartPolicyMaxRetries", "cronSchedule", "sleepApplication",
    "overlapSeconds", "drainingSeconds", "region", "runtime", "requiredMountPath",
}  # fmt: skip


def example_cfg(**changes):
    document = yaml.safe_load(harness.example_file("railway").read_text())
    for key, value in changes.items():
        if value is None:
            document["config"].pop(f"reranker:{key}", None)
        else:
            document["config"][f"reranker:{key}"] = value
    return document


def test_railway_json_is_up_to_date_with_the_example_stack():
    assert (ROOT / "railway.json").read_text() == railway_config.generate(), (
        "railway.json is stale: run python scripts/railway_config.py"
    )


def test_railway_json_parses_and_uses_only_railway_fields():
    document = json.loads((ROOT / "railway.json").read_text())
    assert document["$schema"] == "https://railway.com/railway.schema.json"
    assert set(document) == {"$schema", "build", "deploy"}
    assert set(document["build"]) <= BUILD_FIELDS and set(document["deploy"]) <= DEPLOY_FIELDS
    assert all(isinstance(v, int) for k, v in document["deploy"].items() if k.endswith("Seconds"))  # not "10"


def test_railway_json_says_what_the_spec_says():
    cfg = load_stack_file("railway", harness.example_file("railway"), deploy=False)
    spec = build_spec(cfg)
    document = json.loads((ROOT / "railway.json").read_text())
    assert document["build"]["builder"] == "DOCKERFILE"
    assert (ROOT / document["build"]["dockerfilePath"]).resolve() == spec.image.dockerfile
    deploy = document["deploy"]
    assert deploy["healthcheckPath"] == HEALTH_PATH == spec.health.path
    # Railway waits that long for a new deployment's first 200: the whole start period and the retries.
    assert (
        deploy["healthcheckTimeout"]
        >= spec.health.start_period_seconds + spec.health.retries * spec.health.interval_seconds
    )
    assert deploy["numReplicas"] == 1 and deploy["sleepApplication"] is False
    assert deploy["restartPolicyType"] == "ON_FAILURE" and deploy["restartPolicyMaxRetries"] == 10
    assert deploy["drainingSeconds"] == spec.shutdown_grace_seconds + STOP_MARGIN_SECONDS
    # Source changes redeploy; infra and docs changes do not.
    assert (
        "service/**" in document["build"]["watchPatterns"]
        and "Dockerfile" in document["build"]["watchPatterns"]
    )


def test_the_generated_file_follows_the_stack_settings(tmp_path):
    stack = tmp_path / "Pulumi.rw.yaml"
    stack.write_text(yaml.safe_dump(example_cfg(
        minInstances=3, maxInstances=3, railwayRegion="europe-west4-drams3a", shutdownGraceSeconds=60,
        startPeriodSeconds=300, railwayRestartPolicy="ALWAYS", railwayRestartMaxRetries=None,
    )))  # fmt: skip
    deploy = json.loads(railway_config.generate(stack))["deploy"]
    assert (
        deploy["multiRegionConfig"] == {"europe-west4-drams3a": {"numReplicas": 3}}
        and "numReplicas" not in deploy
    )
    assert deploy["drainingSeconds"] == 65 and deploy["healthcheckTimeout"] >= 300
    assert deploy["restartPolicyType"] == "ALWAYS" and "restartPolicyMaxRetries" not in deploy


def test_min_instances_zero_is_railway_app_sleeping(tmp_path):
    stack = tmp_path / "Pulumi.rw.yaml"
    stack.write_text(yaml.safe_dump(example_cfg(minInstances=0, maxInstances=1)))
    deploy = json.loads(railway_config.generate(stack))["deploy"]
    assert deploy["sleepApplication"] is True and deploy["numReplicas"] == 1


def test_the_script_rewrites_checks_and_prints_the_variables(tmp_path):
    harness.check_generator_script(
        ROOT / "scripts" / "railway_config.py", railway_config.generate, tmp_path, "railway.json"
    )
    variables = subprocess.run([*SCRIPT, "--variables"], capture_output=True, text=True, check=True).stdout
    assert "--set ENVIRONMENT=production" in variables and "--set PORT=8000" in variables
    assert "--set 'RERANK_API_KEYS=<value>'" in variables  # a placeholder, never a value


REFUSED = {
    "autoscaling": (
        {"maxInstances": 3},
        [
            "reranker:maxInstances=3 above minInstances=1 asks for autoscaling",
            "pulumi config set maxInstances 1",
        ],
    ),
    "a CPU target": ({"maxInstances": None, "targetCpuPercent": 60}, ["reranker:targetCpuPercent"]),
    "requests in flight": ({"concurrency": 8}, ["reranker:concurrency cannot be honoured"]),
    "a plan too small for one worker": (
        {"railwayPlan": "free"},
        ["reranker:railwayPlan=free (512 MB) cannot hold 1 worker(s)", "pulumi config set railwayPlan hobby"],
    ),
    "more memory than the plan gives a replica": (
        {"memoryMb": 16384},
        ["reranker:railwayPlan=hobby has 8192 MB"],
    ),
    "a restart policy Railway does not have": (
        {"railwayRestartPolicy": "UNLESS_STOPPED"},
        ["reranker:railwayRestartPolicy="],
    ),
    "retries without ON_FAILURE": (
        {"railwayRestartPolicy": "NEVER"},
        ["reranker:railwayRestartMaxRetries applies to"],
    ),
    "an image flavour railway.json cannot select": (
        {"imageFlavour": "onnx", "memoryMb": None},
        ["reranker:imageFlavour=onnx"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_what_railway_cannot_do_is_refused_naming_the_key_and_the_fix(case, tmp_path):
    changes, expected = REFUSED[case]
    stack = tmp_path / "Pulumi.rw.yaml"
    stack.write_text(yaml.safe_dump(example_cfg(**changes)))
    with pytest.raises(ConfigError) as caught:
        railway_config.generate(stack)
    for text in expected:
        assert text in str(caught.value), str(caught.value)


def test_the_script_exits_2_with_the_problems_and_writes_nothing(tmp_path):
    stack = tmp_path / "Pulumi.rw.yaml"
    stack.write_text(yaml.safe_dump(example_cfg(maxInstances=3)))
    output = tmp_path / "railway.json"
    result = subprocess.run(
        [*SCRIPT, "--stack-file", str(stack), "--output", str(output)], capture_output=True, text=True
    )
    assert result.returncode == 2 and "reranker:maxInstances=3" in result.stderr and not output.exists()


def test_pulumi_up_on_a_railway_stack_stops_and_points_at_railway_json():
    from infra import program

    harness.configure_example("railway", secrets={"apiKeys": harness.FAKE_SECRETS["apiKeys"]})
    with pytest.raises(pulumi.RunError) as caught:
        program.run()
    message = str(caught.value)
    assert "no Pulumi provider" in message and "railway.json" in message
    assert "python scripts/railway_config.py --stack-file Pulumi.railway.yaml" in message


def test_the_readme_states_every_plan_with_its_memory_and_the_date():
    from infra.targets import railway

    readme = (ROOT / "README.md").read_text()
    for plan in railway.SIZES:
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{plan.name}` |")), None)
        assert row is not None, f"{plan.name} is missing from the README's Railway table"
        memory = f"{plan.memory_mb // 1024} GB" if plan.memory_mb >= 1024 else f"{plan.memory_mb} MB"
        assert memory in row and f"${plan.usd_per_month:g} / month" in row
    assert f"as recorded on {railway.PRICES_AS_OF}" in readme
    assert "health check runs at deploy time only" in readme and "autoscale horizontally" in readme
