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


class FakeConnection:
    """Stands in for GremlinConnection in policy tests: `submit` raises each of `errors` in
    turn, then succeeds; opens and closes are counted."""

    def __init__(self, errors=()):
        self.errors = list(errors)
        self.open_now, self.opens, self.closes = False, 0, 0

    def submit(self, request):
        if not self.open_now:
            self.open_now, self.opens = True, self.opens + 1
        if self.errors:
            raise self.errors.pop(0)
        return [len(request)]

    def close(self):
        self.open_now, self.closes = False, self.closes + 1


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def writer_with(errors, **graph_settings):
    from imagegraph.config import GraphConfig
    from imagegraph.graph.writer import GraphWriter

    graph = GraphConfig(**{"max_attempts": 4, "retry_base_delay_s": 1.0,
                           "retry_max_delay_s": 8.0, **graph_settings})
    clock = FakeClock()
    connection = FakeConnection(errors)
    writer = GraphWriter(connection, graph, sleep=clock.sleep, clock=clock,
                         rng=random.Random(3))
    return writer, connection, clock


def build(elements):
    return list(elements)


def test_transient_errors_are_retried_on_the_same_connection():
    writer, connection, clock = writer_with([server_error(500, "ConcurrentModificationException")]
                                            * 2)
    assert writer.submit(build, [1, 2, 3]) == 3
    assert writer.stats.retries == 2 and writer.stats.requests == 3
    assert connection.opens == 1 and connection.closes == 0
    assert len(clock.slept) == 2 and clock.slept[1] <= 2.0


def test_dropped_connections_reconnect():
    writer, connection, _ = writer_with([ConnectionResetError(104, "reset"),
                                         server_error(500, "ReadOnlyViolationException")])
    assert writer.submit(build, [1]) == 1
    assert connection.opens == 3 and connection.closes == 2


def test_malformed_request_is_not_retried():
    from imagegraph.graph.writer import RequestFailed

    writer, _, clock = writer_with([server_error(499, "malformed")])
    with pytest.raises(RequestFailed) as failure:
        writer.submit(build, [1])
    assert failure.value.recovery is Recovery.GIVE_UP
    assert writer.stats.requests == 1 and clock.slept == []


def test_attempts_are_bounded():
    from imagegraph.graph.writer import RequestFailed

    writer, _, clock = writer_with([TimeoutError()] * 10, max_attempts=4)
    with pytest.raises(RequestFailed, match="after 4 attempt"):
        writer.submit(build, [1])
    assert writer.stats.requests == 4 and len(clock.slept) == 3


def test_elapsed_time_is_bounded():
    from imagegraph.graph.writer import RequestFailed

    writer, _, clock = writer_with([TimeoutError()] * 100, max_attempts=100,
                                   retry_base_delay_s=4.0, retry_max_delay_s=4.0,
                                   retry_max_elapsed_s=10.0)
    with pytest.raises(RequestFailed):
        writer.submit(build, [1])
    assert clock.now <= 10.0
    assert writer.stats.requests < 100
