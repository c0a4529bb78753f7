"""Batch upsert traversals, as Gremlin bytecode (never Gremlin text built from data).

Two styles, one pair of functions each, chosen by `graph.upsert_style`:

- merge: one `inject(rows).unfold()` followed by `mergeV`/`mergeE` keyed by `T.id`. The data
  travels as values and the step count does not grow with the batch. Vertex properties on
  match are written with `Cardinality.single` (Neptune's default is `set`).
- coalesce: the `V(id).fold().coalesce(unfold(), addV(...))` idiom chained element after
  element, for engines without mergeV; steps grow with the batch.

Each returns how many elements it upserted; responses stay one number long.
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

from gremlin_python.process.graph_traversal import GraphTraversalSource, __
from gremlin_python.process.traversal import Cardinality, CardinalityValue, Direction, Merge, T

from imagegraph.graph.elements import EdgeRecord, VertexRecord

Element = Union[VertexRecord, EdgeRecord]
MERGE_STEPS_PER_REQUEST = 8       # inject, unfold, merge, three selects, option targets, count


def records(element: Element) -> int:
    """Neptune's unit of request size: the label, plus one per property."""
    return 1 + len(element.properties)


def coalesce_steps(element: Element) -> int:
    """Steps an element adds to a coalesce-style traversal."""
    if isinstance(element, VertexRecord):
        return 5 + len(element.properties)      # V fold coalesce unfold addV(+id)
    return 9 + len(element.properties)          # V outE hasId fold coalesce unfold addE from to


def upsert_vertices(g: GraphTraversalSource, vertices: Sequence[VertexRecord]) -> int:
    """mergeV every vertex in one request."""
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
    """mergeE every edge in one request; both end vertices must exist already."""
    rows = [{
        "match": {T.id: e.id, T.label: e.label, Direction.OUT: e.out_id, Direction.IN: e.in_id},
        "properties": dict(e.properties),
    } for e in edges]
    return (g.inject(rows).unfold()
            .merge_e(__.select("match"))
            .option(Merge.on_create, __.select("properties"))
            .option(Merge.on_match, __.select("properties"))
            .count().next())


def upsert_vertices_coalesce(g: GraphTraversalSource, vertices: Sequence[VertexRecord]) -> int:
    """The fold/coalesce/unfold idiom, one vertex after the other, in one request."""
    traversal = None
    for v in vertices:
        traversal = g.V(v.id) if traversal is None else traversal.V(v.id)
        traversal = traversal.fold().coalesce(__.unfold(),
                                              __.add_v(v.label).property(T.id, v.id))
        for key, value in v.properties.items():
            traversal = traversal.property(Cardinality.single, key, value)
    traversal.iterate()
    return len(vertices)


def upsert_edges_coalesce(g: GraphTraversalSource, edges: Sequence[EdgeRecord]) -> int:
    """The fold/coalesce/unfold idiom for edges, one after the other, in one request."""
    traversal = None
    for e in edges:
        traversal = g.V(e.out_id) if traversal is None else traversal.V(e.out_id)
        traversal = traversal.out_e(e.label).has_id(e.id).fold().coalesce(
            __.unfold(),
            __.add_e(e.label).from_(__.V(e.out_id)).to(__.V(e.in_id)).property(T.id, e.id))
        for key, value in e.properties.items():
            traversal = traversal.property(key, value)
    traversal.iterate()
    return len(edges)


Upsert = Callable[[GraphTraversalSource, Sequence], int]
UPSERTS: dict[str, tuple[Upsert, Upsert]] = {
    "merge": (upsert_vertices, upsert_edges),
    "coalesce": (upsert_vertices_coalesce, upsert_edges_coalesce),
}
"""(vertex upsert, edge upsert) by `graph.upsert_style`."""


def pack(elements: Sequence[Element], max_records: int, max_steps: int,
         style: str) -> list[list[Element]]:
    """Split `elements` into consecutive requests within `max_records` records and
    `max_steps` steps each; an element larger than a whole request goes alone."""
    requests: list[list[Element]] = []
    current: list[Element] = []
    used_records = 0
    used_steps = MERGE_STEPS_PER_REQUEST if style == "merge" else 1
    for element in elements:
        size = records(element)
        steps = coalesce_steps(element) if style == "coalesce" else 0
        if current and (used_records + size > max_records or used_steps + steps > max_steps):
            requests.append(current)
            current, used_records = [], 0
            used_steps = MERGE_STEPS_PER_REQUEST if style == "merge" else 1
        current.append(element)
        used_records += size
        used_steps += steps
    if current:
        requests.append(current)
    return requests
