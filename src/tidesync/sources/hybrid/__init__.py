"""Hybrid pipelines: a primary event source (CDC, webhooks) with a fallback poller as its safety net.

- :mod:`.source` — merging, de-duplication, ``missed_by_primary``, positions.
- :mod:`.versions` — what "the same change" means for each pairing (tokens), and what is remembered.
- :mod:`.config` — ``type: hybrid`` (pydantic; both sub-sources validated by their own models).
"""

from tidesync.sources.hybrid.config import HybridConfig
from tidesync.sources.hybrid.source import HybridSource

__all__ = ["HybridConfig", "HybridSource"]
