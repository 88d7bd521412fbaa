"""One docs page per connector, rendered from its config model: the options tables of the docs site.

``python -m tidesync.reference --pages docs/connectors/generated`` writes one markdown file per
source and sink type (a type's aliases share its page): the type's summary, a complete example config
and every key with its type, default and meaning (the rows of :mod:`tidesync.reference`). The pages
cannot drift from the code: tests/unit/test_docs_site.py compares the committed files with
:func:`render_pages`, and tests/unit/test_readme.py validates each page's example as a config.

The examples live here, not in the models, because a page needs a whole pipeline around its connector;
a registered type without one gets a page without an example, which the docs test refuses.
"""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from tidesync.reference import _table
from tidesync.registry import REGISTRY, Kind

COMMAND = "python -m tidesync.reference --pages docs/connectors/generated"

# What each example's other end is: a source page writes to this sink, a sink page reads this source.
_PG_SINK: dict[str, Any] = {
    "type": "postgres",
    "dsn": "postgresql://postgres@127.0.0.1/warehouse",
    "create_tables": True,
}
_PG_SOURCE: dict[str, Any] = {
    "type": "postgres",
    "dsn": "postgresql://postgres@127.0.0.1/crm",
    "tables": ["public.customers"],
}

_EXAMPLES: dict[tuple[Kind, str], dict[str, Any]] = {
    ("source", "csv"): {"type": "csv", "path": "customers.csv", "key": ["id"], "columns": {"id": "integer"}},
    ("source", "gsheets"): {
        "type": "gsheets",
        "spreadsheet_id": "1AbCdEfGhIjKlMnOpQrStUvWxYz",
        "sheet": "Customers",
        "key": ["id"],
        "credentials": "${file:sa.json}",
    },
    ("source", "hubspot"): {"type": "hubspot", "token": "${env:HUBSPOT_TOKEN}", "objects": ["contacts"]},
    ("source", "hybrid"): {
        "type": "hybrid",
        "primary": {"type": "webhook", "provider": "stripe", "secrets": ["${env:STRIPE_WHSEC}"]},
        "fallback": {"type": "stripe", "api_key": "${env:STRIPE_KEY}", "poll_interval": "30s"},
    },
    ("source", "mariadb"): {
        "type": "mariadb",
        "dsn": "mysql://cdc:${env:CDC_PASSWORD}@127.0.0.1:3306/shop",
        "tables": ["orders"],
        "server_id": 4242,
    },
    ("source", "mqtt"): {"type": "mqtt", "url": "mqtt://127.0.0.1:1883", "topics": ["cdc/#"], "client_id": "apply-1"},
    ("source", "nats"): {"type": "nats", "url": "nats://127.0.0.1:4222", "stream": "CDC", "consumer": "apply-1"},
    ("source", "postgres"): _PG_SOURCE,
    ("source", "rabbitmq"): {
        "type": "rabbitmq",
        "url": "amqp://guest:guest@127.0.0.1/",
        "queue": "cdc-apply",
        "bind": {"exchange": "cdc", "routing_keys": ["cdc.#"]},
    },
    ("source", "redis"): {
        "type": "redis",
        "url": "redis://127.0.0.1:6379",
        "streams": ["cdc.public.orders"],
        "group": "apply",
    },
    ("source", "sql_poll"): {
        "type": "sql_poll",
        "dsn": "mysql://root@127.0.0.1:3306/billing",
        "tables": ["accounts"],
        "cursor": "updated_at",
    },
    ("source", "sqlite"): {"type": "sqlite", "path": "crm.db", "tables": ["customers"], "snapshot": "initial"},
    ("source", "stripe"): {"type": "stripe", "api_key": "${env:STRIPE_KEY}", "objects": ["customer", "invoice"]},
    ("source", "webhook"): {"type": "webhook", "provider": "stripe", "secrets": ["${env:STRIPE_WHSEC}"]},
    ("sink", "csv"): {"type": "csv", "path": "exports/customers.csv", "key": ["id"]},
    ("sink", "discard"): {"type": "discard"},
    ("sink", "gsheets"): {
        "type": "gsheets",
        "spreadsheet_id": "1AbCdEfGhIjKlMnOpQrStUvWxYz",
        "sheet": "Customers",
        "key": ["id"],
        "credentials": "${file:sa.json}",
    },
    ("sink", "hubspot"): {
        "type": "hubspot",
        "token": "${env:HUBSPOT_TOKEN}",
        "objects": {"public.customers": {"type": "contacts", "id_property": "email"}},
    },
    ("sink", "mariadb"): {
        "type": "mariadb",
        "dsn": "mysql://root@127.0.0.1:3306/billing",
        "tables": {"public.customers": "accounts"},
        "create_tables": True,
    },
    ("sink", "mqtt"): {
        "type": "mqtt",
        "url": "mqtt://127.0.0.1:1883",
        "topic": "cdc/{partition}/{entity}",
        "partitions": 8,
    },
    ("sink", "nats"): {
        "type": "nats",
        "url": "nats://127.0.0.1:4222",
        "stream": "CDC",
        "subject": "cdc.{partition}.{entity}",
        "partitions": 8,
        "create_stream": True,
    },
    ("sink", "postgres"): {
        "type": "postgres",
        "dsn": "postgresql://postgres@127.0.0.1/billing",
        "tables": {"public.customers": "public.accounts"},
    },
    ("sink", "rabbitmq"): {
        "type": "rabbitmq",
        "url": "amqp://guest:guest@127.0.0.1/",
        "exchange": "cdc",
        "routing_key": "cdc.{partition}",
        "partitions": 8,
    },
    ("sink", "redis"): {"type": "redis", "url": "redis://127.0.0.1:6379", "stream": "cdc.{entity}"},
    ("sink", "sqlite"): {"type": "sqlite", "path": "copy.db", "create_tables": True},
    ("sink", "stripe"): {
        "type": "stripe",
        "api_key": "${env:STRIPE_KEY}",
        "objects": {"public.customers": "customers"},
    },
    ("sink", "webhook"): {
        "type": "webhook",
        "url": "https://example.com/hooks/tidesync",
        "secrets": ["${env:HOOK_SECRET}"],
    },
}

# Hand-written guides, as paths relative to the generated pages' folder (docs/connectors/generated/).
_README = "../../../README.md"
_GUIDES: dict[tuple[Kind, str], list[tuple[str, str]]] = {
    ("source", "postgres"): [
        ("Options that decide what is written", f"{_README}#options-that-decide-what-is-written"),
        ("Schema changes", f"{_README}#schema-changes"),
    ],
    ("source", "mariadb"): [("MariaDB / MySQL change data capture", "../mariadb-binlog.md")],
    ("source", "csv"): [("File spreadsheets: source", "../sheets.md#source")],
    ("sink", "csv"): [("File spreadsheets: sink", "../sheets.md#sink")],
    ("source", "gsheets"): [("Google Sheets", "../sheets.md#google-sheets-type-gsheets")],
    ("sink", "gsheets"): [("Google Sheets", "../sheets.md#google-sheets-type-gsheets")],
    ("sink", "hubspot"): [("HubSpot CRM as a destination", "../hubspot.md")],
    ("sink", "stripe"): [("Stripe as a destination", "../stripe.md")],
    ("source", "webhook"): [("Security: webhook replays", f"{_README}#security")],
    ("sink", "webhook"): [("Event formats", f"{_README}#event-formats")],
}
_BROKERS = {"redis": "Redis Streams", "nats": "NATS JetStream", "rabbitmq": "RabbitMQ", "mqtt": "MQTT"}
for _broker, _title in _BROKERS.items():
    for _kind in ("source", "sink"):
        _GUIDES[(_kind, _broker)] = [(_title, f"{_README}#{_title.lower().replace(' ', '-')}")]
for _sql in ("postgres", "mariadb", "sqlite"):
    _GUIDES.setdefault(("sink", _sql), []).extend(
        [
            ("Options that decide what is written", f"{_README}#options-that-decide-what-is-written"),
            ("Output for analytics destinations", "../../analytics.md"),
        ]
    )


def _types(kind: Kind) -> list[tuple[str, list[str], type[BaseModel]]]:
    """(page type, its aliases, model) per distinct config model: the first registered name owns the page."""
    owners: dict[type[BaseModel], tuple[str, list[str]]] = {}
    for name in REGISTRY.names(kind):
        model = REGISTRY.get(kind, name).model()
        if model in owners:
            owners[model][1].append(name)
        else:
            owners[model] = (name, [])
    return [(name, aliases, model) for model, (name, aliases) in owners.items()]


def page_name(kind: Kind, type_: str) -> str:
    return f"{kind}-{type_}.md"


def example(kind: Kind, type_: str) -> str | None:
    """A complete config around the connector, as YAML; None when the type has no example here."""
    connector = _EXAMPLES.get((kind, type_))
    if connector is None:
        return None
    source, sink = (connector, _PG_SINK) if kind == "source" else (_PG_SOURCE, connector)
    config = {
        "state": "sqlite:///.tidesync/state.db",
        "pipelines": [{"name": f"{type_.replace('_', '-')}-example", "source": source, "sink": sink}],
    }
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=None, width=100)


def _page(kind: Kind, type_: str, aliases: list[str], model: type[BaseModel]) -> str:
    plugin = REGISTRY.get(kind, type_)
    module = importlib.import_module(model.__module__).__name__
    also = f" (also `type: {'`, `'.join(aliases)}`)" if aliases else ""
    # The config reference's heading for this type, as a link anchor (the slug mkdocs and GitHub both make).
    anchor = re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", f"type: {type_} {kind}{also}").strip().lower())
    lines = [
        f"# `type: {type_}` {kind}{also}",
        "",
        f"<!-- Generated by `{COMMAND}` from {model.__name__}; edit the model, not this page. -->",
        "",
        f"{plugin.summary}.",
        "",
        f"Module: `{module}`. The same table is in the [config reference](../../config-reference.md#{anchor}).",
    ]
    guides = _GUIDES.get((kind, type_), [])
    if guides:
        lines += ["", "More: " + "; ".join(f"[{title}]({target})" for title, target in guides) + "."]
    text = example(kind, type_)
    if text is not None:
        lines += ["", "## Example", "", "```yaml", text.rstrip("\n"), "```"]
    lines += ["", "## Options", "", *_table(model)]
    return "\n".join(lines) + "\n"


def _overview() -> list[str]:
    kinds: tuple[Kind, ...] = ("source", "sink")
    lines = [
        "# Connectors",
        "",
        f"<!-- Generated by `{COMMAND}`; edit the models and tidesync.reference_pages, not this page. -->",
        "",
        "The `type:` of a source or sink. Each page has an example config that validates and every key",
        "with its type, default and meaning, generated from the connector's config model.",
    ]
    for kind in kinds:
        lines += ["", f"## {kind.title()}s", "", "| type | what it does | guides |", "| --- | --- | --- |"]
        for type_, aliases, _model in _types(kind):
            names = ", ".join(f"`{n}`" for n in (type_, *aliases))
            guides = ", ".join(f"[{title}]({target})" for title, target in _GUIDES.get((kind, type_), []))
            summary = REGISTRY.get(kind, type_).summary.replace("|", "\\|")
            lines.append(f"| [{names}]({page_name(kind, type_)}) | {summary} | {guides} |")
    return lines


def render_pages() -> dict[str, str]:
    """File name -> page text: ``index.md`` (every type, one line each) and one page per type."""
    pages: dict[str, str] = {"index.md": "\n".join(_overview()) + "\n"}
    kinds: tuple[Kind, ...] = ("source", "sink")
    for kind in kinds:
        for type_, aliases, model in _types(kind):
            pages[page_name(kind, type_)] = _page(kind, type_, aliases, model)
    return pages


def write_pages(folder: Path) -> list[Path]:
    """Write every page into ``folder`` and remove pages of types that no longer exist; the paths written."""
    folder.mkdir(parents=True, exist_ok=True)
    pages = render_pages()
    for stale in folder.glob("*.md"):
        if stale.name not in pages:
            stale.unlink()
    written = []
    for name, text in pages.items():
        path = folder / name
        path.write_text(text)
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_pages(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/connectors/generated")):
        print(path)
