"""The ``syncs:`` section: a bad value is a ConfigError naming the key path and the file line."""

from __future__ import annotations

import pytest

from tidesync.config import load_config_text
from tidesync.errors import ConfigError
from tidesync.sync.build import build_parts, side_entity, side_source_config

GOOD = """\
state: sqlite:///state.db
syncs:
  - name: people
    a:
      source: {type: sqlite, path: /tmp/a.db, tables: [people]}
      table: people
      key: id
    b:
      source: {type: sql_poll, dsn: "mysql://root@127.0.0.1/crm", tables: [contacts], cursor: updated_at}
      table: contacts
      key: [cid]
    fields: {email: mail, name: full_name, score: score}
    match: {by: email, fallback: name}
    rules:
      default: lww
      skew: 2s
      fields: {score: sum, name: {prefer: b}}
    deletes: resurrect
    transforms: {b_to_a: [{cast: {score: int}}]}
"""


def test_a_good_sync_loads() -> None:
    loaded = load_config_text(GOOD)
    spec = loaded.sync("people")
    cfg = spec.config
    assert not cfg.shared_keys and cfg.deletes == "resurrect"
    rules = cfg.rule_set()
    assert (rules.skew, str(rules.for_field("name")), str(rules.for_field("score")), str(rules.default)) == (
        2.0,
        "prefer:b",
        "sum",
        "lww",
    )
    parts = build_parts(spec)
    assert parts.fmap.sides["b"].entity == "contacts" and parts.origins == {"a": None, "b": None}
    assert side_entity(cfg.a, spec.a_source) == "people"


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as exc:
        load_config_text(text)
    return str(exc.value)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "fields: {score: sum, name: {prefer: b}}",
            "fields: {score: newest}",
            "<config>:17: syncs[0].rules.fields.score",
        ),
        ("fields: {score: sum, name: {prefer: b}}", "fields: {phone: sum}", "phone not in fields"),
        ("      default: lww\n", "      default: lww\n      fallback: lww\n", "fallback must be manual"),
        ("type: sql_poll", "type: sql_pol", "syncs[0].b.source.type: unknown source type 'sql_pol'"),
        ("{b_to_a: [{cast: {score: int}}]}", "{b_to_a: [{rename: {score: points}}]}", "rename is not allowed"),
        ("    deletes: resurrect", "    deletes: sometimes", "<config>:18: syncs[0].deletes"),
        ("match: {by: email, fallback: name}", "match: {by: phone}", "match: phone not in fields"),
        ("      key: id\n", "      key: id\n      colour: red\n", "<config>:8: syncs[0].a.colour: unknown key"),
    ],
)
def test_errors_name_the_key_and_the_line(old: str, new: str, expected: str) -> None:
    assert old in GOOD
    assert expected in error_of(GOOD.replace(old, new))


def test_match_needs_sides_with_their_own_keys() -> None:
    text = GOOD.replace("fields: {email: mail,", "fields: {id: cid, email: mail,")
    assert "records are paired by key" in error_of(text)


def test_keys_are_shared_entirely_or_not_at_all() -> None:
    text = GOOD.replace("key: [cid]", "key: [cid, region]").replace(
        "fields: {email: mail,", "fields: {id: cid, email: mail,"
    )
    assert "map every key column of A onto B's key columns" in error_of(text)


def test_duplicate_sync_names() -> None:
    text = GOOD + GOOD.split("syncs:\n", 1)[1]
    assert "duplicate name 'people'" in error_of(text)


def test_a_postgres_side_keeps_no_row_shadow_unless_it_names_one() -> None:
    text = """\
state: sqlite:///state.db
syncs:
  - name: pp
    a: {source: {type: postgres, dsn: "postgresql://x@h/a", tables: [items]}, table: items, key: id}
    b: {source: {type: postgres, dsn: "postgresql://x@h/b", tables: [items], shadow: rows}, table: items, key: id}
    fields: {id: id, v: v}
"""
    spec = load_config_text(text).sync("pp")
    assert side_source_config(spec.a_source).shadow == "off"  # the sync narrows whole rows with its stream images
    assert side_source_config(spec.b_source).shadow == "rows"  # named: kept (fills unchanged TOAST)
    assert spec.a_source.shadow == "fingerprint"  # a pipeline's source keeps the default
