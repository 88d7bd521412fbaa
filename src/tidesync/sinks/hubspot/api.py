"""The HubSpot calls the sink makes, with the shared client's errors translated into delivery errors.

Translation (the one boundary, :func:`~tidesync.sources.http.delivery.delivery_errors`):

- 401/403 (after the token was read again): :class:`~tidesync.errors.SystemicError`,
  every write would fail the same way; the pipeline blocks until the token is fixed.
- 5xx, 408, timeouts, lost connections, 429s beyond the configured patience
  (after the client's own retries): :class:`~tidesync.errors.TransientError`.
- any other 4xx: :class:`Rejected` (a PermanentError carrying HubSpot's
  status, category and message, and the property names a 400 complains about).

Batch answers (200, or 207 when some inputs failed) come back as
:class:`BatchAnswer`: the results, and HubSpot's errors by the input they
name (``context.objectWriteTraceId``, else ``context.ids``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from tidesync.errors import PermanentError
from tidesync.sources.http.client import ApiClient
from tidesync.sources.http.delivery import delivery_errors

_PROPERTY_NAMES = re.compile(r'"name"\s*:\s*"([^"]+)"|[Pp]roperty \\?"?([A-Za-z0-9_]+)\\?"? does not exist')


class Rejected(PermanentError):
    """HubSpot refused a request (a 4xx other than 401/403/408/429)."""

    def __init__(self, message: str, status: int, body: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = body if isinstance(body, dict) else {}

    @property
    def category(self) -> str:
        return str(self.body.get("category") or "")

    def property_names(self) -> set[str]:
        """Properties a 400 names (PROPERTY_DOESNT_EXIST, INVALID_OPTION, ...): refresh the model and look again."""
        text = str(self.body.get("message") or "")
        names = {a or b for a, b in _PROPERTY_NAMES.findall(text)}
        for err in self.body.get("errors") or []:
            if isinstance(err, dict):
                ctx = err.get("context") or {}
                names.update(str(n) for n in ctx.get("propertyName", []) if isinstance(ctx, dict))
        return {n for n in names if n}


@dataclass(slots=True)
class InputError:
    category: str
    message: str

    @property
    def transient(self) -> bool:
        return self.category in {"RATE_LIMITS", "INTERNAL_ERROR", "TIMEOUT", "CONFLICT"}


@dataclass(slots=True)
class BatchAnswer:
    results: list[dict[str, Any]] = field(default_factory=list)
    errors: dict[str, InputError] = field(default_factory=dict)  # trace id or input id -> error


def _answer(body: Any) -> BatchAnswer:
    answer = BatchAnswer()
    if not isinstance(body, dict):
        return answer
    answer.results = [r for r in body.get("results") or [] if isinstance(r, dict)]
    for err in body.get("errors") or []:
        if not isinstance(err, dict):
            continue
        ctx = err.get("context") or {}
        refs = ctx.get("objectWriteTraceId") or ctx.get("ids") or ctx.get("id") or []
        error = InputError(str(err.get("category") or ""), str(err.get("message") or "failed"))
        for ref in [refs] if isinstance(refs, str) else refs:
            answer.errors[str(ref)] = error
    return answer


class HubSpotApi:
    """The endpoints the sink uses; every method raises only tidesync delivery errors."""

    def __init__(self, client: ApiClient) -> None:
        self.client = client

    @staticmethod
    def _translated(what: str) -> AbstractContextManager[None]:
        return delivery_errors(
            lambda exc: Rejected(f"{what}: {exc}", exc.status, exc.body), refused="HubSpot refused the token"
        )

    async def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        with self._translated(path):
            return await self.client.post(path, body)

    async def properties(self, object_type: str) -> list[dict[str, Any]]:
        path = f"/crm/v3/properties/{object_type}"
        with self._translated(path):
            body = await self.client.get(path, {"archived": "false"})
        results = body.get("results") if isinstance(body, dict) else None
        return [r for r in results or [] if isinstance(r, dict)]

    async def upsert(self, object_type: str, inputs: Sequence[Mapping[str, Any]]) -> BatchAnswer:
        return _answer(await self._post(f"/crm/v3/objects/{object_type}/batch/upsert", {"inputs": list(inputs)}))

    async def update(self, object_type: str, inputs: Sequence[Mapping[str, Any]]) -> BatchAnswer:
        return _answer(await self._post(f"/crm/v3/objects/{object_type}/batch/update", {"inputs": list(inputs)}))

    async def archive(self, object_type: str, ids: Sequence[str]) -> None:
        await self._post(f"/crm/v3/objects/{object_type}/batch/archive", {"inputs": [{"id": i} for i in ids]})

    async def read(self, object_type: str, values: Sequence[str], id_property: str) -> dict[str, str]:
        """Record ids by the value of the unique ``id_property``; values HubSpot has no record for are absent."""
        body = {"inputs": [{"id": v} for v in values], "idProperty": id_property, "properties": [id_property]}
        answer = _answer(await self._post(f"/crm/v3/objects/{object_type}/batch/read", body))
        found: dict[str, str] = {}
        for r in answer.results:
            value = (r.get("properties") or {}).get(id_property)
            if value is not None and r.get("id") is not None:
                found[str(value)] = str(r["id"])
        return found

    async def associate(self, from_type: str, to_type: str, pairs: Sequence[tuple[str, str]]) -> BatchAnswer:
        inputs = [{"from": {"id": a}, "to": {"id": b}} for a, b in pairs]
        path = f"/crm/v4/associations/{from_type}/{to_type}/batch/associate/default"
        return _answer(await self._post(path, {"inputs": inputs}))

    async def unassociate(self, from_type: str, to_type: str, pairs: Sequence[tuple[str, str]]) -> None:
        inputs = [{"from": {"id": a}, "to": [{"id": b}]} for a, b in pairs]
        await self._post(f"/crm/v4/associations/{from_type}/{to_type}/batch/archive", {"inputs": inputs})
