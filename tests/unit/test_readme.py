"""The README is a test: every config block validates, every usage line matches the CLI.

- Every ```yaml block of README.md and docs/*.md is a tidesync config, or a
  fragment of one (a section without ``pipelines``/``syncs``, merged into a
  one-pipeline base config). Blocks of other tools' YAML say so in the fence's
  info string (```yaml prometheus) and are skipped here by name, not by content: promtool checks
  them (tests/integration/test_deploy_prometheus.py).
- Every line of a ```sh block that starts with ``tidesync `` is a usage line:
  ``[--global-option VALUE] CMD SUB|SUB2 tidesync.yaml ARG [--option VALUE] [--flag]``. Its command
  path must exist and answer ``--help``; its positional words must be the
  command's arguments, in the command's order; its options must exist.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from tidesync.cli import app
from tidesync.config import load_config

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
DOCS = [d for d in DOCS if d.name != "HELPERS.md"]  # instructions for engineers, not user docs
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.S | re.M)
BASE = {
    "state": "sqlite:///.tidesync/state.db",
    "pipelines": [
        {
            "name": "crm-to-billing",
            "source": {"type": "sqlite", "path": "crm.db", "tables": ["customers"]},
            "sink": {"type": "sqlite", "path": "billing.db"},
        }
    ],
}


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    info: str
    text: str

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def _blocks() -> list[Block]:
    found = []
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(Block(doc.relative_to(ROOT).as_posix(), line, m.group(1).strip(), m.group(2)))
    return found


BLOCKS = _blocks()
CONFIGS = [b for b in BLOCKS if b.info == "yaml"]
USAGE = [
    (b.id, re.split(r"\s+#", line, maxsplit=1)[0].strip())
    for b in BLOCKS
    if b.info == "sh"
    for line in b.text.splitlines()
    if line.startswith("tidesync ")
]


def test_the_docs_have_configs_and_usage_lines() -> None:
    # Guards the extraction itself: a fence regex that matched nothing would pass every test below.
    assert len(CONFIGS) >= 4, [b.id for b in BLOCKS]
    assert len(USAGE) >= 10


@pytest.mark.parametrize("block", CONFIGS, ids=lambda b: b.id)
def test_config_block_validates(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in set(re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", block.text)):
        monkeypatch.setenv(name, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" if "HOOK" in name else "secret-value")
    for ref in set(re.findall(r"\$\{file:([^}]+)\}", block.text)):
        path = tmp_path / ref.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("secret-value\n")
    for module, func in set(re.findall(r"function: ([A-Za-z_][\w.]*):(\w+)", block.text)):
        # A block may name the reader's own Python function; validation imports it, so it gets a stand-in.
        path = tmp_path / "pkgs" / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"def {func}(event):\n    return event\n")
        monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    text = re.sub(r"\$\{file:/", "${file:", block.text)
    data = yaml.safe_load(text)
    assert isinstance(data, dict), f"{block.id}: not a mapping"
    if "pipelines" not in data and "syncs" not in data:
        data = {**BASE, **data}
    config = tmp_path / "tidesync.yaml"
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    try:
        load_config(config)
    except Exception as exc:
        pytest.fail(f"{block.id}: the block does not validate:\n{exc}")


def _command(path: list[str]) -> Any:
    # typer carries its own copy of click, so commands are told apart by what they have, not their class.
    cmd = typer.main.get_command(app)
    for name in path:
        assert hasattr(cmd, "commands"), f"{' '.join(path)}: {cmd.name} has no subcommands"
        sub = cmd.commands.get(name)
        assert sub is not None, f"tidesync has no command {' '.join(path)}"
        cmd = sub
    return cmd


def _expand(words: list[str]) -> list[tuple[list[str], list[str]]]:
    """(command path, rest of the words) for each alternative of ``a|b`` command names."""
    cmd = typer.main.get_command(app)
    paths: list[list[str]] = [[]]
    i = 0
    while hasattr(cmd, "commands") and i < len(words):
        names = words[i].split("|")
        if not all(n in cmd.commands for n in names):
            break
        paths = [[*p, n] for p in paths for n in names]
        cmd = cmd.commands[names[0]]
        i += 1
    return [(p, words[i:]) for p in paths]


def _check_words(path: list[str], words: list[str]) -> None:
    cmd = _command(path)
    where = f"tidesync {' '.join(path)}"
    options = {opt: p for p in cmd.params if p.param_type_name == "option" for opt in (*p.opts, *p.secondary_opts)}
    arguments = [p for p in cmd.params if p.param_type_name == "argument"]
    positional: list[str] = []
    i = 0
    while i < len(words):
        word = words[i].strip("[]")
        i += 1
        if not word or word == "|":
            continue
        if word.startswith("-"):
            opt = options.get(word.split("=", 1)[0])
            assert opt is not None, f"{where} has no option {word} (it has {', '.join(sorted(options))})"
            if not opt.is_flag and "=" not in word:
                i += 1  # the option's value
            continue
        positional.append(word)
    assert len(positional) <= len(arguments), f"{where} takes {len(arguments)} argument(s), the line gives {positional}"
    for word, arg in zip(positional, arguments, strict=False):
        want = "config" if word.endswith((".yaml", ".yml")) else word.lower().replace("-", "_")
        assert arg.name == want or (arg.metavar or "").lower() == want, (
            f"{where}: the line has {word!r} where the command takes {arg.name!r} "
            f"(arguments in order: {[a.name for a in arguments]})"
        )
    missing = [a.name for a in arguments[len(positional) :] if a.required]
    assert not missing, f"{where}: the line lacks the required argument(s) {missing}"


def _skip_global_options(words: list[str]) -> list[str] | None:
    """The words after the leading global options (each checked to exist), None when nothing follows them."""
    root = _command([])
    options = {opt: p for p in root.params if p.param_type_name == "option" for opt in (*p.opts, *p.secondary_opts)}
    i = 0
    while i < len(words) and words[i].startswith("-"):
        opt = options.get(words[i].split("=", 1)[0])
        assert opt is not None, f"tidesync has no global option {words[i]} (it has {', '.join(sorted(options))})"
        i += 1 if opt.is_flag or "=" in words[i] else 2
    return words[i:] if i < len(words) or not words else None


@pytest.mark.parametrize(("where", "line"), USAGE, ids=[f"{w}:{line.split()[1]}" for w, line in USAGE])
def test_usage_line_matches_the_cli(where: str, line: str) -> None:
    words = _skip_global_options(shlex.split(line)[1:])
    if words is None:
        return  # only global options: tidesync --version
    expanded = _expand(words)
    assert expanded[0][0], f"{where}: {line!r} names no tidesync command"
    runner = CliRunner()
    for path, rest in expanded:
        result = runner.invoke(app, [*path, "--help"])
        assert result.exit_code == 0, f"{where}: tidesync {' '.join(path)} --help failed:\n{result.output}"
        _check_words(path, rest)


def test_config_reference_is_current() -> None:
    from tidesync.reference import render

    page = ROOT / "docs" / "config-reference.md"
    assert page.read_text() == render(), (
        "docs/config-reference.md is stale: run `python -m tidesync.reference > docs/config-reference.md`"
    )


def test_every_config_key_has_a_meaning() -> None:
    from tidesync.reference import render

    bare = [line for line in render().splitlines() if line.startswith("| `") and line.endswith("|  |")]
    assert not bare, "keys without a description (Field(description=...)):\n" + "\n".join(bare)
