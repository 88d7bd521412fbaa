"""Shadow rows: the last image of every captured row, kept in the state store when ``shadow: true``.

Postgres does not send an unchanged TOASTed value ('u') and, without REPLICA
IDENTITY FULL, sends no old row at all. With a shadow row the source can:

- fill an unchanged TOASTed column of an update with its last known value, so
  that consumers that need whole rows (webhooks, brokers) get the real value,
  never a placeholder (it stays out of ``changed``: it did not change);
- narrow ``changed`` to the columns whose value differs from the shadow.

Without a shadow row for the key (a row never seen: ``snapshot: never``, or a
row older than the shadow) nothing is filled: the column stays absent (unknown),
and ``changed`` lists every column present in the new row.

Shadows are written when a batch is produced (before the engine commits it).
After a crash the events since the checkpoint are produced again with shadows
that may already hold their outcome; a filled value is then at most newer than
the one Postgres would have meant, and the replay that follows restores every
later value, so the end state is right. Writing them only after the checkpoint
would instead risk a stale value that nothing corrects later.

Scope: ``<pipeline>/source``, apart from any shadows the engine keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tidesync.event import DELETE, INSERT, SNAPSHOT, TRUNCATE, UPDATE, ChangeEvent, Key, Row, diff_fields
from tidesync.state.store import ShadowRow, StateChanges, StateStore


class ShadowKeeper:
    def __init__(self, store: StateStore, pipeline: str, columns_of: Callable[[str], tuple[str, ...] | None]) -> None:
        self.store = store
        self.pipeline = pipeline
        self.scope = f"{pipeline}/source"
        self.columns_of = columns_of

    async def apply(self, events: list[ChangeEvent]) -> list[ChangeEvent]:
        """Fill and narrow the updates of a batch, then store the batch's row images."""
        if not events:
            return events
        need: dict[str, set[Key]] = {}
        seen: set[tuple[str, Key]] = set()
        for e in events:
            if (e.op == UPDATE and (e.entity, e.key) not in seen) or e.op == DELETE:
                need.setdefault(e.entity, set()).add(e.key)
            seen.add((e.entity, e.key))
        known: dict[tuple[str, Key], Row | None] = {}
        for entity, keys in need.items():
            got = await self.store.shadow_get(self.scope, entity, list(keys))
            for key, sr in got.items():
                known[(entity, tuple(key))] = sr.row
        out: list[ChangeEvent] = []
        puts: dict[tuple[str, Key], ChangeEvent] = {}
        deletes: dict[tuple[str, Key], None] = {}
        truncated: list[str] = []
        deleted_base: tuple[ChangeEvent, Row | None] | None = None  # the delete just before, and its last row
        for e in events:
            ident = (e.entity, e.key)
            if e.op == UPDATE and e.after is not None:
                base = known.get(ident)
                if base is not None:
                    e = self._fill(e, base)
            elif e.op == INSERT and e.after is not None and deleted_base is not None:
                # an update that moved the key: the new row's unchanged TOAST comes from the old key
                prev, base = deleted_base
                if prev.entity == e.entity and prev.position[0] == e.position[0] and base is not None:
                    e = self._fill(e, base, keep_changed=True)
            deleted_base = None
            if e.op in (INSERT, UPDATE, SNAPSHOT) and e.after is not None:
                known[ident] = e.after
                puts[ident] = e
                deletes.pop(ident, None)
            elif e.op == DELETE:
                deleted_base = (e, known.get(ident))
                known[ident] = None
                puts.pop(ident, None)
                deletes[ident] = None
            elif e.op == TRUNCATE:
                truncated.append(e.entity)
                for k in [k for k in known if k[0] == e.entity]:
                    known[k] = None
                    puts.pop(k, None)
            out.append(e)
        await self._store(puts, deletes, truncated)
        return out

    def _fill(self, e: ChangeEvent, base: Row, *, keep_changed: bool = False) -> ChangeEvent:
        after = e.after
        assert after is not None
        columns = self.columns_of(e.entity) or tuple(after)
        filled: dict[str, Any] | None = None
        for name in columns:
            if name not in after and name in base:
                if filled is None:
                    filled = dict(after)
                filled[name] = base[name]
        row = filled if filled is not None else after
        if keep_changed:
            return e.replace(after=row) if filled is not None else e
        present = tuple(n for n in after)  # the columns Postgres sent
        changed = tuple(n for n in diff_fields(base, {n: after[n] for n in present}))
        return e.replace(after=row, changed=changed)

    async def _store(
        self, puts: dict[tuple[str, Key], ChangeEvent], deletes: dict[tuple[str, Key], None], truncated: list[str]
    ) -> None:
        changes = StateChanges()
        for entity in truncated:
            for sr in await self.store.shadow_scan(self.scope, entity):
                if (entity, tuple(sr.key)) not in puts:
                    changes.shadow_delete.append((self.scope, entity, sr.key))
        for (entity, key), e in puts.items():
            assert e.after is not None
            changes.shadow_put.append(ShadowRow(self.scope, entity, key, e.after, e.position, e.committed_at, e.origin))
        for entity, key in deletes:
            changes.shadow_delete.append((self.scope, entity, key))
        if not changes.is_empty():
            await self.store.commit(self.pipeline, changes)
