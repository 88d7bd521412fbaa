"""Several pipelines writing into one fresh database open their sinks at the same moment (one process
starting them all): each creates the position table and the entity's table if missing, and none fails."""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.sql_sinks.helpers import Dest, ev


@pytest.mark.parametrize("dest", ["postgres", "mariadb"], indirect=True)
async def test_sinks_opening_and_creating_tables_at_once_all_succeed(dest: Dest) -> None:
    sinks = await asyncio.gather(*(dest.sink(pipeline=f"p{i}", create_tables=True) for i in range(8)))
    await asyncio.gather(
        *(s.write([ev("insert", i, 1, after={"id": i, "name": f"n{i}", "qty": i})]) for i, s in enumerate(sinks))
    )
    assert sorted(r[0] for r in dest.rows()) == list(range(8))
