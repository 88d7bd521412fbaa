"""A destination per test on each real database (see helpers.Dest).

``dest`` is parametrized over Postgres (a fresh database on 127.0.0.1:5432),
MariaDB (a fresh database on 127.0.0.1:3306) and SQLite (a file in tmp_path);
the databases come from the shared fixtures in tests/conftest.py and are
dropped afterwards. A test for some databases only narrows it with
``@pytest.mark.parametrize("dest", [...], indirect=True)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.integration.sql_sinks.helpers import DATABASES, Dest


@pytest.fixture(params=DATABASES)
async def dest(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Dest]:
    kind = request.param
    if kind == "postgres":
        target = request.getfixturevalue("pg_database")
    elif kind == "mariadb":
        target = request.getfixturevalue("mariadb_database")
    else:
        target = str(tmp_path / "dest.db")
    d = Dest(kind, target)
    try:
        yield d
    finally:
        for sink in d.sinks:
            await sink.close()
        d.close()
