"""``tidesync validate --check``: connect to every endpoint of a config and check what its pipelines need.

Each endpoint (a pipeline's source and sink, a sync's two sides, the state store)
is one :class:`Endpoint`; :func:`checks_for` finds the family module that knows its
connector type (``postgres``, ``mariadb``, ``sql_sinks``, ``http``, ``brokers``) and
that module answers a list of :class:`Check`: one line each, ``ok``, ``warn`` or
``fail``, and for anything not ok the exact fix (a SQL statement, a config key).

Contract of a family check: an ``async`` function of an :class:`Endpoint` that
returns its checks and never raises for what it finds; an exception or a timeout
(``timeout`` seconds per endpoint) is reported by :func:`run_checks` as a
failed ``reachable`` check of that endpoint. Endpoints are checked concurrently;
nothing is written anywhere except a probe key in the state store (written and deleted).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Status = Literal["ok", "warn", "fail"]
DEFAULT_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class Check:
    """One line of the report: ``target`` (which endpoint), ``name`` (what), ``status``, ``detail``, ``fix``."""

    target: str
    name: str
    status: Status
    detail: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One thing to connect to.

    ``target`` labels the lines (``pipeline crm source (postgres)``); ``where`` is the
    config key path of its settings (``pipelines[0].sink``), for fixes that name a key;
    ``context`` is the name the connector runs under (slot and route defaults derive
    from it); ``entities`` the entities its pipeline's source produces, when known
    (SQL sinks check their tables); ``api`` the config's ``api:`` section.
    """

    target: str
    role: Literal["source", "sink", "state"]
    type: str
    config: Any
    where: str = ""
    context: str = ""
    entities: tuple[str, ...] | None = None
    api: Any = None

    def check(self, name: str, status: Status, detail: str, fix: str | None = None) -> Check:
        return Check(self.target, name, status, detail, fix)

    def ok(self, name: str, detail: str) -> Check:
        return Check(self.target, name, "ok", detail)


CheckFn = Callable[[Endpoint], Awaitable[list[Check]]]


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return any(c.status == "fail" for c in self.checks)


def checks_for(endpoint: Endpoint) -> CheckFn | None:
    """The family check of ``endpoint``'s connector type; None when there is nothing to check."""
    from tidesync.checks import brokers, http, mariadb, postgres, sql_sinks, state

    role, type_ = endpoint.role, endpoint.type
    if role == "state":
        return state.check_state
    if role == "source":
        table: dict[str, CheckFn] = {
            "postgres": postgres.check_source,
            "mariadb": mariadb.check_source,
            "mysql": mariadb.check_source,
            "webhook": http.check_webhook_source,
            "stripe": http.check_stripe,
            "hubspot": http.check_hubspot,
        }
    else:
        table = {
            "postgres": sql_sinks.check_sink,
            "mariadb": sql_sinks.check_sink,
            "mysql": sql_sinks.check_sink,
            "sqlite": sql_sinks.check_sink,
            "webhook": http.check_webhook_sink,
            "stripe": http.check_stripe,
            "hubspot": http.check_hubspot,
        }
    if type_ in brokers.TYPES:
        return brokers.check_broker
    if type_ in ("null", "discard"):
        return None
    return table.get(type_, _unchecked)


async def _unchecked(endpoint: Endpoint) -> list[Check]:
    return [endpoint.check("checked", "warn", f"--check has no checks for type {endpoint.type} yet")]


async def _guarded(fn: CheckFn, endpoint: Endpoint, timeout: float) -> list[Check]:
    try:
        return await asyncio.wait_for(fn(endpoint), timeout)
    except TimeoutError:
        return [endpoint.check("reachable", "fail", f"no answer within {timeout:g}s", "check the address and firewall")]
    except Exception as exc:  # a check found something it could not word: still one line, never a traceback
        return [endpoint.check("reachable", "fail", f"{type(exc).__name__}: {exc}")]


async def run_checks(loaded: Any, *, timeout: float = DEFAULT_TIMEOUT) -> Report:
    """Every check of every endpoint of ``loaded`` (a LoadedConfig), concurrently, in config order."""
    from tidesync.checks.endpoints import endpoints

    plan = [(e, fn) for e in endpoints(loaded) if (fn := checks_for(e)) is not None]
    results = await asyncio.gather(*(_guarded(fn, e, timeout) for e, fn in plan))
    return Report([c for found in results for c in found])
