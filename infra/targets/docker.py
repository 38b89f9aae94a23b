"""Target `docker`: the image and one container on a Docker engine, local or remote (ssh://).

Local (the dev default): pulumi-docker builds the image from the repository's Dockerfile on the local
engine and runs it. Remote (`dockerHost: ssh://user@host`): the image is built here, pushed to a
registry, pulled by the remote engine (registry credentials are secrets) and run there.

`container_args()` is the single description of the container: the program passes its result to
`docker.Container` unchanged, and `dev_container_args()` / `docker_run_argv()` hand the same arguments
to the Docker integration test.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_docker as docker

from infra.config import HEALTH_PATH, StackConfig, load_stack_file
from infra.spec import STOP_GRACE_SECONDS, DeploymentSpec, build_spec

RESTART_POLICY = "unless-stopped"
LOG_OPTIONS = {"max-size": "10m", "max-file": "3"}  # keep a long-running VPS disk from filling up


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
        "destroy_grace_seconds": STOP_GRACE_SECONDS,
        "log_driver": "json-file",
        "log_opts": dict(LOG_OPTIONS),
    }
    if spec.tmpfs:
        args["tmpfs"] = dict(spec.tmpfs)
    if spec.cpus is not None:
        args["cpus"] = f"{spec.cpus:g}"
    return args


def dev_container_args(image: str, stack: str = "dev") -> dict[str, Any]:
    """The container arguments the `dev` stack's program gives `docker.Container`, as plain values.

    Reads the real `Pulumi.<stack>.yaml` with the same validation as `pulumi preview`; `image` replaces
    the image the program would build (pass the tag or id of the image built from the Dockerfile).
    Raises ValueError if the stack holds encrypted secrets, which only `pulumi up` can decrypt.
    """
    cfg = load_stack_file(stack)
    return container_args(
        build_spec(cfg), image, host_port=cfg.host_port, bind_address=cfg.bind_address, reveal_secrets=True
    )


def docker_run_argv(args: dict[str, Any], docker: str = "docker") -> list[str]:
    """`docker run --detach ...` with the same settings as `container_args()` (plain values only).

    Equivalent to what the Pulumi provider creates, except `wait`/`wait_timeout`: the caller polls
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
    argv += ["--stop-timeout", str(args["destroy_grace_seconds"]), "--log-driver", args["log_driver"]]
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


class DockerDeployment(pulumi.ComponentResource):
    """The reranker on one Docker engine."""

    url: pulumi.Output[str]
    health_url: pulumi.Output[str]
    image_name: pulumi.Output[str]
    image_digest: pulumi.Output[str]

    def __init__(
        self, name: str, cfg: StackConfig, spec: DeploymentSpec, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("reranker:targets:DockerDeployment", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        provider = None
        if cfg.is_remote_docker:
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
                host=cfg.docker_host,
                ssh_opts=list(cfg.docker_ssh_opts) or None,
                registry_auth=registry_auth,
                opts=child,
            )
        on_engine = pulumi.ResourceOptions(parent=self, provider=provider)

        if spec.image.build:
            registry = None
            if spec.image.push and spec.image.registry_username and spec.image.registry_password:
                registry = docker.RegistryArgs(
                    server=spec.image.registry_server,
                    username=spec.image.registry_username,
                    password=spec.image.registry_password.as_output(),
                )
            # Built by the local engine (the default provider), pushed when a remote engine pulls it.
            image = docker.Image(
                f"{name}-image",
                image_name=spec.image.name,
                build=docker.DockerBuildArgs(
                    context=str(spec.image.context),
                    dockerfile=str(spec.image.dockerfile),
                    args=dict(spec.image.build_args) or None,
                    platform=spec.image.platform,
                ),
                skip_push=not spec.image.push,
                registry=registry,
                opts=child,
            )
            self.image_name = image.image_name
            self.image_digest = image.repo_digest
            if cfg.is_remote_docker:
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
            **container_args(spec, image_ref, host_port=cfg.host_port, bind_address=cfg.bind_address),
            opts=pulumi.ResourceOptions(
                parent=self,
                provider=provider,
                # A fixed container name and host port cannot exist twice: replace by delete, then create.
                delete_before_replace=True,
                additional_secret_outputs=["envs"],
            ),
        )
        base = f"http://{cfg.public_host}:{cfg.host_port}"
        self.url = self.container.id.apply(lambda _: base)
        self.health_url = self.container.id.apply(lambda _: base + HEALTH_PATH)
        self.register_outputs(
            {
                "url": self.url,
                "healthUrl": self.health_url,
                "imageName": self.image_name,
                "imageDigest": self.image_digest,
            }
        )
