"""The one retry policy for graph writes: which errors are worth another try, how long to wait
before it (exponential backoff with full jitter), and when to stop."""
from __future__ import annotations

import asyncio
import enum
import random
from dataclasses import dataclass

from gremlin_python.driver.protocol import GremlinServerError

from imagegraph.config import GraphConfig

# Neptune names its transient errors in the message (and in `code` of its JSON body).
_TRANSIENT_SERVER_ERRORS = ("ConcurrentModificationException", "ThrottlingException",
                            "TimeLimitExceededException", "MemoryLimitExceededException")
_WRONG_INSTANCE_ERRORS = ("ReadOnlyViolationException",)
_DISCONNECTED = "Server disconnected"
_SERVER_TIMEOUT = 598


class Recovery(enum.Enum):
    """What to do after a failed request."""

    RETRY = "retry"                        # same connection, after a backoff
    RECONNECT = "reconnect"                # new connection, after a backoff
    GIVE_UP = "give_up"                    # the request itself is wrong: retrying cannot help


def recovery_for(error: BaseException) -> Recovery:
    """Classify an exception raised while submitting a traversal."""
    if isinstance(error, GremlinServerError):
        message = str(error.status_message)
        if any(name in message for name in _WRONG_INSTANCE_ERRORS) or _DISCONNECTED in message:
            return Recovery.RECONNECT
        if any(name in message for name in _TRANSIENT_SERVER_ERRORS):
            return Recovery.RETRY
        if error.status_code == _SERVER_TIMEOUT:
            return Recovery.RETRY
        return Recovery.GIVE_UP
    if isinstance(error, (OSError, asyncio.TimeoutError, TimeoutError)):
        return Recovery.RECONNECT  # refused, reset, aiohttp client errors, timeouts
    if isinstance(error, RuntimeError) and "closed" in str(error):
        return Recovery.RECONNECT  # gremlinpython: "Connection was closed by server."
    if type(error).__module__.startswith("aiohttp"):
        return Recovery.RECONNECT
    return Recovery.GIVE_UP


@dataclass(frozen=True)
class RetryPolicy:
    """At most `max_attempts` tries within `max_elapsed_s` seconds of the first; the wait
    before try n+1 is uniform in [0, min(max_delay_s, base_delay_s * 2**(n-1))] seconds."""

    max_attempts: int = 8
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    max_elapsed_s: float = 300.0

    @classmethod
    def from_config(cls, graph: GraphConfig) -> "RetryPolicy":
        return cls(graph.max_attempts, graph.retry_base_delay_s, graph.retry_max_delay_s,
                   graph.retry_max_elapsed_s)

    def delay_s(self, failed_attempts: int, rng: random.Random) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (failed_attempts - 1))
        return rng.uniform(0.0, ceiling)

    def next_delay_s(self, error: BaseException, failed_attempts: int, elapsed_s: float,
                     rng: random.Random) -> float | None:
        """Seconds to wait before trying again after `error`, or None to stop."""
        if recovery_for(error) is Recovery.GIVE_UP or failed_attempts >= self.max_attempts:
            return None
        delay = self.delay_s(failed_attempts, rng)
        if elapsed_s + delay > self.max_elapsed_s:
            return None
        return delay
