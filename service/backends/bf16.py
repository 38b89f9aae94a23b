"""bf16 the way it should run on a CPU with native bf16 (AVX-512 BF16 / AMX): the weights converted once,
at load, instead of an autocast that re-casts every weight on every call (and keeps a cast cache).

Kept in fp32, where rounding would cost fidelity for no speed:

* LayerNorm: weights and the normalisation itself (inputs cast up, output cast back to bf16 for the next
  matmul);
* the pooler and the classification head (the logit math): inputs cast up, the logits come out fp32;
* floating-point buffers (JinaBERT's ALiBi bias): the bias is added to the attention scores in fp32 (SDPA
  takes an fp32 mask with bf16 q/k/v; its CPU kernel accumulates softmax in fp32). On the eager attention path
  the modeling code adds the bias to bf16 scores, so there the buffers are converted too
  (`keep_fp32_buffers=False`).

`mode="autocast"` keeps fp32 weights and runs the forward under torch.autocast(bfloat16): measured against
the converted weights by `benchmarks/experiments.py` (the service runs `weights`, the faster, when both
pass the gate).
"""

from __future__ import annotations

import contextlib

import torch

HEAD_NAMES = ("classifier", "pooler", "score")
BF16_MODES = ("weights", "autocast")


def _is_layer_norm(module: torch.nn.Module) -> bool:
    return isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith(("LayerNorm", "RMSNorm"))


def _inputs_to_fp32(module, args, kwargs):
    cast = tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)
    return cast, kwargs


def _output_to_bf16(module, args, output):
    return output.to(torch.bfloat16) if torch.is_tensor(output) else output


def convert_to_bf16(model: torch.nn.Module, *, keep_fp32_buffers: bool = True) -> dict[str, int]:
    """Convert `model` in place; returns counts of what stayed fp32 (for the log and /info)."""
    buffers = {name: b for name, b in model.named_buffers() if b.is_floating_point()} if keep_fp32_buffers else {}
    model.to(torch.bfloat16)
    kept = {"layer_norms": 0, "head_modules": 0, "fp32_buffers": 0}
    for name, module in model.named_modules():
        if _is_layer_norm(module):
            module.float()
            module.register_forward_pre_hook(_inputs_to_fp32, with_kwargs=True)
            module.register_forward_hook(_output_to_bf16)
            kept["layer_norms"] += 1
        elif name.split(".")[-1] in HEAD_NAMES and name.count(".") <= 1:
            module.float()
            module.register_forward_pre_hook(_inputs_to_fp32, with_kwargs=True)
            kept["head_modules"] += 1
    for name, original in buffers.items():
        owner_name, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_name) if owner_name else model
        owner._buffers[attr] = original  # the untouched fp32 tensor (bf16 -> fp32 would lose its low bits)
        kept["fp32_buffers"] += 1
    return kept


def autocast_context(enabled: bool, device_type: str = "cpu"):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
