"""The partition writer against the real Gremlin Server: idempotent upserts, single values on
update, and a row the server rejects isolated into `failed` instead of failing the batch."""
from dataclasses import replace

import pytest
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import P, T

from imagegraph.graph import load
from imagegraph.graph.connection import GremlinConnection
from imagegraph.graph.elements import (
    VertexRecord,
    class_id,
    content_elements,
    near_duplicate_edge,
    similar_to_edge,
)
from imagegraph.graph.load import count_run_images, write_model
from imagegraph.graph.reads import read_graph
from imagegraph.graph.traversals import drop_link_edges
from imagegraph.graph.writer import GraphWriter, write_partition
from imagegraph.model.artifact import ModelMetadata

METADATA = ModelMetadata(name="m", version="1", input_height=8, input_width=8, channels=1,
                         preprocessing="scale_0_1", classes=("a", "b", "c"))


@pytest.fixture(autouse=True)
def empty_graph(graph):
    graph.V().drop().iterate()


def prediction(n: int, scores=(0.7, 0.2)) -> dict:
    return {"uri": f"s3://b/img{n}.png", "bucket": "b", "key": f"img{n}.png", "bytes": 100 + n,
            "width": 8, "height": 8, "format": "PNG", "sha256": f"{n:064x}",
            "labels": ["a", "b"], "scores": list(scores)}


def writer_for(config) -> GraphWriter:
    graph = replace(config.graph, max_attempts=3, retry_base_delay_s=0.01)
    return GraphWriter(GremlinConnection(graph), graph)


def test_the_local_graph_keeps_neptunes_default_cardinality_set(graph):
    """A plain property(k, v) adds a value, as on Neptune: a writer that forgot
    Cardinality.single would fail the single-value tests here."""
    graph.add_v("probe").property(T.id, "probe").iterate()
    graph.V("probe").property("k", 1).iterate()
    graph.V("probe").property("k", 2).iterate()
    assert sorted(graph.V("probe").values("k").to_list()) == [1, 2]


def test_same_batch_twice_changes_nothing(graph, config):
    write_model(config.graph, METADATA)
    writer = writer_for(config)
    rows = [prediction(n) for n in range(25)]
    writer.write_predictions(rows, "m@1", "run-1")
    writer.write_predictions(rows, "m@1", "run-1")
    writer.connection.close()
    assert writer.stats.rows_written == 50 and writer.failed == {} and writer.stats.failed_rows == 0
    assert graph.V().has_label("image").count().next() == 25
    assert graph.E().has_label("classified_as").count().next() == 50
    assert graph.V("s3://b/img7.png").values("sha256").to_list() == [f"{7:064x}"]
    assert graph.V().has_label("image").properties().count().next() == 25
    assert graph.E().has_label("classified_as").properties().count().next() == 50 * 3


def test_rerun_with_new_score_leaves_one_value(graph, config):
    write_model(config.graph, METADATA)
    writer = writer_for(config)
    writer.write_predictions([prediction(1, (0.6, 0.3))], "m@1", "run-1")
    writer.write_predictions([{**prediction(1, (0.9, 0.05)), "sha256": "f" * 64}], "m@1",
                             "run-2")  # the object overwritten with other bytes
    writer.connection.close()
    assert graph.V("s3://b/img1.png").properties("sha256").value().to_list() == ["f" * 64]
    assert graph.E("s3://b/img1.png|m@1|a").values("score").to_list() == [0.9]
    assert graph.E("s3://b/img1.png|m@1|b").element_map().next()["score"] == 0.05


def test_rejected_row_is_isolated_and_reported(graph, config):
    write_model(config.graph, METADATA)
    writer = writer_for(config)
    rows = [prediction(n) for n in range(8)]
    rows[5] = {**rows[5], "labels": ["a", "no-such-class"]}  # edge to a missing vertex
    writer.write_predictions(rows, "m@1", "run-1")
    writer.connection.close()
    assert list(writer.failed) == ["s3://b/img5.png"] and writer.stats.failed_rows == 1
    assert "Vertex id could not be resolved" in writer.failed["s3://b/img5.png"]
    assert writer.stats.rows_written == 7
    assert graph.V(class_id("no-such-class")).count().next() == 0
    edges_per_image = graph.V().has_label("image").group().by(T.id).by(
        __.out_e("classified_as").count()).next()
    assert {uri: n for uri, n in edges_per_image.items() if uri != "s3://b/img5.png"} == {
        f"s3://b/img{n}.png": 2 for n in range(8) if n != 5}
    # Each request is one transaction (as on Neptune): the failing requests leave nothing, but
    # img5's first edge may have gone in a request of its own while the batch was split; either
    # way the row is dead-lettered and a rerun completes it.
    assert edges_per_image["s3://b/img5.png"] <= 1



def test_linking_one_model_again_leaves_another_models_link_edges(graph, config):
    """Model A's near_duplicate and similar_to edges between two images, then model B's link
    run drops the images' link edges before writing its own: A's stay."""
    writer = writer_for(config)
    images = ["s3://b/x.png", "s3://b/y.png"]
    content, has_content = content_elements(images[0], "ab" * 32)
    writer.write_elements([VertexRecord(uri, "image") for uri in images] + [content], [])
    edges = [has_content] + [edge for model in ("A@1", "B@1") for edge in (
        near_duplicate_edge(*images, 2, model), similar_to_edge(*images, 0.1, model))]
    writer.write_elements([], edges)
    writer.submit(lambda ids: drop_link_edges(ids, "B@1"), images)
    writer.connection.close()
    assert sorted(graph.E().has_label(P.within("near_duplicate", "similar_to"))
                  .values("model").to_list()) == ["A@1", "A@1"]
    assert graph.E().has_label("has_content").count().next() == 0  # B writes it anew


def test_a_runs_read_back_counts_its_images_in_requests_of_records_per_request_ids(
        graph, config, monkeypatch):
    """`count_run_images` reads 11 committed ids back 3 at a time (`graph.records_per_request`):
    4 requests of 3, 3, 3 and 2 ids, never one count() over every image vertex; the image of
    another run and the id the graph lacks are not counted. The requests go to the real
    `read_graph`, recorded on the way."""
    small = replace(config.graph, records_per_request=3)
    write_model(small, METADATA)
    write_partition([prediction(n) for n in range(9)], small, METADATA.tag, "run-a")
    write_partition([prediction(9)], small, METADATA.tag, "run-b")
    sent: list[list] = []

    def recorded(graph_config, requests):
        def each():
            for request in requests:
                sent.append(request.bytecode.step_instructions[0])
                yield request
        return read_graph(graph_config, each())

    monkeypatch.setattr(load, "read_graph", recorded)
    uris = [f"s3://b/img{n}.png" for n in range(10)] + ["s3://b/absent.png"]
    assert count_run_images(small, "run-a", uris) == 9
    assert sent == [["V", *uris[start:start + 3]] for start in (0, 3, 6, 9)]
