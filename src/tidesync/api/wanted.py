"""Whether ``tidesync run`` serves HTTP, decided without importing the server (uvicorn, the app, the dashboard).

A run without an ``api:`` section and without webhook sources never loads
them: about a third of a second of start-up on this project's machine, paid
by every short batch run (``--once``) and every restart.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any


def _candidates(source: Any) -> Iterator[Any]:
    """The source, a hybrid's parts, and what a part wraps (a sync's HubSpot webhook primary)."""
    for s in (source, *getattr(source, "parts", ())):
        yield s
        inner = getattr(s, "inner", None)
        if inner is not None:
            yield inner


def webhook_sources(engine: Any) -> list[tuple[str, Any]]:
    """(pipeline name, webhook source) of every runner and every sync side, a hybrid source's webhook primary
    included. A sync side's source runs as the pipeline ``<sync>.<side>`` (its route: ``/webhooks/<sync>.<side>``
    unless the webhook source names one)."""
    # A webhook source exists only if its module was imported to build it: no module, none to find.
    module = sys.modules.get("tidesync.sources.webhook.source")
    if module is None:
        return []
    owners = [(r.name, r.source) for r in getattr(engine, "runners", [])]
    for sync in getattr(engine, "syncs", []):
        owners += [(f"{sync.name}.{side}", source) for side, source in getattr(sync, "sources", {}).items()]
    return [(name, s) for name, source in owners for s in _candidates(source) if isinstance(s, module.WebhookSource)]


def api_wanted(config: Any, engine: Any, *, force: bool = False) -> bool:
    return force or getattr(config.model, "api", None) is not None or bool(webhook_sources(engine))
