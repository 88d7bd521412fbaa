"""Bearer-token authentication of the admin API.

Every admin route depends on :func:`require_token`. The token is the config's
``api.token`` (a secret reference), read again on every request, so rotating
the file or variable takes effect at once; several whitespace-separated
values are all accepted (during a rotation). Comparison is constant-time per
candidate (:func:`hmac.compare_digest`), over every candidate. With no token
configured the admin API refuses everything (401), rather than serving
without one.

The same check runs twice: first in :class:`~tidesync.api.guard.Guard`, the
ASGI middleware in front of the app, which refuses a request to ``/api/*``,
``/openapi.json`` and (unless public) ``/metrics`` before a byte of its body is
read; then per route (this dependency), so a route stays protected even
without the middleware.

Public: ``/healthz``, the webhook intake routes (signed by their senders), the
dashboard page and its static files (they hold no data; every call the page
makes carries the token), and ``/metrics`` only with ``api.metrics_public``.
"""

from __future__ import annotations

import hmac
import logging
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from tidesync.api.models import Problem
from tidesync.errors import ConfigError

log = logging.getLogger("tidesync.api")

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="The admin token: the value of `api.token` in the config, as `Authorization: Bearer <token>`.",
)
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="tidesync"'}
UNAUTHORIZED: dict[int | str, dict[str, object]] = {
    401: {"description": "missing or wrong bearer token", "model": Problem}
}


def _denied(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers=CHALLENGE)


def token_matches(given: str, token: object) -> bool:
    try:
        candidates = token.values()  # type: ignore[attr-defined]
    except ConfigError as exc:  # the reference cannot be read right now (a rotation in progress)
        log.error("admin API: cannot read api.token: %s", exc)
        return False
    ok = False
    raw = given.encode()
    for value in candidates:
        ok |= hmac.compare_digest(raw, value.encode())
    return ok


def denial(authorization: str | None, token: object) -> str | None:
    """Why a request with this ``Authorization`` header value is refused, or None when it carries the token."""
    if token is None:
        return "the admin API is disabled: set api.token in the config"
    scheme, _, credentials = (authorization or "").partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        return "a bearer token is required (Authorization: Bearer <api.token>)"
    if not token_matches(credentials, token):
        return "wrong token"
    return None


async def require_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    # ``credentials`` declares the scheme in the OpenAPI schema; the check reads the header itself, as the guard does.
    detail = denial(request.headers.get("authorization"), request.app.state.runtime.token)
    if detail is not None:
        raise _denied(detail)
