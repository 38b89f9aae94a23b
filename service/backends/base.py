from __future__ import annotations

from typing import Protocol

import numpy as np


class Backend(Protocol):
    """One forward pass: padded int64 features in, float32 logits of shape (batch, num_labels) out."""

    name: str
    precision: str

    def forward(self, features: dict[str, np.ndarray]) -> np.ndarray: ...
