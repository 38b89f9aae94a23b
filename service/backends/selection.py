"""Which backend and precision to run, and why. `auto` follows the model's precision verdict
(`fidelity.json`, written by service/fidelity_gate.py where the weights were downloaded): the fastest option
that passed the gate for this model and runs natively on the CPU found at start-up; fp32 when there is no
verdict (and the reason says so)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import fidelity_gate


@dataclass(frozen=True)
class BackendChoice:
    backend: str  # "torch" | "onnx"
    precision: str  # "fp32" | "bf16" | "int8"
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)  # the verdict entry of the chosen option, if any


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 matmuls run natively instead of being emulated (and slower than fp32)."""
    import torch  # here, not at module level: the ONNX flavour imports this module without torch

    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def cpu_features() -> dict[str, Any]:
    """/proc/cpuinfo's flags, with torch's own bf16 check (it also knows non-Linux systems)."""
    features = fidelity_gate.cpu_features()
    if not cpu_has_native_bf16():  # torch will not use them (or the OS hides them)
        features.update(avx512_bf16=False, amx_bf16=False)
    elif not (features.get("avx512_bf16") or features.get("amx_bf16")):  # not Linux: trust torch
        features["avx512_bf16"] = True
    return features


def model_directory(source) -> Path | None:
    """The folder the model was loaded from: RERANK_MODEL_PATH, or the Hub cache snapshot of the model id."""
    if source.path is not None:
        return Path(source.path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(source.model_id, revision=source.revision, local_files_only=True))
    except Exception:  # noqa: BLE001 - not in the cache: no verdict either
        return None


def load_verdict(source) -> tuple[fidelity_gate.Verdict | None, str | None]:
    """(verdict, None) or (None, why there is none)."""
    directory = model_directory(source)
    if directory is None:
        return None, "the model folder was not found (no verdict)"
    try:
        verdict = fidelity_gate.read_verdict(directory)
    except fidelity_gate.VerdictError as exc:
        return None, f"unusable verdict: {exc}"
    if verdict is None:
        return None, f"no {fidelity_gate.VERDICT_FILE} in {directory}"
    return verdict, None


def available_options(backend: str, model_dir: Path | None) -> list[str]:
    from service.backends.onnx_backend import FILES, ONNX_DIR

    options = ["torch-fp32", "torch-bf16"] if backend in ("auto", "torch") else []
    if backend in ("auto", "onnx"):
        options += [f"onnx-{precision}" for precision, name in FILES.items()
                    if model_dir is not None and (model_dir / ONNX_DIR / name).is_file()]
        if backend == "onnx" and "onnx-fp32" not in options:
            options.insert(0, "onnx-fp32")
    return options


def choose_backend(*, backend: str, precision: str, device: str, verdict: fidelity_gate.Verdict | None = None,
                   verdict_problem: str | None = None, model_dir: Path | None = None,
                   features: dict[str, Any] | None = None) -> BackendChoice:
    if precision == "int8":
        # Dynamic int8 exists only as ONNX Runtime's onnx/model_quantized.onnx.
        if backend == "torch" or device != "cpu":
            raise ValueError("RERANK_PRECISION=int8 needs RERANK_BACKEND=onnx (or auto) on RERANK_DEVICE=cpu: it "
                             "runs onnx/model_quantized.onnx with ONNX Runtime; torch offers fp32 and bf16")
        return BackendChoice("onnx", "int8", "RERANK_PRECISION=int8 (ONNX Runtime, model_quantized.onnx)"
                             + _verdict_note(verdict, "onnx-int8"), _figures(verdict, "onnx-int8"))
    if backend == "onnx" and precision == "bf16":
        raise ValueError("RERANK_PRECISION=bf16 is not available with RERANK_BACKEND=onnx; use fp32, int8 or auto")
    if precision != "auto":
        name = "onnx" if backend == "onnx" else "torch"
        option = f"{name}-{precision}"
        return BackendChoice(name, precision, f"RERANK_PRECISION={precision}" + _verdict_note(verdict, option),
                             _figures(verdict, option))
    if device != "cpu":
        return BackendChoice("torch", "fp32", f"device {device}: fp32")
    fallback = "onnx-fp32" if backend == "onnx" else "torch-fp32"
    choice = fidelity_gate.choose_option(verdict, available_options(backend, model_dir),
                                         cpu_features() if features is None else features,
                                         fallback=fallback, verdict_problem=verdict_problem)
    return BackendChoice(choice.backend, choice.precision, f"auto: {choice.reason}", dict(choice.figures))


def _figures(verdict: fidelity_gate.Verdict | None, option: str) -> dict[str, Any]:
    return dict(verdict.options.get(option, {})) if verdict is not None else {}


def _verdict_note(verdict: fidelity_gate.Verdict | None, option: str) -> str:
    if verdict is None or option == fidelity_gate.REFERENCE_OPTION or option not in verdict.options:
        return ""
    return f" ({verdict.summary(option)})"


def verdict_info(choice: BackendChoice, verdict: fidelity_gate.Verdict | None, problem: str | None) -> dict[str, Any]:
    """What /info shows about the precision decision: the verdict file, each option's pass/fail, the figures
    of the option running."""
    if verdict is None:
        return {"file": None, "problem": problem, "chosen": None, "options": {}}
    return {"file": str(verdict.path), "created": verdict.created, "thresholds": verdict.thresholds,
            "calibration_pairs": verdict.calibration.get("pairs"), "chosen": choice.figures or None,
            "options": {name: {"passed": verdict.passed(name),
                               **{k: entry[k] for k in ("spearman", "top10_overlap", "max_abs_diff",
                                                        "speedup_vs_reference", "error") if k in entry}}
                        for name, entry in verdict.options.items()}}
