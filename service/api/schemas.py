"""Request and response shapes of the three rerank APIs: Jina/Cohere v1, Cohere v2, and
text-embeddings-inference. Validation messages name the field."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

DOCUMENT_SHAPE = "must be a string or an object with a string 'text' field"


def _unicode_problem(value: str) -> str | None:
    """JSON's \\u escapes can carry lone UTF-16 surrogates ("\\ud800"): valid JSON, but not text any tokenizer
    (or UTF-8) can take."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"contains an unpaired UTF-16 surrogate (U+{ord(value[exc.start]):04X}) at character "
                f"{exc.start}: send valid Unicode")
    return None


def _non_blank_query(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    problem = _unicode_problem(value)
    if problem:
        raise ValueError(problem)
    return value


def _document_texts(value: Any, *, allow_objects: bool) -> list[str]:
    if not isinstance(value, list):
        raise ValueError("must be a list of documents")
    if not value:
        raise ValueError("must contain at least one document")
    texts = []
    for index, item in enumerate(value):
        if isinstance(item, str):
            texts.append(item)
        elif allow_objects and isinstance(item, dict) and isinstance(item.get("text"), str):
            texts.append(item["text"])
        else:
            shape = DOCUMENT_SHAPE if allow_objects else "must be a string"
            raise ValueError(f"document {index} {shape} (got {type(item).__name__})")
        problem = _unicode_problem(texts[-1])
        if problem:
            raise ValueError(f"document {index} {problem}")
    return texts


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: str = Field(..., description="The search query", examples=["What is a reranker?"])

    @field_validator("query")
    @classmethod
    def _query(cls, value: str) -> str:
        return _non_blank_query(value)


class RerankV1Request(_Request):
    """Jina / Cohere v1: documents are strings or {"text": ...} objects."""

    documents: list[Any] = Field(..., description="Strings, or objects with a `text` field",
                                 examples=[["A reranker orders documents by relevance.", {"text": "Paris"}]])
    model: str | None = None
    top_n: int | None = Field(None, ge=1, description="Return the best N (all when N exceeds the count)")
    return_documents: bool = True

    @field_validator("documents", mode="before")
    @classmethod
    def _documents(cls, value: Any) -> list[str]:
        return _document_texts(value, allow_objects=True)


class RerankV2Request(_Request):
    """Cohere v2: documents are strings."""

    model: str | None = None
    documents: list[Any]
    top_n: int | None = Field(None, ge=1)
    max_tokens_per_doc: int | None = Field(None, ge=1, description="Truncate each document to this many tokens")

    @field_validator("documents", mode="before")
    @classmethod
    def _documents(cls, value: Any) -> list[str]:
        return _document_texts(value, allow_objects=False)


class TeiRerankRequest(_Request):
    """Hugging Face text-embeddings-inference `/rerank`."""

    texts: list[Any]
    raw_scores: bool = False
    return_text: bool = False
    truncate: bool | None = Field(None, description="false: refuse pairs longer than the model's max length")
    truncation_direction: str = Field("Right", pattern="^(?i:right)$",
                                      description="Only right truncation is supported")

    @field_validator("texts", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> list[str]:
        return _document_texts(value, allow_objects=False)


class DocumentOut(BaseModel):
    text: str


class RerankV1Result(BaseModel):
    index: int
    relevance_score: float
    document: DocumentOut | None = None


class Usage(BaseModel):
    total_tokens: int


class RerankV1Response(BaseModel):
    id: str
    model: str
    results: list[RerankV1Result]
    usage: Usage
    meta: dict[str, Any]


class RerankV2Result(BaseModel):
    index: int
    relevance_score: float


class RerankV2Response(BaseModel):
    id: str
    results: list[RerankV2Result]
    meta: dict[str, Any]


class TeiRank(BaseModel):
    index: int
    score: float
    text: str | None = None


class Health(BaseModel):
    status: str
    version: str
