"""Fixtures shared by every test folder: the small test models (built once, cached on disk under
.cache/test-models so that test runs, image builds and benchmarks reuse them)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.model_factory import cached_model

PROJECT_ROOT = Path(__file__).resolve().parent.parent
MODEL_CACHE = Path(os.environ.get("RERANK_TEST_MODEL_CACHE", PROJECT_ROOT / ".cache" / "test-models"))


@pytest.fixture(scope="session")
def model_cache() -> Path:
    return MODEL_CACHE


@pytest.fixture(scope="session")
def bert_model_dir(model_cache: Path) -> Path:
    """BertForSequenceClassification, one logit, learned position embeddings (512)."""
    return cached_model("bert", model_cache)


@pytest.fixture(scope="session")
def alibi_model_dir(model_cache: Path) -> Path:
    """JinaBERT-like remote-code model: ALiBi sized for 8,192 positions, GEGLU, auto_map to local .py files."""
    return cached_model("alibi", model_cache)
