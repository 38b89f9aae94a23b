"""Target `cloudrun`: a Google Cloud Run (v2) service (pulumi-gcp).

What it declares: the APIs it needs, an Artifact Registry Docker repository that the image is pushed to
(with the caller's gcloud access token), one Secret Manager secret per secret variable (read by the
service through `value_source.secret_key_ref`, by a service account that may read those secrets and
nothing else), and the `cloudrunv2.Service`: CPU and memory from infra/sizing.py within Cloud Run's
CPU/memory combinations, a startup probe (the model load) and a liveness probe on the health route,
`template.scaling` from the scaling block, `max_instance_request_concurrency`, and public access (the
`allUsers` invoker binding) only with `public: true` (then the API keys are what protects it).

Cloud Run sets PORT itself (it rejects it as a variable): the container port is `port`. It sends SIGKILL
10 s after SIGTERM, so the graceful-shutdown window is at most 5 s here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_docker as docker
import pulumi_gcp as gcp

from infra import sizing
from infra.config import HEALTH_PATH, Key, StackConfig, _Reader, refuse_scaling, registry_host
from infra.spec import STOP_MARGIN_SECONDS, DeploymentSpec
from infra.targets import _image
from infra.targets._base import Deployment, dns_label
from infra.targets._keys import DELETION_PROTECTION, PUBLIC

NAME = "cloudrun"
KEYS: tuple[Key, ...] = (
    Key("gcpProject", "Google Cloud project id (required for cloudrun)"),
    Key("gcpRegion", "Cloud Run / Artifact Registry region"),
    Key("artifactRepository", "Artifact Registry repository the image is pushed to (created)"),
    PUBLIC,
    DELETION_PROTECTION,
    Key("enableApis", "Enable the Cloud Run, Artifact Registry and Secret Manager APIs in the project"),
)

# Cloud Run's CPU/memory combinations (cloud.google.com/run/docs/configuring/services/cpu and
# .../memory-limits): below 1 CPU any value from 0.08 in steps of 0.01, above it 1, 2, 4, 6 or 8.
WHOLE_CPUS = (1, 2, 4, 6, 8)
MIN_MEMORY_MB = 512  # second-generation execution environment
FRACTIONAL_MIN_MEMORY_MB = 128  # first generation, the only one below 1 CPU
SIGKILL_AFTER_SECONDS = 10  # Cloud Run: SIGTERM, then SIGKILL 10 s later (not configurable)
MAX_STARTUP_SECONDS = 240  # startup probe: at most 240 s of failures before the instance is replaced
DEFAULT_CONCURRENCY_PER_WORKER = 4
# List prices, Tier 1 regions, instance-based billing, per second (cloud.google.com/run/pricing, 2025):
USD_PER_VCPU_SECOND = 0.000018
USD_PER_GIB_SECOND = 0.000002
SECONDS_PER_MONTH = 730 * 3600


def max_memory_mb(cpus: float) -> int:
    if cpus < 0.5:
        return 512
    if cpus < 1:
        return 1024
    return {1: 4096, 2: 8192, 4: 16384, 6: 24576, 8: 32768}[int(cpus)]


def min_memory_mb(cpus: float) -> int:
    if cpus < 1:
        return FRACTIONAL_MIN_MEMORY_MB
    return {1: MIN_MEMORY_MB, 2: MIN_MEMORY_MB, 4: 2048, 6: 4096, 8: 4096}[int(cpus)]


def usd_per_month(cpus: float, memory_mb: int) -> float:
    """List price of one instance running the whole month, instance-based billing."""
    per_second = cpus * USD_PER_VCPU_SECOND + memory_mb / 1024 * USD_PER_GIB_SECOND
    return round(per_second * SECONDS_PER_MONTH, 2)


# The size table: each whole-CPU tier at its largest memory (the README prices them).
SIZES: tuple[sizing.Size, ...] = tuple(
    sizing.Size(f"{cpu} vCPU", max_memory_mb(cpu), cpu, usd_per_month(cpu, max_memory_mb(cpu)))
    for cpu in WHOLE_CPUS
)


@dataclass(frozen=True)
class Settings:
    service_name: str
    project: str
    region: str
    repository: str
    public: bool
    deletion_protection: bool
    enable_apis: bool
    cpus: float
    memory_mb: int
    concurrency: int
    min_instances: int
    max_instances: int
    cpu_utilization: float | None
    shutdown_grace_seconds: int
    pulls_from_registry: bool = True

    @property
    def registry_host(self) -> str:
        return f"{self.region}-docker.pkg.dev"

    @property
    def fractional(self) -> bool:
        return self.cpus < 1

    @property
    def usd_per_month(self) -> float:
        return usd_per_month(self.cpus, self.memory_mb)


def pick_size(r: _Reader, common: StackConfig) -> tuple[float, int]:
    """Cloud Run's CPU and memory for the stack: `cpus` (default one per worker) and memoryMb (default the
    footprint), checked against Cloud Run's combinations; a problem names the combination that fits."""
    needed = common.required_memory_mb
    cpus = common.cpus if common.cpus is not None else float(max(common.workers, 1))
    explicit_cpu = common.cpus is not None
    if cpus > 1 and cpus not in WHOLE_CPUS:
        whole = next((c for c in WHOLE_CPUS if c >= cpus), None)
        if explicit_cpu or whole is None:
            fix = f"pulumi config set cpus {whole}" if whole else "pulumi config set cpus 8"
            r.problem(
                "cpus", f"={cpus:g}: Cloud Run takes 0.08-1 or {', '.join(map(str, WHOLE_CPUS))} CPUs ({fix})"
            )
            return 1.0, max(needed, MIN_MEMORY_MB)
        cpus = float(whole)
    if cpus < 0.08 or cpus > 8:
        r.problem("cpus", f"={cpus:g}: Cloud Run takes 0.08 to 8 CPUs (pulumi config set cpus 1)")
        return 1.0, max(needed, MIN_MEMORY_MB)
    if cpus < 1 and round(cpus, 2) != cpus:
        r.problem(
            "cpus",
            f"={cpus:g}: below 1, Cloud Run takes steps of 0.01 (pulumi config set cpus {math.ceil(cpus * 100) / 100:g})",
        )
    floor = min_memory_mb(cpus)
    memory = common.memory_mb if common.memory_explicit else sizing.round_up(max(needed, floor), 128)
    if memory > max_memory_mb(cpus):
        fitting = next((c for c in WHOLE_CPUS if max_memory_mb(c) >= memory), None)
        if explicit_cpu or fitting is None:
            fix = f"pulumi config set cpus {fitting}" if fitting else "pulumi config set memoryMb 32768"
            r.problem(
                "memoryMb",
                f"={memory}: Cloud Run gives {cpus:g} CPU at most {max_memory_mb(cpus)} MB; {fix}"
                + (f" (or lower memoryMb to {max_memory_mb(cpus)})" if max_memory_mb(cpus) >= needed else ""),
            )
        else:
            cpus = float(fitting)
    elif memory < floor:
        r.problem(
            "memoryMb",
            f"={memory}: Cloud Run needs at least {floor} MB with {cpus:g} CPU (pulumi config set memoryMb {floor})",
        )
    return cpus, memory


def parse(r: _Reader, common: StackConfig) -> Settings:
    project = r.string("gcpProject")
    region = r.string("gcpRegion", "us-central1") or "us-central1"
    repository = r.string("artifactRepository", "reranker") or "reranker"
    public = r.boolean("public", False)
    deletion_protection = r.boolean("deletionProtection", True)
    enable_apis = r.boolean("enableApis", True)
    if project is None and r.deploy:
        r.problem("gcpProject", "is required for target=cloudrun (pulumi config set gcpProject <project id>)")

    cpus, memory = pick_size(r, common)
    scaling = common.scaling
    fractional = cpus < 1
    concurrency = scaling.concurrency or (
        1 if fractional else DEFAULT_CONCURRENCY_PER_WORKER * common.workers
    )
    if fractional and concurrency != 1:
        r.problem(
            "concurrency",
            f"={concurrency}: below 1 CPU Cloud Run serves one request at a time per instance; "
            "pulumi config set concurrency 1, or pulumi config set cpus 1",
        )
    if scaling.max_instances < 1:
        r.problem("maxInstances", "=0: pulumi config set maxInstances 1")
    if fractional and scaling.target_cpu_percent is not None:
        refuse_scaling(r, scaling, ("targetCpuPercent",), "below 1 CPU Cloud Run scales on requests only")
    cpu_utilization = None
    if scaling.target_cpu_percent is not None:
        if not 10 <= scaling.target_cpu_percent <= 95:
            r.problem(
                "targetCpuPercent",
                f"={scaling.target_cpu_percent}: Cloud Run takes 10-95 (pulumi config set targetCpuPercent 60)",
            )
        cpu_utilization = scaling.target_cpu_percent / 100

    limit = SIGKILL_AFTER_SECONDS - STOP_MARGIN_SECONDS
    grace = common.shutdown_grace_seconds
    if not r.has("shutdownGraceSeconds"):
        grace = min(grace, limit)
    elif grace > limit:
        r.problem(
            "shutdownGraceSeconds",
            f"={grace}: Cloud Run kills the container {SIGKILL_AFTER_SECONDS} s after SIGTERM and the service "
            f"needs {STOP_MARGIN_SECONDS} s to exit; pulumi config set shutdownGraceSeconds {limit}",
        )
    if common.start_period_seconds > MAX_STARTUP_SECONDS:
        r.problem(
            "startPeriodSeconds",
            f"={common.start_period_seconds}: a Cloud Run startup probe can wait at most {MAX_STARTUP_SECONDS} s; "
            f"pulumi config set startPeriodSeconds {MAX_STARTUP_SECONDS}",
        )
    if not common.build_image:
        host = registry_host(common.image_name) or ""
        if not (host.endswith(("-docker.pkg.dev", "gcr.io")) or host == "docker.io"):
            r.problem(
                "imageName",
                f"={common.image_name!r}: Cloud Run pulls from Artifact Registry (*-docker.pkg.dev), gcr.io or "
                "Docker Hub only; let the stack build and push it (pulumi config set buildImage true) or push it "
                "to Artifact Registry",
            )
    return Settings(
        service_name=dns_label(f"reranker-{common.stack}", 49),
        project=project or "",
        region=region,
        repository=repository,
        public=public,
        deletion_protection=deletion_protection,
        enable_apis=enable_apis,
        cpus=cpus,
        memory_mb=memory,
        concurrency=concurrency,
        min_instances=scaling.min_instances,
        max_instances=max(scaling.max_instances, 1),
        cpu_utilization=cpu_utilization,
        shutdown_grace_seconds=grace,
    )


def image_path(settings: Settings, image_name: str) -> str:
    """Where the built image goes: <region>-docker.pkg.dev/<project>/<repository>/<name>:<tag>."""
    last = image_name.rsplit("/", 1)[-1].split("@", 1)[0]
    repo, _, tag = last.partition(":")
    return f"{settings.registry_host}/{settings.project}/{settings.repository}/{repo}:{tag or 'latest'}"


def container_env(spec: DeploymentSpec, secret_ids: dict[str, Any], versions: dict[str, Any]) -> list:
    """Plain variables by value (all but PORT, which Cloud Run sets from the container port), secrets
    only as references to their Secret Manager versions."""
    run = gcp.cloudrunv2
    envs: list[Any] = [
        run.ServiceTemplateContainerEnvArgs(name=name, value=value)
        for name, value in spec.env.items()
        if name != "PORT"
    ]
    for name in spec.secret_env:
        envs.append(
            run.ServiceTemplateContainerEnvArgs(
                name=name,
                value_source=run.ServiceTemplateContainerEnvValueSourceArgs(
                    secret_key_ref=run.ServiceTemplateContainerEnvValueSourceSecretKeyRefArgs(
                        secret=secret_ids[name], version=versions[name]
                    )
                ),
            )
        )
    return envs


def secret_id(service_name: str, env_name: str) -> str:
    return f"{service_name}-{env_name.lower().replace('_', '-')}"


class CloudRunDeployment(Deployment):
    """The reranker as a Cloud Run service."""

    def __init__(
        self, name: str, cfg: StackConfig, spec: DeploymentSpec, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("reranker:targets:CloudRunDeployment", name, None, opts)
        s: Settings = cfg.target_settings
        child = pulumi.ResourceOptions(parent=self)

        apis = []
        if s.enable_apis:
            for api in ("run", "artifactregistry", "secretmanager", "iam"):
                apis.append(
                    gcp.projects.Service(
                        f"{name}-{api}-api",
                        project=s.project,
                        service=f"{api}.googleapis.com",
                        disable_on_destroy=False,
                        opts=child,
                    )
                )
        after_apis = pulumi.ResourceOptions(parent=self, depends_on=apis)

        if spec.image.build:
            repository = gcp.artifactregistry.Repository(
                f"{name}-repository",
                project=s.project,
                location=s.region,
                repository_id=s.repository,
                format="DOCKER",
                description="reranker images (pushed by Pulumi)",
                cleanup_policies=[
                    gcp.artifactregistry.RepositoryCleanupPolicyArgs(
                        id="keep-recent",
                        action="KEEP",
                        most_recent_versions=gcp.artifactregistry.RepositoryCleanupPolicyMostRecentVersionsArgs(
                            keep_count=10
                        ),
                    )
                ],
                opts=after_apis,
            )
            token = gcp.organizations.get_client_config_output(opts=pulumi.InvokeOutputOptions(parent=self))
            published = _image.publish(
                name,
                spec.image,
                self,
                image_name=image_path(s, spec.image.name),
                registry=docker.RegistryArgs(
                    server=s.registry_host,
                    username="oauth2accesstoken",
                    password=pulumi.Output.secret(token.access_token),
                ),
                depends_on=[repository],
            )
        else:
            published = _image.publish(name, spec.image, self)
        self.image_name = published.name
        self.image_digest = published.digest

        account = gcp.serviceaccount.Account(
            f"{name}-runtime",
            project=s.project,
            account_id=dns_label(f"{s.service_name[:26]}-run", 30),
            display_name=f"Cloud Run runtime of {s.service_name} (reads its own secrets, nothing else)",
            opts=after_apis,
        )
        secret_ids: dict[str, Any] = {}
        versions: dict[str, Any] = {}
        grants = []
        for env_name, value in spec.secret_env.items():
            slug = env_name.lower().replace("_", "-")
            secret = gcp.secretmanager.Secret(
                f"{name}-{slug}",
                project=s.project,
                secret_id=secret_id(s.service_name, env_name),
                replication=gcp.secretmanager.SecretReplicationArgs(
                    auto=gcp.secretmanager.SecretReplicationAutoArgs()
                ),
                opts=after_apis,
            )
            version = gcp.secretmanager.SecretVersion(
                f"{name}-{slug}-value",
                secret=secret.id,
                secret_data=value.as_output(),
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["secretData"]),
            )
            grants.append(
                gcp.secretmanager.SecretIamMember(
                    f"{name}-{slug}-reader",
                    project=s.project,
                    secret_id=secret.secret_id,
                    role="roles/secretmanager.secretAccessor",
                    member=account.email.apply(lambda email: f"serviceAccount:{email}"),
                    opts=child,
                )
            )
            secret_ids[env_name] = secret.secret_id
            versions[env_name] = version.version

        run = gcp.cloudrunv2
        health = spec.health
        startup_failures = max(1, math.ceil(health.start_period_seconds / health.interval_seconds))
        self.service = run.Service(
            f"{name}-service",
            name=s.service_name,
            project=s.project,
            location=s.region,
            deletion_protection=s.deletion_protection,
            ingress="INGRESS_TRAFFIC_ALL",
            template=run.ServiceTemplateArgs(
                service_account=account.email,
                execution_environment="EXECUTION_ENVIRONMENT_GEN1"
                if s.fractional
                else "EXECUTION_ENVIRONMENT_GEN2",
                max_instance_request_concurrency=s.concurrency,
                scaling=run.ServiceTemplateScalingArgs(
                    min_instance_count=s.min_instances,
                    max_instance_count=s.max_instances,
                    cpu_utilization=s.cpu_utilization,
                ),
                containers=[
                    run.ServiceTemplateContainerArgs(
                        image=published.ref,
                        ports=run.ServiceTemplateContainerPortsArgs(container_port=spec.port),
                        envs=container_env(spec, secret_ids, versions),
                        resources=run.ServiceTemplateContainerResourcesArgs(
                            limits={"cpu": f"{s.cpus:g}", "memory": f"{s.memory_mb}Mi"},
                            # Scale to zero: request-based billing. Otherwise CPU stays allocated between
                            # requests (the inference thread and the health checks keep working).
                            cpu_idle=s.min_instances == 0 or s.fractional,
                            startup_cpu_boost=True,
                        ),
                        startup_probe=run.ServiceTemplateContainerStartupProbeArgs(
                            http_get=run.ServiceTemplateContainerStartupProbeHttpGetArgs(
                                path=HEALTH_PATH, port=spec.port
                            ),
                            period_seconds=health.interval_seconds,
                            timeout_seconds=health.timeout_seconds,
                            failure_threshold=startup_failures,
                        ),
                        liveness_probe=run.ServiceTemplateContainerLivenessProbeArgs(
                            http_get=run.ServiceTemplateContainerLivenessProbeHttpGetArgs(
                                path=HEALTH_PATH, port=spec.port
                            ),
                            period_seconds=10,
                            timeout_seconds=health.timeout_seconds,
                            failure_threshold=health.retries,
                        ),
                    )
                ],
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*apis, *grants]),
        )
        ready: list[Any] = [self.service.uri]
        if s.public:
            invoker = run.ServiceIamMember(
                f"{name}-public",
                project=s.project,
                location=s.region,
                name=self.service.name,
                role="roles/run.invoker",
                member="allUsers",
                opts=child,
            )
            ready.append(invoker.id)  # the URL answers the public only once the binding exists
        self.finish(
            pulumi.Output.all(*ready).apply(lambda v: v[0]),
            {
                "cloudrunCpu": s.cpus,
                "cloudrunMemoryMb": s.memory_mb,
                "cloudrunConcurrency": s.concurrency,
                "listPriceUsdPerMonthPerInstance": s.usd_per_month,
                "public": s.public,
            },
        )


def deploy(name: str, cfg: StackConfig, spec: DeploymentSpec) -> CloudRunDeployment:
    return CloudRunDeployment(name, cfg, spec)
