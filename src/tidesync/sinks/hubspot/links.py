"""Associations from foreign-key columns: the v4 default association between two records, kept in step.

A column listed under ``associations`` holds the source key of a record of
another configured entity. After an item's record is written, the record it
names is looked up in the ID map (or, for a target upserted by
``tidesync_key``, in HubSpot by that key), associated with
``batch/associate/default``, and the association the column made before (kept
in the ID map entry's ``links``) is archived with ``batch/archive``. A column
that names a record HubSpot does not have fails that item permanently.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tidesync.errors import DeliveryError, PermanentError
from tidesync.sinks.hubspot.api import HubSpotApi
from tidesync.sinks.hubspot.config import KEY_PROPERTY, HubSpotSinkConfig
from tidesync.sinks.hubspot.idmap import Entry, IdMap
from tidesync.sinks.hubspot.plan import Item, chunks, key_text


@dataclass(slots=True)
class Link:
    """One association column of one record: the record it linked before (``old``) and should link (``new``)."""

    item: Item
    column: str
    to_type: str
    old: str | None
    new: str | None


class Associations:
    """See the module docstring. Requests go one at a time, at most ``batch_size`` pairs each."""

    def __init__(self, config: HubSpotSinkConfig, api: HubSpotApi, ids: IdMap) -> None:
        self.config = config
        self.api = api
        self.ids = ids

    def _links(self, items: list[Item], failures: dict[int, DeliveryError]) -> list[Link]:
        links: list[Link] = []
        for it in items:
            if it.action == "archive" or not it.spec.associations:
                continue
            row = it.event.after or {}
            fields = set(it.event.fields_to_write())
            entry = self.ids.get(*it.key)
            if entry is None:
                continue
            for column, target in it.spec.associations.items():
                if column not in row or (it.action == "update" and column not in fields and column in entry.links):
                    continue
                value = row[column]
                new: str | None = None
                if value is not None:
                    found = self.ids.get(target, (value,))
                    if found is None:
                        failures[it.index] = PermanentError(
                            f"{it.event.entity} {list(it.event.key)}: {column}={value!r} names a {target} record "
                            "that is not in HubSpot (not written yet, or dead-lettered)"
                        )
                        break
                    new = found.id
                old = entry.links.get(column)
                if new != old:
                    links.append(Link(it, column, self.config.objects[target].type, old, new))
        return [link for link in links if link.item.index not in failures]

    async def _find_targets(self, items: list[Item]) -> None:
        """Record ids of associated records the ID map lacks (written before the map, by another sink),
        looked up by the source key they carry (targets upserted by ``tidesync_key`` only)."""
        wanted: dict[str, set[Any]] = {}
        for it in items:
            row = it.event.after or {}
            for column, target in it.spec.associations.items():
                value = row.get(column)
                spec = self.config.objects[target]
                if value is not None and spec.keyed_by_source and self.ids.get(target, (value,)) is None:
                    wanted.setdefault(target, set()).add(value)
        for target, values in wanted.items():
            ordered = sorted(values, key=str)
            for part in chunks(ordered, self.config.batch_size):
                found = await self.api.read(self.config.objects[target].type, [key_text((v,)) for v in part],
                                            KEY_PROPERTY)  # fmt: skip
                for v in part:
                    record_id = found.get(key_text((v,)))
                    if record_id is not None:
                        self.ids.put(target, (v,), Entry(record_id))

    async def write(self, items: list[Item], failures: dict[int, DeliveryError]) -> None:
        """Associate each item's record as its association columns say; a failed item goes into ``failures``."""
        await self._find_targets([it for it in items if it.action != "archive" and it.spec.associations])
        links = self._links(items, failures)
        stale: dict[tuple[str, str], list[Link]] = {}
        fresh: dict[tuple[str, str], list[Link]] = {}
        for link in links:
            pair = (link.item.spec.type, link.to_type)
            if link.old is not None:
                stale.setdefault(pair, []).append(link)
            if link.new is not None:
                fresh.setdefault(pair, []).append(link)
        for (a, b), group in stale.items():
            for part in chunks(group, self.config.batch_size):
                await self.api.unassociate(a, b, [(_rid(lk), lk.old or "") for lk in part])
        for (a, b), group in fresh.items():
            for part in chunks(group, self.config.batch_size):
                answer = await self.api.associate(a, b, [(_rid(lk), lk.new or "") for lk in part])
                for lk in part:
                    err = answer.errors.get(_rid(lk))
                    if err is not None:
                        failures[lk.item.index] = PermanentError(
                            f"HubSpot refused to associate {lk.item.event.entity} {list(lk.item.event.key)} "
                            f"with {b} {lk.new}: {err.message}"
                        )
        for link in links:
            if link.item.index in failures:
                continue
            entry = self.ids.get(*link.item.key)
            if entry is None:
                continue
            if link.new is None:
                entry.links.pop(link.column, None)
            else:
                entry.links[link.column] = link.new
            self.ids.touch(*link.item.key)


def _rid(link: Link) -> str:
    assert link.item.record_id is not None
    return link.item.record_id
