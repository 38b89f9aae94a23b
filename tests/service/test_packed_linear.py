"""service/backends/packed_linear.py: the Linear layers run by oneDNN on weights packed once, kept only when
each packed layer gives its original's output on the warm-up batch, reported in the log and /info; the
replaced fp32 weights' pages handed back; RERANK_LINEAR chooses."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from service.backends import packed_linear
from service.backends.attention import sample_features
from service.backends.bf16 import convert_to_bf16
from service.backends.packed_linear import PackedLinear, PackedLinearUnavailable, pack_linears
from service.backends.torch_backend import TorchBackend
from service.engine.factory import build_engine
from service.model_store import ModelNotAvailableError, ModelSource, load_reranker
from service.settings import SettingsError, load_settings
from tests.support.proc import mapping_rss_kib

needs_onednn = pytest.mark.skipif(packed_linear.onednn_unavailable_reason() is not None,
                                  reason=f"{packed_linear.onednn_unavailable_reason()}")
QUERY = "how does the pod affect the memory limit"
DOCS = ["The pod restarts when the memory limit is too high.", "Bees forage in spring.",
        "A readiness probe means the node rarely drains on its own, " * 8]


def _loaded(model_dir):
    loaded, _ = load_reranker(ModelSource("x", path=model_dir), max_length=128, local_files_only=True)
    return loaded


def _features(loaded) -> dict[str, np.ndarray]:
    encoded = loaded.tokenizer([QUERY] * len(DOCS), DOCS, padding=True, truncation=True, max_length=128,
                               return_tensors="np")
    return {name: np.asarray(array, dtype=np.int64) for name, array in encoded.items()}


def _linear_count(model: torch.nn.Module) -> tuple[int, int]:
    modules = list(model.modules())
    return (sum(type(m) is torch.nn.Linear for m in modules), sum(isinstance(m, PackedLinear) for m in modules))


@needs_onednn
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_every_linear_is_packed_and_scores_like_aten(alibi_model_dir, precision):
    reference_model = _loaded(alibi_model_dir)
    loaded = _loaded(alibi_model_dir)
    linears, _ = _linear_count(loaded.model)
    sample = sample_features(loaded.tokenizer, 128)
    reference = TorchBackend(reference_model.model, precision=precision, sample=sample, linear="aten")
    backend = TorchBackend(loaded.model, precision=precision, sample=sample, linear="onednn")

    report = backend.linear_report
    assert (report.path, report.reason, report.layers) == ("onednn", "verified", linears)
    assert _linear_count(loaded.model) == (0, linears)
    assert _linear_count(reference_model.model) == (linears, 0)
    assert report.max_layer_error <= packed_linear.LAYER_TOLERANCE
    # a bf16 model's layers see bucketed row counts (its primitives are costly to compile again); fp32 stays exact
    assert report.row_bucket == (packed_linear.BF16_ROW_BUCKET if precision == "bf16" else 0)
    assert ("rows padded to multiples of" in report.line) == (precision == "bf16")
    assert {m.row_bucket for m in loaded.model.modules() if isinstance(m, PackedLinear)} == {report.row_bucket}
    features = _features(loaded)
    np.testing.assert_allclose(backend.forward(features), reference.forward(features), rtol=0, atol=1e-4)
    if precision == "bf16":  # bf16's cast-in / cast-out hooks travelled with the layers
        dtypes = {m.weight.dtype for m in loaded.model.modules() if isinstance(m, PackedLinear)}
        assert dtypes == {torch.float32, torch.bfloat16}
        assert backend.forward(features).dtype == np.float32


@needs_onednn
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")
def test_the_replaced_fp32_weights_pages_are_handed_back(alibi_model_dir):
    loaded = _loaded(alibi_model_dir)
    features = _features(loaded)
    plain = TorchBackend(loaded.model, sample=sample_features(loaded.tokenizer, 128), linear="aten")
    expected = plain.forward(features)  # touches every weight's pages, as the warm-up does
    address = loaded.model.get_input_embeddings().weight.data_ptr()  # the embeddings stay in the mapping
    before = mapping_rss_kib(address)

    report = pack_linears(loaded.model, plain.forward, sample_features(loaded.tokenizer, 128), mode="onednn")

    released_kib = before - mapping_rss_kib(address)
    assert report.replaced_mib_released > 0
    assert abs(released_kib - report.replaced_mib_released * 1024) <= 1
    np.testing.assert_allclose(plain.forward(features), expected, rtol=0, atol=1e-4)  # nothing read a dropped page


@needs_onednn
def test_a_packed_layer_that_computes_something_else_is_undone(alibi_model_dir, monkeypatch):
    loaded = _loaded(alibi_model_dir)
    features = _features(loaded)
    plain = TorchBackend(loaded.model, sample=sample_features(loaded.tokenizer, 128), linear="aten")
    expected = plain.forward(features)
    original = PackedLinear.forward
    monkeypatch.setattr(PackedLinear, "forward", lambda self, x: original(self, x) * 1.01)

    report = pack_linears(loaded.model, plain.forward, sample_features(loaded.tokenizer, 128), mode="onednn")

    assert report.path == "aten" and report.layers == 0
    assert "output by 1.0e-02 of its largest value" in report.reason and "layers restored" in report.reason
    assert report.line.startswith("linear: aten (packing changed ")
    assert _linear_count(loaded.model)[1] == 0
    np.testing.assert_array_equal(plain.forward(features), expected)


@needs_onednn
def test_a_packed_forward_that_fails_is_undone(alibi_model_dir, monkeypatch):
    loaded = _loaded(alibi_model_dir)
    plain = TorchBackend(loaded.model, sample=sample_features(loaded.tokenizer, 128), linear="aten")

    def broken(self, x):
        raise RuntimeError("no kernel for this CPU")

    monkeypatch.setattr(PackedLinear, "forward", broken)
    report = pack_linears(loaded.model, plain.forward, sample_features(loaded.tokenizer, 128), mode="auto",
                          machine="x86_64")
    assert report.path == "aten"
    assert report.reason == "packed forward failed (RuntimeError: no kernel for this CPU); layers restored"
    assert _linear_count(loaded.model)[1] == 0


def test_where_onednn_cannot_run_auto_keeps_aten_and_onednn_is_refused(monkeypatch):
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 1))
    x = torch.randn(3, 8)

    def forward(features):
        with torch.inference_mode():
            return model(x).numpy()

    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    report = pack_linears(model, forward, {}, mode="auto", machine="x86_64")
    assert report.line == "linear: aten (this torch build has no oneDNN (mkldnn))"
    with pytest.raises(PackedLinearUnavailable, match="RERANK_LINEAR=onednn: this torch build has no oneDNN"):
        pack_linears(model, forward, {}, mode="onednn")
    assert pack_linears(model, forward, {}, mode="auto", device="cuda").reason.startswith("device cuda")
    assert _linear_count(model) == (2, 0)


@needs_onednn
def test_auto_packs_on_x86_64_only_and_onednn_anywhere():
    def fresh():
        model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.GELU(), torch.nn.Linear(4, 1)).eval()
        x = torch.randn(3, 8)

        def forward(features):
            with torch.inference_mode():
                return model(x).numpy()
        return model, forward

    model, forward = fresh()
    report = pack_linears(model, forward, {}, mode="auto", machine="aarch64")
    assert report.line == "linear: aten (auto: not measured on aarch64 (RERANK_LINEAR=onednn packs anyway))"
    assert _linear_count(model) == (2, 0)
    for mode, machine in (("auto", "x86_64"), ("onednn", "aarch64")):
        model, forward = fresh()
        expected = forward({})
        report = pack_linears(model, forward, {}, mode=mode, machine=machine)
        assert (report.line, report.layers) == ("linear: onednn (verified)", 2)
        np.testing.assert_allclose(forward({}), expected, rtol=1e-5, atol=1e-6)
    model, forward = fresh()
    assert pack_linears(model, forward, {}, mode="aten").line == "linear: aten (RERANK_LINEAR=aten)"
    assert pack_linears(model, forward, None, mode="onednn").reason == "no warm-up batch to verify packing on"


@needs_onednn
@pytest.mark.parametrize("setting, line", [("auto", "linear: onednn (verified)"),
                                           ("aten", "linear: aten (RERANK_LINEAR=aten)")])
def test_the_engine_logs_and_reports_the_linear_path(alibi_model_dir, setting, line, caplog, monkeypatch):
    monkeypatch.setattr(packed_linear.platform, "machine", lambda: "x86_64")
    with caplog.at_level(logging.INFO, logger="service.backend"):
        loaded = build_engine(load_settings(RERANK_MODEL_PATH=str(alibi_model_dir), RERANK_PRECISION="fp32",
                                            RERANK_LINEAR=setting))
    try:
        assert loaded.info["linear"] == line and line in caplog.text
        detail = loaded.info["linear_detail"]
        assert detail["path"] == line.split()[1]
        assert (detail["packed_layers"] > 0) == (setting == "auto")
        assert len(loaded.engine.rerank_now(QUERY, DOCS).relevance) == len(DOCS)
    finally:
        loaded.engine.stop()


def test_rerank_linear_onednn_where_it_cannot_run_stops_the_start_with_the_fix(alibi_model_dir, monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    with pytest.raises(ModelNotAvailableError, match="RERANK_LINEAR=onednn: .*use RERANK_LINEAR=auto or aten"):
        build_engine(load_settings(RERANK_MODEL_PATH=str(alibi_model_dir), RERANK_PRECISION="fp32",
                                   RERANK_LINEAR="onednn"))


def test_rerank_linear_is_validated():
    with pytest.raises(SettingsError, match="RERANK_LINEAR"):
        load_settings(RERANK_LINEAR="mkl")


@needs_onednn
def test_bf16_conversion_then_packing_keeps_bf16_inside_and_fp32_outside():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Linear(32, 4)).eval()
    convert_to_bf16(model)
    x = torch.randn(5, 16)
    layer = PackedLinear(model[0])
    assert layer.weight.dtype == torch.bfloat16
    with torch.inference_mode():
        out = layer(x)  # fp32 in: the cast-in hook travelled with the layer
        assert out.dtype == torch.float32  # and the cast-out one
        torch.testing.assert_close(out, model[0](x), rtol=0, atol=0)


def _linear_input_shapes(run) -> list[list[int]]:
    """The input shape oneDNN's packed Linear op was called with, for each call `run` makes."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True) as profile:
        run()
    return [event.input_shapes[0] for event in profile.events() if event.name == "mkldnn::_linear_pointwise"]


@needs_onednn
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_bucketed_layer_hands_onednn_padded_rows_and_gives_the_layers_output(dtype):
    linear = torch.nn.Linear(24, 40).eval().to(dtype)
    exact, bucketed = PackedLinear(linear), PackedLinear(linear, row_bucket=16)
    with torch.inference_mode():
        for shape in [(3, 7, 24), (2, 8, 24), (1, 24), (5, 24)]:  # 21, 16 (a multiple already), 1 and 5 rows
            x = torch.randn(*shape).to(dtype)
            rows = x.numel() // 24
            got = bucketed(x)
            assert got.shape == (*shape[:-1], 40) and got.dtype == dtype
            torch.testing.assert_close(got, exact(x), rtol=0, atol=0)  # the zero rows do not change the real ones
            torch.testing.assert_close(got.float(), linear(x).float(), rtol=1e-5, atol=1e-5)
            padded = [list(shape)] if rows % 16 == 0 else [[-(-rows // 16) * 16, 24]]  # a multiple: as it is
            assert _linear_input_shapes(lambda: bucketed(x)) == padded
            assert _linear_input_shapes(lambda: exact(x)) == [list(shape)]
        # a non-contiguous input (a transposed batch) is padded the same way
        x = torch.randn(7, 3, 24).to(dtype).transpose(0, 1)
        torch.testing.assert_close(bucketed(x), exact(x.contiguous()), rtol=0, atol=0)
    with pytest.raises(ValueError, match="row_bucket"):
        PackedLinear(linear, row_bucket=-1)
