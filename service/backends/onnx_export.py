"""Export a sentence-transformers CrossEncoder model folder to ONNX (fp32), and quantize it to int8.

For models whose repository ships no `onnx/model.onnx` (the real jinaai/jina-reranker-v1-tiny-en ships one,
and `onnx/model_quantized.onnx`); `scripts/export_onnx.py` is the command line. Never imported by the
service at run time: the service only needs onnxruntime. Export needs torch (already a service dependency)
and the `onnx` package (requirements/dev.txt), which onnxruntime's quantizer also needs.

How the graph is made:

* The model is loaded through `service.model_store.load_reranker`, exactly as the service loads it
  (remote code, ALiBi buffer capped to `max_length`), in fp32, and traced with the TorchScript exporter
  (`torch.onnx.export(..., dynamo=False)`). The dynamo exporter would need onnxscript and specialises
  JinaBERT's Python branch on the sequence length; tracing records that branch once and keeps the shapes
  dynamic (batch and sequence axes).
* Attention: JinaBERT-style layers are switched to their SDPA path first (`enable_sdpa`, as the torch
  backend does; JinaBERT's config resets `attn_implementation` to None, the eager path), so the graph is
  what the torch backend runs. Both export correctly: on the JinaBERT proxy (512 pairs) both give torch
  fp32's scores within 4e-5 and ONNX Runtime runs them at the same speed (2.77 vs 2.82 s per 100 pairs,
  2 threads). `sdpa=False` exports the model as loaded.
* ALiBi models carry their bias as a constant of heads x max_length^2 floats, so the graph accepts at most
  `max_length` tokens per pair; that number is stored in the model's metadata (`max_sequence_length`) and
  `OnnxBackend` refuses a service whose RERANK_MAX_LENGTH is larger.
* `fused_attention=True` (what the ONNX image's model stage uses): each SDPA call of those layers is exported
  as ONNX Runtime's `com.microsoft.MultiHeadAttention` with the ALiBi bias + padding mask as its
  `attention_bias`, instead of the decomposed MatMul/Mul/Add/Softmax/MatMul chain. onnxruntime.transformers
  cannot fuse that chain (the ALiBi add breaks its attention patterns); the fused op keeps one
  batch x heads x L^2 buffer instead of several. Measured on the JinaBERT proxy: activation memory of a
  2,048-token batch 132 -> 99 MB, logits within 2e-5 of the decomposed graph.
* Inputs: `input_ids`, `attention_mask` and, if the tokenizer produces them, `token_type_ids` (int64,
  axes batch x sequence); output: `logits` (float32, batch x num_labels).
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger("service.onnx_export")

from service.backends.onnx_backend import FILES, MAX_LENGTH_METADATA, ONNX_DIR

DEFAULT_OPSET = 17
FP32_FILE, INT8_FILE = FILES["fp32"], FILES["int8"]

__all__ = ["DEFAULT_OPSET", "FP32_FILE", "INT8_FILE", "MAX_LENGTH_METADATA", "ONNX_DIR", "export_onnx",
           "quantize_int8"]


def _require_onnx():
    try:
        import onnx
    except ImportError:
        raise RuntimeError(
            "Exporting or quantizing ONNX models needs the `onnx` package: "
            "pip install -r requirements/dev.txt (the service itself only needs onnxruntime)."
        ) from None
    return onnx


def _multi_head_attention_function(num_heads: int):
    """An autograd Function that runs SDPA in torch and exports as com.microsoft.MultiHeadAttention
    (query/key/value as batch x sequence x hidden, `attention_bias` = the additive mask, default scale)."""
    import torch
    from torch.onnx import symbolic_helper

    class MultiHeadAttention(torch.autograd.Function):
        @staticmethod
        def forward(ctx, query, key, value, bias):  # noqa: ARG004 - autograd's signature
            return torch.nn.functional.scaled_dot_product_attention(query, key, value, bias)

        @staticmethod
        def symbolic(g, query, key, value, bias):
            def to_batch_sequence_hidden(x):  # B x N x S x H -> B x S x (N*H)
                x = g.op("Transpose", x, perm_i=[0, 2, 1, 3])
                return g.op("Reshape", x, g.op("Constant", value_t=torch.tensor([0, 0, -1], dtype=torch.int64)))

            absent = symbolic_helper._optional_input_placeholder_tensor
            out = g.op("com.microsoft::MultiHeadAttention", to_batch_sequence_hidden(query),
                       to_batch_sequence_hidden(key), to_batch_sequence_hidden(value), absent(g), absent(g), bias,
                       num_heads_i=num_heads)
            out = g.op("Reshape", out, g.op("Constant", value_t=torch.tensor([0, 0, num_heads, -1],
                                                                            dtype=torch.int64)))
            return g.op("Transpose", out, perm_i=[0, 2, 1, 3])  # back to SDPA's B x N x S x H

    return MultiHeadAttention


def fusable_attention_modules(model) -> list:
    """The Python modules defining JinaBERT-style attention layers (an `attn_implementation` attribute) that
    call a module-level `scaled_dot_product_attention`: the calls `fused_attention` can replace."""
    found = []
    for module in model.modules():
        defining = sys.modules.get(type(module).__module__)
        if ("attn_implementation" in vars(module) and defining is not None
                and callable(getattr(defining, "scaled_dot_product_attention", None)) and defining not in found):
            found.append(defining)
    return found


@contextlib.contextmanager
def fused_attention(model, num_heads: int) -> Iterator[int]:
    """While exporting, route the attention layers' SDPA calls through MultiHeadAttention; yields how many
    modeling modules were patched (0: nothing to fuse). Calls with dropout, causal masks, a custom scale or no
    mask keep plain SDPA."""
    modules = fusable_attention_modules(model)
    function = _multi_head_attention_function(num_heads)
    originals = {module: module.scaled_dot_product_attention for module in modules}

    def patched(original):
        def sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, *args, **kwargs):
            if attn_mask is None or dropout_p or is_causal or args or kwargs or query.dim() != 4:
                return original(query, key, value, attn_mask, dropout_p, is_causal, *args, **kwargs)
            return function.apply(query, key, value, attn_mask)

        return sdpa

    try:
        for module, original in originals.items():
            module.scaled_dot_product_attention = patched(original)
        yield len(modules)
    finally:
        for module, original in originals.items():
            module.scaled_dot_product_attention = original


def export_onnx(model_dir: Path, out_path: Path, *, opset: int = DEFAULT_OPSET, max_length: int = 512,
                sdpa: bool = True, fuse_attention: bool = False) -> Path:
    """Export the CrossEncoder model in `model_dir` to `out_path` (fp32). Returns `out_path`.

    `max_length` is the longest (query, document) pair in tokens the graph must accept: the ALiBi bias of
    JinaBERT-like models is a constant of that size (export with the service's RERANK_MAX_LENGTH or more).
    `sdpa` switches JinaBERT-style attention to its SDPA path first (as the torch backend does), which
    exports to a graph ONNX Runtime runs faster than the eager one, with the same scores. `fuse_attention`
    (needs `sdpa`) exports those SDPA calls as ONNX Runtime's MultiHeadAttention (see the module docstring).
    """
    import torch

    from service.backends.torch_backend import enable_sdpa
    from service.model_store import ModelSource, load_reranker

    onnx = _require_onnx()
    model_dir, out_path = Path(model_dir).resolve(), Path(out_path)
    loaded_model, max_length = load_reranker(ModelSource(model_id=model_dir.name, path=model_dir),
                                             device="cpu", max_length=max_length)
    model = loaded_model.model.float().eval()
    sdpa_modules = enable_sdpa(model) if sdpa else 0
    input_names = ["input_ids", "attention_mask"]
    if "token_type_ids" in getattr(loaded_model.tokenizer, "model_input_names", ()):
        input_names.append("token_type_ids")

    class LogitsOnly(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.model = inner

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(input_names, args)), return_dict=True).logits

    sample = loaded_model.tokenizer(
        ["what is a reranker", "where is paris"],
        ["A reranker scores how relevant each document is to a query.", "Paris is in France, on the Seine."],
        padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    args = tuple(sample[name].to(torch.int64) for name in input_names)
    axes = {name: {0: "batch", 1: "sequence"} for name in input_names}
    axes["logits"] = {0: "batch"}

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    fusing = fused_attention(model, int(model.config.num_attention_heads)) if fuse_attention and sdpa_modules \
        else contextlib.nullcontext(0)
    with torch.no_grad(), warnings.catch_warnings(), fusing as fused_modules:
        # The tracer warns about every Python-level shape check in the modeling code (ALiBi size, masks):
        # expected, each is recorded once for inputs up to max_length.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(LogitsOnly(model), args, str(tmp), dynamo=False, input_names=input_names,
                          output_names=["logits"], dynamic_axes=axes, opset_version=opset,
                          do_constant_folding=True)
    proto = onnx.load(str(tmp))
    _set_metadata(proto, {MAX_LENGTH_METADATA: str(max_length), "source": str(model_dir.name),
                          "attention": ("com.microsoft.MultiHeadAttention (fused SDPA)" if fused_modules
                                        else "sdpa" if sdpa_modules else "model default"),
                          "exporter": f"service.backends.onnx_export (torch {torch.__version__})"})
    onnx.save(proto, str(tmp))
    tmp.replace(out_path)
    logger.info("Exported %s to %s (inputs %s, max %d tokens per pair)", model_dir, out_path,
                input_names, max_length)
    return out_path


def quantize_int8(model_path: Path, out_path: Path) -> Path:
    """Dynamic int8 quantization (int8 weights, activations quantized per batch at run time) of an fp32
    ONNX model with onnxruntime.quantization.quantize_dynamic. Returns `out_path`."""
    onnx = _require_onnx()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model_path, out_path = Path(model_path), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".tmp")
    with _quiet_quantizer():
        quantize_dynamic(str(model_path), str(tmp), weight_type=QuantType.QInt8)
    # quantize_dynamic drops nothing we need, but keep the source's metadata (max_sequence_length) for sure.
    source = onnx.load(str(model_path), load_external_data=False)
    source_meta = {p.key: p.value for p in source.metadata_props}
    proto = onnx.load(str(tmp))
    _set_metadata(proto, {**source_meta, "quantization": "dynamic int8 (QInt8 weights)"})
    onnx.save(proto, str(tmp))
    tmp.replace(out_path)
    logger.info("Quantized %s to %s (dynamic int8)", model_path, out_path)
    return out_path


class _DropQuantizerAdvice(logging.Filter):
    """quantize_dynamic logs, on the root logger, advice for static quantization (run pre-processing) and one
    line per tensor it leaves in float: not actionable for dynamic int8 (pre-processing's symbolic shape
    inference fails on these graphs, and without it the scores are the same)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.msg)
        return not message.startswith(("Please consider to run pre-processing", "Quantization parameters for",
                                       "Ignore MatMul due to non constant B"))


@contextlib.contextmanager
def _quiet_quantizer():
    root, dropped = logging.getLogger(), _DropQuantizerAdvice()
    root.addFilter(dropped)
    try:
        yield
    finally:
        root.removeFilter(dropped)


def _set_metadata(proto, values: dict[str, str]) -> None:
    existing = {p.key: p for p in proto.metadata_props}
    for key, value in values.items():
        if key in existing:
            existing[key].value = value
        else:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
