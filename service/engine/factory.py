"""Build a ready engine from settings: load the model, pick backend, precision and threads, warm up."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from service.backends.selection import BackendChoice, choose_backend
from service.backends.torch_backend import TorchBackend
from service.engine.reranker import RerankEngine
from service.engine.tokenization import PairEncoder
from service.model_store import ModelNotAvailableError, ModelSource, load_cross_encoder, resolve_device
from service.settings import Settings, cpu_count_available

logger = logging.getLogger("service.engine")

WARMUP_QUERY = "what is a reranker"
WARMUP_DOCUMENTS = ["A reranker scores how relevant each document is to a query.", "Paris is in France."]


@dataclass
class LoadedEngine:
    engine: RerankEngine
    info: dict[str, Any] = field(default_factory=dict)


def configure_threads(settings: Settings) -> int:
    """Intra-op threads = CPUs available to this container (cgroup quota aware) / workers."""
    threads = settings.rerank_threads or max(1, cpu_count_available() // settings.web_concurrency)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (a second engine in the same process)
        pass
    return threads


def build_engine(settings: Settings) -> LoadedEngine:
    started = time.perf_counter()
    threads = configure_threads(settings)
    source = ModelSource.from_settings(settings)
    device = resolve_device(settings.rerank_device)
    cross_encoder, max_length = load_cross_encoder(
        source, device=device, max_length=settings.rerank_max_length,
        local_files_only=settings.is_production)
    if cross_encoder.num_labels != 1:
        raise ModelNotAvailableError(
            f"{source.display} has {cross_encoder.num_labels} output labels; a reranker needs exactly one "
            "relevance logit. Point RERANK_MODEL at a cross-encoder reranker.")
    choice = choose_backend(backend=settings.rerank_backend, precision=settings.rerank_precision, device=device)
    backend = _make_backend(choice, cross_encoder, device)
    activation = _activation(cross_encoder.activation_fn)
    engine = RerankEngine(PairEncoder(cross_encoder.tokenizer, max_length), backend, activation,
                          batch_tokens=settings.rerank_batch_tokens,
                          max_wait_s=settings.rerank_max_wait_ms / 1000,
                          max_queued_tokens=settings.rerank_max_queued_tokens,
                          queue_wait_limit_s=settings.rerank_request_timeout_s / 2,
                          watchdog_s=settings.rerank_watchdog_s)
    engine.rerank_now(WARMUP_QUERY, WARMUP_DOCUMENTS)
    engine.start()
    load_seconds = time.perf_counter() - started
    logger.info("Inference: backend=%s precision=%s threads=%d device=%s (%s); ready in %.2fs",
                choice.backend, choice.precision, threads, device, choice.reason, load_seconds)
    info = {
        "model": source.model_id if source.path is None else source.path.name,
        "model_id": source.model_id,
        "model_path": str(source.path) if source.path else None,
        "revision": source.revision or _commit_hash(cross_encoder),
        "device": device,
        "max_length": max_length,
        "backend": choice.backend,
        "precision": choice.precision,
        "backend_reason": choice.reason,
        "sdpa_attention_modules": getattr(backend, "sdpa_modules", 0),
        "threads": threads,
        "load_seconds": round(load_seconds, 3),
    }
    return LoadedEngine(engine, info)


def _make_backend(choice: BackendChoice, cross_encoder, device: str):
    if choice.backend == "onnx":
        from service.backends.onnx_backend import OnnxBackend

        return OnnxBackend.from_cross_encoder(cross_encoder, quantized=choice.precision == "int8")
    return TorchBackend(cross_encoder.model, device=device, precision=choice.precision)


def _activation(activation_fn):
    def apply(logits):
        with torch.inference_mode():
            return activation_fn(torch.from_numpy(logits)).numpy()

    return apply


def _commit_hash(cross_encoder) -> str | None:
    return getattr(cross_encoder.model.config, "_commit_hash", None)
