"""The ONNX flavour (RERANK_FLAVOUR=onnx, the runtime-onnx image): ONNX Runtime + tokenizers, never torch.

* The whole slim service (app, routes, engine, a scored request on every API) runs in a subprocess where
  importing torch, transformers or sentence-transformers raises: the test fails if any of them is imported
  (and so if any lands in sys.modules).
* Its scores equal the torch flavour's within the fidelity gate's bounds; its tokenizer gives transformers'
  ids, token type ids and truncation.
* The bundle builder (the runtime-onnx image's model stage) reuses a repository graph only when it matches.
"""

from __future__ import annotations

import json
import math
import random
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the exporter needs the onnx package (requirements/onnx-export.txt)")

from service.backends.onnx_export import export_onnx  # noqa: E402
from service.engine.activation import (NotACrossEncoderError, activation_from_config, folder_json,  # noqa: E402
                                       identity, sentence_transformers_config, sigmoid)
from service.engine.factory import build_engine, resolve_flavour  # noqa: E402
from service.engine.onnx_engine import choose_onnx_precision  # noqa: E402
from service.engine.tokenization import PairEncoder, TokenizersPairEncoder  # noqa: E402
from service.model_store import ModelNotAvailableError  # noqa: E402
from service.settings import PROJECT_ROOT, SettingsError, load_settings  # noqa: E402
from tests.support.blocked_imports import run_service_without  # noqa: E402
from tests.support.model_factory import english_like_query, english_like_text  # noqa: E402

BANNED = ("torch", "transformers", "sentence_transformers")
TORCH_ONLY_PINS = {"torch", "transformers", "sentence-transformers", "safetensors"}


def _with_onnx_graph(source: Path, target: Path) -> Path:
    """A private copy of a cached test model with onnx/model.onnx, as the real repository ships it."""
    shutil.copytree(source, target)
    export_onnx(target, target / "onnx" / "model.onnx")
    return target


@pytest.fixture(scope="session")
def alibi_onnx_model(alibi_model_dir, tmp_path_factory) -> Path:
    """The JinaBERT-like test model (ALiBi for 8,192 positions, GEGLU, remote code)."""
    return _with_onnx_graph(alibi_model_dir, tmp_path_factory.mktemp("flavour") / "alibi")


@pytest.fixture(scope="session")
def bert_onnx_model(bert_model_dir, tmp_path_factory) -> Path:
    return _with_onnx_graph(bert_model_dir, tmp_path_factory.mktemp("flavour") / "bert")


def _workload(n: int, seed: int) -> tuple[str, list[str]]:
    rng = random.Random(seed)
    words = [rng.choice([1, 5, 40, 120, 300, 700]) for _ in range(n)]
    return english_like_query(rng), [english_like_text(rng, count) for count in words]


# ---- no torch -------------------------------------------------------------------------------------------------

def test_the_slim_service_never_imports_torch(alibi_onnx_model):
    """Run in a fresh interpreter, with RERANK_FLAVOUR from the environment as the image sets it."""
    result, answers = run_service_without(BANNED, alibi_onnx_model, {"RERANK_FLAVOUR": "onnx", "HF_HUB_OFFLINE": "1"})
    assert answers is not None, result.stderr[-4000:]
    assert answers["banned_loaded"] == []
    assert answers["health"]["status"] == "healthy"
    assert (answers["info"]["flavour"], answers["info"]["backend"]) == ("onnx", "onnx")
    assert answers["info"]["activation"] == "sigmoid"
    assert len(answers["v1"]["results"]) == 2 and len(answers["v2"]["results"]) == 2
    assert len(answers["tei"]) == 2


def test_the_check_itself_catches_a_torch_import(alibi_onnx_model):
    """The same harness with the torch flavour must fail: the blocker is real."""
    result, _ = run_service_without(BANNED, alibi_onnx_model, {"RERANK_FLAVOUR": "torch"})
    assert result.returncode != 0 or '"status": "healthy"' not in result.stdout
    assert "imported torch" in (result.stdout + result.stderr) or "failed" in result.stdout


# ---- same scores, same tokens ------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["alibi", "bert"])
def test_onnx_flavour_scores_equal_the_torch_flavour(model, request):
    model_dir = request.getfixturevalue(f"{model}_onnx_model")
    query, documents = _workload(40, seed=21)
    onnx = build_engine(load_settings(RERANK_MODEL_PATH=str(model_dir), RERANK_FLAVOUR="onnx"))
    torch = build_engine(load_settings(RERANK_MODEL_PATH=str(model_dir), RERANK_FLAVOUR="torch",
                                       RERANK_PRECISION="fp32"))
    try:
        assert onnx.info["flavour"] == "onnx" and torch.info["flavour"] == "torch"
        assert onnx.info["precision"] == "fp32" and onnx.info["backend_reason"].startswith("auto: onnx-fp32")
        got, expected = onnx.engine.rerank_now(query, documents), torch.engine.rerank_now(query, documents)
        assert got.tokens == expected.tokens
        assert np.max(np.abs(got.relevance - expected.relevance)) <= 1e-4
        # the same order, except between documents whose scores are closer than that tolerance
        order = list(np.argsort(-expected.relevance, kind="stable"))
        position = {int(doc): rank for rank, doc in enumerate(np.argsort(-got.relevance, kind="stable"))}
        swapped = [(int(a), int(b)) for i, a in enumerate(order) for b in order[i + 1:]
                   if position[int(a)] > position[int(b)]]
        assert all(abs(expected.relevance[a] - expected.relevance[b]) <= 2e-4 for a, b in swapped), swapped
    finally:
        onnx.engine.stop()
        torch.engine.stop()


def test_both_flavours_apply_the_activation_a_sentence_transformers_folder_names(bert_onnx_model, tmp_path):
    """A folder saved by sentence-transformers 5 with Identity (modules.json + config_sentence_transformers.json
    naming it): both flavours serve raw logits, equal to CrossEncoder.predict's."""
    import torch
    from sentence_transformers import CrossEncoder

    folder = tmp_path / "st-saved"
    CrossEncoder(str(bert_onnx_model), activation_fn=torch.nn.Identity()).save_pretrained(str(folder))
    shutil.copytree(bert_onnx_model / "onnx", folder / "onnx")
    assert (folder / "modules.json").is_file()
    query, documents = _workload(12, seed=5)
    reference = CrossEncoder(str(folder), max_length=512, device="cpu").predict([(query, d) for d in documents])
    engines = {flavour: build_engine(load_settings(RERANK_MODEL_PATH=str(folder), RERANK_FLAVOUR=flavour,
                                                   RERANK_PRECISION="fp32")) for flavour in ("onnx", "torch")}
    try:
        assert engines["onnx"].info["activation"] == "identity"
        assert engines["torch"].info["activation"] == "torch.nn.modules.linear.Identity"
        assert (reference < 0).any()  # raw logits, not probabilities
        for loaded in engines.values():
            np.testing.assert_allclose(loaded.engine.rerank_now(query, documents).relevance, reference, atol=1e-4)
    finally:
        for loaded in engines.values():
            loaded.engine.stop()


@pytest.mark.parametrize("model", ["alibi", "bert"])
def test_tokenizers_encoder_gives_transformers_ids(model, request):
    from transformers import AutoTokenizer

    model_dir = request.getfixturevalue(f"{model}_model_dir")
    reference = PairEncoder(AutoTokenizer.from_pretrained(str(model_dir)), 128)
    encoder = TokenizersPairEncoder.from_model_dir(model_dir, 128)
    assert encoder.pad_token_id == reference.pad_token_id
    rng = random.Random(4)
    for _ in range(12):
        query = english_like_query(rng, rng.choice([2, 30, 150]))  # 150 words: the query gets cut too
        documents = [english_like_text(rng, rng.choice([1, 20, 90, 400])) + " Ünïcödé ÀÉÎ 東京" for _ in range(6)]
        for options in ({}, {"max_tokens_per_doc": 8}, {"max_length": 32}):
            got, expected = encoder.encode(query, documents, **options), reference.encode(query, documents, **options)
            assert got.input_ids == expected.input_ids, options
            assert got.token_type_ids == expected.token_type_ids, options
            assert max(got.lengths) <= options.get("max_length", 128)
        assert encoder.count_untruncated(query, documents) == reference.count_untruncated(query, documents)
    assert encoder.encode("q", []).input_ids == []


def test_tokenizer_config_lowercase_option_is_applied_like_transformers(bert_model_dir, tmp_path):
    """BertTokenizerFast rebuilds the normalizer from tokenizer_config.json's do_lower_case: so must we."""
    from transformers import AutoTokenizer

    model_dir = tmp_path / "cased"
    shutil.copytree(bert_model_dir, model_dir)
    config_file = model_dir / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config.update(do_lower_case=False, tokenizer_class="BertTokenizer")
    config_file.write_text(json.dumps(config))
    reference = PairEncoder(AutoTokenizer.from_pretrained(str(model_dir)), 64)
    encoder = TokenizersPairEncoder.from_model_dir(model_dir, 64)
    pair = ("Paris CAPITAL France", ["The Eiffel Tower IS in PARIS.", "bananas"])
    assert encoder.encode(*pair).input_ids == reference.encode(*pair).input_ids


def test_encoding_is_safe_under_concurrent_requests(alibi_model_dir):
    from concurrent.futures import ThreadPoolExecutor

    encoder = TokenizersPairEncoder.from_model_dir(alibi_model_dir, 64)
    query, documents = _workload(16, seed=2)
    expected = {None: encoder.encode(query, documents).input_ids,
                4: encoder.encode(query, documents, max_tokens_per_doc=4).input_ids}
    jobs = [None, 4] * 40
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda m: (m, encoder.encode(query, documents, max_tokens_per_doc=m).input_ids), jobs))
    assert all(ids == expected[m] for m, ids in got)


# ---- settings, precision, activation ------------------------------------------------------------------------


def test_flavour_follows_what_is_installed_unless_set(monkeypatch):
    import service.engine.factory as factory

    assert resolve_flavour(load_settings()) == "torch"
    monkeypatch.setattr(factory, "torch_installed", lambda: False)
    assert resolve_flavour(load_settings()) == "onnx"
    assert resolve_flavour(load_settings(RERANK_FLAVOUR="torch")) == "torch"
    with pytest.raises(SettingsError, match="RERANK_FLAVOUR=onnx serves ONNX Runtime only"):
        load_settings(RERANK_FLAVOUR="onnx", RERANK_BACKEND="torch")
    with pytest.raises(SettingsError, match="RERANK_FLAVOUR"):
        load_settings(RERANK_FLAVOUR="tensorflow")


def _verdict(folder: Path, int8: dict | None) -> None:
    from service import fidelity_gate

    options = {"torch-fp32": {"passed": True, "speedup_vs_reference": 1.0},
               "onnx-fp32": {"passed": True, "spearman": 1.0, "top10_overlap": 1.0, "max_abs_diff": 1e-5,
                             "speedup_vs_reference": 1.1}}
    if int8 is not None:
        options["onnx-int8"] = {"spearman": 0.9995, "top10_overlap": 0.99, "max_abs_diff": 0.004, **int8}
    fidelity_gate.write_verdict(folder, fidelity_gate.Verdict(options=options))


def test_auto_precision_takes_int8_only_when_the_verdict_passed_it(tmp_path):
    (tmp_path / "onnx").mkdir()
    precision, reason, info = choose_onnx_precision("auto", tmp_path)
    assert precision == "fp32" and "no fidelity.json" in reason and info["file"] is None
    _verdict(tmp_path, {"passed": False, "failed": ["spearman"], "speedup_vs_reference": 2.0})
    assert choose_onnx_precision("auto", tmp_path)[0] == "fp32"
    _verdict(tmp_path, {"passed": True, "speedup_vs_reference": 2.0})
    assert choose_onnx_precision("auto", tmp_path)[0] == "fp32"  # passed, but the file is not there
    (tmp_path / "onnx" / "model_quantized.onnx").write_bytes(b"")
    precision, reason, info = choose_onnx_precision("auto", tmp_path)
    assert precision == "int8" and "passed the gate" in reason and info["options"]["onnx-int8"]["passed"]
    _verdict(tmp_path, {"passed": True, "speedup_vs_reference": 0.9})  # passed, but not faster
    assert choose_onnx_precision("auto", tmp_path)[0] == "fp32"
    # Faster than torch fp32 but not than onnx-fp32 (1.1x), which is what this flavour runs without it.
    _verdict(tmp_path, {"passed": True, "speedup_vs_reference": 1.05})
    precision, reason, _ = choose_onnx_precision("auto", tmp_path)
    assert precision == "fp32" and "not faster than onnx-fp32 (1.05x against 1.10x" in reason, reason
    assert choose_onnx_precision("fp32", tmp_path)[0] == "fp32"
    _verdict(tmp_path, {"passed": False, "failed": ["spearman"], "speedup_vs_reference": 2.0})
    assert choose_onnx_precision("int8", tmp_path)[0] == "int8"  # explicit: the user's call
    (tmp_path / "fidelity.json").write_text("{not json")
    precision, reason, _ = choose_onnx_precision("auto", tmp_path)
    assert precision == "fp32" and "unusable verdict" in reason


def test_activation_follows_the_config_like_cross_encoder():
    assert activation_from_config({"num_labels": 1})[1] == "sigmoid"
    assert activation_from_config({"id2label": {"0": "a", "1": "b"}})[1] == "identity"
    named = {"sentence_transformers": {"activation_fn": "torch.nn.modules.linear.Identity"}}
    assert activation_from_config(named)[0] is identity
    legacy = {"sbert_ce_default_activation_function": "torch.nn.modules.activation.Sigmoid"}
    assert activation_from_config(legacy)[0] is sigmoid
    logits = np.array([-100.0, 0.0, 3.0], dtype=np.float32)
    np.testing.assert_allclose(sigmoid(logits), 1 / (1 + np.exp(-logits.astype(np.float64))), rtol=1e-6, atol=1e-40)
    assert sigmoid(logits)[0] > 0  # as torch.sigmoid: tiny, not 0
    with pytest.raises(ValueError, match="mymodule.Softplus.*torch flavour"):
        activation_from_config({"sentence_transformers": {"activation_fn": "mymodule.Softplus"}})


def test_a_folder_saved_by_sentence_transformers_names_its_activation(tmp_path):
    """config_sentence_transformers.json names the activation, and wins, only next to a modules.json (as in
    CrossEncoder); the torch flavour follows the same rule (tests/service/test_model_loading.py)."""
    named = {"sentence_transformers": {"activation_fn": "torch.nn.modules.activation.Tanh"}}
    (tmp_path / "config_sentence_transformers.json").write_text(
        json.dumps({"activation_fn": "torch.nn.modules.linear.Identity"}))
    assert sentence_transformers_config(folder_json(tmp_path), "m") is None
    assert activation_from_config(named, sentence_transformers_config(folder_json(tmp_path), "m"))[1] == "tanh"
    (tmp_path / "modules.json").write_text("[]")
    with pytest.raises(NotACrossEncoderError, match="not a single Transformer module at its root"):
        sentence_transformers_config(folder_json(tmp_path), "m")
    (tmp_path / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.base.modules.transformer.Transformer"}]))
    assert activation_from_config(named, sentence_transformers_config(folder_json(tmp_path), "m"))[1] == "identity"
    (tmp_path / "config_sentence_transformers.json").unlink()
    assert sentence_transformers_config(folder_json(tmp_path), "m") == {}
    assert activation_from_config({"num_labels": 1}, {})[1] == "sigmoid"


def test_missing_graph_and_two_label_models_are_refused_with_the_fix(bert_model_dir, bert_onnx_model, tmp_path):
    with pytest.raises(ModelNotAvailableError, match=r"needs .*onnx/model\.onnx.*export_onnx\.py"):
        build_engine(load_settings(RERANK_MODEL_PATH=str(bert_model_dir), RERANK_FLAVOUR="onnx"))
    two_labels = tmp_path / "two"
    shutil.copytree(bert_onnx_model, two_labels)
    config = json.loads((two_labels / "config.json").read_text())
    config["id2label"] = {"0": "no", "1": "yes"}
    (two_labels / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelNotAvailableError, match="2 output labels"):
        build_engine(load_settings(RERANK_MODEL_PATH=str(two_labels), RERANK_FLAVOUR="onnx"))


def test_slim_requirements_pin_exactly_what_service_txt_pins():
    def pins(name: str) -> dict[str, str]:
        found = {}
        for line in (PROJECT_ROOT / "requirements" / name).read_text().splitlines():
            if match := re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line):
                found[match.group(1).lower().replace("_", "-")] = match.group(2)
        return found

    slim, full = pins("service-onnx.txt"), pins("service.txt")
    assert not TORCH_ONLY_PINS & set(slim)
    assert {name: full.get(name) for name in slim} == slim, "a slim pin differs from service.txt"
    missing = set(full) - TORCH_ONLY_PINS - set(slim)
    assert not missing, f"service.txt pins {sorted(missing)}, which the slim image would lack"


# ---- the bundle the runtime-onnx image serves ------------------------------------------------------------------


def _bundle(model_dir: Path, out_dir: Path, **options):
    from service.calibration import calibration_set
    from service.onnx_bundle import build_bundle

    return build_bundle(model_dir, out_dir, calibration=calibration_set(n_queries=3, per_query=12), **options)


def test_bundle_prefers_fused_attention_and_serves_torch_scores(alibi_onnx_model, tmp_path):
    report = _bundle(alibi_onnx_model, tmp_path / "bundle")
    assert (report.graph_source, report.attention) == ("exported", "fused"), report.why
    assert "repository's onnx/model.onnx matches" in report.why  # and why it was not the one used
    import onnx

    graph = onnx.load(str(tmp_path / "bundle" / "onnx" / "model.onnx"), load_external_data=False)
    layers = json.loads((alibi_onnx_model / "config.json").read_text())["num_hidden_layers"]
    assert sum(node.op_type == "MultiHeadAttention" for node in graph.graph.node) == layers  # one per layer
    # the ALiBi bias (12 heads x 512 x 512 floats) is computed by the graph, not stored in the file
    assert not [node.name for node in graph.graph.node if node.op_type == "Constant"
                and math.prod(node.attribute[0].t.dims) > 4096]
    assert (tmp_path / "bundle" / "onnx" / "model.onnx").stat().st_size < 1_000_000
    verdict = json.loads((tmp_path / "bundle" / "fidelity.json").read_text())
    assert verdict["options"]["onnx-fp32"]["passed"] is True
    assert verdict["thresholds"] == {"spearman": 0.999, "top10_overlap": 0.98, "max_abs_diff": 0.01}
    assert set(verdict["options"]) == {"torch-fp32", "onnx-fp32", "onnx-int8"}
    assert verdict["format"] == 1 and verdict["model"]["weights"] == []
    assert {f["file"] for f in verdict["model"]["onnx_files"]} >= {"onnx/model.onnx", "onnx/model.onnx.data"}
    int8_shipped = (tmp_path / "bundle" / "onnx" / "model_quantized.onnx").exists()
    assert int8_shipped == verdict["options"]["onnx-int8"]["passed"]
    # weights live in the page-aligned data file next to the graph
    assert (tmp_path / "bundle" / "onnx" / "model.onnx.data").stat().st_size > 0
    assert not (tmp_path / "bundle" / "model.safetensors").exists()

    query, documents = _workload(24, seed=8)
    served = build_engine(load_settings(RERANK_MODEL_PATH=str(tmp_path / "bundle"), RERANK_FLAVOUR="onnx",
                                        RERANK_PRECISION="fp32"))
    torch = build_engine(load_settings(RERANK_MODEL_PATH=str(alibi_onnx_model), RERANK_FLAVOUR="torch",
                                       RERANK_PRECISION="fp32"))
    try:
        got, expected = served.engine.rerank_now(query, documents), torch.engine.rerank_now(query, documents)
        assert got.tokens == expected.tokens
        assert np.max(np.abs(got.relevance - expected.relevance)) <= 1e-4
    finally:
        served.engine.stop()
        torch.engine.stop()


def test_the_bundle_gate_scores_and_times_graphs_batched_as_the_onnx_flavour_serves(alibi_onnx_model):
    """The speed-up fidelity.json records for an ONNX graph is the one `auto` chooses by: measured with the
    batch budget and padding the ONNX flavour serves with, not with a batch size of the builder's own."""
    from service.onnx_bundle import onnx_engine_for

    served = build_engine(load_settings(RERANK_MODEL_PATH=str(alibi_onnx_model), RERANK_FLAVOUR="onnx",
                                        RERANK_PRECISION="fp32"))
    served.engine.stop()
    judged = onnx_engine_for(alibi_onnx_model, alibi_onnx_model / "onnx" / "model.onnx", served.info["max_length"])
    assert (judged.batch_tokens, judged.pad_multiple) == (served.info["batch_tokens"], served.info["pad_multiple"])
    assert (judged.batch_tokens, judged.pad_multiple) == (2048, 16)


def test_bundle_reuses_a_matching_repository_graph(alibi_onnx_model, bert_onnx_model, tmp_path):
    report = _bundle(alibi_onnx_model, tmp_path / "alibi", fuse_attention=False, quantize=False)
    assert (report.graph_source, report.attention) == ("repository", "unfused"), report.why
    report = _bundle(bert_onnx_model, tmp_path / "bert", quantize=False)  # nothing to fuse in plain BERT
    assert report.graph_source == "repository", report.why


def test_bundle_exports_when_the_repository_graph_does_not_match(alibi_onnx_model, bert_onnx_model, tmp_path):
    # a graph capped at 64 tokens cannot take the 512-token pairs the service feeds
    short = tmp_path / "short"
    shutil.copytree(alibi_onnx_model, short)
    export_onnx(short, short / "onnx" / "model.onnx", max_length=64)
    report = _bundle(short, tmp_path / "short-bundle", fuse_attention=False, quantize=False)
    assert report.graph_source == "exported" and "512 tokens" in report.why, report.why
    # another model's graph: loads and has the right inputs, but its scores fail the gate
    foreign = tmp_path / "foreign"
    shutil.copytree(alibi_onnx_model, foreign)
    shutil.copyfile(bert_onnx_model / "onnx" / "model.onnx", foreign / "onnx" / "model.onnx")
    report = _bundle(foreign, tmp_path / "foreign-bundle", fuse_attention=False, quantize=False)
    assert report.graph_source == "exported" and "fail the gate" in report.why, report.why
    verdict = json.loads((tmp_path / "foreign-bundle" / "fidelity.json").read_text())
    assert verdict["options"]["onnx-fp32"]["passed"] is True
    graph = verdict["model"]["onnx_graph"]
    assert (graph["source"], graph["attention"]) == ("exported", "unfused")


def test_the_bundle_times_fp32_and_int8_again_in_reverse_order_and_keeps_each_best(monkeypatch, tmp_path):
    """auto picks int8 over onnx-fp32 by their speeds: one timing each, fp32 always first, ranked them by the build
    machine's slow spells (service/fidelity_gate.py); the second pass runs int8 first."""
    from service import onnx_bundle

    order = []
    timings = {"fp32": [20.0], "int8": [16.0]}  # second pass: int8 first, then fp32 (its first timing was slow)

    def score(precision, calibration):  # the "engine" is the precision it was built for
        order.append(precision)
        return [], timings[precision].pop(0)

    monkeypatch.setattr(onnx_bundle, "onnx_engine_for", lambda folder, model_file, max_length, precision: precision)
    monkeypatch.setattr(onnx_bundle.fidelity_gate, "_score_calibration", score)
    gate = object.__new__(onnx_bundle.Gate)
    gate.calibration, gate.max_length, gate.reference_seconds = None, 512, 32.0
    fp32 = onnx_bundle.Scored("onnx-fp32", {"passed": True, "seconds": 30.0, "timings": [30.0],
                                            "speedup_vs_reference": round(32 / 30, 3)})
    int8 = onnx_bundle.Scored("onnx-int8", {"passed": True, "seconds": 17.0, "timings": [17.0],
                                            "speedup_vs_reference": round(32 / 17, 3)})
    gate.time_again(tmp_path, [(fp32, tmp_path / "model.onnx", "fp32"), (int8, tmp_path / "q.onnx", "int8")])
    assert order == ["int8", "fp32"]
    assert fp32.entry["timings"] == [30.0, 20.0] and fp32.entry["seconds"] == 20.0
    assert fp32.entry["speedup_vs_reference"] == 1.6
    assert int8.entry["timings"] == [17.0, 16.0] and int8.entry["speedup_vs_reference"] == 2.0
    # A re-timing that fails leaves the first one standing.
    def gone(*args, **kwargs):
        raise OSError("the graph file is gone")

    monkeypatch.setattr(onnx_bundle, "onnx_engine_for", gone)
    gate.time_again(tmp_path, [(fp32, tmp_path / "model.onnx", "fp32")])
    assert fp32.entry["timings"] == [30.0, 20.0] and fp32.entry["seconds"] == 20.0
