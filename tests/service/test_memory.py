"""service/memory.py: handing back the pages of weights nothing reads any more (bf16's replaced fp32 weights), and
the allocator and per-shape cache bounds the torch engine sets."""

from __future__ import annotations

import mmap
import os
import sys

import numpy as np
import pytest
import torch

from service.backends import bf16
from service.engine.factory import build_engine
from service.memory import (
    ONEDNN_CACHE_CAPACITY,
    ONEDNN_CACHE_VARIABLES,
    configure_allocator,
    drop_file_pages,
    file_mappings,
    whole_pages,
)
from service.model_store import ModelSource, load_reranker
from service.settings import load_settings
from tests.support.proc import mapping_rss_kib

PAGE = os.sysconf("SC_PAGE_SIZE")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise and /proc are Linux's")


def test_whole_pages_inside_a_file_mapping_and_outside_what_is_still_used():
    mappings = [(10 * PAGE, 30 * PAGE)]
    # a tensor from mid page 11 to mid page 15: whole pages 12, 13, 14
    assert whole_pages([(11 * PAGE + 8, 4 * PAGE)], [], mappings, PAGE) == [(12 * PAGE, 3 * PAGE)]
    # a tensor still in use on page 13 keeps that page (and only it)
    assert whole_pages([(11 * PAGE + 8, 4 * PAGE)], [(13 * PAGE + 100, 16)], mappings, PAGE) == [
        (12 * PAGE, PAGE), (14 * PAGE, PAGE)]
    # less than a whole page, or outside any file mapping (heap memory): nothing
    assert whole_pages([(12 * PAGE + 1, PAGE)], [], mappings, PAGE) == []
    assert whole_pages([(40 * PAGE, 4 * PAGE)], [], mappings, PAGE) == []
    assert whole_pages([(28 * PAGE, 4 * PAGE)], [], mappings, PAGE) == []  # runs past the mapping's end


def test_file_mappings_are_the_ones_with_a_path_and_an_inode():
    maps = ("7f17eba00000-7f17f3812000 rw-p 00000000 fe:00 5384480    /models/m/model.safetensors\n"
            "555f37a17000-555f37a38000 rw-p 00000000 00:00 0          [heap]\n"
            "7ffd0000-7ffd1000 rw-p 00000000 00:00 0 \n")
    assert file_mappings(maps) == [(0x7F17EBA00000, 0x7F17F3812000)]


def test_dropped_pages_leave_rss_and_read_back_from_the_file(tmp_path):
    path = tmp_path / "weights.bin"
    data = np.arange(8 * PAGE // 4, dtype=np.float32)
    data.tofile(path)
    with path.open("rb+") as handle:
        mapped = mmap.mmap(handle.fileno(), 0, flags=mmap.MAP_PRIVATE)  # as torch maps safetensors
    view = np.frombuffer(mapped, dtype=np.float32)
    address = view.ctypes.data
    assert view.sum() == data.sum()  # every page resident now
    before = mapping_rss_kib(address)

    kept = (address + 5 * PAGE, 16)  # something still reads page 5
    dropped = drop_file_pages([(address + PAGE, 6 * PAGE)], [kept])
    assert dropped == 5 * PAGE  # pages 1-4 and 6
    assert before - mapping_rss_kib(address) == 5 * PAGE // 1024
    np.testing.assert_array_equal(view, data)  # read again: the file's bytes, unchanged
    del view
    mapped.close()


def test_bf16_hands_back_the_fp32_weights_it_replaced_and_scores_the_same(alibi_model_dir, monkeypatch):
    features = {"input_ids": torch.tensor([[1, 5, 9, 2, 7, 3], [1, 4, 2, 8, 3, 0]]),
                "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0]])}

    def converted(drop: bool) -> tuple[torch.nn.Module, dict, int, int]:
        loaded, _ = load_reranker(ModelSource("x", path=alibi_model_dir), max_length=64, local_files_only=True)
        model = loaded.model.eval()
        with torch.inference_mode():
            model(**features)  # touches every weight's pages, as the warm-up does
        address = model.get_input_embeddings().weight.data_ptr()
        assert any(start <= address < end for start, end in file_mappings()), "the weights are not mapped"
        before = mapping_rss_kib(address)
        if not drop:
            monkeypatch.setattr(bf16, "drop_file_pages", lambda replaced, still_used: 0)
        report = bf16.convert_to_bf16(model)
        monkeypatch.undo()
        return model, report, before, mapping_rss_kib(address)

    model, report, before, after = converted(drop=True)
    reference, reference_report, _, _ = converted(drop=False)
    assert report["bf16_linear_layers"] == reference_report["bf16_linear_layers"] > 0
    assert report["replaced_fp32_mib_released"] > 0 and reference_report["replaced_fp32_mib_released"] == 0
    released_kib = before - after
    assert released_kib > 0 and abs(released_kib - report["replaced_fp32_mib_released"] * 1024) <= 1
    with torch.inference_mode():
        torch.testing.assert_close(model(**features).logits, reference(**features).logits, rtol=0, atol=0)


def test_weights_that_are_not_file_mapped_are_left_alone():
    model = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.Linear(1024, 256))  # heap memory
    assert bf16.convert_to_bf16(model)["replaced_fp32_mib_released"] == 0
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())


@pytest.fixture
def no_cache_variables(monkeypatch):
    """Neither cache variable set; whatever a test (or the engine it builds) sets is undone after it."""
    for variable in ONEDNN_CACHE_VARIABLES:
        monkeypatch.setenv(variable, "")  # recorded first: delenv alone records nothing for an unset variable
        monkeypatch.delenv(variable)


def test_the_onednn_and_ideep_caches_are_capped_unless_the_operator_set_them(no_cache_variables, monkeypatch):
    monkeypatch.setenv("LRU_CACHE_CAPACITY", "32")  # an operator's value wins
    applied = configure_allocator()
    assert os.environ["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "8"
    assert (applied["onednn_primitive_cache"], applied["ideep_op_cache"]) == (8, 32)
    assert os.environ["LRU_CACHE_CAPACITY"] == "32"


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_torch_engine_sizes_the_caches_for_the_precision_it_serves(alibi_model_dir, precision,
                                                                       no_cache_variables):
    # bf16's packed layers see bucketed row counts, whose primitives (costly to compile in bf16) must stay cached
    loaded = build_engine(load_settings(RERANK_MODEL_PATH=str(alibi_model_dir), RERANK_PRECISION=precision))
    try:
        expected = ONEDNN_CACHE_CAPACITY[precision]
        assert expected == (64 if precision == "bf16" else 8)
        memory = loaded.info["memory"]
        assert (memory["onednn_primitive_cache"], memory["ideep_op_cache"]) == (expected, expected)
        assert all(os.environ[variable] == str(expected) for variable in ONEDNN_CACHE_VARIABLES)
    finally:
        loaded.engine.stop()
