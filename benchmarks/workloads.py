"""Benchmark workloads and fidelity pairs: fixed seeds, English-like text (tests/support/model_factory).

W1: 1 query x 100 documents of 50-300 words (one big rerank call).
W2: 1 query x 20 documents of ~100 words (a typical RAG rerank call).
W3: 8 concurrent clients sending W2-shaped requests, a fixed number of requests in all.

Each workload is a pool of distinct requests; every contender receives the same requests in the same
order. `fidelity_pairs` is the fixed (query, document) set that precision/backend options are checked on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.model_factory import english_like_query, english_like_text


@dataclass(frozen=True)
class Request:
    query: str
    documents: tuple[str, ...]


@dataclass
class Workload:
    key: str
    description: str
    requests: list[Request]
    concurrency: int = 1
    total_requests: int = 0  # W3: requests per measured burst
    tokens: list[int] = field(default_factory=list)  # real tokens per request (pairs truncated at max_length)
    pair_lengths: list[list[int]] = field(default_factory=list)  # per request, per pair

    def request(self, i: int) -> Request:
        return self.requests[i % len(self.requests)]

    @property
    def mean_tokens(self) -> float:
        return sum(self.tokens) / len(self.tokens) if self.tokens else 0.0


@dataclass(frozen=True)
class WorkloadSizes:
    """How big each workload is; `smoke()` shrinks them for the end-to-end test."""

    w1_docs: int = 100
    w1_words: tuple[int, int] = (50, 300)
    w2_docs: int = 20
    w2_words: tuple[int, int] = (90, 110)
    w3_clients: int = 8
    w3_requests: int = 48  # per measured burst (bounded)
    pool: int = 8  # distinct requests per workload

    @classmethod
    def smoke(cls) -> WorkloadSizes:
        return cls(w1_docs=6, w1_words=(10, 40), w2_docs=4, w2_words=(15, 25), w3_clients=2, w3_requests=4,
                   pool=2)


def _request(rng: random.Random, n_docs: int, words: tuple[int, int]) -> Request:
    query = english_like_query(rng)
    docs = tuple(english_like_text(rng, rng.randint(*words)) for _ in range(n_docs))
    return Request(query, docs)


def build_workloads(sizes: WorkloadSizes, seed: int = 20240601) -> list[Workload]:
    rng = random.Random(seed)
    w1 = Workload("W1", f"1 query x {sizes.w1_docs} docs of {sizes.w1_words[0]}-{sizes.w1_words[1]} words",
                  [_request(rng, sizes.w1_docs, sizes.w1_words) for _ in range(sizes.pool)])
    w2_words = f"~{(sizes.w2_words[0] + sizes.w2_words[1]) // 2}"
    w2 = Workload("W2", f"1 query x {sizes.w2_docs} docs of {w2_words} words",
                  [_request(rng, sizes.w2_docs, sizes.w2_words) for _ in range(sizes.pool)])
    w3_pool = max(sizes.pool, sizes.w3_clients * 2)
    w3 = Workload("W3", f"{sizes.w3_clients} concurrent clients x W2-shaped requests, "
                        f"{sizes.w3_requests} requests per burst",
                  [_request(rng, sizes.w2_docs, sizes.w2_words) for _ in range(w3_pool)],
                  concurrency=sizes.w3_clients, total_requests=sizes.w3_requests)
    return [w1, w2, w3]


def count_tokens(workloads: list[Workload], model_path: Path, max_length: int = 512) -> None:
    """Fill in the real token counts (the model's tokenizer, each pair truncated at `max_length`)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    for workload in workloads:
        workload.pair_lengths = []
        for req in workload.requests:
            encoded = tokenizer([req.query] * len(req.documents), list(req.documents), truncation=True,
                                max_length=max_length)
            workload.pair_lengths.append([len(ids) for ids in encoded["input_ids"]])
        workload.tokens = [sum(lengths) for lengths in workload.pair_lengths]


def fidelity_pairs(n: int = 512, seed: int = 7) -> list[tuple[str, str]]:
    """A fixed set of `n` (query, document) pairs for precision/backend fidelity checks.

    Lengths are spread on purpose: one-word to ~700-word documents (the longest exceed 512 tokens,
    so truncation is exercised too), several documents per query so rankings can be compared."""
    rng = random.Random(seed)
    pairs: list[tuple[str, str]] = []
    while len(pairs) < n:
        query = english_like_query(rng)
        for _ in range(8):
            bucket = rng.random()
            words = (rng.randint(1, 20) if bucket < 0.2 else rng.randint(20, 200) if bucket < 0.8
                     else rng.randint(200, 700))
            pairs.append((query, english_like_text(rng, words)))
    return pairs[:n]
