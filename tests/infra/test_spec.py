"""The container contract: the health-check command really checks health, and `docker run` gets the same
settings as `docker.Container`."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pulumi
import pytest

from infra.config import Secret
from infra.spec import HealthCheck, build_spec
from infra.targets.docker import container_args, dev_container_args, docker_run_argv


class _Health(BaseHTTPRequestHandler):
    status = 200
    body = b'{"status": "healthy", "version": "2.0.0"}'
    paths: list[str] = []

    def do_GET(self):  # noqa: N802
        type(self).paths.append(self.path)
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    handler = type("Handler", (_Health,), {"paths": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield handler, server.server_address[1]
    server.shutdown()
    server.server_close()


def run_health_command(port: int) -> int:
    command = HealthCheck(port=port).command
    return subprocess.run(["sh", "-c", command], capture_output=True, timeout=20).returncode


@pytest.mark.parametrize(
    ("status", "body", "healthy"),
    [
        (200, {"status": "healthy", "version": "2.0.0"}, True),
        (503, {"status": "loading"}, False),  # before the model is warm
        (200, {"status": "degraded"}, False),
    ],
)
def test_the_health_command_passes_only_for_a_healthy_answer(health_server, status, body, healthy):
    handler, port = health_server
    handler.status, handler.body = status, json.dumps(body).encode()
    assert (run_health_command(port) == 0) is healthy
    assert handler.paths == ["/api/health/"]


def test_the_health_command_fails_when_nothing_listens():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert run_health_command(port) != 0


def dev_args():
    return dev_container_args("reranker:test")


def test_dev_container_args_are_plain_values_for_docker_run():
    args = dev_args()
    assert args["image"] == "reranker:test"
    assert all(isinstance(entry, str) for entry in args["envs"])
    assert args["memory"] == 1024 and args["user"] == "10001" and args["wait"] is True


def test_docker_run_argv_carries_every_setting():
    args = dev_args()
    argv = docker_run_argv(args)
    assert argv[:3] == ["docker", "run", "--detach"] and argv[-1] == "reranker:test"

    def value(flag):
        return argv[argv.index(flag) + 1]

    assert value("--name") == "reranker-dev"
    assert value("--user") == "10001"
    assert value("--memory") == "1024m" and value("--memory-swap") == "1024m"
    assert value("--publish") == "127.0.0.1:8000:8000/tcp"
    assert value("--health-cmd") == args["healthcheck"]["tests"][1]
    assert value("--health-interval") == "5s" and value("--health-timeout") == "4s"
    assert value("--health-retries") == "3" and value("--health-start-period") == "120s"
    assert value("--restart") == "unless-stopped"
    assert "--read-only" in argv and value("--tmpfs").startswith("/tmp:")
    assert value("--cap-drop") == "ALL" and value("--security-opt") == "no-new-privileges:true"
    assert value("--pids-limit") == "512"  # what the program's `docker update` sets after creating it
    assert (
        value("--stop-signal") == "SIGTERM" and value("--stop-timeout") == str(args["stop_timeout"]) == "35"
    )
    envs = [argv[i + 1] for i, flag in enumerate(argv) if flag == "--env"]
    assert sorted(envs) == sorted(args["envs"])


def test_docker_run_argv_refuses_unresolved_secrets():
    from infra import config

    cfg = config.load_stack_file("dev")
    spec = build_spec(cfg)
    spec = dataclasses.replace(spec, secret_env={"LLM_API_KEY": Secret("x")})

    @pulumi.runtime.test
    def build():
        args = container_args(spec, "img", host_port=8000, bind_address="127.0.0.1")
        with pytest.raises(TypeError, match="reveal_secrets=True"):
            docker_run_argv(args)

    build()
    revealed = container_args(spec, "img", host_port=8000, bind_address="127.0.0.1", reveal_secrets=True)
    assert "LLM_API_KEY=x" in docker_run_argv(revealed)


def test_secrets_do_not_leak_through_repr():
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret)
    assert "hunter2" not in repr({"k": secret})
    with pytest.raises(ValueError, match="encrypted"):
        Secret(None).reveal()
