"""Target `digitalocean`: a DigitalOcean App Platform service running the image (pulumi-digitalocean `App`).

The image comes from DigitalOcean Container Registry (DOCR, same account: no credentials), GitHub
Container Registry or Docker Hub (private images: registryUsername/registryPassword, passed as the
secret `registry_credentials`). Secrets are `SECRET`-typed env vars whose values stay Pulumi secrets.
The instance size is the smallest in SIZES whose memory holds `memoryMb` (which itself holds
workers x footprint + headroom, infra/sizing.py); App Platform autoscales (on CPU) only dedicated-CPU
sizes, so a scaling range picks the smallest dedicated size.

A Droplet or any other VPS is not this target: it is the `docker` target over SSH (`dockerHost`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_digitalocean as do

from infra import sizing
from infra.config import HEALTH_PATH, Key, StackConfig, _Reader, check_size, refuse_scaling
from infra.spec import DeploymentSpec
from infra.targets import _image
from infra.targets._base import Deployment, check_stop_grace, dns_label

NAME = "digitalocean"

REGIONS = ("ams", "blr", "fra", "lon", "nyc", "sfo", "sgp", "syd", "tor")
DRAIN_SECONDS = 15  # App Platform's default: load balancers stop sending requests before SIGTERM
LIVENESS_PERIOD_SECONDS = 10
LIVENESS_FAILURES = 6
DEFAULT_TARGET_CPU_PERCENT = 70
MAX_GRACE_PERIOD_SECONDS = 600  # App Platform's limit for termination.grace_period_seconds


@dataclass(frozen=True)
class InstanceSize(sizing.Size):
    """An App Platform container size (`name` is its slug)."""

    dedicated: bool = False
    scales: bool = True  # `-fixed` sizes run exactly one instance

    @property
    def label(self) -> str:
        kind = "dedicated" if self.dedicated else "shared"
        return f"{self.name} ({self.memory_mb} MB, {self.cpus:g} {kind} vCPU, ${self.usd_per_month:g}/month)"


PRICES_AS_OF = "2026-12-01"
# Smallest first (memory, then price): the first that holds memoryMb is the cheapest that does.
# List prices per instance and month, digitalocean.com/pricing/app-platform. Shared-CPU sizes cannot
# autoscale; `-fixed` ones cannot run more than one instance.
SIZES: tuple[InstanceSize, ...] = (
    InstanceSize("apps-s-1vcpu-0.5gb", 512, 1, 5),
    InstanceSize("apps-d-1vcpu-0.5gb", 512, 1, 29, dedicated=True),
    InstanceSize("apps-s-1vcpu-1gb-fixed", 1024, 1, 10, scales=False),
    InstanceSize("apps-s-1vcpu-1gb", 1024, 1, 12),
    InstanceSize("apps-d-1vcpu-1gb", 1024, 1, 34, dedicated=True),
    InstanceSize("apps-s-1vcpu-2gb", 2048, 1, 25),
    InstanceSize("apps-d-1vcpu-2gb", 2048, 1, 39, dedicated=True),
    InstanceSize("apps-d-1vcpu-4gb", 4096, 1, 49, dedicated=True),
    InstanceSize("apps-s-2vcpu-4gb", 4096, 2, 50),
    InstanceSize("apps-d-2vcpu-4gb", 4096, 2, 78, dedicated=True),
    InstanceSize("apps-d-2vcpu-8gb", 8192, 2, 98, dedicated=True),
    InstanceSize("apps-d-4vcpu-8gb", 8192, 4, 156, dedicated=True),
    InstanceSize("apps-d-4vcpu-16gb", 16384, 4, 196, dedicated=True),
    InstanceSize("apps-d-8vcpu-32gb", 32768, 8, 392, dedicated=True),
)
SIZES_BY_SLUG = {size.name: size for size in SIZES}

# Registry host -> App Platform registry_type. DOCR must be in the same DigitalOcean account.
REGISTRY_TYPES = {
    "registry.digitalocean.com": "DOCR",
    "ghcr.io": "GHCR",
    "docker.io": "DOCKER_HUB",
    "index.docker.io": "DOCKER_HUB",
    "registry-1.docker.io": "DOCKER_HUB",
}

KEYS: tuple[Key, ...] = (
    Key("doRegion", "digitalocean: App Platform region: " + ", ".join(REGIONS)),
    Key("doAppName", "digitalocean: app name (default `reranker-<stack>`)"),
    Key("doInstanceSize", "digitalocean: force an instance size slug instead of deriving it from memoryMb"),
    Key("doProjectId", "digitalocean: project the app belongs to (default: the account's default project)"),
)


@dataclass(frozen=True)
class ImageSource:
    registry_type: str
    registry: str | None  # the Docker Hub / GHCR namespace; empty for DOCR
    repository: str
    tag: str | None
    digest: str | None


@dataclass(frozen=True)
class Settings:
    service_name: str
    region: str
    app_name: str
    size: InstanceSize
    min_instances: int
    max_instances: int
    target_cpu_percent: int
    source: ImageSource
    project_id: str | None = None
    pulls_from_registry: bool = True

    @property
    def autoscaled(self) -> bool:
        return self.max_instances > self.min_instances


def split_reference(reference: str) -> tuple[str, str | None, str | None]:
    """`host/path[:tag][@digest]` -> (host/path, tag, digest)."""
    rest, _, digest = reference.partition("@")
    if ":" in rest.rsplit("/", 1)[-1]:
        repository, _, tag = rest.rpartition(":")
        return repository, tag, digest or None
    return rest, None, digest or None


def image_source(reference: str) -> ImageSource | None:
    """App Platform's view of an image reference, or None when it cannot pull from that registry."""
    repository, tag, digest = split_reference(reference)
    host, _, path = repository.partition("/")
    if "." not in host and ":" not in host and host != "localhost":
        host, path = "docker.io", repository  # `user/repo` is Docker Hub
    registry_type = REGISTRY_TYPES.get(host)
    if registry_type is None or "/" not in path:
        return None
    namespace, _, name = path.partition("/")
    return ImageSource(
        registry_type=registry_type,
        registry=None if registry_type == "DOCR" else namespace,
        repository=name,
        tag=None if digest else (tag or "latest"),
        digest=digest,
    )


def allowed_sizes(autoscaled: bool, several: bool) -> list[InstanceSize]:
    """The sizes that can run this scaling: dedicated CPU to autoscale, not `-fixed` for several."""
    return [s for s in SIZES if (s.dedicated or not autoscaled) and (s.scales or not several)]


def parse(r: _Reader, common: StackConfig) -> Settings | None:
    region = r.string("doRegion", "nyc", REGIONS) or "nyc"
    default_name = dns_label(f"reranker-{common.stack}", 32)
    app_name = r.string("doAppName", default_name) or default_name
    if not (2 <= len(app_name) <= 32) or not all(c.islower() or c.isdigit() or c == "-" for c in app_name):
        r.problem(
            "doAppName",
            f"={app_name!r} must be 2-32 lower-case letters, digits or '-' (pulumi config set doAppName reranker)",
        )
    project_id = r.string("doProjectId")
    forced_name = r.string("doInstanceSize")

    scaling = common.scaling
    if scaling.min_instances < 1:
        r.problem(
            "minInstances",
            "=0: App Platform always runs at least one instance; pulumi config set minInstances 1",
        )
    refuse_scaling(
        r,
        scaling,
        ("concurrency",),
        "App Platform autoscales on CPU only (targetCpuPercent), not on requests in flight",
    )
    autoscaled = scaling.autoscaling
    allowed = allowed_sizes(autoscaled, scaling.max_instances > 1)
    size: InstanceSize | None = None
    if forced_name is not None and forced_name not in SIZES_BY_SLUG:
        fits = sizing.smallest_fitting(allowed, common.memory_mb, common.cpus)
        fix = f"; pulumi config set doInstanceSize {fits.name}" if fits else ""
        r.problem(
            "doInstanceSize",
            f"={forced_name!r} is not an App Platform instance size (one of: {sizing.names(SIZES)}){fix}",
        )
    else:
        forced = SIZES_BY_SLUG.get(forced_name) if forced_name else None
        size = check_size(
            r,
            "doInstanceSize",
            common,
            allowed,
            platform="App Platform instance size",
            forced=forced,
            cpus=common.cpus,
        )
        if forced is not None and forced not in allowed:
            fits = sizing.smallest_fitting(
                allowed, max(common.memory_mb, common.required_memory_mb), common.cpus
            )
            fix = f"; pulumi config set doInstanceSize {fits.name}" if fits else ""
            why = (
                "a shared-CPU size, and App Platform autoscales only dedicated-CPU sizes "
                f"(minInstances={scaling.min_instances} < maxInstances={scaling.max_instances})"
                if autoscaled and not forced.dedicated
                else f"a size that runs exactly one instance (maxInstances={scaling.max_instances})"
            )
            r.problem("doInstanceSize", f"={forced.name} is {why}{fix}")
    check_stop_grace(r, common, MAX_GRACE_PERIOD_SECONDS, "App Platform waits (termination grace period)")

    source = image_source(common.image_name)
    if source is None:
        r.problem(
            "imageName",
            f"={common.image_name!r}: App Platform pulls only from DigitalOcean Container Registry, GHCR or "
            "Docker Hub; pulumi config set imageName registry.digitalocean.com/<registry>/reranker:latest "
            "(or ghcr.io/<owner>/reranker:latest)",
        )
    elif "OWNER" in common.image_name and r.deploy:
        r.problem(
            "imageName",
            f"={common.image_name!r} still has the OWNER placeholder; "
            "pulumi config set imageName registry.digitalocean.com/<registry>/reranker:latest",
        )
    elif source.registry_type != "DOCR" and common.registry_username is None:
        r.warnings.append(
            f"reranker:imageName={common.image_name}: App Platform pulls it without credentials; "
            "if the image is private, set registryUsername and registryPassword"
        )
    if size is None or source is None:
        return None
    return Settings(
        service_name=app_name,
        region=region,
        app_name=app_name,
        size=size,
        min_instances=max(1, scaling.min_instances),
        max_instances=max(1, scaling.max_instances),
        target_cpu_percent=scaling.target_cpu_percent or DEFAULT_TARGET_CPU_PERCENT,
        source=source,
        project_id=project_id,
    )


def envs(spec: DeploymentSpec) -> list[do.AppSpecServiceEnvArgs]:
    plain = [
        do.AppSpecServiceEnvArgs(key=n, value=v, type="GENERAL", scope="RUN_TIME")
        for n, v in spec.env.items()
    ]
    secret = [
        do.AppSpecServiceEnvArgs(key=n, value=s.as_output(), type="SECRET", scope="RUN_TIME")
        for n, s in spec.secret_env.items()
    ]
    return plain + secret


def service_args(spec: DeploymentSpec, settings: Settings, image: Any) -> do.AppSpecServiceArgs:
    health = spec.health
    scaling: dict[str, Any]
    if settings.autoscaled:
        scaling = {
            "autoscaling": do.AppSpecServiceAutoscalingArgs(
                min_instance_count=settings.min_instances,
                max_instance_count=settings.max_instances,
                metrics=do.AppSpecServiceAutoscalingMetricsArgs(
                    cpu=do.AppSpecServiceAutoscalingMetricsCpuArgs(percent=settings.target_cpu_percent)
                ),
            )
        }
    else:
        scaling = {"instance_count": settings.min_instances}
    return do.AppSpecServiceArgs(
        name="reranker",
        image=image,
        http_port=spec.port,
        instance_size_slug=settings.size.name,
        envs=envs(spec),
        # Readiness: checks start after the start period (model load + warm-up); a deploy whose new
        # instances never pass it is rolled back.
        health_check=do.AppSpecServiceHealthCheckArgs(
            http_path=HEALTH_PATH,
            port=spec.port,
            initial_delay_seconds=health.start_period_seconds,
            period_seconds=health.interval_seconds,
            timeout_seconds=health.timeout_seconds,
            failure_threshold=health.retries,
            success_threshold=1,
        ),
        # Liveness: restarts an instance that stops answering for a minute.
        liveness_health_check=do.AppSpecServiceLivenessHealthCheckArgs(
            http_path=HEALTH_PATH,
            port=spec.port,
            initial_delay_seconds=health.start_period_seconds,
            period_seconds=LIVENESS_PERIOD_SECONDS,
            timeout_seconds=health.timeout_seconds,
            failure_threshold=LIVENESS_FAILURES,
        ),
        termination=do.AppSpecServiceTerminationArgs(
            drain_seconds=DRAIN_SECONDS,
            grace_period_seconds=min(MAX_GRACE_PERIOD_SECONDS, spec.stop_grace_seconds),
        ),
        **scaling,
    )


def image_args(spec: DeploymentSpec, settings: Settings, ref: Any) -> Any:
    """The App Platform image block; `ref` is what runs (repo@sha256:... after a build)."""
    source = settings.source
    credentials = None
    image = spec.image
    if source.registry_type != "DOCR" and image.registry_username and image.registry_password:
        user = image.registry_username
        credentials = image.registry_password.as_output().apply(lambda token: f"{user}:{token}")

    def build(reference: str) -> dict[str, Any]:
        _, tag, digest = split_reference(reference)
        return {"tag": None if digest else (tag or source.tag), "digest": digest or source.digest}

    pinned = pulumi.Output.from_input(ref).apply(build)
    return do.AppSpecServiceImageArgs(
        registry_type=source.registry_type,
        registry=source.registry,
        repository=source.repository,
        tag=pinned.apply(lambda p: p["tag"]),
        digest=pinned.apply(lambda p: p["digest"]),
        registry_credentials=credentials,
    )


class DigitalOceanDeployment(Deployment):
    def __init__(
        self, name: str, spec: DeploymentSpec, settings: Settings, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("reranker:targets:DigitalOceanDeployment", name, None, opts)
        image = _image.publish(name, spec.image, self)
        self.app = do.App(
            f"{name}-app",
            project_id=settings.project_id,
            spec=do.AppSpecArgs(
                name=settings.app_name,
                region=settings.region,
                services=[service_args(spec, settings, image_args(spec, settings, image.ref))],
                ingress=do.AppSpecIngressArgs(
                    rules=[
                        do.AppSpecIngressRuleArgs(
                            component=do.AppSpecIngressRuleComponentArgs(name="reranker"),
                            match=do.AppSpecIngressRuleMatchArgs(
                                path=do.AppSpecIngressRuleMatchPathArgs(prefix="/")
                            ),
                        )
                    ]
                ),
                alerts=[do.AppSpecAlertArgs(rule="DEPLOYMENT_FAILED")],
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.image_name = image.name
        self.image_digest = image.digest
        self.finish(
            self.app.live_url,
            {
                "doInstanceSize": settings.size.name,
                "doInstanceListPriceUsdPerMonth": settings.size.usd_per_month,
                "doLiveDomain": self.app.default_ingress,
            },
        )


def deploy(name: str, cfg: StackConfig, spec: DeploymentSpec) -> DigitalOceanDeployment:
    return DigitalOceanDeployment(name, spec, cfg.target_settings)
