"""The webhook sink's memory across restarts: each failing event's attempts, and the endpoint's health.

Both live in the state store's kv (namespaces below), written once per
``write`` call in one transaction, so a restart continues a backoff where it
was instead of starting over, and a disabled endpoint stays disabled.

- ``webhook_sink_retry``, key ``<pipeline>:<sink>:<idempotency id>``:
  ``{"attempts", "first", "next"}`` — failed attempts so far, the first
  failure's time, and the earliest time of the next attempt. Removed when the
  event is written or fails permanently.
- ``webhook_sink_endpoint``, key ``<pipeline>:<sink>``: ``{"url",
  "failing_since", "disabled", "disabled_at", "alert"}``. A record for another
  URL is ignored: changing the URL in the config re-enables delivery.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import Any

from tidesync.retry import RetryPolicy
from tidesync.sources.http.ratelimit import parse_retry_after as read_retry_after
from tidesync.state.store import KeyValues, StateChanges

RETRY_NS = "webhook_sink_retry"
ENDPOINT_NS = "webhook_sink_endpoint"


@dataclass(slots=True)
class Attempts:
    attempts: int
    first: float
    next: float


@dataclass(slots=True)
class Endpoint:
    url: str
    failing_since: float | None = None
    disabled: str | None = None  # why, when disabled
    disabled_at: float | None = None
    alert: bool = False  # disabled for failing too long: someone should look

    @classmethod
    def from_value(cls, url: str, value: Any) -> Endpoint:
        if not isinstance(value, dict) or value.get("url") != url:
            return cls(url)
        return cls(
            url, value.get("failing_since"), value.get("disabled"), value.get("disabled_at"), bool(value.get("alert"))
        )


def parse_retry_after(value: str | None, now: float) -> float:
    """Seconds to wait from a destination's ``Retry-After`` header (seconds or an HTTP date), at most a day.

    0 when absent or unreadable: read by the one strict parser every HTTP client of tidesync shares
    (:func:`tidesync.sources.http.ratelimit.parse_retry_after`), so a value like ``²`` is never an error.
    """
    seconds = read_retry_after(value, now)
    return 0.0 if seconds is None else seconds


class RetryBook:
    """Attempts per idempotency id, with the changes not yet stored."""

    def __init__(self, policy: RetryPolicy, prefix: str, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.prefix = prefix
        self.rng = rng or random.Random()
        self.entries: dict[str, Attempts] = {}
        self._put: dict[str, Attempts] = {}
        self._delete: set[str] = set()

    async def load(self, state: KeyValues) -> None:
        stored = await state.kv_scan(RETRY_NS, self.prefix)
        self.entries = {
            k[len(self.prefix) :]: Attempts(int(v["attempts"]), float(v["first"]), float(v["next"]))
            for k, v in stored.items()
            if isinstance(v, dict)
        }

    def due(self, msg_id: str) -> float:
        entry = self.entries.get(msg_id)
        return entry.next if entry is not None else 0.0

    def failed(self, msg_id: str, now: float, retry_after: float = 0.0) -> Attempts:
        entry = self.entries.get(msg_id)
        attempts = entry.attempts + 1 if entry else 1
        delay = max(self.policy.delay(attempts, self.rng.random()), retry_after)
        entry = Attempts(attempts, entry.first if entry else now, now + delay)
        self.entries[msg_id] = entry
        self._put[msg_id] = entry
        self._delete.discard(msg_id)
        return entry

    def done(self, msg_id: str) -> None:
        if self.entries.pop(msg_id, None) is not None:
            self._put.pop(msg_id, None)
            self._delete.add(msg_id)

    def take_changes(self, into: StateChanges) -> None:
        for msg_id, entry in self._put.items():
            into.kv_put[(RETRY_NS, self.prefix + msg_id)] = asdict(entry)
        into.kv_delete.extend((RETRY_NS, self.prefix + m) for m in self._delete)
        self._put, self._delete = {}, set()

    def restore_changes(self, changes: StateChanges) -> None:
        """Put back changes whose commit failed, to store with the next one."""
        for (ns, key), value in changes.kv_put.items():
            if ns == RETRY_NS:
                self._put.setdefault(key[len(self.prefix) :], Attempts(**value))
        for ns, key in changes.kv_delete:
            if ns == RETRY_NS:
                self._delete.add(key[len(self.prefix) :])


async def enable_endpoint(state: KeyValues, pipeline: str, sink: str = "sink") -> bool:
    """Re-enable a disabled endpoint (the running sink notices within a second). False if it was not disabled."""
    key = f"{pipeline}:{sink}"
    value = await state.kv_get(ENDPOINT_NS, key)
    if not isinstance(value, dict) or not value.get("disabled"):
        return False
    await state.kv_put(ENDPOINT_NS, key, {"url": value.get("url"), "failing_since": None, "disabled": None,
                                         "disabled_at": None, "alert": False})  # fmt: skip
    return True


async def endpoint_status(state: KeyValues, pipeline: str, sink: str = "sink") -> dict[str, Any] | None:
    """What alerting and status read: the stored endpoint record, or None."""
    value = await state.kv_get(ENDPOINT_NS, f"{pipeline}:{sink}")
    return value if isinstance(value, dict) else None
