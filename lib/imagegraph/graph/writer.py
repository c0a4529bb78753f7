"""The partition writer: prediction rows in; image vertices, then their classified_as edges,
upserted in requests sized by Neptune's limits. Rows that cannot be written are returned with
the reason instead of failing the task.

request -> submit, retried as `retry` classifies its failures (backoff; reconnect; throttling
slows the Pacer) -> a request rejected for its data is split in halves, with a pause before
each half and at most `graph.max_split_requests` requests, until its bad rows are alone; they
go to `failed` -> a systematic failure (permissions, a reader endpoint, an unsupported step, no
connection for the failover budget, the same failure ending `graph.max_failures_in_a_row`
requests in a row) stops the writer: `stopped` holds the one line to print, no request is
sent after it, and rows not written are not put in `failed` (the run ends without committing
them, and `--resume` picks them up).

A partition writes over one or more connections (`write_partition`), a writer and a thread each,
which take the partition's rows a flush at a time; a writer's stop stops the others' next flush.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from gremlin_python.process.graph_traversal import GraphTraversal

from imagegraph.config import GraphConfig
from imagegraph.graph.connection import GremlinConnection
from imagegraph.graph.elements import classified_as_edges, image_vertex
from imagegraph.graph.pacing import Pacer
from imagegraph.graph.retry import (
    ATTEMPT_BOUNDED,
    SPLITTING,
    Failure,
    Recovery,
    RetryPolicy,
    classify,
    stop_line,
)
from imagegraph.graph.traversals import UPSERTS, Upsert, pack

log = logging.getLogger(__name__)


@dataclass
class WriteStats:
    """Counts of what a writer, or a whole load, did."""

    rows_written: int = 0
    vertices: int = 0
    edges: int = 0
    requests: int = 0
    retries: int = 0
    failed_rows: int = 0

    def add(self, more: "WriteStats") -> None:
        """Add `more`'s counts to these."""
        for name in (f.name for f in fields(self)):
            setattr(self, name, getattr(self, name) + getattr(more, name))


class RequestFailed(Exception):
    """A request failed for good and its rows can be isolated: `failure` says why."""

    def __init__(self, failure: Failure, attempts: int):
        super().__init__(f"{failure.message} (after {attempts} attempt(s))")
        self.failure = failure


class WriterStopped(Exception):
    """The writer stopped on the systematic `failure`; the message is the writer's
    `stopped`."""

    def __init__(self, line: str, failure: Failure | None = None):
        super().__init__(line)
        self.failure = failure


class _SplitBudget:
    """Requests one rejected request may still be split into."""

    def __init__(self, requests: int):
        self.requests_left = requests


class GraphWriter:
    """Writes prediction rows through one `GremlinConnection` (opened on first use, reopened
    after any failure), retrying by the configured policy. `failed` maps each image uri that
    could not be written to the reason; `stopped` is "" until a systematic failure stops the
    writer, then the one line naming the cause and the fix. Requests are paced to at most
    `upserts_per_s` vertices and edges a second (0: no limit), slower while throttled.
    Retries are logged as warnings and a stop as an error, or both at debug level when
    `quiet` (a caller that reports the outcome itself)."""

    def __init__(self, connection: GremlinConnection, graph: GraphConfig,
                 upserts_per_s: float = 0.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None,
                 quiet: bool = False, activity: str = "graph writes"):
        self.connection = connection
        self.activity = activity  # what `stopped` says stopped: "graph writes", "graph reads"
        self.graph = graph
        self.policy = RetryPolicy.from_config(graph)
        self.stats = WriteStats()
        self.failed: dict[str, str] = {}
        self.stopped = ""  # why the writer stopped the run, in one line; "" while it has not
        self._upsert_vertices, self._upsert_edges = UPSERTS[graph.upsert_style]
        self._sleep, self._clock, self._rng = sleep, clock, rng or random.Random()
        self._pacer = Pacer(upserts_per_s, clock, sleep, graph.retry_base_delay_s,
                            graph.retry_max_delay_s)
        self._last_cause, self._failures_in_a_row = "", 0
        self._pending: dict[str, str] = {}  # failed rows, until a success shows it was them
        self._retry_log_level = logging.DEBUG if quiet else logging.WARNING
        self._stop_log_level = logging.DEBUG if quiet else logging.ERROR

    def submit(self, upsert: Upsert, elements: Sequence) -> int:
        """Submit `upsert(elements)` until it succeeds (returns how many elements the server
        upserted), fails for good (`RequestFailed`) or stops the writer (`WriterStopped`)."""
        self.run(upsert(elements), len(elements))
        return len(elements)

    def run(self, request: GraphTraversal, elements: int = 1) -> list:
        """Submit the traversal `request` (of `elements` upserts, what the pacing counts) until
        it succeeds (returns its results), fails for good (`RequestFailed`) or stops the writer
        (`WriterStopped`): every Gremlin request of a job, a write or a read, goes through
        here, so its failures are classified and retried alike."""
        if self.stopped:
            raise WriterStopped(self.stopped)
        started = self._clock()
        attempt = bounded_failures = 0
        while True:
            self._pacer.wait(elements)
            attempt += 1
            self.stats.requests += 1
            try:
                results = self.connection.submit(request)
            except Exception as exc:
                failure = classify(exc)
                if failure.recovery in ATTEMPT_BOUNDED:
                    bounded_failures += 1
                delay = self.policy.next_delay_s(failure, attempt, bounded_failures,
                                                 self._clock() - started, self._rng)
                if delay is None:
                    self._give_up(failure, attempt)
                log.log(self._retry_log_level,
                        "graph request of %d elements failed (%s); attempt %d, %s in %.1fs",
                        elements, failure.message, attempt, failure.recovery.value, delay)
                self.stats.retries += 1
                if failure.recovery is Recovery.THROTTLE:
                    self._pacer.slow_down()
                self._sleep(delay)
            else:
                self._pacer.speed_up()
                self._last_cause, self._failures_in_a_row = "", 0
                self._settle_failed()
                return results

    def _settle_failed(self) -> None:
        """Move the rows that failed since the last success into `failed`: a success since,
        or the end of their flush, shows the failure was theirs and not systematic."""
        for uri, reason in self._pending.items():
            if uri not in self.failed:
                self.failed[uri] = reason
                self.stats.failed_rows += 1
        self._pending.clear()

    def _give_up(self, failure: Failure, attempts: int) -> None:
        """Raise `WriterStopped` (setting `stopped`) for a systematic failure, else count the
        failure in a row and raise `RequestFailed`."""
        if failure.recovery in (Recovery.ISOLATE, Recovery.RETRY, Recovery.RETRY_THEN_ISOLATE):
            in_a_row = self._failures_in_a_row + 1 if failure.cause == self._last_cause else 1
            self._last_cause, self._failures_in_a_row = failure.cause, in_a_row
            if in_a_row < self.graph.max_failures_in_a_row:
                raise RequestFailed(failure, attempts)
            self.stopped = stop_line(failure, self.graph, failures_in_a_row=in_a_row,
                                     activity=self.activity)
        else:
            self.stopped = stop_line(failure, self.graph, attempts=attempts,
                                     activity=self.activity)
        log.log(self._stop_log_level, "%s", self.stopped)
        raise WriterStopped(self.stopped, failure)

    def write_elements(self, vertices: Sequence, edges: Sequence) -> None:
        """Upsert `vertices`, then `edges`, in packed requests; a request that fails for good
        raises `RequestFailed` or `WriterStopped` (for elements that have no row to
        dead-letter)."""
        for upsert, elements in ((self._upsert_vertices, vertices), (self._upsert_edges, edges)):
            for request in self._requests(elements):
                self.submit(upsert, request)
        self.stats.vertices += len(vertices)
        self.stats.edges += len(edges)

    def _requests(self, elements: Sequence) -> list[list]:
        return pack(elements, self.graph.records_per_request, self.graph.max_steps_per_request,
                    self.graph.upsert_style)

    def write_predictions(self, rows: Sequence[Mapping], model_tag: str, run_id: str) -> None:
        """Upsert the image vertices of `rows`, then the classified_as edges of the rows
        whose vertex was written. Rows that fail land in `failed`. Once the writer has
        stopped, nothing is sent, and the rows not written are not counted or put in
        `failed` (nor are those that failed after the last success: the failure that stopped
        the writer may have been theirs)."""
        try:
            vertices = [(row["uri"], image_vertex(row, model_tag)) for row in rows]
            self.stats.vertices += self._write(self._upsert_vertices, vertices)
            edges = [(row["uri"], edge) for row in rows
                     if row["uri"] not in self.failed and row["uri"] not in self._pending
                     for edge in classified_as_edges(row, model_tag, run_id)]
            self.stats.edges += self._write(self._upsert_edges, edges)
        except WriterStopped:
            self._pending.clear()
            return
        self._settle_failed()
        self.stats.rows_written += sum(1 for row in rows if row["uri"] not in self.failed)

    def _write(self, upsert: Upsert, owned: list[tuple[str, object]]) -> int:
        """Write (row uri, element) pairs in packed requests; returns elements written."""
        by_id = {id(element): uri for uri, element in owned}
        written = 0
        for request in self._requests([element for _, element in owned]):
            written += self._write_isolating(upsert, request, by_id,
                                             _SplitBudget(self.graph.max_split_requests))
        return written

    def _write_isolating(self, upsert: Upsert, request: list, owner: dict[int, str],
                         budget: _SplitBudget) -> int:
        """Submit `request`; when the server rejects it for its data, split it in halves (a
        jittered pause of up to `retry_base_delay_s` before each, at most `budget` requests in
        all) until the bad elements are alone, so only their rows fail ("graph refused the
        write: ..."). Rows of a request that failed otherwise (retries spent: "graph write
        failed: ..."), or that the budget left unsplit (refused), fail."""
        try:
            self.submit(upsert, request)
            return len(request)
        except RequestFailed as failure:
            isolating = failure.failure.recovery in SPLITTING
            if isolating and len(request) > 1 and budget.requests_left >= 2:
                budget.requests_left -= 2
                middle = len(request) // 2
                written = 0
                for half in (request[:middle], request[middle:]):
                    self._sleep(self.policy.delay_s(1, self._rng))
                    written += self._write_isolating(upsert, half, owner, budget)
                return written
            uris = {owner[id(element)] for element in request}
            log.error("graph write failed for %d row(s): %s", len(uris), failure)
            reason = "graph refused the write" if isolating else "graph write failed"
            for uri in uris - self.failed.keys():
                self._pending.setdefault(uri, f"{reason}: {failure}")
            return 0


@dataclass
class PartitionWrite:
    """What the writers of one partition did together: their counts summed, every row that
    failed with its reason, and the first stop line of a writer that stopped ("" if none)."""

    stats: WriteStats
    failed: dict[str, str]
    stopped: str


def write_partition(rows: Iterable[Mapping], graph: GraphConfig, model_tag: str, run_id: str,
                    upserts_per_s: float = 0.0, connections: int = 1) -> PartitionWrite:
    """Write one partition's prediction rows over `connections` connections at once, each a
    `GraphWriter` on a thread of its own with one request in flight and closed at the end,
    together at most `upserts_per_s` upserts a second (0: no limit). Each writer takes the
    next `graph.rows_per_flush` rows when it is free. Once a writer stops on a systematic
    failure no more rows are handed out: the rows not yet written are neither written nor
    failed. An unexpected error in a writer's thread is raised here, after the others end."""
    writers = [GraphWriter(GremlinConnection(graph), graph, upserts_per_s / connections)
               for _ in range(connections)]
    flushes = chunks(rows, graph.rows_per_flush)
    handing_out = threading.Lock()  # one thread at a time advances the rows
    stop = threading.Event()

    def next_flush() -> list | None:
        with handing_out:
            return None if stop.is_set() else next(flushes, None)

    def write(writer: GraphWriter) -> None:
        try:
            while (flush := next_flush()) is not None:
                writer.write_predictions(flush, model_tag, run_id)
                if writer.stopped:
                    stop.set()
        except BaseException:
            stop.set()
            raise
        finally:
            writer.connection.close()

    with ThreadPoolExecutor(connections, thread_name_prefix="imagegraph-writer") as pool:
        done = [pool.submit(write, writer) for writer in writers]
    for future in done:
        future.result()
    stats = WriteStats()
    for writer in writers:
        stats.add(writer.stats)
    return PartitionWrite(
        stats, {uri: reason for writer in writers for uri, reason in writer.failed.items()},
        next((writer.stopped for writer in writers if writer.stopped), ""))


def chunks(items: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of at most `size` items."""
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
