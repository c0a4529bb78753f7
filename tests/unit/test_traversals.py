from gremlin_python.process.traversal import Bytecode

from imagegraph.graph.elements import EdgeRecord, VertexRecord
from imagegraph.graph.traversals import (MERGE_STEPS_PER_REQUEST, coalesce_steps, pack, records,
                                         upsert_edges, upsert_edges_coalesce, upsert_vertices,
                                         upsert_vertices_coalesce)


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
    elements = [vertex(n, 11) for n in range(10)]         # 16 steps each
    requests = pack(elements, max_records=10_000, max_steps=50, style="coalesce")
    assert [len(r) for r in requests] == [3] * 3 + [1]
    assert all(1 + sum(coalesce_steps(e) for e in r) <= 50 for r in requests)


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
