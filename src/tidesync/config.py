"""Configuration: YAML validated by pydantic, with the file line of every error.

Loading goes: YAML text → Python values plus a map from key path to line →
secret references resolved (``${env:NAME}``, ``${file:path}``) → the top-level
model validated → each connector's own model (found by ``type:`` in the
registry) validated at its place. Every error, whichever step finds it, is a
:class:`~tidesync.errors.ConfigError` naming the key path and the file line,
e.g. ``tidesync.yaml:14: pipelines[0].sink.dsn: field required``.

``secrets="lazy"`` (the commands that read only the state store): a reference
that cannot be read is not an error at load; it stays a
:class:`~tidesync.secrets.PendingRef`, and :meth:`LoadedConfig.require_secrets`
raises the error an eager load would have raised, when a command needs the
values under a key. The state store URL is always resolved at load.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tidesync.errors import ConfigError
from tidesync.observe.alerts_config import AlertsConfig, check_alerts
from tidesync.reconcile.config import ReconcileSchedule
from tidesync.registry import REGISTRY
from tidesync.secrets import (
    REDACTOR,
    PendingRef,
    ResolvedStr,
    Secret,
    mask_locations,
    register_connection_secrets,
    resolve_string,
    secret_locations,
)
from tidesync.sync.config import SyncConfig, check_value_steps

DEFAULT_STATE = "sqlite:///.tidesync/state.db"
Loc = tuple[str | int, ...]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchConfig(Strict):
    max_events: int = Field(1000, ge=1, le=1_000_000, description="most events per batch")
    max_wait_ms: float = Field(50.0, ge=0, description="longest wait to fill a batch")


class RetryConfig(Strict):
    """Retry of transient sink errors: exponential backoff with full jitter.

    With ``max_attempts`` and ``max_age`` unset, a destination outage pauses the
    pipeline until the destination returns (nothing is dead-lettered for it).
    """

    initial_delay: float = Field(0.1, gt=0, description="seconds before the first retry")
    max_delay: float = Field(30.0, gt=0, description="longest wait between retries")
    multiplier: float = Field(2.0, ge=1, description="each wait's cap is the previous one's times this")
    jitter: Literal["full", "none"] = Field("full", description="full: a random wait up to the cap; none: the cap")
    max_attempts: int | None = Field(
        None, ge=1, description="attempts before the events are dead-lettered (none: no limit)"
    )
    max_age: float | None = Field(None, gt=0, description="seconds after the first failure")


class BreakerConfig(Strict):
    """The circuit breaker: a run of events dead-lettered with one error class blocks the pipeline instead."""

    events: int = Field(100, ge=0, description="consecutive events failing with one error class that block (0: off)")
    seconds: float = Field(
        60.0, ge=0, description="or every event failing with one error class for this long, 10 at least (0: off)"
    )


class ProbeConfig(Strict):
    """How a blocked pipeline probes its destination: exponential backoff with full jitter."""

    initial_delay: float = Field(1.0, gt=0, description="seconds before the first probe")
    max_delay: float = Field(30.0, gt=0, description="longest wait between probes")


_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class PipelineConfig(Strict):
    name: str = Field(pattern=_NAME, description="names the pipeline everywhere: letters, digits, . _ -")
    source: dict[str, Any] = Field(description="where changes come from: `type:` and that source's keys (below)")
    transforms: list[Any] = Field(
        default_factory=list, description="steps applied in order: rename, cast, drop, set, compute, filter, function"
    )
    sink: dict[str, Any] | None = Field(None, description="where changes go: `type:` and that sink's keys (below)")
    sinks: list[dict[str, Any]] | None = Field(
        None,
        description="instead of `sink`: several destinations fed from one source read (fan-out: one replication "
        "slot). Each entry is a sink with an optional `name:` (default: its type); it runs as pipeline "
        "NAME.SINKNAME with its own checkpoint, dead letters and status, and a slow sink holds the others back by "
        "at most `queue_batches` batches. The source's checkpoint is the slowest sink's",
    )
    batch: BatchConfig = Field(
        default_factory=lambda: BatchConfig.model_validate({}), description="how events are grouped for writing"
    )
    retry: RetryConfig = Field(default_factory=lambda: RetryConfig.model_validate({}))
    queue_batches: int = Field(4, ge=1, le=1000, description="batches buffered between read and write")
    breaker: BreakerConfig = Field(default_factory=lambda: BreakerConfig.model_validate({}))
    probe: ProbeConfig = Field(default_factory=lambda: ProbeConfig.model_validate({}))
    enabled: bool = Field(True, description="false: the pipeline is kept in the config but not run")
    reconcile: ReconcileSchedule | None = Field(None, description="compare source and destination on a timer")
    schedule: str | None = Field(
        None,
        description="a cron expression in UTC (`*/15 * * * *`): instead of running continuously, the pipeline "
        "makes a batch run at each of these times (as `tidesync run --once` does: reads up to the source's "
        "end as of the run's start, applies it, checkpoints, stops); between runs status shows `scheduled` "
        "and the next run's time",
    )
    schema_changes: Literal["evolve", "block", "dead_letter"] = Field(
        "evolve",
        description="a change of a table's shape announced by the source (Postgres: ADD/DROP/RENAME COLUMN, "
        "a type change): evolve the destination before the first row of the new shape (a narrowing still "
        "blocks), block the pipeline until a person changed the destination, or dead-letter the rows that "
        "need the change. The sink's own `evolve:` still decides columns no announced change explains "
        "(fields of schema-less sources, a table that predates the pipeline)",
    )

    @field_validator("schedule")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        from croniter import croniter

        if value is not None and not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression (five fields, e.g. '*/15 * * * *')")
        return value

    @model_validator(mode="after")
    def _one_sink_key(self) -> PipelineConfig:
        if (self.sink is None) == (self.sinks is None):
            raise ValueError("give either `sink` (one destination) or `sinks` (a list: fan-out), not both or neither")
        if self.sinks is not None:
            names = [fanout_name(entry, j) for j, entry in enumerate(self.sinks)]
            if not self.sinks:
                raise ValueError("`sinks` lists no sink")
            for n in names:
                if not re.match(_NAME, n):
                    raise ValueError(f"sink name {n!r}: letters, digits, . _ - only")
                if names.count(n) > 1:
                    raise ValueError(f"two sinks named {n!r}: give each a `name:`")
        return self


def fanout_name(entry: Any, index: int) -> str:
    """The name of entry ``index`` of a pipeline's ``sinks:`` (its ``name:``, else its ``type:``)."""
    if isinstance(entry, dict):
        return str(entry.get("name") or entry.get("type") or f"sink{index + 1}")
    return f"sink{index + 1}"


class ApiConfig(Strict):
    """The HTTP server ``tidesync run`` starts (admin API, webhook intake routes)."""

    listen: str = Field("127.0.0.1:8080", description="HOST:PORT to listen on")
    token: Secret | None = Field(None, description="bearer token for the admin API")
    max_body_bytes: int = Field(
        1024 * 1024,
        ge=1,
        description="largest webhook request body accepted (413 beyond); a webhook source's own max_body_bytes wins",
    )
    admin_max_body_bytes: int = Field(
        64 * 1024,
        ge=1,
        description="largest body of any other request (admin API, metrics, dashboard): 413 beyond, refused "
        "before it is read; a request to /api without the token is refused (401) before its body is read",
    )
    public_url: str | None = Field(None, description="how senders reach this server, e.g. https://hooks.example.com")
    metrics_public: bool = Field(False, description="serve /metrics without the bearer token")
    limit_concurrency: int = Field(
        1000,
        ge=1,
        description="most connections (idle keep-alive ones included) and requests in flight at once; "
        "a request beyond is answered 503",
    )
    header_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=600,
        description="a connection whose request head (request line and headers) is not complete this many "
        "seconds after it opened or its next request began is closed (slow or idle clients)",
    )
    body_timeout_seconds: float = Field(
        30.0,
        gt=0,
        le=600,
        description="a request body (webhook delivery or admin API call) not complete this many seconds after "
        "its request head is answered 408 and its connection closed: a deadline on the whole body, not on "
        "the gap between two reads (a body sent a byte at a time)",
    )
    keep_alive_timeout_seconds: float = Field(
        5.0, gt=0, le=600, description="an idle keep-alive connection is closed after this many seconds"
    )
    max_header_bytes: int = Field(
        64 * 1024, ge=1024, description="largest request head (request line and headers): 431 beyond"
    )


class LeaseConfig(Strict):
    """Active/passive: processes running one config hold a lease per pipeline and sync in the state store."""

    ttl_seconds: float = Field(
        5.0,
        ge=1,
        le=300,
        description="a lease not renewed for this long expires and a standby process takes the work over; "
        "the holder renews it every third of this",
    )


class ClusterConfig(Strict):
    """Scale-out over NATS JetStream: capture publishes to a partitioned stream, apply workers consume it.

    Needs ``lease:`` too (the capture and every partition run under a lease in the state store).
    """

    nats: str = Field(
        "nats://127.0.0.1:4222",
        pattern=r"^(nats|tls)://",
        description="NATS servers, comma-separated (every node of a cluster, so a client fails over)",
    )
    stream: str = Field(
        "TIDESYNC", pattern=r"^[A-Za-z0-9_-]+$", description="the JetStream stream; subjects STREAM.PIPELINE.PARTITION"
    )
    partitions: int = Field(4, ge=1, le=1024, description="partitions per pipeline: events go by a hash of their key")
    replicas: int = Field(1, ge=1, le=5, description="copies of the stream JetStream keeps (3 on a 3-node cluster)")
    duplicate_window: float = Field(
        120.0, gt=0, description="seconds the stream drops a re-published event by its id (a capture failover)"
    )


class TidesyncConfig(Strict):
    state: str = DEFAULT_STATE
    pipelines: list[PipelineConfig] = Field(default_factory=list)
    syncs: list[SyncConfig] = Field(default_factory=list)
    api: ApiConfig | None = None
    alerts: AlertsConfig | None = None
    lease: LeaseConfig | None = Field(
        None,
        description="set it (`lease: {}` for the defaults) to run several processes on this config active/passive: "
        "each pipeline and sync runs in one process at a time, the others wait as standby (docs/scaling.md)",
    )
    cluster: ClusterConfig | None = Field(
        None,
        description="scale out over NATS JetStream: each pipeline's capture publishes to a partitioned stream and "
        "the processes holding partition leases apply it (docs/scaling.md); needs `lease:`",
    )

    @model_validator(mode="after")
    def _cluster_needs_lease(self) -> TidesyncConfig:
        if self.cluster is not None and self.lease is None:
            raise ValueError("cluster: needs lease: too (`lease: {}` for the defaults): partitions are leased")
        return self


@dataclass
class PipelineSpec:
    """A pipeline's config with its connectors' own models validated."""

    config: PipelineConfig
    source: BaseModel
    sink: BaseModel
    transforms: list[Any]
    index: int = 0  # the pipeline's place in the file's `pipelines:`
    sink_loc: Loc = ()  # where its sink is in the file (default: pipelines[index].sink)
    fanout: str | None = None  # one of the sinks of pipeline `fanout` (its name is FANOUT.SINKNAME)

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def sink_path(self) -> Loc:
        return self.sink_loc or ("pipelines", self.index, "sink")


@dataclass
class SyncSpec:
    """A sync's config with both sides' source models and transform steps validated."""

    config: SyncConfig
    a_source: BaseModel
    b_source: BaseModel
    a_to_b: list[Any]
    b_to_a: list[Any]

    @property
    def name(self) -> str:
        return self.config.name


@dataclass
class LoadedConfig:
    path: Path | None
    model: TidesyncConfig
    pipelines: list[PipelineSpec]
    raw: dict[str, Any] = field(default_factory=dict)
    syncs: list[SyncSpec] = field(default_factory=list)
    # Loaded lazily: what each unreadable reference's key would have failed with, by key path.
    pending: dict[Loc, str] = field(default_factory=dict)

    def sync(self, name: str) -> SyncSpec:
        for s in self.syncs:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in self.syncs) or "none"
        raise ConfigError(f"no sync named {name!r}; syncs: {known}", path=str(self.path) if self.path else None)

    @property
    def state_url(self) -> str:
        return self.model.state

    def pipeline(self, name: str) -> PipelineSpec:
        for p in self.pipelines:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.pipelines) or "none"
        raise ConfigError(f"no pipeline named {name!r}; pipelines: {known}", path=str(self.path) if self.path else None)

    def unresolved(self, *prefix: str | int) -> list[str]:
        """The errors of the unreadable secret references under key path ``prefix`` (all when empty)."""
        return [msg for loc, msg in self.pending.items() if loc[: len(prefix)] == prefix]

    def require_secrets(self, *prefix: str | int) -> None:
        """Raise the ConfigError an eager load would have raised for references under ``prefix``."""
        problems = self.unresolved(*prefix)
        if problems:
            raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems))

    def redacted(self) -> dict[str, Any]:
        """The config as loaded, with every secret masked (for printing): each field typed
        :class:`Secret` (every element of a list; references kept), then every known value and
        connection-string password wherever it appears."""
        found = list(secret_locations(self.model))
        for p in self.pipelines:
            found += secret_locations(p.source, ("pipelines", p.index, "source"))
            found += secret_locations(p.sink, p.sink_path)
        for i, s in enumerate(self.syncs):
            found += secret_locations(s.a_source, ("syncs", i, "a", "source"))
            found += secret_locations(s.b_source, ("syncs", i, "b", "source"))
        return REDACTOR.redact_obj(mask_locations(self.raw, found))  # type: ignore[no-any-return]


# --- YAML with lines ---------------------------------------------------------


def _line_map(node: yaml.Node, loc: Loc, out: dict[Loc, int]) -> None:
    out[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            _line_map(value_node, (*loc, key), out)
            out[(*loc, key)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _line_map(item, (*loc, i), out)


def format_loc(loc: Iterable[str | int]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


@dataclass
class _Errors:
    path: str | None
    lines: dict[Loc, int]
    items: list[tuple[Loc, str]] = field(default_factory=list)

    def add(self, loc: Loc, message: str) -> None:
        self.items.append((loc, message))

    def line_of(self, loc: Loc) -> int | None:
        for n in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:n]))
            if line is not None:
                return line
        return None

    def add_validation(self, prefix: Loc, exc: ValidationError) -> None:
        for err in exc.errors(include_url=False):
            loc = (*prefix, *(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))))
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (not allowed here); check its spelling"
            elif err["type"] == "missing":
                msg = "required key is missing"
            self.add(loc, msg)

    def describe(self, loc: Loc, msg: str) -> str:
        line = self.line_of(loc)
        where = f"{self.path or '<config>'}:{line}" if line else (self.path or "<config>")
        return f"{where}: {format_loc(loc)}: {REDACTOR.redact(msg)}"

    def raise_if_any(self) -> None:
        if not self.items:
            return
        lines = [self.describe(loc, msg) for loc, msg in self.items]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))

    def at_pending(self, loc: Loc, pending: dict[Loc, str]) -> bool:
        return any(loc[: len(p)] == p for p in pending)


SecretsMode = Literal["eager", "lazy"]
_ALWAYS_RESOLVED: tuple[Loc, ...] = (("state",),)  # every command needs the state store


def _resolve_refs(
    value: Any, loc: Loc, base_dir: Path | None, errors: _Errors, pending: dict[Loc, str] | None = None
) -> Any:
    """Resolve every reference; one that cannot be read is an error, or with ``pending`` a PendingRef."""
    if isinstance(value, str):
        if "${" not in value:
            return value
        try:
            return ResolvedStr(resolve_string(value, base_dir), value, base_dir)
        except ConfigError as exc:
            if pending is None or loc in _ALWAYS_RESOLVED:
                errors.add(loc, str(exc))
                return value
            pending[loc] = errors.describe(loc, str(exc))
            return PendingRef(value, base_dir, str(exc))
    if isinstance(value, dict):
        return {k: _resolve_refs(v, (*loc, k), base_dir, errors, pending) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_refs(v, (*loc, i), base_dir, errors, pending) for i, v in enumerate(value)]
    return value


def load_config_text(text: str, path: Path | None = None, *, secrets: SecretsMode = "eager") -> LoadedConfig:
    where = str(path) if path else None
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"not valid YAML: {problem}", path=where, line=line) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the top level must be a mapping (state:, pipelines:, ...)", path=where, line=1)
    lines: dict[Loc, int] = {}
    if node is not None:
        _line_map(node, (), lines)
    errors = _Errors(where, lines)
    base_dir = path.parent if path else None
    pending: dict[Loc, str] | None = {} if secrets == "lazy" else None
    resolved = _resolve_refs(data, (), base_dir, errors, pending)
    register_connection_secrets(resolved)  # DSN fields are plain strings: find their passwords by form
    errors.raise_if_any()
    try:
        model = TidesyncConfig.model_validate(resolved)
    except ValidationError as exc:
        errors.add_validation((), exc)
        errors.raise_if_any()
        raise  # unreachable: errors were added
    specs = _validate_plugins(model, resolved, errors, pending)
    syncs = _validate_syncs(model, errors, pending)
    _check_unique([p.name for p in model.pipelines], "pipelines", "name", errors)
    _check_unique([s.name for s in model.syncs], "syncs", "name", errors)
    check_alerts(model.alerts, [p.name for p in model.pipelines], errors.add)
    errors.raise_if_any()
    return LoadedConfig(path=path, model=model, pipelines=specs, raw=data, syncs=syncs, pending=pending or {})


def _validate_syncs(model: TidesyncConfig, errors: _Errors, pending: dict[Loc, str] | None = None) -> list[SyncSpec]:
    from tidesync.transform import parse_steps

    specs = []
    for i, s in enumerate(model.syncs):
        a = validate_plugin("source", s.a.source, ("syncs", i, "a", "source"), errors, pending)
        b = validate_plugin("source", s.b.source, ("syncs", i, "b", "source"), errors, pending)
        steps: dict[str, list[Any]] = {}
        for direction in ("a_to_b", "b_to_a"):
            raw = getattr(s.transforms, direction)
            loc: Loc = ("syncs", i, "transforms", direction)
            problem = check_value_steps(raw)
            if problem:
                errors.add(loc, problem)
                continue
            try:
                steps[direction] = parse_steps(raw)
            except ValidationError as exc:
                errors.add_validation(loc, exc)
            except ConfigError as exc:
                errors.add(loc, str(exc))
        if a is not None and b is not None and len(steps) == 2:
            specs.append(SyncSpec(s, a, b, steps["a_to_b"], steps["b_to_a"]))
    return specs


def _check_unique(names: Sequence[str], section: str, key: str, errors: _Errors) -> None:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            errors.add((section, i, key), f"duplicate {key} {name!r}")
        seen.add(name)


def validate_plugin(
    kind: Literal["source", "sink"],
    raw: dict[str, Any],
    loc: Loc,
    errors: _Errors,
    pending: dict[Loc, str] | None = None,
) -> BaseModel | None:
    """The connector's model of ``raw``, or None after adding its errors.

    With ``pending`` (a lazy load), a model whose only errors are at unreadable
    references (a ``url:`` that is all ``${env:...}`` fails its pattern, a
    validator reads a secret) is built unvalidated: commands that read only the state store need its name,
    and :meth:`LoadedConfig.require_secrets` stops every other use.
    """
    type_ = raw.get("type")
    if "type" in raw and type_ is None:
        errors.add((*loc, "type"), "is empty (YAML reads a bare null or ~ as nothing); quote the name")
        return None
    if not isinstance(type_, str):
        errors.add((*loc, "type"), f"required key is missing: which {kind} (one of: {', '.join(REGISTRY.names(kind))})")
        return None
    try:
        plugin = REGISTRY.get(kind, type_)
        return plugin.model().model_validate(raw)
    except ConfigError as exc:
        # A validator that reads a Secret (checks its format) meets the unreadable reference.
        if pending and any(str(exc) in msg for at, msg in pending.items() if at[: len(loc)] == loc):
            return REGISTRY.get(kind, type_).model().model_construct(**raw)
        errors.add((*loc, "type"), str(exc))
    except ValidationError as exc:
        found = _Errors(errors.path, errors.lines)
        found.add_validation(loc, exc)
        if pending and all(found.at_pending(at, pending) for at, _ in found.items):
            return plugin.model().model_construct(**raw)
        errors.items.extend(found.items)
    return None


def _validate_plugins(
    model: TidesyncConfig, raw: dict[str, Any], errors: _Errors, pending: dict[Loc, str] | None = None
) -> list[PipelineSpec]:
    from tidesync.transform import parse_steps

    specs = []
    for i, p in enumerate(model.pipelines):
        src = validate_plugin("source", p.source, ("pipelines", i, "source"), errors, pending)
        sinks: list[tuple[str | None, Loc, dict[str, Any], BaseModel | None]] = []
        for j, entry in enumerate(p.sinks if p.sinks is not None else [p.sink or {}]):
            at: Loc = ("pipelines", i, "sinks", j) if p.sinks is not None else ("pipelines", i, "sink")
            keys = {k: v for k, v in entry.items() if k != "name"} if p.sinks is not None else entry
            lane = fanout_name(entry, j) if p.sinks is not None else None
            sinks.append((lane, at, keys, validate_plugin("sink", keys, at, errors, pending)))
        steps: list[Any] = []
        try:
            steps = parse_steps(p.transforms)
        except ValidationError as exc:
            errors.add_validation(("pipelines", i, "transforms"), exc)
        except ConfigError as exc:
            errors.add(("pipelines", i, "transforms"), str(exc))
        if src is None:
            continue
        for lane, at, keys, snk in sinks:
            if snk is None:
                continue
            if lane is None:
                specs.append(PipelineSpec(config=p, source=src, sink=snk, transforms=steps, index=i))
                continue
            one = p.model_copy(update={"name": f"{p.name}.{lane}", "sink": keys, "sinks": None})
            specs.append(PipelineSpec(one, src, snk, steps, index=i, sink_loc=at, fanout=p.name))
    return specs


def load_config(path: str | Path, *, secrets: SecretsMode = "eager") -> LoadedConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {p} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror}") from None
    return load_config_text(text, p, secrets=secrets)
