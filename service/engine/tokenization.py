"""Turn (query, documents) into token ids exactly as sentence-transformers' CrossEncoder does
(`truncation="longest_first"` at the model's max length), without padding: batching pads later.

Two encoders with one interface: `PairEncoder` wraps the transformers tokenizer that the CrossEncoder loaded
(torch flavour); `TokenizersPairEncoder` drives the `tokenizers` library directly from the model's
tokenizer.json (ONNX flavour: no transformers). Both produce the same ids, token type ids and truncation
(tests/service/test_onnx_flavour.py; the ONNX image's build checks it on the model it bakes in)."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


class TokenizersPairEncoder:
    """The pair encoding of transformers' fast tokenizers, on a bare `tokenizers.Tokenizer`.

    transformers sets, per call, `enable_truncation(max_length, stride=0, strategy, direction)` and
    `no_padding()` on the same Rust tokenizer, then `encode_batch(pairs, add_special_tokens=True)`: this does
    exactly that. The settings live on the shared tokenizer object, so a lock keeps concurrent requests
    (tokenized on worker threads) from changing them under each other; `encode_batch` itself still runs
    in parallel inside the lock."""

    def __init__(self, tokenizer: Any, max_length: int, *, pad_token_id: int = 0,
                 with_token_type_ids: bool = True, truncation_side: str = "right") -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.pad_token_id = pad_token_id
        self.with_token_type_ids = with_token_type_ids
        self.truncation_side = truncation_side
        self._special_pair_tokens = tokenizer.num_special_tokens_to_add(True)
        self._lock = threading.Lock()
        tokenizer.no_padding()
        tokenizer.no_truncation()

    @classmethod
    def from_model_dir(cls, model_dir: Path, max_length: int, *, with_token_type_ids: bool = True
                       ) -> TokenizersPairEncoder:
        """tokenizer.json, adjusted by tokenizer_config.json the way transformers adjusts it on load."""
        from tokenizers import Tokenizer

        tokenizer_file = Path(model_dir) / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise FileNotFoundError(
                f"{tokenizer_file} does not exist: the ONNX flavour needs the model's fast-tokenizer file "
                "(every Hugging Face model with a fast tokenizer ships it; `tokenizer.save_pretrained` writes it)")
        tokenizer = Tokenizer.from_file(str(tokenizer_file))
        config = read_tokenizer_config(Path(model_dir))
        apply_bert_normalizer_options(tokenizer, config)
        return cls(tokenizer, max_length, pad_token_id=pad_token_id(tokenizer, config, Path(model_dir)),
                   with_token_type_ids=with_token_type_ids,
                   truncation_side=str(config.get("truncation_side") or "right"))

    def _encode(self, pairs: list[tuple[str, str]] | list[str], *, truncation: str | None,
                max_length: int = 0, add_special_tokens: bool = True) -> list[Any]:
        with self._lock:
            if truncation is None:
                self.tokenizer.no_truncation()
            else:
                self.tokenizer.enable_truncation(max_length, stride=0, strategy=truncation,
                                                 direction=self.truncation_side)
            try:
                return self.tokenizer.encode_batch(pairs, add_special_tokens=add_special_tokens)
            finally:
                self.tokenizer.no_truncation()

    def encode(self, query: str, documents: list[str], *, max_length: int | None = None,
               max_tokens_per_doc: int | None = None) -> EncodedPairs:
        limit = min(max_length or self.max_length, self.max_length)
        truncation = "longest_first"
        if max_tokens_per_doc is not None:
            query_tokens = len(self._encode([query], truncation=None, add_special_tokens=False)[0].ids)
            per_doc_limit = query_tokens + max_tokens_per_doc + self._special_pair_tokens
            if per_doc_limit < limit:  # the query fits: cut only the documents
                limit, truncation = per_doc_limit, "only_second"
        if not documents:
            return EncodedPairs([], [] if self.with_token_type_ids else None)
        encodings = self._encode([(query, document) for document in documents], truncation=truncation,
                                 max_length=limit)
        ids = [encoding.ids for encoding in encodings]
        types = [encoding.type_ids for encoding in encodings] if self.with_token_type_ids else None
        return EncodedPairs(ids, types)

    def count_untruncated(self, query: str, documents: list[str]) -> list[int]:
        """Token counts of each pair before truncation (for callers that refuse to truncate)."""
        if not documents:
            return []
        encodings = self._encode([(query, document) for document in documents], truncation=None)
        return [len(encoding.ids) for encoding in encodings]


def read_tokenizer_config(model_dir: Path) -> dict[str, Any]:
    path = model_dir / "tokenizer_config.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def apply_bert_normalizer_options(tokenizer: Any, config: dict[str, Any]) -> None:
    """BertTokenizerFast rebuilds tokenizer.json's BertNormalizer when tokenizer_config.json's do_lower_case,
    strip_accents or tokenize_chinese_chars (defaults True, None, True) disagree with it: do the same."""
    if not str(config.get("tokenizer_class") or "").startswith("BertTokenizer") or tokenizer.normalizer is None:
        return
    from tokenizers import normalizers

    state = json.loads(tokenizer.normalizer.__getstate__())
    if state.get("type") != "BertNormalizer":
        return
    wanted = {"lowercase": config.get("do_lower_case", True), "strip_accents": config.get("strip_accents"),
              "handle_chinese_chars": config.get("tokenize_chinese_chars", True)}
    if any(state.get(key, value) != value for key, value in wanted.items()):
        state.pop("type")
        tokenizer.normalizer = normalizers.BertNormalizer(**{**state, **wanted})


def pad_token_id(tokenizer: Any, config: dict[str, Any], model_dir: Path) -> int:
    """The pad token of tokenizer_config.json (or special_tokens_map.json), as transformers resolves it;
    tokenizer.json's own padding settings otherwise; 0 when none is declared (as PairEncoder does)."""
    candidates = [config.get("pad_token")]
    special = model_dir / "special_tokens_map.json"
    if special.is_file():
        candidates.append(json.loads(special.read_text(encoding="utf-8")).get("pad_token"))
    for token in candidates:
        content = token.get("content") if isinstance(token, dict) else token
        if isinstance(content, str) and (found := tokenizer.token_to_id(content)) is not None:
            return int(found)
    padding = tokenizer.padding
    return int(padding["pad_id"]) if padding and padding.get("pad_id") is not None else 0


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
