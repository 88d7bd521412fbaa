"""A local stand-in for the Google Sheets v4, Drive v3 and OAuth2 token APIs, served over real HTTP on loopback.

It follows the documented request and response shapes (cells and ranges: :mod:`.gsheets_model`):

- ``POST /token``: the JWT bearer grant (``grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer``,
  ``assertion``). The assertion's RS256 signature is checked with the public key of
  the service account named by its ``kid`` (:meth:`FakeGSheets.service_account` makes
  one), and its ``iss``, ``aud`` (this URL, or Google's token endpoint, which
  google-auth signs for whatever the ``token_uri``), ``scope`` and ``exp``. Answers
  ``{"access_token", "expires_in", "token_type": "Bearer"}``; ``invalid_grant`` (400) else.
- ``GET /v4/spreadsheets/{id}``: ``spreadsheetId``, ``properties``, ``sheets[].properties``
  (``sheetId``, ``title``, ``index``, ``gridProperties``).
- ``GET .../values/{range}``, ``GET .../values:batchGet?ranges=``: ValueRange(s) with
  ``valueRenderOption``, ``dateTimeRenderOption``; ``PUT .../values/{range}``,
  ``POST .../values:batchUpdate``, ``POST .../values/{range}:append`` (after the last
  row holding anything at or below the range's first row; ``INSERT_ROWS`` or
  ``OVERWRITE``), ``POST .../values/{range}:clear``, ``POST .../values:batchClear``, with ``valueInputOption``.
- ``POST /v4/spreadsheets/{id}:batchUpdate``: ``deleteDimension``, ``insertDimension``,
  ``appendDimension`` (ROWS or COLUMNS), ``addSheet``, and ``updateDimensionProperties``
  for COLUMNS with ``properties.hiddenByUser`` and ``fields: "hiddenByUser"`` (a
  ``range`` of ``sheetId``, ``dimension``, ``startIndex``, ``endIndex``; the hidden
  columns are read with :meth:`FakeGSheets.hidden_columns`); all requests apply, or none.
- ``GET /drive/v3/files/{id}?fields=``: ``modifiedTime`` (RFC 3339, ms) and ``version``
  (grows at every change), only the fields asked for.
- Errors in Google's shape: ``{"error": {"code", "message", "status"}}``; 401
  ``UNAUTHENTICATED`` without a valid, unexpired access token.

Test controls: ``outage`` (a status every API request gets until set back to
None); :meth:`FakeGSheets.hold` / :meth:`FakeGSheets.release` (API answers wait
meanwhile); ``faults`` (the next answers: ``(status, headers)``, e.g. ``(429,
{"Retry-After": "1"})`` or ``(503, {})``); ``token_lifetime`` (seconds an access
token lives); ``seen`` (every request); the person-side edits :meth:`set`,
:meth:`insert_row`, :meth:`delete_row`, which change the revision as the UI would.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import secrets
import threading
import time
from typing import Any
from urllib.parse import parse_qs

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from google.auth import exceptions as google_exceptions
from google.auth import jwt
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tidesync.testing.gsheets_model import A1, RangeError, Sheet, parse_a1
from tidesync.testing.http_fakes import Faults, Seen, _record

# google-auth signs service-account assertions for Google's token endpoint, whatever the key's token_uri.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}  # fmt: skip


def google_error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}
    return JSONResponse(body, status, headers=headers)


class Spreadsheet:
    def __init__(self, spreadsheet_id: str, title: str) -> None:
        self.id = spreadsheet_id
        self.title = title
        self.sheets: list[Sheet] = []
        self.hidden: dict[int, set[int]] = {}  # sheetId -> 0-based columns hidden by a user (hiddenByUser)
        self.version = 1
        self.modified = self.created = dt.datetime.now(dt.UTC)

    def touch(self) -> None:
        self.version += 1
        self.modified = max(dt.datetime.now(dt.UTC), self.modified + dt.timedelta(milliseconds=1))

    def sheet(self, title: str) -> Sheet:
        for s in self.sheets:
            if s.title == title:
                return s
        raise RangeError(f"Unable to parse range: {title}")

    def by_id(self, sheet_id: int) -> Sheet:
        for s in self.sheets:
            if s.sheet_id == sheet_id:
                return s
        raise RangeError(f"No grid with id: {sheet_id}")

    def resource(self) -> dict[str, Any]:
        return {
            "spreadsheetId": self.id,
            "properties": {"title": self.title, "locale": "en_US", "timeZone": "Etc/GMT"},
            "sheets": [{"properties": s.properties(i)} for i, s in enumerate(self.sheets)],
            "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{self.id}/edit",
        }


class FakeGSheets:
    def __init__(self) -> None:
        self.books: dict[str, Spreadsheet] = {}
        self.keys: dict[str, tuple[str, bytes]] = {}  # key id -> (client_email, public key PEM)
        self.tokens: dict[str, float] = {}  # access token -> expiry (time.time())
        self.token_lifetime = 3600.0
        self.issued = 0  # access tokens issued
        self.seen: list[Seen] = []
        self.faults = Faults()
        self.outage: int | None = None  # a status every API request gets until set back to None
        self._moving = threading.Event()  # cleared by hold(): API answers wait until release()
        self._moving.set()
        self._sheet_ids = itertools.count(0)
        self.app = Starlette(
            routes=[
                Route("/token", self._token, methods=["POST"]),
                Route("/drive/v3/files/{file_id}", self._drive_file),
                Route("/v4/spreadsheets/{rest:path}", self._sheets, methods=["GET", "PUT", "POST"]),
            ]
        )

    # --- test side -----------------------------------------------------------------------------

    def add_spreadsheet(self, spreadsheet_id: str, sheets: dict[str, list[list[Any]]]) -> Spreadsheet:
        book = Spreadsheet(spreadsheet_id, f"book {spreadsheet_id}")
        for title, rows in sheets.items():
            book.sheets.append(Sheet(next(self._sheet_ids), title, [list(r) for r in rows]))
        self.books[spreadsheet_id] = book
        return book

    def service_account(
        self, token_uri: str, email: str = "tidesync@project.iam.gserviceaccount.com"
    ) -> dict[str, Any]:
        """A service-account key file's content whose public key this server knows."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        public = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        kid = secrets.token_hex(20)
        self.keys[kid] = (email, public)
        return {
            "type": "service_account",
            "project_id": "project",
            "private_key_id": kid,
            "private_key": pem,
            "client_email": email,
            "client_id": "1234567890",
            "token_uri": token_uri,
        }

    def values(self, spreadsheet_id: str, sheet: str) -> list[list[Any]]:
        """The sheet as ``UNFORMATTED_VALUE`` / ``FORMATTED_STRING`` would show it."""
        return self.books[spreadsheet_id].sheet(sheet).get(A1(sheet, None, None, None, None),
                                                           "UNFORMATTED_VALUE", "FORMATTED_STRING")[1]  # fmt: skip

    def set(self, spreadsheet_id: str, sheet: str, cell: str, value: Any) -> None:
        """A person typing into one cell (the value as stored: str, number, bool, date)."""
        book = self.books[spreadsheet_id]
        book.sheet(sheet).put(parse_a1(f"{sheet}!{cell}"), [[value]], user_entered=False)
        book.touch()

    def insert_row(self, spreadsheet_id: str, sheet: str, row: int, values: list[Any]) -> None:
        book = self.books[spreadsheet_id]
        s = book.sheet(sheet)
        s.insert_rows(row - 1, 1)
        s.put(parse_a1(f"{sheet}!A{row}"), [values], user_entered=False)
        book.touch()

    def delete_row(self, spreadsheet_id: str, sheet: str, row: int) -> None:
        book = self.books[spreadsheet_id]
        book.sheet(sheet).delete_rows(row - 1, row)
        book.touch()

    def hidden_columns(self, spreadsheet_id: str, sheet: str) -> frozenset[int]:
        """The sheet's columns (0-based) whose ``hiddenByUser`` is true."""
        book = self.books[spreadsheet_id]
        return frozenset(book.hidden.get(book.sheet(sheet).sheet_id, ()))

    def hold(self) -> None:
        """API requests (not token requests) wait for :meth:`release` before they are handled."""
        self._moving.clear()

    def release(self) -> None:
        self._moving.set()

    # --- the API -------------------------------------------------------------------------------

    async def _gatekeep(self, request: Request) -> Response | None:
        await _record(request, self.seen)
        if not self._moving.is_set():
            await asyncio.to_thread(self._moving.wait)
        if self.outage is not None:
            return google_error(self.outage, "The service is currently unavailable.")
        if self.faults.queue:
            status, headers = self.faults.queue.popleft()
            return google_error(status, "injected", headers)
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if self.tokens.get(token, 0.0) <= time.time():
            return google_error(401, "Request had invalid authentication credentials. Expected OAuth 2 access "
                                "token, login cookie or other valid authentication credential.")  # fmt: skip
        return None

    async def _token(self, request: Request) -> Response:
        await _record(request, self.seen)
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode()).items()}
        if form.get("grant_type") != JWT_BEARER:
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        assertion = str(form.get("assertion", ""))
        try:
            header = jwt.decode_header(assertion)  # type: ignore[no-untyped-call]  # google-auth has no types here
            email, public = self.keys[header.get("kid", "")]
            audience = [str(request.url), GOOGLE_TOKEN_AUDIENCE]
            claims = jwt.decode(  # type: ignore[no-untyped-call]  # google-auth has no types here
                assertion, certs={header["kid"]: public.decode()}, audience=audience
            )
        except (KeyError, ValueError, google_exceptions.GoogleAuthError) as exc:
            return JSONResponse({"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"}, 400)
        if claims.get("iss") != email or not claims.get("scope"):
            return JSONResponse({"error": "invalid_grant", "error_description": "Invalid JWT claims"}, 400)
        token = "ya29." + secrets.token_urlsafe(24)
        self.tokens[token] = time.time() + self.token_lifetime
        self.issued += 1
        return JSONResponse({"access_token": token, "expires_in": int(self.token_lifetime), "token_type": "Bearer"})

    async def _drive_file(self, request: Request) -> Response:
        refused = await self._gatekeep(request)
        if refused is not None:
            return refused
        book = self.books.get(request.path_params["file_id"])
        if book is None:
            return google_error(404, f"File not found: {request.path_params['file_id']}.")
        full = {
            "kind": "drive#file",
            "id": book.id,
            "name": book.title,
            "mimeType": "application/vnd.google-apps.spreadsheet",
            "createdTime": _rfc3339(book.created),
            "modifiedTime": _rfc3339(book.modified),
            "version": str(book.version),
        }
        fields = request.query_params.get("fields")
        if fields:
            wanted = {f.strip() for f in fields.split(",")}
            return JSONResponse({k: v for k, v in full.items() if k in wanted})
        return JSONResponse({k: full[k] for k in ("kind", "id", "name", "mimeType")})

    async def _sheets(self, request: Request) -> Response:
        refused = await self._gatekeep(request)
        if refused is not None:
            return refused
        rest = request.path_params["rest"]  # already percent-decoded by the server
        sid, _, tail = rest.partition("/")
        verb = ""
        if not tail and ":" in sid:
            sid, _, verb = sid.partition(":")
        book = self.books.get(sid)
        if book is None:
            return google_error(404, "Requested entity was not found.")
        try:
            body = json.loads(await request.body() or b"{}")
            return self._dispatch(request, book, request.method, verb, tail, body)
        except RangeError as exc:
            return google_error(400, str(exc))
        except (ValueError, KeyError, TypeError) as exc:
            return google_error(400, f"Invalid JSON payload received. {exc}")

    def _dispatch(self, request: Request, book: Spreadsheet, method: str, verb: str, tail: str, body: Any) -> Response:
        q = request.query_params
        if not tail and not verb and method == "GET":
            return JSONResponse(book.resource())
        if verb == "batchUpdate" and method == "POST":
            return self._structure(book, body)
        if tail == "values:batchGet" and method == "GET":
            ranges = q.getlist("ranges")
            out = [self._get(book, r, q) for r in ranges]
            return JSONResponse({"spreadsheetId": book.id, "valueRanges": out})
        if tail == "values:batchUpdate" and method == "POST":
            user = self._input_option(body.get("valueInputOption"))
            responses = [self._put(book, d["range"], d.get("values", []), user) for d in body.get("data", [])]
            book.touch()
            return JSONResponse({
                "spreadsheetId": book.id,
                "totalUpdatedRows": sum(r.get("updatedRows", 0) for r in responses),
                "totalUpdatedColumns": max((r.get("updatedColumns", 0) for r in responses), default=0),
                "totalUpdatedCells": sum(r.get("updatedCells", 0) for r in responses),
                "totalUpdatedSheets": len({r["updatedRange"].rpartition("!")[0] for r in responses}),
                "responses": responses,
            })  # fmt: skip
        if tail == "values:batchClear" and method == "POST":
            for rng in body.get("ranges", []):
                a1 = parse_a1(rng)
                book.sheet(a1.sheet).clear(a1)
            book.touch()
            return JSONResponse({"spreadsheetId": book.id, "clearedRanges": list(body.get("ranges", []))})
        if not tail.startswith("values/"):
            return google_error(404, "Requested entity was not found.")
        rng = tail.removeprefix("values/")
        if rng.endswith(":append") and method == "POST":
            return self._append(book, rng.removesuffix(":append"), body, q)
        if rng.endswith(":clear") and method == "POST":
            a1 = parse_a1(rng.removesuffix(":clear"))
            book.sheet(a1.sheet).clear(a1)
            book.touch()
            return JSONResponse({"spreadsheetId": book.id, "clearedRange": rng.removesuffix(":clear")})
        if method == "GET":
            return JSONResponse(self._get(book, rng, q))
        if method == "PUT":
            answer = self._put(book, rng, body.get("values", []), self._input_option(q.get("valueInputOption")))
            book.touch()
            return JSONResponse(answer)
        return google_error(404, "Requested entity was not found.")

    @staticmethod
    def _input_option(option: str | None) -> bool:
        if option not in ("RAW", "USER_ENTERED"):
            raise RangeError(f"Invalid valueInputOption: {option!r} ('RAW' or 'USER_ENTERED')")
        return option == "USER_ENTERED"

    def _get(self, book: Spreadsheet, rng: str, q: Any) -> dict[str, Any]:
        major = q.get("majorDimension", "ROWS")
        if major not in ("ROWS", "COLUMNS"):
            raise RangeError(f"Invalid majorDimension: {major}")
        a1 = parse_a1(rng)
        sheet = book.sheet(a1.sheet)
        render = q.get("valueRenderOption", "FORMATTED_VALUE")
        dates = q.get("dateTimeRenderOption", "SERIAL_NUMBER")
        where, values = sheet.get(a1, render, dates)
        if major == "COLUMNS":
            width = max((len(r) for r in values), default=0)
            values = [[r[c] if c < len(r) else "" for r in values] for c in range(width)]
            for col in values:
                while col and col[-1] == "":
                    col.pop()
        out: dict[str, Any] = {"range": where, "majorDimension": major}
        if values:
            out["values"] = values
        return out

    def _put(self, book: Spreadsheet, rng: str, values: list[list[Any]], user: bool) -> dict[str, Any]:
        a1 = parse_a1(rng)
        where, rows, cols, cells = book.sheet(a1.sheet).put(a1, values, user)
        return {"spreadsheetId": book.id, "updatedRange": where, "updatedRows": rows, "updatedColumns": cols,
                "updatedCells": cells}  # fmt: skip

    def _append(self, book: Spreadsheet, rng: str, body: Any, q: Any) -> Response:
        user = self._input_option(q.get("valueInputOption"))
        a1 = parse_a1(rng)
        sheet = book.sheet(a1.sheet)
        values = body.get("values", [])
        start = max(sheet.last_row(), a1.row0 or 0)
        table = sheet.a1(a1.row0 or 0, a1.col0 or 0, max(start, (a1.row0 or 0) + 1), sheet.column_count)
        if q.get("insertDataOption", "OVERWRITE") == "INSERT_ROWS":
            sheet.insert_rows(start, len(values))
        elif start + len(values) > sheet.row_count:
            sheet.row_count = start + len(values)  # appending grows the grid
        where, rows, cols, cells = sheet.put(A1(sheet.title, start, a1.col0 or 0, None, None), values, user)
        book.touch()
        updates = {"spreadsheetId": book.id, "updatedRange": where, "updatedRows": rows,
                   "updatedColumns": cols, "updatedCells": cells}  # fmt: skip
        return JSONResponse({"spreadsheetId": book.id, "tableRange": table, "updates": updates})

    def _structure(self, book: Spreadsheet, body: Any) -> Response:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            raise RangeError("Must specify at least one request.")
        saved = [(s, [list(r) for r in s.rows], s.row_count, s.column_count) for s in book.sheets]
        hidden = {k: set(v) for k, v in book.hidden.items()}
        try:
            for req in requests:
                ((kind, spec),) = req.items()
                if kind == "deleteDimension":
                    r = spec["range"]
                    sheet = book.by_id(int(r["sheetId"]))
                    if r["dimension"] != "ROWS":
                        raise RangeError("the fake deletes ROWS only")
                    sheet.delete_rows(int(r["startIndex"]), int(r["endIndex"]))
                elif kind == "insertDimension":
                    r = spec["range"]
                    sheet = book.by_id(int(r["sheetId"]))
                    sheet.insert_rows(int(r["startIndex"]), int(r["endIndex"]) - int(r["startIndex"]))
                elif kind == "appendDimension":
                    sheet = book.by_id(int(spec["sheetId"]))
                    if spec["dimension"] == "COLUMNS":
                        sheet.column_count += int(spec["length"])
                    else:
                        sheet.row_count += int(spec["length"])
                elif kind == "updateDimensionProperties":
                    self._dimension_properties(book, spec)
                elif kind == "addSheet":
                    title = spec.get("properties", {}).get("title") or f"Sheet{len(book.sheets) + 1}"
                    if any(s.title == title for s in book.sheets):
                        raise RangeError(f'A sheet with the name "{title}" already exists.')
                    book.sheets.append(Sheet(next(self._sheet_ids), title))
                else:
                    raise RangeError(f"the fake does not implement {kind}")
        except BaseException:
            for s, rows, nrows, ncols in saved:  # all or nothing, as the API applies a batch
                s.rows, s.row_count, s.column_count = rows, nrows, ncols
            book.hidden = hidden
            raise
        book.touch()
        return JSONResponse({"spreadsheetId": book.id, "replies": [{} for _ in requests]})

    @staticmethod
    def _dimension_properties(book: Spreadsheet, spec: dict[str, Any]) -> None:
        """``updateDimensionProperties``: only ``hiddenByUser`` of COLUMNS (the root ``properties`` implied in
        ``fields``, as the API wants it); a range without ``startIndex``/``endIndex`` is open at that end."""
        fields = {f.strip() for f in str(spec.get("fields") or "").split(",") if f.strip()}
        if not fields:
            raise RangeError("Invalid updateDimensionProperties: 'fields' must be set.")
        if fields != {"hiddenByUser"}:
            raise RangeError(f"the fake updates hiddenByUser only, not {sorted(fields)}")
        if "dataSourceSheetRange" in spec:
            raise RangeError("the fake has no data source sheets")
        r = spec["range"]
        sheet = book.by_id(int(r["sheetId"]))
        if r.get("dimension") != "COLUMNS":
            raise RangeError("the fake updates the properties of COLUMNS only")
        start, end = int(r.get("startIndex", 0)), int(r.get("endIndex", sheet.column_count))
        if not 0 <= start < end or end > sheet.column_count:
            raise RangeError(f"Invalid updateDimensionProperties: range [{start}, {end}) is out of the "
                             f"grid's {sheet.column_count} columns")  # fmt: skip
        columns = book.hidden.setdefault(sheet.sheet_id, set())
        if spec["properties"].get("hiddenByUser", False):  # absent from a named field: its default, false
            columns.update(range(start, end))
        else:
            columns.difference_update(range(start, end))


def _rfc3339(moment: dt.datetime) -> str:
    """Drive's timestamps: UTC, milliseconds, ``Z``."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
