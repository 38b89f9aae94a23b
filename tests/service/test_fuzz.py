"""Bad input, fuzzed, against `python -m service` over real HTTP: schemathesis from the service's own OpenAPI
document (every operation, schema-conforming and schema-violating cases) and hypothesis property tests of
raw bodies on every route (/metrics included): random JSON shapes, unicode edge cases (NUL, lone surrogates
in \\u escapes, RTL and combining marks, 100k-character words), huge and negative numbers, floats where ints
belong, deep nesting, duplicate keys, wrong types for every field, truncated bodies, invalid UTF-8.

Pass: every answer is 2xx or a 4xx JSON error (400/413/415/422 name the `field`), never a 5xx; the process
stays up, still scores correctly, and its RSS stays flat.

Bounded for CI: RERANK_FUZZ_EXAMPLES (default 40) examples per strategy, derandomized; the larger run:
RERANK_FUZZ_EXAMPLES=1000 RERANK_FUZZ_RANDOM=1 pytest tests/service/test_fuzz.py. The case counts are printed
and written to build/fuzz-results.json."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from hypothesis import strategies as st
from schemathesis import GenerationMode

from tests.service.server_process import AUTH, BODY, PROJECT_ROOT, Server

EXAMPLES = int(os.environ.get("RERANK_FUZZ_EXAMPLES", "40"))
RANDOM = os.environ.get("RERANK_FUZZ_RANDOM", "") not in {"", "0", "false"}
RESULTS_FILE = PROJECT_ROOT / "build" / "fuzz-results.json"
RSS_GROWTH_LIMIT = 64 * 2**20  # after warm-up; a leak of a few KB per case would show over the run

FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=not RANDOM,
                suppress_health_check=list(HealthCheck), print_blob=True)
FIELD_NAMING = {400, 413, 415, 422}

ROUTES = {  # route -> the fields of a valid body, for type fuzzing field by field
    "/v1/rerank": {"query": "cats", "documents": ["a cat", {"text": "a dog"}], "top_n": 1, "model": "m",
                   "return_documents": True},
    "/v2/rerank": {"query": "cats", "documents": ["a cat", "a dog"], "top_n": 1, "model": "m",
                   "max_tokens_per_doc": 8},
    "/rerank": {"query": "cats", "texts": ["a cat", "a dog"], "raw_scores": False, "return_text": True,
                "truncate": True, "truncation_direction": "Right"},
}
COUNTS: dict[str, int] = {}


@pytest.fixture(scope="module")
def server(bert_model_dir, tmp_path_factory):
    srv = Server(bert_model_dir, tmp_path_factory.mktemp("fuzz") / "no-faults", RERANK_MAX_DOCUMENTS="64")
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()
        if COUNTS:
            COUNTS["total cases"] = sum(v for k, v in COUNTS.items() if not k.startswith("rss"))
            RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
            RESULTS_FILE.write_text(json.dumps(COUNTS, indent=2, sort_keys=True) + "\n")
            print(f"\nfuzz cases: {json.dumps(COUNTS, sort_keys=True)}")


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def check(response: httpx.Response, what: str) -> None:
    status = response.status_code
    assert status < 500, f"{what}: {status} {response.text[:500]}"
    if status >= 400:
        body = response.json()  # a JSON error, whatever went wrong
        assert isinstance(body, dict) and isinstance(body.get("message"), str), f"{what}: {response.text[:300]}"
        if status in FIELD_NAMING:
            assert body.get("field"), f"{what}: {status} without a field: {body}"


def count(name: str) -> None:
    COUNTS[name] = COUNTS.get(name, 0) + 1


def assert_still_serving(server: Server) -> None:
    assert server.process.poll() is None, server.output()[-3000:]
    response = server.post()
    assert response.status_code == 200
    scores = [r["relevance_score"] for r in response.json()["results"]]
    assert len(scores) == 3 and all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)


# ---- schemathesis: the service's own OpenAPI document ---------------------------------------------------


def test_schemathesis_every_operation(server):
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {op.path for op in operations}
    assert {"/v1/rerank", "/v2/rerank", "/rerank", "/info", "/api/health/"} <= paths, paths
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            name = f"schemathesis {mode.value} {operation.method.upper()} {operation.path}"

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case) -> None:
                response = case.call(base_url=server.url, headers=AUTH, timeout=60)
                count(name)
                status = response.status_code
                assert status < 500, f"{name}: {status} {response.text[:500]}\n{case.as_curl_command()}"
                if status >= 400:
                    body = response.json()
                    assert isinstance(body.get("message"), str)
                    if status in FIELD_NAMING:
                        assert body.get("field"), body
                if mode is GenerationMode.POSITIVE and operation.path != "/api/health/":
                    # cases that fit the schema may still break the rules it cannot express (blank query,
                    # too many documents, top_n < 1 on a nullable int...), never the server
                    assert status in {200, 413, 422}, f"{name}: {status} {response.text[:300]}"

            try:
                run()
            except Unsatisfiable:
                # nothing to violate: a GET without parameters has no schema-violating request
                assert mode is GenerationMode.NEGATIVE and operation.method.upper() == "GET", name
    assert_still_serving(server)


# ---- hypothesis: raw bodies --------------------------------------------------------------------------------

SPECIAL_TEXT = st.sampled_from([
    "\x00", "a\x00b", "\ud800", "\udfff", "x\ud83d", "\ud83d\ude00", "\u202eevil\u202c", "\u200f\u05e9\u05dc\u05d5\u05dd",
    "e\u0301\u0301\u0301" * 50, "\u0300" * 1000, "\ufeff", "\uffff", "\U0010ffff", " ", "\t\n\r", "",
    "w" * 100_000, "\u4e2d" * 30_000, "😀" * 10_000, "%s%n{0}", "' OR 1=1 --", "<script>", "null",
])
TEXT = st.one_of(SPECIAL_TEXT, st.text(alphabet=st.characters(codec=None, categories=None), max_size=200))
NUMBER = st.one_of(st.integers(min_value=-(10**30), max_value=10**30), st.sampled_from([0, -1, 2**63, -(2**63), 10**300]),
                   st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1.0, 2.5, -0.0, 1e308]))
JSON_VALUE = st.recursive(st.one_of(st.none(), st.booleans(), NUMBER, TEXT),
                          lambda inner: st.one_of(st.lists(inner, max_size=6),
                                                  st.dictionaries(TEXT, inner, max_size=6)), max_leaves=25)


def dumps(value) -> bytes:
    """JSON as a client may send it: NaN/Infinity literals, \\u escapes for lone surrogates."""
    return json.dumps(value, ensure_ascii=True, allow_nan=True).encode()


@st.composite
def field_mutations(draw) -> tuple[str, bytes]:
    """A valid body with one field replaced by anything (or removed), or extra fields."""
    route = draw(st.sampled_from(sorted(ROUTES)))
    body = dict(ROUTES[route])
    field = draw(st.sampled_from(sorted(body)))
    action = draw(st.sampled_from(["replace", "replace", "remove", "list-item", "extra"]))
    if action == "replace":
        body[field] = draw(JSON_VALUE)
    elif action == "remove":
        del body[field]
    elif action == "list-item" and isinstance(body[field], list):
        body[field] = [*body[field], draw(JSON_VALUE)]
    else:
        body[draw(TEXT)] = draw(JSON_VALUE)
    return route, dumps(body)


@st.composite
def raw_bodies(draw) -> tuple[str, bytes]:
    route = draw(st.sampled_from(sorted(ROUTES)))
    valid = dumps(ROUTES[route])
    kind = draw(st.sampled_from(["json", "truncated", "duplicate-keys", "deep", "bytes", "wide"]))
    if kind == "json":
        return route, dumps(draw(JSON_VALUE))
    if kind == "truncated":
        return route, valid[: draw(st.integers(0, len(valid) - 1))]
    if kind == "duplicate-keys":
        key = draw(st.sampled_from(sorted(ROUTES[route])))
        return route, valid[:-1] + b", " + json.dumps(key).encode() + b": " + dumps(draw(JSON_VALUE)) + b"}"
    if kind == "deep":
        depth = draw(st.sampled_from([100, 1_000, 10_000, 100_000]))
        opener, closer = draw(st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
        nested = opener * depth + b"1" + closer * depth
        return route, draw(st.sampled_from([nested, valid[:-1] + b', "documents": ' + nested + b"}"]))
    if kind == "wide":
        count_ = draw(st.sampled_from([65, 1_000, 50_000]))
        return route, dumps({**ROUTES[route], "documents": ["d"] * count_, "texts": ["d"] * count_})
    return route, draw(st.binary(max_size=300)) + draw(st.sampled_from([b"", b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80"]))


CONTENT_TYPES = st.sampled_from(["application/json", "application/json", "application/json; charset=utf-8",
                                 "application/vnd.api+json", "text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=x", "application/json; charset=latin-1", None,
                                 "application/json; boundary=\"", "*/*"])


def test_every_field_with_every_wrong_type(server, client):
    @FUZZ
    @given(mutation=field_mutations())
    def run(mutation) -> None:
        route, body = mutation
        response = client.post(route, content=body, headers={**AUTH, "Content-Type": "application/json"})
        count("hypothesis field mutations")
        check(response, f"{route} {body[:200]!r}")

    run()
    assert_still_serving(server)


def test_raw_bodies_and_content_types(server, client):
    @settings(FUZZ, max_examples=EXAMPLES * 2)
    @given(raw=raw_bodies(), content_type=CONTENT_TYPES)
    def run(raw, content_type) -> None:
        route, body = raw
        headers = dict(AUTH)
        if content_type is not None:
            headers["Content-Type"] = content_type
        response = client.post(route, content=body, headers=headers)
        count("hypothesis raw bodies")
        check(response, f"{route} [{content_type}] {body[:200]!r}")

    run()
    assert_still_serving(server)


SURROGATE_BODIES = {
    "query": ("/v1/rerank", '{"query": "%s", "documents": ["a"]}'),
    "documents": ("/v2/rerank", '{"query": "q", "documents": ["ok", "%s"]}'),
    "texts": ("/rerank", '{"query": "q", "texts": ["ok", "%s"]}'),
}


@pytest.mark.parametrize("field", sorted(SURROGATE_BODIES))
@pytest.mark.parametrize("escape", ["\\ud800", "\\udfff", "x\\ud83dy", "\\ud800\\ud800", "\\udc00\\ud800"])
def test_lone_surrogates_are_a_4xx_naming_the_field(client, field, escape):
    route, template = SURROGATE_BODIES[field]
    response = client.post(route, content=(template % escape).encode(),
                           headers={**AUTH, "Content-Type": "application/json"})
    count("surrogate cases")
    assert response.status_code == 422, response.text
    error = response.json()
    assert error["field"] == field and "unpaired UTF-16 surrogate" in error["message"], error
    assert error["message"].startswith(f"{field}: ")


def test_other_routes_with_anything(server, client):
    @FUZZ
    @given(path=st.sampled_from(["/info", "/metrics", "/api/health/", "/api/health", "/openapi.json", "/nope",
                                 "/v1/rerank", "/v1/rerank/", "/%00", "/%ED%A0%80"]),
           method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
           query=st.dictionaries(st.text(max_size=10), st.text(max_size=20), max_size=3),
           auth=st.sampled_from([AUTH, {}, {"Authorization": "Bearer \u00e9"}, {"Authorization": "Bearer " + "k" * 10_000}]))
    def run(path, method, query, auth) -> None:
        headers = {k: v.encode("utf-8") for k, v in auth.items()}  # raw bytes: non-ASCII tokens too
        response = client.request(method, path, params=query, headers=headers)
        count("hypothesis other routes")
        assert response.status_code < 500, f"{method} {path}: {response.status_code} {response.text[:300]}"
        if response.status_code >= 400 and method != "HEAD":
            assert isinstance(response.json().get("message"), str)

    run()
    assert_still_serving(server)


def test_rss_stays_flat_under_bad_input(server, client):
    """The same mix again, many times over: memory after it is where it was after the first round."""

    def round_() -> None:
        for route, body in ROUTES.items():
            for raw in (dumps({**body, "query": "\ud800"}), dumps(body)[:-3], b"[" * 50_000,
                        dumps({**body, "documents": ["w" * 100_000] * 8, "texts": ["w" * 100_000] * 8}),
                        dumps({**body, "top_n": 10**300}), dumps({**body, "documents": ["\x00\u202e" * 2000] * 20})):
                check(client.post(route, content=raw, headers={**AUTH, "Content-Type": "application/json"}),
                      f"{route} {raw[:80]!r}")
                count("memory check cases")

    for _ in range(3):
        round_()
    baseline = server.rss_bytes()
    rounds = max(5, EXAMPLES // 4)
    for _ in range(rounds):
        round_()
    growth = server.rss_bytes() - baseline
    print(f"\nRSS after warm-up {baseline / 2**20:.0f} MiB, after {rounds} more rounds "
          f"{(baseline + growth) / 2**20:.0f} MiB ({growth / 2**20:+.1f} MiB)")
    COUNTS["rss MiB after warm-up"] = math.floor(baseline / 2**20)
    COUNTS["rss MiB growth"] = round(growth / 2**20, 1)
    assert growth < RSS_GROWTH_LIMIT, f"RSS grew {growth / 2**20:.0f} MiB"
    assert_still_serving(server)
