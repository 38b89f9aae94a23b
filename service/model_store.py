"""Where the model comes from and how it is loaded: one code path for Hub ids and local directories.

Scripts (download_models.py, download_reranker_local.py), the image build and the service all load
through `load_reranker`, so what the build proves is what the service runs.
"""

from __future__ import annotations

import errno
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from service import hub
from service.hub import HubTimeouts

if TYPE_CHECKING:
    from service.settings import Settings

logger = logging.getLogger("service.model")

DOWNLOAD_COMMAND = "python scripts/download_models.py --model {model}"
LOCAL_DIR_COMMAND = "python scripts/download_reranker_local.py --output-dir {path}"
PRODUCTION_NEVER_DOWNLOADS = "ENVIRONMENT=production never downloads"


class ModelNotAvailableError(RuntimeError):
    """The model is not on disk and this environment may not download it (or the download failed)."""


@dataclass(frozen=True)
class ModelSource:
    """A model id on the Hub, or a local directory (which wins when both are configured)."""

    model_id: str
    path: Path | None = None
    revision: str | None = None
    timeouts: HubTimeouts = field(default_factory=HubTimeouts, compare=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> ModelSource:
        return cls(model_id=settings.rerank_model, path=settings.model_path,
                   revision=settings.rerank_model_revision, timeouts=settings.hub_timeouts)

    @property
    def name_or_path(self) -> str:
        return str(self.path) if self.path else self.model_id

    @property
    def display(self) -> str:
        return str(self.path) if self.path else self.model_id


def check_model_directory(path: Path) -> None:
    """The same words for a missing folder and for a folder that is not a model, in every environment."""
    if not path.is_dir():
        raise ModelNotAvailableError(
            f"RERANK_MODEL_PATH={path} does not exist"
            f"{' (it is a file)' if path.exists() else ''}: it must be a model directory. "
            f"Create one with: {LOCAL_DIR_COMMAND.format(path=path)}"
        )
    if not (path / "config.json").is_file():
        raise ModelNotAvailableError(
            f"RERANK_MODEL_PATH={path} has no config.json: it is not a model directory. "
            f"Create one with: {LOCAL_DIR_COMMAND.format(path=path)}"
        )


def read_model_config(source: ModelSource, *, local_files_only: bool) -> dict[str, Any]:
    """The model's config.json as a dict (from the directory, or from the Hub cache / Hub).

    Allowed to download (development): the Hub is asked once first, with a bounded wait; if it cannot be
    reached, this process goes offline and uses the Hugging Face cache."""
    if source.path is not None:
        check_model_directory(source.path)
        config_file = source.path / "config.json"
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        hub.bound_waits(source.timeouts)
        if not local_files_only:
            hub.check_reachable(source.model_id, source.revision, source.timeouts)
        try:
            config_file = Path(hf_hub_download(source.model_id, "config.json", revision=source.revision,
                                               local_files_only=local_files_only or hub.is_offline()))
        except LocalEntryNotFoundError as exc:
            message = not_on_disk_message(source, exc, local_files_only=local_files_only)
            raise ModelNotAvailableError(message) from None
        except (HfHubHTTPError, OSError) as exc:
            raise ModelNotAvailableError(
                hub.hub_failure_message(source.model_id, exc, model_id=source.model_id)) from None
    return json.loads(config_file.read_text(encoding="utf-8"))


def not_on_disk_message(source: ModelSource, exc: BaseException, *, local_files_only: bool) -> str:
    """Not in the cache: say why nothing was downloaded (production's rule, HF_HUB_OFFLINE, or a Hub that
    could not be reached)."""
    if local_files_only:
        return missing_model_message(source)
    if (failure := hub.unreachable()) is not None:
        return hub.unreachable_message(source.model_id, model_id=source.model_id, where=failure.endpoint,
                                       reason=failure.reason)
    if hub.is_offline():
        return missing_model_message(source, why="HF_HUB_OFFLINE=1 forbids downloading it")
    return hub.hub_failure_message(source.model_id, exc, model_id=source.model_id)


def missing_model_message(source: ModelSource, why: str = PRODUCTION_NEVER_DOWNLOADS) -> str:
    return (
        f"Model {source.model_id} is not on disk (Hugging Face cache: {hf_cache_dir()}) and "
        f"{why}. Pre-download it with: "
        f"{DOWNLOAD_COMMAND.format(model=source.model_id)} "
        f"(or set RERANK_MODEL_PATH to a directory made by python scripts/download_reranker_local.py)."
    )


def load_failure_message(source: ModelSource, exc: OSError, *, local_files_only: bool) -> str:
    """Name the real cause: an unwritable remote-code cache is not a missing model."""
    if isinstance(exc, PermissionError) or exc.errno in {errno.EROFS, errno.EACCES}:
        from transformers.utils import HF_MODULES_CACHE

        return (f"Could not load {source.display}: {exc}. Remote code is copied into the modules cache at load "
                f"time ({HF_MODULES_CACHE}): make it writable, point HF_MODULES_CACHE at a writable path "
                f"(e.g. a tmpfs), or prepare it in advance by loading the model once at build time.")
    if local_files_only:
        return f"{missing_model_message(source)} ({type(exc).__name__}: {exc})"
    return f"Could not load {source.display}: {type(exc).__name__}: {exc}"


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def enforce_hub_offline() -> None:
    """Production never downloads. `local_files_only` alone is not enough: some lookups inside
    transformers/sentence-transformers (processor configs) ignore it and retry the Hub for a minute."""
    hub.go_offline()


def uses_alibi(config: dict[str, Any]) -> bool:
    return config.get("position_embedding_type") == "alibi"


def effective_max_length(config: dict[str, Any], requested: int) -> int:
    """Tokens per pair. ALiBi models accept any length (their buffer is capped to it); models with
    learned position embeddings cannot go past their table."""
    if uses_alibi(config):
        return requested
    table = config.get("max_position_embeddings")
    if isinstance(table, int) and table > 0:
        # RoBERTa-style models offset positions by padding_idx + 1.
        usable = table - (config["pad_token_id"] + 1 if config.get("model_type") in {"roberta", "xlm-roberta"}
                          and isinstance(config.get("pad_token_id"), int) else 0)
        if requested > usable:
            logger.warning("RERANK_MAX_LENGTH=%d exceeds the model's %d positions; using %d",
                           requested, usable, usable)
            return usable
    return requested


def config_overrides(config: dict[str, Any], max_length: int) -> dict[str, Any]:
    """JinaBERT builds an ALiBi bias of heads x max_position^2 floats at construction (3.2 GB at 8,192):
    cap it to what we will ever feed it. Never cap learned position embeddings (the weights would not fit)."""
    if uses_alibi(config) and int(config.get("max_position_embeddings") or 0) > max_length:
        return {"max_position_embeddings": max_length}
    return {}


def resolve_device(requested: str) -> str:
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ModelNotAvailableError(
            "RERANK_DEVICE=cuda but torch sees no CUDA device (this image ships CPU-only torch). "
            "Use RERANK_DEVICE=cpu or auto."
        )
    return requested


@dataclass
class LoadedReranker:
    """What the service runs: the transformers model, its tokenizer and the activation on its logits, loaded
    the way sentence-transformers' CrossEncoder loads a sequence-classification model (tests compare the two
    on every test model), without importing sentence-transformers (its evaluation modules pull scikit-learn
    and SciPy in: 85 MiB of every worker's memory)."""

    model: Any  # transformers PreTrainedModel, eval mode, on the device
    tokenizer: Any  # transformers tokenizer, model_max_length = the tokens-per-pair cap
    activation_fn: Any  # torch module applied to the logits (CrossEncoder's activation_fn)
    activation_name: str  # its dotted path, for /info and logs
    max_length: int

    @property
    def num_labels(self) -> int:
        return int(self.model.config.num_labels)

    def activate(self, logits: Any) -> Any:
        """The activation on a numpy array of logits (what the engine applies after each forward)."""
        import torch

        with torch.inference_mode():
            return self.activation_fn(torch.from_numpy(logits)).numpy()

    def score(self, pairs: list[tuple[str, str]]) -> list[float]:
        """Scores of a few pairs in one padded batch: a load check for scripts and image tests. The service
        scores through its engine (service/engine), never through this."""
        import torch

        features = self.tokenizer([q for q, _ in pairs], [d for _, d in pairs], truncation="longest_first",
                                  max_length=self.max_length, padding=True, return_tensors="pt")
        with torch.inference_mode():
            logits = self.model(**features.to(self.model.device), return_dict=True).logits
            return self.activation_fn(logits.float()).reshape(len(pairs), -1)[:, 0].cpu().tolist()


def load_reranker(source: ModelSource, *, device: str = "cpu", max_length: int = 512,
                  local_files_only: bool = False) -> tuple[LoadedReranker, int]:
    """Load the model exactly as the service runs it. Returns the model and the tokens-per-pair cap.

    The steps of sentence-transformers 5.x `CrossEncoder(name, trust_remote_code=True, max_length=...,
    config_kwargs=...)` for a sequence-classification model: AutoConfig with the overrides (one label when
    the architecture is not a classifier), AutoModelForSequenceClassification with that config, the
    tokenizer with `model_max_length`, and the activation named by the model (sigmoid for one label)."""
    if source.path is not None:
        logger.info("Using local model path: %s", source.path)
        logger.info("Loading reranker model from local directory: %s", source.path)
    else:
        logger.info("Loading %s model...", source.model_id)
    if local_files_only:
        enforce_hub_offline()

    config = read_model_config(source, local_files_only=local_files_only)
    local_files_only = local_files_only or hub.is_offline()  # the Hub could not be reached: the cache only
    max_length = effective_max_length(config, max_length)
    overrides = config_overrides(config, max_length)
    if overrides:
        logger.info("ALiBi model: capping max_position_embeddings %s -> %d (RERANK_MAX_LENGTH)",
                    config.get("max_position_embeddings"), max_length)

    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    shared = {"trust_remote_code": True, "revision": None if source.path else source.revision,
              "local_files_only": local_files_only}
    try:
        model_config = AutoConfig.from_pretrained(source.name_or_path, **shared, **overrides)
        if not any(str(arch).endswith("ForSequenceClassification") for arch in model_config.architectures or ()):
            model_config.num_labels = 1  # a bare encoder gets CrossEncoder's single relevance logit
        model = AutoModelForSequenceClassification.from_pretrained(source.name_or_path, config=model_config,
                                                                   **shared)
        tokenizer = AutoTokenizer.from_pretrained(source.name_or_path, model_max_length=max_length, **shared)
        st_config = _sentence_transformers_config(source, shared)
    except OSError as exc:
        raise ModelNotAvailableError(load_failure_message(source, exc, local_files_only=local_files_only)) from None
    model = model.to(resolve_device(device)).eval()
    activation_fn, activation_name = torch_activation(model.config.to_dict(), st_config)

    if source.path is not None:
        logger.info("Local reranker model loaded successfully from: %s", source.path)
    else:
        logger.info("%s model loaded successfully", source.model_id)
    return LoadedReranker(model, tokenizer, activation_fn, activation_name, max_length), max_length


def _sentence_transformers_config(source: ModelSource, shared: dict[str, Any]) -> dict[str, Any] | None:
    """`service.engine.activation.sentence_transformers_config` on the model's files, local or from the Hub (its
    cache), where CrossEncoder keeps the activation of a folder it saved."""
    from transformers.utils import cached_file

    from service.engine.activation import NotACrossEncoderError, sentence_transformers_config

    def read_json(name: str) -> Any:
        found = cached_file(source.name_or_path, name, revision=shared["revision"],
                            local_files_only=shared["local_files_only"], _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
        return json.loads(Path(found).read_text(encoding="utf-8")) if found else None

    try:
        return sentence_transformers_config(read_json, source.display)
    except NotACrossEncoderError as exc:
        raise ModelNotAvailableError(str(exc)) from None


def torch_activation(config: dict[str, Any], st_config: dict[str, Any] | None = None) -> tuple[Any, str]:
    """(the activation module, its dotted path): the class the model names (imported as CrossEncoder does with
    trust_remote_code), else sigmoid for one label and identity for more."""
    import importlib

    import torch

    from service.engine.activation import configured_activation_name, num_labels

    name = configured_activation_name(config, st_config)
    if name is None:
        function = torch.nn.Sigmoid() if num_labels(config) == 1 else torch.nn.Identity()
        return function, f"{type(function).__module__}.{type(function).__qualname__}"
    module, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)(), name
    except (ImportError, AttributeError, ValueError) as exc:
        raise ModelNotAvailableError(f"the model's activation {name!r} cannot be imported: {exc}") from None
