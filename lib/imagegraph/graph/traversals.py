"""Batch upsert traversals: many vertices or edges in one request, as Gremlin bytecode.

Each batch is one `inject(rows).unfold()` followed by `mergeV`/`mergeE` keyed by `T.id`, so the
request carries data as values, never as Gremlin text, and its step count does not grow with
the batch. Vertex properties on match are written with `Cardinality.single` (Neptune's default
is `set`). Each traversal ends in `count()`, so the response is one number.
"""
from __future__ import annotations

from typing import Sequence

from gremlin_python.process.graph_traversal import GraphTraversalSource, __
from gremlin_python.process.traversal import CardinalityValue, Direction, Merge, T

from imagegraph.graph.elements import EdgeRecord, VertexRecord


def upsert_vertices(g: GraphTraversalSource, vertices: Sequence[VertexRecord]) -> int:
    """Create or update `vertices` in one request; returns how many the server merged."""
    rows = [{
        "match": {T.id: v.id},
        "create": {T.id: v.id, T.label: v.label, **v.properties},
        "update": {key: CardinalityValue.single(value) for key, value in v.properties.items()},
    } for v in vertices]
    return (g.inject(rows).unfold()
            .merge_v(__.select("match"))
            .option(Merge.on_create, __.select("create"))
            .option(Merge.on_match, __.select("update"))
            .count().next())


def upsert_edges(g: GraphTraversalSource, edges: Sequence[EdgeRecord]) -> int:
    """Create or update `edges` in one request; both end vertices must exist already."""
    rows = [{
        "match": {T.id: e.id, T.label: e.label, Direction.OUT: e.out_id, Direction.IN: e.in_id},
        "properties": dict(e.properties),
    } for e in edges]
    return (g.inject(rows).unfold()
            .merge_e(__.select("match"))
            .option(Merge.on_create, __.select("properties"))
            .option(Merge.on_match, __.select("properties"))
            .count().next())
