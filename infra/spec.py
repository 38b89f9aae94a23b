"""One deployment spec: what runs, with which environment, health check, memory and user.

Every target renders this same spec into its platform's resources (infra/targets/), and the Render
Blueprint (infra/blueprint.py) and the Docker integration test read it too, so there is one source of
truth for the container's contract.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from infra.config import HEALTH_PATH, Secret, StackConfig
from infra.sizing import Footprint, footprint

# The image's non-root user (uid 10001, `app` in the Dockerfile). Numeric, so it holds even if the name
# changes; the runtime takes the group from the image's /etc/passwd entry for this uid.
RUN_AS_USER = "10001"
# A read-only root filesystem still needs a scratch /tmp. tmpfs pages are charged to the container's
# memory limit, hence a small cap (counted in sizing.HEADROOM_MB). No `noexec`: libraries dlopen() from it.
TMPFS = {"/tmp": "rw,nosuid,nodev,size=64m,mode=1777"}
# The platform waits this much longer than the service's own graceful-shutdown window
# (RERANK_SHUTDOWN_GRACE_S) before it kills the container: uvicorn's exit after the window (lifespan
# shutdown, the inference thread's join) must not be cut short.
STOP_MARGIN_SECONDS = 5
# The most processes and threads the container may run (`--pids-limit`): uvicorn, its workers, their
# inference, tokenizer and intra-op threads, the health-check interpreter. Stops a fork bomb.
PIDS_LIMIT = 512


@dataclass(frozen=True)
class HealthCheck:
    """The container health check: GET the health endpoint from inside the container, with python
    (the image has no curl); healthy only on 200 with `"status": "healthy"`."""

    port: int
    path: str = HEALTH_PATH
    # The same cadence as the Dockerfile's HEALTHCHECK.
    interval_seconds: int = 5
    timeout_seconds: int = 4
    retries: int = 3
    # No `start_interval`: it needs Docker Engine API 1.44+ (Docker 25); Debian's docker.io 20.10,
    # common on VPS hosts, would reject it. Checks run every `interval` during the start period too.
    start_period_seconds: int = 120

    @property
    def command(self) -> str:
        """Shell form (Docker's CMD-SHELL), so `docker run --health-cmd` runs exactly the same thing."""
        code = (
            "import json,sys,urllib.request;"
            f'r=urllib.request.urlopen("http://127.0.0.1:{self.port}{self.path}",'
            f"timeout={self.timeout_seconds - 1});"
            'sys.exit(0 if json.load(r).get("status")=="healthy" else 1)'
        )
        return shlex.join(["python3", "-c", code])

    @property
    def wait_timeout_seconds(self) -> int:
        """How long a deploy may wait for `healthy` before it fails."""
        return self.start_period_seconds + self.retries * self.interval_seconds + 30


@dataclass(frozen=True)
class ImageSpec:
    name: str  # repository[:tag] (or @digest for a pushed image)
    build: bool  # build from the Dockerfile (False: deploy `name` as it is)
    context: Path
    dockerfile: Path
    build_args: Mapping[str, str]
    target: str  # the Dockerfile stage of the image flavour (`runtime`, `runtime-onnx`)
    platform: str | None
    push: bool  # push to a registry after the build
    registry_server: str | None
    registry_username: str | None
    registry_password: Secret | None

    @property
    def digest(self) -> str | None:
        """The digest when `name` pins one (`repo@sha256:...`)."""
        return self.name.split("@", 1)[1] if "@" in self.name else None


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    stack: str
    image: ImageSpec
    port: int
    env: Mapping[str, str]  # plain variables
    secret_env: Mapping[str, Secret]  # variables whose values stay Pulumi secrets everywhere
    health: HealthCheck
    memory_mb: int
    cpus: float | None
    workers: int
    flavour: str = "torch"
    shutdown_grace_seconds: int = 30  # RERANK_SHUTDOWN_GRACE_S
    user: str = RUN_AS_USER
    read_only_root_filesystem: bool = True
    tmpfs: Mapping[str, str] = field(default_factory=lambda: dict(TMPFS))

    @property
    def env_names(self) -> list[str]:
        return sorted({*self.env, *self.secret_env})

    @property
    def stop_grace_seconds(self) -> int:
        """How long the platform waits after SIGTERM before it kills the container."""
        return self.shutdown_grace_seconds + STOP_MARGIN_SECONDS

    @property
    def footprint(self) -> Footprint:
        return footprint(self.flavour)


def build_spec(cfg: StackConfig) -> DeploymentSpec:
    env = {
        "PORT": str(cfg.port),
        "WEB_CONCURRENCY": str(cfg.workers),
        "ENVIRONMENT": cfg.environment,
        "RERANK_DEVICE": cfg.rerank_device,
        "RERANK_MAX_LENGTH": str(cfg.rerank_max_length),
        "LOG_LEVEL": cfg.log_level,
        "RERANK_SHUTDOWN_GRACE_S": str(cfg.shutdown_grace_seconds),
    }
    if cfg.cors_allowed_origins:
        env["CORS_ALLOWED_ORIGINS"] = ",".join(cfg.cors_allowed_origins)
    env.update(cfg.plain_env)
    image = ImageSpec(
        name=cfg.image_name,
        build=cfg.build_image,
        context=cfg.context_dir,
        dockerfile=cfg.dockerfile,
        build_args=dict(cfg.image_build_args),
        target=cfg.build_target,
        platform=cfg.image_platform,
        push=cfg.pushes_image,
        registry_server=cfg.registry_server,
        registry_username=cfg.registry_username,
        registry_password=cfg.registry_password,
    )
    return DeploymentSpec(
        name=cfg.service_name,
        stack=cfg.stack,
        image=image,
        port=cfg.port,
        env=dict(sorted(env.items())),
        secret_env=dict(cfg.secret_env),
        health=HealthCheck(port=cfg.port, start_period_seconds=cfg.start_period_seconds),
        memory_mb=cfg.memory_mb,
        cpus=cfg.cpus,
        workers=cfg.workers,
        flavour=cfg.image_flavour,
        shutdown_grace_seconds=cfg.shutdown_grace_seconds,
        read_only_root_filesystem=cfg.read_only_root_filesystem,
        tmpfs=dict(TMPFS) if cfg.read_only_root_filesystem else {},
    )
