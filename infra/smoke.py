"""Smoke test of a deployed reranker: health, then one rerank request (scripts/smoke_test.py).

While the service starts (timeouts, 5xx, 503 until the model is warm) it retries until a deadline (300 s).
Connection refused is different: a platform that is still starting the container may refuse for a moment,
but a URL where nothing listens at all fails after a short grace period (30 s) with that reason. A wrong
answer from a running service fails at once: a health body other than exactly {"status": "healthy", "version": "2.0.0"}, or rerank results that are malformed or unsorted.
`--expect-ranking` adds a sanity check for the real model: the obviously relevant document wins.
The API key comes from `--api-key` or RERANK_API_KEY. Stdlib only, so it runs anywhere Python does.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EXPECTED_HEALTH = {"status": "healthy", "version": "2.0.0"}
HEALTH_PATH = "/api/health/"
RERANK_PATH = "/v1/rerank"
QUERY = "What is the capital of France?"
DOCUMENTS = [
    "Paris is the capital and largest city of France.",
    "Bananas are a good source of potassium.",
    "The stock market closed slightly higher on Tuesday.",
    "Photosynthesis converts light energy into chemical energy in plants.",
]
RELEVANT_INDEX = 0
TOP_N = 3


class SmokeFailure(Exception):
    """The deployment answered, and the answer is wrong: no point in retrying."""


class NotReady(Exception):
    """The deployment is not answering properly yet: retry until the deadline."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused  # nothing accepted the connection (as opposed to: something answered badly)


@dataclass
class Response:
    status: int
    body: bytes


def _request(method: str, url: str, payload: Any, api_key: str | None, timeout: float) -> Response:
    data = None if payload is None else json.dumps(payload).encode()
    headers = {"Accept": "application/json", "User-Agent": "reranker-smoke-test"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - URL given by the operator
            return Response(response.status, response.read())
    except urllib.error.HTTPError as exc:
        return Response(exc.code, exc.read())
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        refused = isinstance(reason, ConnectionRefusedError)
        raise NotReady(f"{method} {url}: {reason}", refused=refused) from None


def _json(response: Response, what: str) -> Any:
    try:
        return json.loads(response.body)
    except ValueError:
        snippet = response.body[:80].decode(errors="replace")
        raise SmokeFailure(
            f"{what} returned HTTP {response.status} with a non-JSON body: {snippet!r}"
        ) from None


def check_health(base_url: str, *, api_key: str | None = None, timeout: float = 10) -> None:
    url = base_url + HEALTH_PATH
    response = _request("GET", url, None, api_key, timeout)
    if response.status != 200:
        raise NotReady(f"GET {url} returned HTTP {response.status}")
    body = _json(response, f"GET {url}")
    if body != EXPECTED_HEALTH:
        raise SmokeFailure(
            f"GET {url} returned {json.dumps(body, sort_keys=True)}, expected {json.dumps(EXPECTED_HEALTH)}"
        )


def check_rerank(
    base_url: str, *, api_key: str | None = None, expect_ranking: bool = False, timeout: float = 30
) -> list[dict[str, Any]]:
    url = base_url + RERANK_PATH
    payload = {"query": QUERY, "documents": DOCUMENTS, "top_n": TOP_N}
    response = _request("POST", url, payload, api_key, timeout)
    if response.status >= 500 or response.status in (408, 429):
        raise NotReady(f"POST {url} returned HTTP {response.status}")
    if response.status != 200:
        raise SmokeFailure(
            f"POST {url} returned HTTP {response.status}: {response.body[:200].decode(errors='replace')}"
        )
    body = _json(response, f"POST {url}")
    results = body.get("results") if isinstance(body, dict) else None
    if not isinstance(results, list):
        raise SmokeFailure(f"POST {url}: the response has no `results` list")
    if len(results) != TOP_N:
        raise SmokeFailure(f"POST {url}: top_n={TOP_N} but {len(results)} results came back")
    seen: set[int] = set()
    for position, item in enumerate(results):
        where = f"POST {url}: results[{position}]"
        if not isinstance(item, dict):
            raise SmokeFailure(f"{where} is not an object")
        index, score = item.get("index"), item.get("relevance_score")
        if (
            not isinstance(index, int)
            or isinstance(index, bool)
            or not 0 <= index < len(DOCUMENTS)
            or index in seen
        ):
            raise SmokeFailure(f"{where}.index={index!r} is not a distinct document index")
        seen.add(index)
        if not isinstance(score, (int, float)) or isinstance(score, bool) or not 0.0 <= score <= 1.0:
            raise SmokeFailure(f"{where}.relevance_score={score!r} is not a number in [0, 1]")
        document = item.get("document")
        if not isinstance(document, dict) or document.get("text") != DOCUMENTS[index]:
            raise SmokeFailure(f"{where}.document.text is not documents[{index}]")
    scores = [item["relevance_score"] for item in results]
    if any(a < b for a, b in zip(scores, scores[1:], strict=False)):
        raise SmokeFailure(f"POST {url}: results are not sorted by relevance_score descending: {scores}")
    if expect_ranking and results[0]["index"] != RELEVANT_INDEX:
        raise SmokeFailure(
            f"POST {url}: expected documents[{RELEVANT_INDEX}] ({DOCUMENTS[RELEVANT_INDEX]!r}) "
            "to rank first, "
            f"got documents[{results[0]['index']}]"
        )
    return results


def run(
    base_url: str,
    *,
    api_key: str | None = None,
    expect_ranking: bool = False,
    deadline_seconds: float = 300,
    interval_seconds: float = 3,
    refused_grace_seconds: float = 30,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Check the deployment, retrying while it is not ready; returns a one-line summary.

    Raises SmokeFailure for a wrong answer, when the deadline passes (with the last reason), or when every
    connection was refused for `refused_grace_seconds` (nothing listens at that URL)."""
    base_url = base_url.rstrip("/")
    started = clock()
    give_up_at = started + deadline_seconds
    attempts = 0
    answered = False  # has anything ever accepted a connection?
    while True:
        attempts += 1
        try:
            check_health(base_url, api_key=api_key)
            results = check_rerank(base_url, api_key=api_key, expect_ranking=expect_ranking)
        except NotReady as exc:
            answered = answered or not exc.refused
            if not answered and clock() - started >= refused_grace_seconds:
                raise SmokeFailure(
                    f"nothing is listening at {base_url}: connection refused for {refused_grace_seconds:g}s "
                    f"({attempts} attempts; last: {exc}). Check the URL and that the service is running."
                ) from None
            if clock() + interval_seconds > give_up_at:
                raise SmokeFailure(
                    f"not ready after {deadline_seconds:g}s ({attempts} attempts): {exc}"
                ) from None
            sleep(interval_seconds)
            continue
        top = results[0]
        return (
            f"{base_url} is healthy (version {EXPECTED_HEALTH['version']}); "
            f"/v1/rerank returned {len(results)} sorted "
            f"results, top documents[{top['index']}] at {top['relevance_score']:.3f} (attempt {attempts})"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Smoke-test a deployed reranker.")
    parser.add_argument("url", help="base URL, e.g. https://reranker-prod.onrender.com")
    parser.add_argument(
        "--api-key",
        default=os.environ.get("RERANK_API_KEY") or None,
        help="sent as `Authorization: Bearer <key>` (default: RERANK_API_KEY)",
    )
    parser.add_argument(
        "--expect-ranking", action="store_true", help="the real model must rank the relevant document first"
    )
    parser.add_argument(
        "--deadline", type=float, default=300, help="seconds to keep retrying while it starts (300)"
    )
    parser.add_argument("--interval", type=float, default=3, help="seconds between attempts (3)")
    parser.add_argument(
        "--refused-grace",
        type=float,
        default=30,
        help="seconds of nothing but `connection refused` before giving up (30)",
    )
    args = parser.parse_args(argv)
    try:
        summary = run(
            args.url,
            api_key=args.api_key,
            expect_ranking=args.expect_ranking,
            deadline_seconds=args.deadline,
            interval_seconds=args.interval,
            refused_grace_seconds=args.refused_grace,
        )
    except SmokeFailure as exc:
        print("FAIL: " + " ".join(str(exc).split()), file=sys.stderr)  # one line, whatever the server sent
        return 1
    print(f"OK: {summary}")
    return 0
