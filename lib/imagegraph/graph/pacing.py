"""Pacing of graph writes: at most a given number of upserts a second from one writer."""
from __future__ import annotations

import time
from typing import Callable


class Pacer:
    """Spaces requests so that elements flow at no more than `per_second` (0: no limit); a
    request of n elements takes n / per_second seconds of the writer's budget."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.per_second = per_second
        self._clock, self._sleep = clock, sleep
        self._next_start: float | None = None

    def wait(self, elements: int) -> None:
        """Block until a request of `elements` upserts may start."""
        if not self.per_second:
            return
        now = self._clock()
        start = now if self._next_start is None else max(now, self._next_start)
        if start > now:
            self._sleep(start - now)
        self._next_start = start + elements / self.per_second
