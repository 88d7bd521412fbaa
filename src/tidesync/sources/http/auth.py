"""Credentials for API sources: a bearer key, or OAuth2 access tokens kept fresh with a refresh token.

Both read their secrets through :class:`~tidesync.secrets.Secret` on every
use, so a rotated file or environment variable takes effect at the next
request, without a restart (a file read costs microseconds; requests are paced
at a few per second).

What the :class:`~tidesync.sources.http.client.ApiClient` calls:

- ``authorize(http)`` before each request: the headers to send.
- ``rejected(http, status)`` after a 401/403: True when asking again may
  succeed because the credential changed (a key rotated since it was read, an
  access token refreshed); False means the credential itself is refused.
- ``describe()``: where the credential comes from (the reference, never the value).

OAuth2 (HubSpot: ``POST /oauth/v1/token``, form-encoded ``grant_type=refresh_token``,
``client_id``, ``client_secret``, ``refresh_token``; the answer has
``access_token``, ``expires_in`` seconds and a ``refresh_token``): the access
token is refreshed ``refresh_margin`` seconds before it expires, and at once
after a 401. A refresh token in the answer that differs from the one sent is
used from then on (kept in memory; the configured one is read again, and wins,
when its secret changes).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import httpx

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import ConfigError, SourceError, SourceTransientError
from tidesync.secrets import REDACTOR, Secret

log = logging.getLogger("tidesync.sources.http")


class CredentialRejected(SourceError):
    """The API refused the credential (401/403) even after it was read again: fix it and restart."""


class Credential(Protocol):
    async def authorize(self, http: httpx.AsyncClient) -> dict[str, str]: ...

    async def rejected(self, http: httpx.AsyncClient, status: int) -> bool: ...

    def describe(self) -> str: ...


def _read(secret: Secret, what: str, last: str | None) -> str:
    """The secret's value; while its file is being replaced, the last good value (when there is one)."""
    try:
        return secret.get()
    except ConfigError as exc:
        if last is None:
            raise SourceTransientError(f"cannot read the {what}: {exc}") from exc
        log.warning("cannot read the %s (%s); using the value read before", what, exc)
        return last


class BearerKey:
    """An API key or private-app token sent as ``Authorization: Bearer <key>``."""

    def __init__(self, secret: Secret, what: str = "API key") -> None:
        self.secret = secret
        self.what = what
        self._used: str | None = None

    async def authorize(self, http: httpx.AsyncClient) -> dict[str, str]:
        self._used = _read(self.secret, self.what, self._used)
        return {"Authorization": f"Bearer {self._used}"}

    async def rejected(self, http: httpx.AsyncClient, status: int) -> bool:
        return _read(self.secret, self.what, self._used) != self._used

    def describe(self) -> str:
        return f"the {self.what} {self.secret.reference}"


class OAuth2Refresh:
    """Access tokens from a refresh token (RFC 6749 section 6), refreshed before they expire."""

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: Secret,
        refresh_token: Secret,
        *,
        refresh_margin: float = 300.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.refresh_token = refresh_token
        self.refresh_margin = refresh_margin
        self.clock = clock
        self._access: str | None = None
        self._expires_at = 0.0
        self._configured: str | None = None  # the refresh token as last read from its secret
        self._current: str | None = None  # the one to send (the server may have issued a newer one)
        self._fresh = False  # the access token was issued after the last request's rejection
        self.refreshes = 0

    async def authorize(self, http: httpx.AsyncClient) -> dict[str, str]:
        if self._access is None or self.clock.time() >= self._expires_at - self.refresh_margin:
            await self.refresh(http)
        else:
            self._fresh = False
        return {"Authorization": f"Bearer {self._access}"}

    async def rejected(self, http: httpx.AsyncClient, status: int) -> bool:
        if self._fresh:
            return False  # a token issued just now was refused: refreshing again will not help
        self._access = None  # refreshed by the next authorize()
        return True

    def describe(self) -> str:
        return f"the OAuth2 credentials (client {self.client_id}, refresh token {self.refresh_token.reference})"

    async def refresh(self, http: httpx.AsyncClient) -> None:
        configured = _read(self.refresh_token, "OAuth2 refresh token", self._configured)
        if configured != self._configured:
            self._configured = self._current = configured
        form = {
            "grant_type": "refresh_token",
            "client_id": self.client_id,
            "client_secret": _read(self.client_secret, "OAuth2 client secret", None),
            "refresh_token": self._current or configured,
        }
        try:
            response = await http.post(self.token_url, data=form, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise SourceTransientError(f"OAuth2 token refresh at {self.token_url}: {type(exc).__name__}") from exc
        if response.status_code in (400, 401, 403):
            raise CredentialRejected(
                f"OAuth2 token refresh at {self.token_url} was refused ({response.status_code}"
                f"{_oauth_error(response)}): check {self.describe()}"
            )
        if response.status_code != 200:
            raise SourceTransientError(f"OAuth2 token refresh at {self.token_url} answered {response.status_code}")
        try:
            body: Any = response.json()
            access, expires_in = body["access_token"], float(body.get("expires_in", 1800))
        except (ValueError, KeyError, TypeError) as exc:
            raise SourceTransientError(f"OAuth2 token refresh at {self.token_url}: unreadable answer") from exc
        if not isinstance(access, str) or not access:
            raise SourceTransientError(f"OAuth2 token refresh at {self.token_url}: no access_token in the answer")
        REDACTOR.add(access)
        newer = body.get("refresh_token")
        if isinstance(newer, str) and newer and newer != self._current:
            REDACTOR.add(newer)
            self._current = newer
        self._access = access
        self._expires_at = self.clock.time() + expires_in
        self._fresh = True
        self.refreshes += 1
        log.debug("OAuth2 access token refreshed; expires in %.0fs", expires_in)


def _oauth_error(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if isinstance(body, dict):
        code = body.get("error") or body.get("status")
        if isinstance(code, str) and code.isprintable() and len(code) < 80:
            return f", {REDACTOR.redact(code)}"
    return ""
