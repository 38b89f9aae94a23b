"""PyTorch backend: the model sentence-transformers loaded, run under inference_mode.

At construction the attention path is switched to SDPA where the model's code allows it and verified on a
warm-up batch (service/backends/attention.py), in fp32; then, for bf16, the weights are converted once
(service/backends/bf16.py, `bf16_mode="weights"`) or the forward runs under autocast (`"autocast"`); last, the
Linear layers are packed for oneDNN and verified on the same batch (service/backends/packed_linear.py,
`linear`; a bf16 model's packed layers pad their rows to a bucket)."""

from __future__ import annotations

import inspect
import logging

import numpy as np
import torch

from service.backends.attention import AttentionReport, switch_to_sdpa, verify_attention
from service.backends.bf16 import BF16_MODES, autocast_context, convert_to_bf16
from service.backends.packed_linear import BF16_ROW_BUCKET, LinearReport, pack_linears

logger = logging.getLogger("service.backend")


def enable_sdpa(model: torch.nn.Module) -> int:
    """Switch JinaBERT-style attention (module or config form) to SDPA without verifying it; returns how many
    modules were switched. The backend verifies (`verify_attention`); exporters use this."""
    return switch_to_sdpa(model).modules


class TorchBackend:
    name = "torch"

    def __init__(self, model: torch.nn.Module, *, device: str = "cpu", precision: str = "fp32",
                 sdpa: bool = True, sample: dict[str, np.ndarray] | None = None,
                 bf16_mode: str = "weights", linear: str = "auto") -> None:
        if precision not in {"fp32", "bf16"}:
            raise ValueError(f"unsupported precision {precision!r}")
        if bf16_mode not in BF16_MODES:
            raise ValueError(f"unsupported bf16 mode {bf16_mode!r}; choose from {BF16_MODES}")
        self.model = model.eval()
        self.device = torch.device(device)
        self.precision = precision
        self._accepts = set(inspect.signature(model.forward).parameters)
        self._autocast = False
        self.attention_report: AttentionReport = verify_attention(model, self.forward, sample, enable=sdpa)
        self.sdpa_modules = self.attention_report.modules
        self.mode = None
        self.bf16_conversion: dict[str, float] | None = None  # /info: what convert_to_bf16 did
        if precision == "bf16":
            self.mode = bf16_mode
            if bf16_mode == "weights":
                self.bf16_conversion = convert_to_bf16(model)
                logger.info("bf16 weights: %s", self.bf16_conversion)
            else:
                self._autocast = True
        if self._autocast:  # autocast casts inside aten's Linear; a packed layer would stay fp32
            self.linear_report = LinearReport("aten", "bf16 autocast casts inside aten's Linear")
        else:
            # bf16 primitives are costly to compile: bounded row counts keep them in oneDNN's cache (packed_linear)
            row_bucket = BF16_ROW_BUCKET if self.bf16_conversion is not None else 0
            self.linear_report = pack_linears(model, self.forward, sample, mode=linear, device=self.device.type,
                                              row_bucket=row_bucket)
        logger.info("%s; %s", self.attention_report.line, self.linear_report.line)

    @property
    def attention(self) -> str:
        return self.attention_report.line

    def forward(self, features: dict[str, np.ndarray]) -> np.ndarray:
        inputs = {name: torch.from_numpy(array).to(self.device)
                  for name, array in features.items() if name in self._accepts}
        with torch.inference_mode(), autocast_context(self._autocast, self.device.type):
            output = self.model(**inputs, return_dict=True)
        return output.logits.float().cpu().numpy()
