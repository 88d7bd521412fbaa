"""The writable side of a sync endpoint: conditional writes, reads by key, and a full scan for pairing.

Values and column names here are the side's own (see :mod:`.mapping`).

Contract of :meth:`Endpoint.apply`: the ops run in order and each reports its
own outcome (one result per op):

- :class:`UpdateOp`: each field is written only if the column still holds
  ``expected`` (``IS NOT DISTINCT FROM``; unconditional when ``conditional`` is
  false). Per column: ``ok``; ``already`` when it holds the new value anyway
  (a write replayed after a crash); ``conflict`` when it holds something else
  (a concurrent edit: it is not overwritten); ``missing`` when the row is gone;
  ``failed`` when the database rejects the value for good.
- :class:`InsertOp`: ``ok`` with the key (generated when ``key`` is None);
  ``exists`` with the current row when the key is taken.
- :class:`DeleteOp`: ``ok``; ``missing``; ``conflict`` when the row no longer
  holds ``expected`` (it was edited: the edit may resurrect it).

``apply`` raises :class:`~tidesync.errors.TransientError` when the whole call
may be retried (lost connection, deadlock): every op is safe to repeat,
because repeating a conditional write reports ``already``, and repeating an
insert of a given key reports ``exists``. An insert whose key the side
generates is the exception: before repeating one whose outcome was lost (a
crash, a dropped connection) the sync looks for it with :meth:`Endpoint.find`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tidesync.event import Key, Row


@dataclass(frozen=True, slots=True)
class FieldWrite:
    column: str
    value: Any
    expected: Any = None
    conditional: bool = True


@dataclass(frozen=True, slots=True)
class UpdateOp:
    key: Key
    fields: tuple[FieldWrite, ...]


@dataclass(frozen=True, slots=True)
class InsertOp:
    row: Mapping[str, Any]
    key: Key | None = None  # None: the side generates it


@dataclass(frozen=True, slots=True)
class DeleteOp:
    key: Key
    expected: Mapping[str, Any] | None = None  # None: unconditional


Op = UpdateOp | InsertOp | DeleteOp


@dataclass(frozen=True, slots=True)
class OpResult:
    """``status`` of a record op, or per column (``columns``) for an update; ``row`` for ``exists``."""

    status: str
    columns: Mapping[str, str] = field(default_factory=dict)
    key: Key | None = None
    row: Row | None = None
    error: str = ""


@runtime_checkable
class Endpoint(Protocol):
    """One table that a sync reads and writes."""

    key: tuple[str, ...]

    async def open(self, *, writes: bool = True) -> None:
        """Get ready; ``writes=False`` (a dry run) changes nothing anywhere and :meth:`apply` is not called."""

    async def close(self) -> None: ...

    async def apply(self, ops: Sequence[Op]) -> list[OpResult]: ...

    async def fetch(self, keys: Sequence[Key]) -> dict[Key, Row]:
        """The current rows of these keys (absent keys are left out)."""

    async def find(self, values: Mapping[str, Any], limit: int = 20) -> list[tuple[Key, Row]]:
        """Rows whose columns hold ``values`` (``IS NOT DISTINCT FROM``), newest key first, at most ``limit``."""

    async def scan(self, page_size: int = 5000) -> list[Row]:
        """Every row (initial pairing), read in key order."""
