"""Per-key order inside one write: an event after a failed event of its key is not sent, and fails too.

Used by the sinks that send events of one key one after another (webhook, Stripe, HubSpot), so
that a later change never lands before an earlier one that failed.
"""

from __future__ import annotations

from tidesync.errors import DeliveryError, PermanentError, SystemicError, TransientError

__all__ = ["BlockedError", "behind"]


class BlockedError(PermanentError):
    """Not sent: an earlier event of the same key failed permanently in this write."""

    error_class = "blocked"


def behind(earlier: DeliveryError, *, refusing: str | None = None) -> DeliveryError:
    """The failure of an event not sent because an earlier event of its key failed with ``earlier``.

    Transient behind a transient failure (both are retried, in order); :class:`BlockedError`
    behind a permanent one (dead-lettered after it). With ``refusing`` (``"the endpoint refuses"``),
    systemic behind a :class:`SystemicError` (held with it); without, that counts as permanent.
    """
    if refusing is not None and isinstance(earlier, SystemicError):
        return SystemicError(f"not sent while {refusing} ({earlier})")
    if earlier.transient:
        return TransientError(f"waits behind an earlier failed event of the same key ({earlier})")
    return BlockedError(f"waits behind an earlier dead-lettered event of the same key ({earlier})")
