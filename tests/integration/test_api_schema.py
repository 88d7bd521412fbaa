"""`tidesync serve` fuzzed through its OpenAPI schema (schemathesis, with the token): never a 5xx, responses as
documented; and without the token every protected route answers 401 (the routes enumerated from the app)."""

from __future__ import annotations

import asyncio
import functools
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from starlette.routing import Route

from tests.integration.api_harness import SHOP, make_shop, src_insert
from tidesync.api.app import create_app
from tidesync.api.runtime import ApiRuntime
from tidesync.state import open_state_store
from tidesync.state.store import StateChanges
from tidesync.sync.record import Agreed, Seen
from tidesync.sync.store_layout import CONFLICTS, conflict_entry, conflict_key
from tidesync.testing import wait_until

PUBLIC = {"/healthz", "/webhooks/{source}", "/", "/dashboard", "/dashboard/{name}"}
SYNC = """\
syncs:
  - name: customers
    enabled: false
    a: {{source: {{type: sqlite, path: {tmp}/crm.db, tables: [customers]}}, table: customers, key: [id]}}
    b: {{source: {{type: sqlite, path: {tmp}/billing.db, tables: [accounts]}}, table: accounts, key: [id]}}
    fields: {{id: id, email: email}}
"""


async def seed_conflict(state_url: str) -> None:
    """A pending conflict, as the sync's review queue stores it."""
    store = open_state_store(state_url)
    await store.open()
    entry = conflict_entry(
        cid="customers:1", sync="customers", rid=(5,), keys={"a": (5,), "b": (5,)}, field="email",
        shadow=Agreed("old@x", 10.0, "a"), a=Seen("a@x", 20.0), b=Seen("b@x", 20.5),
        rule="manual", why="both sides changed email", created_at=21.0, updated_at=21.0,
    )  # fmt: skip
    await store.commit("customers", StateChanges(kv_put={(CONFLICTS, conflict_key("customers", 1)): entry}))
    await store.close()


@dataclass
class Served:
    url: str
    token: str
    tmp: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`tidesync serve` in a subprocess, with a dead letter and a pending conflict to look at."""
    tmp = tmp_path_factory.mktemp("serve")
    token = make_shop(tmp)
    config = tmp / "tidesync.yaml"
    config.write_text(SHOP.format(tmp=tmp) + SYNC.format(tmp=tmp))
    log = tmp / "serve.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tidesync.cli", "serve", str(config)],
            stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    try:
        found = wait_until(lambda: re.search(r"API listening on (http://\S+)", log.read_text()), timeout=60,
                           message="the server listening")  # fmt: skip
        url = found.group(1)
        auth = {"authorization": f"Bearer {token}"}
        wait_until(lambda: httpx.get(f"{url}/api/pipelines", headers=auth).json()[0]["state"] == "running",
                   timeout=30, message="the pipeline running")  # fmt: skip
        src_insert(tmp, [(1, 1, "ok"), (2, -2, "refused")])
        wait_until(lambda: httpx.get(f"{url}/api/dlq", headers={"authorization": f"Bearer {token}"}).json(),
                   timeout=30, message="a dead letter")  # fmt: skip
        asyncio.run(seed_conflict(f"sqlite:///{tmp}/state.db"))
        yield Served(url, token, tmp)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(60)
        assert code == 0, log.read_text()[-3000:]
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def app_routes(routes: list[Any]) -> Iterator[Any]:
    """Every route of the app, through included routers (FastAPI keeps those as wrappers of the router)."""
    for r in routes:
        inner = getattr(r, "original_router", None)
        if inner is not None:
            yield from app_routes(inner.routes)
        elif isinstance(r, APIRoute | Route):
            yield r


def _of_the_app(check: Any) -> Any:
    """``check``, skipped for a request the HTTP server refused as malformed before the app saw it (uvicorn's
    400 "Invalid HTTP request received.", e.g. for a generated ``content-length`` header that is no number):
    the schema describes the app's answers, and that one is not."""

    @functools.wraps(check)
    def checked(ctx: Any, response: Any, case: Any) -> bool | None:
        if response.status_code == 400 and response.text.startswith("Invalid HTTP request"):
            return None
        result: bool | None = check(ctx, response, case)
        return result

    return checked


CHECKS = [not_a_server_error] + [
    _of_the_app(c) for c in (status_code_conformance, content_type_conformance, response_schema_conformance)
]


KNOWN = {"name": "shop", "entry_id": 1, "conflict_id": "customers:1", "job_id": 1}


def fuzzer(
    op: Any, mode: GenerationMode, url: str, auth: dict[str, str], checks: list[Any], known: bool = False
) -> Any:
    """A hypothesis test of ``op``; with ``known``, path ids name things that exist (so happy paths run too)."""

    @settings(max_examples=20, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(case=op.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case) -> None:
        if known:
            for k in case.path_parameters or {}:
                if k in KNOWN:
                    case.path_parameters[k] = KNOWN[k]  # type: ignore[index]
            if isinstance(case.body, dict) and "ids" in case.body:
                case.body["ids"] = [1, 2]
        case.call_and_validate(base_url=url, headers=auth, checks=checks, timeout=60)

    return fuzz


@pytest.mark.slow
def test_fuzzing_the_schema_with_the_token_never_gives_a_5xx(served: Served) -> None:
    auth = {"Authorization": f"Bearer {served.token}"}
    schema = schemathesis.openapi.from_url(f"{served.url}/openapi.json", headers=auth, timeout=30)
    # The live stream ends only when the client leaves (tested on its own below).
    schema = schema.exclude(path="/api/stream")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    for op in operations:
        # the webhook intake answers unknown sources and bad bodies as its own module documents; only no 5xx here
        checks = [not_a_server_error] if op.path.startswith("/webhooks/") else CHECKS
        fuzzer(op, GenerationMode.POSITIVE, served.url, auth, checks)()
        if "{" in op.path or op.method.upper() == "POST":
            fuzzer(op, GenerationMode.POSITIVE, served.url, auth, checks, known=True)()
        try:
            fuzzer(op, GenerationMode.NEGATIVE, served.url, auth, checks)()
        except Unsatisfiable:  # nothing can be made invalid (no parameters, or only unconstrained strings)
            pass
    # the server is still healthy, and still serving the dead letter it had
    assert httpx.get(f"{served.url}/healthz").status_code == 200


def test_without_the_token_every_protected_route_answers_401(served: Served) -> None:
    routes = [(r.path, m) for r in app_routes(create_app(ApiRuntime()).routes)
              for m in sorted(r.methods or ()) if m != "HEAD"]  # fmt: skip
    protected = [(p, m) for p, m in routes if p not in PUBLIC]
    assert len(protected) >= 20 and ("/openapi.json", "GET") in protected and ("/metrics", "GET") in protected
    filled = {"{name}": "shop", "{entry_id}": "1", "{conflict_id}": "customers:1", "{job_id}": "1"}
    for headers in ({}, {"authorization": f"Bearer {served.token}-wrong"}, {"authorization": served.token}):
        for path, method in protected:
            url = path
            for k, v in filled.items():
                url = url.replace(k, v)
            assert "{" not in url, url
            resp = httpx.request(method, served.url + url, headers=headers, json={"ids": [1]}, timeout=30)
            assert resp.status_code == 401, (method, url, headers, resp.status_code, resp.text)
            assert served.token not in resp.text
    for path in ("/healthz", "/dashboard", "/dashboard/dashboard.js"):
        assert httpx.get(served.url + path).status_code == 200


def test_the_schema_needs_the_token_and_describes_every_response(served: Served) -> None:
    assert httpx.get(f"{served.url}/openapi.json").status_code == 401
    schema = httpx.get(f"{served.url}/openapi.json", headers={"authorization": f"Bearer {served.token}"}).json()
    assert schema["components"]["securitySchemes"]["token"] == {
        "type": "http", "scheme": "bearer",
        "description": "The admin token: the value of `api.token` in the config, as `Authorization: Bearer <token>`.",
    }  # fmt: skip
    for path, methods in schema["paths"].items():
        for method, op in methods.items():
            if path in PUBLIC:
                continue
            assert op.get("security") == [{"token": []}], (method, path)
            assert "401" in op["responses"], (method, path)
            ok = op["responses"].get("200") or op["responses"]["202"]
            if path in ("/metrics", "/api/stream"):
                continue
            body = ok["content"]["application/json"]["schema"]
            assert "$ref" in body or (body.get("type") == "array" and "$ref" in body["items"]), (method, path, body)


def test_the_live_stream_sends_overview_events(served: Served) -> None:
    params: dict[str, str | int | float] = {"limit": 3, "interval": 0.2}
    with httpx.stream("GET", f"{served.url}/api/stream", params=params, timeout=30,
                      headers={"authorization": f"Bearer {served.token}"}) as resp:  # fmt: skip
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines() if line.startswith("event: ")]
    assert events == ["event: overview"] * 3
