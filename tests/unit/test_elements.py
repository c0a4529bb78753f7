from datetime import datetime, timezone

from imagegraph.graph.elements import classified_as_edges, image_vertex, model_elements
from imagegraph.model_artifact import ModelMetadata

METADATA = ModelMetadata(name="digits", version="v1", input_height=32, input_width=32,
                         channels=1, preprocessing="scale_0_1", classes=("0", "1", "2"),
                         uri="s3a://b/models/digits/v1")
AT = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
ROW = {"uri": "s3://b/in/x.png", "bucket": "b", "key": "in/x.png", "bytes": 123, "width": 32,
       "height": 30, "format": "PNG", "sha256": "ab" * 32, "labels": ["2", "0"],
       "scores": [0.9, 0.05]}


def test_model_elements_ids():
    vertices, edges = model_elements(METADATA)
    assert [v.id for v in vertices] == ["model:digits@v1", "class:0", "class:1", "class:2"]
    assert vertices[0].properties == {"name": "digits", "version": "v1",
                                      "uri": "s3a://b/models/digits/v1",
                                      "input_size": "32x32x1", "num_classes": 3}
    assert [(e.id, e.out_id, e.in_id) for e in edges][0] == (
        "model:digits@v1|has_class|class:0", "model:digits@v1", "class:0")


def test_image_vertex_properties():
    vertex = image_vertex(ROW, "digits@v1", "run-1", AT)
    assert (vertex.id, vertex.label) == ("s3://b/in/x.png", "image")
    assert vertex.properties["key"] == "in/x.png"
    assert vertex.properties["width"] == 32 and vertex.properties["height"] == 30
    assert vertex.properties["model"] == "digits@v1"
    assert vertex.properties["updated_at"] == AT


def test_classified_as_edges_rank_best_first():
    edges = classified_as_edges(ROW, "digits@v1", "run-1", AT)
    assert [e.id for e in edges] == ["s3://b/in/x.png|digits@v1|2", "s3://b/in/x.png|digits@v1|0"]
    assert [e.in_id for e in edges] == ["class:2", "class:0"]
    assert [(e.properties["rank"], e.properties["score"]) for e in edges] == [(1, 0.9), (2, 0.05)]


def test_image_vertex_owns_exactly_its_top_k_edges_of_its_model():
    vertex = image_vertex(ROW, "digits@v1", "run-1", AT)
    assert vertex.owned_edges.label == "classified_as"
    assert vertex.owned_edges.model == "digits@v1"
    assert vertex.owned_edges.keep == tuple(
        e.id for e in classified_as_edges(ROW, "digits@v1", "run-1", AT))


def test_every_record_is_exactly_the_graph_model():
    """Whole records, labels and property names included: they are the graph's schema."""
    from imagegraph.graph.elements import EdgeRecord, OwnedEdges, VertexRecord
    vertices, edges = model_elements(METADATA)
    assert vertices[1:] == [VertexRecord(f"class:{n}", "class", {"name": n}) for n in "012"]
    assert vertices[0].label == "model"
    assert edges == [EdgeRecord(f"model:digits@v1|has_class|class:{n}", "has_class",
                                "model:digits@v1", f"class:{n}") for n in "012"]
    keep = ("s3://b/in/x.png|digits@v1|2", "s3://b/in/x.png|digits@v1|0")
    assert image_vertex(ROW, "digits@v1", "run-1", AT) == VertexRecord(
        "s3://b/in/x.png", "image",
        {"uri": "s3://b/in/x.png", "bucket": "b", "key": "in/x.png", "bytes": 123, "width": 32,
         "height": 30, "format": "PNG", "sha256": "ab" * 32, "model": "digits@v1",
         "run_id": "run-1", "updated_at": AT},
        OwnedEdges("classified_as", "digits@v1", keep))
    assert classified_as_edges(ROW, "digits@v1", "run-1", AT) == [
        EdgeRecord(keep[0], "classified_as", "s3://b/in/x.png", "class:2",
                   {"score": 0.9, "rank": 1, "model": "digits@v1", "run_id": "run-1",
                    "inferred_at": AT}),
        EdgeRecord(keep[1], "classified_as", "s3://b/in/x.png", "class:0",
                   {"score": 0.05, "rank": 2, "model": "digits@v1", "run_id": "run-1",
                    "inferred_at": AT})]
