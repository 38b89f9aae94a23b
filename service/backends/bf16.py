"""bf16 the way it should run on a CPU with native bf16 (AVX-512 BF16 / AMX): the weights of the matmuls
converted once, at load, instead of an autocast that re-casts every weight on every call.

The feed-forward matmuls (where most FLOPs are: 2/3 of a BERT layer's, 3/4 of a GEGLU layer's) get bf16
weights; each such layer casts its input to bf16 and its output back to fp32 (a forward pre-hook and hook),
so everything between the matmuls stays fp32, where rounding costs fidelity for no speed: the residual stream
and its additions, LayerNorm, the GEGLU product, the embeddings, the pooler and the classification head (the
logit math). The attention projections (query, key, value, output) stay fp32 too: the attention logits q.k
go through a softmax that amplifies their rounding, and so do the ALiBi bias and SDPA (fp32 q/k/v).

Measured on the trained MiniLM reranker against fp32 (max |score difference|; the gate allows 0.01): every
module in bf16 (residual stream too): 2.3e-2 on the 512 calibration pairs; every Linear in bf16 with fp32
in/out: 1.8e-2 (512 pairs), 1.1e-2 on 192 of them; attention projections kept fp32: 4.9e-3 on the same 192
(query and key only: 6.7e-3). The gate's figure for this conversion is in benchmarks/RESULTS.md.

The fp32 weights the conversion replaces are dead, but they live in the model file's memory mapping (transformers
maps model.safetensors), which stays for the weights that are kept; their pages are handed back
(`service.memory.drop_file_pages`), so bf16 does not hold both copies.

`mode="autocast"` keeps fp32 weights and runs the forward under torch.autocast(bfloat16), for comparison
(`python -m benchmarks.precision_modes`).
"""

from __future__ import annotations

import contextlib

import torch

from service.memory import drop_file_pages, tensor_spans

HEAD_NAMES = ("classifier", "pooler", "score")
FP32_PARTS = ("attention",)  # module paths containing these keep fp32 Linear layers (q, k, v, attention output)
BF16_MODES = ("weights", "autocast")


def _input_to_bf16(module, args):
    return tuple(a.to(torch.bfloat16) if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def _output_to_fp32(module, args, output):
    return output.float() if torch.is_tensor(output) else output


def _stays_fp32(name: str) -> bool:
    parts = name.split(".")
    return any(part in HEAD_NAMES for part in parts) or any(key in part for part in parts for key in FP32_PARTS)


def convert_to_bf16(model: torch.nn.Module) -> dict[str, float]:
    """Convert the feed-forward Linear weights to bf16 in place (fp32 in and out) and hand back the pages of the
    fp32 weights they replaced; returns how many Linear layers were converted, how many stayed fp32, and the
    MiB of replaced weights given back (for the log and /info)."""
    converted = kept = 0
    replaced: list[torch.Tensor] = []  # held until their pages are dropped: their mapping cannot go away first
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if _stays_fp32(name):
            kept += 1
            continue
        replaced.extend(parameter.data for parameter in module.parameters(recurse=False))
        module.to(torch.bfloat16)
        module.register_forward_pre_hook(_input_to_bf16)
        module.register_forward_hook(_output_to_fp32)
        converted += 1
    still_used = tensor_spans([*(p.data for p in model.parameters()), *model.buffers()])
    released = drop_file_pages(tensor_spans(replaced), still_used)
    return {"bf16_linear_layers": converted, "fp32_linear_layers": kept,
            "replaced_fp32_mib_released": round(released / 2**20, 3)}


def autocast_context(enabled: bool, device_type: str = "cpu"):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
