"""Which implementation of the model the torch backend serves: the native JinaBERT (service/backends/jinabert.py,
no transformers import, no remote code executed) or the model's remote code through transformers.

RERANK_IMPLEMENTATION:

* `auto` (default): native when the model folder's `native.json` (service/native_gate.py) passed, the backend is
  torch on the CPU, and the native model reproduces the verdict's probe at start-up; the remote code otherwise,
  with the reason in the log and /info.
* `native`: the same checks, but a failed one stops the start-up with the reason and the fix.
* `remote-code`: always transformers and the model's own code (the path before the native implementation).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import native_gate
from service.model_store import ModelNotAvailableError

logger = logging.getLogger("service.engine")

IMPLEMENTATIONS = ("auto", "native", "remote-code")


@dataclass
class NativeModel:
    """What the native path serves with: the fp32 model (the backend converts it), the tokenizers encoder, the
    activation on the logits."""

    model: Any
    encoder: Any
    activation: Any
    activation_name: str
    max_length: int


@dataclass
class ImplementationChoice:
    name: str  # "native" | "remote-code"
    reason: str
    verdict: native_gate.NativeVerdict | None = None
    native: NativeModel | None = field(default=None, repr=False)

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "reason": self.reason,
                "verdict": self.verdict.info() if self.verdict is not None else None}


def choose_implementation(requested: str, *, folder: Path | None, backend: str, device: str,
                          max_length: int) -> ImplementationChoice:
    """Load the native model when `requested` and the checks allow it; else say why the remote code serves.
    `max_length` is RERANK_MAX_LENGTH."""
    if requested not in IMPLEMENTATIONS:
        raise ValueError(f"RERANK_IMPLEMENTATION={requested!r}; choose from {IMPLEMENTATIONS}")
    if requested == "remote-code":
        return ImplementationChoice("remote-code", "RERANK_IMPLEMENTATION=remote-code")
    verdict = None
    try:
        verdict = native_gate.read_native_verdict(folder)
        native = _native_model(verdict, folder=folder, backend=backend, device=device, max_length=max_length)
    except (NativeUnavailable, native_gate.NativeVerdictError) as exc:
        if requested == "native":
            raise ModelNotAvailableError(
                f"RERANK_IMPLEMENTATION=native, but {exc}. Check the folder with: python -m service.native_gate "
                f"{folder or 'MODEL_DIR'}, or set RERANK_IMPLEMENTATION=auto (falls back to the remote code).") from None
        reason = f"remote code: {exc}"
        # A check that passed at build time and fails here is a surprise (changed files, another environment).
        surprising = verdict is not None and verdict.passed
        logger.log(logging.WARNING if surprising else logging.INFO, "implementation: %s", reason)
        return ImplementationChoice("remote-code", reason, verdict)
    reason = f"native ({verdict.implementation}): {verdict.reason}; probe reproduced at start-up"
    return ImplementationChoice("native", reason, verdict, native)


class NativeUnavailable(Exception):
    """Why the native implementation does not serve this model here."""


def _native_model(verdict: native_gate.NativeVerdict | None, *, folder: Path | None, backend: str, device: str,
                  max_length: int) -> NativeModel:
    from service.backends import jinabert

    if backend != "torch":
        raise NativeUnavailable(f"the {backend} backend serves (the native implementation is a torch model)")
    if device != "cpu":
        raise NativeUnavailable(f"device {device} (the native implementation was checked on the CPU)")
    if verdict is None:
        raise NativeUnavailable(f"no {native_gate.VERDICT_FILE} in {folder}" if folder else "no model folder")
    if not verdict.passed:
        raise NativeUnavailable(f"{verdict.path} did not pass: {verdict.reason}")
    if verdict.implementation != jinabert.IMPLEMENTATION:
        raise NativeUnavailable(f"{verdict.path} checked {verdict.implementation or 'another implementation'}, "
                                f"this service has {jinabert.IMPLEMENTATION}")
    assert folder is not None
    try:
        native = load_native_model(folder, max_length)
        problem = native_gate.probe_problem(verdict, native.encoder, fp32_forward(native.model))
    except jinabert.UnsupportedModel as exc:
        raise NativeUnavailable(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - unreadable files, a forward that fails: the remote code's path decides
        raise NativeUnavailable(f"the native model could not be loaded and probed ({type(exc).__name__}: {exc})") from None
    if problem is not None:
        raise NativeUnavailable(problem)
    return native


def load_native_model(folder: Path, max_length: int) -> NativeModel:
    """The folder's model in the native implementation, capped at `max_length` tokens per pair (RERANK_MAX_LENGTH,
    or fewer when the model has fewer positions, as the remote-code path caps it)."""
    from service.backends import jinabert
    from service.engine.activation import (
        NotACrossEncoderError,
        UnsupportedActivationError,
        activation_from_config,
        folder_json,
        sentence_transformers_config,
    )
    from service.engine.tokenization import TokenizersPairEncoder
    from service.model_store import effective_max_length

    config = jinabert.read_config(folder)
    max_length = effective_max_length(config, max_length)
    try:
        activation, activation_name = activation_from_config(
            config, sentence_transformers_config(folder_json(folder), str(folder)))
    except (NotACrossEncoderError, UnsupportedActivationError) as exc:
        raise jinabert.UnsupportedModel(str(exc)) from None
    encoder = TokenizersPairEncoder.from_model_dir(folder, max_length)
    return NativeModel(jinabert.load(folder, max_length=max_length), encoder, activation, activation_name,
                       max_length)


def fp32_forward(model):
    """features -> logits (numpy) on the untouched fp32 model, for the probe (before any bf16 conversion)."""
    import torch

    def forward(features):
        with torch.inference_mode():
            return model(**{name: torch.from_numpy(array) for name, array in features.items()}).logits.numpy()

    return forward
