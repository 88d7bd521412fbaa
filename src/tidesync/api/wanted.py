"""Whether ``tidesync run`` serves HTTP, decided without importing the server (uvicorn, the app, the dashboard).

A run without an ``api:`` section and without webhook sources never loads
them: about a third of a second of start-up on this project's machine, paid
by every short batch run (``--once``) and every restart.
"""

from __future__ import annotations

import sys
from typing import Any


def webhook_sources(engine: Any) -> list[tuple[str, Any]]:
    """(pipeline name, webhook source) of every runner, a hybrid source's webhook primary included."""
    # A webhook source exists only if its module was imported to build it: no module, none to find.
    module = sys.modules.get("tidesync.sources.webhook.source")
    if module is None:
        return []
    return [
        (r.name, s)
        for r in getattr(engine, "runners", [])
        for s in (r.source, *getattr(r.source, "parts", ()))
        if isinstance(s, module.WebhookSource)
    ]


def api_wanted(config: Any, engine: Any, *, force: bool = False) -> bool:
    return force or getattr(config.model, "api", None) is not None or bool(webhook_sources(engine))
