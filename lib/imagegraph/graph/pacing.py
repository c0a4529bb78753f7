"""Pacing of graph writes: at most a given number of upserts a second from one writer, and
slower after the server throttled it."""
from __future__ import annotations

import time
from typing import Callable


class Pacer:
    """Spaces requests so that elements flow at no more than `per_second` (0: no limit); a
    request of n elements takes n / per_second seconds of the writer's budget.

    After throttling (`slow_down`) every request also waits a pause, `min_pause_s` at first,
    doubled by each further throttle up to `max_pause_s` and halved by each request that
    succeeds (`speed_up`) until it falls below `min_pause_s` and is dropped: a throttled writer
    sends fewer requests a second until the server keeps up.
    """

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, min_pause_s: float = 0.5,
                 max_pause_s: float = 20.0):
        self.per_second = per_second
        self.pause_s = 0.0
        self._min_pause_s, self._max_pause_s = min_pause_s, max_pause_s
        self._clock, self._sleep = clock, sleep
        self._next_start: float | None = None

    def wait(self, elements: int) -> None:
        """Block until a request of `elements` upserts may start."""
        if not self.per_second and not self.pause_s:
            return
        now = self._clock()
        start = now if self._next_start is None else max(now, self._next_start)
        start = max(start, now + self.pause_s)
        if start > now:
            self._sleep(start - now)
        self._next_start = start + (elements / self.per_second if self.per_second else 0.0)

    def slow_down(self) -> None:
        """The server throttled a request: pause longer before each request."""
        self.pause_s = min(self._max_pause_s, max(self._min_pause_s, 2 * self.pause_s))

    def speed_up(self) -> None:
        """A request succeeded: halve the pause, down to none."""
        self.pause_s = self.pause_s / 2 if self.pause_s / 2 >= self._min_pause_s else 0.0
