"""bf16 the way it should run on a CPU with native bf16 (AVX-512 BF16 / AMX): the weights of the matmuls
converted once, at load, instead of an autocast that re-casts every weight on every call.

Only the encoder's `nn.Linear` weights (where the FLOPs are) become bf16; each such layer casts its input to
bf16 and its output back to fp32 (a forward pre-hook and hook), so everything between the matmuls stays fp32
where rounding would cost fidelity for no speed: the residual stream and its additions, LayerNorm, the GEGLU
product, the attention scores, softmax and the ALiBi bias (SDPA runs on fp32 q/k/v: a few % of the FLOPs),
the embeddings, the pooler and the classification head (the logit math). That is autocast's numerics (bf16
matmuls, fp32 elsewhere) without its per-call weight casts and cast cache.

Measured on the trained MiniLM reranker (512 calibration pairs): converting the whole model to bf16 (residual
stream and LayerNorm outputs in bf16) gave max |score difference| 2.3e-2 against fp32, outside the gate's
0.01; with the residual stream in fp32 the gate passes (benchmarks/RESULTS.md).

`mode="autocast"` keeps fp32 weights and runs the forward under torch.autocast(bfloat16), for comparison
(`python -m benchmarks.precision_modes`).
"""

from __future__ import annotations

import contextlib

import torch

HEAD_NAMES = ("classifier", "pooler", "score")
BF16_MODES = ("weights", "autocast")


def _input_to_bf16(module, args):
    return tuple(a.to(torch.bfloat16) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def _output_to_fp32(module, args, output):
    return output.float() if torch.is_tensor(output) else output


def _in_head(name: str) -> bool:
    return any(part in HEAD_NAMES for part in name.split("."))


def convert_to_bf16(model: torch.nn.Module) -> dict[str, int]:
    """Convert the encoder's Linear weights to bf16 in place (fp32 in and out); returns what was converted and
    what stayed fp32 (for the log and /info)."""
    converted = kept = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if _in_head(name):
            kept += 1
            continue
        module.to(torch.bfloat16)
        module.register_forward_pre_hook(_input_to_bf16)
        module.register_forward_hook(_output_to_fp32)
        converted += 1
    return {"bf16_linear_layers": converted, "fp32_head_linear_layers": kept}


def autocast_context(enabled: bool, device_type: str = "cpu"):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
