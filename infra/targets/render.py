"""Target `render`: a Render web service running the image from a registry (pulumi-render).

The image is built and pushed by pulumi-docker (or, with `buildImage: false`, the pushed reference in
`imageName` is deployed as is, which is what CI does with the digest it just pushed). The instance
type is the smallest plan that holds the memory (infra/sizing.py), the health check path is the
service's, secrets go in as Render env vars whose values stay Pulumi secrets, and the scaling block
becomes Render's instance count or, with maxInstances above minInstances, its CPU autoscaling.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_render as render

from infra import sizing
from infra.config import (
    HEALTH_PATH,
    Key,
    StackConfig,
    _Reader,
    check_registry_image,
    check_size,
    refuse_scaling,
)
from infra.spec import STOP_MARGIN_SECONDS, DeploymentSpec
from infra.targets import _image
from infra.targets._base import Deployment

NAME = "render"
REGIONS = ("oregon", "ohio", "virginia", "frankfurt", "singapore")
# Render registry-credential types, by registry host.
REGISTRY_TYPES = {
    "ghcr.io": "GITHUB",
    "docker.io": "DOCKER",
    "index.docker.io": "DOCKER",
    "registry-1.docker.io": "DOCKER",
    "registry.gitlab.com": "GITLAB",
}
MAX_SHUTDOWN_DELAY_SECONDS = 300  # Render's limit for maxShutdownDelaySeconds
DEFAULT_TARGET_CPU_PERCENT = 70


@dataclass(frozen=True)
class RenderPlan(sizing.Size):
    """A Render web-service instance type. Prices and sizes are list prices: check render.com/pricing."""

    blueprint_name: str = ""  # the value render.yaml uses

    @property
    def api_name(self) -> str:
        """The Render API / pulumi-render value (WebServiceDetailsCreatePlan)."""
        return self.name


# Smallest first. List prices per instance and month, render.com/pricing, as of 2026-11.
SIZES: tuple[RenderPlan, ...] = (
    RenderPlan("starter", 512, 0.5, 7, "starter"),
    RenderPlan("standard", 2048, 1, 25, "standard"),
    RenderPlan("pro", 4096, 2, 85, "pro"),
    RenderPlan("pro_plus", 8192, 4, 175, "pro plus"),
)
PLANS_BY_NAME = {plan.name: plan for plan in SIZES}

KEYS: tuple[Key, ...] = (
    Key("renderOwnerId", "Render workspace (owner) id, `tea-...` or `usr-...`"),
    Key("renderServiceName", "Render service name (default `reranker-<stack>`)"),
    Key("renderRegion", "Render region: " + ", ".join(REGIONS)),
    Key("renderAutoDeploy", "Render auto-deploy (`true`/`false`)"),
    Key("renderPlan", "Force a Render plan instead of deriving it from memoryMb"),
    Key("renderRegistryCredentialId", "Existing Render registry credential id (`rgc-...`)"),
    Key("renderRegistryCredentialName", "Registry credential name the Blueprint refers to"),
)
# Keys an earlier version read, and what replaced them (a clear message instead of "unknown key").
RETIRED = {"renderInstances": "minInstances (and maxInstances for autoscaling), shared by every target"}


@dataclass(frozen=True)
class Settings:
    service_name: str
    owner_id: str | None
    region: str
    auto_deploy: bool
    plan: RenderPlan | None
    registry_credential_id: str | None
    registry_credential_name: str | None
    instances: int
    autoscaling: bool
    max_instances: int
    target_cpu_percent: int
    pulls_from_registry: bool = True


def parse(r: _Reader, common: StackConfig) -> Settings:
    owner_id = r.string("renderOwnerId")
    service_name = r.string("renderServiceName", f"reranker-{common.stack}") or f"reranker-{common.stack}"
    region = r.string("renderRegion", "oregon", REGIONS) or "oregon"
    auto_deploy = r.boolean("renderAutoDeploy", False)
    plan_name = r.string("renderPlan", None, [plan.name for plan in SIZES])
    credential_id = r.string("renderRegistryCredentialId")
    credential_name = r.string("renderRegistryCredentialName")

    if owner_id is None and r.deploy:
        r.problem("renderOwnerId", "is required for target=render (pulumi config set renderOwnerId tea-...)")
    check_registry_image(r, common.image_name, "Render", r.deploy)
    plan = check_size(
        r,
        "renderPlan",
        common,
        SIZES,
        platform="Render plan",
        forced=PLANS_BY_NAME.get(plan_name) if plan_name else None,
        cpus=common.cpus,
    )
    server = common.registry_server
    if common.registry_username and credential_id is None and server not in REGISTRY_TYPES:
        r.problem(
            "registryServer",
            f"={server!r} is not a registry Render can hold a credential for "
            f"({', '.join(sorted(REGISTRY_TYPES))}); create the credential in the Render dashboard "
            "and set renderRegistryCredentialId rgc-...",
        )

    scaling = common.scaling
    if scaling.min_instances < 1:
        r.problem(
            "minInstances",
            "=0: Render cannot scale a web service to zero; pulumi config set minInstances 1",
        )
    refuse_scaling(
        r,
        scaling,
        ("concurrency",),
        "Render routes requests to instances without a per-instance concurrency limit",
    )
    limit = MAX_SHUTDOWN_DELAY_SECONDS - STOP_MARGIN_SECONDS
    if common.shutdown_grace_seconds > limit:
        r.problem(
            "shutdownGraceSeconds",
            f"={common.shutdown_grace_seconds}: Render waits at most {MAX_SHUTDOWN_DELAY_SECONDS} s after SIGTERM "
            f"(maxShutdownDelaySeconds), the service needs {STOP_MARGIN_SECONDS} s more than its grace; "
            f"pulumi config set shutdownGraceSeconds {limit}",
        )
    return Settings(
        service_name=service_name,
        owner_id=owner_id,
        region=region,
        auto_deploy=auto_deploy,
        plan=plan,
        registry_credential_id=credential_id,
        registry_credential_name=credential_name,
        instances=max(scaling.min_instances, 1),
        autoscaling=scaling.autoscaling,
        max_instances=scaling.max_instances,
        target_cpu_percent=scaling.target_cpu_percent or DEFAULT_TARGET_CPU_PERCENT,
    )


def env_vars(spec: DeploymentSpec) -> list[render.services.EnvVarInputArgs]:
    plain = [render.services.EnvVarInputArgs(key=name, value=value) for name, value in spec.env.items()]
    secret = [
        render.services.EnvVarInputArgs(key=name, value=value.as_output())
        for name, value in spec.secret_env.items()
    ]
    return plain + secret


def autoscaling_args(settings: Settings) -> render.services.WebServiceDetailspropertiesautoscalingArgs | None:
    """Render's autoscaling on average CPU (memory is flat for this service: not a scaling signal)."""
    if not settings.autoscaling:
        return None
    services = render.services
    return services.WebServiceDetailspropertiesautoscalingArgs(
        enabled=True,
        min=settings.instances,
        max=settings.max_instances,
        criteria=services.WebServiceDetailspropertiesautoscalingCriteriaPropertiesArgs(
            cpu=services.WebServiceDetailspropertiesautoscalingCriteriaPropertiesCpuPropertiesArgs(
                enabled=True, percentage=settings.target_cpu_percent
            ),
            # (pulumi-render 0.6.0 names the memory criterion's type after the CPU one)
            memory=services.WebServiceDetailspropertiesautoscalingpropertiescriteriapropertiescpuArgs(
                enabled=False, percentage=90
            ),
        ),
    )


def _service_url(details: Any) -> str | None:
    if details is None:
        return None
    url = getattr(details, "url", None)
    if url is None and isinstance(details, dict):
        url = details.get("url")
    return url.rstrip("/") if isinstance(url, str) else None


class RenderDeployment(Deployment):
    """The reranker as a Render web service."""

    def __init__(
        self, name: str, cfg: StackConfig, spec: DeploymentSpec, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("reranker:targets:RenderDeployment", name, None, opts)
        settings: Settings = cfg.target_settings
        assert settings.plan is not None and settings.owner_id is not None  # guaranteed by parse()

        image = spec.image
        published = _image.publish(name, image, self)
        self.image_name = published.name
        self.image_digest = published.digest

        credential_id: Any = settings.registry_credential_id
        if credential_id is None and image.registry_username and image.registry_password:
            credential = render.registrycredentials.RegistryCredential(
                f"{name}-registry",
                name=settings.registry_credential_name or f"{settings.service_name}-registry",
                owner_id=settings.owner_id,
                registry=REGISTRY_TYPES[image.registry_server or ""],
                username=image.registry_username,
                auth_token=image.registry_password.as_output(),
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["authToken"]),
            )
            credential_id = credential.id

        self.plan = settings.plan
        self.service = render.services.WebService(
            f"{name}-service",
            name=settings.service_name,
            owner_id=settings.owner_id,
            auto_deploy="yes" if settings.auto_deploy else "no",
            image=render.services.ImageArgs(
                image_path=published.ref, owner_id=settings.owner_id, registry_credential_id=credential_id
            ),
            env_vars=env_vars(spec),
            service_details=render.services.WebServiceDetailsCreateArgs(
                runtime="image",
                plan=settings.plan.api_name,
                region=settings.region,
                health_check_path=HEALTH_PATH,
                num_instances=settings.instances,
                autoscaling=autoscaling_args(settings),
                max_shutdown_delay_seconds=spec.stop_grace_seconds,
            ),
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["envVars"]),
        )
        url = self.service.service_details.apply(_service_url)
        self.dashboard_url = self.service.dashboard_url
        self.finish(
            url,
            {
                "renderPlan": settings.plan.api_name,
                "renderPlanListPriceUsdPerMonth": settings.plan.usd_per_month,
                "renderDashboardUrl": self.dashboard_url,
            },
        )


def deploy(name: str, cfg: StackConfig, spec: DeploymentSpec) -> RenderDeployment:
    return RenderDeployment(name, cfg, spec)
