import random

import pytest
from gremlin_python.driver.protocol import GremlinServerError

from imagegraph.graph.retry import Recovery, RetryPolicy, recovery_for


def server_error(code: int, message: str) -> GremlinServerError:
    return GremlinServerError({"code": code, "message": message, "attributes": {}})


@pytest.mark.parametrize("error, recovery", [
    (server_error(500, '{"code":"ConcurrentModificationException"}'), Recovery.RETRY),
    (server_error(500, "ThrottlingException: too many requests"), Recovery.RETRY),
    (server_error(598, "evaluation timed out"), Recovery.RETRY),
    (server_error(500, "ReadOnlyViolationException"), Recovery.RECONNECT),
    (server_error(500, "Server disconnected - please try to reconnect"), Recovery.RECONNECT),
    (ConnectionRefusedError(111, "refused"), Recovery.RECONNECT),
    (TimeoutError(), Recovery.RECONNECT),
    (RuntimeError("Connection was closed by server."), Recovery.RECONNECT),
    (server_error(499, "malformed request"), Recovery.GIVE_UP),
    (server_error(500, "Property value can not be null"), Recovery.GIVE_UP),
    (ValueError("bug"), Recovery.GIVE_UP),
])
def test_recovery_for(error, recovery):
    assert recovery_for(error) is recovery


def test_full_jitter_delays_stay_under_the_exponential_ceiling():
    policy = RetryPolicy(max_attempts=8, base_delay_s=0.5, max_delay_s=4.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (7, 4.0)]:
        delays = [policy.delay_s(attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spans the range, not a fixed value
