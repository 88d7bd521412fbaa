"""Config: every error names the key and the file line; secrets never show."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tidesync.cli import app
from tidesync.config import load_config
from tidesync.errors import ConfigError
from tidesync.secrets import REDACTOR, RedactingFilter, Redactor, Secret

GOOD = """\
state: sqlite:///{tmp}/state.db
pipelines:
  - name: copy
    source:
      type: sqlite
      path: {tmp}/src.db
      tables: [customers]
    transforms:
      - rename: {{email: email_address}}
    sink:
      type: sqlite
      path: {tmp}/dst.db
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "tidesync.yaml"
    p.write_text(text.format(tmp=tmp_path))
    return p


def test_a_good_config_loads_with_each_connector_model(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    (spec,) = cfg.pipelines
    assert spec.source.type == "sqlite" and spec.sink.type == "sqlite"
    assert len(spec.transforms) == 1
    assert cfg.state_url.endswith("state.db")


@pytest.mark.parametrize(
    ("edit", "line", "path_text", "message"),
    [
        (
            ("      tables: [customers]", "      tables: [customers]\n      tabels: [x]"),
            8,
            "pipelines[0].source.tabels",
            "unknown key",
        ),
        (("      path: {tmp}/dst.db", "      pth: {tmp}/dst.db"), 12, "pipelines[0].sink.pth", "unknown key"),
        (
            ("      type: sqlite\n      path: {tmp}/src", "      type: nosuch\n      path: {tmp}/src"),
            5,
            "pipelines[0].source.type",
            "known source types: ",
        ),
        (("  - name: copy", "  - name: 'bad name!'"), 3, "pipelines[0].name", "should match pattern"),
        (
            ("      - rename: {{email: email_address}}", "      - renam: {{email: email_address}}"),
            9,
            "pipelines[0].transforms[0]",
            "rename",
        ),
    ],
)
def test_errors_name_the_key_and_the_line(tmp_path: Path, edit, line, path_text, message) -> None:  # type: ignore[no-untyped-def]
    text = GOOD.replace(*edit)
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    msg = str(info.value)
    assert f"{path}:{line}: {path_text}" in msg, msg
    assert message in msg


def test_missing_required_key_points_at_its_parent(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("      tables: [customers]\n", ""))
    with pytest.raises(ConfigError, match=r"tidesync.yaml:4: pipelines\[0\].source.tables: required key is missing"):
        load_config(path)


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("    sink:", "    sink: [unclosed"))
    with pytest.raises(ConfigError, match=r"tidesync.yaml:\d+: not valid YAML"):
        load_config(path)


def test_secret_references_resolve_and_are_redacted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TS_TEST_DIR", str(tmp_path))
    (tmp_path / "pw").write_text("s3cr3t-from-file\n")
    text = GOOD.replace("path: {tmp}/dst.db", "path: ${{env:TS_TEST_DIR}}/dst.db") + "# ${{file:pw}}\n"
    text = text.replace("state: sqlite:///{tmp}/state.db", "state: postgresql://u:${{file:pw}}@127.0.0.1:1/x")
    cfg = load_config(write(tmp_path, text))
    assert cfg.state_url == "postgresql://u:s3cr3t-from-file@127.0.0.1:1/x"
    assert cfg.pipelines[0].sink.path == f"{tmp_path}/dst.db"  # type: ignore[attr-defined]
    assert "s3cr3t-from-file" not in str(cfg.redacted())
    assert REDACTOR.redact("connecting with s3cr3t-from-file") == "connecting with ***"
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "dsn=%s", ("postgresql://u:s3cr3t-from-file@h/db",), None
    )
    RedactingFilter().filter(record)
    assert "s3cr3t" not in record.getMessage()


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        # a short password (never remembered by value) with a raw "@": masked to the authority's last "@"
        ("mysql://u:p@ss@h", "mysql://u:***@h"),
        ("mysql://u:p@ss@h:3306/d failed", "mysql://u:***@h:3306/d failed"),
        ("postgresql://u:@@@@h/db", "postgresql://u:***@h/db"),
        ("mysql://u:@dmin@h/d", "mysql://u:***@h/d"),
        ("mysql://u:@h/d", "mysql://u:@h/d"),  # no password: nothing to mask
        ("dsn=postgresql+psycopg://u:a@b@c@h?sslmode=disable", "dsn=postgresql+psycopg://u:***@h?sslmode=disable"),
        # the end of the authority, whitespace and quotes still end it: a later "@" is not the password's
        ("mysql://u:pw@h?notify=ops@example.com", "mysql://u:***@h?notify=ops@example.com"),
        ("mysql://u:pw@h/d by ops@example.com", "mysql://u:***@h/d by ops@example.com"),
        ("['mysql://u:pw@h','ops@example.com']", "['mysql://u:***@h','ops@example.com']"),
    ],
)
def test_a_url_password_is_masked_whole_even_with_a_raw_at_sign(text: str, masked: str) -> None:
    assert Redactor().redact(text) == masked  # by position: this redactor was told no value


def test_missing_env_reference_names_key_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD.replace("path: {tmp}/dst.db", "path: ${{env:TS_DEFINITELY_UNSET}}/dst.db"))
    with pytest.raises(
        ConfigError,
        match=r"tidesync.yaml:12: pipelines\[0\].sink.path: environment variable TS_DEFINITELY_UNSET is not set",
    ):
        load_config(path)


def test_secret_rereads_its_file_on_every_get(tmp_path: Path) -> None:
    f = tmp_path / "token"
    f.write_text("first-token")
    s = Secret(f"${{file:{f}}}")
    assert s.get() == "first-token"
    f.write_text("second-token third-token")
    assert s.get() == "second-token third-token" and s.values() == ["second-token", "third-token"]
    assert "second" not in repr(s)


def test_cli_validate_and_run_exit_2_on_bad_config(tmp_path: Path) -> None:
    runner = CliRunner()
    good = write(tmp_path, GOOD)
    ok = runner.invoke(app, ["validate", str(good)])
    assert ok.exit_code == 0, ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        GOOD.format(tmp=tmp_path).replace("      tables: [customers]", "      tables: [customers]\n      tabels: 1")
    )
    for cmd in ("validate", "run"):
        result = runner.invoke(app, [cmd, str(bad)])
        assert result.exit_code == 2, result.output
        assert "bad.yaml:8" in result.output and "tabels" in result.output
        assert "Traceback" not in result.output
