"""The partition writer: prediction rows in, image vertices and classified_as edges upserted in
batches, with the retry policy of `retry`; rows that cannot be written are returned with the
reason instead of failing the task."""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from imagegraph.graph.connection import GremlinConnection
from imagegraph.graph.elements import classified_as_edges, image_vertex
from imagegraph.graph.retry import Recovery, RetryPolicy, recovery_for
from imagegraph.graph.traversals import upsert_edges, upsert_vertices

log = logging.getLogger(__name__)


@dataclass
class WriteStats:
    """What one writer did. `failed` holds (image uri, reason) of rows not written."""

    rows_written: int = 0
    vertices: int = 0
    edges: int = 0
    requests: int = 0
    retries: int = 0
    failed: list = field(default_factory=list)


class RequestFailed(Exception):
    """A request failed for good; `recovery` says whether the request itself was at fault."""

    def __init__(self, cause: BaseException, recovery: Recovery, attempts: int):
        super().__init__(f"{type(cause).__name__}: {cause} (after {attempts} attempt(s))")
        self.recovery = recovery


class GraphWriter:
    """Writes elements through one `GremlinConnection`, retrying by `policy`."""

    def __init__(self, connection: GremlinConnection, policy: RetryPolicy,
                 sleep: Callable[[float], None] = time.sleep, rng: random.Random | None = None):
        self.connection = connection
        self.policy = policy
        self.stats = WriteStats()
        self._sleep = sleep
        self._rng = rng or random.Random()

    def submit(self, upsert: Callable, records: Sequence) -> int:
        """Run `upsert(g, records)` until it succeeds or the policy gives up (`RequestFailed`)."""
        attempt = 0
        while True:
            attempt += 1
            self.stats.requests += 1
            try:
                if self.connection.g is None:
                    self.connection.open()
                return upsert(self.connection.g, records)
            except Exception as exc:
                recovery = recovery_for(exc)
                if recovery is Recovery.GIVE_UP or attempt >= self.policy.max_attempts:
                    raise RequestFailed(exc, recovery, attempt) from exc
                delay = self.policy.delay_s(attempt, self._rng)
                log.warning("graph request failed (%s: %s); attempt %d of %d, %s in %.1fs",
                            type(exc).__name__, exc, attempt, self.policy.max_attempts,
                            recovery.value, delay)
                self.stats.retries += 1
                self._sleep(delay)
                if recovery is Recovery.RECONNECT:
                    self.connection.close()

    def write_predictions(self, rows: Sequence[Mapping], model_tag: str, run_id: str,
                          written_at: datetime) -> None:
        """Upsert the image vertices, then their classified_as edges, of `rows` (one batch).

        A batch the server rejects as malformed is split in halves until the bad rows are
        alone; those, and rows whose requests ran out of attempts, go to `stats.failed`.
        """
        vertices = [image_vertex(row, model_tag, run_id, written_at) for row in rows]
        edges = [edge for row in rows
                 for edge in classified_as_edges(row, model_tag, run_id, written_at)]
        try:
            self.stats.vertices += self.submit(upsert_vertices, vertices)
            if edges:
                self.stats.edges += self.submit(upsert_edges, edges)
        except RequestFailed as failure:
            if failure.recovery is Recovery.GIVE_UP and len(rows) > 1:
                middle = len(rows) // 2
                self.write_predictions(rows[:middle], model_tag, run_id, written_at)
                self.write_predictions(rows[middle:], model_tag, run_id, written_at)
                return
            log.error("graph write failed for %d row(s): %s", len(rows), failure)
            self.stats.failed.extend((row["uri"], f"graph write failed: {failure}")
                                     for row in rows)
            return
        self.stats.rows_written += len(rows)


def batches(rows: Iterable, size: int) -> Iterator[list]:
    """Consecutive lists of at most `size` items of `rows`."""
    batch: list = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch
