"""Batch upsert traversals, as Gremlin bytecode (never Gremlin text built from data).

Two styles, one pair of functions each, chosen by `graph.upsert_style`:

- merge: one `inject(rows).unfold()` followed by `mergeV`/`mergeE` keyed by `T.id`. The data
  travels as plain values and the step count does not grow with the batch. A vertex is created
  with its id and label, then every property is set by a `property(single, key, value)` step
  reading the row (Neptune's default cardinality is `set`): one traversal for create and update,
  cheaper to send and to run than a `CardinalityValue` per value. A vertex that owns edges
  (`OwnedEdges`) then drops those of them whose id its row does not keep. The vertices of one
  request share their property keys and owned-edge scope (`pack` sees to it).
- coalesce: the `V(id).fold().coalesce(unfold(), addV(...))` idiom chained element after
  element, for engines without mergeV; steps grow with the batch.

Each builds the traversal for one request, unexecuted, from the unbound source `SOURCE`; the
connection submits its bytecode. Responses stay one number long.
"""
from __future__ import annotations

from typing import Callable, Sequence, Union

from gremlin_python.process.graph_traversal import GraphTraversal, __
from gremlin_python.process.traversal import Cardinality, Direction, Merge, P, T
from gremlin_python.structure.graph import Graph

from imagegraph.graph.elements import (
    CLASSIFIED_AS,
    HAS_CONTENT,
    MODEL_LINK_EDGE_LABELS,
    EdgeRecord,
    VertexRecord,
)

Element = Union[VertexRecord, EdgeRecord]
MERGE_STEPS_PER_REQUEST = 9       # inject unfold merge option option count, 3 selects or 2 and as
OWNED_EDGES_MERGE_STEPS = 11      # sideEffect outE has not id as select select unfold where drop
OWNED_EDGES_COALESCE_STEPS = 5    # sideEffect outE has hasId drop
SOURCE = Graph().traversal()
"""Builds bytecode only; nothing here talks to a server."""


def records(element: Element) -> int:
    """Neptune's unit of request size: the label, plus one per property."""
    return 1 + len(element.properties)


def coalesce_steps(element: Element) -> int:
    """Steps an element adds to a coalesce-style traversal."""
    if isinstance(element, VertexRecord):
        owned = OWNED_EDGES_COALESCE_STEPS if element.owned_edges else 0
        return 6 + len(element.properties) + owned  # V fold coalesce unfold addV property(id)
    return 12 + len(element.properties)  # V outE hasId fold coalesce unfold addE from V to V
                                         # property(id)


def upsert_vertices(vertices: Sequence[VertexRecord]) -> GraphTraversal:
    """mergeV every vertex in one request, then drop the owned edges it does not keep; all
    must have the same property keys and owned-edge scope."""
    keys = list(vertices[0].properties)
    owned = vertices[0].owned_edges
    if any(_shape(v) != _shape(vertices[0]) for v in vertices):
        raise ValueError("vertices of one request must share their property keys and "
                         "owned-edge scope")
    rows = [{"match": {T.id: v.id}, "create": {T.id: v.id, T.label: v.label},
             "properties": v.properties, **({"keep": list(v.owned_edges.keep)} if owned else {})}
            for v in vertices]
    traversal = (SOURCE.inject(rows).unfold().as_("row")
                 .merge_v(__.select("match"))
                 .option(Merge.on_create, __.select("create"))
                 .option(Merge.on_match, {}))
    for key in keys:
        traversal = traversal.property(Cardinality.single, key,
                                       __.select("row").select("properties").select(key))
    if owned:
        kept = __.id_().as_("edge_id").select("row").select("keep").unfold() \
            .where(P.eq("edge_id"))
        traversal = traversal.side_effect(
            __.out_e(owned.label).has("model", owned.model).not_(kept).drop())
    return traversal.count()


def upsert_edges(edges: Sequence[EdgeRecord]) -> GraphTraversal:
    """mergeE every edge in one request; both end vertices must exist already."""
    rows = [{
        "match": {T.id: e.id, T.label: e.label, Direction.OUT: e.out_id, Direction.IN: e.in_id},
        "properties": dict(e.properties),
    } for e in edges]
    return (SOURCE.inject(rows).unfold()
            .merge_e(__.select("match"))
            .option(Merge.on_create, __.select("properties"))
            .option(Merge.on_match, __.select("properties"))
            .count())


def upsert_vertices_coalesce(vertices: Sequence[VertexRecord]) -> GraphTraversal:
    """The fold/coalesce/unfold idiom, one vertex after the other, in one request."""
    traversal = None
    for v in vertices:
        traversal = SOURCE.V(v.id) if traversal is None else traversal.V(v.id)
        traversal = traversal.fold().coalesce(__.unfold(),
                                              __.add_v(v.label).property(T.id, v.id))
        for key, value in v.properties.items():
            traversal = traversal.property(Cardinality.single, key, value)
        if v.owned_edges:
            traversal = traversal.side_effect(
                __.out_e(v.owned_edges.label).has("model", v.owned_edges.model)
                .has_id(P.without(list(v.owned_edges.keep))).drop())
    return traversal.count()


def upsert_edges_coalesce(edges: Sequence[EdgeRecord]) -> GraphTraversal:
    """The fold/coalesce/unfold idiom for edges, one after the other, in one request."""
    traversal = None
    for e in edges:
        traversal = SOURCE.V(e.out_id) if traversal is None else traversal.V(e.out_id)
        traversal = traversal.out_e(e.label).has_id(e.id).fold().coalesce(
            __.unfold(),
            __.add_e(e.label).from_(__.V(e.out_id)).to(__.V(e.in_id)).property(T.id, e.id))
        for key, value in e.properties.items():
            traversal = traversal.property(key, value)
    return traversal.count()


def drop_stale_edges(vertices: Sequence[VertexRecord]) -> GraphTraversal:
    """Drop the out-edges the `vertices` own (`OwnedEdges`, one scope for all) whose ids none of
    them keeps: what `upsert_vertices` does after its mergeV, for vertices written another way
    (Neptune's bulk loader, which only adds). An edge id names its out-vertex, so one id list
    for the whole request keeps each vertex's own edges."""
    owned = vertices[0].owned_edges
    if any(v.owned_edges is None or (v.owned_edges.label, v.owned_edges.model)
           != (owned.label, owned.model) for v in vertices):
        raise ValueError("vertices of one request must share their owned-edge scope")
    keep = [edge_id for v in vertices for edge_id in v.owned_edges.keep]
    return (SOURCE.V(*[v.id for v in vertices]).out_e(owned.label).has("model", owned.model)
            .has_id(P.without(keep)).drop())


def run_images(image_ids: Sequence[str], run_id: str) -> GraphTraversal:
    """Read back the image vertices among `image_ids`: a map per vertex found, with its `id`,
    its `sha256` values (a list) and the ids of its classified_as edges whose `run_id` is
    `run_id` (a list)."""
    return (SOURCE.V(*image_ids).has_label("image").project("id", "sha256", "edges")
            .by(T.id).by(__.values("sha256").fold())
            .by(__.out_e(CLASSIFIED_AS).has("run_id", run_id).id_().fold()))


def delete_probe(vertex_id: str) -> GraphTraversal:
    """A request with the `drop()` an image upsert holds (its stale classified_as edges), that
    drops nothing at `vertex_id` (a model vertex, which has no classified_as edges): on Neptune
    it needs the DeleteDataViaQuery permission the writers need, so the startup probe finds a
    role without it before any image is written."""
    return SOURCE.V(vertex_id).out_e(CLASSIFIED_AS).drop().count()


def drop_link_edges(image_ids: Sequence[str], model_tag: str) -> GraphTraversal:
    """Drop the link job's edges of model `model_tag` at the image vertices `image_ids`, in or
    out, in one request, before the job writes them anew: their has_content edges and their
    near_duplicate and similar_to edges whose `model` is `model_tag` (another model's stay);
    counts the vertices found."""
    return SOURCE.V(*image_ids).side_effect(__.union(
        __.out_e(HAS_CONTENT),
        __.both_e(*MODEL_LINK_EDGE_LABELS).has("model", model_tag)).drop()).count()


def _shape(element: Element) -> tuple:
    """What the elements of one request must share."""
    owned = getattr(element, "owned_edges", None)
    return (type(element), tuple(element.properties),
            (owned.label, owned.model) if owned else None)


Upsert = Callable[[Sequence], GraphTraversal]
UPSERTS: dict[str, tuple[Upsert, Upsert]] = {
    "merge": (upsert_vertices, upsert_edges),
    "coalesce": (upsert_vertices_coalesce, upsert_edges_coalesce),
}
"""(vertex upsert, edge upsert) by `graph.upsert_style`."""


def merge_request_steps(element: Element) -> int:
    """Steps of a merge-style request of elements like `element`, whatever their number."""
    if isinstance(element, VertexRecord):
        owned = OWNED_EDGES_MERGE_STEPS if element.owned_edges else 0
        return MERGE_STEPS_PER_REQUEST + 4 * len(element.properties) + owned  # property, 3 selects
    return MERGE_STEPS_PER_REQUEST


def pack(elements: Sequence[Element], max_records: int, max_steps: int,
         style: str) -> list[list[Element]]:
    """Split `elements` into consecutive requests within `max_records` records and
    `max_steps` steps each, of one kind and one set of property keys per request; an element
    larger than a whole request goes alone."""
    requests: list[list[Element]] = []
    current: list[Element] = []
    used_records = used_steps = 0
    for element in elements:
        size = records(element)
        steps = coalesce_steps(element) if style == "coalesce" else 0
        if current and (used_records + size > max_records or used_steps + steps > max_steps
                        or _shape(element) != _shape(current[0])):
            requests.append(current)
            current = []
        if not current:
            used_records = 0
            used_steps = merge_request_steps(element) if style == "merge" else 1
        current.append(element)
        used_records += size
        used_steps += steps
    if current:
        requests.append(current)
    return requests
