"""Process-level metrics for the Prometheus registry: ``tidesync_build_info`` and the process collector.

``tidesync_build_info{version, python}`` is always 1; it carries the running
version (from package metadata, as ``tidesync --version`` prints it), so a
dashboard can show it and ``* on(instance) group_left(version)`` joins can
tell versions apart during an upgrade. The process collector adds
``process_cpu_seconds_total``, ``process_resident_memory_bytes``,
``process_open_fds``, ``process_start_time_seconds`` and the rest (on Linux).
"""

from __future__ import annotations

import platform
from collections.abc import Iterator

from prometheus_client import ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric

import tidesync


class BuildInfoCollector:
    """``tidesync_build_info{version, python} 1``."""

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "tidesync_build_info", "tidesync build: always 1, labelled with the version", labels=["version", "python"]
        )
        info.add_metric([tidesync.__version__, platform.python_version()], 1)
        yield info


class ProcessMetrics:
    """The build info and prometheus_client's process collector, as one collector."""

    def __init__(self) -> None:
        self._collectors = (BuildInfoCollector(), ProcessCollector(registry=None))

    def collect(self) -> Iterator[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


PROCESS_METRICS = ProcessMetrics()
