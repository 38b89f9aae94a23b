"""The seed-style server: exactly what the deployment guide hands a user, and nothing more.

FastAPI, one uvicorn worker, the model loaded at import time with `CrossEncoder(model,
trust_remote_code=True)` (defaults everywhere: no max_length, no max_position_embeddings cap, batch
size 32, no sorting, fp32, eager attention), and a *sync* route that calls `model.predict(pairs)`.
This is contender (a) in the benchmark, the baseline every ratio is taken against. Do not optimise it.

    python benchmarks/seed_server.py --model-path /path/to/model --port 8001
"""

from __future__ import annotations

import argparse
import os
import uuid

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import CrossEncoder

MODEL_NAME = os.environ.get("SEED_MODEL", "jinaai/jina-reranker-v1-tiny-en")


class RerankRequest(BaseModel):
    query: str
    documents: list[str]
    top_n: int | None = None
    return_documents: bool = True


def create_app(model_name: str) -> FastAPI:
    model = CrossEncoder(model_name, trust_remote_code=True)
    app = FastAPI(title="Reranker (guide version)")

    @app.get("/api/health/")
    def health() -> dict:
        return {"status": "healthy"}

    @app.post("/v1/rerank")
    def rerank(request: RerankRequest) -> dict:
        pairs = [[request.query, doc] for doc in request.documents]
        scores = model.predict(pairs)
        ranked = sorted(enumerate(scores), key=lambda item: float(item[1]), reverse=True)
        if request.top_n is not None:
            ranked = ranked[: request.top_n]
        results = []
        for index, score in ranked:
            result = {"index": index, "relevance_score": float(score)}
            if request.return_documents:
                result["document"] = {"text": request.documents[index]}
            results.append(result)
        return {"id": str(uuid.uuid4()), "results": results, "meta": {"api_version": {"version": "1"}}}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-path", default=MODEL_NAME)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    args = parser.parse_args()
    app = create_app(args.model_path)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level="warning")


if __name__ == "__main__":
    main()
