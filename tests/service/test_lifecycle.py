"""Health before and after ready, CORS, and the official cohere SDK against the running service."""

from __future__ import annotations

import threading

import cohere
import pytest

from service.engine.factory import build_engine
from service.settings import load_settings
from tests.service.conftest import live_server, wait_ready


def test_health_is_503_while_loading_then_200(make_client, bert_model_dir):
    release = threading.Event()

    def slow_loader(settings):
        release.wait(30)
        return build_engine(settings)

    client = make_client(RERANK_MODEL_PATH=str(bert_model_dir), wait=False, loader=slow_loader)
    for path in ("/api/health/", "/api/health"):
        response = client.get(path)
        assert response.status_code == 503
        assert response.json() == {"status": "loading", "version": "2.0.0"}
    refused = client.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert refused.status_code == 503 and "loading" in refused.json()["message"]
    release.set()
    wait_ready(client)
    for path in ("/api/health/", "/api/health"):
        response = client.get(path)
        assert response.status_code == 200
        assert response.json() == {"status": "healthy", "version": "2.0.0"}


def test_health_reports_a_failed_load(make_client, bert_model_dir):
    def broken_loader(settings):
        raise RuntimeError("weights are corrupt")

    client = make_client(RERANK_MODEL_PATH=str(bert_model_dir), wait=False, loader=broken_loader)
    client.app.state.engine_state.wait(10)
    response = client.get("/api/health/")
    assert response.status_code == 503
    assert response.json()["status"] == "failed" and "weights are corrupt" in response.json()["error"]


def test_warm_up_runs_before_ready(make_client, bert_model_dir):
    calls = []

    def recording_loader(settings):
        loaded = build_engine(settings)
        calls.append(loaded.engine.scheduler.forward_calls)
        return loaded

    client = make_client(RERANK_MODEL_PATH=str(bert_model_dir), loader=recording_loader)
    assert calls == [0]  # the warm-up ran on the loader thread, before the scheduler took any request
    assert client.get("/info").json()["load_seconds"] > 0


def test_cors_headers_follow_the_setting(make_client, bert_model_dir):
    client = make_client(RERANK_MODEL_PATH=str(bert_model_dir),
                         CORS_ALLOWED_ORIGINS="https://app.example.com, https://admin.example.com")
    preflight = client.options("/v1/rerank", headers={"Origin": "https://admin.example.com",
                                                      "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == "https://admin.example.com"
    simple = client.get("/api/health/", headers={"Origin": "https://app.example.com"})
    assert simple.headers["access-control-allow-origin"] == "https://app.example.com"
    other = client.get("/api/health/", headers={"Origin": "https://evil.example.com"})
    assert "access-control-allow-origin" not in other.headers


def test_no_cors_headers_when_no_origin_is_configured(bert_client):
    response = bert_client.get("/api/health/", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in response.headers


@pytest.fixture(scope="module")
def server_url(bert_model_dir):
    with live_server(load_settings(RERANK_MODEL_PATH=str(bert_model_dir), RERANK_PRECISION="fp32")) as url:
        yield url


def test_cohere_sdk_v1_round_trip(server_url):
    client = cohere.Client(api_key="unused", base_url=server_url)
    documents = ["Cats sleep most of the day.", "Stocks fell on Monday.", "A kitten naps in the sun."]
    response = client.rerank(query="when do cats sleep", documents=documents, top_n=2, return_documents=True)
    assert len(response.results) == 2
    assert response.results[0].relevance_score >= response.results[1].relevance_score
    assert response.results[0].document.text == documents[response.results[0].index]
    assert response.id


def test_cohere_sdk_v2_round_trip(server_url):
    client = cohere.ClientV2(api_key="unused", base_url=server_url)
    documents = ["Cats sleep most of the day.", "Stocks fell on Monday.", "A kitten naps in the sun."]
    response = client.rerank(model="rerank-v3.5", query="when do cats sleep", documents=documents, top_n=3,
                             max_tokens_per_doc=64)
    assert sorted(r.index for r in response.results) == [0, 1, 2]
    scores = [r.relevance_score for r in response.results]
    assert scores == sorted(scores, reverse=True)
