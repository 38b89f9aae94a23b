"""ONNX Runtime backend (CPU): the model folder's `onnx/model.onnx` (fp32) or `onnx/model_quantized.onnx`
(dynamic int8), the files jinaai/jina-reranker-v1-tiny-en ships; `scripts/export_onnx.py` makes them for a
model that has none. Tokenization stays with the CrossEncoder's tokenizer (service/engine/tokenization.py).

Only onnxruntime is needed at run time (no `onnx`, no exporter)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from service.model_store import ModelNotAvailableError

logger = logging.getLogger("service.backend")

ONNX_DIR = "onnx"
FILES = {"fp32": "model.onnx", "int8": "model_quantized.onnx"}
MAX_LENGTH_METADATA = "max_sequence_length"  # written by service/backends/onnx_export.py
EXPORT_COMMAND = "python scripts/export_onnx.py --model-path {path}{quantize}"
INT64_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def session_options(threads: int | None = None):
    """Intra-op threads as given (the ONNX flavour passes cores / workers); otherwise torch's setting when
    torch is loaded (the torch flavour's configure_threads), else the CPUs available. One inter-op thread,
    sequential execution, all graph optimizations, no memory patterns. Never imports torch."""
    import sys

    import onnxruntime as ort

    if threads is None:
        torch = sys.modules.get("torch")
        if torch is not None:
            threads = torch.get_num_threads()
        else:
            from service.settings import cpu_count_available

            threads = cpu_count_available()
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # No per-shape memory patterns: every distinct batch shape would pre-plan (and the arena keep) its own
    # block; with the arena alone, buffers are reused across shapes. Measured on the JinaBERT proxy, slim
    # service serving W1 with 2,048-token batches: peak RSS 393 -> 279 MB.
    options.enable_mem_pattern = False
    options.log_severity_level = 3  # errors only: no per-node placement chatter
    return options


class OnnxBackend:
    name = "onnx"

    def __init__(self, model_file: Path | str, *, precision: str = "fp32", threads: int | None = None,
                 per_pair: bool | None = None) -> None:
        """`per_pair` (default: on for int8) runs each pair alone, without padding. Dynamic int8 quantizes
        activations with one scale per tensor, computed at run time over the whole batch (padding included),
        so a pair's score would otherwise depend on which pairs share its batch (measured: up to 0.64 on
        the JinaBERT proxy); alone, it is the same in every batch."""
        import onnxruntime as ort

        if precision not in FILES:
            raise ValueError(f"unsupported precision {precision!r} for the ONNX backend (fp32 or int8)")
        self.model_file = Path(model_file)
        self.precision = precision
        self.per_pair = precision == "int8" if per_pair is None else per_pair
        self.session = ort.InferenceSession(str(self.model_file), session_options(threads),
                                            providers=["CPUExecutionProvider"])
        self.threads = self.session.get_session_options().intra_op_num_threads
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = [n for n in self.input_names if n not in INT64_INPUTS]
        if unknown or "input_ids" not in self.input_names:
            raise ModelNotAvailableError(
                f"{self.model_file} expects inputs {self.input_names}; the ONNX backend feeds input_ids, "
                "attention_mask and token_type_ids. Re-export it with scripts/export_onnx.py.")
        self.output_name = self.session.get_outputs()[0].name
        metadata = self.session.get_modelmeta().custom_metadata_map or {}
        self.metadata = dict(metadata)
        self.max_length = int(metadata[MAX_LENGTH_METADATA]) if MAX_LENGTH_METADATA in metadata else None

    @classmethod
    def from_loaded_model(cls, loaded_model: Any, *, quantized: bool = False,
                          threads: int | None = None) -> OnnxBackend:
        """The ONNX file next to the loaded model: `<model folder>/onnx/model[_quantized].onnx` for a local
        directory, the same path in the model's Hugging Face cache snapshot (same revision) for a Hub id."""
        precision = "int8" if quantized else "fp32"
        filename = FILES[precision]
        found, where = locate_onnx_file(loaded_model, filename)
        if found is None:
            raise ModelNotAvailableError(missing_onnx_message(loaded_model, filename, where, quantized))
        backend = cls(found, precision=precision, threads=threads)
        max_length = loaded_model.max_length
        if backend.max_length is not None and max_length > backend.max_length:
            raise ModelNotAvailableError(
                f"{found} was exported for at most {backend.max_length} tokens per pair but "
                f"RERANK_MAX_LENGTH={max_length}. Set RERANK_MAX_LENGTH<={backend.max_length}, or re-export: "
                f"{EXPORT_COMMAND.format(path=where, quantize=' --quantize' if quantized else '')} "
                f"--max-length {max_length}")
        logger.info("ONNX Runtime %s backend: %s (%d intra-op threads)", precision, found, backend.threads)
        if quantized:
            logger.warning("RERANK_PRECISION=int8: dynamic int8 scores differ from fp32 (outside the "
                           "fidelity bounds on the JinaBERT proxy); pairs run one by one so scores do not "
                           "depend on their batch. Check your model's scores before relying on it.")
        return backend

    def forward(self, features: dict[str, np.ndarray]) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(features[name], dtype=np.int64)
                 for name in self.input_names if name in features}
        if "token_type_ids" in self.input_names and "token_type_ids" not in feeds:
            feeds["token_type_ids"] = np.zeros_like(feeds["input_ids"])
        if self.per_pair:
            lengths = (np.asarray(features["attention_mask"]).sum(axis=1) if "attention_mask" in features
                       else np.full(len(feeds["input_ids"]), feeds["input_ids"].shape[1]))
            return np.concatenate([self._run({name: array[row:row + 1, :int(length)]
                                              for name, array in feeds.items()})
                                   for row, length in enumerate(lengths)])
        return self._run(feeds)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (logits,) = self.session.run([self.output_name], feeds)
        return np.asarray(logits, dtype=np.float32).reshape(len(feeds["input_ids"]), -1)


def model_name_or_path(loaded_model: Any) -> str:
    """The Hub id or folder the model was loaded from (transformers records it on the config)."""
    return str(getattr(loaded_model.model.config, "_name_or_path", "") or "")


def locate_onnx_file(loaded_model: Any, filename: str) -> tuple[Path | None, str]:
    """(the file if present, the model folder or Hub id it was looked for in)."""
    name = model_name_or_path(loaded_model)
    folder = Path(name).expanduser()
    if name and folder.is_dir():
        candidate = folder / ONNX_DIR / filename
        return (candidate if candidate.is_file() else None), str(folder)
    if not name:
        return None, "<unknown model>"
    from huggingface_hub import try_to_load_from_cache

    revision = getattr(loaded_model.model.config, "_commit_hash", None)
    try:
        cached = try_to_load_from_cache(name, f"{ONNX_DIR}/{filename}", revision=revision)
    except ValueError:  # not a valid repo id
        cached = None
    return (Path(cached) if isinstance(cached, str) else None), name


def missing_onnx_message(loaded_model: Any, filename: str, where: str, quantized: bool) -> str:
    relative = f"{ONNX_DIR}/{filename}"
    setting = "RERANK_BACKEND=onnx" + (" with RERANK_PRECISION=int8" if quantized else "")
    quantize = " --quantize" if quantized else ""
    if Path(where).is_dir():
        return (f"{setting} needs {Path(where) / relative}, which does not exist. The real "
                f"jinaai/jina-reranker-v1-tiny-en repository ships it (copy its onnx/ folder into the model "
                f"folder), or export it from the model: "
                f"{EXPORT_COMMAND.format(path=where, quantize=quantize)}. "
                f"Or use RERANK_BACKEND=torch.")
    revision = getattr(loaded_model.model.config, "_commit_hash", None)
    return (f"{setting} needs {relative} from {where} in the Hugging Face cache, which is not there "
            f"(scripts/download_models.py skips ONNX files). Fetch it with: hf download {where} "
            f"{relative}{f' --revision {revision}' if revision else ''}; or make a local copy "
            f"(python scripts/download_reranker_local.py --model {where} --output-dir DIR), export "
            f"({EXPORT_COMMAND.format(path='DIR', quantize=quantize)}) and set RERANK_MODEL_PATH=DIR. "
            f"Or use RERANK_BACKEND=torch.")
