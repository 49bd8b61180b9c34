"""Retry delays: exponential backoff with full jitter (each delay uniform in [0, min(cap, base * 2^n))).

Full jitter spreads retries of many executions that failed together (a provider outage) instead of having them
return in synchronised waves.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    base_seconds: float = 2.0
    cap_seconds: float = 3600.0

    def __post_init__(self) -> None:
        if self.base_seconds <= 0 or self.cap_seconds < self.base_seconds:
            raise ValueError("backoff needs 0 < base <= cap")

    def ceiling(self, attempt: int) -> float:
        """Upper bound of the delay before retry number `attempt` (1 = the first retry)."""
        if attempt < 1:
            raise ValueError("attempts are numbered from 1")
        # min() before the power would still overflow for huge attempts; cap the exponent instead.
        exponent = min(attempt - 1, 62)
        return float(min(self.cap_seconds, self.base_seconds * 2.0**exponent))

    def delay(self, attempt: int, uniform: Callable[[float, float], float] = random.uniform) -> float:
        """A delay drawn with full jitter; `uniform` is injectable so tests assert exact schedules."""
        return uniform(0.0, self.ceiling(attempt))
