"""Turn (query, documents) into token ids exactly as sentence-transformers' CrossEncoder does
(`truncation="longest_first"` at the model's max length), without padding: batching pads later."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EncodedPairs:
    """Token ids of one request's pairs, unpadded."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]] | None

    @property
    def lengths(self) -> list[int]:
        return [len(ids) for ids in self.input_ids]

    def __len__(self) -> int:
        return len(self.input_ids)


class PairEncoder:
    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._special_pair_tokens = tokenizer.num_special_tokens_to_add(pair=True)

    def encode(self, query: str, documents: list[str], *, max_length: int | None = None,
               max_tokens_per_doc: int | None = None) -> EncodedPairs:
        limit = min(max_length or self.max_length, self.max_length)
        truncation = "longest_first"
        if max_tokens_per_doc is not None:
            query_tokens = len(self.tokenizer(query, add_special_tokens=False)["input_ids"])
            per_doc_limit = query_tokens + max_tokens_per_doc + self._special_pair_tokens
            if per_doc_limit < limit:  # the query fits: cut only the documents
                limit, truncation = per_doc_limit, "only_second"
        encoded = self.tokenizer(
            [query] * len(documents),
            documents,
            truncation=truncation,
            max_length=limit,
            padding=False,
            return_attention_mask=False,
        )
        return EncodedPairs(encoded["input_ids"], encoded.get("token_type_ids"))

    def count_untruncated(self, query: str, documents: list[str]) -> list[int]:
        """Token counts of each pair before truncation (for callers that refuse to truncate)."""
        encoded = self.tokenizer([query] * len(documents), documents, truncation=False, padding=False,
                                 return_attention_mask=False, return_token_type_ids=False)
        return [len(ids) for ids in encoded["input_ids"]]


def pad_batch(pairs: list[tuple[list[int], list[int] | None]], pad_token_id: int,
              length: int | None = None) -> dict[str, np.ndarray]:
    """Right-pad a batch into int64 arrays: input_ids, attention_mask and (if given) token_type_ids, to the
    longest pair or to `length` if that is longer (padding is masked: scores do not change)."""
    longest = max([len(ids) for ids, _ in pairs] + [length or 0])
    input_ids = np.full((len(pairs), longest), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(pairs), longest), dtype=np.int64)
    with_types = pairs[0][1] is not None
    token_type_ids = np.zeros((len(pairs), longest), dtype=np.int64) if with_types else None
    for row, (ids, types) in enumerate(pairs):
        input_ids[row, : len(ids)] = ids
        attention_mask[row, : len(ids)] = 1
        if token_type_ids is not None and types is not None:
            token_type_ids[row, : len(types)] = types
    features = {"input_ids": input_ids, "attention_mask": attention_mask}
    if token_type_ids is not None:
        features["token_type_ids"] = token_type_ids
    return features
