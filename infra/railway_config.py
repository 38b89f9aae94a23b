"""railway.json: Railway's config-as-code for a `railway` stack, rendered from the DeploymentSpec.

    python scripts/railway_config.py              # rewrite railway.json from infra/examples/Pulumi.railway.yaml
    python scripts/railway_config.py --check      # exit 1 if railway.json is stale (a test runs this)
    python scripts/railway_config.py --variables  # the `railway variables` commands for the service
    python scripts/railway_config.py --stack-file Pulumi.prod.yaml   # your own railway stack

Railway reads railway.json from the repository root on every deploy (`railway up` or a connected
repository) and builds the Dockerfile itself. The file cannot hold variables: `--variables` prints them.
Schema: https://railway.com/railway.schema.json (reference: docs.railway.com/config-as-code/reference).
"""

from __future__ import annotations

import json
import shlex
from typing import Any

from infra import config_as_code
from infra.config import HEALTH_PATH, REPO_ROOT, StackConfig
from infra.spec import build_spec
from infra.targets import railway

OUTPUT = REPO_ROOT / "railway.json"
SCHEMA_URL = "https://railway.com/railway.schema.json"
# Changes outside these paths (infra/, docs, tests) do not rebuild the service on a connected repository.
WATCH_PATTERNS = ("Dockerfile", ".dockerignore", "requirements/**", "service/**", "scripts/**")


def document(cfg: StackConfig) -> dict[str, Any]:
    spec = build_spec(cfg)
    settings: railway.Settings = cfg.target_settings
    deploy: dict[str, Any] = {}
    if settings.region:
        deploy["multiRegionConfig"] = {settings.region: {"numReplicas": settings.replicas}}
    else:
        deploy["numReplicas"] = settings.replicas
    deploy |= {
        "healthcheckPath": HEALTH_PATH,
        # Railway waits this long for the first 200 of a new deployment (model load + warm-up), then
        # fails it and keeps the previous one live. It never checks again after that.
        "healthcheckTimeout": spec.health.wait_timeout_seconds,
        "restartPolicyType": settings.restart_policy,
        "overlapSeconds": railway.OVERLAP_SECONDS,
        # SIGTERM to SIGKILL: the service's graceful-shutdown window and a margin (Railway's default is 0).
        "drainingSeconds": spec.stop_grace_seconds,
        # minInstances=0: Railway's app sleeping (no traffic for a while: asleep; the next request wakes it).
        "sleepApplication": settings.sleep,
    }
    if settings.restart_policy == "ON_FAILURE":
        deploy["restartPolicyMaxRetries"] = settings.restart_max_retries
    dockerfile = spec.image.dockerfile.relative_to(REPO_ROOT).as_posix()
    build: dict[str, Any] = {
        "builder": "DOCKERFILE",
        "dockerfilePath": dockerfile,
        "watchPatterns": list(WATCH_PATTERNS),
    }
    return {"$schema": SCHEMA_URL, "build": build, "deploy": deploy}


def render(cfg: StackConfig) -> str:
    return json.dumps(document(cfg), indent=2) + "\n"


def variables(cfg: StackConfig) -> str:
    """The `railway variables --set` commands: plain values as they are, secrets as placeholders."""
    spec = build_spec(cfg)
    lines = [
        "# Plain variables (from the stack settings):",
        "railway variables --skip-deploys "
        + " ".join(f"--set {shlex.quote(f'{k}={v}')}" for k, v in spec.env.items()),
    ]
    secrets = config_as_code.secret_names(cfg, spec)
    if secrets:
        lines.append(
            "# Secrets (Railway seals nothing by itself: mark each one Sealed in the dashboard afterwards):"
        )
        lines.append(
            "railway variables --skip-deploys " + " ".join(f"--set '{name}=<value>'" for name in secrets)
        )
    return "\n".join(lines) + "\n"


def generate(stack_file=None) -> str:
    path = stack_file or config_as_code.example_stack_file(railway.NAME)
    return render(config_as_code.load(path, railway.NAME))


def main(argv: list[str] | None = None) -> int:
    return config_as_code.main(argv, target=railway.NAME, output=OUTPUT, render=render, variables=variables)
