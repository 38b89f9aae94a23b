"""Which attention path the model really takes, switched to PyTorch SDPA where its code allows it, and
verified: a switch that was set but not seen working is undone and reported.

JinaBERT's remote code (copies of `jinaai/jina-bert-implementation`) keeps its attention switch in one of two
places, and its config class resets it to None (eager) when loaded with transformers 4.x:

* the module form: `self.attn_implementation = config.attn_implementation` in the self-attention module's
  `__init__`, read in `forward` as `self.attn_implementation == "torch"`;
* the config form: the module keeps the shared config (`self.config = config`) and `forward` reads
  `self.config.attn_implementation == "torch"`.

`switch_to_sdpa` sets the module attribute where it exists, and, where the forward reads the config, gives
that module its own shallow copy of the config with `attn_implementation="torch"`: the model's shared config,
and the other meanings transformers gives `attn_implementation` / `_attn_implementation` (eager / sdpa /
flash_attention_2 for its own models), are left alone.

`verify_attention` runs a warm-up batch on the eager path, switches, runs it again while counting calls of
`torch.nn.functional.scaled_dot_product_attention` (a TorchFunctionMode sees every call, however the modeling
code imported the function), and compares the scores. It returns an `AttentionReport`; its `line` is what
the log and /info say: `attention: sdpa (verified)` or `attention: eager (<reason>)`.
"""

from __future__ import annotations

import copy
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

logger = logging.getLogger("service.backend")

SDPA_VALUE = "torch"  # what JinaBERT's forward compares attn_implementation with
CONFIG_READ = "self.config.attn_implementation"
# Scores (sigmoid) may move this much between the eager and the SDPA path (different summation order).
SCORE_TOLERANCE = 1e-4

SAMPLE_QUERY = "what is a reranker"
SAMPLE_DOCUMENTS = ("A reranker scores how relevant each document is to a query.", "Paris is in France.",
                    "Cross-encoders read the query and the document together, token by token, in one pass.")


class SdpaCallCounter(TorchFunctionMode):
    """Counts calls of F.scaled_dot_product_attention while active."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") == "scaled_dot_product_attention":
            self.calls += 1
        return func(*args, **(kwargs or {}))


@dataclass
class SdpaSwitch:
    """What `switch_to_sdpa` changed, so that `undo` can put it back."""

    module_form: list[tuple[torch.nn.Module, Any]] = field(default_factory=list)  # (module, old value)
    config_form: list[tuple[torch.nn.Module, Any]] = field(default_factory=list)  # (module, old config)

    @property
    def modules(self) -> int:
        return len(self.module_form) + len(self.config_form)

    @property
    def form(self) -> str:
        forms = [name for name, items in (("module", self.module_form), ("config", self.config_form)) if items]
        return "+".join(forms) or "none"

    def undo(self) -> None:
        for module, old in self.module_form:
            module.attn_implementation = old
        for module, old_config in self.config_form:
            module.config = old_config
        self.module_form.clear()
        self.config_form.clear()


@dataclass(frozen=True)
class AttentionReport:
    path: str  # "sdpa" | "eager"
    reason: str  # "verified", or why not
    modules: int = 0  # attention modules switched
    form: str = "none"  # "module", "config", "module+config", "none" (the model's own attention)
    sdpa_calls: int = 0  # calls seen during the verified warm-up forward
    max_score_diff: float | None = None  # eager vs sdpa on the warm-up batch

    @property
    def line(self) -> str:
        return f"attention: {self.path} ({self.reason})"

    def as_info(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason, "switched_modules": self.modules, "code_form": self.form,
                "sdpa_calls_at_warmup": self.sdpa_calls, "max_score_diff_vs_eager": self.max_score_diff}


def _reads_config_switch(module: torch.nn.Module) -> bool:
    try:
        return CONFIG_READ in inspect.getsource(type(module).forward)
    except (OSError, TypeError):  # no source (compiled, interactive): trust the attribute's presence
        return type(module).__name__.endswith("SelfAttention")


def switch_to_sdpa(model: torch.nn.Module) -> SdpaSwitch:
    """Switch every JinaBERT-style attention module (either code form) to the SDPA path."""
    from transformers import PreTrainedModel

    switch = SdpaSwitch()
    for module in model.modules():
        if isinstance(module, PreTrainedModel):  # whole models: transformers' own attn_implementation
            continue
        attributes = vars(module)
        if "attn_implementation" in attributes:
            switch.module_form.append((module, module.attn_implementation))
            module.attn_implementation = SDPA_VALUE
            continue
        config = attributes.get("config")
        if config is not None and hasattr(config, "attn_implementation") and _reads_config_switch(module):
            private = copy.copy(config)  # shallow: the shared config (and the other modules' view) unchanged
            private.attn_implementation = SDPA_VALUE
            switch.config_form.append((module, config))
            module.config = private
    return switch


def sample_features(tokenizer, max_length: int = 512) -> dict[str, np.ndarray]:
    """A small padded warm-up batch (pairs of different lengths, so the padding mask is exercised)."""
    encoded = tokenizer([SAMPLE_QUERY] * len(SAMPLE_DOCUMENTS), list(SAMPLE_DOCUMENTS), padding=True,
                        truncation=True, max_length=max_length, return_tensors="np")
    return {name: np.asarray(array, dtype=np.int64) for name, array in encoded.items()}


def warmup_scores(forward: Callable[[dict[str, np.ndarray]], np.ndarray], features) -> np.ndarray:
    """Sigmoid scores of the warm-up batch through the backend's `forward` (float64, for comparing paths)."""
    logits = forward(features).astype(np.float64)
    return 1.0 / (1.0 + np.exp(-logits))


def verify_attention(model: torch.nn.Module, forward: Callable[[dict[str, np.ndarray]], np.ndarray],
                     features: dict[str, np.ndarray] | None, *, tolerance: float = SCORE_TOLERANCE,
                     enable: bool = True) -> AttentionReport:
    """Switch `model` to SDPA if its code allows, and keep the switch only if a forward pass (`forward`, the
    backend's) is seen calling scaled_dot_product_attention with the same scores as the eager path."""
    if features is None:
        switch = switch_to_sdpa(model) if enable else SdpaSwitch()
        reason = "switched, not verified: no warm-up batch" if switch.modules else "model default, not verified"
        return AttentionReport("sdpa" if switch.modules else "eager", reason, switch.modules, switch.form)
    with SdpaCallCounter() as counter:
        eager = warmup_scores(forward, features)
    if counter.calls:  # the model's own attention already is SDPA (transformers' BERT: attn_implementation sdpa)
        return AttentionReport("sdpa", "verified: the model's own attention", 0, "none", counter.calls)
    if not enable:
        return AttentionReport("eager", "SDPA switch disabled")
    switch = switch_to_sdpa(model)
    if not switch.modules:
        return AttentionReport("eager", "the model has no attn_implementation switch and does not call SDPA")
    with SdpaCallCounter() as counter:
        sdpa = warmup_scores(forward, features)
    diff = float(np.max(np.abs(sdpa - eager))) if eager.size else 0.0
    if counter.calls == 0:
        what = switch_form_text(switch)
        switch.undo()
        return AttentionReport("eager", f"{what}: switched but the forward never called "
                                        "scaled_dot_product_attention; switch undone", 0, "none", 0, diff)
    if not diff <= tolerance:
        form = switch.form
        switch.undo()
        return AttentionReport("eager", f"SDPA changed the warm-up scores by {diff:.2e} (> {tolerance:.0e}); "
                                        "switch undone", 0, form, counter.calls, diff)
    return AttentionReport("sdpa", "verified", switch.modules, switch.form, counter.calls, diff)


def switch_form_text(switch: SdpaSwitch) -> str:
    return f"{switch.modules} module(s), {switch.form} form"
