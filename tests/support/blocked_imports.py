"""Run the whole service in a fresh interpreter where importing some packages raises, and report what it answered
(health, a scored request on every API, /info) and which of those packages ended up in sys.modules anyway.
The ONNX flavour must never import torch; the torch flavour never sentence-transformers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from service.settings import PROJECT_ROOT

SERVICE = """
import importlib.abc, json, sys, time
BANNED = {banned!r}

class Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BANNED:
            raise ImportError(f"the service imported {{name}}")

sys.meta_path.insert(0, Refuse())
from fastapi.testclient import TestClient
import service.__main__
from service.main import create_app
from service.settings import load_settings

app = create_app(load_settings(RERANK_MODEL_PATH={model!r}, ENVIRONMENT="production", RERANK_API_KEYS="k"))
answers = {{}}
with TestClient(app, headers={{"Authorization": "Bearer k"}}) as client:
    for _ in range(600):
        health = client.get("/api/health/")
        if health.status_code == 200:
            break
        time.sleep(0.05)
    answers["health"] = health.json()
    answers["v1"] = client.post("/v1/rerank", json={{"query": "capital of France",
                                 "documents": ["Paris is the capital.", "Bananas are yellow."]}}).json()
    answers["v2"] = client.post("/v2/rerank", json={{"model": "m", "query": "q", "documents": ["a b", "c"],
                                 "max_tokens_per_doc": 1}}).json()
    answers["tei"] = client.post("/rerank", json={{"query": "q", "texts": ["a", "b"], "truncate": False}}).json()
    answers["info"] = client.get("/info").json()
answers["banned_loaded"] = sorted(m for m in sys.modules if m.split(".")[0] in BANNED)
print(json.dumps(answers))
"""


def run_service_without(banned: tuple[str, ...], model: Path, env: dict[str, str],
                        timeout: float = 300) -> tuple[subprocess.CompletedProcess, dict[str, Any] | None]:
    """(the finished process, its answers, or None when it failed before printing them)."""
    code = SERVICE.format(banned=banned, model=str(model))
    result = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                            timeout=timeout, env={"PATH": "/usr/bin:/bin", **env})
    lines = result.stdout.strip().splitlines()
    answers = json.loads(lines[-1]) if result.returncode == 0 and lines else None
    return result, answers
