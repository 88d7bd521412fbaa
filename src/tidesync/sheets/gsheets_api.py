"""The Google Sheets v4 and Drive v3 calls the ``gsheets`` source and sink make, over the project's HTTP client.

:class:`ServiceAccount` is a :class:`~tidesync.sources.http.auth.Credential`:
access tokens from a service account's JSON key through google-auth
(``google.oauth2.service_account.Credentials``: an RS256-signed JWT sent to the
key's ``token_uri`` as the JWT bearer grant). A token is refreshed when it is
within a minute (or half its life, if shorter) of expiring, on the injected
clock, and at once after a 401. google-auth is synchronous: the refresh runs in
a worker thread, over a small httpx transport. The key is read through its
:class:`~tidesync.secrets.Secret` at every refresh, so a rotated key file is
used from the next token on.

:class:`SheetsApi` makes the requests through
:class:`~tidesync.sources.http.client.ApiClient` (client-side pacing with a
token bucket, 429 + ``Retry-After``, 5xx retries with backoff). Requests that
are not idempotent (``values.append``, ``deleteDimension``) are sent once: a
lost answer fails the call rather than appending or deleting twice, and the
sink's whole ``write`` is retried, which finds rows by key again.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
from google.auth import exceptions as google_exceptions
from google.auth import transport
from google.oauth2 import service_account

from tidesync.clock import SYSTEM_CLOCK, Clock
from tidesync.errors import ConfigError, SourceTransientError
from tidesync.secrets import REDACTOR, Secret
from tidesync.sources.http.auth import CredentialRejected
from tidesync.sources.http.client import ApiClient
from tidesync.sources.http.config import HttpOptions, RateLimit
from tidesync.sources.http.ratelimit import TokenBucket

log = logging.getLogger("tidesync.sheets.gsheets")
SCOPES = (
    "https://www.googleapis.com/auth/spreadsheets",
    "https://www.googleapis.com/auth/drive.metadata.readonly",
)
# UNFORMATTED_VALUE: numbers and booleans as JSON numbers and booleans, never as the locale shows them.
# FORMATTED_STRING: a date cell as the text it shows (ISO when formatted yyyy-mm-dd), not a bare serial
# number that no reader could tell from any other number.
READ_OPTIONS = {"valueRenderOption": "UNFORMATTED_VALUE", "dateTimeRenderOption": "FORMATTED_STRING"}


class _Response(transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._r = response

    @property
    def status(self) -> int:
        return self._r.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._r.headers

    @property
    def data(self) -> bytes:
        return self._r.content


class _Request(transport.Request):
    """google-auth's transport interface over a synchronous httpx client (token requests only)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _Response:
        try:
            with httpx.Client(timeout=timeout or self.timeout) as http:
                return _Response(http.request(method, url, content=body, headers=headers))
        except httpx.HTTPError as exc:
            raise google_exceptions.TransportError(f"{type(exc).__name__}: {exc}") from exc  # type: ignore[no-untyped-call]


class ServiceAccount:
    """Access tokens for a service account (see the module docstring)."""

    def __init__(self, key: Secret, *, clock: Clock = SYSTEM_CLOCK, timeout: float = 30.0) -> None:
        self.key = key
        self.clock = clock
        self.timeout = timeout
        self._text: str | None = None
        self._creds: service_account.Credentials | None = None
        self._access: str | None = None
        self._expires_at = 0.0
        self._margin = 60.0
        self._fresh = False
        self.refreshes = 0

    def describe(self) -> str:
        email = getattr(self._creds, "service_account_email", "?")
        return f"the service account {email} (key {self.key.reference})"

    async def authorize(self, http: httpx.AsyncClient) -> dict[str, str]:
        if self._access is None or self.clock.time() >= self._expires_at - self._margin:
            await self.refresh()
        else:
            self._fresh = False
        return {"Authorization": f"Bearer {self._access}"}

    async def rejected(self, http: httpx.AsyncClient, status: int) -> bool:
        if self._fresh:
            return False  # a token issued just now was refused: the account lacks access
        self._access = None
        return True

    def _credentials(self) -> service_account.Credentials:
        try:
            text = self.key.get()
        except ConfigError as exc:
            if self._creds is None:
                raise SourceTransientError(f"cannot read the service account key: {exc}") from exc
            return self._creds  # the key file is being replaced: the one read before
        if text != self._text or self._creds is None:
            try:
                info = json.loads(text)
                creds = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                    info, scopes=list(SCOPES)
                )
            except (ValueError, KeyError, TypeError) as exc:
                raise CredentialRejected(
                    f"{self.key.reference} is not a service account key (JSON with client_email, "
                    f"private_key, token_uri): {type(exc).__name__}"
                ) from None
            REDACTOR.add(str(info.get("private_key", "")))
            self._text, self._creds = text, creds
        return self._creds

    async def refresh(self) -> None:
        creds = self._credentials()
        try:
            await asyncio.to_thread(creds.refresh, _Request(self.timeout))
        except google_exceptions.RefreshError as exc:
            if getattr(exc, "retryable", False):
                raise SourceTransientError(f"token request for {self.describe()} failed: {exc}") from exc
            raise CredentialRejected(f"the token endpoint refused {self.describe()}: {exc}") from exc
        except google_exceptions.TransportError as exc:
            raise SourceTransientError(f"token request for {self.describe()} failed: {exc}") from exc
        token = creds.token
        if not isinstance(token, str) or not token:
            raise SourceTransientError(f"no access token for {self.describe()}")
        REDACTOR.add(token)
        expiry = creds.expiry  # naive UTC
        life = (expiry.replace(tzinfo=dt.UTC).timestamp() - dt.datetime.now(dt.UTC).timestamp()) if expiry else 3600.0
        self._access = token
        self._expires_at = self.clock.time() + life
        self._margin = min(60.0, life / 2)
        self._fresh = True
        self.refreshes += 1
        log.debug("access token for %s refreshed; expires in %.0fs", self.describe(), life)


def a1_sheet(title: str) -> str:
    """A sheet title as an A1 range prefix: quoted, quotes doubled."""
    return "'" + title.replace("'", "''") + "'"


class SheetsApi:
    """One spreadsheet's endpoints; raises what :class:`ApiClient` raises (tidesync source errors)."""

    def __init__(
        self,
        name: str,
        spreadsheet_id: str,
        *,
        base_url: str,
        drive_url: str,
        key: Secret,
        rate_limit: RateLimit,
        http: HttpOptions,
        clock: Clock,
    ) -> None:
        self.id = spreadsheet_id
        self.drive_url = drive_url.rstrip("/")
        self.credential = ServiceAccount(key, clock=clock, timeout=http.timeout)
        bucket = TokenBucket(rate_limit.per_second, rate_limit.burst, clock=clock)
        common: dict[str, Any] = {"max_throttled": http.max_throttled, "timeout": http.timeout, "clock": clock}
        self.client = ApiClient(name, base_url, self.credential, bucket, max_attempts=http.max_attempts, **common)
        self.once = ApiClient(name, base_url, self.credential, bucket, max_attempts=1, **common)
        self._path = f"/v4/spreadsheets/{quote(spreadsheet_id, safe='')}"

    @property
    def requests(self) -> int:
        return self.client.requests + self.once.requests

    async def close(self) -> None:
        await self.client.close()
        await self.once.close()

    async def revision(self) -> tuple[str, str]:
        """(version, modifiedTime) from Drive: both change at every edit of the spreadsheet."""
        url = f"{self.drive_url}/drive/v3/files/{quote(self.id, safe='')}"
        body = await self.client.get(url, {"fields": "modifiedTime,version", "supportsAllDrives": "true"})
        return str(body.get("version", "")), str(body.get("modifiedTime", ""))

    async def sheet_properties(self, title: str) -> dict[str, Any] | None:
        body = await self.client.get(self._path, {"fields": "sheets.properties"})
        for s in body.get("sheets", []):
            props = s.get("properties", {})
            if props.get("title") == title:
                return dict(props)
        return None

    async def read(self, title: str) -> list[list[Any]]:
        """The whole sheet from A1 (trailing empty rows and cells omitted, as the API does)."""
        params = {"ranges": a1_sheet(title), "majorDimension": "ROWS", **READ_OPTIONS}
        body = await self.client.get(f"{self._path}/values:batchGet", params)
        ranges = body.get("valueRanges") or [{}]
        values = ranges[0].get("values", [])
        return [list(r) for r in values]

    async def write_cells(self, data: Sequence[Mapping[str, Any]]) -> None:
        """``values.batchUpdate`` with RAW input (text is never parsed: ``0123`` and ``=1+1`` stay text)."""
        await self.client.post(f"{self._path}/values:batchUpdate", {"valueInputOption": "RAW", "data": list(data)})

    async def append(self, title: str, header_row: int, rows: list[list[Any]]) -> None:
        rng = quote(f"{a1_sheet(title)}!A{header_row}", safe="")
        path = f"{self._path}/values/{rng}:append?valueInputOption=RAW&insertDataOption=INSERT_ROWS"
        await self.once.post(path, {"majorDimension": "ROWS", "values": rows})

    async def structure(self, requests: list[dict[str, Any]], *, once: bool) -> None:
        """``spreadsheets.batchUpdate``: applied all or none."""
        await (self.once if once else self.client).post(f"{self._path}:batchUpdate", {"requests": requests})
