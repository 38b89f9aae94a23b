"""What the numbers were measured on: CPU, versions, the matmul peak, and the model's FLOPs per token."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any


def cpu_info() -> dict[str, Any]:
    """CPU model and flags from lscpu (falls back to /proc/cpuinfo)."""
    info: dict[str, Any] = {"cores_online": os.cpu_count(), "affinity": len(os.sched_getaffinity(0))}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True, timeout=10).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info.update(model=fields.get("Model name"), vendor=fields.get("Vendor ID"),
                    threads_per_core=fields.get("Thread(s) per core"), l2=fields.get("L2 cache"),
                    l3=fields.get("L3 cache"), hypervisor=fields.get("Hypervisor vendor"),
                    # under a hypervisor the model name can be as bare as "AMD EPYC": these tell the generations
                    # apart (AMD family 25 = Zen 3/4, 26 = Zen 5), and with them the matmul speed
                    family=fields.get("CPU family"), model_number=fields.get("Model"),
                    stepping=fields.get("Stepping"),
                    flags=fields.get("Flags", "").split())
    except (OSError, subprocess.SubprocessError):
        text = Path("/proc/cpuinfo").read_text()
        for line in text.splitlines():
            if line.startswith("model name") and "model" not in info:
                info["model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags") and "flags" not in info:
                info["flags"] = line.split(":", 1)[1].split()
    flags = set(info.get("flags") or [])
    info["flags"] = " ".join(info.get("flags") or [])
    info["matmul_flags"] = sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma", "avx_vnni")))
    try:
        info["memory_gib"] = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass
    return info


def cpu_generation(info: dict[str, Any]) -> str:
    """"family 25, model 17, stepping 1" from cpu_info(): what tells CPUs with the same bare model name apart."""
    return ", ".join(f"{label} {info[key]}" for label, key in (("family", "family"), ("model", "model_number"),
                                                               ("stepping", "stepping")) if info.get(key))


def has_amx(info: dict[str, Any]) -> bool:
    return any(flag.startswith("amx") for flag in str(info.get("flags") or "").split())


def cpu_label(info: dict[str, Any] | None = None) -> str:
    """One line naming the CPU a measurement ran on, e.g. "AMD EPYC (AuthenticAMD family 25, model 17, stepping 1; AVX-512
    BF16, VNNI, no AMX), 2 CPUs": the soak and the precision gate record it with their figures, which are taken
    in separate runs, possibly on another machine than the benchmark's."""
    info = info if info is not None else cpu_info()
    flags = set(str(info.get("flags") or "").split())
    features = [name for flag, name in (("avx512_bf16", "AVX-512 BF16"), ("avx512_vnni", "VNNI")) if flag in flags]
    features.append("AMX" if has_amx(info) else "no AMX")
    vendor = " ".join(str(part) for part in (info.get("vendor"), cpu_generation(info)) if part)
    return (f"{info.get('model') or 'unknown CPU'} ({vendor + '; ' if vendor else ''}{', '.join(features)}), "
            f"{info.get('affinity') or info.get('cores_online') or '?'} CPUs")


def versions(infinity_python: Path | None = None) -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in ("torch", "transformers", "sentence-transformers", "tokenizers", "fastapi", "uvicorn",
                 "onnxruntime"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["infinity-emb"] = None
    if infinity_python is not None and infinity_python.exists():
        code = ("import json; from importlib import metadata as m; print(json.dumps({d: m.version(d) for d in "
                "('infinity-emb', 'torch', 'transformers', 'sentence-transformers')}))")
        try:
            res = subprocess.run([str(infinity_python), "-c", code], capture_output=True, text=True, timeout=60,
                                 check=True)
            inf = json.loads(res.stdout)
            out["infinity-emb"] = inf.pop("infinity-emb")
            out.update({f"infinity venv {k}": v for k, v in inf.items()})
        except (OSError, subprocess.SubprocessError, ValueError):
            pass
    try:
        import torch

        out["torch cpu capability"] = torch.backends.cpu.get_cpu_capability()
        out["torch threads"] = str(torch.get_num_threads())
    except ImportError:
        pass
    return out


@dataclass
class MatmulPeak:
    dtype: str
    n: int
    threads: int
    gflops: float  # best of the repeats
    seconds: float
    path: str = "aten mm"  # the GEMM path that gave the best


def matmul_peak(dtype: str = "fp32", n: int = 2048, repeats: int = 5, threads: int | None = None) -> MatmulPeak:
    """GFLOP/s of a large square matmul in this process (best of `repeats`, after a warm-up), by the faster of
    torch's two CPU GEMM paths: aten's `mm` (MKL for fp32) and oneDNN's Linear on a packed weight (what the
    service runs, service/backends/packed_linear.py), so that no contender's MFU is taken against a slow GEMM."""
    import torch

    from service.backends.packed_linear import PackedLinear, onednn_unavailable_reason

    if threads:
        torch.set_num_threads(threads)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(torch_dtype)
    b = torch.randn(n, n, generator=gen).to(torch_dtype)
    flops = 2.0 * n * n * n
    paths = {"aten mm": lambda: torch.mm(a, b)}
    if onednn_unavailable_reason() is None:
        linear = torch.nn.Linear(n, n, bias=False, dtype=torch_dtype)
        with torch.no_grad():
            linear.weight.copy_(b.t())  # a @ b, as the service's packed layer computes it
        packed = PackedLinear(linear)
        paths["oneDNN packed Linear"] = lambda: packed(a)
    best, best_path = float("inf"), ""
    with torch.inference_mode():
        inner = max(1, int(3e10 // flops))  # ~30 GFLOP per timed repeat
        for path, run in paths.items():
            run()  # warm-up (kernel selection, page faults)
            for _ in range(repeats):
                start = time.perf_counter()
                for _ in range(inner):
                    run()
                seconds = (time.perf_counter() - start) / inner
                if seconds < best:
                    best, best_path = seconds, path
    return MatmulPeak(dtype=dtype, n=n, threads=torch.get_num_threads(), gflops=flops / best / 1e9, seconds=best,
                      path=best_path)


@dataclass(frozen=True)
class ModelShape:
    """The dimensions that set a JinaBERT-style encoder's FLOPs."""

    layers: int
    hidden: int
    heads: int
    intermediate: int
    gated_ffn: bool  # GEGLU: up-projection to 2 x intermediate (1.5x the FFN FLOPs of a plain MLP)
    vocab: int
    max_position_embeddings: int
    position_embedding_type: str

    @classmethod
    def from_config(cls, model_path: Path) -> ModelShape:
        cfg = json.loads((Path(model_path) / "config.json").read_text())
        return cls(layers=cfg["num_hidden_layers"], hidden=cfg["hidden_size"], heads=cfg["num_attention_heads"],
                   intermediate=cfg["intermediate_size"],
                   gated_ffn=cfg.get("feed_forward_type", "original") in ("geglu", "reglu", "glu"),
                   vocab=cfg.get("vocab_size", 0), max_position_embeddings=cfg.get("max_position_embeddings", 0),
                   position_embedding_type=cfg.get("position_embedding_type", "absolute"))

    def flops_per_sequence(self, length: int) -> float:
        """Forward FLOPs (2 per multiply-add) of one sequence of `length` real tokens, padding excluded.

        Per layer and token: Q, K, V and output projections 4 x 2h^2; feed-forward 2 x h x i x (3 if gated
        else 2) (GEGLU: up to 2i, down from i); attention scores QK^T and the weighted sum AV
        2 x 2 x L x h (grows with the sequence length). Plus the pooler and the one-logit classifier.
        Softmax, ALiBi bias add, layer norms, GELU: elementwise, not counted."""
        h, i, n = self.hidden, self.intermediate, length
        projections = 8 * h * h
        ffn = 2 * h * i * (3 if self.gated_ffn else 2)
        attention = 4 * n * h
        per_token = self.layers * (projections + ffn + attention)
        return n * per_token + 2 * h * h + 2 * h

    def flops(self, lengths: list[int]) -> float:
        return sum(self.flops_per_sequence(length) for length in lengths)

    def flops_per_token(self, length: int) -> float:
        return self.flops_per_sequence(length) / max(length, 1)

    def parameters(self) -> int:
        h, i = self.hidden, self.intermediate
        per_layer = 4 * (h * h + h) + h * i * (2 if self.gated_ffn else 1) + i * h + 2 * 2 * h + i + h
        return self.vocab * h + 2 * h + self.layers * per_layer + h * h + h + h + 1

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
