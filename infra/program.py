"""The Pulumi program: read the stack settings, build the spec, deploy it to the stack's target.

It names no platform: the `target` setting picks a module from the registry in infra/targets/."""

from __future__ import annotations

import pulumi

from infra import config, targets
from infra.spec import build_spec


def run() -> dict[str, object]:
    """Declare the stack's resources and export its outputs (also returned, for tests)."""
    cfg = config.load()  # raises ConfigError, before any resource is declared, if a setting is wrong
    for warning in cfg.warnings:
        pulumi.log.warn(warning)
    spec = build_spec(cfg)
    deployment = targets.get_target(cfg.target).deploy(spec.name, cfg, spec)

    outputs: dict[str, object] = {
        "url": deployment.url,
        "healthUrl": deployment.health_url,
        "imageName": deployment.image_name,
        "imageDigest": deployment.image_digest,
        "target": cfg.target,
        "imageFlavour": cfg.image_flavour,
        "memoryMb": cfg.memory_mb,
        "workers": cfg.workers,
        "envNames": spec.env_names,
        **getattr(deployment, "extra_outputs", {}),
    }
    for name, value in outputs.items():
        pulumi.export(name, value)
    return outputs
