"""Secret references in config, and keeping their values out of every output.

A config string may contain ``${env:NAME}`` or ``${file:path}`` (relative paths
are relative to the config file). References are resolved when the config is
loaded, and every resolved value is remembered by :data:`REDACTOR`, which
removes it from anything tidesync prints, logs or returns over the API.

A field typed :class:`Secret` keeps its reference and resolves it again on
every :meth:`Secret.get`, so a rotated file or variable takes effect without a
restart (API tokens, webhook signing secrets). Every element of a secret
list (several webhook secrets while rotating) is remembered on its own.

Connection strings are plain fields, so their passwords are found by form:
:func:`register_connection_secrets` remembers the password of every URL
(``scheme://user:pw@host``, ``?password=pw``) and libpq keyword string
(``password=pw``, ``password='p w'``) in the loaded config, and the redactor
also masks those forms by position, whatever the password's length.

Commands that read only the state store load the config with references left
lazy: a reference that cannot be read then becomes a :class:`PendingRef` (its
text is the reference itself, never a value) and the command fails only if it
uses it, with the same message naming the variable or file.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from tidesync.errors import ConfigError

_REF = re.compile(r"\$\{(env|file):([^}]+)\}")
# The password of a URL runs to the authority's last "@", as a URL parser splits it: a raw "@" inside it
# (mysql://u:p@ss@h, u:@dmin@h) is part of it. Past its first "@" it stops at what ends an authority (/ ? #),
# at whitespace and at quotes, so a later "@" in a query or in the next quoted string is not taken for its
# end. An empty password (u:@h) is left as it is.
_AT_PART = r"@[^@/?#\s'\"]*"
_DSN_PASSWORD = re.compile(
    r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):"
    rf"(?P<pw>[^@/\s]+(?:{_AT_PART})*|(?:{_AT_PART})+)@"
)
# libpq keyword strings (password=pw, password='p w') and URL query parameters (?password=pw&...).
# An unterminated quote (a message cut short) masks to the end rather than leak the rest.
_KEYWORD_PASSWORD = re.compile(
    r"""(?P<key>(?<![\w.-])(?:ssl)?password\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*(?:'|$)|[^\s&;'"]+)""",
    re.IGNORECASE,
)
_MASK = "***"
_MIN_WORD = 8


class Redactor:
    """Replaces known secret values (and passwords inside URLs) with ``***``."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._lock = threading.Lock()
        self._pattern: re.Pattern[str] | None = None

    def add(self, value: str) -> None:
        # Shorter values would mask ordinary words everywhere ("one" in every message).
        # Passwords inside URLs are masked by position whatever their length.
        if len(value) < 6:
            return
        with self._lock:
            if value not in self._values:
                self._values.add(value)
                self._pattern = re.compile("|".join(re.escape(v) for v in sorted(self._values, key=len, reverse=True)))

    def add_all(self, values: Iterable[str]) -> None:
        for value in values:
            self.add(value)

    def add_secret(self, value: str) -> None:
        """Remember a secret value and, when it holds several (``old new`` while rotating), each of them.

        A word of a multi-secret string must be 8 characters at least to be remembered
        on its own: a malformed value (``not base64 !``) must not mask ``base64`` everywhere.
        """
        self.add(value)
        words = value.split()
        if len(words) > 1:
            self.add_all(w for w in words if len(w) >= _MIN_WORD)

    def redact(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(_MASK, text)
        text = _DSN_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{_MASK}@", text)
        return _KEYWORD_PASSWORD.sub(lambda m: f"{m['key']}{_MASK}", text)

    def redact_obj(self, value: Any) -> Any:
        """Redact every string inside nested dicts/lists (for config dumps and API responses)."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, Secret):
            return _MASK
        if isinstance(value, dict):
            return {k: self.redact_obj(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.redact_obj(v) for v in value]
        return value


REDACTOR = Redactor()


def connection_passwords(text: str) -> list[str]:
    """Every password ``text`` carries in a connection string, as written and decoded.

    Forms: URL userinfo (``postgresql://u:pw@h/db``, ``mysql://``, SQLAlchemy's
    ``postgresql+psycopg://``, any scheme), a URL query parameter
    (``?password=pw``) and libpq keywords (``password=pw``, ``password='p w'``,
    ``sslpassword=``). Each comes in the spellings a driver or a message may
    print it in (percent- or plus-encoded, unquoted).
    """
    found: list[str] = []
    if "://" in text:
        for m in _DSN_PASSWORD.finditer(text):
            found.append(m["pw"])
        try:
            parts = urlsplit(text.strip())
            if parts.password:  # splits at the last "@": a raw "@" or "/" inside the password
                found.append(parts.password)
            found += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k.lower().endswith("password")]
        except ValueError:
            pass
    for m in _KEYWORD_PASSWORD.finditer(text):
        raw = m["pw"]
        if raw.startswith("'"):
            inner = raw[1:-1] if len(raw) > 1 and raw.endswith("'") else raw[1:]
            found += [inner, re.sub(r"\\(.)", r"\1", inner)]
        else:
            found.append(raw)
    spellings: list[str] = []
    for pw in found:
        for form in (pw, unquote(pw), unquote_plus(pw)):
            spellings += [form, quote(form, safe=""), quote_plus(form, safe="")]
    return [s for s in dict.fromkeys(spellings) if s]


def register_connection_secrets(value: Any) -> None:
    """Remember the password of every connection string inside ``value`` (nested dicts/lists of config)."""
    if isinstance(value, str):
        if "password" in value.lower() or "://" in value:
            REDACTOR.add_all(connection_passwords(value))
    elif isinstance(value, dict):
        for v in value.values():
            register_connection_secrets(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            register_connection_secrets(v)


Loc = tuple[str | int, ...]


def secret_locations(value: Any, loc: Loc = ()) -> Iterator[Loc]:
    """The key paths of every :class:`Secret` inside a validated config model (by field alias, as in the YAML)."""
    from pydantic import BaseModel

    if isinstance(value, Secret):
        yield loc
    elif isinstance(value, BaseModel):
        for name, info in type(value).model_fields.items():
            yield from secret_locations(getattr(value, name, None), (*loc, info.alias or name))
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from secret_locations(v, (*loc, k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            yield from secret_locations(v, (*loc, i))


def mask_locations(raw: Any, locations: Sequence[Loc]) -> Any:
    """A copy of ``raw`` config with the value at each location masked: a literal (or each literal of
    a list) becomes ``***``, a ``${env:...}``/``${file:...}`` reference is kept (it names, never holds, a value)."""

    def mask(value: Any) -> Any:
        if isinstance(value, str):
            return value if has_ref(value) else _MASK
        if isinstance(value, list):
            return [mask(v) for v in value]
        return _MASK

    def at(value: Any, path: Loc) -> Any:
        if not path:
            return mask(value)
        head, rest = path[0], path[1:]
        if isinstance(value, dict) and head in value:
            return {k: at(v, rest) if k == head else v for k, v in value.items()}
        if isinstance(value, list) and isinstance(head, int) and 0 <= head < len(value):
            return [at(v, rest) if i == head else v for i, v in enumerate(value)]
        return value

    for path in locations:
        raw = at(raw, path)
    return raw


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = REDACTOR.redact(msg)
        if clean != msg:
            record.msg = clean
            record.args = None
        # A traceback repeats the exception's message (a driver's, with its connection string):
        # format it here, masked; formatters print a record's exc_text as it is.
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = REDACTOR.redact(record.exc_text or _TRACEBACKS.formatException(record.exc_info))
        elif record.exc_text:
            record.exc_text = REDACTOR.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = REDACTOR.redact(record.stack_info)
        return True


_TRACEBACKS = logging.Formatter()


def install_log_redaction(logger: logging.Logger | None = None) -> None:
    target = logger or logging.getLogger()
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def resolve_ref(kind: str, name: str, base_dir: Path | None = None) -> str:
    """Read one reference. Raises ConfigError (without the value) when it cannot be read."""
    if kind == "env":
        value = os.environ.get(name)
        if value is None:
            raise ConfigError(f"environment variable {name} is not set (referenced as ${{env:{name}}})")
    else:
        path = Path(name).expanduser()
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        try:
            value = path.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"cannot read secret file {path}: {exc.strerror}") from exc
    REDACTOR.add(value)
    return value


def resolve_string(text: str, base_dir: Path | None = None) -> str:
    """Substitute every ``${env:...}``/``${file:...}`` in ``text``."""
    if "${" not in text:
        return text
    return _REF.sub(lambda m: resolve_ref(m[1], m[2], base_dir), text)


def has_ref(text: str) -> bool:
    return bool(_REF.search(text))


class ResolvedStr(str):
    """A config string whose references were resolved; remembers the original text.

    Plain ``str`` fields see the resolved value; :class:`Secret` fields keep the
    reference so they can re-read it later.
    """

    template: str
    base_dir: Path | None

    def __new__(cls, value: str, template: str, base_dir: Path | None) -> ResolvedStr:
        obj = super().__new__(cls, value)
        obj.template = template
        obj.base_dir = base_dir
        return obj


class PendingRef(ResolvedStr):
    """A config string whose references could not be read when the config was loaded lazily.

    Its text is the reference (``${env:NAME}``), so it never carries a value;
    ``problem`` says what is missing, in the words an eager load would have used.
    A :class:`Secret` field built from it resolves the reference on first
    :meth:`Secret.get` and fails then, naming the variable.
    """

    problem: str

    def __new__(cls, template: str, base_dir: Path | None, problem: str) -> PendingRef:
        obj = str.__new__(cls, template)
        obj.template = template
        obj.base_dir = base_dir
        obj.problem = problem
        return obj


class Secret:
    """A secret value in config. ``get()`` re-reads its reference each time (rotation without restart).

    Its ``repr``/``str`` never show the value. Several values may be given
    separated by whitespace or as a list in YAML (several active webhook
    secrets during a rotation): use :meth:`values`.
    """

    __slots__ = ("_base_dir", "_literal", "_template")

    def __init__(self, template: str, base_dir: Path | None = None) -> None:
        self._template = template
        self._base_dir = base_dir
        self._literal = not has_ref(template)
        if self._literal:
            REDACTOR.add_secret(template)

    def get(self) -> str:
        return resolve_string(self._template, self._base_dir)

    def values(self) -> list[str]:
        value = self.get()
        REDACTOR.add_secret(value)  # a rotated file may bring new ones
        return value.split()

    @property
    def reference(self) -> str:
        return self._template if not self._literal else _MASK

    def __repr__(self) -> str:
        return f"Secret({self.reference!r})"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._template == self._template

    def __hash__(self) -> int:
        return hash(self._template)

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        def validate(value: Any) -> Secret:
            if isinstance(value, Secret):
                return value
            for item in value if isinstance(value, list) else [value]:
                # Each secret of a list or of a resolved "old new" on its own; a reference is no value.
                known = isinstance(item, ResolvedStr) and not isinstance(item, PendingRef)
                if known or (isinstance(item, str) and not has_ref(item)):
                    REDACTOR.add_secret(item)
            if isinstance(value, ResolvedStr):
                return cls(value.template, value.base_dir)
            if isinstance(value, list):
                value = " ".join(v.template if isinstance(v, ResolvedStr) else str(v) for v in value)
            if not isinstance(value, str):
                raise ValueError("a secret must be a string or a ${env:NAME} / ${file:path} reference")
            secret = cls(value)
            secret.get()  # fail at load time, with the key named, if the reference cannot be read
            return secret

        return core_schema.no_info_plain_validator_function(
            validate, serialization=core_schema.plain_serializer_function_ser_schema(lambda s: s.reference)
        )
