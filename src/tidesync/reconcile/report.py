"""The human form of a reconciliation report (the CLI prints it; ``--json`` gives ``as_dict``)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from tidesync.event import json_dumps
from tidesync.reconcile.run import PipelineReport

SHOWN = 20  # differences listed per table; the counts cover all


def print_report(console: Console, report: PipelineReport) -> None:
    table = Table(title=f"reconcile {report.pipeline}" + (" (repair)" if report.repair else ""))
    for col in ("entity", "missing", "extra", "differ", "settled", "repaired" if report.repair else "mode"):
        table.add_column(col)
    for t in report.tables:
        r = t.result
        last = f"{r.repaired} ({r.dead_lettered} DLQ)" if report.repair else t.mode
        table.add_row(t.entity, str(r.missing), str(r.extra), str(r.different), str(r.settled), last)
    console.print(table)
    for t in report.tables:
        console.print(
            f"{t.entity}: {t.mode} hashing, {t.chunks_differing}/{t.chunks} chunks differ, read"
            f" {t.source_counters.rows_read:,} source / {t.dest_counters.rows_read:,} destination rows"
            f" in {t.seconds:.1f}s",
            highlight=False,
        )
        for w in t.warnings:
            console.print(f"[yellow]{t.entity}: {w}[/]", highlight=False)
        if t.why_python:
            console.print(f"{t.entity}: {t.why_python}", highlight=False)
        for d in t.differences[:SHOWN]:
            fields = f" ({', '.join(d.fields)})" if d.fields else ""
            console.print(f"  {d.kind:9} {json_dumps(list(d.key)).decode()}{fields}", highlight=False, markup=False)
        if len(t.differences) > SHOWN or t.result.drift > len(t.differences):
            console.print(f"  ... {t.result.drift - min(SHOWN, len(t.differences))} more", highlight=False)
    verdict = "no drift" if not report.drift else f"drift: {report.drift} row(s)"
    if report.repair and report.drift:
        verdict += f", {report.drift - report.unrepaired} repaired, {report.unrepaired} dead-lettered"
    console.print(verdict, highlight=False)
