"""PyTorch backend: the model sentence-transformers loaded, run under inference_mode."""

from __future__ import annotations

import contextlib
import inspect
import logging

import numpy as np
import torch

logger = logging.getLogger("service.backend")


def enable_sdpa(model: torch.nn.Module) -> int:
    """JinaBERT's self-attention modules carry an `attn_implementation` attribute: None (its config
    resets it under transformers 4.57) takes the eager bmm/softmax path, "torch" takes PyTorch's
    scaled_dot_product_attention with the same outputs and less time. Switch every such module to
    "torch"; returns how many were switched (0 for models without that attribute). Whole models
    (transformers' own BertModel keeps an `attn_implementation` too, with other meanings) are left alone."""
    from transformers import PreTrainedModel

    switched = 0
    for module in model.modules():
        if not isinstance(module, PreTrainedModel) and "attn_implementation" in vars(module):
            module.attn_implementation = "torch"
            switched += 1
    return switched


class TorchBackend:
    name = "torch"

    def __init__(self, model: torch.nn.Module, *, device: str = "cpu", precision: str = "fp32",
                 sdpa: bool = True) -> None:
        if precision not in {"fp32", "bf16"}:
            raise ValueError(f"unsupported precision {precision!r}")
        self.model = model.eval()
        self.device = torch.device(device)
        self.precision = precision
        self.sdpa_modules = enable_sdpa(model) if sdpa else 0
        self._accepts = set(inspect.signature(model.forward).parameters)

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def forward(self, features: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {name: torch.from_numpy(array).to(self.device)
                  for name, array in features.items() if name in self._accepts}
        with torch.inference_mode(), self._autocast():
            output = self.model(**inputs, return_dict=True)
        return output.logits.float().cpu().numpy()
