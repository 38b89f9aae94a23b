"""The torch flavour's loader: the native JinaBERT implementation where the model folder's check allows it
(service/engine/implementation.py: no transformers import), else the model as sentence-transformers' CrossEncoder
loads it (`service.model_store.load_reranker`: remote code, ALiBi cap; sentence-transformers itself is not
imported); then the torch backend (fp32/bf16) or ONNX Runtime on the ONNX files next to the model. Imported only
by `service.engine.factory.build_engine` when the flavour is `torch`."""

from __future__ import annotations

import logging
import time

import torch

from service.backends.attention import sample_features
from service.backends.packed_linear import PackedLinearUnavailable
from service.backends.selection import (
    BackendChoice,
    choose_backend,
    load_verdict,
    model_directory,
    verdict_info,
)
from service.backends.torch_backend import TorchBackend
from service.engine.factory import LoadedEngine, engine_options, thread_count, warm_up_and_start
from service.engine.implementation import choose_implementation
from service.engine.reranker import RerankEngine
from service.engine.tokenization import PairEncoder
from service.memory import ONEDNN_CACHE_CAPACITY, configure_allocator
from service.model_store import ModelNotAvailableError, ModelSource, load_reranker, resolve_device
from service.native_gate import sample_batch
from service.settings import Settings

logger = logging.getLogger("service.engine")


def configure_threads(settings: Settings) -> int:
    """torch's intra-op threads = cores / workers (service.engine.factory.thread_count); one inter-op thread."""
    threads = thread_count(settings)
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (a second engine in the same process)
        pass
    return threads


def build_torch_engine(settings: Settings) -> LoadedEngine:
    started = time.perf_counter()
    source = ModelSource.from_settings(settings)
    device = resolve_device(settings.rerank_device)
    verdict, verdict_problem = load_verdict(source)
    folder = model_directory(source)
    choice = choose_backend(backend=settings.rerank_backend, precision=settings.rerank_precision, device=device,
                            verdict=verdict, verdict_problem=verdict_problem, model_dir=folder)
    # Before the model loads and the first oneDNN primitive exists: the cache size depends on the precision.
    allocator = configure_allocator(cache_capacity=ONEDNN_CACHE_CAPACITY.get(choice.precision,
                                                                             ONEDNN_CACHE_CAPACITY["fp32"]))
    threads = configure_threads(settings)
    implementation = choose_implementation(
        settings.rerank_implementation, folder=folder, backend=choice.backend, device=device,
        max_length=settings.rerank_max_length)
    if implementation.native is not None:
        native = implementation.native
        logger.info("Loaded %s with the native JinaBERT implementation (no transformers): %s",
                    source.display, implementation.reason)
        backend = _torch_backend(native.model, device, choice.precision, settings.rerank_linear,
                                 sample_batch(native.encoder))
        encoder, activate, activation_name = native.encoder, native.activation, native.activation_name
        max_length, revision = native.max_length, source.revision
    else:
        loaded_model, max_length = load_reranker(
            source, device=device, max_length=settings.rerank_max_length,
            local_files_only=settings.is_production)
        if loaded_model.num_labels != 1:
            raise ModelNotAvailableError(
                f"{source.display} has {loaded_model.num_labels} output labels; a reranker needs exactly one "
                "relevance logit. Point RERANK_MODEL at a cross-encoder reranker.")
        backend = _make_backend(choice, loaded_model, device, settings.rerank_linear)
        encoder = PairEncoder(loaded_model.tokenizer, max_length)
        activate, activation_name = loaded_model.activate, loaded_model.activation_name
        revision = source.revision or _commit_hash(loaded_model)
    engine = RerankEngine(encoder, backend, activate, **engine_options(settings, choice.backend, choice.precision))
    warm_up_and_start(engine)
    load_seconds = time.perf_counter() - started
    logger.info("Inference: backend=%s precision=%s threads=%d device=%s implementation=%s (%s); ready in %.2fs",
                choice.backend, choice.precision, threads, device, implementation.name, choice.reason, load_seconds)
    info = {
        "model": source.model_id if source.path is None else source.path.name,
        "model_id": source.model_id,
        "model_path": str(source.path) if source.path else None,
        "revision": revision,
        "device": device,
        "max_length": max_length,
        "activation": activation_name,
        "flavour": "torch",
        "implementation": implementation.info(),
        "backend": choice.backend,
        "precision": choice.precision,
        "backend_reason": choice.reason,
        "sdpa_attention_modules": getattr(backend, "sdpa_modules", 0),
        "attention": getattr(backend, "attention", "attention: backend default"),
        "attention_detail": backend.attention_report.as_info() if hasattr(backend, "attention_report") else None,
        "bf16_weights": getattr(backend, "bf16_conversion", None),
        "linear": backend.linear_report.line if hasattr(backend, "linear_report") else "linear: backend default",
        "linear_detail": backend.linear_report.as_info() if hasattr(backend, "linear_report") else None,
        "precision_verdict": verdict_info(choice, verdict, verdict_problem),
        "threads": threads,
        "batch_tokens": engine.batch_tokens,
        "pad_multiple": engine.pad_multiple,
        "memory": allocator,
        "load_seconds": round(load_seconds, 3),
    }
    return LoadedEngine(engine, info)


def _make_backend(choice: BackendChoice, loaded_model, device: str, linear: str):
    if choice.backend == "onnx":
        from service.backends.onnx_backend import OnnxBackend

        return OnnxBackend.from_loaded_model(loaded_model, quantized=choice.precision == "int8")
    return _torch_backend(loaded_model.model, device, choice.precision, linear,
                          sample_features(loaded_model.tokenizer, loaded_model.max_length))


def _torch_backend(model, device: str, precision: str, linear: str, sample) -> TorchBackend:
    try:
        return TorchBackend(model, device=device, precision=precision, linear=linear, sample=sample)
    except PackedLinearUnavailable as exc:
        raise ModelNotAvailableError(str(exc)) from exc


def _commit_hash(loaded_model) -> str | None:
    return getattr(loaded_model.model.config, "_commit_hash", None)
