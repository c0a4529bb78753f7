from imagegraph.graph.elements import EdgeRecord, VertexRecord
from imagegraph.graph.traversals import MERGE_STEPS_PER_REQUEST, coalesce_steps, pack, records


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
