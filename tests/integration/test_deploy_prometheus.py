"""The files under deploy/ against the real tools and a real ``tidesync serve``.

- ``promtool check rules`` accepts deploy/prometheus/alerts.yml and ``promtool test rules`` passes
  alerts_test.yml, whose recorded series fire every alert of alerts.yml;
- Debian's ``prometheus`` scrapes a running ``tidesync serve`` (a SQLite -> SQLite pipeline that has
  dead-lettered an event) with the bearer token, loads alerts.yml healthy, fires the dead-letter
  alert when a new event is dead-lettered, and answers every query of the Grafana dashboard;
- every metric name in alerts.yml and the dashboard is one the server's /metrics exposes;
- the dashboard has the structure Grafana imports; the systemd unit passes ``systemd-analyze verify``.
"""

from __future__ import annotations

import configparser
import contextlib
import json
import math
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import jsonschema
import pytest
import yaml

from tests.integration.api_harness import SHOP, make_shop, src_insert
from tests.integration.security_support import Served, served
from tidesync.testing import wait_until

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "tidesync.json"
UNIT = ROOT / "deploy" / "systemd" / "tidesync.service"
METRIC = re.compile(r"\btidesync_[a-z0-9_]+")
TYPE_LINE = re.compile(r"^# TYPE (\S+) (\S+)$", re.M)
SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", re.M)
# What Grafana's dashboard import needs of each part (the rest of its schema is optional).
DASHBOARD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["title", "uid", "schemaVersion", "panels", "templating"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "uid": {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,40}$"},
        "schemaVersion": {"type": "integer", "minimum": 36},
        "panels": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "type", "title", "gridPos", "targets"],
                "properties": {
                    "id": {"type": "integer"},
                    "type": {"enum": ["timeseries", "stat"]},
                    "title": {"type": "string", "minLength": 1},
                    "gridPos": {
                        "type": "object",
                        "required": ["h", "w", "x", "y"],
                        "properties": {
                            "h": {"type": "integer", "minimum": 1},
                            "w": {"type": "integer", "minimum": 1, "maximum": 24},
                            "x": {"type": "integer", "minimum": 0, "maximum": 23},
                            "y": {"type": "integer", "minimum": 0},
                        },
                    },
                    "targets": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["expr", "refId"],
                            "properties": {"expr": {"type": "string", "minLength": 1}, "refId": {"type": "string"}},
                        },
                    },
                },
            },
        },
        "templating": {
            "type": "object",
            "required": ["list"],
            "properties": {
                "list": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "type", "query"],
                        "properties": {"name": {"type": "string"}, "type": {"type": "string"}},
                    },
                }
            },
        },
    },
}


def alert_rules() -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def dashboard_exprs() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def as_query(expr: str) -> str:
    """A dashboard expression as Grafana sends it: every pipeline selected, a one-minute rate window."""
    return expr.replace("$pipeline", ".*").replace("$__rate_interval", "1m")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, check=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def prometheus(tmp: Path, target: Served) -> Iterator[httpx.Client]:
    """Debian's ``prometheus`` scraping ``target`` every second with its token and evaluating alerts.yml
    every second, on a free port with its own storage; yields a client on its HTTP API, stops it after."""
    (tmp / "scrape-token").write_text(target.token + "\n")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(ALERTS)],
        "scrape_configs": [
            {
                "job_name": "tidesync",
                "authorization": {"credentials_file": str(tmp / "scrape-token")},
                "static_configs": [{"targets": [urlsplit(target.url).netloc]}],
            }
        ],
    }
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(config))
    log = tmp / "prometheus.log"
    for _attempt in range(3):  # another process may take the free port before prometheus binds it
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={tmp / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

        def ready(proc: subprocess.Popen[bytes] = proc, client: httpx.Client = client) -> bool:
            if proc.poll() is not None:
                return True
            with contextlib.suppress(httpx.TransportError):
                return client.get("/-/ready").status_code == 200
            return False

        try:
            wait_until(ready, timeout=60, message="prometheus ready")
            if proc.poll() is None:
                yield client
                return
            if "address already in use" not in log.read_text():
                raise AssertionError(f"prometheus exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        finally:
            client.close()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
    raise AssertionError(f"prometheus found no free port:\n{log.read_text()[-3000:]}")


def query(client: httpx.Client, expr: str) -> list[dict[str, Any]]:
    resp = client.get("/api/v1/query", params={"query": expr})
    body = resp.json()
    assert resp.status_code == 200 and body["status"] == "success", (expr, resp.status_code, body)
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def value_of(client: httpx.Client, expr: str, **labels: str) -> float | None:
    """The value of the series of ``expr`` carrying ``labels``; None when there is none."""
    for series in query(client, expr):
        if all(series["metric"].get(k) == v for k, v in labels.items()):
            return float(series["value"][1])
    return None


@pytest.fixture(scope="module")
def serving(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``tidesync serve`` running the SQLite ``shop`` pipeline, once one row applied and one dead-lettered."""
    tmp = tmp_path_factory.mktemp("serve")
    token = make_shop(tmp)
    with served(tmp, SHOP, {"token": token}) as server:
        src_insert(tmp, [(1, 5, "ok"), (2, -1, "refused by the destination")])
        with server.client(headers=server.auth) as client:
            wait_until(
                lambda: re.search(r'^tidesync_dlq_depth\{pipeline="shop"\} 1\.0$', client.get("/metrics").text, re.M),
                timeout=30,
                message="one event dead-lettered",
            )
        yield server


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def _prometheus_doc_blocks() -> list[tuple[str, str]]:
    """Every ```yaml prometheus block of README.md and docs/ (the Prometheus config the docs tell people to use)."""
    fence = re.compile(r"^```yaml prometheus\n(.*?)^```", re.S | re.M)
    return [
        (f"{doc.relative_to(ROOT)}:{doc.read_text()[: m.start()].count(chr(10)) + 1}", m.group(1))
        for doc in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
        for m in fence.finditer(doc.read_text())
    ]


@pytest.mark.parametrize(("where", "block"), _prometheus_doc_blocks(), ids=lambda v: v if ":" in v else "")
def test_promtool_checks_each_prometheus_config_of_the_docs(where: str, block: str, tmp_path: Path) -> None:
    # The files a block names (the rules, a token file) are put where promtool can read them.
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    text = re.sub(r"/\S*alerts\.yml", str(ALERTS), block)
    text = re.sub(r"credentials_file: (/[^}\s,]+)", f"credentials_file: {token}", text)
    config = tmp_path / "prometheus.yml"
    config.write_text(text)
    result = promtool("check", "config", str(config))
    assert result.returncode == 0, f"{where}: {result.stdout}{result.stderr}"
    assert "SUCCESS" in result.stdout + result.stderr


def test_promtool_unit_tests_fire_every_alert() -> None:
    result = promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    # Every alert is expected to fire somewhere, with a severity and both annotations.
    cases = [c for t in yaml.safe_load(ALERTS_TEST.read_text())["tests"] for c in t["alert_rule_test"]]
    fired = {c["alertname"] for c in cases if c.get("exp_alerts")}
    rules = alert_rules()
    assert fired == {r["alert"] for r in rules}
    assert any(not c.get("exp_alerts") for c in cases)  # and some evaluations expect silence
    for rule in rules:
        assert rule.get("for"), rule["alert"]
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_prometheus_scrapes_serve_loads_the_rules_and_answers_the_dashboard(serving: Served, tmp_path: Path) -> None:
    src = Path(serving.log).parent
    with prometheus(tmp_path, serving) as prom:
        wait_until(lambda: value_of(prom, 'up{job="tidesync"}') == 1.0, timeout=30, message="target up")
        wait_until(
            lambda: value_of(prom, "tidesync_dlq_depth", pipeline="shop") == 1.0,
            timeout=30,
            message="the dead letter scraped",
        )
        assert value_of(prom, "tidesync_build_info", job="tidesync") == 1.0

        def rules_healthy() -> list[dict[str, Any]] | None:
            groups: list[dict[str, Any]] = prom.get("/api/v1/rules").json()["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return groups if rules and all(r["health"] == "ok" for r in rules) else None

        groups = wait_until(rules_healthy, timeout=30, message="every rule evaluated")
        assert {g["name"] for g in groups} == {"tidesync-pipelines", "tidesync-sources"}
        assert sorted(r["name"] for g in groups for r in g["rules"]) == sorted(r["alert"] for r in alert_rules())
        assert all(g["file"] == str(ALERTS) for g in groups)

        # New traffic while Prometheus watches: rows applied, one more dead-lettered. Twice, because a
        # counter series (op="insert") that Prometheus sees for the first time has no rate yet. (Row 1
        # of the fixture is counted as a snapshot or an insert, as the snapshot and the insert race.)
        src_insert(src, [(i, i, f"n{i}") for i in range(10, 40)] + [(99, -5, "refused too")])
        wait_until(
            lambda: value_of(prom, 'sum(tidesync_events_total{pipeline="shop"})') == 31.0,
            timeout=30,
            message="the 30 inserts scraped",
        )
        src_insert(src, [(i, i, f"n{i}") for i in range(40, 70)])

        def alert_states() -> dict[str, str]:
            alerts = prom.get("/api/v1/alerts").json()["data"]["alerts"]
            return {a["labels"]["alertname"]: a["state"] for a in alerts if a["labels"].get("pipeline") == "shop"}

        states = wait_until(
            lambda: (s := alert_states()).get("TidesyncDeadLettersGrowing") and s,
            timeout=30,
            message="the dead-letter alert pending",
        )
        assert states["TidesyncDeadLettersGrowing"] == "pending"  # `for: 1m` has not passed
        assert "TidesyncPipelineBlocked" not in states

        # Every dashboard query is valid PromQL here, and the panels of this pipeline have data.
        for expr in dashboard_exprs():
            query(prom, as_query(expr))
        throughput = as_query(
            next(e for e in dashboard_exprs() if e.startswith("sum by (pipeline) (rate(tidesync_events_total"))
        )
        wait_until(lambda: (value_of(prom, throughput, pipeline="shop") or 0.0) > 0, timeout=30, message="throughput")
        p99 = as_query(
            next(e for e in dashboard_exprs() if e.startswith("histogram_quantile(0.99, sum by (pipeline, le)"))
        )
        wait_until(
            lambda: not math.isnan(value_of(prom, p99, pipeline="shop") or math.nan), timeout=30, message="p99 latency"
        )
        dlq = as_query(next(e for e in dashboard_exprs() if e.startswith("sum by (pipeline) (tidesync_dlq_depth")))
        wait_until(lambda: value_of(prom, dlq, pipeline="shop") == 2.0, timeout=30, message="two dead letters")
        variable = next(v for v in dashboard()["templating"]["list"] if v["name"] == "pipeline")
        match = re.fullmatch(r"label_values\((\w+), *(\w+)\)", variable["query"])
        assert match is not None, variable["query"]
        values = prom.get(f"/api/v1/label/{match.group(2)}/values", params={"match[]": match.group(1)}).json()
        assert values["data"] == ["shop"]


def test_every_metric_used_by_alerts_and_dashboard_is_exposed(serving: Served) -> None:
    with serving.client(headers=serving.auth) as client:
        text = client.get("/metrics").text
    families = dict(TYPE_LINE.findall(text))
    samples = set(SAMPLE_LINE.findall(text))

    def exposed(name: str) -> bool:
        if name in families or name in samples:
            return True
        for suffix, kinds in (
            ("_bucket", {"histogram"}),
            ("_count", {"histogram", "summary"}),
            ("_sum", {"histogram", "summary"}),
        ):
            if name.endswith(suffix) and families.get(name.removesuffix(suffix)) in kinds:
                return True
        return False

    alerts = {name for rule in alert_rules() for name in METRIC.findall(rule["expr"])}
    panels = {name for expr in dashboard_exprs() for name in METRIC.findall(expr)}
    assert len(alerts) >= 8 and len(panels) >= 10, (alerts, panels)  # the extraction found the names
    assert "tidesync_end_to_end_latency_seconds_bucket" in panels
    assert not exposed("tidesync_end_to_end_latency_seconds_total")  # a wrong suffix is not stripped away
    missing = sorted(n for n in alerts | panels if not exposed(n))
    assert not missing, f"not on /metrics: {missing}"


def test_dashboard_has_the_structure_grafana_imports() -> None:
    data = dashboard()
    jsonschema.validate(data, DASHBOARD_SCHEMA)
    panels = data["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    for p in panels:
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert variables["pipeline"]["type"] == "query"
    assert variables["pipeline"]["query"].startswith("label_values(")
    exprs = dashboard_exprs()
    # The panels the dashboard promises: throughput, p50 and p99 end-to-end latency, lag and DLQ per pipeline.
    assert any("rate(tidesync_events_total" in e and "by (pipeline)" in e for e in exprs)
    for q in ("0.5", "0.99"):
        assert any(e.startswith(f"histogram_quantile({q}, sum by (pipeline, le)") and "end_to_end" in e for e in exprs)
    assert any("tidesync_lag_seconds" in e and "by (pipeline)" in e for e in exprs)
    assert any("tidesync_dlq_depth" in e and "by (pipeline)" in e for e in exprs)
    assert all('pipeline=~"$pipeline"' in e for e in exprs)


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    text = UNIT.read_text()
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read_string(text)
    service = unit["Service"]
    assert service["ExecStart"].split()[0] == "/opt/tidesync/bin/tidesync"
    assert service["ExecStart"].split()[-2:] == ["serve", "/etc/tidesync/tidesync.yaml"]
    assert service["Restart"] == "on-failure"
    assert service["User"] == "tidesync"
    assert service["EnvironmentFile"] == "/etc/tidesync/tidesync.env"
    assert service["NoNewPrivileges"] == "yes"
    assert service["ProtectSystem"] == "strict"
    assert service["StateDirectory"] == "tidesync"
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert shutil.which("systemd-analyze"), "systemd-analyze is missing (Debian package systemd)"
    # verify checks that ExecStart's program exists: point it at this checkout's tidesync.
    here = shutil.which("tidesync", path=str(ROOT / ".venv" / "bin"))
    assert here is not None
    copy = tmp_path / "tidesync.service"
    copy.write_text(text.replace("/opt/tidesync/bin/tidesync", here))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    # verify exits 0 on unknown keys and bad values too; it reports them on stderr.
    assert result.returncode == 0 and not result.stderr.strip(), result.stdout + result.stderr
