"""Secret references in config, and keeping their values out of every output.

A config string may contain ``${env:NAME}`` or ``${file:path}`` (relative paths
are relative to the config file). References are resolved when the config is
loaded, and every resolved value is remembered by :data:`REDACTOR`, which
removes it from anything tidesync prints, logs or returns over the API.

A field typed :class:`Secret` keeps its reference and resolves it again on
every :meth:`Secret.get`, so a rotated file or variable takes effect without a
restart (API tokens, webhook signing secrets).

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
from pathlib import Path
from typing import Any

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

from tidesync.errors import ConfigError

_REF = re.compile(r"\$\{(env|file):([^}]+)\}")
_DSN_PASSWORD = re.compile(r"(?P<scheme>[a-zA-Z][\w+.-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]+)@")
_MASK = "***"


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

    def redact(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(_MASK, text)
        return _DSN_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:{_MASK}@", text)

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


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = REDACTOR.redact(msg)
        if clean != msg:
            record.msg = clean
            record.args = None
        return True


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
            REDACTOR.add(template)

    def get(self) -> str:
        return resolve_string(self._template, self._base_dir)

    def values(self) -> list[str]:
        return self.get().split()

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
