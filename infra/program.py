"""The Pulumi program: read the stack settings, build the spec, deploy it to the stack's target."""

from __future__ import annotations

import pulumi

from infra import config
from infra.spec import build_spec
from infra.targets.docker import DockerDeployment
from infra.targets.render import RenderDeployment


def run() -> dict[str, object]:
    """Declare the stack's resources and export its outputs (also returned, for tests)."""
    cfg = config.load()  # raises ConfigError, before any resource is declared, if a setting is wrong
    for warning in cfg.warnings:
        pulumi.log.warn(warning)
    spec = build_spec(cfg)

    deployment: DockerDeployment | RenderDeployment
    if cfg.target == "render":
        deployment = RenderDeployment(spec.name, cfg, spec)
    else:
        deployment = DockerDeployment(spec.name, cfg, spec)

    outputs: dict[str, object] = {
        "url": deployment.url,
        "healthUrl": deployment.health_url,
        "imageName": deployment.image_name,
        "imageDigest": deployment.image_digest,
        "target": cfg.target,
        "memoryMb": cfg.memory_mb,
        "workers": cfg.workers,
        "envNames": spec.env_names,
    }
    if isinstance(deployment, RenderDeployment):
        outputs["renderPlan"] = deployment.plan.api_name
        outputs["renderPlanListPriceUsdPerMonth"] = deployment.plan.usd_per_month
        outputs["renderDashboardUrl"] = deployment.dashboard_url
    for name, value in outputs.items():
        pulumi.export(name, value)
    return outputs
