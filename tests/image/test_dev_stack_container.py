"""The dev stack's container, for real: the exact arguments the Pulumi program gives `docker.Container`
(env, health check, memory, user, read-only root, dropped capabilities, no-new-privileges, pids limit,
port) run on the local engine with the image built from
the Dockerfile (JinaBERT-shaped test model), then `scripts/smoke_test.py` against it. Green only if the
container turns healthy under that memory limit, as `pulumi up` (wait=True) requires."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from infra.spec import PIDS_LIMIT
from infra.targets.docker import dev_container_args, docker_run_argv
from tests.image.engine import docker
from tests.service.conftest import free_port

pytestmark = pytest.mark.image

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def test_dev_stack_container_turns_healthy_and_passes_the_smoke_test(build_test_image, results):
    args = dev_container_args(build_test_image("alibi"))
    # Two deviations from the stack, both so the test can run beside anything else on the machine:
    # a unique name and a free host port (the stack publishes 127.0.0.1:8000).
    args["name"] = f"reranker-dev-test-{uuid.uuid4().hex[:8]}"
    host_port = free_port()
    for port in args["ports"]:
        port["external"] = host_port
    started = time.monotonic()
    subprocess.run(docker_run_argv(args), check=True, capture_output=True, text=True)
    try:
        deadline = started + args["wait_timeout"]
        status = ""
        while time.monotonic() < deadline:
            status = docker("inspect", "-f", "{{.State.Health.Status}}", args["name"]).stdout.strip()
            if status in {"healthy", "unhealthy"}:
                break
            time.sleep(0.5)
        logs = docker("logs", args["name"], check=False)
        assert status == "healthy", f"health: {status}\n{logs.stdout[-3000:]}{logs.stderr[-3000:]}"
        results["dev stack container: seconds to healthy (1 GB, read-only root)"] = round(
            time.monotonic() - started, 1
        )

        smoke = subprocess.run(
            [
                sys.executable,
                str(PROJECT_ROOT / "scripts" / "smoke_test.py"),
                f"http://127.0.0.1:{host_port}",
                "--deadline",
                "60",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert smoke.returncode == 0, smoke.stdout + smoke.stderr
        state = docker("inspect", "-f", "{{.State.OOMKilled}} {{.RestartCount}}", args["name"]).stdout.split()
        assert state == ["false", "0"], f"OOMKilled / restarts: {state}"
        # The hardening the docker target applies (what served the smoke test above).
        host = json.loads(docker("inspect", "-f", "{{json .HostConfig}}", args["name"]).stdout)
        assert host["CapDrop"] == ["ALL"] and host["SecurityOpt"] == ["no-new-privileges:true"]
        assert host["PidsLimit"] == PIDS_LIMIT and host["ReadonlyRootfs"] is True
        assert host["Memory"] == args["memory"] * 1024 * 1024
    finally:
        docker("rm", "--force", args["name"], check=False)
