"""The one classification of failed graph requests and the one retry policy.

error -> `classify`: the Neptune error code in the JSON body of the Gremlin status message
(`{"code": ..., "requestId": ..., "detailedMessage": ...}`) where there is one, by Neptune's
engine error table (docs.aws.amazon.com/neptune/latest/userguide/errors-engine-codes.html);
else the TinkerPop status code; else the kind of exception -> a `Failure` with its `Recovery`
-> `RetryPolicy.next_delay_s`: how long to wait before the next try, or None when the request
is done trying (the writer then isolates its rows, or stops) -> `stop_line`: the one line a
stopped run prints.
"""
from __future__ import annotations

import asyncio
import enum
import json
import random
import re
from dataclasses import dataclass, replace

from botocore.exceptions import CredentialRetrievalError, MetadataRetrievalError
from gremlin_python.driver.protocol import GremlinServerError

from imagegraph.config import GraphConfig
from imagegraph.graph.auth import CredentialsUnavailable
from imagegraph.graph.connection import HandshakeRejected


class Recovery(enum.Enum):
    """What to do after a failed request."""

    RETRY = "retry"                # transient on the server: again after a backoff, max_attempts
    RETRY_THEN_ISOLATE = "retry_then_isolate"  # transient, or the rows': max_attempts, then split
    RECONNECT = "reconnect"        # connection lost: new connection, within the failover budget
    THROTTLE = "throttle"          # server sheds load: back off, slow down, within the budget
    WRITER_MOVED = "writer_moved"  # read-only: reconnect (failover), within the failover budget
    ISOLATE = "isolate"            # the request's data: split it to isolate the bad rows
    STOP = "stop"                  # systematic: no request can succeed, stop the run


ATTEMPT_BOUNDED = frozenset({Recovery.RETRY, Recovery.RETRY_THEN_ISOLATE})
"""The failures `graph.max_attempts` bounds (the others: a time budget, or no retry)."""
SPLITTING = frozenset({Recovery.ISOLATE, Recovery.RETRY_THEN_ISOLATE})
"""The failures after which the writer splits a request to isolate its bad rows."""


# Neptune's engine error table, and the query errors of its data-plane API: code -> recovery.
# "Ok to retry? Yes" codes retry, and those that say "retry when less busy" (query and memory
# limits) throttle; a constraint violation may be a concurrent write or the rows' own, so it is
# retried, then split; a time limit is the request's size, so it splits at once; an operator's
# cancel stops the run. "No" codes are about the request's data and isolate, except the
# systematic ones, which stop.
NEPTUNE_ERRORS: dict[str, Recovery] = {
    "AccessDeniedException": Recovery.STOP,
    "BadRequestException": Recovery.ISOLATE,
    "CancelledByUserException": Recovery.STOP,
    "ClientTimeoutException": Recovery.RETRY,
    "ConcurrentModificationException": Recovery.RETRY,
    "ConstraintViolationException": Recovery.RETRY_THEN_ISOLATE,
    "FailureByQueryException": Recovery.RETRY,
    "IllegalArgumentException": Recovery.ISOLATE,
    "InternalFailureException": Recovery.RETRY,
    "InvalidArgumentException": Recovery.ISOLATE,
    "InvalidNumericDataException": Recovery.ISOLATE,
    "InvalidParameterException": Recovery.ISOLATE,
    "MalformedQueryException": Recovery.ISOLATE,
    "MemoryLimitExceededException": Recovery.THROTTLE,
    "MethodNotAllowedException": Recovery.STOP,
    "MissingParameterException": Recovery.ISOLATE,
    "ParsingException": Recovery.ISOLATE,
    "PreconditionsFailedException": Recovery.ISOLATE,
    "QueryLimitExceededException": Recovery.THROTTLE,
    "QueryLimitException": Recovery.ISOLATE,
    "QueryTooLargeException": Recovery.ISOLATE,
    "ReadOnlyViolationException": Recovery.WRITER_MOVED,
    "ServerShutdownException": Recovery.RECONNECT,
    "ThrottlingException": Recovery.THROTTLE,
    "TimeLimitExceededException": Recovery.ISOLATE,
    "TooManyRequestsException": Recovery.THROTTLE,
    "UnsupportedOperationException": Recovery.STOP,
}

# TinkerPop's ResponseStatusCode (error codes): number -> (name, recovery).
TINKERPOP_STATUS: dict[int, tuple[str, Recovery]] = {
    401: ("UNAUTHORIZED", Recovery.STOP),
    403: ("FORBIDDEN", Recovery.STOP),
    407: ("AUTHENTICATE", Recovery.STOP),
    429: ("TOO_MANY_REQUESTS", Recovery.THROTTLE),
    497: ("REQUEST_ERROR_SERIALIZATION", Recovery.ISOLATE),
    498: ("REQUEST_ERROR_MALFORMED_REQUEST", Recovery.ISOLATE),
    499: ("REQUEST_ERROR_INVALID_REQUEST_ARGUMENTS", Recovery.ISOLATE),
    500: ("SERVER_ERROR", Recovery.ISOLATE),
    595: ("SERVER_ERROR_FAIL_STEP", Recovery.ISOLATE),
    596: ("SERVER_ERROR_TEMPORARY", Recovery.RETRY),
    597: ("SERVER_ERROR_EVALUATION", Recovery.ISOLATE),
    598: ("SERVER_ERROR_TIMEOUT", Recovery.RETRY),
    599: ("SERVER_ERROR_SERIALIZATION", Recovery.ISOLATE),
}

# TinkerTransactionGraph's write conflict: a TransactionException (status 500).
_TRANSACTION_EXCEPTION = "org.apache.tinkerpop.gremlin.structure.util.TransactionException"
_TRANSACTION_CONFLICT = "Conflict: element modified in another transaction"
_UNSUPPORTED_MERGE = re.compile(
    r"\bmerge[VE]\b.*\b(unsupported|not supported|unknown|could not find|no signature)"
    r"|\b(unsupported|not supported|unknown|could not find|no signature)\b.*\bmerge[VE]\b",
    re.IGNORECASE | re.DOTALL)
_MESSAGE_CHARS = 300
_READ_ERROR = "Received error on read"  # gremlinpython's aiohttp transport, a WebSocket ERROR


@dataclass(frozen=True)
class Failure:
    """One failed request, classified: `cause` names it (a Neptune code, a TinkerPop status
    name or an exception type; the same failure has the same cause) and `message` says it on
    one line."""

    recovery: Recovery
    cause: str
    message: str


def classify(error: BaseException) -> Failure:
    """The `Failure` that `error`, raised while opening a connection or submitting a
    traversal, stands for."""
    if isinstance(error, HandshakeRejected):
        return _handshake_failure(error)
    if isinstance(error, GremlinServerError):
        return _server_failure(error)
    message = _one_line(f"{type(error).__name__}: {error}")
    if isinstance(error, (OSError, asyncio.TimeoutError, TimeoutError)):
        return Failure(Recovery.RECONNECT, type(error).__name__, message)  # refused, reset
    if isinstance(error, RuntimeError) and "closed" in str(error):
        return Failure(Recovery.RECONNECT, "ConnectionClosed", message)  # by the server
    if isinstance(error, RuntimeError) and str(error).startswith(_READ_ERROR):
        return Failure(Recovery.RECONNECT, "ReadError", message)  # the WebSocket's error frame
    if isinstance(error, (CredentialsUnavailable, CredentialRetrievalError,
                          MetadataRetrievalError)):
        return Failure(Recovery.RECONNECT, "CredentialFetch", message)  # e.g. IMDS refreshing
    if type(error).__module__.startswith("aiohttp"):
        return Failure(Recovery.RECONNECT, type(error).__name__, message)
    return Failure(Recovery.ISOLATE, type(error).__name__, message)  # e.g. a value not sent


def _handshake_failure(error: HandshakeRejected) -> Failure:
    cause = f"HTTP {error.status} at handshake"
    if error.status == 429:
        return Failure(Recovery.THROTTLE, cause, str(error))
    if error.status >= 500:
        return Failure(Recovery.RECONNECT, cause, str(error))  # e.g. 503 while failing over
    return Failure(Recovery.STOP, cause, str(error))  # 401, 403: auth; 404: not a Gremlin path


def neptune_error_body(status_message: str) -> dict | None:
    """Neptune's JSON error body (code, requestId, detailedMessage) in a Gremlin status
    message, or None when the message is not one."""
    text = status_message.strip()
    start = text.find("{")
    if start < 0:
        return None
    try:
        body = json.loads(text[start:])
    except ValueError:
        return None
    return body if isinstance(body, dict) and isinstance(body.get("code"), str) else None


def _server_failure(error: GremlinServerError) -> Failure:
    text = str(error.status_message or "")
    body = neptune_error_body(text)
    named = [code for code in NEPTUNE_ERRORS if re.search(rf"\b{code}\b", text)]
    exceptions = (error.status_attributes or {}).get("exceptions") or []
    if body is not None and body["code"] in NEPTUNE_ERRORS:
        code = body["code"]
        failure = Failure(NEPTUNE_ERRORS[code], code,
                          _one_line(f"{code}: {body.get('detailedMessage', '')}"))
    elif body is None and named:  # the code in the message's text, not as a JSON body
        failure = Failure(NEPTUNE_ERRORS[named[0]], named[0], _one_line(text))
    elif _TRANSACTION_CONFLICT in text or (_TRANSACTION_EXCEPTION in exceptions
                                           and "conflict" in text.lower()):
        failure = Failure(Recovery.RETRY, "TransactionConflict", _one_line(text))
    elif "Server disconnected" in text:
        failure = Failure(Recovery.RECONNECT, "ServerDisconnected", _one_line(text))
    else:
        name, recovery = TINKERPOP_STATUS.get(error.status_code,
                                              (str(error.status_code), Recovery.ISOLATE))
        failure = Failure(recovery, name, _one_line(f"{error.status_code} {name}: {text}"))
    if failure.recovery is Recovery.ISOLATE and _UNSUPPORTED_MERGE.search(failure.message):
        return replace(failure, recovery=Recovery.STOP)  # an engine without mergeV/mergeE
    return failure


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= _MESSAGE_CHARS else line[:_MESSAGE_CHARS - 1] + "…"


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed request again. The wait before try n+1 is uniform in
    [0, min(max_delay_s, base_delay_s * 2**(n-1))] seconds (full jitter). Transient server
    errors get at most `max_attempts` tries; lost connections, read-only refusals (a failover
    in progress) and throttling are tried until `failover_budget_s` seconds after the first
    try."""

    max_attempts: int = 8
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    failover_budget_s: float = 600.0

    @classmethod
    def from_config(cls, graph: GraphConfig) -> "RetryPolicy":
        return cls(graph.max_attempts, graph.retry_base_delay_s, graph.retry_max_delay_s,
                   graph.failover_budget_s)

    def delay_s(self, failed_attempts: int, rng: random.Random) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (failed_attempts - 1))
        return rng.uniform(0.0, ceiling)

    def next_delay_s(self, failure: Failure, failed_attempts: int, bounded_failures: int,
                     elapsed_s: float, rng: random.Random) -> float | None:
        """Seconds to wait before trying again after `failure` ended try `failed_attempts`,
        `elapsed_s` seconds after the first try began; None when there is no next try.
        `bounded_failures` counts the tries that ended in a failure of `ATTEMPT_BOUNDED` kind,
        this one included: a request's lost connections do not spend the `max_attempts` of a
        transient error that follows them."""
        if failure.recovery in (Recovery.ISOLATE, Recovery.STOP):
            return None
        delay = self.delay_s(failed_attempts, rng)
        if failure.recovery in (Recovery.RECONNECT, Recovery.THROTTLE, Recovery.WRITER_MOVED):
            return delay if elapsed_s + delay <= self.failover_budget_s else None
        return delay if bounded_failures < self.max_attempts else None


_IAM_FIX = ("check the IAM policy of the job's role (neptune-db:connect, ReadDataViaQuery, "
            "WriteDataViaQuery, DeleteDataViaQuery on the cluster), its credentials and "
            "graph.region, or set graph.iam_auth=off for a cluster without IAM authentication")
_PERMISSION_CAUSES = frozenset({"AccessDeniedException", "UNAUTHORIZED", "FORBIDDEN",
                                "AUTHENTICATE", "HTTP 401 at handshake",
                                "HTTP 403 at handshake"})
_MERGE_FIX = ("the engine lacks a step the writer uses: upgrade Neptune to engine 1.3.2.0 or "
              "later, or set graph.upsert_style=coalesce")


def stop_line(failure: Failure, graph: GraphConfig, attempts: int = 0,
              failures_in_a_row: int = 0, activity: str = "graph writes") -> str:
    """The one line that stops a run after `failure`: what happened (to `activity`: graph
    writes, graph reads) and what to fix."""
    where = f"{activity} to {graph.endpoint} stopped"
    if failures_in_a_row:
        return (f"{where}: the same failure ended {failures_in_a_row} requests in a row "
                f"(graph.max_failures_in_a_row), so it is not the rows' ({failure.message}); "
                "fix its cause, then run again with --resume")
    if failure.recovery is Recovery.WRITER_MOVED:
        return (f"{where}: the endpoint refused writes for graph.failover_budget_s="
                f"{graph.failover_budget_s:g} s, {attempts} tries ({failure.cause}); point "
                "graph.endpoint at the cluster (writer) endpoint, not a reader or instance "
                "endpoint")
    if failure.cause == "CancelledByUserException":
        return (f"{where}: a request was cancelled on the server ({failure.message}); "
                "run again with --resume when the cancel is over")
    if failure.recovery is Recovery.RECONNECT:
        return (f"{where}: no connection for graph.failover_budget_s="
                f"{graph.failover_budget_s:g} s ({failure.message}); check the cluster's "
                "status, its security groups and graph.endpoint")
    if failure.recovery is Recovery.THROTTLE:
        return (f"{where}: throttled for graph.failover_budget_s={graph.failover_budget_s:g} s "
                f"({failure.message}); lower graph.max_concurrent_writers or "
                "graph.max_upserts_per_s")
    if failure.cause in _PERMISSION_CAUSES:
        return f"{where}: permission denied ({failure.message}); {_IAM_FIX}"
    if failure.cause == "UnsupportedOperationException" or "merge" in failure.message.lower():
        return f"{where}: unsupported step ({failure.message}); {_MERGE_FIX}"
    return (f"{where}: {failure.message}; check graph.endpoint "
            "(ws[s]://HOST:8182/gremlin, a Neptune cluster endpoint)")
