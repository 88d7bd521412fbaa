"""One text form per value, so a source row (after transforms) and a destination row compare equal
exactly when the destination holds what the pipeline would write (pure; no I/O).

The form depends on the column's portable type (``tidesync.schema``), taken
from the pipeline's view of the column (the source schema after transforms),
so both sides are read the same way whatever the drivers return:

==============  ===========================================================
type            canonical text
==============  ===========================================================
int*, bool      the integer (``True`` is ``1``; ``'t'``/``'true'`` too)
decimal         the number without exponent or trailing zeros (``1.50`` → ``1.5``);
                a float is read through its shortest repr, so ``0.1`` = ``Decimal('0.1')``
float64         ``repr`` of the float (Decimal and text are converted)
float32         ``repr`` after rounding to single precision (what a ``real`` column keeps)
timestamp(tz)   UTC wall-clock time with microseconds; a naive value is taken as UTC,
                text is parsed as ISO 8601 (SQLite), so ``2024-01-01 10:00:00+02:00``
                = ``2024-01-01 08:00:00`` (naive, as MariaDB stores a timestamptz)
date / time     ISO 8601; a MariaDB ``TIME`` (timedelta) is a time of day
interval        whole microseconds (MariaDB and SQLite store them as integers)
uuid            the lower-case hyphenated form, from UUID, text or 16 bytes
json / array    compact JSON with sorted keys (text is parsed first)
bytes           hex
string          the text; other values by their type's canonical form
==============  ===========================================================

NULL is distinct from every value (including the empty string). A value that
cannot be read as its column type (``'abc'`` in an int column) keeps a tagged
form of its own, so it differs from every proper value and never crashes a run.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import re
import struct
import uuid
from collections.abc import Callable, Sequence
from decimal import Context, Decimal, InvalidOperation
from typing import Any

import msgspec

NULL = "\x00null"
UTC = dt.UTC


def _int(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (Decimal, float)) and v == int(v):
        return str(int(v))
    if isinstance(v, str):
        text = v.strip().lower()
        if text in ("t", "true", "y", "yes"):
            return "1"
        if text in ("f", "false", "n", "no"):
            return "0"
        return str(int(text))
    raise ValueError(v)


def _decimal(v: Any) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    d = Decimal(repr(v)) if isinstance(v, float) else Decimal(str(v).strip())
    if not d.is_finite():
        return str(d)
    if d == 0:
        return "0"
    # normalize() rounds to the context's precision; give it exactly the digits the value has.
    return format(d.normalize(Context(prec=len(d.as_tuple().digits))), "f")


def _float(v: Any, single: bool) -> str:
    f = float(v)
    if single:
        f = struct.unpack("f", struct.pack("f", f))[0]
    return "0.0" if f == 0 else repr(f)


def _timestamp(v: Any) -> str:
    if isinstance(v, str):
        v = dt.datetime.fromisoformat(v.strip())
    elif isinstance(v, dt.date) and not isinstance(v, dt.datetime):
        v = dt.datetime.combine(v, dt.time())
    if not isinstance(v, dt.datetime):
        raise ValueError(v)
    if v.tzinfo is not None:
        v = v.astimezone(UTC).replace(tzinfo=None)
    return str(v.isoformat(" ", "microseconds"))


def _date(v: Any) -> str:
    if isinstance(v, dt.datetime):
        return v.date().isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    return dt.date.fromisoformat(str(v).strip()[:10]).isoformat()


def _time(v: Any) -> str:
    if isinstance(v, dt.timedelta):
        micros = v // dt.timedelta(microseconds=1)
        v = (dt.datetime(2000, 1, 1) + dt.timedelta(microseconds=micros % 86_400_000_000)).time()
    elif isinstance(v, str):
        v = dt.time.fromisoformat(v.strip())
    if not isinstance(v, dt.time):
        raise ValueError(v)
    if v.tzinfo is not None:
        moment = dt.datetime.combine(dt.date(2000, 1, 3), v).astimezone(UTC)
        v = moment.time()
    return str(v.replace(tzinfo=None).isoformat("microseconds"))


def _interval(v: Any) -> str:
    if isinstance(v, dt.timedelta):
        return str((v.days * 86_400 + v.seconds) * 1_000_000 + v.microseconds)
    return _int(v)


def _uuid(v: Any) -> str:
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)) and len(v) == 16:
        return str(uuid.UUID(bytes=bytes(v)))
    return str(uuid.UUID(str(v).strip()))


# Canonical JSON must not change between releases (a stored digest would stop matching), so it
# keeps the forms it has always had where msgspec's own differ: "1e+16" (not "1e16"), datetimes
# as isoformat ("+00:00", not "Z"), Decimal as a float, bytes as hex, other values as str(),
# text keys only, at most _JSON_DEPTH objects/arrays deep. Integers are exact at any size.
_JSON_DEPTH = 254
_json_encoder = msgspec.json.Encoder(order="sorted")
_json_decoder = msgspec.json.Decoder()
_EXPONENT = re.compile(rb"[0-9]e[0-9]")  # msgspec's form of a float with a positive exponent (or a string)


def _json_float(f: float) -> Any:
    if -1e16 < f < 1e16 or f != f:  # no exponent with a sign to differ by (NaN: null)
        return f
    text = _json_encoder.encode(f)
    return msgspec.Raw(text.replace(b"e", b"e+") if b"e" in text and b"e-" not in text else text)


def _json_plain(v: Any, depth: int) -> Any:
    """``v`` with every value in its canonical JSON form (see above); TypeError for what has none."""
    t = type(v)
    if t is str or t is int or t is bool or v is None:
        return v
    if t is float:
        return _json_float(v)
    if t is dict or t is list or t is tuple or isinstance(v, (dict, list, tuple)):
        if depth >= _JSON_DEPTH:
            raise TypeError("nested too deep for canonical JSON")
        depth += 1
        if isinstance(v, dict):
            out: dict[str, Any] = {}
            for k, x in v.items():
                if type(k) is not str:
                    raise TypeError("a JSON object's key must be text")
                out[k] = _json_plain(x, depth)
            return out
        return [_json_plain(x, depth) for x in v]
    if t is Decimal:
        return _json_float(float(v))
    if isinstance(v, (dt.datetime, dt.date, dt.time)):
        if isinstance(v, dt.time) and v.tzinfo is not None:
            raise TypeError("a time of day with a zone has no canonical JSON")
        return v.isoformat()
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, enum.Enum):
        return _json_plain(v.value, depth)
    if isinstance(v, int):
        return int(v)
    if isinstance(v, (float, Decimal)):
        return _json_float(float(v))
    return str(v)  # a UUID's hyphenated form included


def _json(v: Any) -> str:
    if isinstance(v, (str, bytes, bytearray)):
        try:
            parsed = _json_decoder.decode(v)
        except (msgspec.DecodeError, UnicodeEncodeError):  # not JSON: compared as the text itself
            return "s" + (v if isinstance(v, str) else bytes(v).hex())
        except RecursionError:
            raise TypeError("nested too deep for canonical JSON") from None
        # Parsed text holds only JSON's own types: unless it may nest past _JSON_DEPTH or hold a
        # float written with an exponent (both rare), msgspec's bytes are already the canonical ones.
        opens = v.count("[") + v.count("{") if isinstance(v, str) else v.count(b"[") + v.count(b"{")
        if opens <= _JSON_DEPTH:
            text = _json_encoder.encode(parsed)
            if _EXPONENT.search(text) is None:
                return text.decode()
        v = parsed
    return _json_encoder.encode(_json_plain(v, 0)).decode()


def _bytes(v: Any) -> str:
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, str):
        return v.encode().hex()
    raise ValueError(v)


def _by_value(v: Any) -> str:
    """A value in a column of unknown (or text) type: by its own Python type."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (float, Decimal)):
        return _decimal(v)
    if isinstance(v, dt.datetime):
        return _timestamp(v)
    if isinstance(v, dt.date):
        return v.isoformat()
    if isinstance(v, (dt.time, dt.timedelta)):
        return _time(v) if isinstance(v, dt.time) else _interval(v)
    if isinstance(v, uuid.UUID):
        return str(v)
    if isinstance(v, (bytes, bytearray, memoryview)):
        return bytes(v).hex()
    if isinstance(v, (dict, list, tuple)):
        return _json(v)
    return str(v)


_BY_KIND: dict[str, Callable[[Any], str]] = {
    "int16": _int,
    "int32": _int,
    "int64": _int,
    "bool": _int,
    "decimal": _decimal,
    "float64": lambda v: _float(v, False),
    "float32": lambda v: _float(v, True),
    "timestamp": _timestamp,
    "timestamptz": _timestamp,
    "date": _date,
    "time": _time,
    "timetz": _time,
    "interval": _interval,
    "uuid": _uuid,
    "json": _json,
    "array": _json,
    "bytes": _bytes,
    "string": _by_value,
    "unknown": _by_value,
}


def canonical(kind: str, value: Any) -> str:
    """The canonical text of ``value`` in a column of portable type ``kind``."""
    if value is None:
        return NULL
    fn = _BY_KIND.get(kind, _by_value)
    try:
        return fn(value)
    except (ValueError, TypeError, ArithmeticError, InvalidOperation, OverflowError):
        return f"\x00{type(value).__name__}:{value!r}"


def encoder(kinds: Sequence[str]) -> Callable[[Sequence[Any]], tuple[str, ...]]:
    """A function from values (in ``kinds`` order) to their canonical texts."""
    fns = [_BY_KIND.get(k, _by_value) for k in kinds]
    kinds = tuple(kinds)

    def encode(values: Sequence[Any]) -> tuple[str, ...]:
        out = []
        for kind, fn, v in zip(kinds, fns, values, strict=True):
            if v is None:
                out.append(NULL)
                continue
            try:
                out.append(fn(v))
            except (ValueError, TypeError, ArithmeticError, InvalidOperation, OverflowError):
                out.append(canonical(kind, v))
        return tuple(out)

    return encode


def row_hash(texts: Sequence[str]) -> int:
    """A 128-bit hash of a row's canonical texts (length-prefixed, so no two rows collide by joining)."""
    h = hashlib.blake2b(digest_size=16)
    for t in texts:
        b = t.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(4, "little"))
        h.update(b)
    return int.from_bytes(h.digest(), "little")


MASK = (1 << 128) - 1


def combine(hashes: Sequence[int]) -> int:
    """An order-independent digest of row hashes (sum mod 2**128): the order two databases
    sort keys in (collations) does not change a chunk's digest."""
    return sum(hashes) & MASK
