from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.harnesses import SINKS, SOURCES


@pytest.fixture(params=sorted(SOURCES))
def source_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    h = SOURCES[request.param](tmp_path)
    yield h
    h.cleanup()


@pytest.fixture(params=sorted(SINKS))
def sink_harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    h = SINKS[request.param](tmp_path)
    yield h
    h.cleanup()
