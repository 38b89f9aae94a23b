"""The Docker engine, as the image tests use it: build an image (cached by the hash of its inputs), run
containers, wait for Docker's own health status, read what a user would read (`docker inspect`, logs).

Everything goes through the `docker` CLI, like a person at a terminal; no SDK."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx


class DockerError(RuntimeError):
    pass


def docker(
    *args: str, check: bool = True, timeout: float = 120, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise DockerError(
            f"docker {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    return result


def engine_problem() -> str | None:
    """None when a Docker engine answers; otherwise why not, in words a user can act on."""
    if shutil.which("docker") is None:
        return "the docker CLI is not installed (apt-get install docker.io, or run .ci/run)"
    try:
        result = docker("info", "--format", "{{.ServerVersion}}", check=False, timeout=20)
    except subprocess.TimeoutExpired:
        return "`docker info` did not answer within 20 s"
    if result.returncode != 0 or not result.stdout.strip():
        return f"no Docker engine is reachable (`docker info`: {result.stderr.strip()[:300]}); start dockerd"
    return None


def image_exists(tag: str) -> bool:
    return docker("image", "inspect", tag, check=False).returncode == 0


def image_size(tag: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())


def inputs_hash(root: Path, paths: Iterable[Path], extra: Mapping[str, str] = {}) -> str:
    """sha256 over the relative names and contents of `paths` (files, or folders walked recursively)."""
    digest = hashlib.sha256()
    for key, value in sorted(extra.items()):
        digest.update(f"{key}={value}\0".encode())
    for path in paths:
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if "__pycache__" in file.parts or file.suffix == ".pyc":
                continue
            relative = file.relative_to(root).as_posix() if file.is_relative_to(root) else file.as_posix()
            digest.update(relative.encode() + b"\0")
            if file.suffix == ".whl":  # wheels are immutable per file name; don't hash 300 MB every run
                digest.update(str(file.stat().st_size).encode())
            else:
                digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


@dataclass
class BuildResult:
    tag: str
    seconds: float | None  # None: reused an image built earlier from the same inputs
    log: Path


def build_image(
    context: Path,
    tag: str,
    build_args: Mapping[str, str],
    log: Path,
    timeout: float = 1800,
    target: str | None = None,
) -> BuildResult:
    """`docker build [--target T]` unless an image with this tag (the hash of its inputs) already exists."""
    if image_exists(tag):
        return BuildResult(tag, None, log)
    log.parent.mkdir(parents=True, exist_ok=True)
    command = ["docker", "build", "--tag", tag]
    if target:
        command += ["--target", target]
    for key, value in build_args.items():
        command += ["--build-arg", f"{key}={value}"]
    command.append(str(context))
    started = time.monotonic()
    with log.open("w") as out:
        out.write(" ".join(command) + "\n")
        out.flush()
        result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-40:])
        raise DockerError(f"docker build failed (exit {result.returncode}); log {log}:\n{tail}")
    return BuildResult(tag, seconds, log)


def remove_stale_tags(repository: str, prefix: str, keep: str) -> None:
    """Drop images of earlier inputs (same repository, same kind), so disk use stays bounded."""
    listing = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository, check=False).stdout
    for tag in listing.split():
        if tag != keep and tag.split(":", 1)[1].startswith(prefix):
            docker("image", "rm", tag, check=False)


@dataclass
class Container:
    """A running container of the image under test; removed by `remove()` (the fixtures do it)."""

    name: str
    image: str
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def run(cls, image: str, *options: str, env: Mapping[str, str] = {}) -> Container:
        name = f"reranker-test-{uuid.uuid4().hex[:10]}"
        args = ["run", "--detach", "--name", name, *options]
        for key, value in env.items():
            args += ["--env", f"{key}={value}"]
        container = cls(name, image)
        docker(*args, image)
        container.started = time.monotonic()
        return container

    def inspect(self) -> dict:
        return json.loads(docker("inspect", self.name).stdout)[0]

    def logs(self) -> str:
        result = docker("logs", self.name, check=False)
        return result.stdout + result.stderr

    def wait_healthy(self, timeout: float) -> float:
        """Seconds from `docker run` until Docker's HEALTHCHECK says healthy."""
        deadline = self.started + timeout
        while True:
            state = self.inspect()["State"]
            health = (state.get("Health") or {}).get("Status")
            if health == "healthy":
                return time.monotonic() - self.started
            if not state["Running"]:
                raise AssertionError(
                    f"container exited ({state.get('ExitCode')}) before turning healthy; "
                    f"logs:\n{self.logs()[-4000:]}"
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"container not healthy after {timeout:.0f}s (health: {health}); "
                    f"logs:\n{self.logs()[-4000:]}"
                )
            time.sleep(0.25)

    def exec(
        self, *command: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return docker("exec", self.name, *command, check=check, timeout=timeout)

    def host_port(self, container_port: int = 8000) -> int:
        ports = self.inspect()["NetworkSettings"]["Ports"][f"{container_port}/tcp"]
        return int(ports[0]["HostPort"])

    def peak_memory_bytes(self) -> int:
        """The container's cgroup memory high-water mark: memory.peak (cgroup v2) or
        memory.max_usage_in_bytes (cgroup v1), read inside the container."""
        script = (
            "for f in /sys/fs/cgroup/memory.peak /sys/fs/cgroup/memory/memory.max_usage_in_bytes; "
            "do [ -r $f ] && cat $f && exit 0; done; exit 1"
        )
        result = self.exec("sh", "-c", script, check=False)
        if result.returncode != 0:
            raise AssertionError(
                "the container shows neither cgroup v2 memory.peak nor v1 memory.max_usage_in_bytes"
            )
        return int(result.stdout.split()[0])

    def remove(self) -> None:
        docker("rm", "--force", "--volumes", self.name, check=False)


def wait_http_ok(url: str, timeout: float = 30) -> None:
    """The published port can lag the health status by a moment (docker-proxy)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} did not answer 200 within {timeout:.0f}s")
        time.sleep(0.25)
