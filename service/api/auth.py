"""`Authorization: Bearer <API key or Supabase JWT>` on every rerank route, /info and (unless
RERANK_METRICS_PUBLIC=true) /metrics. Health stays open.

The check is a FastAPI dependency (so the OpenAPI document declares the bearer scheme) and runs before the
body is read (`AuthenticatedRoute`): a caller without a credential learns nothing about validation, and a
2 MB body is never parsed for them. Every failure gets the same 401: it never says which part failed."""

from __future__ import annotations

from fastapi import Depends, Request, Security
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.api.errors import ApiError
from service.credentials import Authenticator, Principal

UNAUTHORIZED_MESSAGE = "missing or invalid credentials: send Authorization: Bearer <API key or JWT>"
_PRINCIPAL = "reranker.principal"

bearer_scheme = HTTPBearer(auto_error=False, description="An API key from RERANK_API_KEYS, or a Supabase JWT")


def unauthorized() -> ApiError:
    return ApiError(401, UNAUTHORIZED_MESSAGE, error_type="unauthorized",
                    headers={"WWW-Authenticate": "Bearer"})


def authenticate(request: Request) -> Principal | None:
    """The caller, or a 401. None when no authentication is configured (anonymous deployments)."""
    if _PRINCIPAL in request.scope:
        return request.scope[_PRINCIPAL]
    authenticator: Authenticator = request.app.state.authenticator
    if not authenticator.enabled:
        return None
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    token = token.strip()
    principal = authenticator.verify(token) if scheme.lower() == "bearer" and token else None
    if principal is None:
        raise unauthorized()
    request.scope[_PRINCIPAL] = principal
    return principal


def _check(request: Request, credentials: HTTPAuthorizationCredentials | None = Security(bearer_scheme)) -> None:
    authenticate(request)  # `credentials` only declares the scheme in OpenAPI; the header is read above


def _check_metrics(request: Request) -> None:
    if not request.app.state.settings.rerank_metrics_public:
        authenticate(request)


require_auth = Security(_check)  # router/route dependency: dependencies=[require_auth]
require_metrics_access = Depends(_check_metrics)


class AuthenticatedRoute(APIRoute):
    """Authenticates before FastAPI reads and parses the body (its dependencies run after that)."""

    def get_route_handler(self):
        handler = super().get_route_handler()

        async def authenticated_handler(request: Request):
            authenticate(request)
            return await handler(request)

        return authenticated_handler
