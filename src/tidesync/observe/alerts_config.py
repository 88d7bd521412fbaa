"""The ``alerts:`` section (pydantic only; no I/O, no driver imports).

::

    alerts:
      interval: 5s                      # how often the rules are evaluated
      webhook:                          # optional: every fire and clear is also POSTed here,
        url: https://ops.example.com/hooks/tidesync      # signed as a Standard Webhook
        secrets: ${env:ALERT_HOOK_SECRET}                # whsec_...; several during a rotation
      rules:
        - name: crm-lag
          metric: lag_seconds           # see METRICS
          above: 30                     # fires when the value goes above this ...
          clear_below: 10               # ... clears when it drops below this (default: above)
          for: 1m                       # ... and only after staying above for this long (default 0)
          pipelines: [crm-to-billing]   # default: every pipeline

Built in, on by default (``builtin: false`` turns them off; a rule of the same
name replaces one): ``pipeline-blocked`` (``blocked_seconds`` above 0: a
pipeline holds its events because every write would fail) and
``dead-letters`` (``dlq_depth`` above 0), both clearing when the value is 0
again; and ``retained-wal`` (``retained_wal_bytes`` above 1 GiB, clearing
below 512 MiB: a Postgres slot that a slow, blocked or paused pipeline keeps
from being trimmed); ``binlog-oldest`` (``binlog_retention`` above 0: a MariaDB/MySQL
source's checkpoint is in the server's oldest binlog file, the next one purged) and
``binlog-purged`` (above 1: that file is gone, so the pipeline cannot resume; recovery
is a new snapshot), both clearing at 0. A slot whose pipeline no process runs is shown by
``tidesync status``, which needs no running engine.

A rule is evaluated per pipeline; each (rule, pipeline) pair is one alert with
its own state (see :mod:`tidesync.observe.alerts`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tidesync.secrets import Secret
from tidesync.sources.polling.config import Seconds

Metric = Literal[
    "lag_seconds",
    "latency_p99_seconds",
    "dlq_depth",
    "retained_wal_bytes",
    "binlog_retention",
    "retrying_seconds",
    "blocked_seconds",
]
METRICS: dict[str, str] = {
    "lag_seconds": "now minus the commit time of the oldest event read but not yet applied",
    "latency_p99_seconds": "p99 of end-to-end latency over the rule's window (no events in it: no change)",
    "dlq_depth": "entries in the pipeline's dead-letter queue",
    "retained_wal_bytes": "WAL the Postgres server keeps for the pipeline's replication slot (Postgres sources)",
    "binlog_retention": "MariaDB/MySQL sources: 0 when the checkpoint's binlog file is on the server, 1 when it "
    "is the oldest of several (purged next), 2 when it is gone",
    "retrying_seconds": "how long the pipeline has been retrying a failing sink without a success",
    "blocked_seconds": "how long the pipeline has been blocked (every write would fail; events are held)",
}
_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class AlertRuleConfig(_Strict):
    name: str = Field(pattern=_NAME, description="names the alert in the log, the webhook and /api/alerts")
    metric: Metric = Field(description="what to watch: " + "; ".join(f"{k}: {v}" for k, v in METRICS.items()))
    above: float = Field(ge=0, description="fires when the value goes above this")
    clear_below: float | None = Field(None, ge=0, description="clears when the value drops below this (default: above)")
    for_seconds: Seconds = Field(0.0, alias="for", ge=0, description="the value must stay above this long to fire")
    window: Seconds = Field(60.0, gt=0, le=300, description="latency_p99_seconds: the window the p99 is taken over")
    pipelines: list[str] | None = Field(None, min_length=1, description="the pipelines watched (default: all)")

    @model_validator(mode="after")
    def _hysteresis(self) -> AlertRuleConfig:
        if self.clear_below is not None and self.clear_below > self.above:
            raise ValueError(f"clear_below ({self.clear_below:g}) must not be above `above` ({self.above:g})")
        return self

    @property
    def clear_threshold(self) -> float:
        return self.above if self.clear_below is None else self.clear_below


class AlertWebhookConfig(_Strict):
    """Where fires and clears are POSTed, signed like the webhook sink's deliveries (Standard Webhooks)."""

    url: str = Field(pattern=r"^https?://", description="the endpoint alerts are POSTed to")
    secrets: Secret = Field(description="Standard Webhooks secrets (whsec_ + base64)")
    timeout: float = Field(10.0, gt=0, description="seconds for one POST")
    give_up_after: Seconds = Field(3600.0, gt=0, description="stop retrying one notice after this long")
    headers: dict[str, str] = Field(default_factory=dict, description="extra request headers")

    @field_validator("secrets")
    @classmethod
    def _standard(cls, value: Secret) -> Secret:
        from tidesync.sources.webhook.signatures import check_standard_secrets

        check_standard_secrets(value.values(), "the webhook sink's secrets take the same form")
        return value


class AlertsConfig(_Strict):
    interval: Seconds = Field(5.0, gt=0, le=3600, description="how often the rules are evaluated")
    webhook: AlertWebhookConfig | None = None
    builtin: bool = Field(
        True,
        description="the built-in rules pipeline-blocked, dead-letters, retained-wal, binlog-oldest and binlog-purged",
    )
    rules: list[AlertRuleConfig] = Field(default_factory=list)


BUILTIN_RULES: tuple[AlertRuleConfig, ...] = (
    AlertRuleConfig.model_validate({"name": "pipeline-blocked", "metric": "blocked_seconds", "above": 0}),
    AlertRuleConfig.model_validate({"name": "dead-letters", "metric": "dlq_depth", "above": 0}),
    AlertRuleConfig.model_validate(
        {"name": "retained-wal", "metric": "retained_wal_bytes", "above": 2**30, "clear_below": 2**29}
    ),
    AlertRuleConfig.model_validate({"name": "binlog-oldest", "metric": "binlog_retention", "above": 0}),
    AlertRuleConfig.model_validate(
        {"name": "binlog-purged", "metric": "binlog_retention", "above": 1, "clear_below": 0}
    ),
)


def effective_rules(alerts: AlertsConfig | None) -> list[AlertRuleConfig]:
    """The rules to evaluate: the configured ones, then each built-in one no configured rule replaces."""
    rules = list(alerts.rules) if alerts is not None else []
    if alerts is None or alerts.builtin:
        names = {r.name for r in rules}
        rules += [r for r in BUILTIN_RULES if r.name not in names]
    return rules


def check_alerts(
    alerts: AlertsConfig | None, pipelines: Sequence[str], add: Callable[[tuple[Any, ...], str], None]
) -> None:
    """Cross-checks the model cannot make alone: names unique, watched pipelines exist."""
    if alerts is None:
        return
    seen: set[str] = set()
    known = set(pipelines)
    for i, rule in enumerate(alerts.rules):
        if rule.name in seen:
            add(("alerts", "rules", i, "name"), f"duplicate alert name {rule.name!r}")
        seen.add(rule.name)
        for j, p in enumerate(rule.pipelines or ()):
            if p not in known:
                names = ", ".join(sorted(known)) or "none"
                add(("alerts", "rules", i, "pipelines", j), f"no pipeline named {p!r}; pipelines: {names}")
