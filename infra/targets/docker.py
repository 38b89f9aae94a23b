"""Target `docker`: the image and one container on a Docker engine, local or remote (ssh://).

Local (the dev default): pulumi-docker builds the image from the repository's Dockerfile on the local
engine and runs it. Remote (`dockerHost: ssh://user@host`): the image is built here, pushed to a
registry, pulled by the remote engine (registry credentials are secrets) and run there.

`container_args()` is the single description of the container: the program passes its result to
`docker.Container` unchanged, and `dev_container_args()` / `docker_run_argv()` hand the same arguments
to the Docker integration test.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from infra.config import (
    Key,
    StackConfig,
    _Reader,
    check_registry_image,
    load_stack_file,
    refuse_scaling,
)
from infra.spec import PIDS_LIMIT, DeploymentSpec, build_spec
from infra.targets import _image
from infra.targets._base import Deployment

NAME = "docker"
KEYS: tuple[Key, ...] = (
    Key("hostPort", "Port published on the Docker host (default: `port`)"),
    Key("bindAddress", "Host address the port is published on (127.0.0.1 local, 0.0.0.0 remote)"),
    Key("publicHost", "Host name in the `url` output (default: localhost, or the dockerHost's host)"),
    Key("dockerHost", "Remote Docker engine, e.g. `ssh://deploy@203.0.113.10`; unset: the local engine"),
    Key("dockerSshOpts", "Extra ssh options for an ssh:// dockerHost (list)"),
)
# A Docker engine takes any memory limit: no size table, the limit is memoryMb itself.
SIZES: tuple = ()

RESTART_POLICY = "unless-stopped"
LOG_OPTIONS = {"max-size": "10m", "max-file": "3"}  # keep a long-running VPS disk from filling up
SECURITY_OPTS = ["no-new-privileges:true"]
CAP_DROP = ["ALL"]


@dataclass(frozen=True)
class Settings:
    service_name: str
    host_port: int
    bind_address: str
    public_host: str
    docker_host: str | None
    docker_ssh_opts: tuple[str, ...]

    @property
    def remote(self) -> bool:
        return self.docker_host is not None and not self.docker_host.startswith("unix://")

    @property
    def pulls_from_registry(self) -> bool:
        return self.remote


def parse(r: _Reader, common: StackConfig) -> Settings:
    host_port = r.integer("hostPort", common.port, 1, 65535)
    docker_host = r.string("dockerHost")
    docker_ssh_opts = r.string_list("dockerSshOpts")
    remote = docker_host is not None and not docker_host.startswith("unix://")
    bind_address = r.string("bindAddress", "0.0.0.0" if remote else "127.0.0.1") or "127.0.0.1"
    public_host = r.string("publicHost", _host_of(docker_host) if remote else "localhost") or "localhost"
    _check_docker_host(r, docker_host)
    if remote:
        check_registry_image(r, common.image_name, "the remote Docker host", r.deploy)
    scaling = common.scaling
    if scaling.min_instances != 1 or scaling.max_instances != 1:
        refuse_scaling(
            r,
            scaling,
            ("minInstances", "maxInstances"),
            "the docker target runs exactly one container on one engine "
            "(for more instances use target kubernetes, or a platform target)",
        )
    refuse_scaling(
        r,
        scaling,
        ("targetCpuPercent", "concurrency"),
        "a single Docker container has no autoscaler or router",
    )
    return Settings(
        service_name=f"reranker-{common.stack}",
        host_port=host_port,
        bind_address=bind_address,
        public_host=public_host,
        docker_host=docker_host,
        docker_ssh_opts=docker_ssh_opts,
    )


def _host_of(docker_host: str | None) -> str:
    if not docker_host:
        return "localhost"
    return urlsplit(docker_host).hostname or "localhost"


def _check_docker_host(r: _Reader, docker_host: str | None) -> None:
    if docker_host is None:
        return
    parts = urlsplit(docker_host)
    if parts.scheme not in ("ssh", "tcp", "unix") or (parts.scheme != "unix" and not parts.hostname):
        r.problem(
            "dockerHost",
            f"={docker_host!r} must look like ssh://user@host, tcp://host:2376 "
            "or unix:///var/run/docker.sock "
            "(pulumi config set dockerHost ssh://deploy@203.0.113.10)",
        )


def container_args(
    spec: DeploymentSpec,
    image: Any,
    *,
    host_port: int,
    bind_address: str,
    reveal_secrets: bool = False,
) -> dict[str, Any]:
    """The exact keyword arguments for `pulumi_docker.Container` (besides the resource name and options).

    `image` is the image id or reference to run. Secret variables are Pulumi secret Outputs
    (`KEY=value` once resolved) unless `reveal_secrets`, which gives plain strings for a `docker run`.
    """
    envs: list[Any] = [f"{name}={value}" for name, value in spec.env.items()]
    for name, secret in spec.secret_env.items():
        if reveal_secrets:
            envs.append(f"{name}={secret.reveal()}")
        else:
            envs.append(secret.as_output().apply(lambda value, name=name: f"{name}={value}"))
    health = spec.health
    args: dict[str, Any] = {
        "image": image,
        "name": spec.name,
        "envs": envs,
        "user": spec.user,
        "memory": spec.memory_mb,
        # Same as `memory`: no swap, so the limit is real and an undersized container is OOM-killed.
        "memory_swap": spec.memory_mb,
        "ports": [{"internal": spec.port, "external": host_port, "ip": bind_address, "protocol": "tcp"}],
        "healthcheck": {
            "tests": ["CMD-SHELL", health.command],
            "interval": f"{health.interval_seconds}s",
            "timeout": f"{health.timeout_seconds}s",
            "retries": health.retries,
            "start_period": f"{health.start_period_seconds}s",
        },
        # `pulumi up` fails if the container does not turn healthy in time (e.g. OOM-killed while loading).
        "wait": True,
        "wait_timeout": health.wait_timeout_seconds,
        "restart": RESTART_POLICY,
        "read_only": spec.read_only_root_filesystem,
        # SIGTERM, then this long for the graceful shutdown (RERANK_SHUTDOWN_GRACE_S + margin), then SIGKILL:
        # on `docker stop` / a restart (stop_timeout) and when Pulumi replaces or destroys it.
        "stop_signal": "SIGTERM",
        "stop_timeout": spec.stop_grace_seconds,
        "destroy_grace_seconds": spec.stop_grace_seconds,
        "capabilities": {"drops": list(CAP_DROP)},
        "security_opts": list(SECURITY_OPTS),
        "log_driver": "json-file",
        "log_opts": dict(LOG_OPTIONS),
    }
    if spec.tmpfs:
        args["tmpfs"] = dict(spec.tmpfs)
    if spec.cpus is not None:
        args["cpus"] = f"{spec.cpus:g}"
    return args


def pids_limit_command(container_name: str, docker: str = "docker") -> str:
    """pulumi-docker (5.2.0, the newest) has no PidsLimit argument: the program sets the container's
    cgroup pids limit right after creating it, with the Docker CLI against the same engine."""
    return shlex.join([docker, "update", "--pids-limit", str(PIDS_LIMIT), container_name])


def dev_container_args(image: str, stack: str = "dev") -> dict[str, Any]:
    """The container arguments the `dev` stack's program gives `docker.Container`, as plain values.

    Reads the real `Pulumi.<stack>.yaml` with the same validation as `pulumi preview`; `image` replaces
    the image the program would build (pass the tag or id of the image built from the Dockerfile).
    Raises ValueError if the stack holds encrypted secrets, which only `pulumi up` can decrypt.
    """
    cfg = load_stack_file(stack)
    settings: Settings = cfg.target_settings
    return container_args(
        build_spec(cfg),
        image,
        host_port=settings.host_port,
        bind_address=settings.bind_address,
        reveal_secrets=True,
    )


def docker_run_argv(args: dict[str, Any], docker: str = "docker", pids_limit: int = PIDS_LIMIT) -> list[str]:
    """`docker run --detach ...` with the same settings as `container_args()` (plain values only) plus
    the pids limit that `pids_limit_command()` applies to the Pulumi-created container.

    Equivalent to what the Pulumi program creates, except `wait`/`wait_timeout`: the caller polls
    `docker inspect -f '{{.State.Health.Status}}'` for up to `args["wait_timeout"]` seconds.
    """
    health = args["healthcheck"]
    kind, command = health["tests"]
    assert kind == "CMD-SHELL", "docker run only takes a shell-form health command"
    argv = [docker, "run", "--detach", "--name", args["name"], "--user", args["user"]]
    argv += ["--memory", f"{args['memory']}m", "--memory-swap", f"{args['memory_swap']}m"]
    if "cpus" in args:
        argv += ["--cpus", args["cpus"]]
    for port in args["ports"]:
        argv += ["--publish", f"{port['ip']}:{port['external']}:{port['internal']}/{port['protocol']}"]
    argv += ["--health-cmd", command, "--health-interval", health["interval"]]
    argv += ["--health-timeout", health["timeout"], "--health-retries", str(health["retries"])]
    argv += ["--health-start-period", health["start_period"], "--restart", args["restart"]]
    argv += ["--stop-signal", args["stop_signal"], "--stop-timeout", str(args["stop_timeout"])]
    for capability in args["capabilities"]["drops"]:
        argv += ["--cap-drop", capability]
    for option in args["security_opts"]:
        argv += ["--security-opt", option]
    argv += ["--pids-limit", str(pids_limit)]
    argv += ["--log-driver", args["log_driver"]]
    for key, value in args["log_opts"].items():
        argv += ["--log-opt", f"{key}={value}"]
    if args["read_only"]:
        argv.append("--read-only")
    for path, options in args.get("tmpfs", {}).items():
        argv += ["--tmpfs", f"{path}:{options}"]
    for entry in args["envs"]:
        if not isinstance(entry, str):
            raise TypeError("docker_run_argv needs plain values: build the args with reveal_secrets=True")
        argv += ["--env", entry]
    argv.append(args["image"])
    return argv


class DockerDeployment(Deployment):
    """The reranker on one Docker engine."""

    def __init__(
        self, name: str, cfg: StackConfig, spec: DeploymentSpec, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("reranker:targets:DockerDeployment", name, None, opts)
        settings: Settings = cfg.target_settings
        child = pulumi.ResourceOptions(parent=self)

        provider = None
        if settings.remote:
            registry_auth = None
            if spec.image.registry_username and spec.image.registry_password and spec.image.registry_server:
                registry_auth = [
                    docker.ProviderRegistryAuthArgs(
                        address=spec.image.registry_server,
                        username=spec.image.registry_username,
                        password=spec.image.registry_password.as_output(),
                    )
                ]
            provider = docker.Provider(
                f"{name}-engine",
                host=settings.docker_host,
                ssh_opts=list(settings.docker_ssh_opts) or None,
                registry_auth=registry_auth,
                opts=child,
            )
        on_engine = pulumi.ResourceOptions(parent=self, provider=provider)

        if spec.image.build:
            registry = _image.user_registry(spec.image) if spec.image.push else None
            # Built by the local engine (the default provider), pushed when a remote engine pulls it.
            image = docker.Image(
                f"{name}-image",
                image_name=spec.image.name,
                build=_image.build_args(spec.image),
                skip_push=not spec.image.push,
                registry=registry,
                opts=child,
            )
            self.image_name = image.image_name
            self.image_digest = image.repo_digest
            if settings.remote:
                pulled = docker.RemoteImage(
                    f"{name}-pull", name=image.repo_digest, keep_locally=True, opts=on_engine
                )
                image_ref: Any = pulled.image_id
            else:
                # For a local build, repoDigest is the image id: a rebuild replaces the container.
                image_ref = image.repo_digest
        else:
            pulled = docker.RemoteImage(
                f"{name}-pull", name=spec.image.name, keep_locally=True, opts=on_engine
            )
            self.image_name = pulumi.Output.from_input(spec.image.name)
            self.image_digest = pulled.repo_digest
            image_ref = pulled.image_id

        self.container = docker.Container(
            f"{name}-container",
            **container_args(
                spec, image_ref, host_port=settings.host_port, bind_address=settings.bind_address
            ),
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=provider,
                # A fixed container name and host port cannot exist twice: replace by delete, then create.
                delete_before_replace=True,
                additional_secret_outputs=["envs"],
            ),
        )
        # The pids limit pulumi-docker cannot set (re-applied whenever the container is replaced).
        limited = command.local.Command(
            f"{name}-pids-limit",
            create=pids_limit_command(spec.name),
            environment={"DOCKER_HOST": settings.docker_host} if settings.docker_host else None,
            triggers=[self.container.id],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.container]),
        )
        base = f"http://{settings.public_host}:{settings.host_port}"
        self.finish(pulumi.Output.all(self.container.id, limited.stdout).apply(lambda _: base))


def deploy(name: str, cfg: StackConfig, spec: DeploymentSpec) -> DockerDeployment:
    return DockerDeployment(name, cfg, spec)
