"""The ONNX flavour's loader: ONNX Runtime on the model folder's `onnx/model.onnx` (or, for int8,
`onnx/model_quantized.onnx`), `tokenizers` on its tokenizer.json, numpy for the activation. Imported only by
`service.engine.factory.build_engine` when the flavour is `onnx`; never imports torch, transformers or
sentence-transformers (tests/service/test_onnx_flavour.py runs it with those imports blocked).

The runtime-onnx image bakes in a folder prepared by `service.onnx_bundle` (an ONNX graph with the ALiBi cap
applied and graph optimisations, the tokenizer as transformers configures it, and the fidelity verdict);
any model folder with `config.json`, `tokenizer.json` and `onnx/model.onnx` works too.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from service import fidelity_gate
from service.backends.onnx_backend import EXPORT_COMMAND, FILES, ONNX_DIR, OnnxBackend
from service.engine.activation import (NotACrossEncoderError, UnsupportedActivationError, activation_from_config,
                                       folder_json, num_labels, sentence_transformers_config)
from service.engine.factory import LoadedEngine, engine_options, thread_count, warm_up_and_start
from service.engine.reranker import RerankEngine
from service.engine.tokenization import TokenizersPairEncoder
from service.memory import ARENA_MMAP_THRESHOLD, configure_allocator
from service.model_store import (
    ModelNotAvailableError,
    ModelSource,
    effective_max_length,
    enforce_hub_offline,
    missing_model_message,
    read_model_config,
)
from service.settings import Settings

logger = logging.getLogger("service.engine")

SERVING_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 fidelity_gate.VERDICT_FILE, f"{ONNX_DIR}/{FILES['fp32']}", f"{ONNX_DIR}/{FILES['fp32']}.data",
                 f"{ONNX_DIR}/{FILES['int8']}")


def build_onnx_engine(settings: Settings) -> LoadedEngine:
    started = time.perf_counter()
    allocator = configure_allocator(mmap_threshold=ARENA_MMAP_THRESHOLD)
    if settings.rerank_backend == "torch" or settings.rerank_precision == "bf16":
        raise ModelNotAvailableError(
            f"RERANK_BACKEND={settings.rerank_backend} RERANK_PRECISION={settings.rerank_precision} needs torch, "
            "which this flavour (ONNX Runtime, the runtime-onnx image) does not have: use RERANK_BACKEND=onnx "
            "or auto and RERANK_PRECISION=fp32, int8 or auto, or the torch image (target `runtime`).")
    if settings.rerank_device != "cpu":
        raise ModelNotAvailableError(f"RERANK_DEVICE={settings.rerank_device}: the ONNX flavour runs on the CPU "
                                     "only; set RERANK_DEVICE=cpu or use the torch image.")
    source = ModelSource.from_settings(settings)
    if source.path is not None:
        logger.info("Using local model path: %s", source.path)
        logger.info("Loading reranker model from local directory: %s", source.path)
    else:
        logger.info("Loading %s model...", source.model_id)
    folder = model_folder(source, local_files_only=settings.is_production)
    config = read_model_config(ModelSource(model_id=source.model_id, path=folder), local_files_only=True)
    labels = num_labels(config)
    if labels != 1:
        raise ModelNotAvailableError(
            f"{source.display} has {labels} output labels; a reranker needs exactly one relevance logit. "
            "Point RERANK_MODEL at a cross-encoder reranker.")
    max_length = effective_max_length(config, settings.rerank_max_length)
    precision, reason, precision_verdict = choose_onnx_precision(settings.rerank_precision, folder)
    threads = thread_count(settings)
    backend = _backend(folder, precision, threads, max_length)
    try:
        activation, activation_name = activation_from_config(
            config, sentence_transformers_config(folder_json(folder), source.display))
    except (NotACrossEncoderError, UnsupportedActivationError) as exc:
        raise ModelNotAvailableError(str(exc)) from None
    try:
        encoder = TokenizersPairEncoder.from_model_dir(
            folder, max_length, with_token_type_ids="token_type_ids" in backend.input_names)
    except FileNotFoundError as exc:
        raise ModelNotAvailableError(str(exc)) from None
    engine = RerankEngine(encoder, backend, activation, **engine_options(settings, "onnx", precision))
    warm_up_and_start(engine)
    load_seconds = time.perf_counter() - started
    if source.path is not None:
        logger.info("Local reranker model loaded successfully from: %s", source.path)
    else:
        logger.info("%s model loaded successfully", source.model_id)
    logger.info("Inference: flavour=onnx backend=onnx precision=%s threads=%d (%s); ready in %.2fs",
                precision, threads, reason, load_seconds)
    info = {
        "model": source.model_id if source.path is None else source.path.name,
        "model_id": source.model_id,
        "model_path": str(source.path) if source.path else None,
        "revision": source.revision,
        "device": "cpu",
        "max_length": max_length,
        "flavour": "onnx",
        "backend": "onnx",
        "precision": precision,
        "backend_reason": reason,
        "onnx_file": str(backend.model_file),
        "onnx_graph": backend.metadata,
        "activation": activation_name,
        "precision_verdict": precision_verdict,
        "threads": threads,
        "batch_tokens": engine.batch_tokens,
        "pad_multiple": engine.pad_multiple,
        "memory": allocator,
        "load_seconds": round(load_seconds, 3),
    }
    return LoadedEngine(engine, info)


def model_folder(source: ModelSource, *, local_files_only: bool) -> Path:
    """The local folder (RERANK_MODEL_PATH), or the Hub snapshot of the files this flavour serves."""
    if source.path is not None:
        if not source.path.is_dir():
            raise ModelNotAvailableError(
                f"RERANK_MODEL_PATH={source.path} does not exist. Create it with: "
                f"python scripts/download_reranker_local.py --output-dir {source.path}")
        return source.path
    if local_files_only:
        enforce_hub_offline()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(snapshot_download(source.model_id, revision=source.revision,
                                      allow_patterns=list(SERVING_FILES), local_files_only=local_files_only))
    except LocalEntryNotFoundError:
        raise ModelNotAvailableError(missing_model_message(source)) from None
    except (HfHubHTTPError, OSError) as exc:
        raise ModelNotAvailableError(
            f"Could not fetch {source.model_id} from the Hugging Face Hub ({type(exc).__name__}: {exc}). "
            "Check the network/proxy (HTTPS_PROXY) and HF_TOKEN, or bake the model into the image.") from None


def choose_onnx_precision(requested: str, folder: Path) -> tuple[str, str, dict[str, Any]]:
    """(precision, reason, /info's precision_verdict). An explicit fp32/int8 is the user's call; `auto` follows
    the model's verdict (service/fidelity_gate.py's choose_option): int8 only when it passed the gate, its file
    is there and it measured faster; fp32 otherwise, with the reason."""
    from service.backends.selection import BackendChoice, verdict_info

    try:
        verdict, problem = fidelity_gate.read_verdict(folder), None
    except fidelity_gate.VerdictError as exc:
        verdict, problem = None, f"unusable verdict: {exc}"
    if verdict is None and problem is None:
        problem = f"no {fidelity_gate.VERDICT_FILE} in {folder}"
    if requested in FILES:
        option = f"onnx-{requested}"
        note = f" ({verdict.summary(option)})" if verdict is not None and option in verdict.options else ""
        choice = BackendChoice("onnx", requested, f"RERANK_PRECISION={requested}{note}",
                               dict(verdict.options.get(option, {})) if verdict else {})
    else:
        available = ["onnx-fp32"] + (["onnx-int8"] if (folder / ONNX_DIR / FILES["int8"]).is_file() else [])
        auto = fidelity_gate.choose_option(verdict, available, fidelity_gate.cpu_features(), fallback="onnx-fp32",
                                           verdict_problem=problem)
        choice = BackendChoice("onnx", auto.precision, f"auto: {auto.reason}", dict(auto.figures))
    return choice.precision, choice.reason, verdict_info(choice, verdict, problem)


def _backend(folder: Path, precision: str, threads: int, max_length: int) -> OnnxBackend:
    model_file = folder / ONNX_DIR / FILES[precision]
    quantize = " --quantize" if precision == "int8" else ""
    if not model_file.is_file():
        raise ModelNotAvailableError(
            f"The ONNX flavour needs {model_file}, which does not exist. The real "
            "jinaai/jina-reranker-v1-tiny-en repository ships it; for another model export it (with torch, "
            f"outside this image): {EXPORT_COMMAND.format(path=folder, quantize=quantize)}, "
            "or build the runtime-onnx image, which exports it in its model stage.")
    backend = OnnxBackend(model_file, precision=precision, threads=threads)
    if backend.max_length is not None and max_length > backend.max_length:
        raise ModelNotAvailableError(
            f"{model_file} was exported for at most {backend.max_length} tokens per pair but "
            f"RERANK_MAX_LENGTH={max_length}. Set RERANK_MAX_LENGTH<={backend.max_length}, or re-export: "
            f"{EXPORT_COMMAND.format(path=folder, quantize=quantize)} --max-length {max_length}")
    logger.info("ONNX Runtime %s backend: %s (%d intra-op threads)", precision, model_file, backend.threads)
    return backend
