"""`make bench`, writer part: elements (vertices + edges) per second into one local Gremlin
Server (TinkerTransactionGraph, 4 Gremlin threads) through Toxiproxy, which adds 0, 2 and 10 ms
of round trip (half each way) as a network between EMR and Neptune would; same data, same
server, one run, three writers:

- batched:        imagegraph's partition writer (`write_partition`) at its defaults
                  (mergeV/mergeE over inject, at most 200 records a request, Neptune's
                  guidance); also at 2,000 records a request (beyond that guidance) to show
                  what the request size buys
- per_row:        one request per prediction row (its mergeV and its mergeE steps chained)
- coalesce_chain: the fold/coalesce/unfold idiom chained 50 elements a request, vertices then
                  edges, as neptune-python-utils does from Glue and EMR

Each variant writes into an emptied graph; variants alternate over `--repeats` rounds and the
median is reported (`writer_<variant>_rtt<N>ms_elems_per_s`). Then images per second into the
graph as 1, 2, 4, 8 and 16 partition writers (`write_partition`, each with its own connection,
one request in flight) share the rows, at 10 ms round trip (`graph_images_per_s_writers_<N>`).
Results are merged into bench-results.json.
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "dev"))
sys.path.insert(0, str(ROOT / "benchmarks"))
import services  # noqa: E402
from gremlin_python.process.traversal import CardinalityValue, Direction, Merge, T  # noqa: E402
from results import merge_results  # noqa: E402
from toxiproxy_client import Proxy, ToxiproxyClient  # noqa: E402

from imagegraph.config import GraphConfig  # noqa: E402
from imagegraph.graph.connection import GremlinConnection  # noqa: E402
from imagegraph.graph.elements import classified_as_edges, image_vertex  # noqa: E402
from imagegraph.graph.load import write_model  # noqa: E402
from imagegraph.graph.traversals import SOURCE, upsert_edges_coalesce, upsert_vertices_coalesce  # noqa: E402
from imagegraph.graph.writer import chunks, write_partition  # noqa: E402
from imagegraph.model.artifact import ModelMetadata  # noqa: E402

CLASSES = tuple(str(n) for n in range(10))
METADATA = ModelMetadata(name="bench", version="1", input_height=8, input_width=8, channels=1,
                         preprocessing="scale_0_1", classes=CLASSES)
TOP_K = 3
RTTS_MS = (0, 2, 10)
WRITERS = (1, 2, 4, 8, 16)
WRITERS_RTT_MS = 10


def prediction_rows(count: int) -> list[dict]:
    return [{"uri": f"s3://bench/img{n:06d}.jpg", "bucket": "bench", "key": f"img{n:06d}.jpg",
             "bytes": 50_000 + n, "width": 500, "height": 375, "format": "JPEG",
             "sha256": f"{n:064x}", "labels": [CLASSES[(n + i) % 10] for i in range(TOP_K)],
             "scores": [0.6, 0.3, 0.1]} for n in range(count)]


def write_batched(connection: GremlinConnection, graph: GraphConfig, rows: list[dict]) -> None:
    written = write_partition(rows, graph, METADATA.tag, "bench")  # its own connection
    assert not written.failed and not written.stopped


def write_per_row(connection: GremlinConnection, graph: GraphConfig, rows: list[dict]) -> None:
    for row in rows:
        vertex = image_vertex(row, METADATA.tag)
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
    vertices = [image_vertex(row, METADATA.tag) for row in rows]
    edges = [e for row in rows for e in classified_as_edges(row, METADATA.tag, "bench")]
    for chunk in chunks(vertices, 50):
        connection.submit(upsert_vertices_coalesce(chunk))
    for chunk in chunks(edges, 50):
        connection.submit(upsert_edges_coalesce(chunk))


def write_batched_2000_records(connection: GremlinConnection, graph: GraphConfig,
                               rows: list[dict]) -> None:
    write_batched(connection, replace(graph, records_per_request=2000), rows)


VARIANTS = {
    "writer_batched": write_batched,
    "writer_batched_2000_records": write_batched_2000_records,
    "writer_per_row": write_per_row,
    "writer_coalesce_chain": write_coalesce_chain,
}


def reset_graph(graph: GraphConfig) -> None:
    """Empty the graph at `graph`, then write the model's elements."""
    connection = GremlinConnection(graph).open()
    try:
        connection.submit(SOURCE.V().drop())
    finally:
        connection.close()
    write_model(graph, METADATA)


def set_round_trip(proxy: Proxy, rtt_ms: int) -> None:
    """Make `proxy` add `rtt_ms` to each request's round trip, half each way."""
    for toxic in proxy.toxics():
        proxy.remove_toxic(toxic["name"])
    if rtt_ms:
        proxy.add_latency(rtt_ms // 2, stream="upstream")
        proxy.add_latency(rtt_ms - rtt_ms // 2, stream="downstream")


def check_written(graph: GraphConfig, rows_count: int, what: str) -> None:
    """The graph at `graph` holds `rows_count` images, each with its TOP_K edges."""
    connection = GremlinConnection(graph).open()
    try:
        images, = connection.submit(SOURCE.V().has_label("image").count())
        edges, = connection.submit(SOURCE.E().has_label("classified_as").count())
    finally:
        connection.close()
    assert (images, edges) == (rows_count, rows_count * TOP_K), (what, images, edges)


def variants_by_round_trip(direct: GraphConfig, proxy: Proxy, proxied: GraphConfig,
                           rows: list[dict], repeats: int) -> dict[str, float]:
    """`writer_<variant>_rtt<N>ms_elems_per_s` for each variant and round trip."""
    elements = len(rows) * (1 + TOP_K)
    figures = {}
    connection = GremlinConnection(proxied).open()
    try:
        for rtt_ms in RTTS_MS:
            set_round_trip(proxy, rtt_ms)
            timings: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for round_number in range(1, repeats + 1):
                for name, write in VARIANTS.items():
                    reset_graph(direct)
                    started = time.perf_counter()
                    write(connection, proxied, rows)
                    elapsed = time.perf_counter() - started
                    check_written(direct, len(rows), name)
                    timings[name].append(elapsed)
                    print(f"rtt {rtt_ms} ms round {round_number} {name}: {elements} elements "
                          f"in {elapsed:.2f} s = {elements / elapsed:.0f}/s", flush=True)
            for name, times in timings.items():
                figures[f"{name}_rtt{rtt_ms}ms_elems_per_s"] = round(
                    elements / statistics.median(times), 1)
    finally:
        connection.close()
    return figures


def images_per_s_by_writers(direct: GraphConfig, proxy: Proxy, proxied: GraphConfig,
                            rows: list[dict], repeats: int) -> dict[str, float]:
    """`graph_images_per_s_writers_<N>`: `rows` split between N partition writers at once."""
    set_round_trip(proxy, WRITERS_RTT_MS)
    figures = {}
    for writers in WRITERS:
        times = []
        for round_number in range(1, repeats + 1):
            reset_graph(direct)
            started = time.perf_counter()
            with ThreadPoolExecutor(writers) as pool:
                done = list(pool.map(lambda share: write_partition(share, proxied, METADATA.tag,
                                                                   "bench"),
                                     [rows[i::writers] for i in range(writers)]))
            elapsed = time.perf_counter() - started
            assert not any(writer.failed or writer.stopped for writer in done)
            check_written(direct, len(rows), f"{writers} writers")
            times.append(elapsed)
            print(f"rtt {WRITERS_RTT_MS} ms round {round_number} {writers} writers: "
                  f"{len(rows)} images in {elapsed:.2f} s = {len(rows) / elapsed:.0f}/s",
                  flush=True)
        figures[f"graph_images_per_s_writers_{writers}"] = round(
            len(rows) / statistics.median(times), 1)
    return figures


def run(rows_count: int, repeats: int) -> dict[str, float]:
    rows = prediction_rows(rows_count)
    with tempfile.TemporaryDirectory(prefix="imagegraph-bench-") as run_dir:
        gremlin_port = services.free_port()
        endpoint = services.start_gremlin(gremlin_port, Path(run_dir))
        toxiproxy = ToxiproxyClient(services.start_toxiproxy(services.free_port(),
                                                             Path(run_dir)))
        proxy = toxiproxy.create_proxy("gremlin", services.free_port(),
                                       f"{services.HOST}:{gremlin_port}")
        proxied = GraphConfig(endpoint=f"ws://{proxy.host}:{proxy.port}/gremlin")
        direct = GraphConfig(endpoint=endpoint)
        try:
            figures = variants_by_round_trip(direct, proxy, proxied, rows, repeats)
            figures.update(images_per_s_by_writers(direct, proxy, proxied, rows, repeats))
        finally:
            services.stop_one("toxiproxy", Path(run_dir))
            services.stop_one("gremlin", Path(run_dir))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000,
                        help="prediction rows; each is 1 vertex + 3 edges (default 2000 rows "
                             "= 8000 elements)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds (default 3)")
    args = parser.parse_args()
    figures = run(args.rows, args.repeats)
    merge_results(figures, "writer_machine",
                  f"{platform.machine()}, {os.cpu_count()} cores, Python "
                  f"{platform.python_version()}, {args.rows} rows x {1 + TOP_K} elements, "
                  f"median of {args.repeats}")
    print(json.dumps(figures, indent=2))
    for rtt_ms in RTTS_MS:
        rate = {name: figures[f"{name}_rtt{rtt_ms}ms_elems_per_s"] for name in VARIANTS}
        print(f"rtt {rtt_ms:>2} ms: batched / per_row = "
              f"{rate['writer_batched'] / rate['writer_per_row']:.1f}x, batched / "
              f"coalesce_chain = {rate['writer_batched'] / rate['writer_coalesce_chain']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
