import json
import random

import botocore.session
import pytest
from botocore.exceptions import CredentialRetrievalError, MetadataRetrievalError
from gremlin_python.driver.protocol import GremlinServerError

from imagegraph.config import GraphConfig
from imagegraph.dead_letters import REFUSED, TRANSIENT, retry_class
from imagegraph.graph.auth import CredentialsUnavailable
from imagegraph.graph.connection import HandshakeRejected
from imagegraph.graph.retry import (
    NEPTUNE_ERRORS,
    TINKERPOP_STATUS,
    Failure,
    Recovery,
    RetryPolicy,
    classify,
    neptune_error_body,
    stop_line,
)
from imagegraph.graph.writer import GraphWriter, RequestFailed, WriterStopped

R = Recovery


def server_error(code: int, message: str, attributes: dict | None = None) -> GremlinServerError:
    return GremlinServerError({"code": code, "message": message, "attributes": attributes or {}})


def neptune_error(code: str, http_status: int, detail: str = "detail") -> GremlinServerError:
    """How Neptune answers a Gremlin request that failed: the JSON error body as the status
    message (errors-engine-codes.html, "Graph Engine Error Format")."""
    body = {"requestId": "0dbcded3-a9a1-4a25-b419-828c46342e47", "code": code,
            "detailedMessage": detail}
    return server_error(500 if http_status >= 500 else 499, json.dumps(body))


# Every row of Neptune's "Graph Engine Query Errors" table
# (docs.aws.amazon.com/neptune/latest/userguide/errors-engine-codes.html): code, HTTP status,
# "Ok to Retry?" as the page says it, and what the writer does. The page's "Yes" rows retry
# (throttling also slows the writer down); its "No" rows are the request's fault and isolate
# the bad rows, except those no request could pass, which stop the run: AccessDenied
# (authorization), MethodNotAllowed (not a Gremlin endpoint), UnsupportedOperation (an engine
# without a step the writer uses). ReadOnlyViolation is "No" on the page, but a failover turns
# the old writer into a reader under the cluster endpoint (Neptune's failover and
# best-practices pages: reconnect), so it reconnects for the failover budget, and stops when it
# persists. Of the "Yes" rows, the limits that mean "retry when less busy" (query, memory)
# throttle; a constraint violation is retried, then split (it may be the rows'); a time limit
# is the request's size, so it splits at once; an operator's cancel stops the run.
NEPTUNE_TABLE = [
    ("AccessDeniedException", 403, "No", R.STOP),
    ("BadRequestException", 400, "No", R.ISOLATE),
    ("CancelledByUserException", 500, "Yes", R.STOP),
    ("ConcurrentModificationException", 500, "Yes", R.RETRY),
    ("ConstraintViolationException", 400, "Yes", R.RETRY_THEN_ISOLATE),
    ("FailureByQueryException", 500, "Yes", R.RETRY),
    ("IllegalArgumentException", 400, "No", R.ISOLATE),
    ("InternalFailureException", 500, "Yes", R.RETRY),
    ("InvalidNumericDataException", 400, "No", R.ISOLATE),
    ("InvalidParameterException", 400, "No", R.ISOLATE),
    ("MalformedQueryException", 400, "No", R.ISOLATE),
    ("MemoryLimitExceededException", 500, "Yes", R.THROTTLE),
    ("MethodNotAllowedException", 405, "No", R.STOP),
    ("MissingParameterException", 400, "No", R.ISOLATE),
    ("QueryLimitExceededException", 500, "Yes", R.THROTTLE),
    ("QueryLimitException", 400, "No", R.ISOLATE),
    ("QueryTooLargeException", 400, "No", R.ISOLATE),
    ("ReadOnlyViolationException", 400, "No", R.WRITER_MOVED),
    ("ThrottlingException", 500, "Yes", R.THROTTLE),
    ("TimeLimitExceededException", 500, "Yes", R.ISOLATE),
    ("TooManyRequestsException", 429, "Yes", R.THROTTLE),
    ("UnsupportedOperationException", 400, "No", R.STOP),
    # Not on the engine page; query errors of Neptune's data-plane API (botocore's neptunedata
    # service model, where "Yes" is its `retryable` trait). A server shutting down is a
    # failover or maintenance reboot: reconnect.
    ("ClientTimeoutException", 408, "Yes", R.RETRY),
    ("InvalidArgumentException", 400, "No", R.ISOLATE),
    ("ParsingException", 400, "No", R.ISOLATE),
    ("PreconditionsFailedException", 400, "No", R.ISOLATE),
    ("ServerShutdownException", 500, "No", R.RECONNECT),
]
# "Yes" on the page, but retrying the same request would not help: a time limit is the
# request's size (split it), a cancel is an operator's (stop).
NOT_RETRIED_ALTHOUGH_YES = {"TimeLimitExceededException", "CancelledByUserException"}
# Errors of the data-plane API that no Gremlin query returns (bulk loader, streams, ML).
NOT_FROM_QUERIES = {"BulkLoadIdNotFoundException", "ExpiredStreamException",
                    "LoadUrlAccessDeniedException", "MLResourceNotFoundException",
                    "S3Exception", "StatisticsNotAvailableException",
                    "StreamRecordsNotFoundException"}


@pytest.mark.parametrize("code, http_status, ok_to_retry, recovery", NEPTUNE_TABLE)
def test_neptune_error_codes_from_the_json_body(code, http_status, ok_to_retry, recovery):
    failure = classify(neptune_error(code, http_status))
    assert failure.recovery is recovery and failure.cause == code
    assert failure.message == f"{code}: detail"
    retried = recovery in (R.RETRY, R.RETRY_THEN_ISOLATE, R.THROTTLE)
    assert retried == (ok_to_retry == "Yes") or code in NOT_RETRIED_ALTHOUGH_YES \
        or recovery is R.RECONNECT


def test_the_table_test_covers_every_code_the_writer_knows():
    assert {code for code, *_ in NEPTUNE_TABLE} == set(NEPTUNE_ERRORS)


def test_the_table_covers_every_query_error_of_neptunes_service_model():
    """botocore's neptunedata model: every exception is in the table (or is not a query's),
    with the model's HTTP status."""
    model = botocore.session.get_session().get_service_model("neptunedata")
    statuses = {shape.name: shape.metadata["error"]["httpStatusCode"]
                for shape in model.error_shapes}
    table = {code: status for code, status, *_ in NEPTUNE_TABLE}
    assert set(statuses) - NOT_FROM_QUERIES == set(table)
    assert {code: statuses[code] for code in table} == table


# TinkerPop 3.7's ResponseStatusCode (org.apache.tinkerpop.gremlin.util.message, read from
# gremlin-util-3.7.3.jar), every error code: authentication stops; 429 throttles; TEMPORARY
# ("the server might succeed on retry", which TinkerPop sends for a TemporaryException) and
# TIMEOUT retry; the request-error and other server-error codes are the request's fault.
TINKERPOP_TABLE = [
    (401, "UNAUTHORIZED", R.STOP), (403, "FORBIDDEN", R.STOP), (407, "AUTHENTICATE", R.STOP),
    (429, "TOO_MANY_REQUESTS", R.THROTTLE),
    (497, "REQUEST_ERROR_SERIALIZATION", R.ISOLATE),
    (498, "REQUEST_ERROR_MALFORMED_REQUEST", R.ISOLATE),
    (499, "REQUEST_ERROR_INVALID_REQUEST_ARGUMENTS", R.ISOLATE),
    (500, "SERVER_ERROR", R.ISOLATE), (595, "SERVER_ERROR_FAIL_STEP", R.ISOLATE),
    (596, "SERVER_ERROR_TEMPORARY", R.RETRY), (597, "SERVER_ERROR_EVALUATION", R.ISOLATE),
    (598, "SERVER_ERROR_TIMEOUT", R.RETRY), (599, "SERVER_ERROR_SERIALIZATION", R.ISOLATE),
]


@pytest.mark.parametrize("status, name, recovery", TINKERPOP_TABLE)
def test_tinkerpop_status_codes(status, name, recovery):
    failure = classify(server_error(status, "plain message from Gremlin Server"))
    assert (failure.recovery, failure.cause) == (recovery, name)


def test_the_tinkerpop_table_covers_every_error_status():
    assert {status for status, *_ in TINKERPOP_TABLE} == set(TINKERPOP_STATUS)


@pytest.mark.parametrize("error, recovery, cause", [
    # TinkerTransactionGraph's write conflict, as Gremlin Server 3.7.3 answered it to 4 writers
    # upserting one vertex (gremlinPool 4): SERVER_ERROR, this message (TinkerElementContainer
    # in tinkergraph-gremlin-3.7.3.jar throws it) and the exception class as an attribute.
    # Like Neptune's ConcurrentModificationException, retried.
    (server_error(500, "Conflict: element modified in another transaction",
                  {"exceptions": ["org.apache.tinkerpop.gremlin.structure.util."
                                  "TransactionException"]}), R.RETRY, "TransactionConflict"),
    (server_error(500, "conflict committing",
                  {"exceptions": ["org.apache.tinkerpop.gremlin.structure.util."
                                  "TransactionException"]}), R.RETRY, "TransactionConflict"),
    # a Neptune code in a message that is not a JSON body still counts
    (server_error(500, "ConcurrentModificationException: conflict"), R.RETRY,
     "ConcurrentModificationException"),
    # an engine without mergeV (Neptune before 1.2.1.0; Gremlin Server without the step)
    (neptune_error("MalformedQueryException", 400, "Unsupported step: mergeV"), R.STOP,
     "MalformedQueryException"),
    (server_error(499, "Could not find a method mergeV on GraphTraversal"), R.STOP,
     "REQUEST_ERROR_INVALID_REQUEST_ARGUMENTS"),
    (server_error(499, "MalformedQueryException: unsupported step mergeE"), R.STOP,
     "MalformedQueryException"),
    # a data error that mentions mergeE is still a data error
    (server_error(500, "Vertex id could not be resolved from mergeE: class:x"), R.ISOLATE,
     "SERVER_ERROR"),
    (server_error(500, "Server disconnected - please try to reconnect"), R.RECONNECT,
     "ServerDisconnected"),
    # the WebSocket handshake: authorization stops, overload throttles, 5xx reconnects
    (HandshakeRejected(403, "Forbidden"), R.STOP, "HTTP 403 at handshake"),
    (HandshakeRejected(401, "Unauthorized"), R.STOP, "HTTP 401 at handshake"),
    (HandshakeRejected(429, "Too Many Requests"), R.THROTTLE, "HTTP 429 at handshake"),
    (HandshakeRejected(503, "Service Unavailable"), R.RECONNECT, "HTTP 503 at handshake"),
    (ConnectionRefusedError(111, "refused"), R.RECONNECT, "ConnectionRefusedError"),
    (TimeoutError(), R.RECONNECT, "TimeoutError"),
    (RuntimeError("Connection was closed by server."), R.RECONNECT, "ConnectionClosed"),
    # gremlinpython's aiohttp transport on a WebSocket ERROR message; a credential fetch that
    # failed this time (the instance metadata service): a new connection fetches again
    (RuntimeError("Received error on read: 'Cannot write to closing transport'"), R.RECONNECT,
     "ReadError"),
    (CredentialRetrievalError(provider="container-role", error_msg="timed out"), R.RECONNECT,
     "CredentialFetch"),
    (MetadataRetrievalError(error_msg="IMDS 503"), R.RECONNECT, "CredentialFetch"),
    (CredentialsUnavailable("boto3 found no AWS credentials"), R.RECONNECT, "CredentialFetch"),
    (ValueError("a value gremlinpython cannot send"), R.ISOLATE, "ValueError"),
])
def test_other_failures(error, recovery, cause):
    failure = classify(error)
    assert (failure.recovery, failure.cause) == (recovery, cause)
    assert "\n" not in failure.message


def test_full_jitter_delays_stay_under_the_exponential_ceiling():
    policy = RetryPolicy(max_attempts=8, base_delay_s=0.5, max_delay_s=4.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (7, 4.0)]:
        delays = [policy.delay_s(attempt, rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # jitter spans the range, not a fixed value


class FakeConnection:
    """Stands in for GremlinConnection in policy tests: `submit` raises each of `errors` in
    turn (or what `reject(request)` returns, when given), then succeeds; opens and closes are
    counted."""

    def __init__(self, errors=(), reject=None):
        self.errors = list(errors)
        self.reject = reject
        self.open_now, self.opens, self.closes = False, 0, 0
        self.requests: list = []

    def submit(self, request):
        if not self.open_now:
            self.open_now, self.opens = True, self.opens + 1
        self.requests.append(request)
        error = self.errors.pop(0) if self.errors else self.reject and self.reject(request)
        if error:
            self.close()  # as GremlinConnection does after any exception
            raise error
        return [1]

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


def writer_with(errors=(), reject=None, **graph_settings):
    graph = GraphConfig(**{"max_attempts": 4, "retry_base_delay_s": 1.0,
                           "retry_max_delay_s": 8.0, **graph_settings})
    clock = FakeClock()
    connection = FakeConnection(errors, reject)
    writer = GraphWriter(connection, graph, sleep=clock.sleep, clock=clock,
                         rng=random.Random(3))
    return writer, connection, clock


def build(elements):
    return list(elements)


def test_transient_errors_are_retried():
    writer, connection, clock = writer_with(
        [neptune_error("ConcurrentModificationException", 500)] * 2)
    assert writer.submit(build, [1, 2, 3]) == 3
    assert writer.stats.retries == 2 and writer.stats.requests == 3
    assert len(clock.slept) == 2 and clock.slept[1] <= 2.0


def test_transient_errors_are_bounded_by_attempts():
    writer, _, clock = writer_with([neptune_error("InternalFailureException", 500)] * 10,
                                   max_attempts=4)
    with pytest.raises(RequestFailed, match="after 4 attempt") as failure:
        writer.submit(build, [1])
    assert failure.value.failure.recovery is R.RETRY
    assert writer.stats.requests == 4 and len(clock.slept) == 3 and writer.stopped == ""


def test_lost_connections_are_retried_for_the_failover_budget_not_attempts():
    # 25 refusals: far more tries than max_attempts, at most 50 s of waits within a 60 s budget
    writer, connection, clock = writer_with([ConnectionRefusedError(111, "refused")] * 25,
                                            max_attempts=2, retry_base_delay_s=2.0,
                                            retry_max_delay_s=2.0, failover_budget_s=60.0)
    assert writer.submit(build, [1]) == 1
    assert writer.stats.requests == 26 and connection.opens == 26 and clock.now <= 50.0


def test_lost_connections_do_not_spend_the_attempts_of_a_transient_error_after_them():
    """A server restart (connections refused), then write conflicts as the writers come back
    at once: the conflicts still get their `max_attempts` tries."""
    writer, _, _ = writer_with([ConnectionRefusedError(111, "refused")] * 5
                               + [neptune_error("ConcurrentModificationException", 500)] * 3,
                               max_attempts=4)
    assert writer.submit(build, [1]) == 1
    assert writer.stats.requests == 9 and writer.stats.retries == 8


def test_no_connection_for_the_failover_budget_stops_the_writer():
    writer, connection, clock = writer_with(
        [ConnectionRefusedError(111, "refused")] * 1000, retry_base_delay_s=4.0,
        retry_max_delay_s=4.0, failover_budget_s=30.0)
    with pytest.raises(WriterStopped):
        writer.submit(build, [1])
    assert clock.now <= 30.0 and writer.stats.requests > writer.graph.max_attempts
    assert "failover_budget_s=30 s" in writer.stopped and "\n" not in writer.stopped
    sent = len(connection.requests)
    with pytest.raises(WriterStopped):
        writer.submit(build, [2])
    assert len(connection.requests) == sent  # nothing is sent once stopped


def test_throttling_backs_off_and_slows_the_pacer_without_spending_attempts():
    writer, _, clock = writer_with([neptune_error("ThrottlingException", 500)] * 5,
                                   max_attempts=2, retry_base_delay_s=0.5)
    assert writer.submit(build, [1]) == 1
    assert writer.stats.requests == 6
    # the pause: 0.5 s after the first throttle, doubled by the next four, halved by success
    assert writer._pacer.pause_s == 4.0
    slept = len(clock.slept)
    writer.submit(build, [2])
    assert clock.slept[slept:] == [4.0] and writer._pacer.pause_s == 2.0


def test_read_only_reconnects_for_the_failover_budget_then_stops_naming_the_endpoint_kind():
    # 2 s waits within a 30 s budget: many more tries than max_attempts
    writer, connection, clock = writer_with(
        [neptune_error("ReadOnlyViolationException", 400)] * 1000, max_attempts=3,
        retry_base_delay_s=2.0, retry_max_delay_s=2.0, failover_budget_s=30.0)
    with pytest.raises(WriterStopped):
        writer.submit(build, [1])
    assert writer.stats.requests > 3 and connection.opens == writer.stats.requests
    assert clock.now <= 30.0
    assert "refused writes for graph.failover_budget_s=30 s" in writer.stopped
    assert "cluster (writer) endpoint" in writer.stopped


def test_read_only_during_a_failover_is_waited_out():
    writer, connection, _ = writer_with([neptune_error("ReadOnlyViolationException", 400)] * 2,
                                        max_attempts=3)
    assert writer.submit(build, [1]) == 1 and writer.stopped == ""


@pytest.mark.parametrize("error", [
    neptune_error("AccessDeniedException", 403), HandshakeRejected(403, "Forbidden"),
    HandshakeRejected(401, "Unauthorized")])
def test_permission_errors_stop_at_once_with_one_line(error):
    writer, _, clock = writer_with([error])
    with pytest.raises(WriterStopped):
        writer.submit(build, [1])
    assert writer.stats.requests == 1 and clock.slept == []
    assert "permission denied" in writer.stopped and "DeleteDataViaQuery" in writer.stopped
    assert "\n" not in writer.stopped




def prediction(n: int, label: str = "b") -> dict:
    return {"uri": f"s3://b/img{n}.png", "bucket": "b", "key": f"img{n}.png", "bytes": 100 + n,
            "width": 8, "height": 8, "format": "PNG", "sha256": f"{n:064x}",
            "labels": ["a", label], "scores": [0.7, 0.2]}


def test_the_same_data_error_in_a_row_stops_without_dead_letters():
    malformed = neptune_error("MalformedQueryException", 400, "bad traversal")
    writer, connection, _ = writer_with(reject=lambda request: malformed,
                                        max_failures_in_a_row=5, records_per_request=10_000)
    writer.write_predictions([prediction(n) for n in range(8)], "m@1", "run-1")
    assert len(connection.requests) == 5
    assert writer.failed == {} and writer.stats.rows_written == 0
    assert writer.stopped.endswith("ended 5 requests in a row (graph.max_failures_in_a_row), "
                                   "so it is not the rows' (MalformedQueryException: bad "
                                   "traversal); fix its cause, then run again with --resume")


def rejecting(fragment: str):
    """A server that rejects, as malformed, every request whose bytecode holds `fragment`
    (an edge to class:no-such-class: only edge requests hold class ids)."""
    def reject(request):
        if fragment in str(request.bytecode):
            return neptune_error("MalformedQueryException", 400, "bad value")
        return None
    return reject


def test_split_isolates_the_bad_row_with_pauses_and_a_bounded_number_of_requests():
    writer, connection, clock = writer_with(reject=rejecting("class:no-such-class"),
                                            records_per_request=10_000,
                                            max_steps_per_request=100_000)
    rows = [prediction(n) for n in range(16)]
    rows[5] = prediction(5, "no-such-class")
    writer.write_predictions(rows, "m@1", "run-1")
    assert list(writer.failed) == ["s3://b/img5.png"] and writer.stats.rows_written == 15
    # 1 vertex request; 32 edges in one request, then halves of 16, 8, 4, 2, 1 edges:
    # 1 + 1 + 2 * 5 requests, a pause of at most retry_base_delay_s before each half
    assert writer.stats.requests == 12 and len(connection.requests) == 12
    assert len(clock.slept) == 10 and all(0 <= s <= 1.0 for s in clock.slept)


def rejecting_with(error, fragment: str):
    """A server that answers `error` to every request whose bytecode holds `fragment`."""
    return lambda request: error if fragment in str(request.bytecode) else None


def test_rows_the_graph_refuses_are_refused_and_rows_out_of_retries_transient():
    """The dead-letter reason says which: a row isolated because the server refused it for
    its data (it may be the graph's state: see `imagegraph.dead_letters`), or rows of a
    request whose retries of a transient error ran out."""
    refusing, _, _ = writer_with(reject=rejecting("class:no-such-class"),
                                 records_per_request=10_000, max_steps_per_request=100_000)
    failing, _, _ = writer_with(
        reject=rejecting_with(neptune_error("InternalFailureException", 500),
                              "class:no-such-class"),
        records_per_request=10_000, max_steps_per_request=100_000, max_attempts=2)
    for writer in (refusing, failing):
        rows = [prediction(n) for n in range(4)]
        rows[1] = prediction(1, "no-such-class")
        writer.write_predictions(rows, "m@1", "run-1")
    assert {uri: retry_class(reason) for uri, reason in refusing.failed.items()} == {
        "s3://b/img1.png": REFUSED}
    assert refusing.failed["s3://b/img1.png"].startswith(
        "graph refused the write: MalformedQueryException: bad value (after 1 attempt(s))")
    assert {uri: retry_class(reason) for uri, reason in failing.failed.items()} == {
        f"s3://b/img{n}.png": TRANSIENT for n in range(4)}  # not isolated: not the rows'
    assert failing.failed["s3://b/img1.png"].startswith(
        "graph write failed: InternalFailureException")


@pytest.mark.parametrize("code, requests", [
    # 1 vertex request; 8 edges, the bad one 4th: 8 (fails), 4 (fails) 4, 2 2 (fails), 1 1
    # (fails): 4 failing and 3 passing edge requests
    ("TimeLimitExceededException", 1 + 4 + 3),        # the request's size: split at once
    ("ConstraintViolationException", 1 + 4 * 3 + 3),  # each failing one tried max_attempts
])
def test_a_request_failing_on_its_size_or_a_constraint_is_split(code, requests):
    writer, connection, _ = writer_with(
        reject=rejecting_with(neptune_error(code, 500), "class:no-such-class"),
        records_per_request=10_000, max_steps_per_request=100_000, max_attempts=3)
    rows = [prediction(n) for n in range(4)]
    rows[1] = prediction(1, "no-such-class")
    writer.write_predictions(rows, "m@1", "run-1")
    assert list(writer.failed) == ["s3://b/img1.png"] and writer.stats.rows_written == 3
    assert len(connection.requests) == requests


@pytest.mark.parametrize("code", ["QueryLimitExceededException", "MemoryLimitExceededException"])
def test_query_and_memory_limits_throttle_without_spending_attempts(code):
    writer, _, _ = writer_with([neptune_error(code, 500)] * 5, max_attempts=2)
    assert writer.submit(build, [1]) == 1
    assert writer.stats.requests == 6 and writer._pacer.pause_s > 0


def test_an_operators_cancel_stops_without_a_retry():
    writer, connection, clock = writer_with([neptune_error("CancelledByUserException", 500)] * 3)
    with pytest.raises(WriterStopped):
        writer.submit(build, [1])
    assert len(connection.requests) == 1 and clock.slept == []
    assert "cancelled on the server" in writer.stopped


def test_split_requests_are_capped():
    writer, connection, _ = writer_with(reject=rejecting("class:no-such-class"),
                                        records_per_request=10_000,
                                        max_steps_per_request=100_000, max_split_requests=4)
    rows = [prediction(n) for n in range(16)]
    rows[5] = prediction(5, "no-such-class")
    writer.write_predictions(rows, "m@1", "run-1")
    # edges: the request of 32, halves of 16 (rows 0-7 bad, 8-15 written), halves of 8 (rows
    # 0-3 written, 4-7 bad): the budget of 4 is spent, rows 4-7 fail unisolated
    assert len(connection.requests) == 1 + 1 + 4
    assert sorted(writer.failed) == [f"s3://b/img{n}.png" for n in (4, 5, 6, 7)]
    assert writer.stopped == ""


@pytest.mark.parametrize("error, failure", [
    (ConnectionRefusedError(111, "refused"),
     Failure(R.RECONNECT, "ConnectionRefusedError", "ConnectionRefusedError: [Errno 111] refused")),
    (RuntimeError("Connection was closed by server."),
     Failure(R.RECONNECT, "ConnectionClosed", "RuntimeError: Connection was closed by server.")),
    (RuntimeError("event loop is running"),
     Failure(R.ISOLATE, "RuntimeError", "RuntimeError: event loop is running")),
    (ValueError("stream closed"), Failure(R.ISOLATE, "ValueError", "ValueError: stream closed")),
    (HandshakeRejected(429, "Too Many Requests"),
     Failure(R.THROTTLE, "HTTP 429 at handshake",
             "HTTP 429 Too Many Requests at the WebSocket handshake")),
    (HandshakeRejected(500, "Internal Server Error"),
     Failure(R.RECONNECT, "HTTP 500 at handshake",
             "HTTP 500 Internal Server Error at the WebSocket handshake")),
    (HandshakeRejected(499, "Client Closed"),
     Failure(R.STOP, "HTTP 499 at handshake", "HTTP 499 Client Closed at the WebSocket handshake")),
    (server_error(555, "odd"), Failure(R.ISOLATE, "555", "555 555: odd")),
    (GremlinServerError({"code": 500, "message": None, "attributes": {}}),
     Failure(R.ISOLATE, "SERVER_ERROR", "500 SERVER_ERROR:")),
    (server_error(500, "write conflict in the row's data"),
     Failure(R.ISOLATE, "SERVER_ERROR", "500 SERVER_ERROR: write conflict in the row's data")),
    (server_error(500, json.dumps({"code": "ThrottlingException", "requestId": "r"})),
     Failure(R.THROTTLE, "ThrottlingException", "ThrottlingException:")),
])
def test_each_failure_is_exactly_classified(error, failure):
    """Recovery, cause and the whole message."""
    assert classify(error) == failure


def test_an_aiohttp_error_that_is_no_os_error_reconnects():
    import aiohttp
    error = aiohttp.ServerDisconnectedError("gone")
    assert not isinstance(error, OSError)
    assert classify(error) == Failure(R.RECONNECT, "ServerDisconnectedError",
                                      "ServerDisconnectedError: gone")


def test_neptune_error_body_is_the_whole_json_object():
    body = {"code": "BadRequestException", "detailedMessage": "bad {value}", "requestId": "r"}
    assert neptune_error_body(f"  {json.dumps(body)} ") == body
    assert neptune_error_body('{"code": 5}') is None
    assert neptune_error_body("no body") is None


def test_long_messages_are_cut_to_300_characters():
    assert classify(ValueError("x" * 288)).message == "ValueError: " + "x" * 288  # 300
    cut = classify(ValueError("x" * 289)).message
    assert cut == "ValueError: " + "x" * 287 + "…" and len(cut) == 300


GRAPH = GraphConfig(endpoint="wss://db:8182/gremlin", failover_budget_s=90.0)


@pytest.mark.parametrize("failure, kwargs, line", [
    (Failure(R.WRITER_MOVED, "ReadOnlyViolationException", "m"), {"attempts": 3},
     "graph writes to wss://db:8182/gremlin stopped: the endpoint refused writes for "
     "graph.failover_budget_s=90 s, 3 tries (ReadOnlyViolationException); point graph.endpoint "
     "at the cluster (writer) endpoint, not a reader or instance endpoint"),
    (Failure(R.STOP, "CancelledByUserException", "CancelledByUserException: cancelled"), {},
     "graph writes to wss://db:8182/gremlin stopped: a request was cancelled on the server "
     "(CancelledByUserException: cancelled); run again with --resume when the cancel is over"),
    (Failure(R.RECONNECT, "OSError", "OSError: down"), {},
     "graph writes to wss://db:8182/gremlin stopped: no connection for "
     "graph.failover_budget_s=90 s (OSError: down); check the cluster's status, its security "
     "groups and graph.endpoint"),
    (Failure(R.THROTTLE, "ThrottlingException", "slow"), {},
     "graph writes to wss://db:8182/gremlin stopped: throttled for graph.failover_budget_s=90 s "
     "(slow); lower graph.max_concurrent_writers or graph.max_upserts_per_s"),
    (Failure(R.STOP, "UnsupportedOperationException", "no such step"), {},
     "graph writes to wss://db:8182/gremlin stopped: unsupported step (no such step); the "
     "engine lacks a step the writer uses: upgrade Neptune to engine 1.3.2.0 or later, or set "
     "graph.upsert_style=coalesce"),
    (Failure(R.STOP, "REQUEST_ERROR_MALFORMED_REQUEST", "No signature of method: MergeV"), {},
     "graph writes to wss://db:8182/gremlin stopped: unsupported step (No signature of method: "
     "MergeV); the engine lacks a step the writer uses: upgrade Neptune to engine 1.3.2.0 or "
     "later, or set graph.upsert_style=coalesce"),
    (Failure(R.STOP, "MethodNotAllowedException", "not allowed"), {},
     "graph writes to wss://db:8182/gremlin stopped: not allowed; check graph.endpoint "
     "(ws[s]://HOST:8182/gremlin, a Neptune cluster endpoint)"),
    (Failure(R.ISOLATE, "SERVER_ERROR", "bad row"), {"failures_in_a_row": 4},
     "graph writes to wss://db:8182/gremlin stopped: the same failure ended 4 requests in a row "
     "(graph.max_failures_in_a_row), so it is not the rows' (bad row); fix its cause, then run "
     "again with --resume"),
])
def test_each_stop_line_is_exactly_what_to_fix(failure, kwargs, line):
    assert stop_line(failure, GRAPH, **kwargs) == line


def test_a_wait_that_ends_exactly_at_the_failover_budget_is_taken():
    class Ceiling(random.Random):
        def uniform(self, low, high):
            return high
    policy = RetryPolicy(max_attempts=8, base_delay_s=0.5, max_delay_s=20.0,
                         failover_budget_s=10.0)
    lost = Failure(R.RECONNECT, "OSError", "OSError: down")
    assert policy.next_delay_s(lost, 3, 0, 8.0, Ceiling()) == 2.0      # 8 + 2 == 10
    assert policy.next_delay_s(lost, 3, 0, 8.5, Ceiling()) is None
