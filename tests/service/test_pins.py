"""Why transformers stays at 4.57.x and sentence-transformers at 5.x: JinaBERT's remote code needs these
names, all removed in transformers 5.0. If an upgrade removes one, this fails before users do."""

from __future__ import annotations

import importlib
import re
from importlib.metadata import version

from service.settings import PROJECT_ROOT


def test_jinabert_imports_still_exist():
    assert importlib.import_module("transformers.onnx").OnnxConfig
    assert importlib.import_module("transformers.pytorch_utils").find_pruneable_heads_and_indices


def test_jinabert_model_methods_still_exist():
    from transformers import BertConfig, PreTrainedModel

    for name in ("get_extended_attention_mask", "get_head_mask", "invert_attention_mask"):
        assert callable(getattr(PreTrainedModel, name, None)), name
    assert BertConfig().is_decoder is False


def _pins() -> dict[str, str]:
    pins = {}
    for name in ("torch.txt", "service.txt", "dev.txt"):
        for line in (PROJECT_ROOT / "requirements" / name).read_text().splitlines():
            match = re.match(r"^([A-Za-z0-9_.-]+)==([^\s;#]+)", line)
            if match:
                pins[match.group(1).lower().replace("_", "-")] = match.group(2)
    return pins


def test_installed_versions_are_the_pinned_ones():
    pins = _pins()
    for package in ("torch", "transformers", "sentence-transformers", "tokenizers", "huggingface-hub"):
        assert version(package).split("+")[0] == pins[package], package
    assert pins["transformers"].startswith("4.") and pins["sentence-transformers"].startswith("5.")
