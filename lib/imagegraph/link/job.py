"""The link run: edges between images, from what inference runs of one model committed.

<output>/predictions/ of the model -> each image's latest row -> the images of finished runs
(those with a run report) not yet linked (the new ones) and every image, staged once -> pairs
of a new image and any image (see
`linking`): same content, near duplicates, similar -> the graph: the new images' earlier link
edges dropped, then the content vertices, then the has_content, near_duplicate and similar_to
edges -> each run linked recorded as `<output>/_linked/<name@version>/<run_id>` -> report.

Old images are not compared among themselves again, so a run costs about what its new images
do. Each graph pass runs in at most `graph.writers` partitions (`max_concurrent_writers`, or
2 x `instance_vcpus`), each with its own writer and connection (retries as for inference). A
failure that outlasts the retries stops the run with one line before any run is recorded, so
the next run does the same work again; every write is an idempotent upsert, so nothing is
duplicated. `run_link` is what `jobs/link.py` calls.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import astuple, dataclass, field, replace
from datetime import datetime, timezone
from functools import partial
from typing import Callable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from imagegraph.config import Config, GraphConfig
from imagegraph.errors import JobError
from imagegraph.graph.connection import GremlinConnection, with_resolved_region
from imagegraph.graph.elements import (
    CONTENT,
    HAS_CONTENT,
    NEAR_DUPLICATE,
    SIMILAR_TO,
    VertexRecord,
    content_elements,
    content_id,
    near_duplicate_edge,
    similar_to_edge,
)
from imagegraph.graph.traversals import drop_link_edges
from imagegraph.graph.writer import GraphWriter, RequestFailed, WriterStopped, WriteStats, chunks
from imagegraph.link.pairs import (
    Pairs,
    latest_rows,
    near_duplicates,
    signed_embeddings,
    similar_images,
)
from imagegraph.runs.ids import new_run_id
from imagegraph.storage import hadoop_fs
from imagegraph.storage.outputs import (
    PREDICTIONS_DIR,
    REPORTS_DIR,
    link_staging_uri,
    remove_staging,
)

log = logging.getLogger(__name__)

LINKED_DIR = "_linked"
PREDICTION_COLUMNS = "uri string, sha256 string, phash long, embedding array<float>, " \
                     "model string, run_id string"
"""What linking reads of predictions/ (runs from before `phash` existed read it as null)."""


@dataclass
class LinkReport:
    """What one link run found and wrote. `pairs_compared` are the band matches of the join
    (what linking cost; a pair matching in several bands counts once per band), against
    `new_images` x `images` for all pairs."""

    link_id: str
    output_uri: str
    model: str
    runs_linked: tuple = ()
    new_images: int = 0
    images: int = 0
    same_content_images: int = 0
    near_duplicate_edges: int = 0
    near_duplicate_pairs_compared: int = 0
    similar_to_edges: int = 0
    similar_pairs_compared: int = 0
    graph: WriteStats = field(default_factory=WriteStats)
    elapsed_s: float = 0.0

    def summary_lines(self) -> list[str]:
        if not self.runs_linked:
            return [f"link {self.link_id}: {self.output_uri} model {self.model}: every run is "
                    f"linked already, nothing to do (--relink links them all again)"]
        return [
            f"link {self.link_id}: {self.output_uri} model {self.model}, "
            f"{len(self.runs_linked)} run(s)",
            f"  new images           {self.new_images} against {self.images} "
            f"(all pairs: {self.new_images * self.images})",
            f"  same content         {self.same_content_images} new image(s) share their bytes "
            f"with another",
            f"  near duplicates      {self.near_duplicate_edges} edge(s), "
            f"{self.near_duplicate_pairs_compared} pairs compared",
            f"  similar              {self.similar_to_edges} edge(s), "
            f"{self.similar_pairs_compared} pairs compared",
            f"  written to graph     {self.graph.vertices} vertices, {self.graph.edges} edges "
            f"({self.graph.requests} requests, {self.graph.retries} retries)",
            f"  elapsed              {self.elapsed_s:.1f} s",
        ]


def run_link(spark: SparkSession, config: Config, output_uri: str, model_tag: str,
             relink: bool = False) -> LinkReport:
    """Link the images of `model_tag`'s runs under `output_uri` that no link run has linked
    (with `relink`, of every run) to each other and to every image of the model."""
    started = time.monotonic()
    config = replace(config, graph=with_resolved_region(config.graph))  # executors sign alike
    report = LinkReport(new_run_id(datetime.now(timezone.utc)), output_uri, model_tag)
    predictions = _predictions(spark, output_uri, model_tag)
    linked = set() if relink else _linked_runs(spark, output_uri, model_tag)
    runs = sorted(({row.run_id for row in predictions.select("run_id").distinct().collect()}
                   & _finished_runs(spark, output_uri)) - linked)
    if not runs:
        return report
    staging = link_staging_uri(output_uri, report.link_id)
    try:
        _link(spark, config, output_uri, model_tag, predictions, runs, staging, report)
    finally:  # succeeded or failed; a killed link run's stays (no lease tells it ended)
        remove_staging(spark, staging)
    report.elapsed_s = time.monotonic() - started
    return report


def _link(spark: SparkSession, config: Config, output_uri: str, model_tag: str,
          predictions: DataFrame, runs: list[str], staging: str, report: LinkReport) -> None:
    """Link the images of `runs` through copies under `staging`; mark the runs linked."""
    latest_rows(predictions).write.parquet(f"{staging}/every")
    every = spark.read.parquet(f"{staging}/every")
    every.where(F.col("run_id").isin(runs)).write.parquet(f"{staging}/new")
    new = spark.read.parquet(f"{staging}/new")
    report.images, report.new_images = every.count(), new.count()
    log.info("link %s: %d new images of %d run(s) against %d images", report.link_id,
             report.new_images, len(runs), report.images)
    _edges(spark, config, new, every, runs, staging, report).write.parquet(f"{staging}/edges")
    edges = spark.read.parquet(f"{staging}/edges")
    counts = dict(edges.groupBy("label").count().collect())
    report.near_duplicate_edges = counts.get(NEAR_DUPLICATE, 0)
    report.similar_to_edges = counts.get(SIMILAR_TO, 0)
    graph = config.graph
    for step, frame in (
            (partial(_drop_chunk, model_tag=model_tag), new.select("uri")),
            (_content_chunk, new.select("sha256").distinct()),
            (partial(_edge_chunk, model_tag=model_tag), edges)):
        report.graph.add(_graph_pass(frame, graph, step))
    for run in runs:
        hadoop_fs.write_text(spark, f"{_linked_uri(output_uri, model_tag)}/{run}",
                             json.dumps({"link_id": report.link_id}) + "\n")
    report.runs_linked = tuple(runs)


def _predictions(spark: SparkSession, output_uri: str, model_tag: str) -> DataFrame:
    uri = f"{output_uri}/{PREDICTIONS_DIR}"
    if not hadoop_fs.exists(spark, uri):
        raise JobError(f"{uri} does not exist: run jobs/infer.py with this --output first")
    return (spark.read.schema(PREDICTION_COLUMNS).parquet(uri)
            .where(F.col("model") == model_tag))


def _linked_uri(output_uri: str, model_tag: str) -> str:
    return f"{output_uri}/{LINKED_DIR}/{model_tag}"


def _finished_runs(spark: SparkSession, output_uri: str) -> set[str]:
    """The run ids under `output_uri` that wrote their run report (`_reports/<run_id>.json`):
    a run still committing chunks has none yet, so its images wait for a later link run
    instead of being marked linked with chunks still to come."""
    uri = f"{output_uri}/{REPORTS_DIR}"
    names = hadoop_fs.list_files(spark, uri) if hadoop_fs.exists(spark, uri) else []
    return {name.removesuffix(".json") for name in names if name.endswith(".json")}


def _linked_runs(spark: SparkSession, output_uri: str, model_tag: str) -> set[str]:
    """The run ids of `model_tag` that earlier link runs recorded as linked."""
    uri = _linked_uri(output_uri, model_tag)
    return set(hadoop_fs.list_files(spark, uri)) if hadoop_fs.exists(spark, uri) else set()


def _edges(spark: SparkSession, config: Config, new: DataFrame, every: DataFrame,
           runs: list[str], staging: str, report: LinkReport) -> DataFrame:
    """Rows (label, uri, other, distance) of every edge to write: has_content (other: the
    sha256), near_duplicate and similar_to (other: an image), `new` being the images of `runs`;
    what the joins compared into `report`. The embeddings' signatures are staged under
    `staging`: the similar join's actions each read them, and signing was its largest cost an
    image."""
    link = config.link
    copies = every.groupBy("sha256").count().where(F.col("count") > 1).select("sha256")
    report.same_content_images = new.join(copies, "sha256", "left_semi").count()
    content = new.select(F.lit(HAS_CONTENT).alias("label"), "uri",
                         F.col("sha256").alias("other"),
                         F.lit(None).cast("double").alias("distance"))
    near = near_duplicates(new, every, link.near_duplicate_bands,
                           link.near_duplicate_band_radius, link.near_duplicate_max_distance)
    report.near_duplicate_pairs_compared = near.pairs_compared
    found = [content, _labelled(near, NEAR_DUPLICATE)]
    if new.where(F.size("embedding") > 0).limit(1).count():
        signed_embeddings(every.select("uri", "run_id", "embedding"), link.seed,
                          link.similar_bands, link.similar_band_bits
                          ).write.parquet(f"{staging}/signed")
        signed = spark.read.parquet(f"{staging}/signed")
        similar = similar_images(signed.where(F.col("run_id").isin(runs)), signed,
                                 link.similar_k, link.similar_max_distance,
                                 link.similar_band_bits, link.similar_band_radius)
        report.similar_pairs_compared = similar.pairs_compared
        found.append(_labelled(similar, SIMILAR_TO))
    else:
        log.info("link %s: the new images have no embeddings (inference.embedding was off), "
                 "so no similar_to edges", report.link_id)
    edges = found[0]
    for frame in found[1:]:
        edges = edges.unionByName(frame)
    return edges


def _labelled(pairs: Pairs, label: str) -> DataFrame:
    return pairs.found.select(F.lit(label).alias("label"), "uri", "other",
                              F.col("distance").cast("double").alias("distance"))


def _graph_pass(frame: DataFrame, graph: GraphConfig,
                write_chunk: Callable[[GraphWriter, list[dict]], None]) -> WriteStats:
    """Write `frame` with `write_chunk(writer, rows)` from at most `graph.writers` partitions
    (one connection each), `graph.rows_per_flush` rows at a time; the writers' counts summed,
    or `JobError` with the line of each writer that failed."""
    writers = min(frame.rdd.getNumPartitions(), graph.writers)
    upserts_per_s = graph.max_upserts_per_s / max(1, writers)

    def write(rows):
        connection = GremlinConnection(graph)
        writer = GraphWriter(connection, graph, upserts_per_s, quiet=True)
        failed = None
        try:
            for chunk in chunks((row.asDict() for row in rows), graph.rows_per_flush):
                write_chunk(writer, chunk)
        except (RequestFailed, WriterStopped) as failure:
            failed = f"the link job's graph write failed: {failure}"
        finally:
            connection.close()
        yield failed, astuple(writer.stats)

    outcomes = frame.coalesce(writers).rdd.mapPartitions(write).collect()
    failures = sorted({failed for failed, _ in outcomes if failed})
    if failures:
        raise JobError("; ".join(failures))
    totals = WriteStats()
    for _, counts in outcomes:
        totals.add(WriteStats(*counts))
    return totals


def _drop_chunk(writer: GraphWriter, rows: list[dict], model_tag: str) -> None:
    """Drop the link edges of `model_tag` of the images of `rows` (uri), a request per
    `records_per_request` images."""
    for images in chunks([row["uri"] for row in rows], writer.graph.records_per_request):
        writer.submit(partial(drop_link_edges, model_tag=model_tag), images)


def _content_chunk(writer: GraphWriter, rows: list[dict]) -> None:
    """Upsert the content vertices of `rows` (sha256)."""
    writer.write_elements([VertexRecord(content_id(row["sha256"]), CONTENT) for row in rows], [])


def _edge_chunk(writer: GraphWriter, rows: list[dict], model_tag: str) -> None:
    """Upsert the edges of `rows` (label, uri, other, distance), a label at a time."""
    writer.write_elements([], [_edge(row, model_tag)
                               for row in sorted(rows, key=lambda row: row["label"])])


def _edge(row: dict, model_tag: str):
    if row["label"] == HAS_CONTENT:
        return content_elements(row["uri"], row["other"])[1]
    if row["label"] == NEAR_DUPLICATE:
        return near_duplicate_edge(row["uri"], row["other"], int(row["distance"]), model_tag)
    return similar_to_edge(row["uri"], row["other"], row["distance"], model_tag)
