"""Target `render`: a Render web service running the image from a registry (pulumi-render).

The image is built and pushed by pulumi-docker (or, with `buildImage: false`, the pushed reference in
`imageName` is deployed as is, which is what CI does with the digest it just pushed). The instance
type is the plan derived from `memoryMb` (infra/sizing.py), the health check path is the service's,
and secrets go in as Render env vars whose values stay Pulumi secrets.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_docker as docker
import pulumi_render as render

from infra.config import HEALTH_PATH, RENDER_REGISTRY_TYPES, StackConfig
from infra.spec import STOP_GRACE_SECONDS, DeploymentSpec


def env_vars(spec: DeploymentSpec) -> list[render.services.EnvVarInputArgs]:
    plain = [render.services.EnvVarInputArgs(key=name, value=value) for name, value in spec.env.items()]
    secret = [
        render.services.EnvVarInputArgs(key=name, value=value.as_output())
        for name, value in spec.secret_env.items()
    ]
    return plain + secret


def _service_url(details: Any) -> str | None:
    if details is None:
        return None
    url = getattr(details, "url", None)
    if url is None and isinstance(details, dict):
        url = details.get("url")
    return url.rstrip("/") if isinstance(url, str) else None


class RenderDeployment(pulumi.ComponentResource):
    """The reranker as a Render web service."""

    url: pulumi.Output[str]
    health_url: pulumi.Output[str]
    image_name: pulumi.Output[str]
    image_digest: pulumi.Output[str]

    def __init__(
        self, name: str, cfg: StackConfig, spec: DeploymentSpec, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("reranker:targets:RenderDeployment", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        assert cfg.render_plan is not None and cfg.render_owner_id is not None  # guaranteed by config.parse

        image = spec.image
        if image.build:
            registry = None
            if image.registry_username and image.registry_password:
                registry = docker.RegistryArgs(
                    server=image.registry_server,
                    username=image.registry_username,
                    password=image.registry_password.as_output(),
                )
            built = docker.Image(
                f"{name}-image",
                image_name=image.name,
                build=docker.DockerBuildArgs(
                    context=str(image.context),
                    dockerfile=str(image.dockerfile),
                    args=dict(image.build_args) or None,
                    platform=image.platform,
                ),
                skip_push=False,
                registry=registry,
                opts=child,
            )
            self.image_name = built.image_name
            self.image_digest = built.repo_digest
            image_path: Any = built.repo_digest  # repo@sha256:...: every build is a new deploy
        else:
            self.image_name = pulumi.Output.from_input(image.name)
            self.image_digest = pulumi.Output.from_input(image.digest or "")
            image_path = image.name

        credential_id: Any = cfg.render_registry_credential_id
        if credential_id is None and image.registry_username and image.registry_password:
            credential = render.registrycredentials.RegistryCredential(
                f"{name}-registry",
                name=cfg.render_registry_credential_name or f"{cfg.render_service_name}-registry",
                owner_id=cfg.render_owner_id,
                registry=RENDER_REGISTRY_TYPES[image.registry_server or ""],
                username=image.registry_username,
                auth_token=image.registry_password.as_output(),
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["authToken"]),
            )
            credential_id = credential.id

        self.plan = cfg.render_plan
        self.service = render.services.WebService(
            f"{name}-service",
            name=cfg.render_service_name,
            owner_id=cfg.render_owner_id,
            auto_deploy="yes" if cfg.render_auto_deploy else "no",
            image=render.services.ImageArgs(
                image_path=image_path, owner_id=cfg.render_owner_id, registry_credential_id=credential_id
            ),
            env_vars=env_vars(spec),
            service_details=render.services.WebServiceDetailsCreateArgs(
                runtime="image",
                plan=cfg.render_plan.api_name,
                region=cfg.render_region,
                health_check_path=HEALTH_PATH,
                num_instances=cfg.render_instances,
                max_shutdown_delay_seconds=STOP_GRACE_SECONDS,
            ),
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["envVars"]),
        )
        self.url = self.service.service_details.apply(_service_url)
        self.health_url = self.url.apply(lambda url: f"{url}{HEALTH_PATH}" if url else None)
        self.dashboard_url = self.service.dashboard_url
        self.register_outputs(
            {
                "url": self.url,
                "healthUrl": self.health_url,
                "imageName": self.image_name,
                "imageDigest": self.image_digest,
            }
        )
