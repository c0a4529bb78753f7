"""`make bench`, writer part: elements (vertices + edges) per second into one local Gremlin
Server, same data, same server, one run, three writers:

- batched:        imagegraph's GraphWriter at its defaults (mergeV/mergeE over inject, at most
                  200 records a request, Neptune's guidance); also at 2,000 records a request
                  (beyond that guidance) to show what the request size buys
- per_row:        one request per prediction row (its mergeV and its mergeE steps chained)
- coalesce_chain: the fold/coalesce/unfold idiom chained 50 elements a request, vertices then
                  edges, as neptune-python-utils does from Glue and EMR

Each variant writes into an emptied graph; variants alternate over `--repeats` rounds and the
median is reported. Results are merged into bench-results.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dev"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import services  # noqa: E402
from results import merge_results  # noqa: E402

from gremlin_python.process.traversal import CardinalityValue, Direction, Merge, T  # noqa: E402

from imagegraph.config import GraphConfig  # noqa: E402
from imagegraph.graph.connection import GremlinConnection  # noqa: E402
from imagegraph.graph.elements import classified_as_edges, image_vertex  # noqa: E402
from imagegraph.graph.load import write_model  # noqa: E402
from imagegraph.graph.traversals import (SOURCE, upsert_edges_coalesce,  # noqa: E402
                                         upsert_vertices_coalesce)
from imagegraph.graph.writer import GraphWriter, chunks  # noqa: E402
from imagegraph.model_artifact import ModelMetadata  # noqa: E402

CLASSES = tuple(str(n) for n in range(10))
METADATA = ModelMetadata(name="bench", version="1", input_height=8, input_width=8, channels=1,
                         preprocessing="scale_0_1", classes=CLASSES)
TOP_K = 3


def prediction_rows(count: int) -> list[dict]:
    return [{"uri": f"s3://bench/img{n:06d}.jpg", "bucket": "bench", "key": f"img{n:06d}.jpg",
             "bytes": 50_000 + n, "width": 500, "height": 375, "format": "JPEG",
             "sha256": f"{n:064x}", "labels": [CLASSES[(n + i) % 10] for i in range(TOP_K)],
             "scores": [0.6, 0.3, 0.1]} for n in range(count)]


def write_batched(connection: GremlinConnection, graph: GraphConfig, rows: list[dict]) -> None:
    writer = GraphWriter(GremlinConnection(graph), graph)  # its own connection, as a partition
    try:
        for chunk in chunks(rows, graph.rows_per_flush):
            writer.write_predictions(chunk, METADATA.tag, "bench")
    finally:
        writer.connection.close()
    assert not writer.failed


def write_per_row(connection: GremlinConnection, graph: GraphConfig, rows: list[dict]) -> None:
    for row in rows:
        vertex = image_vertex(row, METADATA.tag, "bench")
        traversal = (SOURCE.merge_v({T.id: vertex.id})
                     .option(Merge.on_create, {T.id: vertex.id, T.label: vertex.label,
                                               **vertex.properties})
                     .option(Merge.on_match, {k: CardinalityValue.single(v)
                                              for k, v in vertex.properties.items()}))
        for edge in classified_as_edges(row, METADATA.tag, "bench"):
            traversal = (traversal.merge_e({T.id: edge.id, T.label: edge.label,
                                            Direction.OUT: edge.out_id, Direction.IN: edge.in_id})
                         .option(Merge.on_create, edge.properties)
                         .option(Merge.on_match, edge.properties))
        connection.submit(traversal.count())


def write_coalesce_chain(connection: GremlinConnection, graph: GraphConfig,
                         rows: list[dict]) -> None:
    vertices = [image_vertex(row, METADATA.tag, "bench") for row in rows]
    edges = [e for row in rows for e in classified_as_edges(row, METADATA.tag, "bench")]
    for chunk in chunks(vertices, 50):
        connection.submit(upsert_vertices_coalesce(chunk))
    for chunk in chunks(edges, 50):
        connection.submit(upsert_edges_coalesce(chunk))


def write_batched_2000_records(connection: GremlinConnection, graph: GraphConfig,
                               rows: list[dict]) -> None:
    write_batched(connection, replace(graph, records_per_request=2000), rows)


VARIANTS = {
    "writer_batched_elems_per_s": write_batched,
    "writer_batched_2000_records_elems_per_s": write_batched_2000_records,
    "writer_per_row_elems_per_s": write_per_row,
    "writer_coalesce_chain_elems_per_s": write_coalesce_chain,
}


def reset_graph(connection: GremlinConnection, graph: GraphConfig) -> None:
    connection.submit(SOURCE.V().drop())
    write_model(graph, METADATA)


def run(rows_count: int, repeats: int) -> dict[str, float]:
    rows = prediction_rows(rows_count)
    elements = rows_count * (1 + TOP_K)
    with tempfile.TemporaryDirectory(prefix="imagegraph-bench-") as run_dir:
        endpoint = services.start_gremlin(services.free_port(), Path(run_dir))
        graph = GraphConfig(endpoint=endpoint)
        connection = GremlinConnection(graph).open()
        try:
            timings: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for round_number in range(1, repeats + 1):
                for name, write in VARIANTS.items():
                    reset_graph(connection, graph)
                    started = time.perf_counter()
                    write(connection, graph, rows)
                    elapsed = time.perf_counter() - started
                    images, = connection.submit(SOURCE.V().has_label("image").count())
                    edges, = connection.submit(SOURCE.E().has_label("classified_as").count())
                    assert (images, edges) == (rows_count, rows_count * TOP_K), (name, images,
                                                                                  edges)
                    timings[name].append(elapsed)
                    print(f"round {round_number} {name}: {elements} elements in "
                          f"{elapsed:.2f} s = {elements / elapsed:.0f}/s", flush=True)
        finally:
            connection.close()
            services.stop_one("gremlin", Path(run_dir))
    return {name: round(elements / statistics.median(times), 1)
            for name, times in timings.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000,
                        help="prediction rows; each is 1 vertex + 3 edges (default 5000 rows "
                             "= 20000 elements)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    args = parser.parse_args()
    figures = run(args.rows, args.repeats)
    merge_results(figures, "writer_machine",
                  f"{platform.machine()}, {os.cpu_count()} cores, Python "
                  f"{platform.python_version()}, {args.rows} rows x {1 + TOP_K} elements, "
                  f"median of {args.repeats}")
    batched = figures["writer_batched_elems_per_s"]
    print(json.dumps(figures, indent=2))
    print(f"batched / per_row        = {batched / figures['writer_per_row_elems_per_s']:.1f}x")
    print(f"batched / coalesce_chain = "
          f"{batched / figures['writer_coalesce_chain_elems_per_s']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
