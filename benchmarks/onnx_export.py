"""Export a (proxy) model to ONNX, plus a dynamically quantized int8 copy, for the ONNX Runtime rows of
the experiments and for fidelity checks. The real model ships `onnx/model.onnx` and
`onnx/model_quantized.onnx`; the proxy has none, so this makes the equivalent.

Needs the `onnx` package, which the project's .venv does not carry; it is installed on demand into
benchmarks/.work/onnx-pkgs (gitignored) and put on sys.path:

    python -m benchmarks.onnx_export --model-path DIR --out-dir benchmarks/.work/onnx-sdpa [--attention eager]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from benchmarks.servers import WORK_DIR

ONNX_PKGS = WORK_DIR / "onnx-pkgs"


def _ensure_onnx() -> None:
    try:
        import onnx  # noqa: F401
        return
    except ImportError:
        pass
    if not (ONNX_PKGS / "onnx").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(ONNX_PKGS),
                        "onnx", "ml_dtypes", "typing_extensions"], check=True)
    sys.path.insert(0, str(ONNX_PKGS))


def export(model_path: Path, out_dir: Path, attention: str = "sdpa", max_length: int = 512) -> tuple[Path, Path]:
    _ensure_onnx()
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from benchmarks.fidelity import load_cross_encoder, use_sdpa

    ce = load_cross_encoder(model_path, max_length)
    if attention == "sdpa" and use_sdpa(ce) == 0:
        raise SystemExit("the model has no attn_implementation attribute: export with --attention eager")
    model = ce.model.eval()

    class Logits(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask,
                              token_type_ids=token_type_ids).logits

    enc = ce.tokenizer(["what is a test"] * 2, ["a document of some words", "another one"], padding=True,
                       return_tensors="pt")
    names = ["input_ids", "attention_mask", "token_type_ids"]
    out_dir.mkdir(parents=True, exist_ok=True)
    fp32 = out_dir / "model.onnx"
    int8 = out_dir / "model_quantized.onnx"
    torch.onnx.export(Logits(model), tuple(enc[n] for n in names), str(fp32), input_names=names,
                      output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={**{n: {0: "batch", 1: "seq"} for n in names}, "logits": {0: "batch"}})
    quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8)
    return fp32, int8


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", type=Path, required=True)
    parser.add_argument("--out-dir", type=Path, required=True)
    parser.add_argument("--attention", choices=("sdpa", "eager"), default="sdpa")
    args = parser.parse_args()
    for path in export(args.model_path, args.out_dir, args.attention):
        print(f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
