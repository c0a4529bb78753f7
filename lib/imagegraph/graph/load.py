"""Loading a run's predictions into the graph from Spark: model and class elements from the
driver, then image vertices and edges from at most `graph.max_concurrent_writers` partitions at
once, counted with accumulators; rows that could not be written come back as a DataFrame."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StringType, StructField, StructType

from imagegraph.config import GraphConfig
from imagegraph.graph.connection import GremlinConnection
from imagegraph.graph.elements import model_elements
from imagegraph.graph.traversals import UPSERTS, pack
from imagegraph.graph.writer import GraphWriter, write_partition
from imagegraph.model_artifact import ModelMetadata

FAILED_ROW = StructType([StructField("uri", StringType(), False),
                         StructField("reason", StringType(), False)])


@dataclass
class LoadTotals:
    """Counts over the whole load, driver writes included."""

    rows_written: int = 0
    vertices: int = 0
    edges: int = 0
    requests: int = 0
    retries: int = 0
    failed_rows: int = 0


class _Accumulators:
    """One Spark accumulator per count of `LoadTotals`."""

    def __init__(self, spark: SparkSession):
        self._counters = {name: spark.sparkContext.accumulator(0)
                          for name in LoadTotals.__dataclass_fields__}

    def add(self, **counts: int) -> None:
        for name, value in counts.items():
            self._counters[name].add(value)

    def totals(self) -> LoadTotals:
        return LoadTotals(**{name: counter.value for name, counter in self._counters.items()})


def write_model(graph: GraphConfig, metadata: ModelMetadata) -> LoadTotals:
    """Upsert the model vertex, its class vertices and has_class edges (from the driver)."""
    vertices, edges = model_elements(metadata)
    connection = GremlinConnection(graph)
    writer = GraphWriter(connection, graph)
    upsert_vertices, upsert_edges = UPSERTS[graph.upsert_style]
    try:
        written_vertices = sum(writer.submit(upsert_vertices, request) for request in
                               pack(vertices, graph.records_per_request,
                                    graph.max_steps_per_request, graph.upsert_style))
        written_edges = sum(writer.submit(upsert_edges, request) for request in
                            pack(edges, graph.records_per_request,
                                 graph.max_steps_per_request, graph.upsert_style))
    finally:
        connection.close()
    return LoadTotals(vertices=written_vertices, edges=written_edges,
                      requests=writer.stats.requests, retries=writer.stats.retries)


def load_predictions(spark: SparkSession, graph: GraphConfig, predictions: DataFrame,
                     model_tag: str, run_id: str, written_at: datetime
                     ) -> tuple[LoadTotals, DataFrame]:
    """Write `predictions` (rows of the predictions Parquet) into the graph.

    Returns the totals and a persisted DataFrame of (uri, reason) for rows not written;
    the caller unpersists it.
    """
    if graph.max_concurrent_writers and \
            predictions.rdd.getNumPartitions() > graph.max_concurrent_writers:
        predictions = predictions.coalesce(graph.max_concurrent_writers)
    counters = _Accumulators(spark)

    def write(rows):
        stats = write_partition((row.asDict() for row in rows), graph, model_tag, run_id,
                                written_at)
        counters.add(rows_written=stats.rows_written, vertices=stats.vertices,
                     edges=stats.edges, requests=stats.requests, retries=stats.retries,
                     failed_rows=len(stats.failed))
        return iter(stats.failed.items())

    failed = (spark.createDataFrame(predictions.rdd.mapPartitions(write), FAILED_ROW)
              .persist(StorageLevel.MEMORY_AND_DISK))
    failed.count()  # the one action that writes; later reads come from the persisted rows
    return counters.totals(), failed
