"""The bulk-load path (graph.load=bulk) against the real servers: CSV written by Spark to the
local S3, loaded by the loader's stand-in (dev/neptune_loader.py, reached through boto3's
neptunedata client) into Gremlin Server. The same predictions through mergeV and through the
loader give the identical graph, read back over Gremlin; a record the loader rejects becomes a
dead letter with the loader's reason, and the run still reconciles."""
from __future__ import annotations

import time
import uuid
from dataclasses import replace

import pytest
from conftest import BUCKET, MODEL_URI
from gremlin_python.process.graph_traversal import __
from gremlin_python.process.traversal import T
from s3_objects import put_objects

from imagegraph.dead_letters import REFUSED
from imagegraph.graph.bulk_load import (
    Loader,
    LoaderJob,
    LoadStopped,
    bulk_load_predictions,
    load_vertices_then_edges,
    loader_client,
    record_errors,
)
from imagegraph.graph.connection import GremlinConnection
from imagegraph.graph.elements import VertexRecord, class_id, classified_as_id
from imagegraph.graph.load import load_predictions
from imagegraph.graph.writer import GraphWriter
from imagegraph.infer.job import run_inference
from imagegraph.storage.selection import PREFIX, InputSource

CLASSES = ("a", "b", "c", "d")
MODEL = "m@1"
# keys as S3 has them: commas, quotes, a line break, ; and \, spaces at the ends, ? # //
AWKWARD = ["with,comma.png", 'with "quotes".png', "line\nbreak.png", "semi;colon\\back.png",
           " spaces at both ends ", "q?x=1#frag//double.png", "ünïcødé.png"]
URIS = [f"s3://b/{key}" for key in AWKWARD] + [f"s3://b/img{n}.png" for n in range(13)]
SCHEMA = "uri string, sha256 string, labels array<string>, scores array<float>"


def predictions(spark, top_k: int, shift: int, partitions: int = 3):
    """20 prediction rows, top-`top_k` classes each, float32 scores as the job stores them; in
    one partition, in the order of URIS (so one CSV file of each kind, in that order)."""
    rows = [(uri, f"{n + shift:064x}", [CLASSES[(n + i + shift) % 4] for i in range(top_k)],
             [1 / (3 + n + i + shift) for i in range(top_k)]) for n, uri in enumerate(URIS)]
    frame = spark.createDataFrame(rows, SCHEMA)
    return frame.repartition(partitions) if partitions > 1 else frame.coalesce(1)


def graph_contents(g) -> tuple[dict, dict]:
    """Every vertex (id -> label, property lists) and edge (id -> label, ends, properties)."""
    vertices = g.V().project("id", "label", "properties").by(T.id).by(T.label) \
        .by(__.value_map()).to_list()
    edges = g.E().project("id", "label", "out", "in", "properties").by(T.id).by(T.label) \
        .by(__.out_v().id_()).by(__.in_v().id_()).by(__.value_map()).to_list()
    return ({v["id"]: (v["label"], v["properties"]) for v in vertices},
            {e["id"]: (e["label"], e["out"], e["in"], e["properties"]) for e in edges})


@pytest.fixture
def bulk_graph(config, neptune_loader, s3):
    put_objects(s3, BUCKET, "bulk-test/", {})  # the bucket, when this module runs alone
    return replace(config.graph, load="bulk", loader_endpoint=neptune_loader.endpoint,
                   region="us-east-1", loader_poll_interval_s=0.2)


@pytest.fixture
def clean(graph, config):
    """Empties the graph and writes the class vertices; call again to start over."""
    def start_over():
        graph.V().drop().iterate()
        connection = GremlinConnection(config.graph)
        try:
            GraphWriter(connection, config.graph).write_elements(
                [VertexRecord(class_id(name), "class", {"name": name}) for name in CLASSES], [])
        finally:
            connection.close()
    return start_over


def load(spark, graph_config, rows, run_id: str):
    staged = f"s3a://{BUCKET}/bulk-test/{uuid.uuid4().hex}"
    if graph_config.load == "bulk":
        result = bulk_load_predictions(spark, graph_config, rows, MODEL, run_id,
                                       f"{staged}/graph", f"{staged}/bulk")
    else:
        result = load_predictions(spark, graph_config, rows, MODEL, run_id, f"{staged}/graph")
    assert result.stopped == () and result.failed.count() == 0
    assert result.totals.rows_written == rows.count()
    return result


def test_mergev_and_bulk_give_the_identical_graph(spark, config, bulk_graph, graph, clean):
    rows = predictions(spark, top_k=3, shift=0)
    clean()
    load(spark, config.graph, rows, "run-1")
    merged = graph_contents(graph)
    clean()
    totals = load(spark, bulk_graph, rows, "run-1").totals
    assert graph_contents(graph) == merged
    assert (totals.vertices, totals.edges, totals.failed_rows) == (20, 60, 0)
    vertices, edges = merged
    assert len(vertices) == 20 + len(CLASSES) and len(edges) == 60
    assert vertices["s3://b/line\nbreak.png"] == ("image", {"sha256": [f"{2:064x}"]})


def test_a_rerun_with_fewer_classes_leaves_the_same_edges_either_way(spark, config, bulk_graph,
                                                                      graph, clean):
    first, second = predictions(spark, top_k=3, shift=0), predictions(spark, top_k=2, shift=1)
    clean()
    load(spark, config.graph, first, "run-1")
    load(spark, config.graph, second, "run-2")
    merged = graph_contents(graph)
    clean()
    load(spark, config.graph, first, "run-1")
    load(spark, bulk_graph, second, "run-2")
    assert graph_contents(graph) == merged
    assert graph.V(URIS[0]).out_e("classified_as").count().next() == 2  # the stale one dropped


def test_a_record_the_loader_rejects_is_dead_lettered_and_the_run_reconciles(
        spark, config, bulk_graph, trained_model, dataset, s3, graph):
    digits = sorted(key for key in dataset["incoming"] if key.startswith("digits/"))[:20]
    put_objects(s3, BUCKET, "bulk-in/", {key: dataset["incoming"][key] for key in digits})
    victim = f"s3://{BUCKET}/bulk-in/{digits[0]}"
    graph.V().drop().iterate()
    # ids the run's classified_as edges of `victim` will have, taken by edges elsewhere
    graph.add_v("image").property(T.id, victim).add_v("elsewhere").property(T.id, "elsewhere") \
        .iterate()
    for digit in range(10):
        graph.V(victim).add_e("classified_as").to(__.V("elsewhere")) \
            .property(T.id, f"{victim}|digits@v1|{digit}").iterate()
    output = f"s3a://{BUCKET}/bulk-out"

    report = run_inference(spark, replace(config, graph=bulk_graph),
                           InputSource(PREFIX, f"s3a://{BUCKET}/bulk-in/"), MODEL_URI, output)

    assert report.reconciles(), report.disagreements()
    assert (report.listed, report.graph_written, report.graph_failed) == (20, 19, 1)
    dead = spark.read.parquet(f"{output}/dead_letter").collect()
    assert [(row.uri, row.stage, row.retry_class) for row in dead] == [
        (victim, "graph", REFUSED)]
    assert dead[0].reason.startswith("graph bulk load rejected the record: "
                                     "ID_ASSIGNED_TO_MULTIPLE_EDGES: ")
    assert graph.V().has_label("image").count().next() == 20
    assert graph.E().has("classified_as", "run_id", report.run_id).out_v().dedup().id_() \
        .to_set() == {f"s3://{BUCKET}/bulk-in/{key}" for key in digits[1:]}
    assert graph.E().has("classified_as", "run_id", report.run_id).count().next() == 19 * 3
    assert report.graph_images == 19  # the victim holds no edge of the run


def test_a_loader_that_refuses_the_load_stops_it_with_one_line(spark, bulk_graph, graph, clean):
    clean()
    result = bulk_load_predictions(
        spark, replace(bulk_graph, loader_iam_role_arn="not-a-role"), predictions(spark, 3, 0),
        MODEL, "run-1", f"s3a://{BUCKET}/bulk-refused/graph", f"s3a://{BUCKET}/bulk-refused/bulk")
    assert len(result.stopped) == 1
    assert result.stopped[0].startswith(
        f"Neptune's bulk loader at {bulk_graph.loader_endpoint} refused to start a load of "
        f"s3://{BUCKET}/bulk-refused/bulk/vertices/part-: BadRequestException: Invalid IAM role "
        f"ARN 'not-a-role'")
    assert graph.V().has_label("image").count().next() == 0


def test_a_header_the_loader_rejects_fails_the_load_as_a_whole(bulk_graph, s3):
    put_objects(s3, BUCKET, "bulk-bad-header/", {"part-0": b'~id,~label,age:Integer\n"v1","x",1\n'})
    client = loader_client(bulk_graph)
    load_id = client.start_loader_job(
        source=f"s3://{BUCKET}/bulk-bad-header/part-", format="csv", s3BucketRegion="us-east-1",
        iamRoleArn=bulk_graph.loader_iam_role_arn, failOnError=False,
        queueRequest=True)["payload"]["loadId"]
    for _ in range(100):
        payload = client.get_loader_job_status(loadId=load_id, details=True, errors=True,
                                               page=1, errorsPerPage=10)["payload"]
        if payload["overallStatus"]["status"] not in ("LOAD_IN_QUEUE", "LOAD_IN_PROGRESS"):
            break
        time.sleep(0.1)
    assert payload["overallStatus"]["status"] == "LOAD_FAILED"
    assert payload["overallStatus"]["parsingErrors"] == 1
    assert payload["failedFeeds"][0]["fullUri"] == f"s3://{BUCKET}/bulk-bad-header/part-0"
    error = payload["errors"]["errorLogs"][0]
    assert error == {"errorCode": "PARSING_ERROR", "recordNum": 0,
                     "fileName": f"s3://{BUCKET}/bulk-bad-header/part-0",
                     "errorMessage": "Invalid data type 'Integer' in column header "
                                     "'age:Integer'"}
    with pytest.raises(LoadStopped, match="PARSING_ERROR: Invalid data type 'Integer'"):
        record_errors(LoaderJob(load_id, "s3://...", "LOAD_FAILED", (error,), 1))


def test_edges_load_after_vertices_that_failed_record_by_record(bulk_graph, s3, graph, clean):
    clean()
    put_objects(s3, BUCKET, "bulk-vertex-error/", {
        "vertices/part-0": b'~id,~label,n:Long(single)\n"s3://b/good.png","image",1\n'
                           b'"s3://b/bad.png","image",one\n',
        "edges/part-0": b'~id,~from,~to,~label\n"e-good","s3://b/good.png","class:a","x"\n'
                        b'"e-bad","s3://b/bad.png","class:a","x"\n'})
    loader = Loader(loader_client(bulk_graph), bulk_graph)

    errors = load_vertices_then_edges(loader, f"s3a://{BUCKET}/bulk-vertex-error")

    files = f"s3://{BUCKET}/bulk-vertex-error"
    assert errors == {
        "vertices": ({"errorCode": "PARSING_ERROR", "recordNum": 2,
                      "errorMessage": "Data type mismatch in column n: 'one' is not a Long",
                      "fileName": f"{files}/vertices/part-0"},),
        "edges": ({"errorCode": "FROM_OR_TO_VERTEX_ARE_MISSING", "recordNum": 2,
                   "errorMessage": "Either from vertex, 's3://b/bad.png', or to vertex, "
                                   "'class:a', is not present.",
                   "fileName": f"{files}/edges/part-0"},)}
    assert graph.E().id_().to_list() == ["e-good"]


def test_an_image_the_loader_skipped_is_not_written_whatever_record_it_names(
        spark, bulk_graph, graph, clean, neptune_loader):
    """The loader numbers records otherwise than `rejected_uri` assumes (from the header line):
    its error for the third edge of URIS[0] names record 4, URIS[1]'s first edge. URIS[1] is
    dead-lettered on the loader's word; URIS[0], which lacks that edge, used to be reported
    written: the read-back finds the edge missing and dead-letters it too."""
    clean()
    lost = classified_as_id(URIS[0], MODEL, "c")
    graph.add_v("elsewhere").property(T.id, "elsewhere").as_("x").add_e("classified_as") \
        .to(__.V(class_id("d"))).property(T.id, lost).iterate()  # its id taken
    staged = f"s3a://{BUCKET}/bulk-renumbered/{uuid.uuid4().hex}"
    neptune_loader.record_number_shift = 1
    try:
        result = bulk_load_predictions(spark, bulk_graph, predictions(spark, 3, 0, partitions=1),
                                       MODEL, "run-1", f"{staged}/graph", f"{staged}/bulk")
    finally:
        neptune_loader.record_number_shift = 0
    assert result.stopped == ()
    failed = dict(result.failed.collect())
    assert sorted(failed) == sorted(URIS[:2])
    assert failed[URIS[1]].startswith("graph bulk load rejected the record: "
                                      "ID_ASSIGNED_TO_MULTIPLE_EDGES: ")
    assert failed[URIS[0]] == ("graph bulk load: not in the graph as loaded, and no loader "
                               f"error named it: no classified_as edge {lost} of the run")
    assert (result.totals.rows_written, result.totals.failed_rows) == (18, 2)


def test_loads_the_run_gives_up_on_are_cancelled(spark, bulk_graph, graph, clean,
                                                 neptune_loader):
    clean()
    staged = f"s3a://{BUCKET}/bulk-cancelled/{uuid.uuid4().hex}"
    neptune_loader.running.clear()  # the loads wait in the queue
    try:
        result = bulk_load_predictions(spark, replace(bulk_graph, loader_timeout_s=0.3),
                                       predictions(spark, 3, 0), MODEL, "run-1",
                                       f"{staged}/graph", f"{staged}/bulk")
    finally:
        neptune_loader.running.set()
    source = f"s3://{staged.partition('://')[2]}/bulk"
    loads = {load.source: load for load in neptune_loader.loads.values()
             if load.source.startswith(source)}
    assert {name: load.status for name, load in loads.items()} == {
        f"{source}/vertices/part-": "LOAD_CANCELLED_BY_USER",
        f"{source}/edges/part-": "LOAD_CANCELLED_BY_USER"}
    assert result.stopped == (
        f"bulk load {loads[f'{source}/vertices/part-'].load_id} of {source}/vertices/part- still "
        f"LOAD_IN_QUEUE after graph.loader_timeout_s=0.3 s; the chunk is not committed "
        f"(--resume loads it again)",)
    time.sleep(1)  # the worker, running again, takes up neither
    assert graph.V().has_label("image").count().next() == 0


def test_a_load_committed_with_write_conflicts_is_resumed(spark, bulk_graph, graph, clean,
                                                          neptune_loader):
    clean()
    staged = f"s3a://{BUCKET}/bulk-conflicts/{uuid.uuid4().hex}"
    neptune_loader.write_conflicts = 1  # the vertex file: half its records committed
    try:
        result = bulk_load_predictions(spark, bulk_graph, predictions(spark, 3, 0, partitions=1),
                                       MODEL, "run-1", f"{staged}/graph", f"{staged}/bulk")
    finally:
        neptune_loader.write_conflicts = 0
    assert result.stopped == () and result.failed.count() == 0
    assert (result.totals.rows_written, result.totals.vertices, result.totals.edges) == (20, 20, 60)
    source = f"s3://{staged.partition('://')[2]}/bulk"
    assert [(load.source, load.status) for load in neptune_loader.loads.values()
            if load.source.startswith(source)] == [
        (f"{source}/vertices/part-", "LOAD_COMMITTED_W_WRITE_CONFLICTS"),
        (f"{source}/edges/part-", "LOAD_FAILED_BECAUSE_DEPENDENCY_NOT_SATISFIED"),
        (f"{source}/vertices/part-", "LOAD_COMPLETED"),  # the resume
        (f"{source}/edges/part-", "LOAD_COMPLETED")]
    assert graph.V().has_label("image").count().next() == 20
    assert graph.E().has("classified_as", "run_id", "run-1").count().next() == 60
