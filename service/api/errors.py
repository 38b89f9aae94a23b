"""Every error is JSON with a message that names the field: Cohere clients read `message`,
text-embeddings-inference clients read `error` and `error_type`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("service.api")


class ApiError(Exception):
    def __init__(self, status_code: int, message: str, *, field: str | None = None,
                 error_type: str = "invalid_request", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers
        self.status_code = status_code
        self.message = message
        self.field = field
        self.error_type = error_type


def error_body(message: str, *, error_type: str, field: str | None = None) -> dict:
    body = {"message": message, "error": message, "error_type": error_type}
    if field is not None:
        body["field"] = field
    return body


def error_response(status_code: int, message: str, *, error_type: str, field: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, error_type=error_type, field=field), status_code=status_code,
                        headers=headers)


def field_path(loc: tuple | list) -> str:
    """('body', 'documents', 2, 'text') -> 'documents[2].text'."""
    path = ""
    for part in loc:
        if part == "body" and not path:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"


def _validation_message(exc: RequestValidationError) -> tuple[int, str, str]:
    errors = exc.errors()
    first = errors[0] if errors else {"loc": ("body",), "msg": "invalid request", "type": "value_error"}
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return 400, "body", f"malformed JSON body: {detail}".rstrip(": ")
    field = field_path(first.get("loc", ()))
    message = str(first.get("msg", "invalid value"))
    message = message.removeprefix("Value error, ")
    if first.get("type") == "missing":
        message = "field required"
    if first.get("type") == "model_attributes_type" and field == "body":
        message = "the body must be a JSON object"
    return 422, field, f"{field}: {message}"


# What FastAPI raises when reading the JSON body fails other than by a JSONDecodeError.
FASTAPI_BODY_PARSE_ERROR = "There was an error parsing the body"


def _body_parse_message(cause: BaseException | None) -> str:
    if isinstance(cause, RecursionError):
        return "malformed JSON body: nested too deeply"
    if isinstance(cause, UnicodeDecodeError):
        return "malformed JSON body: not valid UTF-8"
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return "malformed JSON body: a number has too many digits"
    return "malformed JSON body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status_code, exc.message, error_type=exc.error_type, field=exc.field,
                              headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        status, field, message = _validation_message(exc)
        return error_response(status, message, error_type="invalid_request", field=field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == FASTAPI_BODY_PARSE_ERROR:
            return error_response(400, _body_parse_message(exc.__cause__), error_type="invalid_request",
                                  field="body")
        return error_response(exc.status_code, str(exc.detail), error_type=getattr(exc, "error_type", "http_error"),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal error", error_type="internal")
