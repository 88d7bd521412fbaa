"""No secret of a config is ever shown: a real ``tidesync serve``, every CLI command, every API route, grepped.

The config is the shared harness's default (an admin token read from a file,
four webhook signing secrets) plus pipelines full of connection strings, each
with a password in another form (URL userinfo, ``?password=``, libpq
``password=`` and ``password='p w'``, MariaDB, SQLAlchemy, a replication
source) for a role that does not exist, so every connection fails and its
error is logged, stored, shown by ``status``/``top`` and served by the API:
the place a password leaks. The state store is Postgres with its password in
the URL (trust authentication ignores it). Webhook sources sign with a
two-secret list and a two-secret string (rotations). Everything the run
printed or answered is searched for every secret value.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pydantic import TypeAdapter

from tests.integration.security_support import CONFIG, Served, new_secrets, served
from tidesync.secrets import REDACTOR, RedactingFilter, Secret, register_connection_secrets
from tidesync.state.url import redact_url
from tidesync.testing import wait_until

STATE = 'state: "postgresql://postgres@127.0.0.1/postgres?schema={schema}&password={pw_state}"'
PIPELINES = """\
  - name: rotating
    source: {{type: webhook, provider: github, name: rotating, secrets: ["{hook_old}", "{hook_new}"]}}
    sink: {{type: postgres, dsn: "postgresql://{user}:{pw_url}@127.0.0.1:5432/postgres"}}
  - name: query
    source: {{type: webhook, provider: github, name: query, secrets: "{hook_a} {hook_b}"}}
    sink: {{type: postgres, dsn: "postgresql://{user}@127.0.0.1:5432/postgres?sslmode=disable&password={pw_query}"}}
  - name: keyword
    source: {{type: webhook, provider: github, name: keyword, secrets: ["{hook_kw}"]}}
    sink: {{type: postgres, dsn: "host=127.0.0.1 port=5432 user={user} password={pw_kw} dbname=postgres"}}
  - name: quoted
    source: {{type: webhook, provider: github, name: quoted, secrets: ["{hook_quoted}"]}}
    sink: {{type: postgres, dsn: "host=127.0.0.1 user={user} password='{pw_quoted}' dbname=postgres"}}
  - name: maria
    source: {{type: webhook, provider: github, name: maria, secrets: ["{hook_maria}"]}}
    sink: {{type: mariadb, dsn: "mysql://{user}:{pw_maria}@127.0.0.1:3306/nowhere"}}
  - name: alchemy
    source:
      type: sql_poll
      dsn: "postgresql+psycopg://{user}:{pw_alchemy}@127.0.0.1/postgres"
      tables: [t]
      cursor: updated_at
    sink: {{type: discard}}
  - name: poll_keyword
    source:
      type: sql_poll
      dsn: "host=127.0.0.1 user={user} password={pw_poll} dbname=postgres"
      tables: [t]
      cursor: updated_at
    sink: {{type: discard}}
  - name: capture
    source: {{type: postgres, dsn: "postgresql://{user}@127.0.0.1/postgres?password={pw_capture}", tables: [t]}}
    sink: {{type: discard}}
"""
DEFAULT = ("stripe", "github", "hmac", "standard")  # the harness's pipelines, each a webhook route of that name
FAILING = ("rotating", "query", "keyword", "quoted", "maria", "alchemy", "poll_keyword", "capture")
HOOKS = (*DEFAULT, "rotating", "query", "keyword", "quoted", "maria")
NOT_SECRET = ("schema", "user")


def full_config() -> str:
    """The harness's config on a Postgres state store, with :data:`PIPELINES` added."""
    first, rest = CONFIG.split("\n", 1)
    assert first.startswith("state: ") and rest.rstrip().endswith("batch: {{max_events: 100, max_wait_ms: 5}}")
    return f"{STATE}\n{rest}{PIPELINES}"


def all_values() -> dict[str, str]:
    """Fresh values for :func:`full_config`: the harness's secrets, a role and a state schema, and the
    connection secrets (random, long enough to grep)."""

    def h() -> str:
        return secrets.token_hex(12)

    return {
        **new_secrets(),
        "schema": "ts_sec_" + secrets.token_hex(4),
        "user": "ts_no_role_" + secrets.token_hex(4),
        "pw_state": "st-" + h(),
        "hook_old": "old-" + h(),
        "hook_new": "new-" + h(),
        "hook_a": "ha-" + h(),
        "hook_b": "hb-" + h(),
        "hook_kw": "hk-" + h(),
        "hook_quoted": "hq-" + h(),
        "hook_maria": "hm-" + h(),
        "pw_url": "pu-" + h(),
        "pw_query": "pq-" + h(),
        "pw_kw": "pk-" + h(),
        "pw_quoted": f"pw {h()} with spaces",
        "pw_maria": "pm-" + h(),
        "pw_alchemy": "pa-" + h(),
        "pw_poll": "pp-" + h(),
        "pw_capture": "pc-" + h(),
    }


def needles(values: dict[str, str]) -> dict[str, str]:
    """What must never appear: each secret, and each word of one with spaces (half a password is a leak too)."""
    found = {name: v for name, v in values.items() if name not in NOT_SECRET}
    for name, value in list(found.items()):
        for i, word in enumerate(value.split()):
            if len(word) >= 12:
                found[f"{name}[{i}]"] = word
    return found


def tidesync(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "tidesync.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "400"},  # wide: no table cell cut short, so a value is whole if printed
    )


def cli_outputs(config: Path, *more: list[str]) -> dict[str, str]:
    """The commands that show a config or its pipelines, plus ``more``, run at once: ``{command: stdout + stderr}``."""
    commands = [
        ["validate", "--show", str(config)],
        ["--log-level", "debug", "status", str(config)],
        ["top", "--once", str(config)],
        *more,
    ]
    procs = [(" ".join(c), tidesync(*c)) for c in commands]
    texts: dict[str, str] = {}
    for name, proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        texts[name] = stdout + stderr
    assert "ok:" in texts[f"validate --show {config}"], texts[f"validate --show {config}"]
    return texts


def api_outputs(s: Served, pipelines: list[str], hooks: list[str]) -> dict[str, str]:
    """Every GET route the API lists (each pipeline's), /metrics, the dashboard, and refused webhook posts."""
    texts: dict[str, str] = {}
    with s.client(headers=s.auth, follow_redirects=True) as client:
        schema = client.get("/openapi.json")
        assert schema.status_code == 200
        texts["/openapi.json"] = schema.text
        paths = [p for p, ops in schema.json()["paths"].items() if "get" in ops]
        assert "/api/pipelines" in paths and "/api/errors" in paths
        urls = {"/", "/dashboard", "/metrics", *(f"/dashboard/{p}" for p in pipelines)}
        for path in paths:
            if "{name}" in path:
                urls.update(path.replace("{name}", p) for p in pipelines)
            else:
                urls.add(re.sub(r"\{\w+\}", "1", path))
        for url in sorted(urls):
            resp = client.get(url, params={"limit": 1} if url == "/api/stream" else None)
            assert resp.status_code in (200, 404), (url, resp.status_code, resp.text[:300])
            texts[f"GET {url}"] = resp.text
        for hook in hooks:  # a refusal must not quote what it compared against
            headers = {"content-type": "application/json", "x-hub-signature-256": "sha256=00"}
            resp = client.post(f"/webhooks/{hook}", content=b"{}", headers=headers)
            assert resp.status_code in (400, 401), (hook, resp.status_code, resp.text[:300])
            texts[f"POST /webhooks/{hook}"] = resp.text
    return texts


def assert_nothing_shows(found: dict[str, str], outputs: dict[str, str]) -> None:
    leaks = [(where, name) for where, text in outputs.items() for name, value in found.items() if value in text]
    assert not leaks, f"secrets shown: {leaks}"


def cli_config(s: Served, tmp: Path) -> Path:
    """The served config with the port it actually listens on, so ``top`` reads the live API."""
    text = (tmp / "tidesync.yaml").read_text()
    path = tmp / "cli.yaml"
    path.write_text(text.replace("127.0.0.1:0", s.url.removeprefix("http://")))
    return path


@pytest.fixture
def values() -> Iterator[dict[str, str]]:
    v = all_values()
    yield v
    with psycopg.connect("postgresql://postgres@127.0.0.1/postgres", autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{v["schema"]}" CASCADE')


def test_no_secret_shows_in_any_output_of_a_served_config(tmp_path: Path, values: dict[str, str]) -> None:
    with served(tmp_path, full_config(), values) as s:

        def all_failed() -> bool:
            with s.client(headers=s.auth) as client:
                rows = {r["name"]: r for r in client.get("/api/pipelines").json()}
            return all(rows[p]["last_error"] for p in FAILING)

        wait_until(all_failed, timeout=60, message="every connection to fail and say why")
        outputs = api_outputs(s, [*DEFAULT, *FAILING], HOOKS)
        config = cli_config(s, tmp_path)
        more = [["status", "--json", str(config)], ["dlq", "list", str(config)], ["drop", str(config), "capture"]]
        outputs.update(cli_outputs(config, *more))  # drop: not a terminal, so it only says what it would remove
    outputs["serve log"] = s.output()
    assert_nothing_shows(needles(values), outputs)

    # What is shown is still useful: the errors name the role, the config shows every key, masked.
    assert values["user"] in outputs["serve log"] and values["user"] in outputs["GET /api/pipelines"]
    assert "live from" in outputs[f"top --once {config}"]  # top read the running server
    shown = outputs[f"validate --show {config}"]
    assert '"secrets": [\n          "***",\n          "***"\n        ]' in shown, shown  # each of a rotation's two
    assert "password=***" in shown and f"{values['user']}:***@127.0.0.1" in shown
    assert "${file:" in shown  # a reference names no value: shown as written


def test_every_password_form_is_known_and_masked_by_position() -> None:
    """The redactor's two nets, in process: the values it was told (in every spelling), and the forms it
    masks whatever the value (a password too short to remember, or one it never saw)."""
    pw = "p@ss/" + secrets.token_hex(8)  # needs percent-encoding in a URL
    encoded = pw.replace("@", "%40").replace("/", "%2F")
    loaded = [
        f"postgresql://u:{encoded}@h/db",
        f"postgresql://u@h/db?sslmode=disable&password={encoded}",
        f"host=h user=u password='{pw} x' dbname=d",
        f"mysql://u:{encoded}@h:3306/d",
        f"postgresql+psycopg://u:{encoded}@h/d",
    ]
    register_connection_secrets({"pipelines": [{"sink": {"dsn": d}} for d in loaded]})
    for printed in (pw, encoded, f"{pw} x", f"login with {pw} refused"):  # as a driver might print it
        assert pw not in REDACTOR.redact(printed) and encoded not in REDACTOR.redact(printed), printed
    unknown = [  # never registered, some shorter than a value the redactor would remember
        ("postgresql://u:pw1@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u@h/db?password=pw2&sslmode=disable", "postgresql://u@h/db?password=***&sslmode=disable"),
        ("host=h password=pw3 dbname=d", "host=h password=*** dbname=d"),
        ("host=h password = 'p w\\'4' dbname=d", "host=h password = *** dbname=d"),
        ("host=h sslpassword=pw5", "host=h sslpassword=***"),
        ("cut short: password='pw6 and the rest", "cut short: password=***"),
    ]
    for text, masked in unknown:
        assert REDACTOR.redact(text) == masked
    assert REDACTOR.redact("password authentication failed for user x") == "password authentication failed for user x"
    assert redact_url("postgresql://u@h/db?schema=s&password=pw7") == "postgresql://u@h/db?schema=s&password=***"

    # Each element of a secret list, and each of a whitespace-separated string, on its own.
    old, new, a, b = (secrets.token_hex(8) for _ in range(4))
    TypeAdapter(Secret).validate_python([old, new])
    TypeAdapter(Secret).validate_python(f"{a} {b}")
    for value in (old, new, a, b):
        assert REDACTOR.redact(f"signed with {value}") == "signed with ***"

    # A logged traceback repeats the exception's message: masked too.
    record = logging.LogRecord("t", logging.ERROR, __file__, 1, "failed", None, None)
    try:
        raise RuntimeError(f"cannot connect to host=h password={pw} x")
    except RuntimeError:
        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    assert record.exc_text and "RuntimeError" in record.exc_text and pw not in record.exc_text
