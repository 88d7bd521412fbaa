"""Shell completion: ``tidesync --install-completion`` / ``--show-completion`` exist, and completing works."""

from __future__ import annotations

import os
import subprocess
import sys

from typer.testing import CliRunner

from tidesync.cli import app


def test_help_lists_the_completion_options() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "--install-completion" in result.output and "--show-completion" in result.output


def complete(words: str) -> list[str]:
    env = {**os.environ, "_TIDESYNC_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": "2"}
    done = subprocess.run([sys.executable, "-m", "tidesync.cli"], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_bash_completion_completes_commands_and_options() -> None:
    # ``python -m tidesync.cli`` answers to the name ``tidesync``, as the installed script does.
    assert complete("tidesync dlq re") == ["replay"]
    assert "--no-progress" in complete("tidesync reconcile --no")
