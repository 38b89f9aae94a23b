"""Prepare the model folder the ONNX flavour serves (the runtime-onnx image's model stage runs this).

    python scripts/build_onnx_bundle.py --model-dir /opt/reranker/model --out-dir /opt/reranker/onnx-model

Needs torch, transformers and the `onnx` package (the model stage has them; the slim runtime does not). Steps:

1. The reference: the model loaded as the torch flavour loads it (`load_reranker`: remote code, ALiBi
   buffer capped to `max_length`), fp32 scores of the calibration pairs.
2. The graph. The repository's own `onnx/model.onnx` *matches* when ONNX Runtime loads it, its inputs are
   among input_ids / attention_mask / token_type_ids, it answers one logit per pair, it accepts a pair of
   `max_length` tokens (an ALiBi graph capped shorter fails here), and, served exactly as the ONNX flavour
   serves it, its scores pass the fidelity gate against the reference. For JinaBERT-style attention the
   model is first exported with fused attention (`export_onnx(..., fuse_attention=True)`: ONNX Runtime's
   MultiHeadAttention with the ALiBi bias, a fusion no optimiser applies to the repository's graph); that
   graph wins when it passes the gate, because it needs a fraction of the attention memory. Otherwise the
   matching repository graph is used; otherwise a plain export (ALiBi cap = `max_length`), which must pass.
   fidelity.json says which, and why.
3. Graph optimisation: onnxruntime.transformers' BERT fusions (Gelu, SkipLayerNormalization; attention does
   not fuse with ALiBi), kept only if the optimised graph passes the gate too. The file that ships keeps its
   weights in a page-aligned `model.onnx.data` that ONNX Runtime memory-maps (half the resident memory), and
   it is the file the final gate judges.
4. int8: dynamic quantization of the plain graph, shipped only when it passes the gate; then it and the fp32
   graph are timed again in the reverse order and each keeps its best timing (`Gate.time_again`), since `auto`
   picks between the two by speed.
5. The tokenizer as transformers configures it on load (tokenizer.json from the loaded fast tokenizer), checked
   to give the transformers tokenizer's ids, token type ids and truncation on every calibration pair and on
   truncation cases; config.json and tokenizer_config.json; the verdict in `fidelity.json`.

Any failed check stops the build with a message naming it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from service import fidelity_gate
from service.backends.onnx_backend import FILES, INT64_INPUTS, ONNX_DIR, OnnxBackend
from service.engine.activation import activation_from_config, folder_json, sentence_transformers_config
from service.engine.factory import serving_batching
from service.engine.reranker import RerankEngine
from service.engine.tokenization import TokenizersPairEncoder
from service.model_store import ModelSource, read_model_config

logger = logging.getLogger("service.onnx_bundle")

FIDELITY_FILE = fidelity_gate.VERDICT_FILE
# modules.json and config_sentence_transformers.json: where a folder saved by sentence-transformers 5 names its
# activation (service/engine/activation.py).
COPIED_FILES = ("config.json", "tokenizer_config.json", "special_tokens_map.json", "modules.json",
                "config_sentence_transformers.json")


class BundleError(RuntimeError):
    """A check failed: the message names it and what was measured."""


# ---- the fidelity gate (service/fidelity_gate.py), on graphs served as the ONNX flavour serves them ----------


@dataclass
class Scored:
    option: str
    entry: dict[str, Any]  # fidelity_gate.compare(...) plus seconds, speed-up and how the graph was made

    @property
    def passed(self) -> bool:
        return bool(self.entry.get("passed")) and "error" not in self.entry


def onnx_engine_for(folder: Path, model_file: Path, max_length: int, precision: str = "fp32",
                    threads: int | None = None) -> RerankEngine:
    """The engine the ONNX flavour builds, on `model_file` with `folder`'s tokenizer and config, batched and padded
    as it serves (so the gate's timing of the graph is the served speed)."""
    config = read_model_config(ModelSource(model_id=folder.name, path=folder), local_files_only=True)
    backend = OnnxBackend(model_file, precision=precision, threads=threads)
    encoder = TokenizersPairEncoder.from_model_dir(folder, max_length,
                                                   with_token_type_ids="token_type_ids" in backend.input_names)
    activation, _ = activation_from_config(config, sentence_transformers_config(folder_json(folder), str(folder)))
    return RerankEngine(encoder, backend, activation, **serving_batching("onnx", precision), max_wait_s=0)


class Gate:
    """The gate's reference (torch fp32 through the service's engine, exactly as fidelity_gate.run_gate scores
    it) and its verdict on a candidate graph scored through the ONNX flavour's own path (tokenizers encoder,
    ONNX Runtime backend, numpy activation)."""

    def __init__(self, model_dir: Path, loaded_model: Any, max_length: int, calibration: Any) -> None:
        self.calibration = calibration
        self.max_length = max_length
        backend, _ = fidelity_gate._make_backend(fidelity_gate.REFERENCE_OPTION, model_dir, lambda: loaded_model,
                                                 None)
        engine = fidelity_gate._engine(loaded_model, backend, max_length, fidelity_gate.REFERENCE_OPTION)
        self.reference, self.reference_seconds = fidelity_gate._score_calibration(engine, calibration)

    def reference_entry(self) -> dict[str, Any]:
        return {**fidelity_gate.compare(self.reference, self.reference, self.calibration.query_ids),
                "seconds": round(self.reference_seconds, 3), "speedup_vs_reference": 1.0}

    def judge(self, option: str, folder: Path, model_file: Path, precision: str = "fp32", **facts: Any) -> Scored:
        try:
            engine = onnx_engine_for(folder, model_file, self.max_length, precision)
            scores, seconds = fidelity_gate._score_calibration(engine, self.calibration)
        except Exception as exc:  # noqa: BLE001 - a graph that cannot be scored fails, with the reason
            return Scored(option, {"passed": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}", **facts})
        entry = {**fidelity_gate.compare(self.reference, scores, self.calibration.query_ids),
                 "seconds": round(seconds, 3), "timings": [round(seconds, 3)],
                 "speedup_vs_reference": round(self.reference_seconds / seconds, 3) if seconds else None, **facts}
        return Scored(option, entry)

    def time_again(self, folder: Path, judged: Sequence[tuple[Scored, Path, str]]) -> None:
        """(scored, model file, precision) of the options that passed, timed again in the reverse order they were
        judged; each keeps its best timing (service/fidelity_gate.py: one timing per option, in a fixed order, ranked
        them by the build machine's slow spells). What `auto` decides with it is int8 against fp32, both against
        the same reference timing."""
        graphs = {scored.option: (model_file, precision) for scored, model_file, precision in judged}
        entries = {scored.option: scored.entry for scored, _, _ in judged}

        def seconds_of(option: str) -> float:
            model_file, precision = graphs[option]
            engine = onnx_engine_for(folder, model_file, self.max_length, precision)
            return fidelity_gate._score_calibration(engine, self.calibration)[1]

        fidelity_gate.time_again(entries, seconds_of, logger.info, warn=logger.warning)
        fidelity_gate.settle_speeds(entries, self.reference_seconds)


def _summary(scored: Scored) -> str:
    entry = scored.entry
    if "error" in entry:
        return f"{scored.option}: not scored ({entry['error']})"
    return (f"{scored.option}: Spearman {entry['spearman']:.6f}, top-10 overlap {entry['top10_overlap']:.3f}, "
            f"max |diff| {entry['max_abs_diff']:.1e}" + ("" if scored.passed else f" -> FAILED {entry['failed']}"))


# ---- checks on a candidate graph -------------------------------------------------------------------------------


def graph_problem(model_file: Path, max_length: int, num_labels: int = 1) -> str | None:
    """Why this ONNX file cannot be served as is (None: it can): inputs, output shape, max_length input."""
    try:
        backend = OnnxBackend(model_file, threads=1)
    except Exception as exc:  # noqa: BLE001 - anything ONNX Runtime refuses is a mismatch
        return f"ONNX Runtime cannot load it or its inputs do not fit ({type(exc).__name__}: {exc})"
    unknown = [name for name in backend.input_names if name not in INT64_INPUTS]
    if unknown:
        return f"unexpected inputs {unknown}"
    features = {name: np.ones((2, max_length), dtype=np.int64) for name in INT64_INPUTS}
    features["token_type_ids"] = np.zeros((2, max_length), dtype=np.int64)
    try:
        logits = backend.forward(features)
    except Exception as exc:  # noqa: BLE001
        return f"it does not accept a pair of {max_length} tokens ({type(exc).__name__}: {str(exc)[:300]})"
    if logits.shape != (2, num_labels):
        return f"output shape {logits.shape} for 2 pairs, expected (2, {num_labels})"
    return None


# ---- the bundle ------------------------------------------------------------------------------------------------


@dataclass
class BundleReport:
    out_dir: Path
    graph_source: str  # "repository" | "exported"
    attention: str  # "fused" | "unfused"
    why: str
    options: dict[str, Scored]
    optimised: bool
    seconds: float


def build_bundle(model_dir: Path, out_dir: Path, *, max_length: int = 512, calibration: Any = None,
                 quantize: bool = True, optimise: bool = True, fuse_attention: bool = True) -> BundleReport:
    """Write the ONNX flavour's model folder to `out_dir` (see the module docstring); BundleError if a check
    fails. `calibration`: the gate's set (default service.calibration.calibration_set(), 512 pairs)."""
    started = time.perf_counter()
    model_dir, out_dir = Path(model_dir).resolve(), Path(out_dir)
    from service.calibration import calibration_set
    from service.model_store import load_reranker

    calibration = calibration or calibration_set()
    loaded_model, max_length = load_reranker(ModelSource(model_id=model_dir.name, path=model_dir),
                                             device="cpu", max_length=max_length, local_files_only=True)
    gate = Gate(model_dir, loaded_model, max_length, calibration)
    config = read_model_config(ModelSource(model_id=model_dir.name, path=model_dir), local_files_only=True)

    if out_dir.exists():
        shutil.rmtree(out_dir)
    (out_dir / ONNX_DIR).mkdir(parents=True)
    write_tokenizer(loaded_model, model_dir, out_dir)
    check_tokenizer(loaded_model, out_dir, max_length, calibration.by_query())

    work = out_dir / ".work"
    work.mkdir()
    options: dict[str, Scored] = {}
    fp32_file = out_dir / ONNX_DIR / FILES["fp32"]
    shipped = model_dir / ONNX_DIR / FILES["fp32"]
    from service.backends.onnx_export import export_onnx, fusable_attention_modules

    # The repository's graph: used when it matches (and nothing better is available, see below).
    repository_matches, repository_note = False, f"the repository has no {ONNX_DIR}/{FILES['fp32']}"
    if shipped.is_file():
        problem = graph_problem(shipped, max_length)
        if problem is None:
            shipped_verdict = gate.judge("onnx-fp32", out_dir, shipped)
            problem = None if shipped_verdict.passed else f"its scores fail the gate ({_summary(shipped_verdict)})"
        repository_matches = problem is None
        repository_note = (f"the repository's {ONNX_DIR}/{FILES['fp32']} matches (inputs, one logit, "
                           f"{max_length}-token pairs, scores within the gate)" if repository_matches else
                           f"the repository's {ONNX_DIR}/{FILES['fp32']} does not match: {problem}")
    plain = work / "plain.onnx"  # an unfused graph: the repository's, or our export
    if repository_matches:
        shutil.copyfile(shipped, plain)

    # A fused-attention export, when the model's attention can be fused: same scores (gated), one attention
    # buffer per layer instead of several, which is what lets a worker fit 512 MB.
    candidate, graph_source, attention = None, "", "unfused"
    if fuse_attention and fusable_attention_modules(loaded_model.model):
        fused = export_onnx(model_dir, work / "fused.onnx", max_length=max_length, fuse_attention=True)
        problem = graph_problem(fused, max_length)
        check = None if problem else gate.judge("onnx-fp32", out_dir, fused)
        if problem is None and check.passed:
            candidate, graph_source, attention = fused, "exported", "fused"
            why = (f"exported with fused attention (MultiHeadAttention, ALiBi as its bias; capped at {max_length} "
                   f"tokens); {repository_note}" + (", but its attention is unfused (several batch x heads x "
                                                    "L^2 buffers per layer)" if repository_matches else ""))
        else:
            logger.warning("fused-attention export rejected (%s)", problem or _summary(check))
    if candidate is None and repository_matches:
        candidate, graph_source, why = plain, "repository", repository_note
    if candidate is None:
        export_onnx(model_dir, plain, max_length=max_length)
        problem = graph_problem(plain, max_length)
        if problem:
            raise BundleError(f"the exported graph cannot be served: {problem}")
        check = gate.judge("onnx-fp32", out_dir, plain)
        if not check.passed:
            raise BundleError(f"the exported ONNX graph fails the fidelity gate: {_summary(check)}")
        candidate, graph_source, why = plain, "exported", f"exported (ALiBi capped at {max_length}); {repository_note}"
    logger.info("ONNX graph: %s (%s)", graph_source, why)
    chosen = candidate

    optimised = False
    if optimise:
        try:
            optimised_file = optimise_graph(candidate, work / "optimised.onnx", config)
        except Exception as exc:  # noqa: BLE001 - optimisation is optional; the plain graph still serves
            logger.warning("graph optimisation skipped: %s: %s", type(exc).__name__, exc)
        else:
            check = gate.judge("onnx-fp32", out_dir, optimised_file)
            if check.passed and graph_problem(optimised_file, max_length) is None:
                chosen, optimised = optimised_file, True
            else:
                logger.warning("optimised graph rejected (%s); serving the plain one", _summary(check))
    # What ships is what is judged: the final file, weights in a page-aligned data file ONNX Runtime maps.
    save_with_aligned_external_data(chosen, fp32_file)
    verdict = gate.judge("onnx-fp32", out_dir, fp32_file, graph=graph_source, attention=attention,
                         optimised=optimised)
    if not verdict.passed:
        raise BundleError(f"the final ONNX graph fails the fidelity gate: {_summary(verdict)}")
    options["onnx-fp32"] = verdict

    if quantize:
        from service.backends.onnx_export import quantize_int8

        # from an unfused graph: the quantizer does not know the fused contrib ops
        if not plain.is_file():
            export_onnx(model_dir, plain, max_length=max_length)
        int8_file = out_dir / ONNX_DIR / FILES["int8"]
        try:
            save_with_aligned_external_data(quantize_int8(plain, work / "int8.onnx"), int8_file)
        except Exception as exc:  # noqa: BLE001 - int8 is optional: record why it is not offered
            int8 = Scored("onnx-int8", {"passed": False, "error": f"quantization failed: {type(exc).__name__}: "
                                                                   f"{str(exc)[:300]}"})
        else:
            int8 = gate.judge("onnx-int8", out_dir, int8_file, precision="int8",
                              quantization="dynamic int8 (QInt8 weights), pairs run one by one")
        options["onnx-int8"] = int8
        if not int8.passed:
            for leftover in (int8_file, int8_file.with_name(int8_file.name + ".data")):
                leftover.unlink(missing_ok=True)
        logger.info("int8: %s (%s)", "shipped" if int8.passed else "not shipped", _summary(int8))
        if int8.passed:  # auto chooses between the two by speed
            gate.time_again(out_dir, [(verdict, fp32_file, "fp32"), (int8, int8_file, "int8")])
    shutil.rmtree(work)

    report = BundleReport(out_dir, graph_source, attention, why, options, optimised,
                          time.perf_counter() - started)
    write_bundle_verdict(out_dir, report, gate, max_length)
    return report


def write_tokenizer(loaded_model: Any, model_dir: Path, out_dir: Path) -> None:
    """tokenizer.json as the loaded transformers tokenizer has it (normalizer options of tokenizer_config.json
    applied, added tokens included), without truncation or padding state; the config files beside it."""
    backend = loaded_model.tokenizer.backend_tokenizer
    state = json.loads(backend.to_str())
    state["truncation"], state["padding"] = None, None
    (out_dir / "tokenizer.json").write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    for name in COPIED_FILES:
        if (model_dir / name).is_file():
            shutil.copyfile(model_dir / name, out_dir / name)


def check_tokenizer(loaded_model: Any, out_dir: Path, max_length: int,
                    groups: Sequence[tuple[str, list[str]]]) -> None:
    """The tokenizers encoder of the bundle gives the transformers encoder's ids, type ids and truncation."""
    from service.engine.tokenization import PairEncoder

    expected_encoder = PairEncoder(loaded_model.tokenizer, max_length)
    got_encoder = TokenizersPairEncoder.from_model_dir(out_dir, max_length)
    cases: list[tuple[str, list[str], dict[str, int]]] = []
    for query, documents in groups:
        cases += [(query, documents, {}), (query, documents, {"max_tokens_per_doc": 16}),
                  (query, documents[:4], {"max_length": 24}), (" ".join([query] * 80), documents[:4], {})]
    for query, documents, options in cases:
        expected = expected_encoder.encode(query, documents, **options)
        got = got_encoder.encode(query, documents, **options)
        if got.input_ids != expected.input_ids or (
                expected.token_type_ids is not None and got.token_type_ids != expected.token_type_ids):
            raise BundleError(f"the tokenizers encoder differs from transformers' on query {query[:60]!r} "
                              f"with {options or 'defaults'}")
    if got_encoder.pad_token_id != expected_encoder.pad_token_id:
        raise BundleError(f"pad token id {got_encoder.pad_token_id} != transformers' {expected_encoder.pad_token_id}")


def optimise_graph(source: Path, target: Path, config: dict[str, Any]) -> Path:
    """onnxruntime.transformers' BERT fusions that apply to JinaBERT: Gelu (erf form, in GEGLU) and
    SkipLayerNormalization (residual add + LayerNorm). Attention does not fuse (the ALiBi bias add breaks the
    pattern) and EmbedLayerNormalization does not either (no position embeddings)."""
    from onnxruntime.transformers import optimizer
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions("bert")
    model = optimizer.optimize_model(str(source), model_type="bert", num_heads=int(config["num_attention_heads"]),
                                     hidden_size=int(config["hidden_size"]), optimization_options=options,
                                     opt_level=0, use_gpu=False)
    fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(source), load_external_data=False).metadata_props}
    meta["optimisation"] = "onnxruntime.transformers bert fusions: " + (
        ", ".join(f"{k} x{v}" for k, v in sorted(fused.items())) or "none applied")
    model.model.ClearField("metadata_props")
    for key, value in meta.items():
        entry = model.model.metadata_props.add()
        entry.key, entry.value = key, value
    model.save_model_to_file(str(target))
    logger.info("optimised graph: %s", meta["optimisation"])
    return target


EXTERNAL_DATA_ALIGNMENT = 64 * 1024  # >= the page size (and Windows' 64 KiB mapping granularity)
EXTERNAL_DATA_MIN_BYTES = 4096


def save_with_aligned_external_data(source: Path, target: Path) -> Path:
    """Write the graph to `target` with every initializer of 4 KiB or more in `<target>.data`, each at an offset
    aligned to 64 KiB. ONNX Runtime then memory-maps the data file instead of copying the weights onto the
    heap: pages of the 94 MB word-embedding table that no token touches never become resident, and weights
    that MatMul prepacks are not held twice (measured on the JinaBERT proxy: 105 instead of 210 MB RSS after
    loading, peak during loading 106 instead of 283 MB). An ALiBi bias constant is replaced by the nodes that
    compute it, bit for bit (service/backends/onnx_alibi.py): 12.6 MB less file at 12 heads x 512 tokens."""
    import onnx
    from onnx import numpy_helper

    from service.backends.onnx_alibi import compute_alibi_in_graph

    model = onnx.load(str(source))
    compute_alibi_in_graph(model.graph)
    data_name = target.name + ".data"
    target.parent.mkdir(parents=True, exist_ok=True)
    offset = 0
    with open(target.parent / data_name, "wb") as data:
        for tensor in model.graph.initializer:
            raw = numpy_helper.to_array(tensor).tobytes()
            if len(raw) < EXTERNAL_DATA_MIN_BYTES:
                continue
            padding = (-offset) % EXTERNAL_DATA_ALIGNMENT
            data.write(b"\0" * padding)
            offset += padding
            data.write(raw)
            for field_name in ("raw_data", "float_data", "int32_data", "int64_data", "double_data"):
                tensor.ClearField(field_name)
            tensor.data_location = onnx.TensorProto.EXTERNAL
            del tensor.external_data[:]
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(raw)))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            offset += len(raw)
    onnx.save(model, str(target))
    return target


def write_bundle_verdict(out_dir: Path, report: BundleReport, gate: Gate, max_length: int) -> Path:
    """fidelity.json in the gate's format (service/fidelity_gate.py, format 1): the reference and the ONNX
    options as scored through the ONNX flavour's path. The folder holds no safetensors, so `model.weights` is
    empty and `model.onnx_files` names what was gated."""
    import datetime

    files = sorted(p for p in (out_dir / ONNX_DIR).iterdir() if p.is_file())
    options = {fidelity_gate.REFERENCE_OPTION: gate.reference_entry(),
               **{name: scored.entry for name, scored in report.options.items()}}
    verdict = fidelity_gate.Verdict(
        options=options, thresholds=dict(fidelity_gate.THRESHOLDS), calibration=gate.calibration.describe(),
        versions=fidelity_gate._versions(), cpu=fidelity_gate.cpu_features(),
        model={"directory": str(out_dir), "max_length": max_length, "weights": [],
               "onnx_files": [{"file": f"{ONNX_DIR}/{p.name}", "bytes": p.stat().st_size,
                               "sha256": fidelity_gate._sha256(p)} for p in files],
               "onnx_graph": {"source": report.graph_source, "attention": report.attention, "why": report.why,
                              "optimised": report.optimised}},
        created=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return fidelity_gate.write_verdict(out_dir, verdict)
