"""``tidesync schema``: the JSON Schema accepts every config the docs show and rejects a misspelt key."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import yaml
from typer.testing import CliRunner

from tests.unit.test_readme import BASE, CONFIGS, Block
from tidesync.cli import app
from tidesync.config_schema import build_schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _config(block: Block) -> dict[str, Any]:
    data = yaml.safe_load(block.text)
    return data if "pipelines" in data or "syncs" in data else {**BASE, **data}


def _problems(validator: jsonschema.Draft202012Validator, config: Any) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:300]}" for e in validator.iter_errors(config)]


@pytest.mark.parametrize("block", CONFIGS, ids=lambda b: b.id)
def test_every_docs_config_matches_the_schema(block: Block, validator: jsonschema.Draft202012Validator) -> None:
    assert not _problems(validator, _config(block)), block.id


def _pipeline(sink: dict[str, Any], **extra: Any) -> dict[str, Any]:
    source = {"type": "postgres", "dsn": "postgresql://postgres@127.0.0.1/crm", "tables": ["public.customers"]}
    return {"pipelines": [{"name": "p", "source": source, "sink": sink, **extra}]}


def test_an_unknown_sink_key_is_rejected(validator: jsonschema.Draft202012Validator) -> None:
    good = {"type": "mariadb", "dsn": "mysql://root@127.0.0.1/billing"}
    assert not _problems(validator, _pipeline(good))
    assert _problems(validator, _pipeline({**good, "create_tabels": True}))
    # The key is known to another sink type only: the union is per type, not a union of every key.
    assert _problems(validator, _pipeline({"type": "sqlite", "path": "x.db", "dsn": "mysql://root@127.0.0.1/b"}))
    assert _problems(validator, _pipeline({"type": "no-such-sink"}))
    assert _problems(validator, _pipeline(good, transforms=[{"renam": {"a": "b"}}]))


def test_each_connector_type_is_a_branch_with_its_own_keys() -> None:
    schema = build_schema()
    defs = schema["$defs"]
    assert defs["Sink"]["discriminator"]["mapping"]["mysql"] == "#/$defs/sink.mysql"
    assert defs["sink.mysql"]["properties"]["type"] == {"const": "mysql"}
    assert "create_tables" in defs["sink.mariadb"]["properties"]
    assert "slot" in defs["source.postgres"]["properties"]
    assert defs["sink.mariadb"]["additionalProperties"] is False
