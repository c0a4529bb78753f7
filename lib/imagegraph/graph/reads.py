"""Gremlin reads outside the writers (a run's read-back, the query command): every request goes
through a `GraphWriter`'s `run` over one connection, so its failures are classified, retried
and stopped exactly as the writers' are, and a stop or a failed read is a `JobError` of one
line (exit 2): a permission problem reads the same whenever it happens."""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from gremlin_python.process.graph_traversal import GraphTraversal

from imagegraph.config import GraphConfig
from imagegraph.errors import JobError
from imagegraph.graph.connection import GremlinConnection
from imagegraph.graph.writer import GraphWriter, RequestFailed, WriterStopped

READS = "graph reads"


def read_graph(graph: GraphConfig, requests: Iterable[GraphTraversal]) -> Iterator[list[Any]]:
    """The results of each traversal of `requests` (built on `traversals.SOURCE`), in order,
    over one connection, closed at the end; `JobError` with one line when one fails."""
    connection = GremlinConnection(graph)
    reader = GraphWriter(connection, graph, quiet=True, activity=READS)
    try:
        for request in requests:
            yield reader.run(request)
    except WriterStopped as stopped:
        raise JobError(str(stopped)) from None
    except RequestFailed as failed:
        raise JobError(f"{READS} to {graph.endpoint} failed: {failed}") from None
    finally:
        connection.close()
