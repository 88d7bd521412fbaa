"""Following the source's schema changes in a SQL destination, under the pipeline's ``schema_changes`` policy.

The mechanism: the source publishes each new shape of an entity into the
pipeline's :class:`~tidesync.schema.SchemaRegistry` with ``since``, the
position of its first event; transforms map it like rows. No extra event
flows. Before a write, :meth:`SchemaFollower.scan` finds the first live event
whose shape is newer than the one the sink last brought its table to. Events
before it are written (and their position stored) first, in their own
transaction; then the table is changed (tidesync.sinks.sql.evolve), then the
events of the new shape are written. So the destination changes after the last
row of the old shape and before the first row of the new one.

Policy (``schema_changes`` on the pipeline, default ``evolve``):

- ``evolve``: run the DDL; a change that cannot be followed without loss (a
  narrowing, a change of kind) blocks the pipeline with what to do;
- ``block``: any change that needs DDL blocks the pipeline (status
  ``blocked``, the reason names the table and the change); it resumes by
  itself once a person brought the table to the new shape;
- ``dead_letter``: the events of the new shape that need DDL are
  dead-lettered with the reason (later events of their keys wait behind
  them); once the table has the new shape, later events flow.

The shape the table was brought to is remembered in the state store (kv
namespace ``sql-sink-schemas``), so a restart that never sees the old shape
again still tells a rename from a drop plus an add. Every step checks the
table as it is, so running a change twice (a crash between the DDL and the
state write) does nothing more.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from tidesync.errors import DeliveryError, PermanentError, SystemicError
from tidesync.event import ChangeEvent
from tidesync.protocols import Context
from tidesync.schema import EntitySchema
from tidesync.sinks.sql.evolve import (
    AddColumn,
    ChangePlan,
    RelaxColumn,
    RenameColumn,
    WidenColumn,
    plan_change,
    schema_from_state,
    schema_to_state,
)
from tidesync.sinks.sql.tables import TableInfo

log = logging.getLogger("tidesync.sinks.sql")

Policy = Literal["evolve", "block", "dead_letter"]
KV_NAMESPACE = "sql-sink-schemas"


@dataclass(frozen=True, slots=True)
class Due:
    """The first live event (``at``, an index into ``live``) whose shape needs DDL first."""

    at: int
    entity: str
    version: EntitySchema
    table: TableInfo
    plan: ChangePlan


class SchemaFollower:
    """One sink's view of which shape each destination table has; see the module docstring."""

    def __init__(self, backend: Any, describe: Callable[[str], Awaitable[TableInfo | None]]) -> None:
        self.backend = backend
        self.describe = describe
        self.ctx: Context | None = None
        self.applied: dict[str, EntitySchema] = {}
        self.applied_key: dict[str, tuple[Any, ...] | None] = {}

    def open(self, ctx: Context) -> None:
        self.ctx = ctx

    @property
    def policy(self) -> Policy:
        assert self.ctx is not None
        value = self.ctx.extra.get("schema_changes", "evolve")
        if value == "block" or value == "dead_letter":
            return value
        return "evolve"

    def _kv_key(self, entity: str) -> str:
        assert self.ctx is not None
        return f"{self.ctx.pipeline}/{self.ctx.name}/{entity}"

    def _key(self, entity: str, version: EntitySchema) -> tuple[Any, ...]:
        assert self.ctx is not None
        history = self.ctx.schemas.history(entity)
        index = next((i for i, s in enumerate(history) if s is version), len(history))
        return (version.since or (), index)

    def _current(self, entity: str, version: EntitySchema) -> bool:
        if self.applied.get(entity) is version:
            return True
        key = self.applied_key.get(entity)
        if key is None:
            return False
        try:
            return self._key(entity, version) <= key  # never back to an older shape
        except TypeError:
            return False

    async def _settle(self, entity: str, version: EntitySchema) -> None:
        """The table has ``version``'s shape now: remember it (here and in the state store)."""
        assert self.ctx is not None
        self.applied[entity] = version
        self.applied_key[entity] = self._key(entity, version)
        if self.ctx.state is not None:  # a sink driven without a state store (tests, tools) remembers in memory
            await self.ctx.state.kv_put(KV_NAMESPACE, self._kv_key(entity), schema_to_state(version))

    async def _previous(self, entity: str) -> EntitySchema | None:
        assert self.ctx is not None
        if entity in self.applied:
            return self.applied[entity]
        if self.ctx.state is None:
            return None
        stored = schema_from_state(await self.ctx.state.kv_get(KV_NAMESPACE, self._kv_key(entity)))
        if stored is not None:
            self.applied[entity] = stored
        return stored

    async def scan(self, events: Sequence[ChangeEvent], live: list[int]) -> tuple[Due | None, dict[int, DeliveryError]]:
        """The first live event needing DDL first, and (``dead_letter``) the events refused for a change.

        Changes that need no DDL (the table has the new shape already, a
        first sight, a missing table) are settled on the way.
        """
        ctx = self.ctx
        assert ctx is not None
        schemas = ctx.schemas
        refused: dict[str, tuple[EntitySchema, str]] = {}
        dead: dict[int, DeliveryError] = {}
        quiet: set[str] = set()
        for n, i in enumerate(live):
            ev = events[i]
            entity = ev.entity
            if entity in quiet:
                continue
            history = schemas.history(entity)
            if not history:
                quiet.add(entity)
                continue
            if len(history) == 1:
                version: EntitySchema | None = history[0]
            else:
                version = schemas.shape_at(entity, ev.position)
            if version is None or self._current(entity, version):
                if len(history) == 1:
                    quiet.add(entity)
                continue
            if entity in refused and refused[entity][0] is version:
                dead[i] = PermanentError(refused[entity][1])
                continue
            old = await self._previous(entity)
            table = await self.describe(entity)
            if old is None or table is None:
                await self._settle(entity, version)  # first sight, or a table create_tables makes
                continue
            plan = plan_change(
                old,
                version,
                table,
                fold=self.backend.names.fold,
                loose=self.backend.loose_types,
                where=self.backend.where,
            )
            for note in plan.notes:
                log.warning("%s", note)
            if not plan.actions and not plan.refused:
                if plan.diff:
                    log.info(
                        "schema of %s changed (%s); table %s needs no change", entity, plan.diff.describe(), table.name
                    )
                await self._settle(entity, version)
                continue
            if self.policy == "dead_letter":
                refused[entity] = (version, self._refusal(entity, table, plan))
                dead[i] = PermanentError(refused[entity][1])
                continue
            return Due(n, entity, version, table, plan), dead
        return None, dead

    def _refusal(self, entity: str, table: TableInfo, plan: ChangePlan) -> str:
        if plan.refused:
            return plan.refused[0]
        policy = self.policy
        return (
            f"the schema of {entity} changed at the source ({plan.diff.describe()}) and schema_changes is "
            f"{policy}: table {table.name} in {self.backend.where} is left as it is. To go on, change it by "
            f"hand ({plan.describe_actions()}), or set schema_changes: evolve and restart; "
            + (
                "the pipeline resumes by itself once the table has the new shape"
                if policy == "block"
                else "events of the new shape are dead-lettered until the table has it"
            )
        )

    async def apply(self, due: Due) -> None:
        """Bring the table to the new shape (policy ``evolve``), or raise the SystemicError that blocks."""
        if self.policy != "evolve" or due.plan.refused:
            raise SystemicError(self._refusal(due.entity, due.table, due.plan), entity=due.entity)
        b = self.backend
        table = due.table
        log.info(
            "schema of %s changed (%s): %s on table %s in %s",
            due.entity,
            due.plan.diff.describe(),
            due.plan.describe_actions(),
            table.name,
            b.where,
        )
        adds = []
        for action in due.plan.actions:
            if isinstance(action, RenameColumn):
                await b.rename_column(table, action.old, action.new)
            elif isinstance(action, WidenColumn):
                await b.widen_column(table, action.column, action.current)
            elif isinstance(action, RelaxColumn):
                await b.relax_column(table, action.current)
            elif isinstance(action, AddColumn):
                adds.append(action.column)
        if adds:
            await b.add_columns(table, adds)
        await self._settle(due.entity, due.version)
