"""The engine a route talks to: query + documents in, scores out. No HTTP here, no tensors in the routes."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio.to_thread
import numpy as np

from service.backends.base import Backend
from service.engine.batching import plan_batches
from service.engine.scheduler import BatchScheduler, Pair
from service.engine.tokenization import EncodedPairs, PairEncoder, pad_batch
from service.memory import PAD_MULTIPLE, padded_length, release_memory

Activation = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Scores:
    relevance: np.ndarray  # activation(logits): sigmoid for one-logit rerankers, in [0, 1]
    logits: np.ndarray
    tokens: list[int]  # real tokens per pair, after truncation

    @property
    def total_tokens(self) -> int:
        return sum(self.tokens)


class RerankEngine:
    def __init__(self, encoder: PairEncoder, backend: Backend, activation: Activation, *,
                 batch_tokens: int, max_wait_s: float, pad_multiple: int = PAD_MULTIPLE,
                 max_queued_tokens: int | None = None,
                 queue_wait_limit_s: float | None = None, watchdog_s: float = 30.0) -> None:
        self.encoder = encoder
        self.backend = backend
        self.activation = activation
        self.batch_tokens = batch_tokens
        self.pad_multiple = pad_multiple
        self.scheduler = BatchScheduler(self.score_pairs, batch_tokens=batch_tokens, max_wait_s=max_wait_s,
                                        max_queued_tokens=max_queued_tokens,
                                        queue_wait_limit_s=queue_wait_limit_s, watchdog_s=watchdog_s,
                                        on_idle=release_memory)

    @property
    def max_length(self) -> int:
        return self.encoder.max_length

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self.scheduler.stop()

    def score_pairs(self, pairs: list[Pair]) -> np.ndarray:
        """Logits for token-id pairs, in their order: sorted by length and cut by the token budget inside."""
        lengths = [len(ids) for ids, _ in pairs]
        logits = np.empty(len(pairs), dtype=np.float32)
        for batch in plan_batches(lengths, self.batch_tokens):
            # Padded to the longest pair, rounded up to `pad_multiple` (per backend: service.engine.factory).
            length = padded_length(max(lengths[i] for i in batch), self.encoder.max_length, self.pad_multiple)
            features = pad_batch([pairs[i] for i in batch], self.encoder.pad_token_id, length)
            logits[batch] = self.backend.forward(features)[:, 0]
            self.scheduler.beat()
        return logits

    def _scores(self, encoded: EncodedPairs, logits: np.ndarray) -> Scores:
        return Scores(relevance=self.activation(logits), logits=logits, tokens=encoded.lengths)

    async def rerank(self, query: str, documents: list[str], *, max_tokens_per_doc: int | None = None,
                     deadline: float | None = None,
                     disconnected: Callable[[], Awaitable[object]] | None = None) -> Scores:
        """deadline / disconnected: see BatchScheduler.submit (503 when still queued, dropped when gone)."""
        encoded = await anyio.to_thread.run_sync(
            lambda: self.encoder.encode(query, documents, max_tokens_per_doc=max_tokens_per_doc))
        logits = await self.scheduler.submit(encoded, deadline=deadline, disconnected=disconnected)
        return self._scores(encoded, logits)

    def rerank_now(self, query: str, documents: list[str]) -> Scores:
        """Synchronous scoring on the caller's thread (warm-up, scripts, tests); bypasses the queue."""
        encoded = self.encoder.encode(query, documents)
        types = encoded.token_type_ids or [None] * len(encoded)
        return self._scores(encoded, self.score_pairs(list(zip(encoded.input_ids, types))))
