"""Retry schedules: exponential backoff with full jitter, limits by attempts and by age.

Pure: the delay for an attempt takes the random draw, and the age check takes
``now``, so schedules are tested on a fake clock.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    initial_delay: float = 0.1
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: str = "full"  # "full": uniform in [0, cap]; "none": the cap itself
    max_attempts: int | None = None  # None: no limit
    max_age: float | None = None  # seconds since the first failure; None: no limit

    def cap(self, attempt: int) -> float:
        """The upper bound of the delay after failed attempt number ``attempt`` (1-based)."""
        exp = min(attempt - 1, 1000)
        try:
            value = self.initial_delay * (self.multiplier**exp)
        except OverflowError:
            value = self.max_delay
        return min(self.max_delay, value)

    def delay(self, attempt: int, draw: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt``; ``draw`` in [0, 1) is the jitter sample."""
        cap = self.cap(attempt)
        if self.jitter == "none":
            return cap
        if draw is None:
            draw = random.random()
        return cap * draw

    def gives_up(self, attempts: int, first_failure: float, now: float) -> bool:
        """True when no further attempt is allowed after ``attempts`` failed attempts."""
        if self.max_attempts is not None and attempts >= self.max_attempts:
            return True
        return self.max_age is not None and now - first_failure >= self.max_age

    @classmethod
    def from_config(cls, cfg: object) -> RetryPolicy:
        return cls(
            initial_delay=cfg.initial_delay,  # type: ignore[attr-defined]
            max_delay=cfg.max_delay,  # type: ignore[attr-defined]
            multiplier=cfg.multiplier,  # type: ignore[attr-defined]
            jitter=cfg.jitter,  # type: ignore[attr-defined]
            max_attempts=cfg.max_attempts,  # type: ignore[attr-defined]
            max_age=cfg.max_age,  # type: ignore[attr-defined]
        )
