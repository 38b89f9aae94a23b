"""Which backend and precision to run, and why. `auto` picks the fastest option whose scores stay
within the fidelity bounds (tests/service/test_fidelity.py) on the CPU it runs on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # "torch" | "onnx"
    precision: str  # "fp32" | "bf16" | "int8"
    reason: str


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls run natively instead of being emulated (and slower than fp32)."""
    import torch  # here, not at module level: the ONNX flavour imports this module without torch

    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def choose_backend(*, backend: str, precision: str, device: str) -> BackendChoice:
    if precision == "int8":
        # Dynamic int8 exists only as ONNX Runtime's onnx/model_quantized.onnx: RERANK_BACKEND=auto takes it
        # from there; torch has no int8 path here. Opt-in only, never picked by `auto`: on the JinaBERT proxy
        # it gives Spearman 0.61 and max |score difference| 0.80 against fp32 (ONNX fp32: 1.000000, 4e-5).
        if backend == "torch" or device != "cpu":
            raise ValueError("RERANK_PRECISION=int8 needs RERANK_BACKEND=onnx (or auto) on RERANK_DEVICE=cpu: it "
                             "runs onnx/model_quantized.onnx with ONNX Runtime; torch offers fp32 and bf16")
        return BackendChoice("onnx", "int8", "RERANK_PRECISION=int8 (ONNX Runtime, model_quantized.onnx)")
    if backend == "onnx":
        if precision == "bf16":
            raise ValueError("RERANK_PRECISION=bf16 is not available with RERANK_BACKEND=onnx; "
                             "use fp32, int8 or auto")
        return BackendChoice("onnx", "fp32", "RERANK_BACKEND=onnx")
    if precision != "auto":
        return BackendChoice("torch", precision, f"RERANK_PRECISION={precision}")
    if device != "cpu":
        return BackendChoice("torch", "fp32", f"device {device}: fp32")
    if cpu_has_native_bf16():
        # Faster (about 1.9x on the JinaBERT proxy here) but outside the fidelity bounds: Spearman 0.97,
        # max |score difference| 0.26-0.31 against fp32 (benchmarks/RESULTS.md). Opt in with RERANK_PRECISION=bf16.
        return BackendChoice("torch", "fp32", "fp32: bf16 is native on this CPU but fails the fidelity bounds")
    return BackendChoice("torch", "fp32", "fp32: no native bf16 on this CPU")
