"""The three rerank APIs return what the model itself says, in the shapes their clients expect."""

from __future__ import annotations

import numpy as np
import pytest
from sentence_transformers import CrossEncoder

QUERY = "how do cats sleep during the day"
DOCUMENTS = [
    "Cats sleep for most of the day and hunt at night.",
    "The stock market closed higher on Tuesday.",
    "A kitten naps in the warm afternoon sun.",
    "Rain is expected over the weekend in the north.",
    "Dogs and cats can share a home peacefully.",
]


@pytest.fixture(scope="module")
def reference_scores(bert_model_dir) -> np.ndarray:
    model = CrossEncoder(str(bert_model_dir), trust_remote_code=True, device="cpu")
    return model.predict([(QUERY, doc) for doc in DOCUMENTS])


def test_v1_scores_and_order_equal_cross_encoder_predict(bert_client, reference_scores):
    body = bert_client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS}).json()
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    assert sorted(got) == list(range(len(DOCUMENTS)))
    np.testing.assert_allclose([got[i] for i in range(len(DOCUMENTS))], reference_scores, atol=1e-5)
    expected_order = sorted(range(len(DOCUMENTS)), key=lambda i: -reference_scores[i])
    assert [r["index"] for r in body["results"]] == expected_order
    scores = [r["relevance_score"] for r in body["results"]]
    assert scores == sorted(scores, reverse=True)
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert [r["document"]["text"] for r in body["results"]] == [DOCUMENTS[i] for i in expected_order]
    assert body["usage"]["total_tokens"] > len(DOCUMENTS) * 5
    assert body["id"] and body["model"] == "jinaai/jina-reranker-v1-tiny-en"  # RERANK_MODEL names it
    assert body["meta"]["api_version"]["version"] == "1"


def test_default_precision_stays_within_fidelity_bounds(make_client, bert_model_dir, reference_scores):
    client = make_client(RERANK_MODEL_PATH=str(bert_model_dir))
    body = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS}).json()
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    np.testing.assert_allclose([got[i] for i in range(len(DOCUMENTS))], reference_scores, atol=1e-2)


def test_alibi_remote_code_model_scores_equal_cross_encoder_predict(alibi_client, alibi_model_dir):
    reference = CrossEncoder(str(alibi_model_dir), trust_remote_code=True, device="cpu").predict(
        [(QUERY, doc) for doc in DOCUMENTS])
    body = alibi_client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS}).json()
    got = {r["index"]: r["relevance_score"] for r in body["results"]}
    np.testing.assert_allclose([got[i] for i in range(len(DOCUMENTS))], reference, atol=1e-5)
    assert [r["index"] for r in body["results"]] == sorted(range(len(DOCUMENTS)), key=lambda i: -reference[i])


def test_top_n_returns_the_best_n(bert_client):
    full = bert_client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS}).json()["results"]
    top = bert_client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, "top_n": 2}).json()["results"]
    assert [r["index"] for r in top] == [r["index"] for r in full[:2]]
    many = bert_client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS, "top_n": 50}).json()
    assert len(many["results"]) == len(DOCUMENTS)


def test_documents_as_objects_or_strings_give_the_same_result(bert_client):
    as_strings = bert_client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS}).json()
    as_objects = bert_client.post(
        "/v1/rerank", json={"query": QUERY, "documents": [{"text": d, "id": n} for n, d in enumerate(DOCUMENTS)]}
    ).json()
    assert [(r["index"], r["relevance_score"]) for r in as_strings["results"]] == \
        [(r["index"], r["relevance_score"]) for r in as_objects["results"]]
    assert as_objects["results"][0]["document"] == {"text": DOCUMENTS[as_objects["results"][0]["index"]]}


def test_return_documents_false_omits_them(bert_client):
    body = bert_client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS,
                                                "return_documents": False}).json()
    assert all("document" not in r for r in body["results"])


def test_v2_shape(bert_client):
    v1 = bert_client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS}).json()
    v2 = bert_client.post("/v2/rerank", json={"model": "rerank-v3.5", "query": QUERY, "documents": DOCUMENTS,
                                              "top_n": 3}).json()
    assert set(v2) == {"id", "results", "meta"}
    assert v2["results"] == [{"index": r["index"], "relevance_score": r["relevance_score"]}
                             for r in v1["results"][:3]]
    assert v2["meta"]["api_version"]["version"] == "2"


def test_v2_max_tokens_per_doc_truncates_documents(bert_client):
    long_doc = "cats sleep all day long " * 200
    full = bert_client.post("/v2/rerank", json={"query": QUERY, "documents": [long_doc]}).json()
    cut = bert_client.post("/v2/rerank", json={"query": QUERY, "documents": [long_doc],
                                               "max_tokens_per_doc": 8}).json()
    assert cut["meta"]["tokens"]["input_tokens"] < 30 < full["meta"]["tokens"]["input_tokens"]
    assert cut["results"][0]["relevance_score"] != full["results"][0]["relevance_score"]


def test_tei_shape_and_raw_scores(bert_client):
    v1 = bert_client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS}).json()
    tei = bert_client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS}).json()
    assert isinstance(tei, list)
    assert [(r["index"], r["score"]) for r in tei] == [(r["index"], r["relevance_score"]) for r in v1["results"]]
    assert all(set(r) == {"index", "score"} for r in tei)
    raw = bert_client.post("/rerank", json={"query": QUERY, "texts": DOCUMENTS, "raw_scores": True,
                                            "return_text": True}).json()
    by_index = {r["index"]: r for r in raw}
    for r in tei:  # raw scores are the logits behind the sigmoid
        assert 1 / (1 + np.exp(-by_index[r["index"]]["score"])) == pytest.approx(r["score"], abs=1e-5)
        assert by_index[r["index"]]["text"] == DOCUMENTS[r["index"]]


def test_tei_truncate_false_refuses_too_long_pairs(bert_client):
    long_doc = "word " * 2000
    response = bert_client.post("/rerank", json={"query": QUERY, "texts": ["short", long_doc], "truncate": False})
    assert response.status_code == 413
    assert "texts[1]" in response.json()["error"]
    assert bert_client.post("/rerank", json={"query": QUERY, "texts": ["short", long_doc]}).status_code == 200


def test_a_20000_word_document_is_truncated_not_rejected(bert_client):
    long_doc = " ".join(["the cat sleeps in the warm sun"] * 2858)  # 20,006 words
    assert len(long_doc.split()) >= 20000
    response = bert_client.post("/v1/rerank", json={"query": QUERY, "documents": [long_doc, "short text"]})
    assert response.status_code == 200
    body = response.json()
    max_length = bert_client.get("/info").json()["max_length"]
    assert max_length < body["usage"]["total_tokens"] <= max_length + 20
    assert body["results"][0]["document"]["text"] in (long_doc, "short text")


def test_equal_scores_keep_input_order(bert_client):
    body = bert_client.post("/v1/rerank", json={"query": QUERY, "documents": ["same text"] * 4}).json()
    assert [r["index"] for r in body["results"]] == [0, 1, 2, 3]


def test_info_describes_what_is_served(bert_client, bert_model_dir):
    info = bert_client.get("/info").json()
    assert info["version"] == "2.0.0"
    assert info["model_path"] == str(bert_model_dir)
    assert info["device"] == "cpu"
    assert info["max_length"] == 512
    assert info["backend"] in {"torch", "onnx"} and info["precision"] in {"fp32", "bf16"}
    assert info["limits"] == {"max_documents": 1000, "max_body_bytes": 2 * 1024 * 1024, "max_length": 512}


def test_metrics_count_requests_documents_and_tokens(bert_client):
    bert_client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS})
    text = bert_client.get("/metrics").text
    assert 'reranker_requests_total{method="POST",route="/v1/rerank",status="200"}' in text
    assert "reranker_request_duration_seconds_bucket" in text
    documents = float(next(line.split()[-1] for line in text.splitlines()
                           if line.startswith("reranker_documents_scored_total ")))
    assert documents >= len(DOCUMENTS)
    assert "reranker_tokens_scored_total" in text
    load = float(next(line.split()[-1] for line in text.splitlines()
                      if line.startswith("reranker_model_load_seconds ")))
    assert load > 0


def test_openapi_docs_are_served(bert_client):
    assert bert_client.get("/docs").status_code == 200
    paths = bert_client.get("/openapi.json").json()["paths"]
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/api/health/", "/info"} <= set(paths)
