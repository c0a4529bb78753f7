from dataclasses import replace

from imagegraph.graph.elements import (
    EdgeRecord,
    OwnedEdges,
    VertexRecord,
    classified_as_edges,
    classified_as_id,
    content_elements,
    edge_id,
    image_vertex,
    model_elements,
    near_duplicate_edge,
    similar_to_edge,
)
from imagegraph.model.artifact import ModelMetadata

METADATA = ModelMetadata(name="digits", version="v1", input_height=32, input_width=32,
                         channels=1, preprocessing="scale_0_1", classes=("0", "1", "2"),
                         uri="s3a://b/models/digits/v1")
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


def test_model_vertex_carries_four_lineage_values_and_no_other():
    lineage = {"training_input": "s3a://b/train/", "data_fingerprint": "f" * 64,
               "imagegraph_version": "0.1.0", "trained_at": "2026-12-06T20:00:00Z",
               "seed": 7, "learning_rate": 0.002, "images": {"train": 3}}
    vertex = model_elements(replace(METADATA, lineage=lineage))[0][0]
    assert vertex.properties == {"name": "digits", "version": "v1",
                                 "uri": "s3a://b/models/digits/v1", "input_size": "32x32x1",
                                 "num_classes": 3, "training_input": "s3a://b/train/",
                                 "data_fingerprint": "f" * 64, "imagegraph_version": "0.1.0",
                                 "trained_at": "2026-12-06T20:00:00Z"}


def test_classified_as_edges_in_score_order_with_their_class():
    edges = classified_as_edges(ROW, "digits@v1", "run-1")
    assert [e.id for e in edges] == ["s3://b/in/x.png|digits@v1|2", "s3://b/in/x.png|digits@v1|0"]
    assert [e.in_id for e in edges] == ["class:2", "class:0"]
    assert [e.properties["score"] for e in edges] == [0.9, 0.05]


def test_image_vertex_owns_exactly_its_top_k_edges_of_its_model():
    vertex = image_vertex(ROW, "digits@v1")
    assert vertex.owned_edges.label == "classified_as"
    assert vertex.owned_edges.model == "digits@v1"
    assert vertex.owned_edges.keep == tuple(
        e.id for e in classified_as_edges(ROW, "digits@v1", "run-1"))


def test_a_threshold_keeps_the_classes_at_or_above_it():
    row = {**ROW, "labels": ["2", "0", "1"], "scores": [0.6, 0.3, 0.1], "min_score": 0.3}
    edges = classified_as_edges(row, "digits@v1", "run-1")
    assert [(e.in_id, e.properties["score"]) for e in edges] == [("class:2", 0.6),
                                                                 ("class:0", 0.3)]
    assert image_vertex(row, "digits@v1").owned_edges.keep == tuple(e.id for e in edges)
    # no threshold (0, or a row without one): every top-k class
    assert len(classified_as_edges({**row, "min_score": 0.0}, "digits@v1", "run-1")) == 3


def test_an_image_under_the_threshold_has_one_edge_to_unknown_with_its_best_score():
    row = {**ROW, "min_score": 0.95}
    assert classified_as_edges(row, "digits@v1", "run-1") == [
        EdgeRecord("s3://b/in/x.png|digits@v1|unknown", "classified_as", "s3://b/in/x.png",
                   "class:unknown", {"score": 0.9, "model": "digits@v1", "run_id": "run-1"})]
    # the upsert drops the image's edges to the classes it had before
    assert image_vertex(row, "digits@v1").owned_edges.keep == (
        "s3://b/in/x.png|digits@v1|unknown",)


def test_the_unknown_class_vertex_is_no_class_of_the_model():
    vertices, edges = model_elements(METADATA, unknown=True)
    assert vertices[-1] == VertexRecord("class:unknown", "class", {"name": "unknown"})
    assert [v.id for v in vertices[1:-1]] == ["class:0", "class:1", "class:2"]
    assert edges == model_elements(METADATA)[1]  # no has_class edge to it


def test_every_record_is_exactly_the_graph_model():
    """Whole records, labels and property names included: they are the graph's schema."""
    vertices, edges = model_elements(METADATA)
    assert vertices[1:] == [VertexRecord(f"class:{n}", "class", {"name": n}) for n in "012"]
    assert vertices[0].label == "model"
    assert edges == [EdgeRecord(f"model:digits@v1|has_class|class:{n}", "has_class",
                                "model:digits@v1", f"class:{n}") for n in "012"]
    keep = ("s3://b/in/x.png|digits@v1|2", "s3://b/in/x.png|digits@v1|0")
    assert image_vertex(ROW, "digits@v1") == VertexRecord(
        "s3://b/in/x.png", "image", {"sha256": "ab" * 32},
        OwnedEdges("classified_as", "digits@v1", keep))
    assert classified_as_edges(ROW, "digits@v1", "run-1") == [
        EdgeRecord(keep[0], "classified_as", "s3://b/in/x.png", "class:2",
                   {"score": 0.9, "model": "digits@v1", "run_id": "run-1"}),
        EdgeRecord(keep[1], "classified_as", "s3://b/in/x.png", "class:0",
                   {"score": 0.05, "model": "digits@v1", "run_id": "run-1"})]


def test_records_per_image():
    """Neptune stores a label and each property as one record: 2 for the image vertex and 4
    for each classified_as edge, 14 for top-3 (30 before the properties were audited, 15 while
    the vertex also held the run id)."""
    row = {**ROW, "labels": ["2", "0", "1"], "scores": [0.9, 0.05, 0.05]}
    records = [1 + len(element.properties) for element in
               [image_vertex(row, "digits@v1"),
                *classified_as_edges(row, "digits@v1", "run-1")]]
    assert sum(records) == 14


def test_link_records_are_exactly_the_graph_model():
    """Ids in the README's graph model; a pair's edge is the same whichever image found it."""
    a, b = "s3://b/x/b.jpg", "s3://b/x/a.jpg"
    content, has_content = content_elements(a, "cd" * 32)
    assert content == VertexRecord("content:" + "cd" * 32, "content")
    assert has_content == EdgeRecord(f"{a}|has_content|content:{'cd' * 32}", "has_content", a,
                                     "content:" + "cd" * 32)
    assert near_duplicate_edge(a, b, 3, "digits@v1") == near_duplicate_edge(
        b, a, 3, "digits@v1") == EdgeRecord(f"{b}|near_duplicate|{a}|digits@v1",
                                            "near_duplicate", b, a,
                                            {"distance": 3, "model": "digits@v1"})
    assert similar_to_edge(a, b, 0.25, "digits@v1") == similar_to_edge(
        b, a, 0.25, "digits@v1") == EdgeRecord(f"{b}|similar_to|{a}|digits@v1", "similar_to", b,
                                               a, {"distance": 0.25, "model": "digits@v1"})


def test_edge_ids_of_different_parts_never_collide():
    # joined raw, both pairs were one id: "s3://b/a|m@1|x|cat"
    assert classified_as_id("s3://b/a|m@1|x", "m@1", "cat") \
        != classified_as_id("s3://b/a", "m@1", "x|m@1|cat")
    assert edge_id("a|b", "c") != edge_id("a", "b|c")
    assert edge_id("a%7Cb", "c") != edge_id("a|b", "c")  # an escape in a key is escaped too
    assert edge_id("a|b", "c") == "a%7Cb|c" and edge_id("a%b") == "a%25b"


def test_edge_ids_of_plain_parts_are_the_parts_joined():
    assert classified_as_id("s3://b/in/x.png", "digits@v1", "2") == "s3://b/in/x.png|digits@v1|2"
