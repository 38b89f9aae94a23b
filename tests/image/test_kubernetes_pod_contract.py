"""The kubernetes target's pod, for real: the Deployment and Secret the program declares for
infra/examples/Pulumi.kubernetes.yaml (captured through Pulumi's mocks) run on the local Docker engine
with the image built from the Dockerfile (JinaBERT-shaped test model), as a kubelet would run them:
the same user and group, read-only root with the memory-backed /tmp, no capabilities, no privilege
escalation, the memory and CPU limits, every variable (secrets resolved from the Secret through their
secretKeyRef), then the startup, readiness and liveness probes with their own path, port, period and
thresholds. Green only if the pod would start and stay up on a cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.image.engine import docker
from tests.infra import harness
from tests.infra.harness import FAKE_SECRETS, plain
from tests.service.conftest import free_port

pytestmark = pytest.mark.image

PROJECT_ROOT = Path(__file__).resolve().parents[2]
API_KEY = FAKE_SECRETS["apiKeys"].split(",")[0]


def declared_pod() -> tuple[dict, dict[str, dict]]:
    """The Deployment the example declares, and its Secrets by name, as plain data."""
    run = harness.declared(
        "kubernetes",
        set={"imageName": "ghcr.io/acme/reranker:2.0.0", "registryUsername": "acme-bot"},
        secrets={"apiKeys": FAKE_SECRETS["apiKeys"], "registryPassword": FAKE_SECRETS["registryPassword"]},
    )
    objects = {r.name: plain(r.inputs) for r in run.mocks.created if r.typ.startswith("kubernetes:")}
    deployment = next(o for o in objects.values() if o["kind"] == "Deployment")
    secrets = {
        f"{name}-{harness.MOCK_SUFFIX}": obj for name, obj in objects.items() if obj["kind"] == "Secret"
    }
    return deployment, secrets


def mebibytes(quantity: str) -> int:
    units = {"Mi": 1, "Gi": 1024}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    raise ValueError(f"unexpected quantity {quantity!r}")


def cores(quantity: str) -> str:
    return f"{int(quantity[:-1]) / 1000:g}" if quantity.endswith("m") else quantity


def pod_run_argv(
    deployment: dict, secrets: dict[str, dict], image: str, name: str, host_port: int
) -> list[str]:
    """`docker run` of the pod's one container with what the kubelet would give it."""
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    context = {**pod.get("securityContext", {}), **container.get("securityContext", {})}
    argv = ["docker", "run", "--detach", "--name", name]
    argv += ["--user", f"{int(context['runAsUser'])}:{int(context['runAsGroup'])}"]
    if context.get("readOnlyRootFilesystem"):
        argv.append("--read-only")
    for capability in context.get("capabilities", {}).get("drop", []):
        argv += ["--cap-drop", capability]
    if context.get("allowPrivilegeEscalation") is False:
        argv += ["--security-opt", "no-new-privileges"]
    if context.get("seccompProfile", {}).get("type") == "RuntimeDefault":
        pass  # Docker's default seccomp profile is the runtime default
    limits = container["resources"]["limits"]
    memory = mebibytes(limits["memory"])
    argv += ["--memory", f"{memory}m", "--memory-swap", f"{memory}m", "--cpus", cores(limits["cpu"])]
    volumes = {volume["name"]: volume for volume in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        empty_dir = volumes[mount["name"]]["emptyDir"]
        assert empty_dir["medium"] == "Memory", f"no Docker equivalent for volume {mount['name']}"
        size = mebibytes(empty_dir["sizeLimit"])
        argv += ["--tmpfs", f"{mount['mountPath']}:rw,nosuid,nodev,size={size}m,mode=1777"]
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == "http"]
    argv += ["--publish", f"127.0.0.1:{host_port}:{int(port)}"]
    argv += ["--stop-timeout", str(int(pod["terminationGracePeriodSeconds"]))]
    for variable in container["env"]:
        if "value" in variable:
            value = variable["value"]
        else:
            ref = variable["valueFrom"]["secretKeyRef"]
            value = secrets[ref["name"]]["stringData"][ref["key"]]
        argv += ["--env", f"{variable['name']}={value}"]
    argv.append(image)
    return argv


def probe_ok(url: str, timeout: float) -> bool:
    """A kubelet httpGet probe: success is a status from 200 to 399 within the timeout."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 400
    except urllib.error.HTTPError as error:
        return 200 <= error.code < 400
    except OSError:
        return False


def probe_url(probe: dict, host_port: int) -> str:
    assert probe["httpGet"]["port"] == "http", "the probe must target the named container port"
    return f"http://127.0.0.1:{host_port}{probe['httpGet']['path']}"


def run_probe(probe: dict, host_port: int) -> int:
    """Probe like the kubelet: every periodSeconds until success, at most failureThreshold times;
    returns the attempts it took (AssertionError when the threshold is exhausted)."""
    url = probe_url(probe, host_port)
    for attempt in range(1, int(probe["failureThreshold"]) + 1):
        started = time.monotonic()
        if probe_ok(url, probe["timeoutSeconds"]):
            return attempt
        time.sleep(max(0.0, probe["periodSeconds"] - (time.monotonic() - started)))
    raise AssertionError(f"probe {url} failed {probe['failureThreshold']} times")


def test_the_declared_pod_starts_passes_its_probes_and_keeps_its_contract(build_test_image, results):
    deployment, secrets = declared_pod()
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    name = f"reranker-k8s-pod-test-{uuid.uuid4().hex[:8]}"
    host_port = free_port()
    argv = pod_run_argv(deployment, secrets, build_test_image("alibi"), name, host_port)
    started = time.monotonic()
    subprocess.run(argv, check=True, capture_output=True, text=True)
    try:
        attempts = run_probe(container["startupProbe"], host_port)
        results["kubernetes pod: seconds until the startup probe passed (1 GiB, 1 CPU)"] = round(
            time.monotonic() - started, 1
        )
        assert attempts <= container["startupProbe"]["failureThreshold"]
        for kind in ("readinessProbe", "livenessProbe"):
            assert probe_ok(probe_url(container[kind], host_port), container[kind]["timeoutSeconds"]), kind

        def inside(*command: str) -> subprocess.CompletedProcess:
            return docker("exec", name, *command, check=False)

        assert inside("id", "-u").stdout.strip() == "10001" and inside("id", "-g").stdout.strip() == "10001"
        assert inside("touch", "/home/app/written").returncode != 0, "the root filesystem is writable"
        assert inside("touch", "/tmp/written").returncode == 0, "/tmp is not writable"
        status = dict(
            line.split(":\t", 1)
            for line in inside("cat", "/proc/1/status").stdout.splitlines()
            if ":\t" in line
        )
        assert status["CapEff"].strip() == "0" * 16 and status["NoNewPrivs"].strip() == "1"
        environment = dict(line.split("=", 1) for line in inside("env").stdout.splitlines() if "=" in line)
        for variable in container["env"]:
            assert variable["name"] in environment, variable["name"]
        assert environment["RERANK_API_KEYS"] == FAKE_SECRETS["apiKeys"]  # resolved from the Secret
        host = json.loads(docker("inspect", name).stdout)[0]["HostConfig"]
        assert host["Memory"] == 1024 * 2**20 and host["NanoCpus"] == 1_000_000_000

        smoke = subprocess.run(
            [sys.executable, str(PROJECT_ROOT / "scripts" / "smoke_test.py"), f"http://127.0.0.1:{host_port}",
             "--api-key", API_KEY, "--deadline", "60"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr

        # SIGTERM, as the kubelet sends after preStop: the service exits within the grace period.
        grace = int(pod["terminationGracePeriodSeconds"])
        stopping = time.monotonic()
        docker("stop", "--time", str(grace), name)
        assert time.monotonic() - stopping < grace, "the container had to be killed"
        state = json.loads(docker("inspect", name).stdout)[0]["State"]
        assert state["OOMKilled"] is False and state["ExitCode"] != 137, state
    except BaseException:
        logs = docker("logs", name, check=False)
        print(logs.stdout[-3000:], logs.stderr[-3000:])
        raise
    finally:
        docker("rm", "--force", name, check=False)
