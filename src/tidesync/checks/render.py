"""What ``tidesync validate CONFIG --check`` prints, and its exit code (0: no failure, warnings allowed; 1: a failure).

Text: one line per check, ``STATUS  TARGET: NAME: DETAIL``, and for a check that is
not ok ``; fix: FIX`` on the same line. ``--json``: one JSON object
``{"ok": bool, "checks": [{"target", "name", "status", "detail", "fix"}, ...]}``.
Everything goes through the CLI's redacting console, so no secret is printed.
"""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from tidesync.checks import Report, run_checks

_STYLE = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def line(check: Any) -> str:
    """A check as one line of plain text (no markup)."""
    text = f"{check.status:<4}  {check.target}: {check.name}: {check.detail}"
    return text + (f"; fix: {check.fix}" if check.fix and check.status != "ok" else "")


def render(report: Report, console: Any) -> None:
    for c in report.checks:
        plain = line(c)
        status, rest = plain[:4], plain[4:]
        console.print(f"[{_STYLE[c.status]}]{status}[/]{escape(rest)}", highlight=False, soft_wrap=True)
    fails = sum(c.status == "fail" for c in report.checks)
    warns = sum(c.status == "warn" for c in report.checks)
    console.print(f"{len(report.checks)} checks: {fails} failed, {warns} warnings", highlight=False)


async def check_command(loaded: Any, console: Any, *, as_json: bool = False) -> int:
    """Run every check of ``loaded``, print them, return the exit code."""
    from tidesync.cli.common import write_json

    report = await run_checks(loaded)
    if as_json:
        write_json({"ok": not report.failed, "checks": [c.as_dict() for c in report.checks]})
    else:
        render(report, console)
    return 1 if report.failed else 0
