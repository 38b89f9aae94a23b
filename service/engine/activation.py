"""The activation applied to a reranker's logits, from the model's config.json, in numpy (no torch).

The same rule as sentence-transformers' CrossEncoder (`get_default_activation_fn`): the function a folder saved
by sentence-transformers 5 names in `config_sentence_transformers.json`, else the one config.json names under
`sentence_transformers.activation_fn` (or the pre-4.0 `sbert_ce_default_activation_function`); otherwise sigmoid
for one label, identity for more. Only the torch activations with a numpy twin here are
accepted; any other name is a startup error naming it (the torch flavour runs arbitrary ones)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Activation = Callable[[np.ndarray], np.ndarray]


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """float32 in, float32 out, as torch.sigmoid: exp of -|x| only (no overflow), so very negative logits
    give tiny positive scores rather than 0."""
    logits = np.asarray(logits, dtype=np.float32)
    small = np.exp(-np.abs(logits))
    return np.where(logits >= 0, 1.0 / (1.0 + small), small / (1.0 + small)).astype(np.float32)


def identity(logits: np.ndarray) -> np.ndarray:
    return np.asarray(logits, dtype=np.float32)


def tanh(logits: np.ndarray) -> np.ndarray:
    return np.tanh(np.asarray(logits, dtype=np.float32))


NUMPY_ACTIVATIONS: dict[str, Activation] = {
    "torch.nn.modules.activation.Sigmoid": sigmoid,
    "torch.nn.Sigmoid": sigmoid,
    "torch.nn.modules.linear.Identity": identity,
    "torch.nn.Identity": identity,
    "torch.nn.modules.activation.Tanh": tanh,
    "torch.nn.Tanh": tanh,
}


class UnsupportedActivationError(ValueError):
    pass


def num_labels(config: dict[str, Any]) -> int:
    labels = config.get("id2label")
    if isinstance(labels, dict) and labels:
        return len(labels)
    return int(config.get("num_labels") or 1)


def configured_activation_name(config: dict[str, Any], st_config: dict[str, Any] | None = None) -> str | None:
    """The activation's dotted path: `config_sentence_transformers.json`'s `activation_fn` (`st_config`: where
    sentence-transformers 5 saves it, next to `modules.json`; it wins), then config.json's
    `sentence_transformers.activation_fn` (4.x), then the pre-4.0 `sbert_ce_default_activation_function`."""
    if isinstance(st_config, dict) and st_config.get("activation_fn"):
        return str(st_config["activation_fn"])
    st = config.get("sentence_transformers")
    if isinstance(st, dict) and st.get("activation_fn"):
        return str(st["activation_fn"])
    legacy = config.get("sbert_ce_default_activation_function")
    return str(legacy) if legacy else None


class NotACrossEncoderError(ValueError):
    """The model is a sentence-transformers pipeline other than a cross-encoder."""


def folder_json(folder: Path) -> Callable[[str], Any]:
    """A reader for `sentence_transformers_config`: the parsed JSON file `name` of a local folder, or None."""
    def read(name: str) -> Any:
        path = folder / name
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    return read


def sentence_transformers_config(read_json: Callable[[str], Any], model: str) -> dict[str, Any] | None:
    """A model saved by sentence-transformers (it has `modules.json`): its `config_sentence_transformers.json`
    ({} when absent). None for a plain transformers model, where CrossEncoder does not read that file either.
    `read_json(name)` is the parsed file or None (`folder_json`, or the Hub's cache in service.model_store).
    The one layout served is a CrossEncoder's: a single Transformer module at the model's root."""
    modules = read_json("modules.json")
    if modules is None:
        return None
    if not (isinstance(modules, list) and len(modules) == 1 and modules[0].get("path") in ("", None)
            and str(modules[0].get("type", "")).endswith(".Transformer")):
        raise NotACrossEncoderError(
            f"{model} is a sentence-transformers model whose modules.json is not a single Transformer module at "
            f"its root ({modules!r}); the service serves sequence-classification cross-encoders. Save the model "
            "with CrossEncoder.save_pretrained, or point RERANK_MODEL at a cross-encoder reranker.")
    return read_json("config_sentence_transformers.json") or {}


def activation_from_config(config: dict[str, Any], st_config: dict[str, Any] | None = None) -> tuple[Activation, str]:
    """(the activation, its name for /info)."""
    name = configured_activation_name(config, st_config)
    if name is None:
        return (sigmoid, "sigmoid") if num_labels(config) == 1 else (identity, "identity")
    if name not in NUMPY_ACTIVATIONS:
        raise UnsupportedActivationError(
            f"config.json asks for the activation {name!r}, which the ONNX flavour does not implement "
            f"(it has {sorted({f.__name__ for f in NUMPY_ACTIVATIONS.values()})}). Serve this model with the "
            "torch flavour (the `runtime` image, RERANK_BACKEND=torch).")
    function = NUMPY_ACTIVATIONS[name]
    return function, function.__name__
