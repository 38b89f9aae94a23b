"""Request body limits, enforced before the body is parsed: Content-Length first, then the bytes
actually streamed (chunked uploads cannot sneak past), and the time the body may take to arrive (a slow
sender cannot hold a connection and its buffer forever: 408 after RERANK_REQUEST_TIMEOUT_S)."""

from __future__ import annotations

import json
import time

import anyio
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_body


class PayloadTooLarge(HTTPException):
    """Raised while the body streams in; FastAPI passes HTTPExceptions from `receive` through."""

    error_type = "payload_too_large"

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


class BodyTimeout(HTTPException):
    error_type = "request_timeout"

    def __init__(self, seconds: float) -> None:
        super().__init__(status_code=408, detail=f"the request body did not arrive within {seconds:g}s "
                                                 "(RERANK_REQUEST_TIMEOUT_S)")


ARRIVAL_KEY = "reranker.arrived"


def arrival_time(scope: Scope) -> float:
    """time.monotonic() when the request reached the app (the request timeout counts from there)."""
    return scope.get(ARRIVAL_KEY) or time.monotonic()


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout_s: float | None = None) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s

    def _message(self) -> str:
        return (f"request body exceeds {self.max_body_bytes} bytes (RERANK_MAX_BODY_BYTES); "
                "send fewer or shorter documents per request")

    async def _reject(self, send: Send) -> None:
        payload = json.dumps(error_body(self._message(), error_type="payload_too_large", field="body")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        arrived = scope[ARRIVAL_KEY] = time.monotonic()
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_body_bytes
                except ValueError:
                    too_large = False
                if too_large:
                    await self._reject(send)
                    return

        received = 0
        body_complete = False

        async def limited_receive() -> Message:
            nonlocal received, body_complete
            if body_complete or self.body_timeout_s is None:
                message = await receive()  # after the body: only the disconnect is left to wait for
            else:
                remaining = arrived + self.body_timeout_s - time.monotonic()
                try:
                    with anyio.fail_after(max(remaining, 0.001)):
                        message = await receive()
                except TimeoutError:
                    raise BodyTimeout(self.body_timeout_s) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(self._message())
                body_complete = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)
