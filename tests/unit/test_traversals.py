from gremlin_python.process.traversal import Bytecode

from imagegraph.graph.elements import EdgeRecord, VertexRecord
from imagegraph.graph.traversals import (
    MERGE_STEPS_PER_REQUEST,
    coalesce_steps,
    drop_link_edges,
    pack,
    records,
    upsert_edges,
    upsert_edges_coalesce,
    upsert_vertices,
    upsert_vertices_coalesce,
)


def vertex(n: int, properties: int) -> VertexRecord:
    return VertexRecord(f"v{n}", "image", {f"p{i}": i for i in range(properties)})


def test_records_count_the_label_and_each_property():
    assert records(vertex(0, 11)) == 12
    assert records(EdgeRecord("e", "classified_as", "a", "b", {"score": 1.0})) == 2


def test_pack_keeps_requests_within_the_record_budget():
    elements = [vertex(n, 11) for n in range(50)]         # 12 records each
    requests = pack(elements, max_records=200, max_steps=1500, style="merge")
    assert [len(r) for r in requests] == [16, 16, 16, 2]  # 16 * 12 = 192 <= 200
    assert [e for r in requests for e in r] == elements   # order kept, nothing lost


def test_pack_keeps_coalesce_requests_within_the_step_budget():
    elements = [vertex(n, 11) for n in range(10)]         # 17 steps each
    requests = pack(elements, max_records=10_000, max_steps=52, style="coalesce")
    assert [len(r) for r in requests] == [3] * 3 + [1]
    assert all(1 + sum(coalesce_steps(e) for e in r) <= 52 for r in requests)


def test_an_element_over_the_budget_goes_alone():
    big = vertex(0, 300)
    assert pack([vertex(1, 1), big, vertex(2, 1)], 200, 1500, "merge") == [
        [vertex(1, 1)], [big], [vertex(2, 1)]]
    assert MERGE_STEPS_PER_REQUEST < 1500


def test_pack_starts_a_new_request_when_property_keys_change():
    a, b = VertexRecord("m", "model", {"name": "x"}), VertexRecord("c", "class", {"name": "y"})
    odd = VertexRecord("o", "model", {"name": "x", "version": "1"})
    assert pack([a, b, odd, a], 200, 1500, "merge") == [[a, b], [odd], [a]]


HOSTILE = "s3://b/x');g.V().drop().iterate();('.png"


def _walk(value, steps: list, values: list) -> None:
    """Collect the step names (`steps`) and plain argument values (`values`) of bytecode."""
    if isinstance(value, Bytecode):
        for name, *arguments in value.step_instructions:
            steps.append(name)
            _walk(arguments, steps, values)
    elif isinstance(value, dict):
        _walk(list(value.keys()) + list(value.values()), steps, values)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _walk(item, steps, values)
    else:
        values.append(value)


def _upserts(text: str):
    image = VertexRecord(text, "image", {"uri": text, "key": text})
    edge = EdgeRecord(f"{text}|m@1|c", "classified_as", text, "class:c", {"model": text})
    return [upsert_vertices([image]), upsert_edges([edge]), upsert_vertices_coalesce([image]),
            upsert_edges_coalesce([edge])]


def test_data_travels_as_bytecode_values_never_as_gremlin_text():
    """The steps of every upsert are the same whatever the data; the data is only ever an
    argument value, passed through unchanged (no quoting or escaping that could go wrong)."""
    for hostile, benign in zip(_upserts(HOSTILE), _upserts("s3://b/plain.png")):
        hostile_steps, hostile_values, benign_steps, benign_values = [], [], [], []
        _walk(hostile.bytecode, hostile_steps, hostile_values)
        _walk(benign.bytecode, benign_steps, benign_values)
        assert hostile_steps == benign_steps and "drop" not in hostile_steps
        assert HOSTILE in hostile_values
        assert len(hostile_values) == len(benign_values)


def test_vertices_that_own_edges_never_share_a_request_with_others():
    from imagegraph.graph.elements import OwnedEdges

    plain = VertexRecord("a", "image", {"k": 1})
    owning = VertexRecord("b", "image", {"k": 1}, OwnedEdges("classified_as", "m@1", ("x",)))
    other_model = VertexRecord("c", "image", {"k": 1}, OwnedEdges("classified_as", "m@2", ()))
    assert pack([plain, owning, owning, other_model], 200, 1500, "merge") == [
        [plain], [owning, owning], [other_model]]


def _gremlin(traversal) -> str:
    """The traversal's bytecode as Gremlin text, to compare whole traversals in tests."""
    from gremlin_python.process.translator import Translator
    return Translator("g").translate(traversal.bytecode)


def _owning(n: int, keep: tuple) -> VertexRecord:
    from imagegraph.graph.elements import OwnedEdges
    return VertexRecord(f"s3://b/{n}.png", "image", {"uri": f"s3://b/{n}.png", "width": n},
                        OwnedEdges("classified_as", "m@1", keep))


_MATCH_A = ("{'match': {<T.id: 1>: 's3://b/1.png'}, 'create': {<T.id: 1>: 's3://b/1.png', "
            "<T.label: 4>: 'image'}, 'properties': {'uri': 's3://b/1.png', 'width': 1}, "
            "'keep': ['e1', 'e2']}")
_MATCH_B = ("{'match': {<T.id: 1>: 's3://b/2.png'}, 'create': {<T.id: 1>: 's3://b/2.png', "
            "<T.label: 4>: 'image'}, 'properties': {'uri': 's3://b/2.png', 'width': 2}, "
            "'keep': []}")


def test_upsert_vertices_is_exactly_mergev_properties_and_the_owned_edge_drop():
    assert _gremlin(upsert_vertices([_owning(1, ("e1", "e2")), _owning(2, ())])) == (
        f"g.inject([{_MATCH_A},{_MATCH_B}]).unfold().as('row')"
        ".mergeV(__.select('match')).option(Merge.onCreate,__.select('create'))"
        ".option(Merge.onMatch,[:])"
        ".property(Cardinality.single,'uri',__.select('row').select('properties').select('uri'))"
        ".property(Cardinality.single,'width',"
        "__.select('row').select('properties').select('width'))"
        ".sideEffect(__.outE('classified_as').has('model','m@1').not(__.id().as('edge_id')"
        ".select('row').select('keep').unfold().where(eq('edge_id'))).drop()).count()")
    assert _gremlin(upsert_vertices([VertexRecord("v", "model", {"name": "x"})])) == (
        "g.inject([{'match': {<T.id: 1>: 'v'}, 'create': {<T.id: 1>: 'v', <T.label: 4>: "
        "'model'}, 'properties': {'name': 'x'}}]).unfold().as('row')"
        ".mergeV(__.select('match')).option(Merge.onCreate,__.select('create'))"
        ".option(Merge.onMatch,[:])"
        ".property(Cardinality.single,'name',__.select('row').select('properties')"
        ".select('name')).count()")


def test_upsert_vertices_refuses_mixed_shapes():
    import pytest
    with pytest.raises(ValueError, match="^vertices of one request must share their property "
                                         "keys and owned-edge scope$"):
        upsert_vertices([_owning(1, ()), VertexRecord("v", "image", {"uri": "u", "width": 1})])


def test_upsert_edges_is_exactly_one_mergee():
    edge = EdgeRecord("e1", "classified_as", "s3://b/1.png", "class:cat",
                      {"model": "m@1", "score": 0.5})
    assert _gremlin(upsert_edges([edge])) == (
        "g.inject([{'match': {<T.id: 1>: 'e1', <T.label: 4>: 'classified_as', "
        "<Direction.OUT: 'OUT'>: 's3://b/1.png', <Direction.IN: 'IN'>: 'class:cat'}, "
        "'properties': {'model': 'm@1', 'score': 0.5}}]).unfold().mergeE(__.select('match'))"
        ".option(Merge.onCreate,__.select('properties'))"
        ".option(Merge.onMatch,__.select('properties')).count()")


def test_drop_link_edges_drops_the_content_edge_and_the_models_link_edges_alone():
    assert _gremlin(drop_link_edges(["s3://b/1.png", "s3://b/2.png"], "m@1")) == (
        "g.V('s3://b/1.png','s3://b/2.png')"
        ".sideEffect(__.union(__.outE('has_content'),"
        "__.bothE('near_duplicate','similar_to').has('model','m@1')).drop()).count()")


def test_coalesce_upserts_are_exactly_the_fold_coalesce_idiom():
    assert _gremlin(upsert_vertices_coalesce([_owning(1, ("e1", "e2")),
                                              VertexRecord("v", "model", {"name": "x"})])) == (
        "g.V('s3://b/1.png').fold().coalesce(__.unfold(),"
        "__.addV('image').property(T.id,'s3://b/1.png'))"
        ".property(Cardinality.single,'uri','s3://b/1.png')"
        ".property(Cardinality.single,'width',1)"
        ".sideEffect(__.outE('classified_as').has('model','m@1').hasId(without(['e1','e2']))"
        ".drop())"
        ".V('v').fold().coalesce(__.unfold(),__.addV('model').property(T.id,'v'))"
        ".property(Cardinality.single,'name','x').count()")
    first = EdgeRecord("e1", "classified_as", "a", "class:cat", {"score": 0.5})
    second = EdgeRecord("e2", "similar_to", "b", "c", {})
    assert _gremlin(upsert_edges_coalesce([first, second])) == (
        "g.V('a').outE('classified_as').hasId('e1').fold().coalesce(__.unfold(),"
        "__.addE('classified_as').from(__.V('a')).to(__.V('class:cat')).property(T.id,'e1'))"
        ".property('score',0.5d)"
        ".V('b').outE('similar_to').hasId('e2').fold().coalesce(__.unfold(),"
        "__.addE('similar_to').from(__.V('b')).to(__.V('c')).property(T.id,'e2')).count()")


def _step_count(traversal) -> int:
    steps: list = []
    _walk(traversal.bytecode, steps, [])
    return len(steps)


def test_step_counts_are_those_of_the_traversals_built():
    """What `pack` budgets is what the upserts send: merge_request_steps for a merge request
    of any size, 1 + coalesce_steps per element for a coalesce request."""
    from imagegraph.graph.traversals import merge_request_steps
    plain = VertexRecord("v", "model", {"name": "x", "version": "1"})
    edge = EdgeRecord("e1", "classified_as", "a", "b", {"score": 0.5, "rank": 1})
    for element, upsert in ((_owning(1, ("e1",)), upsert_vertices), (plain, upsert_vertices),
                            (edge, upsert_edges)):
        assert _step_count(upsert([element] * 3)) == merge_request_steps(element)
    for elements, upsert in (([_owning(1, ()), plain], upsert_vertices_coalesce),
                             ([edge, edge], upsert_edges_coalesce)):
        assert _step_count(upsert(elements)) == 1 + sum(coalesce_steps(e) for e in elements)


def test_pack_fills_a_request_to_exactly_its_record_budget():
    elements = [vertex(n, 11) for n in range(4)]          # 12 records each
    assert [len(r) for r in pack(elements, 48, 1500, "merge")] == [4]
    assert [len(r) for r in pack(elements, 47, 1500, "merge")] == [3, 1]


def test_merge_requests_do_not_grow_in_steps_but_one_over_the_budget_goes_alone():
    from imagegraph.graph.traversals import merge_request_steps
    elements = [vertex(n, 2) for n in range(2000)]
    budget = merge_request_steps(elements[0])             # 9 + 4 * 2
    assert [len(r) for r in pack(elements, 10**6, budget, "merge")] == [2000]
    assert [len(r) for r in pack(elements[:3], 10**6, budget - 1, "merge")] == [1, 1, 1]


def test_vertices_and_edges_never_share_a_request():
    v = VertexRecord("a", "image", {"k": 1})
    e = EdgeRecord("e", "classified_as", "a", "b", {"k": 1})
    assert pack([v, e], 200, 1500, "merge") == [[v], [e]]
