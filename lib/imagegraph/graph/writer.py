"""The partition writer: prediction rows in; image vertices, then their classified_as edges,
upserted in requests sized by Neptune's limits, with the retry policy of `retry`. Rows that
cannot be written are returned with the reason instead of failing the task."""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from imagegraph.config import GraphConfig
from imagegraph.graph.connection import GremlinConnection
from imagegraph.graph.elements import classified_as_edges, image_vertex
from imagegraph.graph.pacing import Pacer
from imagegraph.graph.retry import Recovery, RetryPolicy, recovery_for
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


class RequestFailed(Exception):
    """A request failed for good; `recovery` says whether the request itself was at fault."""

    def __init__(self, cause: BaseException, attempts: int):
        super().__init__(f"{type(cause).__name__}: {cause} (after {attempts} attempt(s))")
        self.recovery = recovery_for(cause)


class GraphWriter:
    """Writes prediction rows through one `GremlinConnection` (opened on first use, reopened
    after a dropped connection), retrying by the configured policy. `failed` maps each image
    uri that could not be written to the reason. Requests are paced to at most
    `upserts_per_s` vertices and edges a second (0: no limit)."""

    def __init__(self, connection: GremlinConnection, graph: GraphConfig,
                 upserts_per_s: float = 0.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None):
        self.connection = connection
        self.graph = graph
        self.policy = RetryPolicy.from_config(graph)
        self.stats = WriteStats()
        self.failed: dict[str, str] = {}
        self.stopped = ""  # why the writer stopped the run, in one line; "" while it has not
        self._upsert_vertices, self._upsert_edges = UPSERTS[graph.upsert_style]
        self._sleep, self._clock, self._rng = sleep, clock, rng or random.Random()
        self._pacer = Pacer(upserts_per_s, clock, sleep)

    def submit(self, upsert: Upsert, elements: Sequence) -> int:
        """Submit `upsert(elements)` until it succeeds or the policy stops (`RequestFailed`);
        returns how many elements the server upserted."""
        request = upsert(elements)
        self._pacer.wait(len(elements))
        started = self._clock()
        attempt = 0
        while True:
            attempt += 1
            self.stats.requests += 1
            try:
                self.connection.submit(request)
                return len(elements)
            except Exception as exc:
                delay = self.policy.next_delay_s(exc, attempt, self._clock() - started,
                                                 self._rng)
                if delay is None:
                    raise RequestFailed(exc, attempt) from exc
                recovery = recovery_for(exc)
                log.warning("graph request of %d elements failed (%s); attempt %d of %d, "
                            "%s in %.1fs", len(elements), type(exc).__name__, attempt,
                            self.policy.max_attempts, recovery.value, delay)
                self.stats.retries += 1
                if recovery is Recovery.RECONNECT:
                    self.connection.close()
                self._sleep(delay)

    def write_elements(self, vertices: Sequence, edges: Sequence) -> None:
        """Upsert `vertices`, then `edges`, in packed requests; a request that fails for good
        raises `RequestFailed` (for elements that have no row to dead-letter)."""
        for upsert, elements in ((self._upsert_vertices, vertices), (self._upsert_edges, edges)):
            for request in self._requests(elements):
                self.submit(upsert, request)
        self.stats.vertices += len(vertices)
        self.stats.edges += len(edges)

    def _requests(self, elements: Sequence) -> list[list]:
        return pack(elements, self.graph.records_per_request, self.graph.max_steps_per_request,
                    self.graph.upsert_style)

    def write_predictions(self, rows: Sequence[Mapping], model_tag: str, run_id: str,
                          written_at: datetime) -> None:
        """Upsert the image vertices of `rows`, then the classified_as edges of the rows
        whose vertex was written. Rows that fail land in `failed`."""
        vertices = [(row["uri"], image_vertex(row, model_tag, run_id, written_at))
                    for row in rows]
        self.stats.vertices += self._write(self._upsert_vertices, vertices)
        edges = [(row["uri"], edge) for row in rows if row["uri"] not in self.failed
                 for edge in classified_as_edges(row, model_tag, run_id, written_at)]
        self.stats.edges += self._write(self._upsert_edges, edges)
        self.stats.rows_written += sum(1 for row in rows if row["uri"] not in self.failed)

    def _write(self, upsert: Upsert, owned: list[tuple[str, object]]) -> int:
        """Write (row uri, element) pairs in packed requests; returns elements written."""
        by_id = {id(element): uri for uri, element in owned}
        written = 0
        for request in self._requests([element for _, element in owned]):
            written += self._write_isolating(upsert, request, by_id)
        return written

    def _write_isolating(self, upsert: Upsert, request: list, owner: dict[int, str]) -> int:
        """Submit `request`; when the server rejects it as malformed, split it in halves until
        the bad elements are alone, so only their rows fail."""
        try:
            self.submit(upsert, request)
            return len(request)
        except RequestFailed as failure:
            if failure.recovery is Recovery.GIVE_UP and len(request) > 1:
                middle = len(request) // 2
                return (self._write_isolating(upsert, request[:middle], owner)
                        + self._write_isolating(upsert, request[middle:], owner))
            uris = {owner[id(element)] for element in request}
            log.error("graph write failed for %d row(s): %s", len(uris), failure)
            for uri in uris - self.failed.keys():
                self.failed[uri] = f"graph write failed: {failure}"
                self.stats.failed_rows += 1
            return 0


def write_partition(rows: Iterable[Mapping], graph: GraphConfig, model_tag: str, run_id: str,
                    written_at: datetime, upserts_per_s: float = 0.0) -> GraphWriter:
    """Write one partition's prediction rows with its own connection, always closed, at most
    `upserts_per_s` upserts a second (0: no limit); the writer holds the counts and the
    failed rows."""
    connection = GremlinConnection(graph)
    writer = GraphWriter(connection, graph, upserts_per_s)
    try:
        for chunk in chunks(rows, graph.rows_per_flush):
            writer.write_predictions(chunk, model_tag, run_id, written_at)
    finally:
        connection.close()
    return writer


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
