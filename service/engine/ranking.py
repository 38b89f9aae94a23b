from __future__ import annotations

from collections.abc import Sequence


def rank(scores: Sequence[float], top_n: int | None = None) -> list[int]:
    """Indices by score, highest first; equal scores keep input order. top_n above len returns all."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    return order if top_n is None else order[:top_n]
