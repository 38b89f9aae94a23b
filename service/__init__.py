"""Cross-encoder reranker service (jinaai/jina-reranker-v1-tiny-en by default)."""

__version__ = "2.0.0"
