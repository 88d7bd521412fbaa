"""``tidesync --version`` and ``tidesync_build_info``: one version, from package metadata; process metrics."""

from __future__ import annotations

from importlib.metadata import version

from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

import tidesync
from tidesync.cli import app
from tidesync.observe.exposition import render


def test_version_is_the_package_metadata_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"tidesync {version('tidesync')}\n"
    assert tidesync.__version__ == version("tidesync")


def test_metrics_carry_build_info_and_the_process_collector() -> None:
    families = {f.name: f for f in text_string_to_metric_families(render(None).decode())}
    (sample,) = families["tidesync_build_info"].samples
    assert sample.value == 1
    assert sample.labels["version"] == version("tidesync")
    for name in ("process_cpu_seconds", "process_resident_memory_bytes", "process_start_time_seconds"):
        assert families[name].samples[0].value > 0, name
