"""Whether this folder's model may be served by the native JinaBERT implementation (service/backends/jinabert.py)
instead of its remote code through transformers, measured where both exist, and the verdict `native.json`
the torch flavour reads at start-up.

Where it runs: next to the precision gate (service/fidelity_gate.py): the image build's model stage, and
`scripts/download_models.py` / `download_reranker_local.py` (`service.model_download.prepare_model`);
`python -m service.native_gate MODEL_DIR` runs it alone.

What it checks, on the precision gate's calibration set (service/calibration.py; 8 of its 32 queries: 128
query/passage pairs), scored through the service's own engine, fp32, batched as served:

* the token ids and token type ids of every pair: `tokenizers` on tokenizer.json (what the native path uses,
  as the ONNX flavour does) against the transformers tokenizer: identical;
* the scores: native against the remote code, max |score difference| <= 1e-4 (the tolerance the SDPA switch is
  held to, service/backends/attention.py); in practice they are the same ops and agree exactly.

It records a probe too: the warm-up pairs' token ids and the remote code's logits. At start-up the service
runs the probe through the native model and serves it only if the ids are the same and the logits within
the tolerance; otherwise (weights changed after the check, another code version) it loads the remote code and
says why. With no `native.json`, or a failed one, the remote code serves, as before.

The verdict (format 1)::

    {"format": 1, "created": "...", "implementation": "jinabert-native/1", "passed": true, "reason": "...",
     "model": {"directory": "...", "max_length": 512, "weights": [{"file": ..., "bytes": ..., "sha256": ...}]},
     "versions": {...}, "tolerance": 1e-4,
     "metrics": {"pairs": 128, "token_ids_identical": true, "max_abs_diff": 0.0, "spearman": 1.0, ...,
                 "seconds_native": 9.0, "seconds_remote_code": 9.2},
     "probe": {"query": "...", "documents": [...], "input_ids": [[...]], "token_type_ids": [[...]],
               "logits": [...]}}

Reading it (`read_native_verdict`) needs only the standard library.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from service import fidelity_gate

logger = logging.getLogger("service.native_gate")

FORMAT_VERSION = 1
VERDICT_FILE = "native.json"
TOLERANCE = 1e-4  # max |score difference| over the calibration set, and |logit difference| on the probe
# Queries of the calibration set scored (16 passages each): an implementation that agrees op for op agrees on any
# 128 realistic pairs as on 512, and the check adds less to the image build.
CALIBRATION_QUERIES = 8


class NativeVerdictError(ValueError):
    """native.json exists but cannot be used (unreadable, another format, other weights)."""


@dataclass
class NativeVerdict:
    passed: bool
    reason: str
    implementation: str = ""
    model: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    probe: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    tolerance: float = TOLERANCE
    created: str = ""
    format: int = FORMAT_VERSION
    path: Path | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format": self.format, "created": self.created, "implementation": self.implementation,
                "passed": self.passed, "reason": self.reason, "model": self.model, "versions": self.versions,
                "tolerance": self.tolerance, "metrics": self.metrics, "probe": self.probe}

    @classmethod
    def from_json(cls, data: Any, path: Path | None = None) -> NativeVerdict:
        where = path or VERDICT_FILE
        if not isinstance(data, dict) or "passed" not in data:
            raise NativeVerdictError(f"{where}: no 'passed' field: not a native-implementation verdict")
        if int(data.get("format", 0)) != FORMAT_VERSION:
            raise NativeVerdictError(f"{where}: format {data.get('format')} (this service reads format "
                                     f"{FORMAT_VERSION}); re-run python -m service.native_gate")
        return cls(passed=bool(data["passed"]), reason=str(data.get("reason", "")),
                   implementation=str(data.get("implementation", "")), model=data.get("model") or {},
                   metrics=data.get("metrics") or {}, probe=data.get("probe") or {},
                   versions=data.get("versions") or {}, tolerance=float(data.get("tolerance", TOLERANCE)),
                   created=str(data.get("created", "")), path=path)

    def info(self) -> dict[str, Any]:
        """What /info shows of it."""
        keys = ("pairs", "token_ids_identical", "max_abs_diff", "seconds_native", "seconds_remote_code")
        return {"file": str(self.path) if self.path else None, "passed": self.passed, "reason": self.reason,
                "implementation": self.implementation, "created": self.created,
                **{key: self.metrics[key] for key in keys if key in self.metrics}}


def read_native_verdict(model_dir: Path | str | None) -> NativeVerdict | None:
    """The verdict next to the model, or None when there is none; the weights it was taken on must still be the
    folder's (same files and sizes; the probe at start-up checks the values)."""
    found = fidelity_gate.read_verdict_file(model_dir, VERDICT_FILE, NativeVerdictError, "service.native_gate")
    if found is None:
        return None
    verdict = NativeVerdict.from_json(found[1], found[0])
    fidelity_gate.check_verdict_weights(found[0], verdict.model, NativeVerdictError, "service.native_gate")
    return verdict


def write_native_verdict(model_dir: Path | str, verdict: NativeVerdict) -> Path:
    return fidelity_gate.write_verdict_file(model_dir, VERDICT_FILE, verdict.to_json())


def probe_problem(verdict: NativeVerdict, encoder, forward: Callable[[dict[str, Any]], Any]) -> str | None:
    """Why the native model does not reproduce the verdict's probe (token ids, then logits), or None when it does.
    `encoder` is the native path's TokenizersPairEncoder, `forward` the torch backend's (features -> logits)."""
    import numpy as np

    probe = verdict.probe
    if not probe.get("documents") or not probe.get("logits"):
        return f"{verdict.path or VERDICT_FILE} has no probe"
    encoded = encoder.encode(probe["query"], list(probe["documents"]))
    if encoded.input_ids != probe.get("input_ids") or encoded.token_type_ids != probe.get("token_type_ids"):
        return "the tokenizer's ids of the probe pairs differ from the ones recorded"
    logits = np.asarray(forward(sample_batch(encoder, probe["query"], probe["documents"])),
                        dtype=np.float64).reshape(-1)
    expected = np.asarray(probe["logits"], dtype=np.float64).reshape(-1)
    if logits.shape != expected.shape:
        return f"the probe gave {logits.size} logits, {expected.size} were recorded"
    worst = float(np.max(np.abs(logits - expected)))
    if not worst <= verdict.tolerance:
        return f"the probe's logits moved by {worst:.2e} (> {verdict.tolerance:.0e}) from the remote code's"
    return None


def run_native_gate(model_dir: Path | str, *, max_length: int = 512, calibration=None, write: bool = True,
                    log: Callable[[str], None] = print) -> NativeVerdict:
    """Score the calibration set with the remote code and with the native implementation (both fp32, SDPA,
    through the engine), compare ids and scores, record the probe, and write native.json (unless write=False)."""
    from service.backends import jinabert

    model_dir = Path(model_dir).resolve()
    config = jinabert.read_config(model_dir)
    base = {"implementation": jinabert.IMPLEMENTATION, "versions": fidelity_gate._versions(),
            "created": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "model": {"directory": str(model_dir), "max_length": max_length,
                      "weights": fidelity_gate.recorded_weights(model_dir)}}
    reason = jinabert.unsupported_reason(config)
    if reason is None:
        verdict = _measure(model_dir, max_length, calibration, base, log)
    else:
        verdict = NativeVerdict(passed=False, reason=f"not a model the native implementation covers: {reason}",
                                **base)
    log(f"native implementation: {'PASSED' if verdict.passed else 'not used'}: {verdict.reason}")
    if write:
        log(f"  wrote {write_native_verdict(model_dir, verdict)}")
    return verdict


def _measure(model_dir: Path, max_length: int, calibration, base: dict[str, Any],
             log: Callable[[str], None]) -> NativeVerdict:
    from service.backends.attention import SAMPLE_DOCUMENTS, SAMPLE_QUERY
    from service.backends.jinabert import UnsupportedModel
    from service.calibration import calibration_set
    from service.engine.tokenization import PairEncoder

    calibration = calibration or calibration_set(n_queries=CALIBRATION_QUERIES)
    log(f"native implementation check: {model_dir.name}, {len(calibration.query_ids)} calibration pairs")
    remote_backend, remote = fidelity_gate._make_backend(fidelity_gate.REFERENCE_OPTION, model_dir,
                                                         lambda: _load_remote(model_dir, max_length), None)
    max_length = remote.max_length
    base["model"]["max_length"] = max_length
    remote_scores, remote_seconds = fidelity_gate._score_calibration(
        fidelity_gate._engine(remote, remote_backend, max_length, fidelity_gate.REFERENCE_OPTION), calibration)
    try:
        native_engine, native_encoder, _ = native_engine_for(model_dir, max_length)
    except (UnsupportedModel, FileNotFoundError) as exc:
        return NativeVerdict(passed=False, reason=str(exc), **base)
    native_scores, native_seconds = fidelity_gate._score_calibration(native_engine, calibration)

    remote_encoder = PairEncoder(remote.tokenizer, max_length)
    mismatched = sum(a.input_ids != b.input_ids or a.token_type_ids != b.token_type_ids
                     for a, b in ((remote_encoder.encode(q, p), native_encoder.encode(q, p))
                                  for q, p in calibration.by_query()))
    metrics = {**fidelity_gate.compare(remote_scores, native_scores, calibration.query_ids,
                                       {"spearman": 0.999, "top10_overlap": 0.98, "max_abs_diff": TOLERANCE}),
               "token_ids_identical": mismatched == 0, "queries_with_other_ids": mismatched,
               "seconds_native": round(native_seconds, 3), "seconds_remote_code": round(remote_seconds, 3)}
    metrics.pop("passed"), metrics.pop("failed")
    encoded = remote_encoder.encode(SAMPLE_QUERY, list(SAMPLE_DOCUMENTS))
    probe = {"query": SAMPLE_QUERY, "documents": list(SAMPLE_DOCUMENTS), "input_ids": encoded.input_ids,
             "token_type_ids": encoded.token_type_ids,
             "logits": [float(x) for x in remote_backend.forward(sample_batch(remote_encoder)).reshape(-1)]}
    if mismatched:
        passed, reason = False, f"tokenizer.json gives other ids than the transformers tokenizer on {mismatched} queries"
    elif not metrics["max_abs_diff"] <= TOLERANCE:
        passed, reason = False, (f"scores differ from the remote code's by up to {metrics['max_abs_diff']:.2e} "
                                 f"(> {TOLERANCE:.0e})")
    else:
        passed, reason = True, (f"same ids, max |score difference| {metrics['max_abs_diff']:.1e} on "
                                f"{metrics['pairs']} pairs; {native_seconds:.2f} s native vs "
                                f"{remote_seconds:.2f} s remote code")
    return NativeVerdict(passed=passed, reason=reason, metrics=metrics, probe=probe, **base)


def _load_remote(model_dir: Path, max_length: int):
    from service.model_store import ModelSource, load_reranker

    loaded, _ = load_reranker(ModelSource(model_id=model_dir.name, path=model_dir), device="cpu",
                              max_length=max_length, local_files_only=True)
    return loaded


def native_engine_for(model_dir: Path, max_length: int, *, precision: str = "fp32", linear: str = "auto"):
    """(RerankEngine, encoder, backend) on the native implementation, batched as the torch backend serves
    `precision`: the pieces the torch flavour's loader serves with (service/engine/implementation.py)."""
    from service.backends.torch_backend import TorchBackend
    from service.engine.factory import serving_batching
    from service.engine.implementation import load_native_model
    from service.engine.reranker import RerankEngine

    native = load_native_model(model_dir, max_length)
    backend = TorchBackend(native.model, precision=precision, linear=linear, sample=sample_batch(native.encoder))
    engine = RerankEngine(native.encoder, backend, native.activation, **serving_batching("torch", precision),
                          max_wait_s=0.0)
    return engine, native.encoder, backend


def sample_batch(encoder, query: str | None = None, documents: Sequence[str] | None = None) -> dict[str, Any]:
    """(query, documents), by default the warm-up pairs of service/backends/attention.py, encoded and padded by
    `encoder` into the features a backend takes."""
    from service.backends.attention import SAMPLE_DOCUMENTS, SAMPLE_QUERY
    from service.engine.tokenization import pad_batch

    encoded = encoder.encode(query or SAMPLE_QUERY, list(documents or SAMPLE_DOCUMENTS))
    types = encoded.token_type_ids or [None] * len(encoded)
    return pad_batch(list(zip(encoded.input_ids, types)), encoder.pad_token_id)


def check_in_child(model_dir: Path | str, *, max_length: int = 512, timeout: float = 1800,
                   log: Callable[[str], None] = logger.info,
                   warn: Callable[[str], None] = logger.warning) -> NativeVerdict | None:
    """`run_native_gate` in a child process (as the precision gate runs); None when it could not run."""
    ran = fidelity_gate.run_module_in_child("service.native_gate", model_dir, max_length=max_length,
                                            timeout=timeout, log=log, warn=warn,
                                            failed=f"native check: no {VERDICT_FILE} written, the remote code serves")
    return read_native_verdict(model_dir) if ran else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.native_gate",
                                     description="Check the native JinaBERT implementation against the model's "
                                                 "remote code and write native.json.")
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--max-length", type=int, default=512, help="tokens per pair (RERANK_MAX_LENGTH)")
    parser.add_argument("--no-write", action="store_true", help="print the verdict, do not write native.json")
    args = parser.parse_args(argv)
    if not (args.model_dir / "config.json").is_file():
        print(f"error: {args.model_dir} has no config.json: not a model folder", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    verdict = run_native_gate(args.model_dir, max_length=args.max_length, write=not args.no_write)
    if args.no_write:
        print(json.dumps(verdict.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
