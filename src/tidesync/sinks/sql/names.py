"""Table and column names as each destination database takes them (pure, no I/O).

==========  ==================================  ==================  ==========================================
database    refused                             longest             one column when two names are
==========  ==================================  ==================  ==========================================
Postgres    NUL, empty                          63 bytes of UTF-8   spelled exactly alike (quoted names keep
                                                (NAMEDATALEN - 1)   their case)
MariaDB     NUL, empty, ending in a space,      64 characters       equal after ``str.lower()``
MySQL       characters beyond U+FFFF
SQLite      NUL; tables: a name starting        none                equal after lower-casing A-Z only
            ``sqlite_`` (reserved)
==========  ==================================  ==================  ==========================================

Every database: a name that is not valid Unicode text (a lone surrogate) is refused.

Why refuse instead of adjusting: Postgres silently cuts a long name to 63
bytes and a NUL ends the name, so ``ADD COLUMN`` would create a column called
something else than the field, and every later write of that field would look
for a column that never appears. A refused name is a permanent error of the
events that write it, with the reason in the message; the sink never runs DDL
for such a name.

Matching (MariaDB, SQLite): a field of an event names the destination column
spelled exactly alike, else the column whose folded name is equal, so a field
``Email`` writes the existing column ``email`` instead of adding a second one
(the database would refuse that as a duplicate). The fold is deliberately
narrower than the database's own comparison, never wider: when the database
still takes a name as another column's, the sink notices after its
``ADD COLUMN`` (the column is still missing) and fails those events
permanently rather than writing to a column they did not name. Two fields of
one event that name the same column are a permanent error of that event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
SHOWN = 40  # characters of a long name quoted in messages


def _same(name: str) -> str:
    return name


def _lower(name: str) -> str:
    return name.lower()


def _ascii_lower(name: str) -> str:
    return name.translate(_ASCII_LOWER)


def shown(name: str) -> str:
    """A name for a message: quoted, cut after ``SHOWN`` characters."""
    if len(name) > SHOWN:
        return repr(name[:SHOWN])[:-1] + "…" + repr(name[:SHOWN])[-1]
    return repr(name)


@dataclass(frozen=True, slots=True)
class NameRules:
    """What one database accepts as a name, and which names it takes as the same column."""

    database: str
    max_bytes: int | None = None
    max_chars: int | None = None
    fold: Callable[[str], str] = _same
    fold_rule: str = ""  # how folded names compare, for messages
    empty_ok: bool = False
    bmp_only: bool = False
    no_trailing_space: bool = False
    reserved_table_prefix: str | None = None  # compared without case

    def problem(self, name: str, what: str = "column") -> str | None:
        """Why ``name`` cannot name a ``what`` in this database; None when it can."""
        label = f"{what} name {shown(name)}"
        if not name:
            return None if self.empty_ok else f"{what} name is empty; {self.database} does not allow empty names"
        if "\x00" in name:
            return f"{label} contains a NUL character, which {self.database} does not allow in names"
        try:
            size = len(name.encode("utf-8"))
        except UnicodeEncodeError:
            return f"{label} is not valid Unicode text (a lone surrogate); {self.database} cannot store it"
        if self.max_bytes is not None and size > self.max_bytes:
            return f"{label} is {size} bytes; {self.database} allows {self.max_bytes}"
        if self.max_chars is not None and len(name) > self.max_chars:
            return f"{label} is {len(name)} characters; {self.database} allows {self.max_chars}"
        if self.bmp_only and any(ord(c) > 0xFFFF for c in name):
            return f"{label} has a character beyond U+FFFF (an emoji?), which {self.database} does not allow in names"
        if self.no_trailing_space and name[-1] == " ":
            return f"{label} ends with a space, which {self.database} does not allow"
        prefix = self.reserved_table_prefix
        if prefix and what == "table" and name.lower().startswith(prefix):
            return f"{label} starts with {prefix!r}, which {self.database} reserves for itself"
        return None

    def index(self, names: Iterable[str]) -> dict[str, str]:
        """Folded name -> name, for matching fields to existing columns."""
        fold = self.fold
        return {fold(n): n for n in names}

    @property
    def folds(self) -> bool:
        return self.fold is not _same


POSTGRES = NameRules("Postgres", max_bytes=63)
MARIADB = NameRules(
    "MariaDB",
    max_chars=64,
    fold=_lower,
    fold_rule="MariaDB column names ignore letter case",
    bmp_only=True,
    no_trailing_space=True,
)
SQLITE = NameRules(
    "SQLite",
    fold=_ascii_lower,
    fold_rule="SQLite column names ignore the case of A-Z",
    empty_ok=True,
    reserved_table_prefix="sqlite_",
)
# Plans made without a database in mind (unit tests): every name goes, exact matches only.
ANY = NameRules("the destination", empty_ok=True)
