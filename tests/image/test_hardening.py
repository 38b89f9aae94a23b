"""The image run locked down (read-only root, a small tmpfs /tmp, non-root, no capabilities, no new
privileges, a pids limit, 1 GB), serving authenticated requests; and the image holds no secret: not in its
config (Env, Labels, Cmd), not in any layer's command (`docker history --no-trunc`), not as a file."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest

from tests.image.engine import AUTH_HEADERS, docker, wait_http_ok

pytestmark = pytest.mark.image

HARDENED = ("--read-only", "--tmpfs", "/tmp:rw,noexec,nosuid,size=64m", "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges", "--pids-limit", "128", "--memory", "1g",
            "--memory-swap", "1g", "--publish", "127.0.0.1::8000")
SECRET_NAMES = re.compile(r"(API_?KEYS?|SECRET|PASSWORD|PASSWD|TOKEN|PRIVATE|CREDENTIAL|SERVICE_ROLE|ANON_KEY)",
                          re.IGNORECASE)
SECRET_VALUES = re.compile(r"(eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}|-----BEGIN [A-Z ]*PRIVATE KEY|"
                           r"ghp_[A-Za-z0-9]{20,}|rnd_[A-Za-z0-9]{16,}|sk-[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16})")


@pytest.fixture(scope="module")
def image(build_test_image) -> str:
    return build_test_image("alibi")


def test_the_locked_down_container_serves_authenticated_requests(image, run_container):
    container = run_container(image, *HARDENED, env={"WEB_CONCURRENCY": "1"})
    container.wait_healthy(timeout=60)
    config = container.inspect()["HostConfig"]
    assert config["ReadonlyRootfs"] and config["CapDrop"] == ["ALL"] and config["PidsLimit"] == 128
    assert "no-new-privileges" in config["SecurityOpt"]
    port = container.host_port()
    wait_http_ok(f"http://127.0.0.1:{port}/api/health/")
    url = f"http://127.0.0.1:{port}"
    body = {"query": "capital of France", "documents": ["Paris is the capital of France.", "Bananas."]}
    assert httpx.post(f"{url}/v1/rerank", json=body, timeout=60).status_code == 401
    for _ in range(5):
        response = httpx.post(f"{url}/v1/rerank", json=body, headers=AUTH_HEADERS, timeout=60)
        assert response.status_code == 200, response.text
        assert len(response.json()["results"]) == 2
    assert httpx.get(f"{url}/info", headers=AUTH_HEADERS, timeout=30).status_code == 200
    # inside: not root, no capabilities, no new privileges, the root filesystem refuses writes
    status = container.exec("cat", "/proc/1/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    assert fields["Uid"].split()[0] == "10001"
    assert int(fields["CapEff"].strip(), 16) == 0 and int(fields["CapPrm"].strip(), 16) == 0
    assert fields["NoNewPrivs"].strip() == "1"
    assert container.exec("sh", "-c", "touch /app/x", check=False).returncode != 0
    assert container.exec("sh", "-c", "touch /tmp/x && rm /tmp/x", check=False).returncode == 0
    assert "Read-only file system" not in container.logs()
    state = container.inspect()["State"]
    assert state["Running"] and not state["OOMKilled"]


def test_production_without_a_credential_refuses_to_start_naming_both_settings(image, run_container):
    container = run_container(image, "--network", "none", env={"RERANK_API_KEYS": ""})
    for _ in range(120):
        state = container.inspect()["State"]
        if not state["Running"]:
            break
        time.sleep(0.5)
    assert not state["Running"] and state["ExitCode"] != 0
    logs = container.logs()
    assert "RERANK_API_KEYS" in logs and "RERANK_ALLOW_ANONYMOUS" in logs


def test_the_image_and_its_history_hold_no_secret(image):
    config = json.loads(docker("image", "inspect", image).stdout)[0]["Config"]
    for entry in config.get("Env") or []:
        name, _, value = entry.partition("=")
        assert not SECRET_NAMES.search(name), f"image Env sets {name}"
        assert not SECRET_VALUES.search(value), f"image Env {name} looks like a secret"
    for key, value in (config.get("Labels") or {}).items():
        assert not SECRET_VALUES.search(value) and not SECRET_NAMES.search(key), f"label {key}"
    history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image).stdout
    assert history.strip()
    assert not SECRET_VALUES.search(history), "a layer's command holds something secret-looking"
    for line in history.splitlines():
        # ARG/ENV steps show as `|N KEY=value ...` or `ENV KEY=value`: no secret-named build argument
        for assignment in re.findall(r"\b([A-Z][A-Z0-9_]*)=", line):
            assert not SECRET_NAMES.search(assignment), f"a build step passes {assignment}: {line[:300]}"
    # and no secret-bearing file made it in through the build context
    found = docker("run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c",
                   "find / -xdev \\( -name '.env' -o -name '.env.*' -o -name '*.pem' -o -name 'id_rsa*' "
                   "-o -name '*.key' -o -name 'Pulumi.*.yaml' -o -name '.pulumi*' -o -name '.git' \\) "
                   "-not -path '/proc/*' -not -path '/etc/ssl/*' -not -path '/usr/share/*' "
                   "-not -path '/opt/venv/lib/*/site-packages/*/tests/*' 2>/dev/null; true").stdout.split()
    assert not [path for path in found if not path.endswith("/certifi/cacert.pem")], found  # public CA bundles
