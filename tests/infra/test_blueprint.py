"""render.yaml is what the generator makes of Pulumi.prod.yaml, and says what the prod program deploys."""

from __future__ import annotations

import subprocess
import sys

import pulumi
import yaml

from infra import blueprint
from infra.config import HEALTH_PATH
from infra.targets.render import PLANS_BY_NAME as RENDER_PLANS_BY_NAME
from tests.infra import harness
from tests.infra.harness import ROOT, plain


def test_render_yaml_is_up_to_date_with_the_prod_stack():
    assert (ROOT / "render.yaml").read_text() == blueprint.generate("prod"), (
        "render.yaml is stale: run python scripts/render_blueprint.py"
    )


@pulumi.runtime.test
def test_render_yaml_describes_the_same_service_as_the_prod_program():
    service = yaml.safe_load((ROOT / "render.yaml").read_text())["services"][0]
    run = harness.run_stack("prod", **harness.prod_overrides())

    def check(_):
        deployed = run.one("render:services:WebService").inputs
        details = deployed["serviceDetails"]
        assert service["type"] == "web" and service["runtime"] == "image" == details["runtime"]
        assert service["name"] == deployed["name"]
        assert service["plan"] == RENDER_PLANS_BY_NAME[details["plan"]].blueprint_name
        assert service["region"] == details["region"]
        assert service["numInstances"] == details["numInstances"]
        assert service["healthCheckPath"] == details["healthCheckPath"] == HEALTH_PATH
        assert service["maxShutdownDelaySeconds"] == details["maxShutdownDelaySeconds"]
        deployed_env = {item["key"]: item["value"] for item in plain(deployed["envVars"])}
        values = {item["key"]: item["value"] for item in service["envVars"] if "value" in item}
        prompted = {item["key"] for item in service["envVars"] if item.get("sync") is False}
        assert values == {k: v for k, v in deployed_env.items() if k not in prompted}
        assert prompted == {
            "LLM_API_KEY",
            "SUPABASE_ANON_KEY",
            "SUPABASE_SERVICE_ROLE_KEY",
            "SUPABASE_JWT_SECRET",
        }
        assert prompted <= set(deployed_env)
        assert service["image"]["creds"]["fromRegistryCreds"]["name"] == "ghcr-reranker"

    return run.settled(check)


def test_the_blueprint_never_holds_secret_values():
    text = (ROOT / "render.yaml").read_text()
    for item in yaml.safe_load(text)["services"][0]["envVars"]:
        if item["key"] in {
            "LLM_API_KEY",
            "SUPABASE_ANON_KEY",
            "SUPABASE_SERVICE_ROLE_KEY",
            "SUPABASE_JWT_SECRET",
        }:
            assert item == {"key": item["key"], "sync": False}


def test_the_script_rewrites_and_checks(tmp_path):
    target = tmp_path / "render.yaml"
    script = [sys.executable, str(ROOT / "scripts" / "render_blueprint.py"), "--output", str(target)]
    stale = subprocess.run([*script, "--check"], capture_output=True, text=True)
    assert stale.returncode == 1 and "out of date" in stale.stderr
    assert subprocess.run(script, capture_output=True).returncode == 0
    assert target.read_text() == blueprint.generate("prod")
    fresh = subprocess.run([*script, "--check"], capture_output=True, text=True)
    assert fresh.returncode == 0, fresh.stderr


def test_the_blueprint_follows_the_stack_settings(tmp_path):
    """A changed setting changes the Blueprint (the check above can fail)."""
    document = yaml.safe_load((ROOT / "Pulumi.prod.yaml").read_text())
    document["config"]["reranker:memoryMb"] = 4096
    document["config"]["reranker:renderRegion"] = "frankfurt"
    stack_file = tmp_path / "Pulumi.prod.yaml"
    stack_file.write_text(yaml.safe_dump(document))
    from infra.config import load_stack_file

    service = blueprint.blueprint(load_stack_file("prod", stack_file, deploy=False))["services"][0]
    assert (service["plan"], service["region"]) == ("pro", "frankfurt")
