"""``tidesync validate CONFIG --check`` against the real Postgres and MariaDB on loopback and the API fakes.

A config whose endpoints are all fine exits 0 with every line ok (text and
``--json``); each broken endpoint gives a fail line carrying the statement or the
config change that fixes it: a missing destination table, a role without
REPLICATION, a MariaDB user without the replication grants, a refused Stripe key
or HubSpot token, a webhook URL nobody listens on.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pymysql
import pytest
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tests.conftest import MARIADB, PG_ADMIN, unique
from tests.integration.webhook_support import serve
from tidesync.checks import Check, run_checks
from tidesync.config import load_config_text
from tidesync.testing.hubspot import FakeHubSpot
from tidesync.testing.stripe import FakeStripe

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def receiver() -> Starlette:
    async def hook(request: object) -> PlainTextResponse:
        return PlainTextResponse("", 405)  # any answer counts as reachable

    return Starlette(routes=[Route("/hook", hook, methods=["GET", "POST"])])


def free_port() -> int:
    """A port nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pg_exec(dsn: str, *statements: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        for s in statements:
            conn.execute(s)


async def checks_of(text: str, tmp_path: Path) -> list[Check]:
    loaded = load_config_text(f"state: sqlite:///{tmp_path}/state.db\n{text}", tmp_path / "c.yaml")
    return (await run_checks(loaded, timeout=15)).checks


def only(checks: list[Check], target: str, name: str) -> Check:
    found = [c for c in checks if target in c.target and c.name == name]
    assert len(found) == 1, (target, name, checks)
    return found[0]


def pg_pipeline(dsn: str, sink: str) -> str:
    return f"""
pipelines:
  - name: shop
    source: {{type: postgres, dsn: "{dsn}", tables: [customers]}}
    sink: {sink}
"""


async def test_all_fine_exits_0_with_every_line_ok(pg_database: str, tmp_path: Path) -> None:
    pg_exec(
        pg_database,
        "CREATE TABLE customers (id int PRIMARY KEY, name text)",
        "CREATE TABLE accounts (id int PRIMARY KEY, name text)",
    )
    async with serve(app=receiver()) as hooks:
        config = tmp_path / "ok.yaml"
        config.write_text(f"""
state: sqlite:///{tmp_path}/state.db
pipelines:
  - name: shop
    sinks:
      - {{name: db, type: postgres, dsn: "{pg_database}", tables: {{public.customers: public.accounts}}}}
      - {{name: hook, type: webhook, url: "{hooks.url}/hook", secrets: "{SECRET}"}}
    source: {{type: postgres, dsn: "{pg_database}", tables: [customers]}}
""")
        text = await tidesync("validate", str(config), "--check")
        as_json = await tidesync("validate", str(config), "--check", "--json")
    code, out = text
    lines = [ln for ln in out.splitlines() if ln.strip()][:-1]  # the last line is the count
    assert code == 0, out
    assert len(lines) >= 12 and all(ln.startswith("ok ") for ln in lines), out
    for name in (
        "wal_level",
        "replication role",
        "replication slot",
        "publication",
        "table public.accounts",
        "reachable: http://",
    ):
        assert name in out
    code, out = as_json
    report = json.loads(out)
    assert code == 0 and report["ok"] is True
    assert {c["status"] for c in report["checks"]} == {"ok"}
    assert any(c["target"].startswith("pipeline shop.hook sink (webhook)") for c in report["checks"])


async def tidesync(*args: str) -> tuple[int, str]:
    """Exit code and stdout of the command line (stderr carries only logs)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tidesync.cli", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    return int(proc.returncode or 0), out.decode()


async def test_missing_destination_table_fails_unless_create_tables(pg_database: str, tmp_path: Path) -> None:
    pg_exec(pg_database, "CREATE TABLE customers (id int PRIMARY KEY)")
    sink = f'{{type: postgres, dsn: "{pg_database}", tables: {{public.customers: public.accounts}}}}'
    missing = only(await checks_of(pg_pipeline(pg_database, sink), tmp_path), "sink", "table public.accounts")
    assert missing.status == "fail"
    assert missing.fix is not None and "create_tables: true in pipelines[0].sink" in missing.fix
    sink = sink[:-1] + ", create_tables: true}"
    created = only(await checks_of(pg_pipeline(pg_database, sink), tmp_path), "sink", "table public.accounts")
    assert created.status == "ok" and "created at start" in created.detail


@pytest.fixture
def plain_role(pg_database: str) -> Iterator[str]:
    """A login role without REPLICATION (roles are cluster-wide: a unique name, dropped afterwards)."""
    role = unique("norepl")
    pg_exec(PG_ADMIN, f"CREATE ROLE {role} LOGIN")
    try:
        yield role
    finally:
        pg_exec(PG_ADMIN, f"DROP ROLE IF EXISTS {role}")


async def test_role_without_replication_fails_with_alter_role(
    pg_database: str, plain_role: str, tmp_path: Path
) -> None:
    pg_exec(pg_database, "CREATE TABLE customers (id int PRIMARY KEY)")
    dsn = pg_database.replace("postgres@", f"{plain_role}@")
    checks = await checks_of(pg_pipeline(dsn, '{type: "null"}'), tmp_path)
    role = only(checks, "source", "replication role")
    assert role.status == "fail"
    assert role.fix is not None and role.fix.startswith(f"ALTER ROLE {plain_role} WITH REPLICATION;")
    # not the owner of customers, so it cannot create the publication either: the owner's statement is given
    publication = only(checks, "source", "publication")
    assert publication.status == "fail" and "CREATE PUBLICATION tidesync_shop FOR TABLE" in (publication.fix or "")
    assert only(checks, "source", "wal_level").status == "ok"


@pytest.fixture
def mariadb_plain_user(mariadb_database: str) -> Iterator[tuple[str, str]]:
    """A MariaDB user that may read the test database but has no replication grants."""
    user = unique("norepl")
    db = mariadb_database.rsplit("/", 1)[1]
    conn = pymysql.connect(**MARIADB, autocommit=True)  # type: ignore[arg-type]
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE TABLE `{db}`.orders (id INT PRIMARY KEY, total INT)")
            cur.execute(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'pw'")
            cur.execute(f"GRANT SELECT ON `{db}`.* TO '{user}'@'%'")
        yield user, f"mysql://{user}:pw@127.0.0.1:3306/{db}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP USER IF EXISTS '{user}'@'%'")
        conn.close()


async def test_mariadb_user_without_grants_fails_with_grant(
    mariadb_plain_user: tuple[str, str], tmp_path: Path
) -> None:
    user, dsn = mariadb_plain_user
    text = f"""
pipelines:
  - name: orders
    source: {{type: mariadb, dsn: "{dsn}", tables: [orders, nosuch]}}
    sink: {{type: "null"}}
"""
    checks = await checks_of(text, tmp_path)
    for privilege in ("REPLICATION SLAVE", "REPLICATION CLIENT"):
        c = only(checks, "source", f"grant {privilege}")
        assert c.status == "fail"
        assert c.fix == f"GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO '{user}'@'%';"
    assert only(checks, "source", "binlog_format").status == "ok"
    assert only(checks, "source", "table " + dsn.rsplit("/", 1)[1] + ".orders").status == "ok"
    assert only(checks, "source", "table " + dsn.rsplit("/", 1)[1] + ".nosuch").status == "fail"


async def test_api_tokens_are_tried_against_the_fakes(tmp_path: Path) -> None:
    stripe, hubspot = FakeStripe(), FakeHubSpot()
    async with serve(app=stripe.app) as s, serve(app=hubspot.app) as h:

        def config(stripe_key: str, token: str) -> str:
            return f"""
pipelines:
  - name: billing
    source: {{type: stripe, api_key: "{stripe_key}", base_url: "{s.url}"}}
    sink: {{type: hubspot, token: "{token}", base_url: "{h.url}", objects: {{stripe.customer: {{type: contacts}}}}}}
  - name: crm
    source: {{type: hubspot, token: "{token}", base_url: "{h.url}", objects: [contacts]}}
    sink: {{type: stripe, api_key: "{stripe_key}", base_url: "{s.url}", objects: {{hubspot.contact: customers}}}}
"""

        good = await checks_of(config("sk_test_fake", "pat-na1-fake"), tmp_path)
        bad = await checks_of(config("sk_test_wrong", "pat-wrong"), tmp_path)
    api = [c for c in good if c.target.startswith("pipeline")]
    assert len(api) == 4 and all(c.status == "ok" for c in api), good
    refused = [c for c in bad if c.target.startswith("pipeline")]
    assert len(refused) == 4 and all(c.status == "fail" and "HTTP 401" in c.detail for c in refused), bad
    assert (
        only(bad, "billing source", "api_key").fix
        == "set a valid key in pipelines[0].source.api_key (e.g. ${env:NAME})"
    )
    paths = {seen.path for seen in stripe.seen} | {seen.path for seen in hubspot.seen}
    assert {"/v1/events", "/v1/customers"} <= paths


async def test_unreachable_webhook_url_fails(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/hook"
    public = f"http://127.0.0.1:{free_port()}"
    text = f"""
api: {{public_url: "{public}"}}
pipelines:
  - name: out
    source: {{type: sqlite, path: "{tmp_path}/src.db", tables: [t]}}
    sink: {{type: webhook, url: "{url}", secrets: "{SECRET}"}}
  - name: inbound
    source: {{type: webhook, provider: github, secrets: "s3cret"}}
    sink: {{type: sqlite, path: "{tmp_path}/dst.db", create_tables: true}}
"""
    checks = await checks_of(text, tmp_path)
    c = only(checks, "out sink", "reachable")
    assert c.status == "fail" and url in c.detail
    assert c.fix == "fix pipelines[0].sink.url, or start the receiver"
    assert only(checks, "inbound source", "route").detail.startswith("POST /webhooks/inbound")
    # nothing listens at the public URL yet: a warning (the server may not be started), not a failure
    hook = only(checks, "inbound source", "public url")
    assert hook.status == "warn" and f"{public}/webhooks/inbound" in hook.detail
