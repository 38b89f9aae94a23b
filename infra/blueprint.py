"""render.yaml: the Render Blueprint for users who deploy from Render's dashboard.

Generated from the prod stack's settings through the same spec the Pulumi program deploys, so the
two cannot drift (tests/infra/test_blueprint.py fails when render.yaml is stale):

    python scripts/render_blueprint.py           # rewrite render.yaml
    python scripts/render_blueprint.py --check   # exit 1 if render.yaml is out of date
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from infra.config import (
    COMMON_KEYS_BY_NAME,
    HEALTH_PATH,
    REPO_ROOT,
    ConfigError,
    StackConfig,
    load_stack_file,
)
from infra.config_as_code import write_or_check
from infra.spec import build_spec
from infra.targets import render

BLUEPRINT_STACK = "prod"
BLUEPRINT_PATH = REPO_ROOT / "render.yaml"
HEADER = """\
# Render Blueprint for the reranker (https://render.com/docs/blueprint-spec).
# GENERATED from Pulumi.{stack}.yaml by `python scripts/render_blueprint.py`: do not edit by hand,
# change the stack settings and regenerate (a test fails when this file is stale).
# Before applying it: point image.url at your pushed image (image flavour {flavour}: built with
# `docker build --target {stage} .`) and create the registry credential named below in Render
# (Workspace settings > Registry credentials). Variables marked `sync: false` are secrets: Render's
# dashboard asks for their values.
"""


def blueprint(cfg: StackConfig) -> dict[str, Any]:
    settings = cfg.target_settings
    if cfg.target != render.NAME or settings is None or settings.plan is None:
        raise ConfigError([f"reranker:target={cfg.target}: the Blueprint is generated from a render stack"])
    spec = build_spec(cfg)
    secret_names = sorted(
        set(spec.secret_env) | {COMMON_KEYS_BY_NAME[key].env or key for key in cfg.required_secrets}
    )
    image: dict[str, Any] = {"url": cfg.image_name}
    if settings.registry_credential_name:
        image["creds"] = {"fromRegistryCreds": {"name": settings.registry_credential_name}}
    service: dict[str, Any] = {
        "type": "web",
        "name": settings.service_name,
        "runtime": "image",
        "image": image,
        "plan": settings.plan.blueprint_name,
        "region": settings.region,
        "numInstances": settings.instances,
    }
    if settings.autoscaling:
        service["scaling"] = {
            "minInstances": settings.instances,
            "maxInstances": settings.max_instances,
            "targetCPUPercent": settings.target_cpu_percent,
        }
    service.update(
        {
            "healthCheckPath": HEALTH_PATH,
            "maxShutdownDelaySeconds": spec.stop_grace_seconds,
            # No autoDeployTrigger: Render ignores it for services that deploy a prebuilt image.
            "envVars": [{"key": name, "value": value} for name, value in spec.env.items()]
            + [{"key": name, "sync": False} for name in secret_names],
        }
    )
    return {"services": [service]}


def render_yaml(cfg: StackConfig) -> str:
    body = yaml.safe_dump(blueprint(cfg), sort_keys=False, default_flow_style=False)
    return HEADER.format(stack=cfg.stack, flavour=cfg.image_flavour, stage=cfg.build_target) + body


def generate(stack: str = BLUEPRINT_STACK) -> str:
    """render.yaml's text for `stack` (validated as for a deploy, minus what the dashboard supplies)."""
    return render_yaml(load_stack_file(stack, deploy=False))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write render.yaml from the prod stack's settings.")
    parser.add_argument("--check", action="store_true", help="exit 1 if render.yaml is out of date")
    parser.add_argument("--stack", default=BLUEPRINT_STACK)
    parser.add_argument("--output", type=Path, default=BLUEPRINT_PATH)
    args = parser.parse_args(argv)
    try:
        text = generate(args.stack)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return write_or_check(args.output, text, check=args.check, regenerate="python scripts/render_blueprint.py")
