"""Length-aware batching: sort pairs by token length and cut batches by a token budget, so that
padding stays small and the attention cost of one forward pass stays bounded."""

from __future__ import annotations

from collections.abc import Sequence

# Attention (and the ALiBi bias added to it) costs batch x heads x seq^2: beyond this many padded
# tokens per sequence the quadratic term, not the token count, is what bounds a batch.
QUADRATIC_FROM = 256


def plan_batches(lengths: Sequence[int], token_budget: int) -> list[list[int]]:
    """Indices of `lengths` grouped into batches, longest first.

    A batch holds n sequences padded to its longest, L: it is closed before n x L exceeds
    `token_budget`, or n x L x L exceeds `token_budget` x QUADRATIC_FROM. A single sequence always
    fits (it is never split)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in order:
        length = max(1, lengths[index])
        longest_if_added = max(longest, length)
        size = len(current) + 1
        if current and (size * longest_if_added > token_budget
                        or size * longest_if_added * longest_if_added > token_budget * QUADRATIC_FROM):
            batches.append(current)
            current, longest_if_added = [], length
        current.append(index)
        longest = longest_if_added
    if current:
        batches.append(current)
    return batches


def padding_ratio(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Padded tokens / real tokens (1.0 means no padding at all)."""
    real = sum(lengths) or 1
    padded = sum(len(batch) * max(lengths[i] for i in batch) for batch in batches if batch)
    return padded / real
