"""The Postgres source's one error translation: both drivers, one rule set, one default."""

from __future__ import annotations

import psycopg
import psycopg2
import pytest

from tidesync.errors import SourceError, SourceTransientError
from tidesync.sources.postgres.errors import is_transient, translate


class _Pg2Coded(psycopg2.DatabaseError):
    """A psycopg2 error as the server reports it: with a SQLSTATE (``pgcode`` is read-only on the real ones)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code

    @property
    def pgcode(self) -> str:  # type: ignore[override]
        return self.code


def pg3(code: str, text: str = "x") -> psycopg.Error:
    return psycopg.errors.lookup(code)(text)


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        # lost connections and restarts, from either driver
        (psycopg.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg2.OperationalError("server closed the connection unexpectedly"), True),
        (psycopg2.InterfaceError("connection already closed"), True),
        (psycopg2.DatabaseError("no COPY in progress\n"), True),  # the server ended the stream (shutdown)
        (psycopg2.DatabaseError("error with status PGRES_COPY_BOTH and no message from the libpq"), True),
        (OSError("connection refused"), True),
        (pg3("57P01"), True),
        (_Pg2Coded("57P01", "terminating connection due to administrator command"), True),
        (pg3("57P03"), True),
        (pg3("08006"), True),
        (pg3("40001"), True),
        # a replication client's own readings of two SQLSTATEs
        (pg3("55006", 'replication slot "s" is active for PID 7'), True),
        (_Pg2Coded("55006", 'replication slot "s" is active for PID 7'), True),
        (_Pg2Coded("58P01", "requested WAL segment has already been removed"), False),
        # what no retry fixes
        (_Pg2Coded("42704", 'replication slot "s" does not exist'), False),
        (pg3("42501"), False),
        (pg3("3D000"), False),
        (pg3("28P01"), False),
        (_Pg2Coded("55000", "can no longer get changes from replication slot"), False),
        (psycopg.OperationalError('FATAL:  password authentication failed for user "x"'), False),
        # the default for what nobody classified: permanent
        (_Pg2Coded("ZZ123", "something new"), False),
        (pg3("XX000", "internal error"), False),
        (psycopg2.DatabaseError("something without a code"), False),
        (ValueError("a bug"), False),
    ],
)
def test_each_error_is_transient_or_not_by_one_rule_set(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient
    translated = translate(exc, "reading")
    assert isinstance(translated, SourceTransientError) is transient
    assert isinstance(translated, SourceError)
    assert str(translated).startswith("reading: ")


def test_a_translated_error_passes_through_unchanged() -> None:
    done = SourceTransientError("already said")
    assert translate(done, "again") is done
    assert is_transient(done) and not is_transient(SourceError("permanent"))


def test_the_message_says_what_a_source_specific_sqlstate_means() -> None:
    text = str(translate(_Pg2Coded("58P01", "requested WAL segment 0001 has already been removed"), "replicating"))
    assert "the WAL this slot needs was removed" in text
