"""One HTTP client for the API sources: pacing, retries, credentials and error translation in one place.

::

    SourceError
    ├── CredentialRejected     401/403 after the credential was read again (fix it, restart)
    ├── ApiStatusError         any other 4xx: the request itself is wrong (carries status and an excerpt)
    └── SourceTransientError   5xx, 408, timeouts, lost connections, 429s beyond ``max_throttled``
                               (after ``max_attempts`` tries with backoff): the engine reopens the source

Every request first takes a token from the :class:`~.ratelimit.TokenBucket`.
A 429 holds the bucket for the server's ``Retry-After`` (seconds or an HTTP
date; exponential backoff when absent) and is then asked again: throttling is
not a failure, up to ``max_throttled`` times in a row. Transient failures are
retried with exponential backoff and full jitter (:meth:`~tidesync.retry.RetryPolicy.attempts`)
on the injected clock. A 401/403 re-reads the credential (a rotated key, a
refreshed OAuth2 token) and asks once more before giving up.

No message carries a credential: the credential names only its reference.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import httpx

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import SourceError, SourceTransientError
from tidesync.retry import Failure, RetryPolicy
from tidesync.secrets import REDACTOR
from tidesync.sources.http.auth import Credential, CredentialRejected
from tidesync.sources.http.ratelimit import TokenBucket, parse_retry_after

log = logging.getLogger("tidesync.sources.http")
USER_AGENT = "tidesync"

__all__ = ["ApiClient", "ApiStatusError", "CredentialRejected"]


class ApiStatusError(SourceError):
    """A 4xx other than 401/403/408/429: retrying the same request will not help."""

    def __init__(self, message: str, status: int, body: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def _excerpt(response: httpx.Response) -> str:
    return REDACTOR.redact(response.text[:300].replace("\n", " "))


class ApiClient:
    """Requests to one API on behalf of one source (``name`` appears in every error).

    ``transport`` is for tests of connection failures; everything else goes
    over real HTTP. Not for concurrent use by several tasks beyond what the
    bucket serialises (one source reads at a time).
    """

    def __init__(
        self,
        name: str,
        base_url: str,
        credential: Credential,
        limiter: TokenBucket,
        *,
        retry: RetryPolicy | None = None,
        max_attempts: int = 5,
        max_throttled: int = 20,
        timeout: float = 30.0,
        clock: Clock = SYSTEM_CLOCK,
        headers: Mapping[str, str] | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.credential = credential
        self.limiter = limiter
        self.retry = retry or RetryPolicy(initial_delay=0.5, max_delay=30.0)
        self.max_attempts = max_attempts
        self._rng = random.Random()
        self.max_throttled = max_throttled
        self.clock = clock
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            timeout=timeout,
            transport=transport,
            headers={"User-Agent": USER_AGENT, "Accept": "application/json", **(headers or {})},
        )
        self.requests = 0  # sent, retries included
        self.throttled = 0  # 429 answers received

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def get(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        return await self.request("GET", path, params=params)

    async def post(self, path: str, json: Any) -> Any:
        return await self.request("POST", path, json=json)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """The decoded JSON answer of a 2xx (None for a 204); raises as the module docstring says.

        ``content`` is a body already encoded (a form; say its type in ``headers``);
        ``headers`` go with every attempt (an ``Idempotency-Key`` makes retrying a write safe).
        """
        what = f"{self.name}: {method} {path}"
        asked = _Asked()

        def retrying(failure: Failure) -> None:
            log.warning("%s; retrying in %.2fs", REDACTOR.redact(str(failure.error)), failure.delay)

        retry = replace(self.retry, max_attempts=self.max_attempts).attempts(
            self.clock, _failed, on_retry=retrying, rng=self._rng
        )
        try:
            async for attempt in retry:
                with attempt:
                    return await self._ask(method, path, what, asked, params, json, content, headers)
        except _Failed as exc:
            raise SourceTransientError(f"{exc} (gave up after {retry.number} attempts)") from exc.__cause__
        raise AssertionError("unreachable: an attempt returns or raises")

    async def _ask(
        self,
        method: str,
        path: str,
        what: str,
        asked: _Asked,
        params: Mapping[str, str] | None,
        json: Any,
        content: bytes | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> Any:
        """One attempt: a 2xx's JSON, or :class:`_Failed` to try again; waits out 429s and re-reads a credential."""
        while True:
            await self.limiter.acquire()
            headers = {**(extra or {}), **await self.credential.authorize(self._http)}
            self.requests += 1
            try:
                response = await self._http.request(
                    method, path, params=params, json=json, content=content, headers=headers
                )
            except httpx.HTTPError as exc:
                raise _Failed(f"{what}: {type(exc).__name__}: {exc}") from exc
            status = response.status_code
            if status == 429:
                self.throttled += 1
                asked.throttled += 1
                if asked.throttled > self.max_throttled:
                    raise SourceTransientError(f"{what}: still rate limited (429) after {asked.throttled - 1} waits")
                wait = parse_retry_after(response.headers.get("retry-after"), self.clock.time())
                if wait is None:
                    wait = self.retry.cap(asked.throttled)
                log.info("%s: rate limited (429); waiting %.2fs", what, wait)
                self.limiter.hold(wait)
                continue  # throttling is not a failure: ask again once the bucket allows
            if status in (401, 403):
                if not asked.reauthorized and await self.credential.rejected(self._http, status):
                    asked.reauthorized = True
                    continue
                raise CredentialRejected(
                    f"{what}: the API rejected {self.credential.describe()} ({status}"
                    f"{' forbidden: missing permission or scope?' if status == 403 else ' unauthorized'}): "
                    "fix the credential and restart"
                )
            if status >= 500 or status == 408:
                raise _Failed(f"{what}: answered {status}: {_excerpt(response)}")
            if status >= 300:
                body: Any
                try:
                    body = response.json()
                except ValueError:
                    body = None
                raise ApiStatusError(f"{what}: answered {status}: {_excerpt(response)}", status, body)
            if status == 204:  # No Content: batch archives answer so
                return None
            try:
                return response.json()
            except ValueError as exc:
                raise _Failed(f"{what}: answered {status} with a body that is not JSON") from exc


@dataclass(slots=True)
class _Asked:
    """What one request met across its attempts."""

    throttled: int = 0  # 429s waited out
    reauthorized: bool = False  # the credential was read again after a 401/403


class _Failed(Exception):
    """An attempt that may succeed when asked again (5xx, 408, a lost connection, a body that is not JSON)."""


def _failed(exc: Exception) -> bool:
    return isinstance(exc, _Failed)
