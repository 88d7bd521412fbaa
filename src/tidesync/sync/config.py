"""The ``syncs:`` section: two endpoints kept in step in both directions (pydantic only; no driver imports).

::

    syncs:
      - name: customers
        a:
          source: {type: postgres, dsn: "postgresql://postgres@127.0.0.1/crm", tables: [public.customers],
                   snapshot: never}
          table: public.customers          # where writes go (dsn defaults to the source's)
          key: [id]
          timestamp: updated_at            # per-row modification time: lets lww settle initial pairing
        b:
          source: {type: sql_poll, dsn: "mysql://root@127.0.0.1/billing", tables: [accounts], cursor: updated_at}
          table: accounts
          key: [id]
        fields: {id: id, email: email_address, name: full_name, score: score, tags: tags}   # a_field: b_field
        match: {by: email, fallback: name}  # initial pairing of populated tables (sides with their own keys)
        rules:
          default: lww                     # lww | prefer: a | prefer: b | non_null | max | min | sum | union | manual
          fallback: manual                 # what lww and non_null escalate to: manual | prefer: a | prefer: b
          skew: 1s                         # lww: edits closer than this escalate to the fallback
          tie: a
          fields: {score: sum, tags: union, email: {prefer: a}}
        deletes: delete_wins               # or resurrect
        transforms:                        # values only (cast, compute, set, function): names are in `fields`
          b_to_a: [{cast: {tags: json}}]   # B's values into canonical (A's) form
          a_to_b: [{cast: {tags: string}}]

A side may be a spreadsheet file: ``b: {source: {type: xlsx, path: stock.xlsx,
key: [id]}, table: Items, key: [id]}`` (no ``dsn``; ``table`` names the xlsx
sheet, left out for csv; shared keys required; see :mod:`tidesync.sheets.endpoint`),
or a Google sheet (``type: gsheets``; ``table`` names the sheet as for xlsx; see
:mod:`tidesync.sheets.gsheets_endpoint`).

A side may be an app, through its API: HubSpot CRM records or Stripe customers::

    syncs:
      - name: crm
        a:
          source: {type: postgres, dsn: "postgresql://postgres@127.0.0.1/app", tables: [public.people]}
          table: public.people
          key: id
        b:
          source: {type: hubspot, token: "${env:HUBSPOT_TOKEN}", objects: [contacts], poll_interval: 5s}
          table: contacts                  # the source's object written (default: its only object)
          key: hs_object_id                # the record id HubSpot makes
          id_property: email               # unique property inserts upsert by (default: email for contacts)
        fields: {email: email, first_name: firstname, last_name: lastname, score: score}
        match: {by: email}                 # pairs the records both hold at the first start
        rules: {default: lww, fields: {last_name: {prefer: b}}}
        transforms:                        # HubSpot answers text, and an emptied property as ""
          b_to_a: [{compute: {score: "None if score == '' else int(score)",
                              last_name: "None if last_name == '' else last_name"}}]

      - name: billing
        a: {source: {type: postgres, dsn: "...", tables: [public.accounts]}, table: public.accounts, key: id}
        b:
          source: {type: stripe, api_key: "${env:STRIPE_KEY}", poll_interval: 5s}
          key: id                          # the customer id Stripe makes (table: customers, the default)
        fields: {email: email, name: name, phone: phone, note: description}
        match: {by: email}

An app side has no ``dsn`` (it writes through the API: see
:mod:`tidesync.sinks.hubspot.endpoint` and :mod:`tidesync.sinks.stripe.endpoint`
for what one write costs, and the window in which an edit made in the app can
be overwritten), its key is the record id the app makes (so the other side's
key columns stay out of ``fields``: an ID map joins the sides, and ``match:``
pairs records both hold at the first start), and its source reads what the
side maps: a hubspot object without ``properties`` is given the mapped ones
(and ``hs_object_id``), a stripe source without ``objects`` emits customers
only. Changes come from that polling source (HubSpot search, the Stripe
Events API), or from the app's webhooks with that poller as the safety net:
a ``type: hybrid`` source whose ``primary`` is a ``webhook`` of the app
(``provider: stripe`` / ``hubspot``) and whose ``fallback`` is the app's
polling source is an app side too, the fallback standing for "the source"
above (endpoint, entity, what it reads)::

        b:
          source:
            type: hybrid
            primary: {type: webhook, provider: stripe, secrets: ["${env:STRIPE_WHSEC}"], stripe: {backfill: false}}
            fallback: {type: stripe, api_key: "${env:STRIPE_KEY}", poll_interval: 30s}
          key: id

Deliveries come to the route ``/webhooks/<sync>.<side>`` (the side's source
runs as that pipeline; a webhook ``name:`` overrides it), served by the HTTP
server ``tidesync run`` starts for them. Stripe's webhook events carry the
whole customer, as the Events API does (matched by event id: a change both
see is applied once); HubSpot's carry one property each, their record id
made text as the poller gives it, and a creation (no values) is left to the
first property change or the poll (see :mod:`tidesync.sync.app_webhooks`;
matched by values). A hybrid whose webhooks are an app's must have that
app's poller as its fallback (and, for HubSpot, no object ``entity:``).
Stripe attributes map by their top-level names; a mapping (``metadata``,
``address``) is one value, written whole. LWW compares the time each change
carries: for HubSpot each property's own change time, from its property
history (the side's source reads it by default: ``property_history``, see
:mod:`tidesync.sources.http.config`; with ``property_history: false``, the
record's ``lastmodifieddate`` / ``hs_lastmodifieddate``, one time for every
property of a record), the event's ``created`` for Stripe (whole seconds).
Echoes of the sync's writes are known by the ledger of values written, as for
sheets, whether polled or delivered by webhook. The ``hubspot`` polling source reads records archived in HubSpot from
the archived list on each pass, so deletes there reach the other side
(deletes of the other side archive the HubSpot record); Stripe deletes go
both ways too.

Canonical names are A's. When A's key columns map onto B's key columns the
sides share keys (records are created with the same key); otherwise each side
generates its own and an ID map joins them.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from tidesync.sources.polling.config import Seconds
from tidesync.sync import app_side
from tidesync.sync.rules import Rule

_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
VALUE_STEPS = ("cast", "compute", "set", "function")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _rule(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1 and "prefer" in value:
        return f"prefer:{value['prefer']}"
    if isinstance(value, Rule):
        return str(value)
    return value


def _check_rule(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a rule is a name (lww, manual, ...) or {prefer: a|b}")
    return str(Rule.parse(value))


RuleSpec = Annotated[str, BeforeValidator(lambda v: _check_rule(_rule(v)))]


def _names(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Names = Annotated[list[str], BeforeValidator(_names)]


SHEET_SOURCES = ("csv", "xlsx", "gsheets")
NAMED_SHEETS = ("xlsx", "gsheets")  # sources whose sheet the side's table: may name


class SyncSide(_Strict):
    """One side. A spreadsheet side (source ``type: csv`` / ``xlsx`` / ``gsheets``) writes that file or Google
    sheet: no ``dsn:``; ``table:`` names the xlsx or Google sheet (or the source's ``sheet:`` does) and is left
    out for csv; the source's ``key:`` is the side's."""

    source: dict[str, Any] = Field(description="any source: where this side's changes come from")
    table: str | None = Field(
        None,
        min_length=1,
        description=(
            "the table writes go to (schema.table or table); xlsx or gsheets side: the sheet; csv side: left out"
        ),
    )
    dsn: str | None = Field(
        None, description="database for writes (default: the source's dsn or path); none on a csv/xlsx/gsheets side"
    )
    entity: str | None = Field(None, description="entity name of this table's change events (default: derived)")
    key: Names = Field(min_length=1, description="key columns, in the source's key order")
    timestamp: str | None = Field(None, description="per-row modification time column (initial pairing with lww)")
    id_property: str | None = Field(
        None,
        min_length=1,
        description="hubspot side: the unique property inserts upsert by (default: email for contacts, else none)",
    )

    @property
    def is_sheet(self) -> bool:
        return self.source.get("type") in SHEET_SOURCES

    @property
    def app_source(self) -> dict[str, Any] | None:
        """The config of the app's polling source: the source itself, or a ``hybrid`` source's fallback; None
        when this side is no app."""
        return app_side.app_source(self.source)

    @property
    def app_kind(self) -> str | None:
        """``hubspot`` or ``stripe`` for an app side (by its source's type, or a hybrid's fallback's)."""
        app = self.app_source
        return str(app["type"]) if app is not None else None

    @property
    def is_saas(self) -> bool:
        return self.app_source is not None

    def _set_app_source(self, app: dict[str, Any]) -> None:
        if self.source.get("type") == "hybrid":
            self.source = {**self.source, "fallback": app}
        else:
            self.source = app

    @model_validator(mode="after")
    def _shape(self) -> SyncSide:
        kind = self.source.get("type")
        if kind == "hybrid":
            app_side.check_hybrid(self.source)
        if self.id_property is not None and self.app_kind != "hubspot":
            raise ValueError("id_property: only a hubspot side has one")
        if self.app_kind is not None:
            return self._saas(self.app_kind)
        if not self.is_sheet:
            if self.table is None:
                raise ValueError("table: the table writes go to is required")
            return self
        if self.dsn is not None:
            where = "its Google sheet" if kind == "gsheets" else "its file (the source's path)"
            raise ValueError(f"dsn: a {kind} side writes {where}, not a database: remove dsn:")
        if kind == "csv" and self.table is not None:
            raise ValueError("table: a csv file has one sheet: leave table: out")
        sheet = self.source.get("sheet")
        if kind in NAMED_SHEETS and self.table is not None and sheet is not None and sheet != self.table:
            raise ValueError(f"table: {self.table!r} names the sheet, and the source reads sheet {sheet!r}: use one")
        if kind == "gsheets" and sheet is None and self.table is not None:
            self.source = {**self.source, "sheet": self.table}  # the source reads the sheet the side writes
        source_key = _names(self.source.get("key"))
        if source_key is None or list(source_key) != list(self.key):
            raise ValueError(
                f"key: a {kind} side needs the source's key: to be the side's key ({self.key}); "
                f"the source has {source_key}"
            )
        return self

    def _saas(self, kind: str) -> SyncSide:
        app_side.check(kind, self.app_source or {}, key=self.key, table=self.table, dsn=self.dsn)
        return self

    def fill_source(self, columns: list[str]) -> None:
        """An API side's source (a hybrid's: its fallback) reads what the side maps (see
        :func:`.app_side.filled`)."""
        app = self.app_source
        if app is not None:
            self._set_app_source(app_side.filled(app, columns, table=self.table, id_property=self.id_property))


class MatchConfig(_Strict):
    """Initial pairing of two populated tables: records with equal ``by`` values (canonical names) are one.

    (``by``, not ``on``: YAML reads a bare ``on`` key as the boolean true.)
    """

    by: Names = Field(min_length=1)
    fallback: Names | None = Field(None, description="matched on these when `by` is empty or matches nothing")
    on_collision: Literal["fail", "create"] = Field(
        "fail", description="several records share a match value: fail the start, or create them unmatched"
    )


class RulesConfig(_Strict):
    default: RuleSpec = "lww"
    fallback: RuleSpec = "manual"
    skew: Seconds = Field(1.0, ge=0, description="lww: edits closer in time than this escalate to the fallback")
    tie: Literal["a", "b"] = "a"
    fields: dict[str, RuleSpec] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _fallback_decides(self) -> RulesConfig:
        if Rule.parse(self.fallback).kind not in ("manual", "prefer"):
            raise ValueError("fallback must be manual, prefer: a or prefer: b (a rule that always decides)")
        return self


class SyncTransforms(_Strict):
    a_to_b: list[Any] = Field(default_factory=list, description="canonical (A) values into B's form")
    b_to_a: list[Any] = Field(default_factory=list, description="B's values into canonical (A) form")


class SyncBatch(_Strict):
    max_events: int = Field(500, ge=1, le=100_000)
    max_wait_ms: float = Field(50.0, ge=0)


class SyncRetry(_Strict):
    initial_delay: float = Field(0.1, gt=0)
    max_delay: float = Field(10.0, gt=0)
    multiplier: float = Field(2.0, ge=1)
    jitter: Literal["full", "none"] = "full"
    max_attempts: int | None = Field(None, ge=1)
    max_age: float | None = Field(None, gt=0)


class SyncConfig(_Strict):
    name: str = Field(pattern=_NAME)
    a: SyncSide
    b: SyncSide
    fields: dict[str, str] = Field(min_length=1, description="a_field: b_field")
    match: MatchConfig | None = None
    rules: RulesConfig = Field(default_factory=lambda: RulesConfig.model_validate({}))
    deletes: Literal["delete_wins", "resurrect"] = "delete_wins"
    transforms: SyncTransforms = Field(default_factory=SyncTransforms)
    batch: SyncBatch = Field(default_factory=lambda: SyncBatch.model_validate({}))
    retry: SyncRetry = Field(
        default_factory=lambda: SyncRetry.model_validate({}),
        description="endpoint writes that fail transiently: retried on this schedule within the batch",
    )
    restart: SyncRetry = Field(
        default_factory=lambda: SyncRetry.model_validate({"initial_delay": 0.5, "max_delay": 30.0}),
        description=(
            "starting over after a failure (a lost source, an endpoint or state store that keeps failing): "
            "the wait before each restart; max_attempts / max_age count failures in a row (a restart that "
            "processes a batch begins a new count) and then the sync fails"
        ),
    )
    history_keep: int = Field(10_000, ge=0, description="settlements kept in the sync history")
    enabled: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> SyncConfig:
        known = set(self.fields)
        targets = list(self.fields.values())
        dup = sorted({t for t in targets if targets.count(t) > 1})
        if dup:
            raise ValueError(f"fields: B field(s) {', '.join(dup)} mapped from more than one A field")
        bad = sorted(set(self.rules.fields) - known)
        if bad:
            raise ValueError(f"rules.fields: {', '.join(bad)} not in fields (use A's field names)")
        if self.match is not None:
            bad = sorted({*self.match.by, *(self.match.fallback or ())} - known)
            if bad:
                raise ValueError(f"match: {', '.join(bad)} not in fields (use A's field names)")
        a_keys = [self.fields.get(k) for k in self.a.key]
        if any(k is not None for k in a_keys) and sorted(str(k) for k in a_keys) != sorted(self.b.key):
            raise ValueError(
                "keys: map every key column of A onto B's key columns (shared keys), or none of them "
                "(each side generates its own keys and an ID map joins them)"
            )
        sheet = [s for s, side in (("a", self.a), ("b", self.b)) if side.is_sheet]
        if sheet and not self.shared_keys:
            raise ValueError(
                f"keys: side {sheet[0]} is a spreadsheet, which makes no keys: map the key columns onto each "
                "other (shared keys)"
            )
        saas = [s for s, side in (("a", self.a), ("b", self.b)) if side.is_saas]
        if saas and self.shared_keys:
            kind = (self.a if saas[0] == "a" else self.b).app_kind
            raise ValueError(
                f"keys: side {saas[0]} is {kind}, which makes its own record ids: leave the key columns out of "
                "fields (an ID map joins the sides; pair existing records with match: {by: email})"
            )
        self.a.fill_source(list(self.fields))
        self.b.fill_source(list(self.fields.values()))
        if self.match is not None and self.shared_keys:
            raise ValueError(
                "match: pairs records of sides that make their own keys; here the key columns are mapped onto "
                "each other (shared keys), so records are paired by key: remove match: or the key mapping"
            )
        return self

    @property
    def shared_keys(self) -> bool:
        return all(k in self.fields for k in self.a.key)

    def rule_set(self) -> Any:
        from tidesync.sync.rules import Rules

        r = self.rules
        return Rules(
            default=Rule.parse(r.default),
            fields={f: Rule.parse(v) for f, v in r.fields.items()},
            fallback=Rule.parse(r.fallback),
            skew=r.skew,
            tie=r.tie,
        )


def check_value_steps(raw: list[Any]) -> str | None:
    """Why a sync transform list is not allowed (renames and filters would break the mapping), or None."""
    for i, step in enumerate(raw):
        if isinstance(step, dict):
            kinds = [k for k in step if k != "entity"]
            for k in kinds:
                if k in ("rename", "select", "drop", "filter"):
                    return (
                        f"[{i}]: {k} is not allowed in a sync transform: field names are mapped by `fields`, "
                        f"and every record takes part (allowed: {', '.join(VALUE_STEPS)})"
                    )
    return None
