"""Bad input gets a 4xx JSON error that names the field; the service stays up."""

from __future__ import annotations

import pytest

OK = {"query": "cats", "documents": ["cats sleep", "dogs bark"]}


@pytest.mark.parametrize(
    ("route", "body", "status", "field", "words"),
    [
        ("/v1/rerank", {"documents": ["a"]}, 422, "query", "required"),
        ("/v1/rerank", {"query": "", "documents": ["a"]}, 422, "query", "empty"),
        ("/v1/rerank", {"query": "   ", "documents": ["a"]}, 422, "query", "empty"),
        ("/v1/rerank", {"query": "q"}, 422, "documents", "required"),
        ("/v1/rerank", {"query": "q", "documents": []}, 422, "documents", "at least one"),
        ("/v1/rerank", {"query": "q", "documents": "a"}, 422, "documents", "list"),
        ("/v1/rerank", {"query": "q", "documents": ["a", 3]}, 422, "documents", "document 1"),
        ("/v1/rerank", {"query": "q", "documents": [{"title": "x"}]}, 422, "documents", "'text'"),
        ("/v1/rerank", {"query": "q", "documents": [{"text": 5}]}, 422, "documents", "document 0"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": 0}, 422, "top_n", "greater than"),
        ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": -3}, 422, "top_n", "greater than"),
        ("/v1/rerank", {"query": 7, "documents": ["a"]}, 422, "query", "string"),
        ("/v1/rerank", ["not", "an", "object"], 422, "body", "JSON object"),
        ("/v2/rerank", {"query": "q", "documents": [{"text": "objects are v1 only"}]}, 422, "documents", "string"),
        ("/v2/rerank", {"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}, 422, "max_tokens_per_doc", ""),
        ("/rerank", {"query": "q", "texts": []}, 422, "texts", "at least one"),
        ("/rerank", {"query": "q"}, 422, "texts", "required"),
    ],
)
def test_invalid_body_names_the_field(bert_client, route, body, status, field, words):
    response = bert_client.post(route, json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert error["field"] == field
    assert error["message"].startswith(field)
    assert words in error["message"]
    assert error["error"] == error["message"]


def test_too_many_documents(make_client, bert_model_dir):
    client = make_client(RERANK_MODEL_PATH=str(bert_model_dir), RERANK_MAX_DOCUMENTS="3")
    response = client.post("/v1/rerank", json={"query": "q", "documents": ["a", "b", "c", "d"]})
    assert response.status_code == 422
    assert response.json()["field"] == "documents"
    assert "RERANK_MAX_DOCUMENTS" in response.json()["message"]
    assert client.post("/rerank", json={"query": "q", "texts": ["a"] * 4}).json()["field"] == "texts"
    assert client.post("/v1/rerank", json={"query": "q", "documents": ["a", "b", "c"]}).status_code == 200


def test_default_document_limit_is_1000(bert_client):
    response = bert_client.post("/v1/rerank", json={"query": "q", "documents": ["a"] * 1001})
    assert response.status_code == 422 and "1000" in response.json()["message"]


def test_malformed_json_is_a_400(bert_client):
    response = bert_client.post("/v1/rerank", content=b'{"query": "q", "documents": [',
                                headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["message"].startswith("malformed JSON body")


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_a_415(bert_client, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = bert_client.post("/v1/rerank", content=b'{"query": "q", "documents": ["a"]}', headers=headers)
    assert response.status_code == 415
    assert response.json()["field"] == "content-type"


def test_json_with_charset_is_accepted(bert_client):
    response = bert_client.post("/v1/rerank", content=b'{"query": "q", "documents": ["a"]}',
                                headers={"content-type": "application/json; charset=utf-8"})
    assert response.status_code == 200


def test_body_over_the_limit_is_refused_before_parsing(make_client, bert_model_dir):
    client = make_client(RERANK_MODEL_PATH=str(bert_model_dir), RERANK_MAX_BODY_BYTES="4096")
    big = {"query": "q", "documents": ["x" * 5000]}
    response = client.post("/v1/rerank", json=big)
    assert response.status_code == 413
    assert "RERANK_MAX_BODY_BYTES" in response.json()["message"]

    def chunks():  # no Content-Length: the limit counts the streamed bytes
        yield b'{"query": "q", "documents": ["'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"]}'

    streamed = client.post("/v1/rerank", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert client.post("/v1/rerank", json=OK).status_code == 200


def test_default_body_limit_is_2_mb(bert_client):
    response = bert_client.post("/v1/rerank", json={"query": "q", "documents": ["z" * (2 * 1024 * 1024)]})
    assert response.status_code == 413


def test_service_stays_up_after_bad_requests(bert_client):
    for body in ({}, {"query": ""}, {"query": "q", "documents": [None]}):
        assert 400 <= bert_client.post("/v1/rerank", json=body).status_code < 500
    assert bert_client.post("/v1/rerank", json=OK).status_code == 200
    assert bert_client.get("/api/health/").json() == {"status": "healthy", "version": "2.0.0"}


def test_unknown_route_is_a_json_404(bert_client):
    response = bert_client.get("/nope")
    assert response.status_code == 404 and response.json()["message"]
