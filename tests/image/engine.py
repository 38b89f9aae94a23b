"""The Docker engine, as the image tests use it: build an image (cached by the hash of its inputs), run
containers, wait for Docker's own health status, read what a user would read (`docker inspect`, logs).

Everything goes through the `docker` CLI, like a person at a terminal; no SDK."""

from __future__ import annotations

import hashlib
import json
import re
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


# The image runs ENVIRONMENT=production, which refuses to start without a credential: test containers get
# this key (given at run time, never baked in) unless the test sets RERANK_API_KEYS or
# RERANK_ALLOW_ANONYMOUS itself.
TEST_API_KEY = "image-test-key-3f9c2e71"
AUTH_HEADERS = {"Authorization": f"Bearer {TEST_API_KEY}"}


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


STAGE_LINE = re.compile(r"^FROM\s+(\S+)\s+AS\s+([A-Za-z0-9_.-]+)\s*$", re.IGNORECASE | re.MULTILINE)
COPY_FROM = re.compile(r"^\s*COPY\s+(?:--\S+\s+)*?--from=([A-Za-z0-9_.-]+)", re.IGNORECASE | re.MULTILINE)


def dockerfile_stages(dockerfile: Path) -> list[str]:
    """The named stages of a Dockerfile, in order."""
    return [name for _, name in STAGE_LINE.findall(dockerfile.read_text())]


def stages_needed(dockerfile: Path, target: str | None = None) -> list[str]:
    """The stages `target` (default: the last stage) is built from, in Dockerfile order, without itself:
    its FROM parents and every stage it (or one of those) copies from."""
    text = dockerfile.read_text()
    matches = list(STAGE_LINE.finditer(text))
    names = [m.group(2) for m in matches]
    parents: dict[str, set[str]] = {}
    for i, match in enumerate(matches):
        body = text[match.end(): matches[i + 1].start() if i + 1 < len(matches) else len(text)]
        parents[match.group(2)] = ({match.group(1)} | set(COPY_FROM.findall(body))) & set(names)
    wanted = target if target in parents else names[-1]
    needed: set[str] = set()
    todo = list(parents[wanted])
    while todo:
        stage = todo.pop()
        if stage not in needed:
            needed.add(stage)
            todo.extend(parents[stage])
    return [name for name in names if name in needed]


def stage_tag(tag: str, stage: str) -> str:
    return f"{tag}-stage-{stage}"


def build_image(
    context: Path, tag: str, build_args: Mapping[str, str], log: Path, timeout: float = 1800,
    target: str | None = None,
) -> BuildResult:
    """`docker build` unless an image with this tag (the hash of its inputs) already exists.

    The classic builder keeps the result of every stage before the target as an untagged image (GBs per run
    here: the venv stage, the model stage). Each of those stages is built first with `--target` and tagged
    `<tag>-stage-<name>` (the full build then reuses them from the cache), so nothing the tests build is left
    untagged, and `remove_stale_tags` frees them together with the image."""
    before = stages_needed(context / "Dockerfile", target)
    if image_exists(tag) and all(image_exists(stage_tag(tag, stage)) for stage in before):
        return BuildResult(tag, None, log)
    log.parent.mkdir(parents=True, exist_ok=True)
    arguments: list[str] = []
    for key, value in build_args.items():
        arguments += ["--build-arg", f"{key}={value}"]
    steps = [["--target", stage, "--tag", stage_tag(tag, stage)] for stage in before]
    steps.append(["--tag", tag, *(["--target", target] if target else [])])
    started = time.monotonic()
    with log.open("w") as out:
        for step in steps:
            command = ["docker", "build", *step, *arguments, str(context)]
            out.write(" ".join(command) + "\n")
            out.flush()
            result = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
            if result.returncode != 0:
                out.close()
                tail = "\n".join(log.read_text().splitlines()[-40:])
                raise DockerError(f"docker build failed (exit {result.returncode}); log {log}:\n{tail}")
    return BuildResult(tag, time.monotonic() - started, log)


def remove_stale_tags(repository: str, prefix: str, keep: str) -> None:
    """Drop images of earlier inputs (same repository, same kind) and their stage images, so disk use stays
    bounded."""
    listing = docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}", repository, check=False).stdout
    for tag in listing.split():
        if tag == keep or tag.startswith(stage_tag(keep, "")):
            continue
        if tag.split(":", 1)[1].startswith(prefix):
            docker("image", "rm", tag, check=False)


def dangling_images(label: str | None = None) -> set[str]:
    """IDs of untagged images nothing else builds on (`docker image ls --filter dangling=true`)."""
    args = ["image", "ls", "--quiet", "--no-trunc", "--filter", "dangling=true"]
    if label:
        args += ["--filter", f"label={label}"]
    return set(docker(*args).stdout.split())


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
        if not {"RERANK_API_KEYS", "RERANK_ALLOW_ANONYMOUS"} & set(env):
            env = {**env, "RERANK_API_KEYS": TEST_API_KEY}
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
