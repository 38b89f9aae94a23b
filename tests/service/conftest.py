from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator

import pytest
import uvicorn
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import Settings, load_settings


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/api/health/").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"service not ready after {timeout}s: {client.get('/api/health/').json()}")


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """make_client(RERANK_MODEL_PATH=..., ...) -> a TestClient on a ready app with those settings."""
    with contextlib.ExitStack() as stack:
        def factory(*, wait: bool = True, loader=None, **env) -> TestClient:
            settings = load_settings(**env)
            app = create_app(settings) if loader is None else create_app(settings, loader=loader)
            client = stack.enter_context(TestClient(app))
            if wait:
                wait_ready(client)
            return client

        yield factory


@pytest.fixture(scope="module")
def bert_client(bert_model_dir) -> Iterator[TestClient]:
    # fp32: exact comparisons with CrossEncoder.predict (the default precision has its own fidelity tests)
    app = create_app(load_settings(RERANK_MODEL_PATH=str(bert_model_dir), RERANK_PRECISION="fp32"))
    with TestClient(app) as client:
        wait_ready(client)
        yield client


@pytest.fixture(scope="module")
def alibi_client(alibi_model_dir) -> Iterator[TestClient]:
    app = create_app(load_settings(RERANK_MODEL_PATH=str(alibi_model_dir), RERANK_PRECISION="fp32"))
    with TestClient(app) as client:
        wait_ready(client)
        yield client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def live_server(settings: Settings | None = None, *, app=None) -> Iterator[str]:
    """The app (or one made from `settings`) served by uvicorn on a loopback port, in this process: real HTTP
    for real clients."""
    config = uvicorn.Config(app or create_app(settings), host="127.0.0.1", port=free_port(), log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{config.port}"
    try:
        import httpx

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/health/").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("live server did not become healthy")
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
