"""The model's Linear layers run by oneDNN on weights packed once at load, instead of aten's MKL GEMM.

torch's CPU build sends an fp32 `nn.Linear` to MKL (`aten::addmm` / `aten::mm`). At this model's shapes
(tokens x 384 -> 1,152 / 3,072, and 1,536 -> 384) MKL runs well below the CPU's peak on the machines measured
(AMD EPYC, AVX-512: 91-179 GFLOP/s), while oneDNN's inner product on a weight reordered once into its blocked
layout runs at 168-219 GFLOP/s (fp32) and, for bf16 weights, 7-14 % faster than aten's bf16 matmul with
bit-identical results. `torch.ops.mkldnn._linear_pointwise` on a weight from
`torch.ops.mkldnn._reorder_linear_weight` is the pair torch's own Inductor emits for frozen CPU Linear layers;
here it is used eagerly, without a compile step, so the cold start stays what it is.

`pack_linears` replaces every `nn.Linear` of the model by a `PackedLinear` holding the packed copy (forward
hooks carried over, so bf16's cast-in / cast-out hooks keep working), and keeps the swap only if each packed
layer, given the very input its original saw in a warm-up forward, gives the original's output (within
`LAYER_TOLERANCE` of its largest value); otherwise the original layers are put back and the reason is reported.
Layer by layer, not on the final scores: in bf16 a change of 1e-6 upstream can flip a bf16 rounding downstream,
which random weights then amplify into a score change that says nothing about the packed layer (measured on
the proxy in bf16: 2.5e-2, with every packed layer within 1e-6 of its original). Once kept, the pages of the
replaced fp32 weights in the model file's memory mapping are handed back (`service.memory.drop_file_pages`), so
the packed copies do not double the weights' memory.

Rows padded to a bucket (`row_bucket`, bf16): oneDNN compiles a primitive per input shape and keeps the last few
(service/memory.py caps its cache). An fp32 primitive is cheap to create; a bf16 one (AMX or AVX-512 BF16 kernels)
is not: measured on an Intel Xeon with AMX (2 threads), a bf16 384 -> 3,072 layer fed row counts that change on
every call ran at 282 GFLOP/s with the cache capped at 8 (each call compiles again; fp32 on the same calls: 291),
against 2,234 GFLOP/s once the row counts were rounded up to multiples of 16. The engine pads each batch to its
own longest pair, so the row count of a Linear (pairs x padded length) changes with every batch: a bf16 model's
packed layers round their rows up to a multiple of `BF16_ROW_BUCKET` (zero rows, sliced off the output), which
bounds the shapes one batch budget can produce (1,024 tokens: 16 row counts x 4 layer shapes, the cache bf16 gets
in service/memory.py). Measured in-process on the JinaBERT proxy (bf16, same machine, interleaved runs): W2 p50
169-177 ms exact with the cache at 8, 138 ms padded to 64 with the cache at 64 (W1 1,415-1,500 vs 1,254 ms; peak
RSS 406 vs 428 MiB); padded to 32: 142 ms; only the bf16 layers padded (the fp32 attention projections exact):
145 ms and 519 MiB. fp32 models stay exact: padded to 64 with the cache at 64, W2 233 vs 228 ms exact.

`auto` packs on x86-64 CPUs (where it was measured); `onednn` packs wherever torch has oneDNN; `aten` never.
The report's `line` is what the log and /info say: `linear: onednn (verified)` or `linear: aten (<reason>)`.
"""

from __future__ import annotations

import math
import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from service.backends.attention import warmup_scores
from service.memory import drop_file_pages, round_up, tensor_spans

LINEAR_MODES = ("auto", "onednn", "aten")
# A packed layer's output may differ from aten's by this fraction of its largest value (measured on the JinaBERT
# proxy's warm-up batch: fp32 layers 5e-7 to 1.1e-6, a different summation order; bf16 layers bit-identical).
LAYER_TOLERANCE = 1e-4
# The batch size the weight layout is chosen for; measured on 144-368-token batches of 4-20 pairs: any hint
# from 1,024 tokens up gives the same speed (a hint of 1 is 5-7 % slower).
BATCH_HINT = 1024
BF16_ROW_BUCKET = 64  # rows of a bf16 model's packed layers are rounded up to a multiple of this (docstring)
PACKED_MACHINES = ("x86_64", "amd64")


class PackedLinearUnavailable(RuntimeError):
    """RERANK_LINEAR=onednn where this torch cannot run oneDNN's packed Linear."""


def onednn_unavailable_reason(device: str = "cpu") -> str | None:
    """Why oneDNN's packed Linear cannot run here, or None if it can."""
    if device != "cpu":
        return f"device {device}: oneDNN's packed Linear is a CPU path"
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (mkldnn)"
    missing = [op for op in ("_reorder_linear_weight", "_linear_pointwise") if not hasattr(torch.ops.mkldnn, op)]
    if missing:
        return f"this torch has no torch.ops.mkldnn.{', '.join(missing)}"
    return None


class PackedLinear(torch.nn.Module):
    """`linear`'s computation on a oneDNN-packed copy of its weight (same dtype); forward hooks carried over. With
    `row_bucket`, the input's rows (all dimensions but the last) are padded with zeros to a multiple of it and the
    output sliced back, so that oneDNN sees few distinct shapes."""

    def __init__(self, linear: torch.nn.Linear, batch_hint: int = BATCH_HINT, row_bucket: int = 0) -> None:
        super().__init__()
        if row_bucket < 0:
            raise ValueError(f"row_bucket must be 0 (exact rows) or positive, not {row_bucket}")
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.row_bucket = row_bucket
        weight = linear.weight.detach()
        self.register_buffer("weight", torch.ops.mkldnn._reorder_linear_weight(weight, batch_hint))
        bias = linear.bias
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self._forward_pre_hooks.update(linear._forward_pre_hooks)
        self._forward_hooks.update(linear._forward_hooks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // self.in_features
        padded = round_up(rows, self.row_bucket) if self.row_bucket else rows
        if padded == rows:
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, "none", [], "")
        flat = torch.nn.functional.pad(x.reshape(rows, self.in_features), (0, 0, 0, padded - rows))
        out = torch.ops.mkldnn._linear_pointwise(flat, self.weight, self.bias, "none", [], "")
        return out[:rows].view(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        rows = f", rows padded to multiples of {self.row_bucket}" if self.row_bucket else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, " \
               f"dtype={self.weight.dtype}, oneDNN-packed{rows}"


@dataclass(frozen=True)
class LinearReport:
    path: str  # "onednn" | "aten"
    reason: str  # "verified", or why not
    layers: int = 0  # Linear layers packed
    max_layer_error: float | None = None  # largest |packed - aten| / max |aten| of a layer, warm-up batch
    max_score_diff: float | None = None  # whole model, aten vs packed, warm-up batch (reported, not gated: in
    #                                      bf16 a 1e-6 change upstream can flip a bf16 rounding downstream)
    replaced_mib_released: float = 0.0  # pages of the replaced weights handed back
    row_bucket: int = 0  # rows padded to multiples of this (0: exact)

    @property
    def line(self) -> str:
        rows = f"; rows padded to multiples of {self.row_bucket}" if self.row_bucket else ""
        return f"linear: {self.path} ({self.reason}{rows})"

    def as_info(self) -> dict[str, Any]:
        return {"path": self.path, "reason": self.reason, "packed_layers": self.layers, "row_bucket": self.row_bucket,
                "max_layer_error_vs_aten": self.max_layer_error, "max_score_diff_vs_aten": self.max_score_diff,
                "replaced_mib_released": self.replaced_mib_released}


def _linears(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str, torch.nn.Linear]]:
    """(parent, attribute, layer) of every nn.Linear that computes nn.Linear's forward (a subclass that overrides
    `forward` may compute something else; one that only skips the random initialisation, as the native JinaBERT's
    does, is a plain Linear)."""
    return [(parent, name, child) for parent in model.modules() for name, child in parent.named_children()
            if isinstance(child, torch.nn.Linear) and type(child).forward is torch.nn.Linear.forward]


def _capture(layers, run: Callable[[], np.ndarray]) -> tuple[dict[int, tuple[torch.Tensor, torch.Tensor]], np.ndarray]:
    """Each layer's input (before its own pre-hooks) and output (after its hooks) in one warm-up forward, `run`,
    and what `run` returned."""
    seen: dict[int, list[torch.Tensor]] = {}
    handles = []
    for _, _, layer in layers:
        def before(module, args, key=id(layer)):
            seen.setdefault(key, [args[0]])

        def after(module, args, output, key=id(layer)):
            if len(seen.get(key, ())) == 1:
                seen[key].append(output)

        handles.append(layer.register_forward_pre_hook(before, prepend=True))
        handles.append(layer.register_forward_hook(after))
    try:
        result = run()
    finally:
        for handle in handles:
            handle.remove()
    return {key: (pair[0], pair[1]) for key, pair in seen.items() if len(pair) == 2}, result


def _relative_error(layer: torch.nn.Module, x: torch.Tensor, expected: torch.Tensor) -> float:
    with torch.inference_mode():
        got = layer(x)
    scale = float(expected.abs().max()) or 1.0
    return float((got.float() - expected.float()).abs().max()) / scale


def pack_linears(model: torch.nn.Module, forward: Callable[[dict[str, np.ndarray]], np.ndarray],
                 features: dict[str, np.ndarray] | None, *, mode: str = "auto", device: str = "cpu",
                 tolerance: float = LAYER_TOLERANCE, machine: str | None = None, row_bucket: int = 0) -> LinearReport:
    """Pack `model`'s Linear layers (see the module docstring), keeping them packed only if every packed layer
    gives, on the input it saw in `forward` (the backend's) on `features`, its output within `tolerance` of its
    largest value; `row_bucket` pads each packed layer's rows (0: exact). Raises PackedLinearUnavailable for mode
    `onednn` where it cannot run."""
    if mode not in LINEAR_MODES:
        raise ValueError(f"unsupported linear mode {mode!r}; choose from {LINEAR_MODES}")
    if mode == "aten":
        return LinearReport("aten", "RERANK_LINEAR=aten")
    unavailable = onednn_unavailable_reason(device)
    if unavailable is not None:
        if mode == "onednn":
            raise PackedLinearUnavailable(f"RERANK_LINEAR=onednn: {unavailable}; use RERANK_LINEAR=auto or aten")
        return LinearReport("aten", unavailable)
    machine = (machine or platform.machine()).lower()
    if mode == "auto" and machine not in PACKED_MACHINES:
        return LinearReport("aten", f"auto: not measured on {machine} (RERANK_LINEAR=onednn packs anyway)")
    layers = _linears(model)
    if not layers:
        return LinearReport("aten", "the model has no nn.Linear layers")
    if features is None:
        return LinearReport("aten", "no warm-up batch to verify packing on")
    seen, before = _capture(layers, lambda: warmup_scores(forward, features))
    replaced_layers = {id(layer) for _, _, layer in layers}
    # Everything the rest of the model reads (a weight tied to another module included): never dropped.
    still_used = tensor_spans([*(p.data for module in model.modules() if id(module) not in replaced_layers
                                 for p in module.parameters(recurse=False)), *model.buffers()])
    errors: list[tuple[float, str]] = []
    released = 0
    try:
        for parent, name, layer in layers:
            packed = PackedLinear(layer, row_bucket=row_bucket)
            if id(layer) in seen:
                error = _relative_error(packed, *seen[id(layer)])
                errors.append((error if error == error else math.inf, f"{type(parent).__name__}.{name}"))
            setattr(parent, name, packed)
            # Layer by layer, so that the load never holds both copies of every weight. Safe before the verdict:
            # the mapping is private and never written, so a restored layer reads its pages back from the file.
            released += drop_file_pages(tensor_spans([p.data for p in layer.parameters(recurse=False)]),
                                        still_used + tensor_spans(packed.buffers()))
        after = warmup_scores(forward, features)
    except Exception as exc:  # noqa: BLE001 - an op this torch cannot run here: keep aten, say why
        _restore(layers)
        return LinearReport("aten", f"packed forward failed ({type(exc).__name__}: {exc}); layers restored")
    worst, worst_name = max(errors, default=(0.0, ""))
    if not worst <= tolerance:
        _restore(layers)
        return LinearReport("aten", f"packing changed {worst_name}'s output by {worst:.1e} of its largest value "
                                    f"(> {tolerance:.0e}); layers restored")
    score_diff = float(np.max(np.abs(after - before))) if before.size else 0.0
    return LinearReport("onednn", "verified", len(layers), worst, score_diff, round(released / 2**20, 3), row_bucket)


def _restore(layers: list[tuple[torch.nn.Module, str, torch.nn.Linear]]) -> None:
    for parent, name, layer in layers:
        setattr(parent, name, layer)
