"""JinaBERT's sequence classifier (ALiBi attention, gated feed-forward) in plain torch: the reranker served
without transformers and without executing the model's remote code, as text-embeddings-inference serves it
with its own implementation.

Why: importing transformers (modeling_utils pulls in torch._dynamo and torch.distributed.tensor) is most of the
torch flavour's cold start, and the model itself loads in a fraction of a second. Measured on the JinaBERT
proxy (2 cores, AMD EPYC), process start to healthy: 2.6-3.5 s native, 5.7-7.7 s with the remote code; peak
RSS per worker 389 vs 488 MB (fp32). The modules are built without random initialisation and without the meta
device (whose init ops import torch._dynamo): every weight is assigned from the file.

The modules mirror the state-dict names of `jinaai/jina-bert-implementation` (`bert.embeddings.*`,
`bert.encoder.layer.N.attention.self.query`, `...mlp.gated_layers`, `bert.pooler.dense`, `classifier`), so the
model's own `model.safetensors` loads with `strict=True` (a missing or unexpected weight refuses the load),
and the bf16 conversion and the oneDNN packing (service/backends/bf16.py, packed_linear.py) treat it as they
treat the remote code. The forward is the remote code's SDPA path, op for op: the additive padding mask
`(1 - mask) * finfo.min` plus the symmetric ALiBi bias `-slope_h * |i - j|`, scaled dot-product attention,
post-LayerNorm residuals, GEGLU/ReGLU `act(x W_g[:I]) * (x W_g[I:])`, the tanh pooler on the first token and the
linear classifier. Dropout is the identity at inference and is left out.

This code is trusted only where it was seen to agree: `service.native_gate` scores the calibration set with
it and with the remote code at build time and writes `native.json`; the service checks the recorded probe
again at start-up (service/engine/torch_engine.py) and otherwise loads the remote code.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

IMPLEMENTATION = "jinabert-native/1"  # bump when the forward changes: native.json verdicts name it
WEIGHTS_FILE = "model.safetensors"
ACTIVATIONS = {"geglu": nn.GELU, "reglu": nn.ReLU}


class UnsupportedModel(ValueError):
    """The folder's model is not one this implementation reproduces (the reason says which key)."""


def unsupported_reason(config: dict[str, Any]) -> str | None:
    """Why `config` is not a JinaBERT sequence classifier this module implements, or None when it is."""
    architectures = [str(a) for a in config.get("architectures") or ()]
    if not any(a.endswith("ForSequenceClassification") for a in architectures):
        return f"architectures {architectures or None} has no *ForSequenceClassification"
    if config.get("position_embedding_type") != "alibi":
        return f"position_embedding_type={config.get('position_embedding_type')!r}, not 'alibi'"
    if config.get("feed_forward_type") not in ACTIVATIONS:
        return f"feed_forward_type={config.get('feed_forward_type')!r}, not one of {sorted(ACTIVATIONS)}"
    if config.get("is_decoder") or config.get("add_cross_attention"):
        return "a decoder / cross-attention configuration"
    hidden, heads = config.get("hidden_size"), config.get("num_attention_heads")
    if not isinstance(hidden, int) or not isinstance(heads, int) or heads <= 0 or hidden % heads:
        return f"hidden_size={hidden} is not a multiple of num_attention_heads={heads}"
    for key in ("vocab_size", "type_vocab_size", "intermediate_size", "num_hidden_layers"):
        if not isinstance(config.get(key), int):
            return f"{key} missing from config.json"
    if int(config.get("num_labels") or len(config.get("id2label") or {0: ""})) != 1:
        return "more than one output label"
    return None


@dataclass(frozen=True)
class Dims:
    vocab_size: int
    type_vocab_size: int
    hidden_size: int
    heads: int
    intermediate_size: int
    layers: int
    layer_norm_eps: float
    feed_forward_type: str
    pad_token_id: int

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Dims:
        reason = unsupported_reason(config)
        if reason is not None:
            raise UnsupportedModel(reason)
        return cls(vocab_size=config["vocab_size"], type_vocab_size=config["type_vocab_size"],
                   hidden_size=config["hidden_size"], heads=config["num_attention_heads"],
                   intermediate_size=config["intermediate_size"], layers=config["num_hidden_layers"],
                   layer_norm_eps=float(config.get("layer_norm_eps", 1e-12)),
                   feed_forward_type=config["feed_forward_type"], pad_token_id=int(config.get("pad_token_id") or 0))


def alibi_slopes(heads: int) -> list[float]:
    """Press et al.'s slopes: geometric for a power-of-two head count, interleaved with the next power's otherwise."""
    def power_of_2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(heads).is_integer():
        return power_of_2(heads)
    closest = 2 ** math.floor(math.log2(heads))
    return power_of_2(closest) + alibi_slopes(2 * closest)[0::2][: heads - closest]


def alibi_bias(heads: int, size: int) -> torch.Tensor:
    """(1, heads, size, size) float32: -slope_h * |i - j|, computed as the remote code computes it."""
    position = torch.arange(size)
    relative = torch.abs(position[None, :] - position[:, None]).unsqueeze(0).expand(heads, -1, -1)
    slopes = torch.tensor(alibi_slopes(heads), dtype=torch.float32) * -1
    return (slopes.unsqueeze(1).unsqueeze(1) * relative).unsqueeze(0)


class Linear(nn.Linear):
    """nn.Linear without the random initialisation: every weight comes from the model file (and the bf16
    conversion and oneDNN packing still see an nn.Linear)."""

    def reset_parameters(self) -> None:
        pass


class Embedding(nn.Embedding):
    def reset_parameters(self) -> None:
        pass


class Embeddings(nn.Module):
    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.word_embeddings = Embedding(dims.vocab_size, dims.hidden_size, padding_idx=dims.pad_token_id)
        self.token_type_embeddings = Embedding(dims.type_vocab_size, dims.hidden_size)
        self.LayerNorm = nn.LayerNorm(dims.hidden_size, eps=dims.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids))


class SelfAttention(nn.Module):
    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.heads = dims.heads
        self.head_size = dims.hidden_size // dims.heads
        self.query = Linear(dims.hidden_size, dims.hidden_size)
        self.key = Linear(dims.hidden_size, dims.hidden_size)
        self.value = Linear(dims.hidden_size, dims.hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.size()[:-1] + (self.heads, self.head_size)).permute(0, 2, 1, 3)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        query = self._heads(self.query(hidden))
        key = self._heads(self.key(hidden))
        value = self._heads(self.value(hidden))
        batch, _, seq, _ = query.shape
        context = F.scaled_dot_product_attention(query, key, value, bias)
        return context.permute(0, 2, 1, 3).contiguous().view(batch, seq, self.heads * self.head_size)


class SelfOutput(nn.Module):
    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dense = Linear(dims.hidden_size, dims.hidden_size)
        self.LayerNorm = nn.LayerNorm(dims.hidden_size, eps=dims.layer_norm_eps)

    def forward(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(hidden) + residual)


class Attention(nn.Module):
    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.self = SelfAttention(dims)
        self.output = SelfOutput(dims)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(hidden, bias), hidden)


class GatedMLP(nn.Module):
    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.intermediate_size = dims.intermediate_size
        self.gated_layers = Linear(dims.hidden_size, dims.intermediate_size * 2, bias=False)
        self.act = ACTIVATIONS[dims.feed_forward_type]()
        self.wo = Linear(dims.intermediate_size, dims.hidden_size)
        self.layernorm = nn.LayerNorm(dims.hidden_size, eps=dims.layer_norm_eps)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        projected = self.gated_layers(hidden)
        gated = self.act(projected[:, :, : self.intermediate_size]) * projected[:, :, self.intermediate_size :]
        return self.layernorm(self.wo(gated) + hidden)


class Layer(nn.Module):
    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.attention = Attention(dims)
        self.mlp = GatedMLP(dims)

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attention(hidden, bias))


class Encoder(nn.Module):
    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(dims) for _ in range(dims.layers))

    def forward(self, hidden: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        for layer in self.layer:
            hidden = layer(hidden, bias)
        return hidden


class Pooler(nn.Module):
    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.dense = Linear(dims.hidden_size, dims.hidden_size)
        self.activation = nn.Tanh()

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden[:, 0]))


class Trunk(nn.Module):
    def __init__(self, dims: Dims) -> None:
        super().__init__()
        self.embeddings = Embeddings(dims)
        self.encoder = Encoder(dims)
        self.pooler = Pooler(dims)


@dataclass
class ClassifierOutput:
    logits: torch.Tensor


class JinaBertReranker(nn.Module):
    """`JinaBertForSequenceClassification.forward(input_ids, attention_mask, token_type_ids).logits`, inference only."""

    def __init__(self, dims: Dims, max_length: int) -> None:
        super().__init__()
        self.dims = dims
        self.max_length = max_length
        self.bert = Trunk(dims)
        self.classifier = Linear(dims.hidden_size, 1)
        self.register_buffer("alibi", alibi_bias(dims.heads, max_length), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None, return_dict: bool = True) -> ClassifierOutput:
        seq = input_ids.shape[1]
        if seq > self.max_length:
            raise ValueError(f"{seq} tokens per pair, more than the {self.max_length} this model was loaded for")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        dtype = torch.float32
        padding = (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min
        bias = padding + self.alibi[:, :, :seq, :seq]
        hidden = self.bert.encoder(self.bert.embeddings(input_ids, token_type_ids), bias)
        return ClassifierOutput(self.classifier(self.bert.pooler(hidden)))


def read_config(model_dir: Path) -> dict[str, Any]:
    return json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))


def load(model_dir: Path, *, max_length: int, device: str = "cpu") -> JinaBertReranker:
    """The folder's model.safetensors in this implementation, fp32, eval mode. Raises UnsupportedModel (with the
    reason) for another architecture, a missing weights file, or weights that do not match the names one for one."""
    from safetensors.torch import load_file

    model_dir = Path(model_dir)
    dims = Dims.from_config(read_config(model_dir))
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise UnsupportedModel(f"no {WEIGHTS_FILE} in {model_dir}")
    state = {name: tensor.float() if tensor.is_floating_point() else tensor
             for name, tensor in load_file(str(weights)).items()}
    model = JinaBertReranker(dims, max_length)  # uninitialised storage (no meta device: it imports torch._dynamo)
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        raise UnsupportedModel(f"{WEIGHTS_FILE} does not match JinaBERT's weight names: "
                               f"{' '.join(first[1:3]) if len(first) > 1 else first[0]}") from None
    return model.to(device).eval()
