"""Request body limits, enforced before the body is parsed: Content-Length first, then the bytes
actually streamed (chunked uploads cannot sneak past)."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.api.errors import error_body


class PayloadTooLarge(HTTPException):
    """Raised while the body streams in; FastAPI passes HTTPExceptions from `receive` through."""

    error_type = "payload_too_large"

    def __init__(self, message: str) -> None:
        super().__init__(status_code=413, detail=message)


class BodySizeLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

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

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise PayloadTooLarge(self._message())
            return message

        await self.app(scope, limited_receive, send)
