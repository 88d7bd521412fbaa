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
retried with exponential backoff and full jitter (:class:`~tidesync.retry.RetryPolicy`)
on the injected clock. A 401/403 re-reads the credential (a rotated key, a
refreshed OAuth2 token) and asks once more before giving up.

No message carries a credential: the credential names only its reference.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import httpx

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import SourceError, SourceTransientError
from tidesync.retry import RetryPolicy
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
    ) -> Any:
        """The decoded JSON answer of a 2xx; raises as the module docstring says."""
        failures = throttled = 0
        reauthorized = False
        what = f"{self.name}: {method} {path}"
        while True:
            await self.limiter.acquire()
            headers = await self.credential.authorize(self._http)
            self.requests += 1
            try:
                response = await self._http.request(method, path, params=params, json=json, headers=headers)
            except httpx.HTTPError as exc:
                failures += 1
                await self._backoff(failures, f"{what}: {type(exc).__name__}: {exc}", exc)
                continue
            status = response.status_code
            if status == 429:
                self.throttled += 1
                throttled += 1
                if throttled > self.max_throttled:
                    raise SourceTransientError(f"{what}: still rate limited (429) after {throttled - 1} waits")
                wait = parse_retry_after(response.headers.get("retry-after"), self.clock.time())
                if wait is None:
                    wait = self.retry.cap(throttled)
                log.info("%s: rate limited (429); waiting %.2fs", what, wait)
                self.limiter.hold(wait)
                continue
            if status in (401, 403):
                if not reauthorized and await self.credential.rejected(self._http, status):
                    reauthorized = True
                    continue
                raise CredentialRejected(
                    f"{what}: the API rejected {self.credential.describe()} ({status}"
                    f"{' forbidden: missing permission or scope?' if status == 403 else ' unauthorized'}): "
                    "fix the credential and restart"
                )
            if status >= 500 or status == 408:
                failures += 1
                await self._backoff(failures, f"{what}: answered {status}: {_excerpt(response)}")
                continue
            if status >= 300:
                body: Any
                try:
                    body = response.json()
                except ValueError:
                    body = None
                raise ApiStatusError(f"{what}: answered {status}: {_excerpt(response)}", status, body)
            try:
                return response.json()
            except ValueError:
                failures += 1
                await self._backoff(failures, f"{what}: answered {status} with a body that is not JSON")

    async def _backoff(self, failures: int, message: str, cause: BaseException | None = None) -> None:
        if failures >= self.max_attempts:
            raise SourceTransientError(f"{message} (gave up after {failures} attempts)") from cause
        delay = self.retry.delay(failures)
        log.warning("%s; retrying in %.2fs", REDACTOR.redact(message), delay)
        await self.clock.sleep(delay)
