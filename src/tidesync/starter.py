"""A commented starter config for one source and one sink, rendered from their config models.

``tidesync init`` writes it. Every required key of each connector is there with
a placeholder; a few common optional keys follow as comments with their
defaults; each key carries its description. Placeholders:

- a secret, a ``dsn`` or a key holding credentials is a ``${env:SOURCE_DSN}``-style
  reference, so the file can be committed and the value kept in the environment;
- a choice among names (``provider: stripe | hubspot | ...``) is its first name;
- anything else is :data:`PLACEHOLDER` (``[CHANGE-ME]`` for a list), which
  ``tidesync validate`` accepts or rejects as it would any value.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from tidesync.registry import REGISTRY, Kind
from tidesync.secrets import Secret

PLACEHOLDER = "CHANGE-ME"
# Optional keys worth showing in a starter, when the connector has them (the rest: docs/config-reference.md).
COMMON_OPTIONAL = (
    "tables",
    "create_tables",
    "snapshot",
    "slot",
    "publication",
    "name",
    "cursor",
    "poll_interval",
    "format",
    "keys",
)
_ENV_KEYS = {"dsn", "credentials", "token", "api_key", "secrets", "password"}


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def _is_secret(annotation: Any) -> bool:
    if annotation is Secret:
        return True
    return any(_is_secret(a) for a in typing.get_args(annotation))


def _placeholder(kind: Kind, key: str, info: FieldInfo) -> str:
    if key in _ENV_KEYS or _is_secret(info.annotation):
        return _flow(f"${{env:{kind.upper()}_{key.upper()}}}")
    annotation = info.annotation
    if typing.get_origin(annotation) is typing.Literal:
        return _flow(typing.get_args(annotation)[0])
    origin = typing.get_origin(annotation)
    if origin in (list, set, tuple):
        return _flow([PLACEHOLDER])
    if origin is dict or (inspect.isclass(annotation) and issubclass(annotation, BaseModel)):
        return "{}"
    return _flow(PLACEHOLDER)


def _comment(info: FieldInfo, required: bool) -> str:
    text = " ".join((info.description or "").split())
    if required:
        text = f"required: {text}" if text else "required"
    return f"  # {text}" if text else ""


def _default(info: FieldInfo) -> Any:
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return None if info.default is PydanticUndefined else info.default


def connector_lines(kind: Kind, type_: str, indent: str) -> list[str]:
    """The YAML lines of a ``source:``/``sink:`` mapping for ``type_`` (without the key line itself)."""
    plugin = REGISTRY.get(kind, type_)
    model: type[BaseModel] = plugin.model()
    lines = [f"{indent}type: {_flow(type_)}" + (f"  # {plugin.summary}" if plugin.summary else "")]
    fields = {info.alias or name: info for name, info in model.model_fields.items() if name != "type"}
    for key, info in fields.items():
        if info.is_required():
            lines.append(f"{indent}{key}: {_placeholder(kind, key, info)}{_comment(info, True)}")
    for key in COMMON_OPTIONAL:
        optional = fields.get(key)
        if optional is None or optional.is_required():
            continue
        default = _default(optional)
        if isinstance(default, BaseModel):
            continue
        lines.append(f"{indent}# {key}: {_flow(default)}{_comment(optional, False)}")
    return lines


def render_starter(source: str, sink: str, name: str | None = None) -> str:
    """A starter config for one pipeline from ``source`` to ``sink`` (registered type names).

    Raises :class:`~tidesync.errors.ConfigError` (listing the known types) for an unknown type.
    """
    pipeline = name or f"{source}-to-{sink}".replace("_", "-")
    head = [
        f"# tidesync starter config: {source} -> {sink}, written by `tidesync init`.",
        "# Fill in every CHANGE-ME and set the ${env:...} variables, then:",
        "#   tidesync validate THIS_FILE --check   (connects to both ends and says what is missing)",
        "#   tidesync run THIS_FILE --once         (a batch run), or tidesync run THIS_FILE",
        "# Every key: docs/config-reference.md. Completion in editors: docs/schema.md.",
        "state: sqlite:///.tidesync/state.db  # checkpoints, dead letters; postgresql://... to share it",
        "pipelines:",
        f"  - name: {_flow(pipeline)}",
        "    source:",
        *connector_lines("source", source, "      "),
        "    # transforms:  # applied in order between source and sink",
        "    #   - rename: {email: email_address}",
        "    sink:",
        *connector_lines("sink", sink, "      "),
    ]
    return "\n".join(head) + "\n"
