"""Build a ready engine from settings: the flavour's loader loads the model, picks backend, precision and
threads, and warms up.

One loader per image flavour, imported only when it is used, so that the ONNX flavour never imports torch:

* `service.engine.torch_engine` (flavour `torch`, the `runtime` image): transformers, loaded as CrossEncoder would,
  served by the torch backend (fp32/bf16) or ONNX Runtime on the files next to it.
* `service.engine.onnx_engine` (flavour `onnx`, the `runtime-onnx` image): ONNX Runtime + `tokenizers` on the
  model folder's ONNX graph and tokenizer.json; no torch, transformers or sentence-transformers.

This module (and everything it imports at module level) stays torch-free.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from typing import Any

from service.engine.reranker import RerankEngine
from service.memory import PAD_MULTIPLE
from service.settings import Settings, cpu_count_available

WARMUP_QUERY = "what is a reranker"
WARMUP_DOCUMENTS = ["A reranker scores how relevant each document is to a query.", "Paris is in France."]
FLAVOURS = ("torch", "onnx")


@dataclass
class LoadedEngine:
    engine: RerankEngine
    info: dict[str, Any] = field(default_factory=dict)


def thread_count(settings: Settings) -> int:
    """Intra-op threads = CPUs available to this container (cgroup quota aware) / workers."""
    return settings.rerank_threads or max(1, cpu_count_available() // settings.web_concurrency)


def torch_installed() -> bool:
    return importlib.util.find_spec("torch") is not None


def resolve_flavour(settings: Settings) -> str:
    """RERANK_FLAVOUR, or for `auto`: `torch` when torch is installed, else `onnx` (the runtime-onnx image)."""
    if settings.rerank_flavour != "auto":
        return settings.rerank_flavour
    return "torch" if torch_installed() else "onnx"


# Padded tokens per forward pass when RERANK_BATCH_TOKENS is unset, by (backend, precision). Measured in-process on
# the JinaBERT proxy (2 cores, AMD EPYC with AVX-512 BF16; W2 p50 / W1 p50 / peak RSS):
#   torch fp32 (aten Linear, RERANK_LINEAR=aten), 1024: 421 / 3,403 ms / 569 MiB;  1536: 358 / 3,265 ms / 587 MiB;
#               2048: 378-392 / 3,153-3,299 ms / 603-636 MiB
#   torch fp32 (oneDNN-packed Linear, the default; 8 W1 + 8 W2 requests, twice, time per round / peak RSS):
#               1024: 26.9-28.5 s / 508 MiB;  1536: 26.3-27.2 s / 557 MiB  (aten at 1536: 30.2-30.9 s / 495-507 MiB)
#   torch bf16,  512: 266 / 2,330 ms / 575 MiB;      1024: 247-258 / 2,149-2,213 ms / 616-628 MiB;
#               2048: 300-315 / 2,493-2,615 ms / 702-730 MiB
# (bf16's matmuls run fastest on smaller blocks, and its activation peak grows fastest with the batch);
#   ONNX Runtime fp32/int8: 2048 (the slim image's 512 MB footprint was measured with it; benchmarks/RESULTS.md).
DEFAULT_BATCH_TOKENS = {("torch", "fp32"): 1024, ("torch", "bf16"): 1024, ("onnx", "fp32"): 2048,
                        ("onnx", "int8"): 2048}
FALLBACK_BATCH_TOKENS = 2048

# Each batch is padded to its longest pair rounded up to this many tokens, by backend. torch: exact lengths. oneDNN's
# and ideep's per-shape caches are capped (service/memory.py), so distinct lengths no longer hold memory, and
# rounding up to 16 cost compute: measured in-process on the JinaBERT proxy (fp32, packed Linear, 2 cores, the
# three multiples interleaved on the same requests), W2 p50 327-337 ms exact, 343 at 8, 342-346 at 16 (W2's
# padding is 2.6 % exact, 9.0 % at 16); W1 2,925-2,929 / 3,016-3,026 / 2,941-3,012 ms; in-process peak RSS within
# 5 MiB; host soak (benchmarks.soak) peak per worker exact / 16: fp32 538 / 616 MiB, bf16 550 / 550 MiB.
# ONNX Runtime: 16, with which its arena's footprint (infra/sizing.py) was measured.
PAD_MULTIPLES = {"torch": 1, "onnx": PAD_MULTIPLE}


def serving_batching(backend: str, precision: str, batch_tokens: int | None = None) -> dict[str, int]:
    """How `backend` batches when it serves `precision`: the token budget per forward pass (`batch_tokens`, i.e.
    RERANK_BATCH_TOKENS, when set; else the measured default) and the padding multiple. The engine serves with
    it, and the precision gate (service/fidelity_gate.py) times each option with it, so that the speeds `auto`
    chooses by are the speeds that serve."""
    if batch_tokens is None:
        batch_tokens = DEFAULT_BATCH_TOKENS.get((backend, precision), FALLBACK_BATCH_TOKENS)
    return {"batch_tokens": batch_tokens, "pad_multiple": PAD_MULTIPLES.get(backend, PAD_MULTIPLE)}


def engine_options(settings: Settings, backend: str, precision: str) -> dict[str, Any]:
    """The scheduling settings every flavour's RerankEngine takes: batching, padding, admission bound, watchdog."""
    return {**serving_batching(backend, precision, settings.rerank_batch_tokens),
            "max_wait_s": settings.rerank_max_wait_ms / 1000,
            "max_queued_tokens": settings.rerank_max_queued_tokens,
            "queue_wait_limit_s": settings.rerank_request_timeout_s / 2, "watchdog_s": settings.rerank_watchdog_s}


def warm_up_and_start(engine: RerankEngine) -> None:
    """One inference before health turns green (first-call allocations happen here), then the scheduler."""
    engine.rerank_now(WARMUP_QUERY, WARMUP_DOCUMENTS)
    engine.start()


def build_engine(settings: Settings) -> LoadedEngine:
    flavour = resolve_flavour(settings)
    if flavour == "onnx":
        from service.engine.onnx_engine import build_onnx_engine

        return build_onnx_engine(settings)
    from service.engine.torch_engine import build_torch_engine

    return build_torch_engine(settings)
